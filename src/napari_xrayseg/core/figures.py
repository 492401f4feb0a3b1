"""Figures for reports and papers: slice collages, training curves, per-slice Dice.

Everything is drawn on :class:`matplotlib.figure.Figure` objects with the Agg
backend: no pyplot state, no GUI, safe in worker threads, on clusters and in the
CLI.  Each function returns its Figure; with ``path=`` it also writes a PNG and,
like every writer of napari-xrayseg, refuses an existing file unless
``overwrite=True``.  Each also takes ``figure=`` to draw into an existing Figure
(e.g. the one of a Qt canvas in a dock widget).

Only the slices shown are read from the arrays, so a collage of a zarr or dask
volume larger than memory costs a few slices.

Colours of the collage overlay (see :func:`collage`)
    green = prediction agrees with the truth, red = wrong class predicted,
    blue = missed (prediction 0 where the truth has a class); voxels without
    annotation (truth 0 while ``ignore_zero``) keep the raw grey.
Error map (see :func:`error_map`, the widget's error layer)
    0 = correct or not annotated, 1 = wrong (red), 2 = missed (blue).
"""

from __future__ import annotations

import logging
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .errors import InputError, OutputExistsError
from .units import LABEL_COLORS, label_color

__all__ = [
    "ERROR_CODES",
    "FIGURE_FILES",
    "OVERLAY_COLORS",
    "check_figure_folder",
    "collage",
    "error_map",
    "save_figures",
    "slice_dice_plot",
    "study_plot",
    "training_curves",
]

log = logging.getLogger(__name__)

#: RGB colours of the collage overlay: agreement, wrong class, missed (predicted 0).
OVERLAY_COLORS = {
    "correct": (0.10, 0.80, 0.25),
    "wrong": (0.95, 0.10, 0.10),
    "missed": (0.15, 0.40, 1.00),
}
#: Values of :func:`error_map` (0 = correct or not annotated), same meaning as the colours.
ERROR_CODES = {"wrong": 1, "missed": 2}
_ALPHA = {"correct": 0.30, "wrong": 0.70, "missed": 0.70}
_OVERLAY_TITLE = "overlay: green correct, red wrong,\nblue missed, grey not annotated"
_LINES = ",\ndark lines: true interfaces"  # drawn only without raw data (on neutral grey)

#: Label colours (label 1 = first colour, cycling; 0 = black): napari's, as in the viewer and the files.
_PALETTE = np.array(LABEL_COLORS)

_PANEL_INCHES = 3.0
#: Panels grow with the slice up to this (inches): at :data:`_DPI` a slice keeps about one figure pixel per
#: voxel up to ~1200 voxels, so a one-voxel error line is not lost when the panel is drawn smaller.
_PANEL_MAX_INCHES = 8.0
_DPI = 150


# --------------------------------------------------------------------------- helpers


def _new_figure(figure: Figure | None, size: tuple[float, float]) -> Figure:
    if figure is None:
        fig = Figure(figsize=size, dpi=_DPI, layout="constrained")
        FigureCanvasAgg(fig)
        return fig
    figure.clear()
    return figure


def _title(ax: Any, title: str, width: int = 64) -> None:
    """A plot title wrapped to lines of at most ``width`` characters (a long one would run off the figure)."""
    ax.set_title("\n".join(textwrap.wrap(title, width)), fontsize="medium")


def _exists_msg(path: Path) -> str:
    return f"figure output {path} exists: choose another path or pass overwrite=True (--overwrite)"


def _check_target(path: str | os.PathLike, overwrite: bool) -> Path:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"figure output {path} is a directory: give a file name ending in .png")
    if path.exists() and not overwrite:
        raise OutputExistsError(_exists_msg(path))
    return path


def _save(fig: Figure, path: str | os.PathLike | None, overwrite: bool) -> None:
    if path is None:
        return
    from .output import write_file

    path = _check_target(path, overwrite)
    write_file(
        path,
        lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI),
        overwrite=overwrite,
        what="figure output",
        option="--figures",
    )
    log.info("wrote figure %s", path)


def _array(x: Any, name: str) -> Any:
    if all(hasattr(x, a) for a in ("shape", "ndim", "__getitem__")):
        arr = x
    else:
        arr = np.asarray(x)
    if arr.ndim not in (2, 3):
        raise InputError(
            f"{name} has {arr.ndim} dimensions (shape {tuple(arr.shape)}); figures need a 2D "
            "image or a 3D volume: drop channel/time axes first"
        )
    return arr


