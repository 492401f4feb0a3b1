"""Segment a volume slice by slice with a 2D network, out of core.

The volume is streamed as slabs of slices along the chosen axis (read one slab
ahead in a background thread), each slice is cut into overlapping tiles that MONAI's
:func:`~monai.inferers.sliding_window_inference` runs through the network in batches
and blends with Gaussian weights, the class with the highest score wins, and each
finished slab is written to the output (a zarr store on disk for big volumes).
Peak memory depends on the slab, tile, batch and model size, never on the volume.

A model with context k > 1 takes each slice with its k // 2 neighbours on each side
as input channels: every slab is read with a halo of k // 2 slices (clipped at the
volume ends, where neighbours are edge-replicated), so results do not depend on the
slab depth.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import SegmentConfig
from .device import resolve_device, resolve_precision
from .errors import Cancelled, InputError, OutputExistsError, write_error
from .io import create_zarr, read_block, volume_chunks
from .models import Model, load_model
from .normalize import apply_normalization, compute_normalization
from .progress import CancelToken, Progress, ProgressCallback, check, drain
from .tiling import (
    check_tile_fits,
    context_range,
    effective_tile,
    normalize_axis,
    plan_slab_depth,
    slab_ranges,
    slab_slicer,
    stack_context,
    windows_per_slice,
)

__all__ = ["SegmentPlan", "SlabMarkers", "SlicePredictor", "check_image", "iter_segment", "model_digest", "open_output",
           "output_complete", "output_levels", "plan_segment", "segment", "write_pyramid"]

log = logging.getLogger(__name__)
_D = SegmentConfig()
OUTPUT_ATTR = "napari_xrayseg"


def check_image(image: Any, *, name: str = "image") -> Any:
    """Check that ``image`` is a 2D or 3D numeric array-like; return it (lists become numpy).

    Raises
    ------
    InputError
        On a wrong number of dimensions or a boolean / non-numeric dtype.
    """
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        image = np.asarray(image)
    ndim = len(image.shape)
    if ndim not in (2, 3):
        raise InputError(f"{name} has {ndim} dimensions (shape {tuple(image.shape)}): give a 2D slice or a "
                         "3D volume (for multi-channel data pick one channel)")
    dt = np.dtype(image.dtype)
    if dt == np.bool_ or not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating)):
        raise InputError(f"{name} has dtype {dt}: give integer or floating-point intensities")
    if min(image.shape) < 1:
        raise InputError(f"{name} is empty (shape {tuple(image.shape)})")
    return image


class SlicePredictor:
    """Runs a model on batches of 2D slices: tiles, blends and picks the best class.

    Parameters
    ----------
    model : Model
        The model (its normalisation must be resolved: ``low``/``high`` not None).
    device : str or torch.device
        Where the network runs.
    tile, overlap, batch, blend, precision
        As in :func:`segment`.
    """

    def __init__(self, model: Model, *, device: str | torch.device = _D.device, tile: int = _D.tile,
                 overlap: float = _D.overlap, batch: int = _D.batch, blend: str = _D.blend,
                 precision: str = _D.precision) -> None:
        if not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
            raise InputError(f"overlap {overlap!r} must be in [0, 1), e.g. 0.25")
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise InputError(f"batch {batch!r} must be a positive integer")
        if blend not in ("gaussian", "constant"):
            raise InputError(f"blend {blend!r} must be 'gaussian' or 'constant'")
        self.model = model
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.net = model.network.to(self.device).eval()
        self.tile, self.overlap, self.batch, self.blend = int(tile), float(overlap), batch, blend
        self.stride = model.info.stride
        effective_tile((self.tile, self.tile), self.tile, self.stride)  # validates tile
        self.lut = np.asarray(model.info.classes, dtype=np.uint8)
        self.cancel: CancelToken | None = None

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        check(self.cancel)  # once per batch of tiles
        if self.precision == "fp32":
            return self.net(x)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype):
            return self.net(x).float()

    def scores(self, slices: np.ndarray) -> torch.Tensor:
        """Blended class scores, shape (N, C, Y, X), for normalised slices.

        ``slices`` has shape (N, Y, X) for a model with context 1, or (N, k, Y, X) with
        the k context slices of each slice as channels (see
        :func:`~napari_xrayseg.core.tiling.stack_context`).
        """
        from monai.inferers import sliding_window_inference

        k = self.model.info.in_channels
        if slices.ndim == 3 and k == 1:
            slices = slices[:, None]
        if slices.ndim != 4 or slices.shape[1] != k:
            raise InputError(f"the model takes {k} context slice{'s' if k > 1 else ''} per slice; got input "
                             f"of shape {tuple(slices.shape)} (expected (N, {k}, Y, X))")
        roi = effective_tile(slices.shape[2:], self.tile, self.stride)
        arr = np.ascontiguousarray(slices, dtype=np.float32)
        if not arr.flags.writeable:  # a stack_context view: torch wants a writable buffer
            arr = arr.copy()
        x = torch.from_numpy(arr).to(self.device)
        with torch.inference_mode():
            return sliding_window_inference(
                x, roi, self.batch, self._forward, overlap=self.overlap, mode=self.blend,
                padding_mode="replicate", sw_device=self.device, device=self.device)

    def labels(self, slices: np.ndarray) -> np.ndarray:
        """Label values (uint8, shape (N, Y, X)) for normalised slices, as in :meth:`scores`."""
        s = self.scores(slices)
        # A running max over classes: several times faster than argmax over NCHW on CPU.
        best = s[:, 0].clone()
        idx = torch.zeros(best.shape, dtype=torch.uint8, device=s.device)
        for c in range(1, s.shape[1]):
            better = s[:, c] > best
            idx[better] = c
            torch.maximum(best, s[:, c], out=best)
        return self.lut[idx.cpu().numpy()]

    def probs(self, slices: np.ndarray, *, tta: bool = False) -> np.ndarray:
        """Class probabilities (float32, shape (N, C, Y, X)) for normalised slices, as in :meth:`scores`.

        With ``tta``, the average over the slices as given and flipped along each of the
        two in-plane axes (test-time augmentation: 3x the work, smoother confidence).
        """
        p = torch.softmax(self.scores(slices), dim=1)
        if tta:
            for ax in (-1, -2):
                p += torch.softmax(self.scores(np.flip(slices, axis=ax)), dim=1).flip(ax)
            p /= 3
        return p.cpu().numpy()

    def slices_per_call(self, slice_shape: tuple[int, int]) -> int:
        """Slices to run together so about ``batch`` tiles go through the net per call."""
        roi = effective_tile(slice_shape, self.tile, self.stride)
        return max(1, self.batch // windows_per_slice(slice_shape, roi, self.overlap))


def _as_model(model: Model | str | os.PathLike, device: torch.device) -> Model:
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device=device)
    raise InputError(f"model must be a Model or a model file path, not {type(model).__name__}")


def _resolved_norm(model: Model, image: Any) -> dict[str, Any]:
    norm = dict(model.info.normalization)
    if norm.get("low") is None or norm.get("high") is None:
        pct = tuple(norm.get("percentiles") or (0.5, 99.5))
        norm = compute_normalization(image, percentiles=pct)
        log.info("normalisation computed from the image: low=%.4g high=%.4g", norm["low"], norm["high"])
    return norm


def model_digest(model: Model) -> str:
    """SHA-256 of a model's architecture and weights (identifies it in outputs, for ``resume``)."""
    h = hashlib.sha256(json.dumps([model.info.arch, model.info.params], sort_keys=True).encode())
    for name, t in sorted(model.network.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class SegmentPlan:
    """How a volume is cut into slabs and run: everything but the image and the weights.

    Picklable, so dask workers can run slabs of the same plan (see
    :mod:`napari_xrayseg.core.distributed`).
    """

    shape: tuple[int, ...]
    axis: int
    context: int
    depth: int
    tile: int
    overlap: float
    batch: int
    blend: str
    normalization: dict[str, Any]
    precision: str = "fp32"  # resolved: fp32, bf16 or fp16

    @property
    def is2d(self) -> bool:
        """Whether the image is a single 2D slice."""
        return len(self.shape) == 2

    @property
    def shape3(self) -> tuple[int, ...]:
        """The shape as 3D (a 2D image is one slice)."""
        return (1, *self.shape) if self.is2d else tuple(self.shape)

    @property
    def n(self) -> int:
        """Slices along the slicing axis."""
        return self.shape3[self.axis]

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """Half-open slab ranges along the slicing axis."""
        return slab_ranges(self.n, self.depth)

    @property
    def slice_shape(self) -> tuple[int, int]:
        """Shape of one 2D slice."""
        return tuple(s for d, s in enumerate(self.shape3) if d != self.axis)  # type: ignore[return-value]

    @property
    def out_chunks(self) -> tuple[int, ...]:
        """Output chunks: one slab deep along the axis, so no two slabs share a chunk."""
        c = tuple(self.depth if d == self.axis else min(s, 512) for d, s in enumerate(self.shape3))
        return c[1:] if self.is2d else c

    def read(self, image: Any, r: tuple[int, int]) -> np.ndarray:
        """Slices ``r`` plus the context halo (clipped at the volume ends), slicing axis first."""
        lo, hi = context_range(r[0], r[1], self.context, self.n)
        if self.is2d:
            return read_block(image, (Ellipsis,), what="image")[None]
        data = read_block(image, slab_slicer(self.axis, lo, hi, 3),
                          what=f"image (slices {lo}..{hi - 1} along axis {self.axis})")
        return np.moveaxis(data, self.axis, 0)

    def _calls(self, pred: SlicePredictor, data: np.ndarray, r: tuple[int, int]
               ) -> Generator[tuple[int, int, np.ndarray], None, None]:
        """Normalised network inputs of slab ``r`` in calls of about ``batch`` tiles: (start, stop, input)."""
        k = self.context
        lo, hi = context_range(r[0], r[1], k, self.n)
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            raise InputError(f"image holds NaN or inf values in slices {lo}..{hi - 1} along axis "
                             f"{self.axis}: replace them (e.g. np.nan_to_num) before segmenting")
        x = apply_normalization(data, self.normalization)
        b = r[0] - lo  # the slab's first slice inside x
        n = r[1] - r[0]
        per_call = pred.slices_per_call(self.slice_shape)
        for s in range(0, n, per_call):
            e = min(s + per_call, n)
            if k == 1:
                yield s, e, x[b + s:b + e]
            else:  # context slices stacked per call: memory k x a call, not k x the slab
                yield s, e, stack_context(x[b + s:b + e], k, before=x[:b + s], after=x[b + e:])

    def run(self, pred: SlicePredictor, data: np.ndarray, r: tuple[int, int]) -> np.ndarray:
        """Labels of slab ``r`` from its :meth:`read` data, in the volume's orientation."""
        labels = np.empty((r[1] - r[0], *data.shape[1:]), dtype=np.uint8)
        for s, e, xs in self._calls(pred, data, r):
            labels[s:e] = pred.labels(xs)
        return labels[0] if self.is2d else np.moveaxis(labels, 0, self.axis)

    def run_probs(self, pred: SlicePredictor, data: np.ndarray, r: tuple[int, int], *,
                  tta: bool = False) -> np.ndarray:
        """Class probabilities of slab ``r``, float32 of shape (C, *slab) in the volume's orientation."""
        c = len(pred.lut)
        p = np.empty((c, r[1] - r[0], *data.shape[1:]), dtype=np.float32)
        for s, e, xs in self._calls(pred, data, r):
            p[:, s:e] = np.moveaxis(pred.probs(xs, tta=tta), 1, 0)
        return p[:, 0] if self.is2d else np.moveaxis(p, 1, 1 + self.axis)

    def region(self, r: tuple[int, int]) -> tuple[slice, ...]:
        """Index of slab ``r`` in the volume (all of a 2D image)."""
        return (slice(None),) * 2 if self.is2d else slab_slicer(self.axis, r[0], r[1], 3)

    def write(self, target: Any, r: tuple[int, int], labels: np.ndarray) -> None:
        """Store the labels of slab ``r`` (from :meth:`run`) in ``target``."""
        if self.is2d:
            target[...] = labels
        else:
            target[slab_slicer(self.axis, r[0], r[1], 3)] = labels


def plan_segment(image: Any, model: Model, *, axis: int = _D.axis, tile: int | None = None,
                 overlap: float = _D.overlap, batch: int = _D.batch, slab: int | None = _D.slab,
                 blend: str = _D.blend, normalization: dict[str, Any] | None = None,
                 precision: str = "fp32") -> SegmentPlan:
    """Check the inputs and decide slabs, tiles and normalisation for :func:`segment`."""
    image = check_image(image)
    is2d = len(image.shape) == 2
    axis = 0 if is2d and axis in (0, -1, -2) else normalize_axis(axis, len(image.shape))
    shape3 = (1, *image.shape) if is2d else tuple(image.shape)
    slice_shape = tuple(s for d, s in enumerate(shape3) if d != axis)
    stride = model.info.stride
    if min(slice_shape) < stride:
        a, b = slice_shape
        raise InputError(f"slices along axis {axis} are {a}x{b} pixels, smaller than the network's minimum {stride}: "
                         "if the last axis holds colour channels, convert the image to grayscale; otherwise choose "
                         "another axis")
    if tile is None:
        tile = model.info.tile
    else:
        effective_tile(slice_shape, tile, stride)  # a positive multiple of the stride
        check_tile_fits(slice_shape, tile, stride)
    chunks = volume_chunks(image)
    chunks3 = (1, *chunks) if (is2d and chunks) else chunks
    depth = plan_slab_depth(shape3, axis, chunks3, slab)
    norm = normalization if normalization is not None else _resolved_norm(model, image)
    return SegmentPlan(shape=tuple(int(s) for s in image.shape), axis=axis, context=model.info.in_channels,
                       depth=depth, tile=int(tile), overlap=float(overlap), batch=batch, blend=blend,
                       normalization=norm, precision=precision)


# --------------------------------------------------------------------------- output stores


def _meta(plan: SegmentPlan, model: Model, pyramid: bool) -> dict[str, Any]:
    return {"complete": False, "shape": list(plan.shape), "axis": plan.axis, "slab": plan.depth,
            "tile": plan.tile, "overlap": plan.overlap, "blend": plan.blend, "context": plan.context,
            "classes": model.info.classes, "class_names": model.info.class_names,
            "model": str(model.path) if model.path else None, "model_sha256": model_digest(model),
            "normalization": plan.normalization, "pyramid": pyramid, "precision": plan.precision}


# what must match for --resume to continue an output (the rest is informative)
_RESUME_KEYS = ("shape", "axis", "slab", "tile", "overlap", "blend", "context", "classes", "model_sha256",
                "normalization", "pyramid", "precision")


def read_output_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``napari_xrayseg`` attributes of an output written by :func:`segment`, or None."""
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception:  # not a zarr store at all
        return None
    meta = node.attrs.get(OUTPUT_ATTR)
    return dict(meta) if isinstance(meta, dict) else None


class SlabMarkers:
    """Per-slab done-markers of an output store, written after the slab's data.

    A marker is an empty file ``<out>/.xrayseg-done/<start>-<stop>``; a slab whose data
    was only partly written (a crash mid-write) has none and is computed again on resume.
    Each slab has its own file, so parallel writers (dask workers) never contend.
    """

    DIR = ".xrayseg-done"

    def __init__(self, out: str | os.PathLike) -> None:
        self.dir = Path(out) / self.DIR

    def done(self) -> set[tuple[int, int]]:
        """Slab ranges whose marker exists."""
        if not self.dir.is_dir():
            return set()
        out = set()
        for f in self.dir.iterdir():
            a, _, b = f.name.partition("-")
            if a.isdigit() and b.isdigit():
                out.add((int(a), int(b)))
        return out

    def mark(self, r: tuple[int, int]) -> None:
        """Record slab ``r`` as written (call after its data is stored)."""
        self.dir.mkdir(exist_ok=True)
        (self.dir / f"{r[0]}-{r[1]}").touch()


def open_output(out: str | os.PathLike, plan: SegmentPlan, model: Model, *, overwrite: bool = False,
                resume: bool = False, pyramid: bool = False) -> tuple[Any, set[tuple[int, int]]]:
    """Create (or, with ``resume``, reopen) the zarr output; return the full-resolution array and done slabs.

    Raises
    ------
    OutputExistsError
        If ``out`` exists and neither ``overwrite`` nor ``resume`` is given.
    InputError
        If ``resume`` finds an output written with another model or other settings.
    """
    import zarr

    p = Path(out)
    meta = _meta(plan, model, pyramid)
    if p.exists() and resume and not overwrite:
        old = read_output_meta(p)
        if old is None:
            raise InputError(f"cannot resume {p}: it is not an output of xrayseg predict; choose another --out")
        diff = [k for k in _RESUME_KEYS if json.loads(json.dumps(old.get(k))) != json.loads(json.dumps(meta[k]))]
        if diff:
            names = {"model_sha256": "model weights", "slab": "slab depth", "normalization": "normalisation"}
            raise InputError(f"cannot resume {p}: it was written with a different "
                             f"{', '.join(names.get(k, k) for k in diff)}; "
                             "use the same model and settings, or --overwrite to start again")
        node = zarr.open(store=str(p), mode="r+")
        target = node["0"] if pyramid else node
        done = SlabMarkers(p).done() & set(plan.ranges)
        log.info("resuming %s: %d of %d slabs already done", p, len(done), len(plan.ranges))
        return target, done
    if p.exists() and not overwrite:
        old = read_output_meta(p)
        hint = ""
        if old is not None and not old.get("complete"):
            n = len(SlabMarkers(p).done())
            hint = f" (an unfinished run: {n} slabs done; pass resume=True / --resume to finish it)"
        raise OutputExistsError(f"output {p} exists{hint}: choose another path or pass overwrite=True "
                                "(--overwrite)")
    if not pyramid:
        return create_zarr(p, plan.shape, dtype="uint8", chunks=plan.out_chunks, overwrite=overwrite,
                           attrs={OUTPUT_ATTR: meta}), set()
    if p.exists():  # overwrite=True: checked above
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    try:
        group = zarr.open_group(store=str(p), mode="w-")
    except OSError as e:
        raise write_error(e, p) from e
    group.attrs.update(json.loads(json.dumps({OUTPUT_ATTR: meta})))
    target = group.create_array("0", shape=plan.shape, chunks=plan.out_chunks, dtype="uint8", fill_value=0)
    return target, set()


def finish_output(out: str | os.PathLike, *, cancel: CancelToken | None = None) -> None:
    """Build the pyramid (if asked for) and mark the output complete; call when every slab is done."""
    import zarr

    p = Path(out)
    node = zarr.open(store=str(p), mode="r+")
    meta = dict(node.attrs[OUTPUT_ATTR])
    if meta.get("pyramid"):
        write_pyramid(node, cancel=cancel)
    node.attrs[OUTPUT_ATTR] = {**meta, "complete": True}


def write_pyramid(group: Any, *, min_side: int = 256, max_levels: int = 8,
                  cancel: CancelToken | None = None) -> list[Any]:
    """Add downsampled levels ``1, 2, ...`` to an OME-Zarr group whose array ``0`` holds labels.

    Each level takes every second voxel of the one before along every axis (nearest
    neighbour: label values stay valid, no new classes appear), until the largest side
    is at most ``min_side``. Built out of core with dask. Writes OME-Zarr 0.5
    ``multiscales`` metadata, so napari (and other OME-Zarr readers) can browse it.
    """
    import dask.array as da

    levels = [group["0"]]
    ndim = len(levels[0].shape)
    while len(levels) < max_levels and max(levels[-1].shape) > min_side:
        check(cancel)
        prev = da.from_zarr(levels[-1])
        nxt = prev[(slice(None, None, 2),) * ndim]
        chunks = tuple(min(s, 64 if ndim == 3 else 512) for s in nxt.shape)
        name = str(len(levels))
        if name in group:
            del group[name]
        arr = group.create_array(name, shape=nxt.shape, chunks=chunks, dtype="uint8", fill_value=0)
        da.store(nxt.rechunk(chunks), arr, lock=False)
        levels.append(arr)
    axes = [{"name": n, "type": "space"} for n in ("zyx"[-ndim:])]
    datasets = [{"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [float(2 ** i)] * ndim}]}
                for i in range(len(levels))]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"name": "labels", "axes": axes, "datasets": datasets}],
                          "image-label": {"version": "0.5"}}
    return levels


def output_levels(path: str | os.PathLike) -> list[Any]:
    """The arrays of an output written by :func:`segment`: ``[labels]``, or every pyramid level."""
    import zarr

    node = zarr.open(store=str(path), mode="r")
    if isinstance(node, zarr.Array):
        return [node]
    ms = (node.attrs.get("ome") or {}).get("multiscales") or node.attrs.get("multiscales")
    if ms:
        return [node[d["path"]] for d in ms[0]["datasets"]]
    return [node["0"]]


# --------------------------------------------------------------------------- the loop


def iter_segment(image: Any, model: Model | str | os.PathLike, *, axis: int = _D.axis, tile: int | None = None,
                 overlap: float = _D.overlap, batch: int = _D.batch, device: str = _D.device,
                 slab: int | None = _D.slab, blend: str = _D.blend, out: str | os.PathLike | None = None,
                 overwrite: bool = False, resume: bool = False, pyramid: bool = False,
                 axes: str | Sequence[int] | int | None = None, confidence: str | None = None, tta: bool = False,
                 confidence_out: str | os.PathLike | None = None, precision: str = _D.precision,
                 cancel: CancelToken | None = None) -> Generator[Progress, None, Any]:
    """Generator form of :func:`segment`: yields :class:`Progress` per slab, returns the labels.

    See :func:`segment` for the parameters.
    """
    from .ensemble import iter_segment_probs, parse_axes, prefetched

    image = check_image(image)
    if axes is not None:
        ax = parse_axes(axes, len(image.shape))
        axis = ax[0]
    if (axes is not None and len(ax) > 1) or confidence is not None or tta:
        if resume:
            raise InputError("resume works for single-axis runs without confidence or tta; run this one "
                             "again with --overwrite")
        return (yield from iter_segment_probs(
            image, model, axes=axes, axis=axis, confidence=confidence, tta=tta, tile=tile, overlap=overlap,
            batch=batch, device=device, slab=slab, blend=blend, out=out, confidence_out=confidence_out,
            overwrite=overwrite, pyramid=pyramid, precision=precision, cancel=cancel))
    if confidence_out is not None:
        raise InputError("confidence_out is only used with confidence='maxprob' or 'entropy'")
    dev = resolve_device(device)
    model = _as_model(model, dev)
    if (resume or pyramid) and out is None:
        raise InputError("resume and pyramid need an output store: pass out= (--out PATH.zarr)")
    norm = None
    if resume and out is not None and Path(out).exists():
        old = read_output_meta(out)
        if old is not None and model.info.normalization.get("low") is None:
            norm = old.get("normalization")  # the bounds the first run computed from this image
    prec = resolve_precision(precision, dev)
    plan = plan_segment(image, model, axis=axis, tile=tile, overlap=overlap, batch=batch, slab=slab, blend=blend,
                        normalization=norm, precision=prec)
    pred = SlicePredictor(model, device=dev, tile=plan.tile, overlap=overlap, batch=batch, blend=blend,
                          precision=prec)
    pred.cancel = cancel
    if out is not None:
        target, done_slabs = open_output(out, plan, model, overwrite=overwrite, resume=resume, pyramid=pyramid)
        markers: SlabMarkers | None = SlabMarkers(out)
    else:
        target, done_slabs, markers = np.zeros(plan.shape, dtype=np.uint8), set(), None
    todo = [r for r in plan.ranges if r not in done_slabs]

    log.info("segmenting %s along axis %d: %d slabs of %d slices (%d to do), tile %d, device %s",
             plan.shape, plan.axis, len(plan.ranges), plan.depth, len(todo), plan.tile, dev)
    t0 = time.perf_counter()
    total = plan.n
    done = total - sum(b - a for a, b in todo)
    ran = 0
    vox = math.prod(plan.slice_shape)
    try:
        for r, data in prefetched(plan, image, todo):  # the next slab is read while the net runs
            check(cancel)
            labels = plan.run(pred, data, r)
            try:
                plan.write(target, r, labels)
                if markers is not None:
                    markers.mark(r)
            except OSError as e:
                raise _write_error(e, out) from e
            done += r[1] - r[0]
            ran += r[1] - r[0]
            rate = ran * vox / max(time.perf_counter() - t0, 1e-9)
            yield Progress(done, total, f"slices {done}/{total} along axis {plan.axis} ({rate / 1e6:.2f} Mvox/s)",
                           {"voxels_per_s": float(rate)})
        if out is not None:
            finish_output(out, cancel=cancel)
    except Cancelled:
        log.info("segmentation cancelled after %d/%d slices; partial output %s is marked incomplete",
                 done, total, out if out is not None else "(in memory)")
        raise
    elapsed = time.perf_counter() - t0
    log.info("segmented %d voxels in %.1f s (%.2f Mvox/s)", ran * vox, elapsed, ran * vox / max(elapsed, 1e-9) / 1e6)
    return _result_like(image, target, out)


def _write_error(e: OSError, out: Any) -> Exception:
    """An OSError while streaming becomes a one-line :class:`OutputWriteError` naming the output (disk full...)."""
    if out is None:
        return e
    err = write_error(e, out)
    err.args = (f"{err.args[0]} (finished slabs are kept: --resume / resume=True continues from them)",)
    return err


def _result_like(image: Any, target: Any, out: Any) -> Any:
    """Return the labels as the same kind of array as the input."""
    import dask.array as da

    if isinstance(image, np.ndarray):
        return np.asarray(target[...]) if out is not None else target
    if isinstance(image, da.Array):
        return da.from_zarr(target) if out is not None else da.from_array(target, chunks=image.chunks)
    return target  # zarr in -> zarr array (on disk with out=, in memory otherwise as numpy)


def segment(image: Any, model: Model | str | os.PathLike, *, axis: int = _D.axis, tile: int | None = None,
            overlap: float = _D.overlap, batch: int = _D.batch, device: str = _D.device,
            slab: int | None = _D.slab, blend: str = _D.blend, out: str | os.PathLike | None = None,
            overwrite: bool = False, resume: bool = False, pyramid: bool = False,
            axes: str | Sequence[int] | int | None = None, confidence: str | None = None, tta: bool = False,
            confidence_out: str | os.PathLike | None = None, precision: str = _D.precision,
            cancel: CancelToken | None = None, progress: ProgressCallback | None = None) -> Any:
    """Segment a 2D slice or 3D volume slice by slice with a 2D network.

    Parameters
    ----------
    image : array-like of shape (Z, Y, X) or (Y, X)
        numpy, dask, zarr (or h5py) array of intensities. Read a slab at a time.
    model : Model or path-like
        A model from :func:`~napari_xrayseg.init_model`/``train``/:func:`~napari_xrayseg.load_model`,
        or a model file path.
    axis : int
        Slicing axis; 2D slices perpendicular to it go through the net.
    tile : int, optional
        Tile side (a multiple of the net's stride); the model's recommended tile by default.
        Tiles larger than a slice are shrunk to it.
    overlap : float
        Fraction of a tile shared with neighbours, in [0, 1).
    batch : int
        Tiles per forward pass.
    device : str
        ``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    slab : int, optional
        Slices read and written at a time (default: the input's chunk depth, or 16).
    blend : str
        ``"gaussian"`` or ``"constant"`` tile weighting.
    out : path-like, optional
        Write the labels to a new zarr array here (needed for volumes larger than RAM).
        The array's attribute ``napari_xrayseg.complete`` is true only once every slab
        is written.
    overwrite : bool
        Replace ``out`` if it exists (never done silently).
    resume : bool
        If ``out`` holds an unfinished run (cancelled, killed, crashed) of the same model
        and settings, compute only the slabs it lacks; the result is identical to an
        uninterrupted run. Each slab gets a done-marker after its data is written, so a
        slab cut off mid-write is computed again. Without an existing ``out``, a normal run.
    pyramid : bool
        Write ``out`` as an OME-Zarr group: labels in array ``0`` plus levels ``1, 2, ...``
        each downsampled 2x (nearest), so napari can browse a big result smoothly.
    axes : str or sequence of int, optional
        Orthoplane ensemble: segment along each of these axes (``"zyx"`` or ``(0, 1, 2)``
        for all three) and average the class probabilities voxel by voxel (see
        :mod:`napari_xrayseg.core.ensemble`); costs one pass per axis. A single axis is
        the same as ``axis``.
    confidence : {"maxprob", "entropy"}, optional
        Also compute per-voxel confidence: the winning class's probability, or the
        normalised entropy (0 certain, 1 uniform). ``segment`` then returns
        ``(labels, confidence)``; with ``out`` the confidence (float32) is written to
        ``confidence_out`` (default: beside ``out``, ``NAME-maxprob.zarr``).
    tta : bool
        Test-time augmentation: average the probabilities over the slice and its two
        flips (3x the work).
    confidence_out : path-like, optional
        Where the confidence map goes when ``out`` is given.
    precision : str
        Network arithmetic: ``"auto"`` (fp16 on CUDA; bf16 on CPUs with native bf16,
        1.6-2.8x faster there, same Dice, labels differing on 0.06 % of voxels, see
        docs/performance.md; else fp32), ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA only).
    cancel : CancelToken, optional
        Checked at every slab and every batch of tiles; raises
        :class:`~napari_xrayseg.core.errors.Cancelled`, leaving finished slabs in ``out``
        (resumable with ``resume=True``).
    progress : callable, optional
        Called with a :class:`~napari_xrayseg.core.progress.Progress` after each slab.

    Returns
    -------
    array or (array, array)
        uint8 labels of the image's shape holding the model's class values: numpy for
        numpy input; for dask input a dask array; for zarr input the zarr array written
        to ``out`` (numpy without ``out``). With ``confidence``: ``(labels, confidence)``.

    Raises
    ------
    InputError
        On bad input (dimensions, dtype, NaN/inf, constant image, tile, axis, device), on
        ``resume`` of an output written with another model or settings.
    OutputWriteError
        When the output cannot be written (disk full, read-only); finished slabs are kept.
    OutputExistsError
        If ``out`` exists and neither ``overwrite`` nor ``resume`` is given.

    Examples
    --------
    >>> from napari_xrayseg import init_model, segment
    >>> model = init_model("unet", size="tiny", classes=3)
    >>> labels = segment(np.random.rand(2, 32, 32).astype("float32"), model, tile=32, device="cpu")
    >>> labels.shape, labels.dtype
    ((2, 32, 32), dtype('uint8'))
    """
    return drain(iter_segment(image, model, axis=axis, tile=tile, overlap=overlap, batch=batch, device=device,
                              slab=slab, blend=blend, out=out, overwrite=overwrite, resume=resume, pyramid=pyramid,
                              axes=axes, confidence=confidence, tta=tta, confidence_out=confidence_out,
                              precision=precision, cancel=cancel), progress)


def output_complete(path: str | os.PathLike) -> bool:
    """Whether a zarr output written by :func:`segment` was finished (not cancelled or crashed)."""
    meta = read_output_meta(path)
    return bool(meta and meta.get("complete", False))
