"""The annotation loop: preview one slice, suggest the next slices to annotate, continue training.

After a first training the user improves the model in rounds:

1. **preview** (:func:`predict_slice`): the slice on screen, segmented by the current model
   (any axis; the model's context slices are read around it);
2. **suggest** (:func:`suggest_slices`, :func:`rank_slices`): the slices not yet annotated,
   ranked by where the model contradicts itself (the share of a slice's pixels classed
   differently when seen along the other two axes; or under flips, or the entropy of the
   class probabilities), times a boost for slices whose grey levels no mix of annotated
   slices shows, picked greedily with a penalty on slices close to annotated or already
   picked ones, so suggestions spread out;
3. **correct**: the user copies the prediction of a suggested slice into the annotations
   and paints only the mistakes (a widget action: no core code needed);
4. **continue training** (:func:`continue_training`): warm start from the current model
   with all annotations, for a fraction of the first training's budget; the rounds are
   kept in the model's history.

The building blocks are the public predictor and training functions
(:class:`~napari_xrayseg.core.inference.SlicePredictor`, :func:`~napari_xrayseg.train`):
this module composes them, it has no loop of its own over the network.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import SUGGEST_MARGIN, SegmentConfig, TrainConfig, python_numbers
from .errors import Cancelled, InputError
from .io import read_block
from .labels import check_labels
from .level import as_model_input
from .models import Model, load_model
from .normalize import apply_normalization, compute_normalization, dead_slices_missing, fill_missing, mark_missing
from .progress import CancelToken, Progress, ProgressCallback, check, drain
from .tiling import context_range, normalize_axis, stack_context

__all__ = [
    "SliceRanking",
    "annotated_slices",
    "continue_training",
    "even_next",
    "iter_continue_training",
    "iter_rank_slices",
    "predict_slice",
    "rank_slices",
    "slice_normalization",
    "suggest_slices",
]

log = logging.getLogger(__name__)
_S = SegmentConfig()
_T = TrainConfig()
UNCERTAINTIES = ("entropy", "maxprob")
MEASURES = ("orthoplane", "flips", *UNCERTAINTIES)  # slice scores for suggest_slices; the first is the default
ORTHO_LINES = 16  # orthoplane score: at least this many lines across each slice, per in-plane direction
ORTHO_WORK = 4  # ... and more while the check costs at most this many times the slice pass
ORTHO_BAND = 32  # ... read along the other axes within this many slices either side of the scored ones
# novelty boost: a slice whose grey-level histogram lies farther than NOVELTY_FLOOR times the typical
# scored slice's from the mixtures of the annotated slices' histograms has its score multiplied by
# the excess (docs/annotate.md: where a model is consistently wrong its views agree, but its grey
# levels are new)
NOVELTY_FLOOR = 1.5
NOVELTY_BINS = 32  # histogram of grey levels in [-0.25, 1.25] (0 and 1: the slice's 1st and 99th percentiles)
NOVELTY_REFERENCES = 64  # at most this many annotated slices (evenly spaced) describe what is annotated


# --------------------------------------------------------------------------- inputs


def _volume(image: Any, name: str = "image") -> Any:
    """``image`` as a 3D array-like (a 2D image is one slice)."""
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        image = np.asarray(image)
    if len(image.shape) == 2:
        return image[None] if isinstance(image, np.ndarray) else _Slice2D(image)
    if len(image.shape) != 3:
        raise InputError(
            f"{name} has {len(image.shape)} dimensions (shape {tuple(image.shape)}): give a 3D volume or a 2D slice"
        )
    dt = np.dtype(image.dtype)
    if name == "labels" and dt == np.bool_:
        raise InputError("labels are boolean: give integer class labels (0 = not annotated, 1..N = classes)")
    if dt == np.bool_ or not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating)):
        raise InputError(f"{name} has dtype {dt}: give integer or floating-point values")
    return image


class _Slice2D:
    """A 2D array-like seen as a volume of one slice (reads go through to the array)."""

    def __init__(self, arr: Any) -> None:
        self.arr, self.shape, self.dtype = arr, (1, *arr.shape), arr.dtype

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self.arr[index[1:]])[None]


def _model(model: Model | str | os.PathLike) -> Model:
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, device="cpu")
    if not isinstance(model, Model):
        raise InputError(f"model must be a Model or a model file path, not {type(model).__name__}")
    if model.info.channels > 1:
        raise InputError(
            f"the model takes {model.info.channels} image channels, which the annotation loop (preview, "
            "suggestions, continue training) does not handle yet: segment with segment() or the Segment widget"
        )
    return model


def _norm(model: Model, image: Any, normalization: dict[str, Any] | None) -> dict[str, Any]:
    """The model's intensity bounds, or ``normalization``, or bounds computed from ``image``."""
    if normalization is not None:
        return normalization
    return slice_normalization(image, model)


def slice_normalization(image: Any, model: Model | str | os.PathLike) -> dict[str, Any]:
    """The intensity bounds ``model`` applies to ``image``: its own, or (per-image models) the image's.

    A model trained with ``normalize="image"`` (the default) stores no bounds: like
    :func:`~napari_xrayseg.segment`, they are computed from a sample of the image's
    slices. Pass the result as ``normalization=`` to :func:`predict_slice` to do that
    work once for many previews of the same image.

    Examples
    --------
    >>> from napari_xrayseg import init_model
    >>> sorted(slice_normalization(np.arange(8.0).reshape(2, 2, 2), init_model("unet", size="tiny")))
    ['high', 'low', 'method', 'percentiles']
    """
    model = _model(model)
    norm = dict(model.info.normalization)
    if norm.get("low") is None or norm.get("high") is None:
        vol = as_model_input(_volume(image), model.info)  # levelled first where the model levels (normalize="slice")
        norm = compute_normalization(vol, percentiles=tuple(norm.get("percentiles") or (0.5, 99.5)))
    return norm


MAX_SLICE_TILE = 1024  # tile="slice": one window per slice up to this side (activations grow with it)


def _predictor(
    model: Model,
    *,
    device: str,
    tile: int | str | None,
    overlap: float,
    batch: int,
    precision: str,
    plane: tuple[int, ...] = (),
) -> Any:
    from .inference import SlicePredictor

    if tile == "slice":
        stride = model.info.stride
        tile = min(MAX_SLICE_TILE, math.ceil(max(plane) / stride) * stride)
    elif tile is not None and tile != "auto" and not isinstance(tile, int):
        raise InputError(f"tile {tile!r} must be 'auto', a number of pixels, 'slice' or None (the model's)")
    return SlicePredictor(
        model,
        device=device,
        tile=model.info.tile if tile is None else tile,
        overlap=overlap,
        batch=batch,
        precision=precision,
    )


def _index(i: Any, n: int, axis: int) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= int(i) < n:
        raise InputError(f"slice index {i!r} is out of range for {n} slices along axis {axis}: use 0..{n - 1}")
    return int(i) % n