def _read_slice(arr: Any, axis: int, k: int) -> np.ndarray:
    """Read one 2D slice (only that slice from zarr/dask arrays)."""
    if arr.ndim == 2:
        return np.asarray(arr)
    idx: list[Any] = [slice(None)] * arr.ndim
    idx[axis] = int(k)
    out = arr[tuple(idx)]
    if hasattr(out, "compute"):
        out = out.compute()
    return np.asarray(out)


def _labels(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "b":
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        return np.rint(np.nan_to_num(a)).astype(np.int64)
    return a.astype(np.int64, copy=False)


def _label_rgb(lab: np.ndarray) -> np.ndarray:
    """RGB image of a label slice: 0 black, class c the palette colour of c."""
    rgb = _PALETTE[(np.maximum(lab, 1) - 1) % len(_PALETTE)]
    rgb[lab <= 0] = 0.0
    return rgb


def _contrast(slices: list[np.ndarray]) -> tuple[float, float]:
    vals = np.concatenate([s.astype(np.float64, copy=False).ravel() for s in slices])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [0.5, 99.5])
    if not hi > lo:
        lo, hi = float(vals.min()), float(vals.max())
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _grey(raw: np.ndarray | None, lo: float, hi: float, shape: tuple[int, ...]) -> np.ndarray:
    if raw is None:
        return np.full((*shape, 3), 0.5)
    g = np.clip((np.nan_to_num(raw.astype(np.float64)) - lo) / (hi - lo), 0.0, 1.0)
    return np.repeat(g[..., None], 3, axis=-1)


def _agreement(p: np.ndarray, t: np.ndarray, ignore_zero: bool) -> dict[str, np.ndarray]:
    counted = t != 0 if ignore_zero else np.ones(t.shape, dtype=bool)
    correct = counted & (p == t)
    missed = counted & ~correct & (p == 0)
    wrong = counted & ~correct & ~missed
    return {"correct": correct, "wrong": wrong, "missed": missed}


def _error_block(p: Any, t: Any, ignore_zero: bool) -> np.ndarray:
    p, t = np.asarray(p), np.asarray(t)
    out = np.zeros(t.shape, dtype=np.uint8)
    wrong = p != t
    if ignore_zero:
        wrong &= t != 0
    out[wrong] = ERROR_CODES["wrong"]
    out[wrong & (p == 0)] = ERROR_CODES["missed"]
    return out


