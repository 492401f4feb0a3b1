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

import logging
import os
import time
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import SegmentConfig
from .device import resolve_device
from .errors import Cancelled, InputError
from .io import create_zarr, volume_chunks
from .models import Model, load_model
from .normalize import apply_normalization, compute_normalization
from .progress import CancelToken, Progress, ProgressCallback, check, drain
from .tiling import (
    context_range,
    effective_tile,
    normalize_axis,
    plan_slab_depth,
    slab_ranges,
    slab_slicer,
    stack_context,
    windows_per_slice,
)

__all__ = ["SlicePredictor", "check_image", "iter_segment", "segment"]

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
    tile, overlap, batch, blend
        As in :func:`segment`.
    """

    def __init__(self, model: Model, *, device: str | torch.device = _D.device, tile: int = _D.tile,
                 overlap: float = _D.overlap, batch: int = _D.batch, blend: str = _D.blend) -> None:
        if not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
            raise InputError(f"overlap {overlap!r} must be in [0, 1), e.g. 0.25")
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise InputError(f"batch {batch!r} must be a positive integer")
        if blend not in ("gaussian", "constant"):
            raise InputError(f"blend {blend!r} must be 'gaussian' or 'constant'")
        self.model = model
        self.device = resolve_device(device)
        self.net = model.network.to(self.device).eval()
        self.tile, self.overlap, self.batch, self.blend = int(tile), float(overlap), batch, blend
        self.stride = model.info.stride
        effective_tile((self.tile, self.tile), self.tile, self.stride)  # validates tile
        self.lut = np.asarray(model.info.classes, dtype=np.uint8)
        self.cancel: CancelToken | None = None

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        check(self.cancel)  # once per batch of tiles
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                return self.net(x).float()
        return self.net(x)

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


def iter_segment(image: Any, model: Model | str | os.PathLike, *, axis: int = _D.axis, tile: int | None = None,
                 overlap: float = _D.overlap, batch: int = _D.batch, device: str = _D.device,
                 slab: int | None = _D.slab, blend: str = _D.blend, out: str | os.PathLike | None = None,
                 overwrite: bool = False, cancel: CancelToken | None = None,
                 ) -> Generator[Progress, None, Any]:
    """Generator form of :func:`segment`: yields :class:`Progress` per slab, returns the labels.

    See :func:`segment` for the parameters.
    """
    image = check_image(image)
    is2d = len(image.shape) == 2
    ndim = 3
    axis = 0 if is2d and axis in (0, -1, -2) else normalize_axis(axis, len(image.shape))
    dev = resolve_device(device)
    model = _as_model(model, dev)
    k = model.info.in_channels  # context slices per slice (== model.info.context)
    tile = model.info.tile if tile is None else tile
    pred = SlicePredictor(model, device=dev, tile=tile, overlap=overlap, batch=batch, blend=blend)
    pred.cancel = cancel
    norm = _resolved_norm(model, image)

    shape3 = (1, *image.shape) if is2d else tuple(image.shape)
    chunks = volume_chunks(image)
    chunks3 = (1, *chunks) if (is2d and chunks) else chunks
    depth = plan_slab_depth(shape3, axis, chunks3, slab)
    ranges = slab_ranges(shape3[axis], depth)
    slice_shape = tuple(s for d, s in enumerate(shape3) if d != axis)
    per_call = pred.slices_per_call(slice_shape)  # type: ignore[arg-type]

    out_chunks = tuple(depth if d == axis else min(s, 512) for d, s in enumerate(shape3))
    meta = {"complete": False, "axis": axis, "tile": tile, "overlap": overlap, "classes": model.info.classes,
            "class_names": model.info.class_names, "model": str(model.path) if model.path else None,
            "normalization": norm, "context": k}
    if out is not None:
        target = create_zarr(out, tuple(image.shape), dtype="uint8",
                             chunks=out_chunks[1:] if is2d else out_chunks, overwrite=overwrite,
                             attrs={OUTPUT_ATTR: meta})
    else:
        target = np.zeros(image.shape, dtype=np.uint8)
    view = target if not is2d else None

    def read(r: tuple[int, int]) -> np.ndarray:
        """Slices ``r`` plus the context halo (clipped at the volume ends), slicing axis first."""
        lo, hi = context_range(r[0], r[1], k, shape3[axis])
        data = image[...] if is2d else image[slab_slicer(axis, lo, hi, ndim)]
        data = np.asarray(data)
        if is2d:
            data = data[None]
        return np.moveaxis(data, axis, 0)

    log.info("segmenting %s along axis %d: %d slabs of %d slices, tile %d, %d slices per call, device %s",
             tuple(image.shape), axis, len(ranges), depth, tile, per_call, dev)
    t0 = time.perf_counter()
    done = 0
    total = shape3[axis]
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xrayseg-read")
    try:
        nxt = pool.submit(read, ranges[0])
        for i, r in enumerate(ranges):
            check(cancel)
            data = nxt.result()
            if i + 1 < len(ranges):
                nxt = pool.submit(read, ranges[i + 1])  # prefetch while the net runs
            lo, hi = context_range(r[0], r[1], k, shape3[axis])
            if data.dtype.kind == "f" and not np.isfinite(data).all():
                raise InputError(f"image holds NaN or inf values in slices {lo}..{hi - 1} along axis "
                                 f"{axis}: replace them (e.g. np.nan_to_num) before segmenting")
            x = apply_normalization(data, norm)  # slices lo..hi-1; the slab's own start at r[0] - lo
            b = r[0] - lo
            n = r[1] - r[0]
            labels = np.empty((n, *x.shape[1:]), dtype=np.uint8)
            for s in range(0, n, per_call):
                e = min(s + per_call, n)
                if k == 1:
                    xs = x[b + s:b + e]
                else:  # context slices stacked per call: memory k x a call, not k x the slab
                    xs = stack_context(x[b + s:b + e], k, before=x[:b + s], after=x[b + e:])
                labels[s:e] = pred.labels(xs)
            labels = np.moveaxis(labels, 0, axis)
            if is2d:
                target[...] = labels[0]
            else:
                view[slab_slicer(axis, r[0], r[1], ndim)] = labels
            done += r[1] - r[0]
            rate = done * np.prod(slice_shape) / max(time.perf_counter() - t0, 1e-9)
            yield Progress(done, total, f"slices {done}/{total} along axis {axis} ({rate / 1e6:.2f} Mvox/s)",
                           {"voxels_per_s": float(rate)})
        if out is not None:
            target.attrs[OUTPUT_ATTR] = {**meta, "complete": True}
    except Cancelled:
        log.info("segmentation cancelled after %d/%d slices; partial output %s is marked incomplete",
                 done, total, out if out is not None else "(in memory)")
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    elapsed = time.perf_counter() - t0
    log.info("segmented %d voxels in %.1f s (%.2f Mvox/s)", int(np.prod(shape3)), elapsed,
             np.prod(shape3) / elapsed / 1e6)
    return _result_like(image, target, out)


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
            overwrite: bool = False, cancel: CancelToken | None = None,
            progress: ProgressCallback | None = None) -> Any:
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
    cancel : CancelToken, optional
        Checked at every slab and every batch of tiles; raises
        :class:`~napari_xrayseg.core.errors.Cancelled`, leaving finished slabs in ``out``.
    progress : callable, optional
        Called with a :class:`~napari_xrayseg.core.progress.Progress` after each slab.

    Returns
    -------
    array
        uint8 labels of the image's shape holding the model's class values: numpy for
        numpy input; for dask input a dask array; for zarr input the zarr array written
        to ``out`` (numpy without ``out``).

    Raises
    ------
    InputError
        On bad input (dimensions, dtype, NaN/inf, constant image, tile, axis, device).
    OutputExistsError
        If ``out`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> from napari_xrayseg import init_model, segment
    >>> model = init_model("unet", size="tiny", classes=3)
    >>> labels = segment(np.random.rand(2, 32, 32).astype("float32"), model, tile=32, device="cpu")
    >>> labels.shape, labels.dtype
    ((2, 32, 32), dtype('uint8'))
    """
    return drain(iter_segment(image, model, axis=axis, tile=tile, overlap=overlap, batch=batch, device=device,
                              slab=slab, blend=blend, out=out, overwrite=overwrite, cancel=cancel), progress)


def output_complete(path: str | os.PathLike) -> bool:
    """Whether a zarr output written by :func:`segment` was finished (not cancelled or crashed)."""
    import zarr

    arr = zarr.open_array(store=str(Path(path)), mode="r")
    return bool((arr.attrs.get(OUTPUT_ATTR) or {}).get("complete", False))