def _crop_window(shape: tuple[int, int], max_side: int | None) -> tuple[slice, slice]:
    """A centred window of at most ``max_side`` pixels per side (the whole slice without a limit)."""
    if max_side is None:
        return slice(None), slice(None)
    out = []
    for s in shape:
        w = min(s, int(max_side))
        a = (s - w) // 2
        out.append(slice(a, a + w))
    return out[0], out[1]


def _read_inputs(
    image: Any,
    axis: int,
    indices: Sequence[int],
    k: int,
    norm: dict[str, Any],
    window: tuple[slice, slice],
    *,
    with_missing: bool = False,
) -> Any:
    """Normalised network inputs for consecutive ``indices`` along ``axis``: (N, Y, X), or (N, k, Y, X).

    ``with_missing``: ``(inputs, mask)``, the mask (N, Y, X) of the slices' voxels without data
    (NaN), or None where there are none.
    """
    n = image.shape[axis]
    a, b = indices[0], indices[-1] + 1
    lo, hi = context_range(a, b, k, n)
    index: list[Any] = list(window)
    index.insert(axis, slice(lo, hi))
    data = read_block(image, tuple(index), what=f"image (slices {lo}..{hi - 1} along axis {axis})")
    data = dead_slices_missing(np.moveaxis(data, axis, 0), axis, lo)  # as segment() reads them
    try:  # voxels without data (NaN): the nearest grey level with data, as segment() fills them
        filled, miss = fill_missing(data, float(norm["low"]))
    except InputError as e:
        raise InputError(f"{e.args[0]} (slices {lo}..{hi - 1} along axis {axis})") from None
    x = apply_normalization(filled, norm)
    s = a - lo
    x = x[s : s + b - a] if k == 1 else stack_context(x[s : s + b - a], k, before=x[:s], after=x[s + b - a :])
    if not with_missing:
        return x
    core = miss[s : s + b - a] if miss is not None else None
    return x, (core if core is not None and core.any() else None)