def _blend(base: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    out = base.copy()
    for key, m in masks.items():
        a = _ALPHA.get(key, 0.45)
        color = np.asarray(OVERLAY_COLORS.get(key, (0.9, 0.1, 0.1)))
        out[m] = out[m] * (1.0 - a) + color * a
    return out


def _boundaries(lab: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label."""
    b = np.zeros(lab.shape, dtype=bool)
    dy = lab[1:, :] != lab[:-1, :]
    dx = lab[:, 1:] != lab[:, :-1]
    b[1:, :] |= dy
    b[:-1, :] |= dy
    b[:, 1:] |= dx
    b[:, :-1] |= dx
    return b


def _pick(candidates: Sequence[int], n: int) -> list[int]:
    """``n`` evenly spaced items of ``candidates`` (all of them if fewer)."""
    m = len(candidates)
    if m <= n:
        return list(candidates)
    return sorted({int(candidates[int((i + 0.5) * m / n)]) for i in range(n)})


def _check_slices(slices: Sequence[int], depth: int, axis: int) -> list[int]:
    if isinstance(slices, (int, np.integer)):
        slices = [int(slices)]
    out = []
    for k in slices:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise InputError(f"slices={list(slices)!r} holds {k!r}: pass integer slice indices")
        if not -depth <= k < depth:
            raise InputError(f"slice {k} is out of range for {depth} slices along axis {axis}: use 0..{depth - 1}")
        out.append(int(k) % depth)
    if not out:
        raise InputError("slices=[] is empty: pass at least one slice index or slices=None")
    return out


# --------------------------------------------------------------------------- collage


def collage(
    image: Any,
    pred: Any,
    truth: Any = None,
    *,
    axis: int = 0,
    slices: Sequence[int] | None = None,
    n: int = 4,
    ignore_zero: bool = True,
    path: str | os.PathLike | None = None,
    overwrite: bool = False,
    figure: Figure | None = None,
    class_names: Mapping[int, str] | None = None,
    voxel_size: Sequence[float] | None = None,
    unit: str | None = None,
) -> Figure:
    """Draw raw data, prediction and an agreement overlay for a few slices.

    One row per slice; columns *raw* (grey, 0.5-99.5 percentile contrast over the
    shown slices), *prediction* (label colours, 0 black) and *overlay*: with
    ``truth``, the raw slice tinted green where the prediction agrees with the
    truth, red where a wrong class is predicted and blue where a class was missed
    (prediction 0); unannotated voxels (truth 0 with ``ignore_zero``) stay grey, so
    sparse annotations read naturally.  Without ``truth`` the overlay shows the
    prediction over the raw slice with class boundaries in red.

    Parameters
    ----------
    image : array-like of shape (Z, Y, X) or (Y, X), or None
        Raw data (numpy, dask, zarr).  ``None`` replaces the raw column by the
        truth (if any) and draws the overlay on neutral grey with the truth boundaries.
    pred : array-like, same shape as ``image``
        Predicted labels.
    truth : array-like, optional
        Ground-truth labels, ``0`` = not annotated (with ``ignore_zero``).
    axis : int
        Slicing axis of a 3D volume (ignored for 2D).
    slices : sequence of int, optional
        Slice indices along ``axis``; default ``n`` evenly spaced ones (ignored for 2D).
    n : int
        Number of slices when ``slices`` is None.
    ignore_zero : bool
        Truth 0 means "not annotated" (as in :func:`~napari_xrayseg.core.metrics.evaluate`).
    path : str or os.PathLike, optional
        Also write the figure as a PNG here.
    overwrite : bool
        Replace an existing ``path``.
    figure : matplotlib.figure.Figure, optional
        Draw into this figure (cleared first) instead of a new one.
    class_names : mapping, optional
        ``{label: name}`` for the legend (default: ``"class N"``).
    voxel_size : sequence of float, optional
        (z, y, x) voxel size (or (y, x)): pixels are drawn with their physical aspect (a y slice
        of voxels 5 times deeper than wide is 5 times taller per row) and the rows name the
        slice's position in ``unit``.
    unit : str, optional
        Unit of ``voxel_size``, for the row names.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        For arrays of different shapes or dimensions other than 2/3, a bad axis or
        slice index.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((4, 16, 16), np.uint8); truth[:, 4:12, 4:12] = 1
    >>> fig = collage(truth.astype(float), truth, truth, n=2)
    >>> len(fig.axes)
    6
    """
    pred = _array(pred, "pred")
    shape = tuple(int(s) for s in pred.shape)
    arrays = {"image": image, "truth": truth}
    for name, a in list(arrays.items()):
        if a is None:
            continue
        a = _array(a, name)
        if tuple(int(s) for s in a.shape) != shape:
            raise InputError(
                f"{name} shape {tuple(a.shape)} does not match pred shape {shape}: pass arrays of the same volume"
            )
        arrays[name] = a
    image, truth = arrays["image"], arrays["truth"]
    if path is not None:
        _check_target(path, overwrite)
    ndim = len(shape)
    if ndim == 3:
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= axis < 3:
            raise InputError(f"axis {axis!r} is not valid for a 3D volume: use 0, 1 or 2")
        axis = int(axis) % 3
        depth = shape[axis]
        if slices is None:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise InputError(f"n={n!r} is not a positive integer: pass e.g. n=4")
            ks = _pick(range(depth), int(n))
        else:
            ks = _check_slices(slices, depth, axis)
    else:
        axis, ks = 0, [0]

    rows = []
    for k in ks:
        rows.append(
            {
                "k": k,
                "raw": None if image is None else _read_slice(image, axis, k),
                "pred": _labels(_read_slice(pred, axis, k)),
                "truth": None if truth is None else _labels(_read_slice(truth, axis, k)),
            }
        )
    lo, hi = _contrast([r["raw"] for r in rows]) if image is not None else (0.0, 1.0)

    columns = []
    if image is not None:
        columns.append("raw")
    elif truth is not None:
        columns.append("truth")
    columns += ["prediction", "overlay"]
    h, w = rows[0]["pred"].shape
    plane = [d for d in range(ndim) if d != axis] if ndim == 3 else [0, 1]
    vox = tuple(float(v) for v in voxel_size)[-ndim:] if voxel_size is not None else None
    pixel = vox[plane[0]] / vox[plane[1]] if vox else 1.0  # a pixel's height / width, physically
    aspect = h * pixel / max(w, 1)
    ncols = len(columns)
    panel = min(_PANEL_MAX_INCHES, max(_PANEL_INCHES, w / _DPI))
    fig = _new_figure(
        figure,
        (panel * ncols, max(1.2, panel * aspect + 0.45) * len(rows) + 0.8),  # + each row's caption, the titles
    )
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    present: set[int] = set()
    for i, r in enumerate(rows):
        p, t = r["pred"], r["truth"]
        present.update(int(v) for v in np.unique(p) if v > 0)
        base = _grey(r["raw"], lo, hi, p.shape)
        for j, col in enumerate(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            show = {"interpolation": "nearest", "aspect": pixel}
            if col == "raw":
                ax.imshow(r["raw"], cmap="gray", vmin=lo, vmax=hi, **show)
                title = "raw"
            elif col == "truth":
                present.update(int(v) for v in np.unique(t) if v > 0)
                ax.imshow(_label_rgb(t), **show)
                title = "truth (black = 0)"
            elif col == "prediction":
                ax.imshow(_label_rgb(p), **show)
                title = "prediction"
            else:
                if t is not None:
                    if r["raw"] is None:  # no raw data: draw the truth's boundaries for context
                        base[_boundaries(t)] = 0.2
                    masks = _agreement(p, t, ignore_zero)
                    ax.imshow(_blend(base, masks), **show)
                    n_counted = int(sum(m.sum() for m in masks.values()))
                    if n_counted:
                        acc = masks["correct"].sum() / n_counted
                        ax.set_xlabel(f"accuracy {acc:.3f} on {n_counted} px", fontsize=8)
                    else:
                        ax.set_xlabel("no annotated pixel in this slice", fontsize=8)
                    title = _OVERLAY_TITLE + (_LINES if r["raw"] is None else "")
                else:
                    rgb = 0.6 * base + 0.4 * _label_rgb(p)
                    rgb[_boundaries(p)] = OVERLAY_COLORS["wrong"]
                    ax.imshow(rgb, **show)
                    title = "overlay: prediction on raw,\nclass boundaries red"
            if i == 0:
                ax.set_title(title, fontsize=9)
        axes[i, 0].set_ylabel(_row_name(r["k"], axis, ndim, vox, unit), fontsize=9)
    if ndim == 3:  # which axes the panels show: rows down, columns across
        names = "zyx"
        fig.suptitle(
            f"slices along {names[axis]}: {names[plane[0]]} down, {names[plane[1]]} across"
            + (f" (pixels drawn to scale, {' x '.join(f'{v:g}' for v in vox)} {unit or ''})".rstrip() if vox else ""),
            fontsize=9,
        )
    if present:
        names = dict(class_names or {})
        handles = [Patch(color=label_color(c), label=names.get(c, f"class {c}")) for c in sorted(present)[:10]]
        # below the panels, not over the prediction's corner
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=7, frameon=False)
    _save(fig, path, overwrite)
    return fig


# --------------------------------------------------------------------------- error map


def _row_name(k: int, axis: int, ndim: int, vox: tuple[float, ...] | None, unit: str | None) -> str:
    """``z = 12`` (and its position, ``(1.2 um)``, with a voxel size), or ``2D image``."""
    if ndim != 3:
        return "2D image"
    where = f" ({k * vox[axis]:.4g} {unit or ''})".replace(" )", ")") if vox else ""
    return f"{'zyx'[axis]} = {k}{where}"


def error_map(pred: Any, truth: Any, *, ignore_zero: bool = True) -> Any:
    """Label image of the prediction's errors, the colours of :func:`collage` as values.

    Values (:data:`ERROR_CODES`): ``0`` = correct or not counted, ``1`` = wrong (a
    counted voxel whose predicted label differs from the truth and is not 0: the
    voxel is a false positive of the predicted class and a false negative of the
    true class), ``2`` = missed (prediction 0 on a counted voxel whose truth is a
    class).  Counted voxels are those with ``truth != 0`` when ``ignore_zero``
    (sparse truth), else all.  The number of nonzero voxels equals
    ``report.n_voxels - trace(report.confusion_matrix)`` of
    :func:`~napari_xrayseg.core.metrics.evaluate` with the same ``ignore_zero``.

    Parameters
    ----------
    pred, truth : array-like
        Label arrays of the same shape.  Two numpy arrays give a numpy array;
        anything else (dask, zarr) gives a lazy dask array computed block by block.
    ignore_zero : bool
        Truth 0 means "not annotated".

    Returns
    -------
    numpy.ndarray or dask.array.Array
        ``uint8`` array of the input shape.

    Raises
    ------
    InputError
        If the shapes differ.

    Examples
    --------
    >>> import numpy as np
    >>> error_map(np.array([1, 2, 0, 1]), np.array([1, 1, 2, 0])).tolist()
    [0, 1, 2, 0]
    """
    for name, a in (("pred", pred), ("truth", truth)):
        if not hasattr(a, "shape"):
            raise InputError(f"{name} is a {type(a).__name__}: pass a label array")
    if tuple(pred.shape) != tuple(truth.shape):
        raise InputError(
            f"pred shape {tuple(pred.shape)} does not match truth shape {tuple(truth.shape)}: "
            "pass labels of the same image"
        )
    if isinstance(pred, np.ndarray) and isinstance(truth, np.ndarray):
        return _error_block(pred, truth, bool(ignore_zero))
    import dask.array as da

    def lazy(a: Any) -> Any:
        if isinstance(a, da.Array):
            return a
        chunks = getattr(a, "chunks", None)
        ok = isinstance(chunks, tuple) and all(isinstance(c, (int, np.integer)) for c in chunks)
        return da.from_array(a, chunks=chunks if ok else "auto")

    p, t = lazy(pred), lazy(truth)
    t = t.rechunk(p.chunks)
    return da.map_blocks(_error_block, p, t, bool(ignore_zero), dtype=np.uint8)


# --------------------------------------------------------------------------- training


def _history_source(
    history: Any,
) -> tuple[list[dict[str, Any]], list[int] | None, list[str] | None, dict[str, Any]]:
    info = None
    if isinstance(history, (str, os.PathLike)):
        from .models import read_model_info

        info = read_model_info(history)
    elif hasattr(history, "info") and hasattr(history.info, "history"):
        info = history.info
    elif hasattr(history, "history") and not isinstance(history, Mapping):
        info = history
    if info is not None:
        records = list(info.history)
        classes = list(getattr(info, "classes", []) or []) or None
        names = list(getattr(info, "class_names", []) or []) or None
        return records, classes, names, dict(getattr(info, "train", None) or {})
    if isinstance(history, (list, tuple)):
        return list(history), None, None, {}
    raise InputError(
        f"history is a {type(history).__name__}: pass a list of epoch records, a model file path or a Model"
    )


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def training_curves(
    history: Any,
    *,
    path: str | os.PathLike | None = None,
    overwrite: bool = False,
    figure: Figure | None = None,
) -> Figure:
    """Plot training loss and validation Dice per epoch.

    Parameters
    ----------
    history : list of dict, str, os.PathLike or Model
        Epoch records with keys ``epoch``, ``loss``, ``val_dice`` (None when there
        was no validation) and optionally ``val_dice_per_class`` (a mapping
        ``{class: dice}``, or a list in the order of the model's classes); or a
        model file / :class:`~napari_xrayseg.core.models.Model` whose
        ``info.history`` is read.  Class names come from the model when known,
        else list entries are numbered 1, 2, ...
    path : str or os.PathLike, optional
        Also write the figure as a PNG here.
    overwrite : bool
        Replace an existing ``path``.
    figure : matplotlib.figure.Figure, optional
        Draw into this figure (cleared first) instead of a new one.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        If the history is empty or not a list of dicts.
    ModelFileError
        If a model file cannot be read.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> fig = training_curves([{"epoch": 1, "loss": 0.9, "val_dice": 0.5},
    ...                        {"epoch": 2, "loss": 0.6, "val_dice": 0.7}])
    >>> [ax.get_title() for ax in fig.axes]
    ['training loss', 'validation Dice (best 0.700 at epoch 2)']
    """
    records, classes, names, train = _history_source(history)
    if not records:
        raise InputError("the training history is empty: train the model first")
    if not all(isinstance(r, Mapping) for r in records):
        raise InputError(
            "history holds entries that are not dicts: pass epoch records like "
            '{"epoch": 1, "loss": 0.5, "val_dice": 0.8}'
        )
    if path is not None:
        _check_target(path, overwrite)
    epochs = np.array([_num(r.get("epoch", i + 1)) for i, r in enumerate(records)])
    loss = np.array([_num(r.get("loss")) for r in records])
    val = np.array([_num(r.get("val_dice")) for r in records])
    per: dict[str, list[float]] = {}
    colour: dict[str, tuple[float, float, float]] = {}  # each class in its label colour, as in napari
    for i, r in enumerate(records):
        pc = r.get("val_dice_per_class")
        if isinstance(pc, Mapping):
            items = [(f"class {k}", v, int(k)) for k, v in pc.items()]
        elif isinstance(pc, (list, tuple)):
            items = []
            for j, v in enumerate(pc):
                value = classes[j] if classes and len(classes) == len(pc) else j + 1
                label = names[j] if names and len(names) == len(pc) else f"class {value}"
                items.append((label, v, value))
        else:
            items = []
        for label, v, value in items:
            per.setdefault(label, [math.nan] * len(records))[i] = _num(v)
            colour.setdefault(label, label_color(value))

    fig = _new_figure(figure, (10.0, 3.8))
    ax_loss, ax_dice = fig.subplots(1, 2)
    marker = "o" if len(records) <= 50 else None
    ax_loss.plot(epochs, loss, marker=marker, ms=3, color="0.2")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    ax_loss.grid(alpha=0.3)
    finite = loss[np.isfinite(loss)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 30:
        ax_loss.set_yscale("log")

    for label, vals in per.items():
        ax_dice.plot(epochs, vals, marker=marker, ms=2, lw=1, alpha=0.8, label=label, color=colour[label])
    if np.isfinite(val).any():
        ax_dice.plot(epochs, val, marker=marker, ms=3, lw=2, color="black", label="mean")
        best = int(np.nanargmax(val))
        ax_dice.plot(epochs[best], val[best], "*", ms=12, color="gold", mec="black", zorder=5, label="best epoch")
        kept = train.get("averaged_epochs") if train.get("kept") == "average" else None
        if kept:  # the weights the model holds: the average of these epochs, not the best one
            ax_dice.axvspan(
                kept[0] - 0.5, kept[1] + 0.5, color="0.85", zorder=0, label="kept: the average of these epochs"
            )
        ax_dice.set_title(f"validation Dice (best {val[best]:.3f} at epoch {epochs[best]:g})")
        ax_dice.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the lines
    else:
        ax_dice.set_title("validation Dice")
        ax_dice.text(
            0.5,
            0.5,
            "no validation data",
            ha="center",
            va="center",
            transform=ax_dice.transAxes,
            color="0.4",
        )
    ax_dice.set_ylim(0.0, 1.02)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("Dice")
    ax_dice.grid(alpha=0.3)
    _save(fig, path, overwrite)
    return fig


# --------------------------------------------------------------------------- per slice


def _as_report(report: Any) -> Any:
    from .metrics import Report

    if isinstance(report, Report):
        return report
    if isinstance(report, Mapping):
        return Report.from_dict(dict(report))
    raise InputError(f"report is a {type(report).__name__}: pass the Report from evaluate() or its to_dict()")


def slice_dice_plot(
    report: Any,
    *,
    path: str | os.PathLike | None = None,
    overwrite: bool = False,
    figure: Figure | None = None,
) -> Figure:
    """Plot per-slice mean Dice (and per-class Dice) along the report's axis.

    Slices without annotation are gaps; every annotated slice gets a marker, so
    sparse annotations stay visible.  The dashed line and band show the mean ±
    standard deviation of the per-slice mean Dice over annotated slices; when the report
    knows the slices the model trained on (:attr:`~napari_xrayseg.core.metrics.Report.trained_slices`),
    those are shaded and the mean is over the others.

    Parameters
    ----------
    report : Report or dict
        From :func:`~napari_xrayseg.core.metrics.evaluate` with ``per_slice=True``
        (or its :meth:`~napari_xrayseg.core.metrics.Report.to_dict`).
    path : str or os.PathLike, optional
        Also write the figure as a PNG here.
    overwrite : bool
        Replace an existing ``path``.
    figure : matplotlib.figure.Figure, optional
        Draw into this figure (cleared first) instead of a new one; its first
        axes has x = slice index, so a click's ``xdata`` rounds to the slice.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        If the report has no per-slice scores.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_xrayseg.core.metrics import evaluate
    >>> t = np.ones((3, 4, 4), np.uint8); p = t.copy(); p[1] = 2
    >>> fig = slice_dice_plot(evaluate(p, t))
    >>> fig.axes[0].get_xlabel()
    'slice index along axis 0'
    """
    report = _as_report(report)
    if report.axis is None or report.slice_dice is None:
        raise InputError("the report has no per-slice scores: evaluate with per_slice=True (the default)")
    if path is not None:
        _check_target(path, overwrite)
    mean = np.array([_num(v) for v in report.slice_dice])
    x = np.arange(mean.size)
    fig = _new_figure(figure, (8.0, 3.6))
    ax = fig.subplots()
    per_class = report.slice_class_dice or {}
    for c, vals in per_class.items():
        if all(v is None for v in vals):  # a class no slice scores (absent from truth and prediction): no line
            continue
        ax.plot(
            x,
            [_num(v) for v in vals],
            marker=".",
            ms=3,
            lw=0.8,
            alpha=0.6,
            color=label_color(int(c)) if int(c) > 0 else "0.5",
            label=(report.class_names or {}).get(int(c), f"class {c}"),
        )
    ax.plot(x, mean, marker="o", ms=3, lw=1.8, color="black", label="mean over classes")
    trained = [k for k in report.trained_slices or [] if 0 <= k < mean.size]
    for i, k in enumerate(trained):  # what the model learned from: their scores flatter it
        ax.axvspan(k - 0.5, k + 0.5, color="tab:orange", alpha=0.3, lw=0, label="trained on" if i == 0 else None)
    held = report.held_out if trained else None
    if held is not None and held["mean_slice_dice"] is not None:
        m, s = held["mean_slice_dice"], held["std_slice_dice"] or 0.0
        ax.axhspan(m - s, m + s, color="0.5", alpha=0.15, lw=0)
        ax.axhline(m, color="0.3", ls="--", lw=1)
        ax.set_title(
            f"per-slice Dice: {m:.3f} ± {s:.3f} over the {held['n_slices']} slices held out from training\n"
            f"(of {mean.size} slices; {len(trained)} trained on)",  # two lines: the Evaluate dock clipped one
            fontsize=10,
        )
    elif report.mean_slice_dice is not None:
        m, s = report.mean_slice_dice, report.std_slice_dice or 0.0
        ax.axhspan(m - s, m + s, color="0.5", alpha=0.15, lw=0)
        ax.axhline(m, color="0.3", ls="--", lw=1)
        ax.set_title(
            f"per-slice Dice: {m:.3f} ± {s:.3f} over {report.n_annotated_slices} annotated slices (of {mean.size})",
            fontsize=10,
        )
    else:
        ax.set_title("per-slice Dice: no annotated slice", fontsize=10)
    ax.set_xlim(-0.5, max(mean.size - 0.5, 0.5))
    shown = [mean] + [np.array([_num(v) for v in vals]) for vals in per_class.values()]
    lows = [float(np.nanmin(v)) for v in shown if np.isfinite(v).any()]
    bottom = max(0.0, math.floor(min(lows) * 10) / 10 - 0.1) if lows else 0.0
    ax.set_ylim(bottom, 1.02)
    ax.set_xlabel(f"slice index along axis {report.axis}")
    ax.set_ylabel("Dice")
    ax.grid(alpha=0.3)
    if len(per_class) <= 12:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the lines
    _save(fig, path, overwrite)
    return fig


# --------------------------------------------------------------------------- all at once


#: The files :func:`save_figures` may write into its folder.
FIGURE_FILES = ("collage.png", "slice_dice.png", "training_curves.png")


def check_figure_folder(directory: str | os.PathLike, overwrite: bool, names: Sequence[str] = FIGURE_FILES) -> None:
    """Raise if :func:`save_figures` could not write ``names`` into ``directory`` (the CLI checks before it computes).

    Raises
    ------
    InputError
        If ``directory`` is a file.
    OutputExistsError
        If one of the figures exists and ``overwrite`` is False.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"figures directory {directory} is a file: give a folder path")
    taken = [str(directory / n) for n in names if (directory / n).exists()]
    if taken and not overwrite:
        raise OutputExistsError(
            f"figures exist: {', '.join(taken)}: choose another folder or pass overwrite=True (--overwrite)"
        )


def save_figures(
    report: Any,
    image: Any,
    pred: Any,
    truth: Any,
    directory: str | os.PathLike,
    *,
    axis: int = 0,
    overwrite: bool = False,
    history: Any = None,
    n: int = 4,
    voxel_size: Sequence[float] | None = None,
    unit: str | None = None,
) -> list[Path]:
    """Write the standard evaluation figures into a directory.

    Files: ``collage.png`` (:func:`collage`), ``slice_dice.png``
    (:func:`slice_dice_plot`, skipped when the report has no per-slice scores) and,
    with ``history``, ``training_curves.png`` (:func:`training_curves`).  Nothing
    is written if any of them exists and ``overwrite`` is False.

    Parameters
    ----------
    report : Report
        From :func:`~napari_xrayseg.core.metrics.evaluate` on ``pred`` and ``truth``.
    image : array-like or None
        Raw data shown in the collage (``None``: show the truth instead).
    pred, truth : array-like
        Predicted and ground-truth labels (numpy, dask, zarr).
    directory : str or os.PathLike
        Output folder, created if missing.
    axis : int
        Slicing axis of the collage.  When it is the report's axis, the collage
        shows slices that carry annotations, those the model did not train on if
        the report knows them.
    overwrite : bool
        Replace existing figures.
    history : list of dict, str, os.PathLike or Model, optional
        Training history for ``training_curves.png`` (see :func:`training_curves`).
    n : int
        Slices in the collage.
    voxel_size, unit : optional
        The collage draws pixels to scale and names positions (:func:`collage`); default:
        what ``pred``'s (else ``truth``'s) file records.

    Returns
    -------
    list of Path
        The written files.

    Raises
    ------
    InputError
        For inconsistent arrays or a ``directory`` that is a file.
    OutputExistsError
        If a figure exists and ``overwrite`` is False.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from napari_xrayseg.core.metrics import evaluate
    >>> t = np.ones((3, 8, 8), np.uint8); p = t.copy(); p[1, :4] = 2
    >>> out = save_figures(evaluate(p, t), None, p, t, tempfile.mkdtemp())
    >>> [f.name for f in out]
    ['collage.png', 'slice_dice.png']
    """
    report = _as_report(report)
    directory = Path(directory)
    targets = {"collage": directory / "collage.png"}
    pred_ndim = _array(pred, "pred").ndim
    if report.slice_dice is not None and report.axis is not None and pred_ndim == 3:
        targets["slice_dice"] = directory / "slice_dice.png"
    else:  # (a 2D image's "slices" would be its rows)
        log.info("report has no per-slice scores of a volume: slice_dice.png not written")
    if history is not None:
        targets["training_curves"] = directory / "training_curves.png"
    check_figure_folder(directory, overwrite, [p.name for p in targets.values()])
    slices = None
    if pred_ndim == 3 and report.slice_dice is not None and report.axis is not None:
        if int(report.axis) == int(axis) % 3:
            annotated = [k for k, v in enumerate(report.slice_dice) if v is not None]
            trained = set(report.trained_slices or ())
            annotated = [k for k in annotated if k not in trained] or annotated  # held-out slices first
            if annotated:
                slices = _pick(annotated, n)
    if voxel_size is None:
        from .io import voxel_size_of

        found = voxel_size_of(pred) or voxel_size_of(truth)
        if found is not None and found[1] != "voxel":
            voxel_size, unit = found
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    collage(
        image,
        pred,
        truth,
        axis=axis,
        slices=slices,
        n=n,
        ignore_zero=report.ignore_zero,
        path=targets["collage"],
        overwrite=overwrite,
        class_names=report.class_names,
        voxel_size=voxel_size,
        unit=unit,
    )
    written.append(targets["collage"])
    if "slice_dice" in targets:
        slice_dice_plot(report, path=targets["slice_dice"], overwrite=overwrite)
        written.append(targets["slice_dice"])
    if "training_curves" in targets:
        training_curves(history, path=targets["training_curves"], overwrite=overwrite)
        written.append(targets["training_curves"])
    return written


def study_plot(
    summary: Sequence[Mapping[str, Any]],
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    overwrite: bool = False,
    figure: Figure | None = None,
) -> Figure:
    """Mean Dice ± std against the number of annotated slices, a line per (mode, inference axes).

    Parameters
    ----------
    summary : sequence of dict
        ``StudyResult.summary`` rows: ``mode``, ``axes``, ``slices``, ``mean``, ``std``.
    path : path-like, optional
        Save as PNG here (refused if it exists, unless ``overwrite``).
    title : str, optional
        Figure title.
    overwrite : bool
        Replace an existing PNG.
    figure : Figure, optional
        Draw into this figure (cleared) instead of a new one.
    """
    fig = _new_figure(figure, (6.4, 4.2))
    ax = fig.add_subplot()
    styles = {"supervised": ("tab:blue", "o"), "pix2pix": ("tab:orange", "s")}
    for mode, axes in dict.fromkeys((s["mode"], s["axes"]) for s in summary):
        rows = sorted((s for s in summary if (s["mode"], s["axes"]) == (mode, axes)), key=lambda s: s["slices"])
        color, marker = styles.get(mode, (None, "^"))
        label = f"{'U-Net' if mode == 'supervised' else 'Pix2Pix' if mode == 'pix2pix' else mode}, " + (
            "one axis" if axes == "z" else "orthoplane"
        )
        ax.errorbar(
            [s["slices"] for s in rows],
            [s["mean"] for s in rows],
            yerr=None if all(s.get("n", 2) < 2 for s in rows) else [s["std"] for s in rows],  # one run: no bars
            color=color,
            marker=marker,
            linestyle="-" if axes == "z" else "--",
            capsize=3,
            label=label,
        )
    ax.set_xscale("log", base=2)
    counts = sorted({s["slices"] for s in summary})
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("annotated slices")
    ax.set_ylabel("mean Dice (whole volume)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    if title:
        _title(ax, title)
    _save(fig, path, overwrite)
    return fig
