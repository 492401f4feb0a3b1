"""Orthoplane ensembles and per-voxel confidence: segmentation from class probabilities.

A 2D network sees a volume one plane at a time; running it along several axes (xy, xz
and yz slices) and averaging the class probabilities voxel by voxel removes much of
the slice-to-slice inconsistency of a single axis ("orthoplane" or "tri-planar"
ensemble). The same probabilities give a confidence map: the winning class's
probability, or the normalised entropy, optionally smoothed by flip test-time
augmentation, which shows where the model is unsure and annotation helps most.

Out of core like :func:`~napari_xrayseg.segment`: every pass streams slabs. With an
output store, the running sum of the first passes is kept in a temporary float16 zarr
store beside the output, chunked as cubes one slab deep so that slabs along any axis
cover whole chunks; the last pass adds its own probabilities, picks the class and
writes labels (and confidence). Memory is one slab of probabilities, never the volume.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .config import SegmentConfig
from .errors import Cancelled, InputError
from .progress import CancelToken, Progress, check

__all__ = ["CONFIDENCE", "confidence_from_probs", "iter_segment_probs", "parse_axes", "prefetched", "sibling_path"]

log = logging.getLogger(__name__)
_D = SegmentConfig()
CONFIDENCE = ("maxprob", "entropy")
_LETTERS = {"z": 0, "y": 1, "x": 2}


def parse_axes(axes: str | int | Sequence[int] | None, ndim: int, default: int = 0) -> list[int]:
    """Slicing axes from ``"zyx"``, ``"z"``, ``"012"``, ``(0, 1, 2)``, an int or None (``default``).

    Examples
    --------
    >>> parse_axes("zyx", 3), parse_axes((2, 0), 3), parse_axes(None, 3, default=1)
    ([0, 1, 2], [2, 0], [1])
    """
    from .tiling import normalize_axis

    if axes is None:
        return [default]
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        return [normalize_axis(int(axes), ndim)]
    if isinstance(axes, str):
        try:
            items = [_LETTERS[c] if c in _LETTERS else int(c) for c in axes.strip().lower()]
        except ValueError:
            items = []
        if not items:
            raise InputError(f"axes {axes!r} not understood: use letters of 'zyx' (e.g. 'zyx' for all three) "
                             "or axis numbers like '012'")
    else:
        items = list(axes)
    if ndim == 2 and items not in ([0], [-1], [-2]):
        raise InputError("a 2D image has one slicing direction: leave axes unset for 2D input")
    out = [normalize_axis(a, ndim) for a in items]
    if len(set(out)) != len(out):
        raise InputError(f"axes {axes!r} repeats an axis: give each axis once, e.g. 'zyx'")
    return out


def confidence_from_probs(p: np.ndarray, kind: str) -> np.ndarray:
    """Per-voxel confidence from class probabilities ``p`` of shape (C, ...).

    ``"maxprob"``: the winning class's probability (1 = certain, 1/C = no idea).
    ``"entropy"``: entropy divided by log(C) (0 = certain, 1 = uniform: an *un*certainty).

    Examples
    --------
    >>> p = np.array([[1.0, 0.5], [0.0, 0.5]])
    >>> confidence_from_probs(p, "maxprob").tolist(), confidence_from_probs(p, "entropy").round(3).tolist()
    ([1.0, 0.5], [0.0, 1.0])
    """
    if kind == "maxprob":
        return p.max(axis=0).astype(np.float32)
    if kind == "entropy":
        q = np.clip(p, 1e-12, 1.0)
        return (-(p * np.log(q)).sum(axis=0) / math.log(p.shape[0])).astype(np.float32)
    raise InputError(f"confidence {kind!r} must be one of {CONFIDENCE}")


def prefetched(plan: Any, image: Any, ranges: Sequence[tuple[int, int]]) -> Iterator[tuple[tuple[int, int], Any]]:
    """``(range, data)`` for each slab, reading the next slab in a thread while the caller computes."""
    if not ranges:
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xrayseg-read")
    try:
        nxt = pool.submit(plan.read, image, ranges[0])
        for i, r in enumerate(ranges):
            data = nxt.result()
            if i + 1 < len(ranges):
                nxt = pool.submit(plan.read, image, ranges[i + 1])
            yield r, data
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def sibling_path(out: str | os.PathLike, suffix: str) -> Path:
    """``DIR/NAME{suffix}.zarr`` beside ``DIR/NAME.zarr``."""
    p = Path(out)
    stem = p.name[:-5] if p.name.endswith(".zarr") else p.name
    return p.with_name(f"{stem}{suffix}.zarr")


def iter_segment_probs(image: Any, model: Any, *, axes: str | Sequence[int] | int | None = None,
                       axis: int = _D.axis, confidence: str | None = None, tta: bool = False,
                       tile: int | None = None, overlap: float = _D.overlap, batch: int = _D.batch,
                       device: str = _D.device, slab: int | None = _D.slab, blend: str = _D.blend,
                       out: str | os.PathLike | None = None, confidence_out: str | os.PathLike | None = None,
                       overwrite: bool = False, pyramid: bool = False, precision: str = _D.precision,
                       cancel: CancelToken | None = None) -> Generator[Progress, None, Any]:
    """Segment from class probabilities: along one or several axes, optionally with confidence.

    Called by :func:`~napari_xrayseg.core.inference.iter_segment` when ``axes`` names
    more than one axis or ``confidence``/``tta`` is set; see ``segment`` for parameters.
    Returns the labels, or ``(labels, confidence)`` when ``confidence`` is set.
    """
    import zarr

    from .device import resolve_device, resolve_precision
    from .inference import (
        OUTPUT_ATTR,
        SlicePredictor,
        _as_model,
        _resolved_norm,
        _result_like,
        check_image,
        finish_output,
        open_output,
        plan_segment,
    )
    from .io import create_zarr

    image = check_image(image)
    ndim = len(image.shape)
    ax = parse_axes(axes, ndim, default=axis)
    if confidence is not None and confidence not in CONFIDENCE:
        raise InputError(f"confidence {confidence!r} must be one of {CONFIDENCE} or None")
    dev = resolve_device(device)
    model = _as_model(model, dev)
    norm = _resolved_norm(model, image)
    prec = resolve_precision(precision, dev)
    multi = len(ax) > 1
    depth = slab if slab is not None else (32 if multi else None)  # cubes of `depth` hold the running sum
    plans = [plan_segment(image, model, axis=a, tile=tile, overlap=overlap, batch=batch, slab=depth, blend=blend,
                          normalization=norm, precision=prec) for a in ax]
    if multi and len({p.depth for p in plans}) > 1:
        d = min(p.depth for p in plans)  # a short axis clipped the depth: use it for every pass
        plans = [plan_segment(image, model, axis=a, tile=tile, overlap=overlap, batch=batch, slab=d, blend=blend,
                              normalization=norm, precision=prec) for a in ax]
    pred = SlicePredictor(model, device=dev, tile=plans[0].tile, overlap=overlap, batch=batch, blend=blend,
                          precision=prec)
    pred.cancel = cancel
    c = len(model.info.classes)
    shape = plans[0].shape

    tmp: Path | None = None
    if out is not None:
        target, _ = open_output(out, plans[-1], model, overwrite=overwrite, pyramid=pyramid)
        node = zarr.open(store=str(out), mode="r+")
        node.attrs[OUTPUT_ATTR] = {**node.attrs[OUTPUT_ATTR], "axes": ax, "confidence": confidence, "tta": tta}
        conf_t = None
        if confidence is not None:
            cpath = Path(confidence_out) if confidence_out is not None else sibling_path(out, f"-{confidence}")
            conf_t = create_zarr(cpath, shape, dtype="float32", chunks=plans[-1].out_chunks, overwrite=overwrite,
                                 attrs={OUTPUT_ATTR: {"confidence": confidence, "labels": str(out), "tta": tta,
                                                      "complete": False}})
        if multi:
            tmp = sibling_path(out, ".tmp-probs")
            if tmp.exists():
                shutil.rmtree(tmp)
            acc: Any = zarr.create_array(store=str(tmp), shape=(c, *shape), dtype="float16", fill_value=0,
                                         chunks=(c, *(plans[0].depth,) * ndim), compressors=None)
    else:
        if confidence_out is not None:
            raise InputError("confidence_out needs out= as well (or neither, to get arrays back)")
        target = np.zeros(shape, dtype=np.uint8)
        conf_t = np.zeros(shape, dtype=np.float32) if confidence is not None else None
        if multi:
            acc = np.zeros((c, *shape), dtype=np.float32)

    total = sum(p.n for p in plans)
    done = 0
    vox_per_slice = [math.prod(p.slice_shape) for p in plans]
    t0 = time.perf_counter()
    ran = 0
    log.info("segmenting %s from probabilities along axes %s (confidence %s, tta %s)", shape, ax, confidence, tta)
    try:
        for i, plan in enumerate(plans):
            last = i == len(plans) - 1
            for r, data in prefetched(plan, image, plan.ranges):
                check(cancel)
                p = plan.run_probs(pred, data, r, tta=tta)
                reg = (slice(None), *plan.region(r))
                if multi:
                    p += np.asarray(acc[reg], dtype=np.float32)
                    if not last:
                        acc[reg] = p
                if last:
                    if multi:
                        p /= len(plans)
                    target[plan.region(r)] = pred.lut[p.argmax(axis=0)]
                    if conf_t is not None:
                        conf_t[plan.region(r)] = confidence_from_probs(p, confidence)  # type: ignore[arg-type]
                done += r[1] - r[0]
                ran += (r[1] - r[0]) * vox_per_slice[i]
                rate = ran / max(time.perf_counter() - t0, 1e-9)
                yield Progress(done, total, f"axis {plan.axis} ({i + 1}/{len(plans)}): slices {done}/{total} "
                               f"({rate / 1e6:.2f} Mvox/s per pass)", {"voxels_per_s": float(rate)})
        if out is not None:
            finish_output(out, cancel=cancel)
            if conf_t is not None:
                conf_t.attrs[OUTPUT_ATTR] = {**conf_t.attrs[OUTPUT_ATTR], "complete": True}
    except Cancelled:
        log.info("cancelled; partial output %s is marked incomplete", out)
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    labels = _result_like(image, target, out)
    if confidence is None:
        return labels
    return labels, _result_like(image, conf_t, out)