def _runs(indices: Sequence[int], longest: int) -> list[list[int]]:
    """Sorted indices cut into runs of consecutive values, each at most ``longest`` long."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][-1] + 1 and len(runs[-1]) < longest:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


# --------------------------------------------------------------------------- preview


@python_numbers
def predict_slice(
    image: Any,
    model: Model | str | os.PathLike,
    index: int,
    *,
    axis: int = 0,
    probs: bool = False,
    tile: int | str | None = "auto",
    overlap: float = _S.overlap,
    batch: int = _S.batch,
    device: str = _S.device,
    precision: str = "fp32",
    normalization: dict[str, Any] | None = None,
) -> np.ndarray:
    """Segment one slice of a volume: the preview of the slice a user looks at.

    The slice is read with the model's context slices around it (edge-replicated at the
    volume ends), exactly as :func:`~napari_xrayseg.segment` would read it, so the
    preview equals the same slice of a whole-volume segmentation along ``axis``.

    Parameters
    ----------
    image : array-like of shape (Z, Y, X) or (Y, X)
        numpy, dask, zarr or h5py array; only the slice and its context are read.
    model : Model or path-like
        A trained model (or its file).
    index : int
        The slice, along ``axis`` (negative counts from the end).
    axis : int
        Slicing axis.
    probs : bool
        Return class probabilities, float32 of shape (C, Y', X') (channel ``i`` stands for
        ``model.info.classes[i]``), instead of labels.
    tile : "auto", int, "slice" or None
        As for :func:`~napari_xrayseg.segment` (default ``"auto"``, as there, so the preview
        equals the segmentation); None: the model's tile. ``"slice"``: one window over the whole slice
        (up to 1024 pixels a side), 2-3x faster on a 512x512 slice than 256 tiles with
        25 % overlap; labels may then differ from ``segment``'s near tile seams.
    overlap, batch, device, precision
        As for :func:`~napari_xrayseg.segment`.
    normalization : dict, optional
        Intensity bounds to use when the model has none (an untrained model); computed
        from ``image`` by default (a sample of slices: pass them to skip that work on
        every call).

    Returns
    -------
    numpy.ndarray
        uint8 labels of the slice's shape (the volume's shape without ``axis``), or the
        probabilities when ``probs`` is true.

    Raises
    ------
    InputError
        On a bad index or axis, a volume that is not 2D/3D, inf in the slice.

    Examples
    --------
    >>> from napari_xrayseg import init_model
    >>> model = init_model("unet", size="tiny", classes=3, tile=32)
    >>> predict_slice(np.random.rand(5, 32, 48).astype("float32"), model, 2, axis=1, device="cpu").shape
    (5, 48)
    """
    model = _model(model)
    vol = as_model_input(_volume(image), model.info)  # levelled where the model levels (once per image)
    axis = normalize_axis(axis, 3) if len(image.shape) == 3 else 0
    i = _index(index, vol.shape[axis], axis)
    norm = _norm(model, vol, normalization)
    plane = tuple(s for d, s in enumerate(vol.shape) if d != axis)
    pred = _predictor(model, device=device, tile=tile, overlap=overlap, batch=batch, precision=precision, plane=plane)
    x, miss = _read_inputs(vol, axis, [i], model.info.context, norm, (slice(None), slice(None)), with_missing=True)
    out = pred.probs(x)[0] if probs else pred.labels(x)[0]
    if miss is not None:  # voxels without data: not segmented (their probabilities NaN)
        out[..., miss[0]] = np.nan if probs else 0
    return out


# --------------------------------------------------------------------------- suggest


def annotated_slices(labels: Any, *, axis: int = 0) -> list[int]:
    """Indices of the slices along ``axis`` that hold any annotation (a nonzero label).

    Parameters
    ----------
    labels : array-like of shape (Z, Y, X) or (Y, X)
        0 = not annotated. Read a slab at a time.
    axis : int
        Slicing axis.

    Returns
    -------
    list of int

    Examples
    --------
    >>> lab = np.zeros((4, 3, 3), np.uint8)
    >>> lab[2, 1, 1] = 1
    >>> annotated_slices(lab), annotated_slices(lab, axis=2)
    ([2], [1])
    """
    vol = _volume(labels, "labels")
    axis = normalize_axis(axis, 3) if len(labels.shape) == 3 else 0
    if isinstance(vol, np.ndarray):
        vol = check_labels(vol)  # negative, fractional or NaN labels are refused, as training refuses them
        other = tuple(d for d in range(3) if d != axis)
        return [int(i) for i in np.flatnonzero(np.any(vol, axis=other))]
    n = vol.shape[axis]
    depth = 16
    chunks = getattr(vol, "chunks", None)
    if chunks is not None and not isinstance(chunks[0], tuple):  # zarr: read whole chunks
        depth = int(chunks[axis])
    out: list[int] = []
    for lo in range(0, n, depth):
        hi = min(n, lo + depth)
        index = [slice(None)] * 3
        index[axis] = slice(lo, hi)
        where = f"slices {lo}..{hi - 1} along axis {axis}"
        block = np.moveaxis(check_labels(read_block(vol, tuple(index), what=f"labels ({where})"), where=where), axis, 0)
        out.extend(lo + int(j) for j in np.flatnonzero(block.reshape(hi - lo, -1).any(axis=1)))
    return out


#: The annotation loop counts a slice as annotated when at least this share of its pixels is painted,
#: not counting the lines that planes painted along the other axes leave in it (a stroke is not a done slice).
PAINTED_SHARE = 0.01
#: ... a plane along another axis counts as painted (its crossing lines left out) from this share of its pixels.
PLANE_SHARE = 0.5


def painted_slices(labels: Any, *, axis: int = 0) -> list[int]:
    """Slices along ``axis`` the annotation loop counts as annotated: :data:`PAINTED_SHARE` of them painted.

    Unlike :func:`annotated_slices` (any nonzero pixel), a few strokes do not make a slice done, and
    one plane painted along another axis (which crosses every slice along ``axis`` in a line) does
    not make every slice annotated: its pixels are left out of the count. A slice painted over
    :data:`PLANE_SHARE` of itself is annotated whatever crosses it.

    Examples
    --------
    >>> lab = np.zeros((8, 16, 16), np.uint8)
    >>> lab[:, 5, :] = 1  # an xz plane
    >>> lab[3] = 2  # a z slice
    >>> lab[6, 1, 1] = 1  # a stroke
    >>> annotated_slices(lab), painted_slices(lab), painted_slices(lab, axis=1)
    ([0, 1, 2, 3, 4, 5, 6, 7], [3], [5])
    """
    if len(labels.shape) != 3:
        return annotated_slices(labels, axis=axis)
    axis = normalize_axis(axis, 3)
    vol = _volume(labels, "labels")
    shape = tuple(int(n) for n in vol.shape)
    depth = 16
    chunks = getattr(vol, "chunks", None)
    if chunks is not None and not isinstance(chunks[0], tuple):  # zarr: read whole chunks
        depth = int(chunks[0])

    def counts(cut: dict[int, np.ndarray]) -> list[np.ndarray]:
        """Painted pixels per slice along each axis, the slices ``cut[b]`` along axis b left out."""
        out = [np.zeros(n, np.int64) for n in shape]
        for lo in range(0, shape[0], depth):
            hi = min(shape[0], lo + depth)
            where = f"slices {lo}..{hi - 1} along axis 0"
            m = check_labels(np.asarray(read_block(vol, (slice(lo, hi),), what=f"labels ({where})")), where=where) > 0
            for b, idx in cut.items():
                index: list[Any] = [slice(None)] * 3
                index[b] = idx[(idx >= lo) & (idx < hi)] - lo if b == 0 else idx
                m[tuple(index)] = False
            out[0][lo:hi] += m.sum(axis=(1, 2))
            out[1] += m.sum(axis=(0, 2))
            out[2] += m.sum(axis=(0, 1))
        return out

    size = [int(np.prod(shape)) // n for n in shape]  # pixels of a slice along each axis
    every = counts({})
    full = np.flatnonzero(every[axis] >= PLANE_SHARE * size[axis])  # slices along axis mostly painted: done
    # planes along the other axes, judged without the slices along axis already painted (those cross them all)
    rest = counts({axis: full}) if len(full) else every
    left = [size[b] - len(full) * (size[b] // shape[axis]) for b in range(3)]  # their pixels outside those slices
    planes = {
        b: np.flatnonzero(rest[b] >= PLANE_SHARE * left[b]) if left[b] > 0 else np.zeros(0, np.int64)
        for b in range(3)
        if b != axis
    }
    own = (
        counts({b: p for b, p in planes.items() if len(p)})[axis]
        if any(len(p) for p in planes.values())
        else every[axis]
    )
    need = max(1, math.ceil(PAINTED_SHARE * size[axis]))
    done = (own >= need) | (every[axis] >= PLANE_SHARE * size[axis])
    return [int(i) for i in np.flatnonzero(done)]


@dataclass
class SliceRanking:
    """Slices ranked for annotation, with the per-slice score behind the ranking.

    Attributes
    ----------
    suggested : list of int
        Slice indices to annotate next, best first (never an annotated slice).
    uncertainty : numpy.ndarray of float
        The score of each slice along ``axis``, in [0, 1] (0: the model is sure); NaN for
        slices not scored (annotated, or left out of the sample on long axes).
    annotated : list of int
        Slices that already hold annotations.
    axis : int
        Slicing axis.
    measure : str
        The score: ``"orthoplane"``, ``"flips"``, ``"entropy"`` or ``"maxprob"`` (see
        :func:`suggest_slices`).
    novelty : numpy.ndarray of float or None
        How far each scored slice's grey levels lie from every mixture of the annotated
        slices' grey levels, relative to the median scored slice (1: typical; NaN where
        not scored); None when not computed (no annotations, or ``novelty=False``).
    spread : float
        Distance (in slices) of the spreading penalty: a candidate ``d`` slices from an
        annotated or already suggested slice (or from just outside the volume) has its
        score multiplied by ``1 - exp(-d^2 / (2 spread^2))``.
    margin : float
        How much higher than the middle of the widest gap a slice had to score to be
        suggested instead of it (0: no such rule; see :func:`suggest_slices`).
    reasons : list of str
        Per suggested slice: ``"score"`` (it stood out) or ``"gap"`` (no slice did: the
        middle of the widest gap).
    """

    suggested: list[int]
    uncertainty: np.ndarray
    annotated: list[int] = field(default_factory=list)
    axis: int = 0
    measure: str = "orthoplane"
    spread: float = 1.0
    novelty: np.ndarray | None = None
    margin: float = 0.0
    reasons: list[str] = field(default_factory=list)

    @property
    def score(self) -> np.ndarray:
        """What the slices are ranked by: ``uncertainty`` times the novelty boost (see :func:`novelty_boost`)."""
        if self.novelty is None:
            return self.uncertainty
        return self.uncertainty * novelty_boost(self.novelty, self.uncertainty)


def novelty_boost(novelty: np.ndarray, uncertainty: np.ndarray | None = None) -> np.ndarray:
    """The factor on each slice's score: ``max(1, novelty / NOVELTY_FLOOR) ** g``, NaN kept.

    ``g = min(1, uncertainty / median uncertainty) ** 2`` (1 without ``uncertainty``): the
    boost counts in full where the model's score is at least the median slice's, and fades
    where the model is more sure of a new region than of the rest. Such a region is one it
    gets right (a coarser layer of the same phases, docs/annotate.md); one it gets wrong
    consistently (resin-filled pores taken for a solid) keeps an ordinary score.

    >>> novelty_boost(np.array([0.5, 1.5, 4.5, np.nan]))
    array([ 1.,  1.,  3., nan])
    >>> novelty_boost(np.array([4.5, 4.5, 4.5]), np.array([0.1, 0.2, 0.2])).round(3)
    array([1.316, 3.   , 3.   ])
    """
    novelty = np.asarray(novelty, dtype=float)
    boost = np.maximum(1.0, novelty / NOVELTY_FLOOR)
    if uncertainty is not None:
        u = np.asarray(uncertainty, dtype=float)
        med = float(np.nanmedian(u)) if np.isfinite(u).any() else 0.0
        if med > 0:
            boost = boost ** (np.clip(u / med, 0.0, 1.0) ** 2)
    return np.where(np.isnan(novelty), np.nan, boost)


def _grey_histogram(x: np.ndarray) -> np.ndarray:
    """Histogram of a slice's grey levels, rescaled to its own 1st-99th percentiles (NOVELTY_BINS bins).

    Rescaling each slice by its own percentiles makes the histogram blind to a global change of
    brightness or contrast (drift along the axis, beam decay), which per-image normalisation
    handles; what is left is the shape: which grey levels occur, relative to each other, how often.
    """
    lo, hi = np.percentile(x, (1.0, 99.0))
    y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    h, _ = np.histogram(np.clip(y, -0.25, 1.25), bins=NOVELTY_BINS, range=(-0.25, 1.25))
    return h / max(1, h.sum())


def _data_of(x: np.ndarray, miss: np.ndarray | None) -> np.ndarray:
    """The first slice of ``x`` (1, Y, X), its voxels with data only (all of it where ``miss`` is None)."""
    return x[0].ravel() if miss is None else x[0][~miss[0]]


def hull_distance(points: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row of ``points`` to the convex hull of the rows of ``references``.

    A slice whose histogram is a mix of annotated slices' histograms (e.g. between two
    annotated regions, or half in each) lies in their hull: it is not new. Solved as
    non-negative least squares with a heavily weighted sum-to-one row.

    >>> hull_distance(np.array([[0.5, 0.5], [1.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])).round(3)
    array([0.   , 0.707])
    """
    from scipy.optimize import nnls

    ref = np.asarray(references, dtype=float)
    a = np.vstack([ref.T, np.full(len(ref), 1e3)])
    out = np.empty(len(points))
    for i, p in enumerate(np.asarray(points, dtype=float)):
        w, _ = nnls(a, np.concatenate([p, [1e3]]))
        out[i] = float(np.linalg.norm(ref.T @ w - p))
    return out


def _slice_mean(v: np.ndarray, data: np.ndarray | None) -> np.ndarray:
    """Per slice of ``v`` (N, Y, X): the mean over the pixels where ``data`` (N, Y, X) holds; NaN where none do."""
    if data is None:
        return v.reshape(len(v), -1).mean(axis=1)
    n = data.reshape(len(v), -1).sum(axis=1)
    s = np.where(data, v, 0).reshape(len(v), -1).sum(axis=1)
    return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _uncertainty(p: np.ndarray, measure: str, data: np.ndarray | None = None) -> np.ndarray:
    """Mean per-pixel uncertainty of probabilities (N, C, Y, X), one value per slice, in [0, 1].

    ``data`` (N, Y, X): only those pixels count (the others are voxels without data).

    >>> p = np.zeros((1, 2, 1, 2)); p[0, :, 0, 0] = 0.5; p[0, 0, 0, 1] = 1.0
    >>> _uncertainty(p, "entropy"), _uncertainty(p, "entropy", np.array([[[False, True]]]))
    (array([0.5]), array([0.]))
    """
    c = p.shape[1]
    if measure == "maxprob":
        return _slice_mean(1.0 - p.max(axis=1), data) * (c / max(c - 1, 1))
    h = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1) / math.log(max(c, 2))
    return _slice_mean(h, data)


def _flip_disagreement(pred: Any, x: np.ndarray, labels: np.ndarray, data: np.ndarray | None = None) -> np.ndarray:
    """Share of pixels (with data) whose class changes when the slices are flipped (each in-plane axis), per slice."""
    out = np.zeros(len(x))
    for ax in (-1, -2):
        q = np.flip(pred.probs(np.ascontiguousarray(np.flip(x, axis=ax))), axis=ax)
        out += _slice_mean(q.argmax(axis=1) != labels, data)
    return out / 2


def _line_positions(size: int, lines: int) -> np.ndarray:
    """Up to ``lines`` evenly spaced positions in ``0..size-1``."""
    return np.unique(np.round(np.linspace(0, size - 1, min(lines, size))).astype(int))


def _bands(indices: Sequence[int], half: int, n: int) -> list[tuple[int, int]]:
    """Merged ranges ``[i - half, i + half]`` around ``indices``, clipped to ``0..n``."""
    out: list[tuple[int, int]] = []
    for i in sorted(indices):
        a, b = max(0, i - half), min(n, i + half + 1)
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _widest_gap_middle(edges: Sequence[int]) -> int | None:
    """The middle of the widest gap between sorted ``edges`` (ties: the lowest gap); None if none is open."""
    gaps = [(b - a, -a, (a + b) // 2) for a, b in zip(edges[:-1], edges[1:]) if b - a > 1]
    return max(gaps)[2] if gaps else None


def even_next(n: int, annotated: Sequence[int]) -> int:
    """The slice that spreads ``annotated`` most evenly over ``0..n-1``: the middle of the widest gap.

    The volume ends count as annotated slices at -1 and ``n``, so k slices added one by
    one from an empty volume approach even spacing (n / (k + 1) apart), never the ends.
    The loop study's ``even`` strategy adds these slices, and :func:`suggest_slices`
    falls back to them when no slice stands out.

    Examples
    --------
    >>> even_next(48, []), even_next(48, [23]), even_next(48, [23, 35])
    (23, 35, 11)
    """
    mid = _widest_gap_middle(sorted({-1, n, *(int(a) for a in annotated)}))
    if mid is None:
        raise InputError(f"every one of the {n} slices is annotated: no slice left to add")
    return mid


def _gap_middle(taken: Sequence[int], free: np.ndarray, d: np.ndarray, ends: bool) -> int:
    """The free index in the middle of the widest gap between ``taken`` (ties: the lowest gap).

    With ``ends`` (the volume ends among ``taken``) this is the slice :func:`even_next`
    adds, or the free index nearest to it when that one is not free (unscored; of two, the one
    farther from ``taken``, by ``d``); otherwise the free index farthest from ``taken``.
    """
    mid = _widest_gap_middle(sorted(set(taken))) if ends else None
    if mid is not None:
        cand = np.flatnonzero(free)
        near = cand[np.abs(cand - mid) == np.abs(cand - mid).min()]
        return int(near[np.argmax(d[near])])  # of two equally near, the one farther from the others
    return int(np.argmax(np.where(free, d, -1.0)))


def spread_pick(
    scores: np.ndarray,
    anchors: Sequence[int],
    count: int,
    spread: float,
    *,
    ends: bool = False,
    margin: float = 0.0,
    why: list[str] | None = None,
) -> list[int]:
    """Greedily pick ``count`` indices with high ``scores``, away from ``anchors`` and each other.

    Each pick maximises ``score * (1 - exp(-d^2 / (2 spread^2)))`` where ``d`` is the
    distance to the nearest anchor or earlier pick (no penalty without anchors); NaN
    scores are never picked. With ``ends``, positions -1 and ``len(scores)`` count as
    anchors too (the volume ends: see :func:`suggest_slices`). Ties go to the candidate
    farther from the anchors, then to the lower index.

    With ``margin > 0`` (and anchors), the pick must beat the **middle of the widest gap**
    (the scored index farthest from the anchors and earlier picks, the lowest among equals;
    with ``ends`` the slice :func:`even_next` adds) by that
    factor: a pick whose penalised score is below ``(1 + margin)`` times the middle's
    penalised score gives way to the middle. Scores that single out no index thus fill the
    gaps evenly. ``why``, when given, receives ``"score"`` or ``"gap"`` per pick.

    Examples
    --------
    >>> spread_pick(np.array([0.9, 1.0, 0.8, 0.1, 0.5]), [], 2, 1.0)
    [1, 4]
    >>> spread_pick(np.ones(21), [10], 2, 3.0, ends=True)
    [4, 15]
    >>> s = np.full(21, 0.5); s[3] = 0.6; s[17] = 2.0
    >>> spread_pick(s, [10], 1, 3.0, ends=True), spread_pick(s, [10], 2, 3.0, ends=True, margin=0.5)
    ([17], [17, 4])
    """
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    pos = np.arange(n)
    free = np.isfinite(scores)
    taken = [int(a) for a in anchors] + ([-1, n] if ends else [])
    picked: list[int] = []
    for _ in range(count):
        if not free.any():
            break
        if taken:
            d = np.min(np.abs(pos[:, None] - np.asarray(taken)[None, :]), axis=1).astype(float)
            w = 1.0 - np.exp(-(d**2) / (2.0 * spread**2))
        else:
            d, w = np.zeros(n), np.ones(n)
        eff = np.where(free, np.nan_to_num(scores) * w, -np.inf)
        best = np.flatnonzero(eff == eff.max())
        i = int(best[np.argmax(d[best])])  # argmax returns the first (lowest) among equals
        reason = "score"
        if margin > 0 and taken:
            gap = _gap_middle(taken, free, d, ends)
            if eff[i] < (1.0 + margin) * eff[gap]:
                i, reason = gap, "gap"
        if why is not None:
            why.append(reason)
        picked.append(i)
        taken.append(i)
        free[i] = False
    return picked


def iter_rank_slices(
    image: Any,
    model: Model | str | os.PathLike,
    labels: Any = None,
    *,
    axis: int = 0,
    count: int = 1,
    measure: str = "orthoplane",
    spread: float | None = None,
    margin: float = SUGGEST_MARGIN,
    max_slices: int | None = 64,
    max_side: int | None = 512,
    tile: int | str | None = "auto",
    overlap: float = _S.overlap,
    batch: int = _S.batch,
    device: str = _S.device,
    precision: str = "fp32",
    novelty: bool = True,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, SliceRanking]:
    """Generator form of :func:`rank_slices`: yields a :class:`Progress` per batch of scored slices."""
    model = _model(model)
    vol = as_model_input(_volume(image), model.info, cancel=cancel)  # levelled where the model levels
    is2d = len(image.shape) == 2
    axis = 0 if is2d else normalize_axis(axis, 3)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise InputError(f"count {count!r} must be a positive integer, e.g. 1")
    if measure not in MEASURES:
        raise InputError(f"measure {measure!r} must be one of {list(MEASURES)}")
    if spread is not None and (isinstance(spread, bool) or not isinstance(spread, (int, float)) or not spread > 0):
        raise InputError(f"spread {spread!r} must be a positive number of slices, or None for the default")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
        raise InputError(f"margin {margin!r} must be a number >= 0, e.g. {SUGGEST_MARGIN} (0: rank by score alone)")
    for name, v in (("max_slices", max_slices), ("max_side", max_side)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise InputError(f"{name} {v!r} must be a positive integer or None (no limit)")
    n = vol.shape[axis]
    annotated: list[int] = []
    if labels is not None:
        if tuple(labels.shape) != tuple(image.shape):
            raise InputError(f"labels shape {tuple(labels.shape)} does not match image shape {tuple(image.shape)}")
        annotated = painted_slices(labels, axis=axis)  # strokes and crossing planes do not make a slice done
    ann = set(annotated)
    free = [i for i in range(n) if i not in ann]
    if max_slices is not None and len(free) > max_slices:  # evenly spaced sample of the free slices
        free = sorted({free[int(round(j))] for j in np.linspace(0, len(free) - 1, int(max_slices))})
    if spread is None:
        spread = max(1.0, n / (2.0 * (len(annotated) + count + 1)))
    used = "flips" if measure == "orthoplane" and is2d else measure  # a 2D image has no other axes
    scores = np.full(n, np.nan)
    hists: dict[int, np.ndarray] = {}
    nov: np.ndarray | None = None
    if free:
        k = model.info.context
        norm = _norm(model, vol, None)
        plane = tuple(s for d, s in enumerate(vol.shape) if d != axis)
        window = _crop_window(plane, max_side)
        wshape = tuple(len(range(*w.indices(s))) for w, s in zip(window, plane))
        pred = _predictor(
            model, device=device, tile=tile, overlap=overlap, batch=batch, precision=precision, plane=wshape
        )
        pred.cancel = cancel
        dims = [d for d in range(3) if d != axis]
        # orthoplane: the classes of the slice's pixels on lines across it, from the slice itself
        # and from the slices along the two other axes through those lines (as many lines as keep
        # that check within ORTHO_WORK times the work of scoring the slices: all on small volumes)
        bands = _bands(free, ORTHO_BAND, n) if used == "orthoplane" else []
        depth = sum(b - a for a, b in bands)
        most = ORTHO_WORK * len(free) * wshape[0] * wshape[1] // max(1, depth * (wshape[0] + wshape[1]))
        lines = [_line_positions(s, max(ORTHO_LINES, int(most))) for s in wshape]
        jobs = sum(len(pos) for pos in lines) * len(bands)
        seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        valid: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        done, total = 0, len(free) + jobs
        t0 = time.perf_counter()

        def step(what: str) -> Progress:
            return Progress(done, total, what, {"seconds": time.perf_counter() - t0})

        for run in _runs(free, pred.slices_per_call(wshape)):  # type: ignore[arg-type]
            check(cancel)
            x, miss = _read_inputs(vol, axis, run, k, norm, window, with_missing=True)
            # voxels without data (filled for the network) count nowhere: a slice's score, its
            # histogram and its orthoplane check are its voxels with data; a slice without any: NaN
            data = None if miss is None else ~miss
            p = pred.probs(x)
            if novelty and annotated:
                for j, i in enumerate(run):
                    v = x[j] if k == 1 else x[j, k // 2]
                    if data is None or data[j].any():
                        hists[i] = _grey_histogram(v if data is None else v[data[j]])
            if used in UNCERTAINTIES:
                scores[run] = _uncertainty(p, used, data)
            elif used == "flips":
                scores[run] = _flip_disagreement(pred, x, p.argmax(axis=1), data)
            else:
                cls = p.argmax(axis=1)
                for j, i in enumerate(run):
                    if data is None or data[j].any():
                        seen[i] = (cls[j][lines[0], :], cls[j][:, lines[1]].T)
                        if data is not None:
                            valid[i] = (data[j][lines[0], :], data[j][:, lines[1]].T)
            done += len(run)
            yield step(f"scored {done}/{len(free)} slices along axis {axis}")
        if used == "orthoplane":
            differ = dict.fromkeys(seen, 0)
            for a, b in bands:
                for side, (d, other) in enumerate(((dims[0], dims[1]), (dims[1], dims[0]))):
                    win = {axis: slice(a, b), other: window[1 - side]}
                    w2 = (win[min(axis, other)], win[max(axis, other)])
                    start = window[side].indices(plane[side])[0]
                    where = {int(r): line for line, r in enumerate(lines[side])}
                    shape2 = (b - a, len(range(*window[1 - side].indices(plane[1 - side]))))
                    for run in _runs(list(where), pred.slices_per_call(shape2)):
                        check(cancel)
                        x = _read_inputs(vol, d, [start + r for r in run], k, norm, w2)
                        cls = pred.probs(x).argmax(axis=1)
                        if axis > other:
                            cls = cls.transpose(0, 2, 1)  # (lines, slices along axis, pixels along the other axis)
                        for j, r in enumerate(run):
                            for i in range(a, b):
                                if i in seen:
                                    w = where[r]
                                    wrong = cls[j, i - a] != seen[i][side][w]
                                    if i in valid:
                                        wrong &= valid[i][side][w]
                                    differ[i] += int(np.count_nonzero(wrong))
                        done += len(run)
                        yield step(f"orthoplane check {done - len(free)}/{jobs} along axis {d}")
            for i, (rows, cols) in seen.items():
                if i in valid:  # the pixels with data on the lines
                    rows, cols = valid[i]
                    scores[i] = differ[i] / max(1, int(rows.sum()) + int(cols.sum()))
                else:
                    scores[i] = differ[i] / (rows.size + cols.size)
        if len(hists) >= 2:
            nov = _novelty(vol, axis, annotated, hists, norm, window, n)
    ranking = SliceRanking([], scores, annotated, axis, used, float(spread), nov, float(margin))
    picked = spread_pick(
        ranking.score, annotated, int(count), float(spread), ends=n > 2, margin=float(margin), why=ranking.reasons
    )
    log.info(
        "suggested slices %s along axis %d (%s, spread %.1f, margin %.2f: %s; %d annotated)",
        picked,
        axis,
        used,
        spread,
        margin,
        ", ".join(ranking.reasons),
        len(annotated),
    )
    ranking.suggested = picked
    return ranking


def _novelty(
    vol: Any,
    axis: int,
    annotated: Sequence[int],
    hists: dict[int, np.ndarray],
    norm: dict[str, Any],
    window: tuple[slice, slice],
    n: int,
) -> np.ndarray | None:
    """Per slice: grey-histogram distance to the annotated slices' hull, over the median scored slice's.

    None where no annotated slice holds data (nothing to compare with).
    """
    refs = list(annotated)
    if len(refs) > NOVELTY_REFERENCES:
        refs = [refs[int(round(j))] for j in np.linspace(0, len(refs) - 1, NOVELTY_REFERENCES)]
    grey = [_data_of(*_read_inputs(vol, axis, [i], 1, norm, window, with_missing=True)) for i in refs]
    grey = [g for g in grey if g.size]  # an annotated slice without data (its labels are ignored) is no reference
    if not grey:
        return None
    out = np.full(n, np.nan)
    ref = np.stack([_grey_histogram(g) for g in grey])
    idx = sorted(hists)
    dist = hull_distance(np.stack([hists[i] for i in idx]), ref)
    med = float(np.median(dist))
    out[idx] = dist / med if med > 0 else 1.0
    return out


@python_numbers
def rank_slices(
    image: Any,
    model: Model | str | os.PathLike,
    labels: Any = None,
    *,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> SliceRanking:
    """Rank the slices not yet annotated by how much annotating them should help.

    Parameters as for :func:`suggest_slices`; returns the whole :class:`SliceRanking`
    (the per-slice score too, e.g. for a plot).
    """
    return drain(iter_rank_slices(image, model, labels, **options), progress)


@python_numbers
def suggest_slices(
    image: Any,
    model: Model | str | os.PathLike,
    labels: Any = None,
    *,
    axis: int = 0,
    count: int = 1,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> list[int]:
    """The slices to annotate next, best first: where the model contradicts itself or meets new grey levels, spread out.

    Each slice not yet annotated gets a score in [0, 1], by default (``measure=
    "orthoplane"``) the share of its pixels that the model classes differently when it
    sees them in the slice itself and in the slices along the two other axes through them
    (checked on lines across the slice: every line of small volumes, at least 16 per
    direction on big ones, as many as keep the check within about 4x the work of the slice
    pass; the other-axis slices cut to a band of 32 slices either side of the scored ones).
    On the hard sample this disagreement is the score that best follows a slice's true
    error (rank correlation +0.27 to +0.53 over six trained models, where the mean entropy
    ranged from -0.29 to +0.38; docs/annotate.md).
    Where a model is consistently wrong (a region unlike anything annotated, e.g. resin-filled
    pores) its views agree, so the score is multiplied by a **novelty** boost: the distance of
    the slice's grey-level histogram (over its own 1st-99th percentiles) to the closest mix of
    the annotated slices' histograms, over the median slice's, divided by ``NOVELTY_FLOOR``
    (1.5) where that exceeds 1; in full where the slice's score is at least the median's, fading
    where the model is surer than that (:func:`novelty_boost`). Slices that look like the
    annotated ones, or like a mix of them, keep their score.
    Then ``count`` slices are picked greedily, each time the one with the highest score
    times a penalty that is 0 next to an annotated or already picked slice and tends to 1
    a few ``spread`` away, so suggestions neither cluster nor sit beside slices the model
    has already learned from. The volume ends count as annotated for the penalty: end
    slices are unusual (seen from one side, context edge-replicated, drift) and annotating
    them teaches the model least about the rest of the volume (docs/study.md), so they
    come only when they score much higher than the middle of a gap.
    Finally a pick must **stand out**: unless its penalised score is at least ``1 + margin``
    (default 1.5) times that of the middle of the widest gap between annotated and picked
    slices, the middle is suggested instead. Where the model's scores single out no slice
    (a statistically uniform sample, where which slice is annotated barely matters), the
    suggestions are then the evenly spaced slices, which is the safe choice; a slice the
    model finds clearly harder or newer is still suggested first (docs/annotate.md).

    Parameters
    ----------
    image : array-like of shape (Z, Y, X)
        numpy, dask, zarr or h5py array.
    model : Model or path-like
        The current model.
    labels : array-like, optional
        The annotations (same shape, 0 = not annotated): slices holding any nonzero
        label are never suggested (and anchor the spreading penalty).
    axis : int
        Slicing axis.
    count : int
        How many slices to return (fewer when fewer are left).
    progress : callable, optional
        Called with a :class:`~napari_xrayseg.core.progress.Progress` per batch.
    **options
        measure : {"orthoplane", "flips", "entropy", "maxprob"}
            The score. ``"orthoplane"`` (default) as above; it applies the model along
            the other two axes, which suits near-isotropic volumes (the model sees slices
            it was not trained on along other axes: on strongly anisotropic data use
            ``"flips"``). A 2D image uses ``"flips"``. ``"flips"``: the share of pixels
            whose class changes when the slice is flipped (each in-plane axis; 3x the work
            of one pass). ``"entropy"``: the mean normalised entropy of the class
            probabilities; ``"maxprob"``: the mean of one minus the winning probability.
        novelty : bool
            Multiply the score by the novelty boost above (default True; needs annotations).
        margin : float
            How much higher than the middle of the widest gap a slice must score to be
            suggested instead of it (default ``SUGGEST_MARGIN``, 0.5; 0 ranks by the
            penalised score alone). :attr:`SliceRanking.reasons` says which rule picked each.
        spread : float, optional
            Distance in slices of the spreading penalty; default
            ``max(1, n / (2 (annotated + count + 1)))`` for ``n`` slices (about half the
            gap between evenly spaced slices).
        max_slices : int or None
            Score at most this many slices (evenly spaced among the free ones, default 64)
            on long axes; None scores all.
        max_side : int or None
            Score only a centred window of at most this many pixels (default 512) per side
            of big slices (the same window in every slice, so scores compare); None scores
            whole slices.
        tile, overlap, batch, device, precision
            As for :func:`predict_slice`.
        cancel : CancelToken, optional
            Checked before every batch of slices.

    Returns
    -------
    list of int
        Slice indices along ``axis``, best first.

    Raises
    ------
    InputError
        On bad arguments or labels of another shape.
    Cancelled
        If ``cancel`` was set.

    Examples
    --------
    >>> from napari_xrayseg import init_model
    >>> model = init_model("unet", size="tiny", classes=3, tile=32)
    >>> lab = np.zeros((6, 32, 32), np.uint8)
    >>> lab[2] = 1
    >>> picks = suggest_slices(np.random.rand(6, 32, 32), model, lab, count=3, device="cpu")
    >>> len(picks), 2 in picks
    (3, False)
    """
    return rank_slices(image, model, labels, axis=axis, count=count, progress=progress, **options).suggested


# --------------------------------------------------------------------------- continue training

# settings of the first training that a round keeps (train() keyword -> info.train key)
_KEPT = {
    "axis": "axis",
    "axes": "axes",
    "steps_per_epoch": "steps_per_epoch",
    "batch": "batch",
    "patch": "patch",
    "loss": "loss",
    "gamma": "gamma",
    "boundary_weight": "boundary_weight",
    "average": "average",
    "augment": "augment",
    "val_fraction": "val_fraction",
    "mode": "mode",
    "schedule": "schedule",
    "pixel_weight": "pixel_weight",
    "normalize": "normalize",
    "nodata": "nodata",  # the grey value without data: a round must not normalise with it (QA: dropped before)
}


def _rounds(info_train: dict[str, Any]) -> list[dict[str, Any]]:
    """The model's training rounds; a model trained once has one (round 0, its first training)."""
    if info_train.get("rounds"):
        return [dict(r) for r in info_train["rounds"]]
    if not info_train:
        return []
    return [_round_record(0, info_train)]


def _round_record(k: int, t: dict[str, Any]) -> dict[str, Any]:
    return {
        "round": k,
        "epochs": t.get("epochs"),
        "minutes": t.get("minutes"),
        "lr": t.get("lr"),
        "epochs_run": t.get("epochs_run"),
        "elapsed_s": t.get("elapsed_s"),
        "stopped": t.get("stopped"),
        "annotated_slices": list(t.get("annotated_slices") or []),
        "best_val_dice": t.get("best_val_dice"),
        "kept": t.get("kept", "best"),
        "val_dice": t.get("val_dice", t.get("best_val_dice")),
        "blend_kept": t.get("start_blend_kept"),
    }


def _dice(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _held_out_dice(
    model: Model, image: Any, labels: Any, axis: int, slices: Sequence[int], device: str
) -> float | None:
    """Mean Dice of ``model`` on the annotated pixels of ``slices`` (None without any)."""
    from .metrics import dice_per_class

    if not slices:
        return None
    vol, lab = _volume(image), _volume(labels, "labels")
    preds, truths = [], []
    norm = _norm(model, vol, None)
    for i in slices:
        preds.append(predict_slice(vol, model, int(i), axis=axis, device=device, normalization=norm))
        index: list[Any] = [slice(None)] * 3
        index[axis] = int(i)
        truths.append(read_block(lab, tuple(index), what=f"labels (slice {i} along axis {axis})"))
    d = dice_per_class(np.stack(preds), np.stack(truths), list(model.info.classes))
    vals = [v for v in d.values() if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def iter_continue_training(
    image: Any,
    labels: Any,
    model: Model | str | os.PathLike,
    *,
    fraction: float = 0.25,
    epochs: int | None = None,
    minutes: float | None = None,
    lr: float | None = None,
    seed: int | None = None,
    device: str = _T.device,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    cancel: CancelToken | None = None,
    **train_kwargs: Any,
) -> Generator[Progress, None, Model]:
    """Generator form of :func:`continue_training`: yields the training's :class:`Progress` records."""
    from .training import _holding, _out_claim, _save_out, iter_train

    # claimed before the round, not after it (a round must not end with nowhere to save), never the
    # start's own file, and locked while the round trains: a second run to it is refused, as in train
    out_claim = _out_claim(out, overwrite, model)
    base = _model(model)
    if not base.info.train:
        raise InputError("the model has never been trained: train it first (train(...)), then continue training")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 10:
        raise InputError(f"fraction {fraction!r} must be a positive share of the first training, e.g. 0.25")
    rounds = _rounds(base.info.train)
    first = rounds[0]
    t = base.info.train
    kw: dict[str, Any] = {key: t[src] for key, src in _KEPT.items() if t.get(src) is not None}
    if kw.get("axes") is not None and len(kw["axes"]) < 2:
        kw.pop("axes")
    if minutes is None and epochs is None and first.get("minutes"):  # epochs asked for: those, not a share of
        minutes = fraction * float(first["minutes"])  # the first's time as well (QA s44: --epochs 400 ran 1)
    if epochs is None:
        ran = first.get("epochs_run") or first.get("epochs") or _T.epochs
        epochs = max(1, math.ceil(fraction * ran))
    if lr is None:
        lr = 0.5 * float(first.get("lr") or _T.lr)  # a warm start: half the first peak rate
    k = len(rounds)
    if seed is None:
        seed = int(t.get("seed") or 0) + k
    kw["blend"] = True  # blended back with the model it started from (docs/annotate.md)
    kw.update(train_kwargs)
    kw.update(
        epochs=int(epochs),
        minutes=minutes,
        lr=float(lr),
        seed=int(seed),
        device=device,
        init=base,
        out=None,
        cancel=cancel,
    )
    log.info("continue training, round %d: %d epochs, %s min, lr %.2g", k, epochs, minutes, lr)
    prev_history = [{**r, "round": r.get("round", 0)} for r in base.info.history]

    def merged(new: Model) -> Model:
        new.info.history = prev_history + [{**r, "round": k} for r in new.info.history]
        new.info.train = {**new.info.train, "rounds": rounds + [_round_record(k, new.info.train)]}
        return new

    try:
        with _holding(out_claim):
            new = yield from iter_train(image, labels, **kw)
    except Cancelled as e:
        partial = getattr(e, "result", None)
        keep = base
        if partial is not None:
            held = partial.info.train.get("val_slices") or []
            axis = int(partial.info.train.get("axis", 0))
            on = "held-out"
            if not held:  # under 5 annotated slices validation holds out blocks, not slices: compare on all of them
                ann = partial.info.train.get("annotated_slices") or []
                held, on = ([int(k) for k in ann] if all(isinstance(k, int) for k in ann) else []), "annotated-slice"
            # the image as the round trained on it: its no-data voxels marked (QA s44: scored on the raw image)
            seen = mark_missing(image, kw["nodata"]) if kw.get("nodata") is not None else image
            old = _held_out_dice(base, seen, labels, axis, held, device) if held else None
            new_d = (
                partial.info.validation[0]
                if on == "held-out"
                else _held_out_dice(partial, seen, labels, axis, held, device)
            )
            if old is None or new_d is None or new_d >= old:
                keep = merged(partial)
                why = (
                    f"the round's model so far, {partial.info.validation[1]} ({on} Dice {_dice(new_d)} vs "
                    f"{_dice(old)} before)"
                )
            else:
                why = f"the model from before the round ({on} Dice {old:.4f} vs {new_d:.4f} for the round)"
        else:
            why = "the model from before the round (no epoch finished)"
        err = Cancelled(f"{e}; keeping {why}")
        err.result = keep  # type: ignore[attr-defined]
        log.info("%s", err)
        raise err from e
    new = merged(new)
    _save_out(new, out_claim, overwrite)  # a full disk: the round's model rides on the error
    return new


@python_numbers
def continue_training(
    image: Any,
    labels: Any,
    model: Model | str | os.PathLike,
    *,
    fraction: float = 0.25,
    epochs: int | None = None,
    minutes: float | None = None,
    lr: float | None = None,
    seed: int | None = None,
    device: str = _T.device,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    cancel: CancelToken | None = None,
    progress: ProgressCallback | None = None,
    **train_kwargs: Any,
) -> Model:
    """One more round of training: warm start from ``model`` with all annotations.

    The round keeps the first training's settings (axis, axes, patch, batch, steps per
    epoch, loss, mode, augmentation, validation share, weight averaging, no-data value) and takes
    ``fraction`` of its budget: ``ceil(fraction x epochs run)`` epochs and, if it had a time budget,
    ``fraction`` of its minutes; the peak learning rate is half the first one. The round's
    weights are then blended back with ``model``'s, ``a * round + (1 - a) * model``, for the
    ``a`` that validates best (``train``'s ``blend``; pass ``blend=False`` to keep the round's
    own weights): a short round on a few slices is noisy, and the blend keeps what the model
    knew (measured in docs/annotate.md). The new
    model's ``info.history`` holds the epochs of every round (each record with its
    ``round``: 0 for the first training) and ``info.train["rounds"]`` one summary per
    round (budget, epochs run, annotated slices, best validation Dice, which weights were
    kept and their validation Dice).

    Parameters
    ----------
    image : array-like of shape (Z, Y, X) or (Y, X)
        Intensities.
    labels : array-like
        All annotations so far (0 = not annotated), same shape.
    model : Model or path-like
        The trained model to start from (not modified).
    fraction : float
        Share of the first training's budget for this round.
    epochs, minutes, lr, seed : optional
        Override the round's budget, peak learning rate and seed (default: the first
        training's seed plus the round number). ``epochs`` alone runs that many epochs,
        without a share of the first training's time budget.
    device : str
        As for :func:`~napari_xrayseg.train`.
    out : path-like, optional
        Save the new model here when the round completes.
    overwrite : bool
        Replace an existing ``out``.
    cancel : CancelToken, optional
        See Raises.
    progress : callable, optional
        Called with every :class:`~napari_xrayseg.core.progress.Progress` record.
    **train_kwargs
        Any other :func:`~napari_xrayseg.train` setting, to change it for this round.

    Returns
    -------
    Model
        The new model (on ``device``, eval mode).

    Raises
    ------
    InputError
        If ``model`` was never trained, on a bad ``fraction``, if ``out`` is ``model``'s own
        file, or as for ``train`` (e.g. labels with other classes than the model's).
    OutputExistsError
        If ``out`` exists and ``overwrite`` is False (checked before training), or
        another run is writing it.
    OutputWriteError
        If ``out`` cannot be written after the round (a full disk): the new model is the
        error's ``result`` (:func:`~napari_xrayseg.core.models.save_or_rescue` saves it elsewhere).
    Cancelled
        If ``cancel`` was set. Its ``result`` holds the better of the round's model so far
        (see ``train``'s ``average``) and the model from before the round, by Dice on the round's held-out
        annotated slices (the round's model when there are none; ``model`` itself when
        no epoch finished). Nothing is written to ``out``.

    Examples
    --------
    >>> from napari_xrayseg import make_phantom, train
    >>> image, truth = make_phantom((4, 64, 64), seed=1)
    >>> sparse = np.zeros_like(truth)
    >>> sparse[1] = truth[1]
    >>> model = train(image, sparse, size="tiny", epochs=2, steps_per_epoch=2, batch=2, patch=32, device="cpu")
    >>> sparse[3] = truth[3]
    >>> model = continue_training(image, sparse, model, device="cpu")
    >>> [r["round"] for r in model.info.train["rounds"]], sorted({r["round"] for r in model.info.history})
    ([0, 1], [0, 1])
    """
    return drain(
        iter_continue_training(
            image,
            labels,
            model,
            fraction=fraction,
            epochs=epochs,
            minutes=minutes,
            lr=lr,
            seed=seed,
            device=device,
            out=out,
            overwrite=overwrite,
            cancel=cancel,
            **train_kwargs,
        ),
        progress,
    )
