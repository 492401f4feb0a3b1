"""Segmentation as one pipeline of small stages, run by one slab loop.

::

    image ──► plan ──► predictor ──► merger ──► writer ──► labels (+ confidence)
              slabs,   network,      scores →   stores, done-markers,
              halo,    precision,    labels, or pyramid, metadata,
              tiles,   device        summed     write errors, swap
              axes                   probs

- **plan** (:mod:`~napari_xrayseg.core.plan`): which axes, which slabs (as deep as the
  input chunks, with a context halo for 2.5D models), which tiles, which normalisation;
- **predictor** (:mod:`~napari_xrayseg.core.predictor`): a network on a device at a
  precision; normalised slices in, blended scores out;
- **merger** (:mod:`~napari_xrayseg.core.merger`): labels straight from the scores (one
  axis, the fast path), or probabilities summed over passes (orthoplane) and flips
  (TTA), then labels and confidence;
- **writer** (:mod:`~napari_xrayseg.core.writer`): zarr stores claimed through
  :mod:`~napari_xrayseg.core.output`, a done-marker per slab, the pyramid, metadata.

:func:`segment` and :func:`iter_segment` (console, CLI, widgets), orthoplane,
confidence and TTA runs, and :mod:`~napari_xrayseg.core.distributed` are compositions
of these stages run by :func:`run_job`; only the *executor* differs (in this process
with the next slab read ahead in a thread, or one dask task per slab). Options travel as
one :class:`~napari_xrayseg.core.config.SegmentConfig`. Every run with an output store
resumes after a cancel, crash or kill (``resume=True``, ``--resume``), to the result of
an uninterrupted run. Peak memory depends on the slab, tile, batch and model size,
never on the volume.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import SegmentConfig, python_numbers
from .device import resolve_device, resolve_precision, worker_device
from .errors import Cancelled, InputError, XraysegError, out_of_memory
from .io import check_chunks_present, voxel_size_of
from .merger import LabelMerger, ProbMerger
from .models import Model, ModelInfo, load_model, read_model_info
from .normalize import mark_missing, model_nodata
from .output import claim
from .plan import SegmentPlan, check_image, parse_axes, plan_passes, prefetched, resolved_normalization
from .predictor import SlicePredictor, as_model, check_tta, model_digest, tta_meta, worth_compiling
from .progress import CancelToken, Progress, ProgressCallback, check, drain
from .said import first_time
from .tiling import AUTO
from .units import pick_voxel_size, voxel_size_mismatch
from .writer import (
    MemoryWriter,
    SlabMarkers,
    StoreWriter,
    input_digest,
    output_complete,
    output_levels,
    read_output_meta,
    resume_hint,
    sibling_path,
    write_pyramid,
)

__all__ = [
    "LocalExecutor",
    "SegmentJob",
    "SegmentPlan",
    "SlabMarkers",
    "SlicePredictor",
    "build_job",
    "check_image",
    "iter_segment",
    "model_digest",
    "output_complete",
    "output_levels",
    "read_output_meta",
    "run_job",
    "segment",
    "write_pyramid",
]

log = logging.getLogger(__name__)


@dataclass
class SegmentJob:
    """The stages of one run, composed: what :func:`run_job` drives slab by slab."""

    image: Any
    plans: list[SegmentPlan]
    merger: LabelMerger | ProbMerger
    writer: StoreWriter | MemoryWriter
    config: SegmentConfig
    predictor: SlicePredictor | None = None

    def run_slab(self, i: int, r: tuple[int, int], data: np.ndarray) -> None:
        """Pass ``i``, slab ``r`` (its :meth:`SegmentPlan.read` data): predict, merge, write, mark."""
        plan = self.plans[i]
        result = self.merger.slab(self.predictor, plan, i, r, data, self.writer.previous)
        self.writer.write(i, r, plan.region(r), result)

    def result(self) -> Any:
        """The labels, or ``(labels, confidence)``, as the same kind of array as the image."""
        labels, conf = self.writer.result(self.image)
        return (labels, conf) if self.config.confidence is not None else labels


class _Loading:
    """A model file loading on a daemon thread while the job reads the image's percentiles.

    Building the network and reading its weights overlap the percentile sample (the
    architectures other than ``unet``/``unet3d`` also import MONAI here, about 2.4 s in a
    fresh process); the header (:attr:`info`) is read here first, so a bad file still
    fails before any output is claimed. An error meanwhile (an existing output, Ctrl-C) waits for
    the thread (:meth:`settle`) before it is raised: a process that exits while torch builds the
    network on another thread aborts ("terminate called without an active exception", exit 134).
    """

    def __init__(self, path: str | os.PathLike, device: Any) -> None:
        self.info: ModelInfo = read_model_info(path)
        self._out: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._load, args=(path, device), name="xrayseg-load-model", daemon=True)
        self._thread.start()

    def _load(self, path: str | os.PathLike, device: Any) -> None:
        try:
            self._out["model"] = load_model(path, device=device)
        except BaseException as e:  # re-raised in the caller's thread by result()
            self._out["error"] = e

    def settle(self) -> None:
        """Wait for the loading to end, keeping whatever it gave (the caller is failing anyway)."""
        self._thread.join()

    def result(self) -> Model:
        """The loaded model (waits for it); the loading's exception, raised here."""
        self._thread.join()
        if "error" in self._out:
            raise self._out["error"]
        return self._out["model"]


def _voxel_size(image: Any, info: ModelInfo, cfg: SegmentConfig) -> tuple[tuple[float, ...], str] | None:
    """The outputs' voxel size: ``cfg.voxel_size``, else the input's, else the model's; warns on a mismatch."""
    ndim = len(image.shape)
    trained = (info.voxel_size, info.unit) if info.voxel_size else None
    found = pick_voxel_size(cfg.voxel_size, cfg.unit, voxel_size_of(image), ndim=ndim)
    if found is not None and trained is not None and len(trained[0]) >= ndim:
        msg = voxel_size_mismatch(trained[0][-ndim:], trained[1], found[0], found[1])
        if msg:
            log.warning("%s", msg)
    return found or pick_voxel_size(None, cfg.unit, trained, ndim=ndim)


def trained_on(info: ModelInfo, image: Any, digest: str | None = None) -> dict[str, Any] | None:
    """The slices of ``image`` the model was trained on, ``{"axis": a, "slices": [...]}``, or None.

    Known when the model's last training used this very image (``info.train["input_digest"]``,
    the fingerprint of :func:`~napari_xrayseg.core.writer.input_digest`, equals the image's) as
    its one input of 3D slices. The slices are all those holding an annotation along its main
    axis, so every voxel it learned from lies in them (slices along further ``axes`` included),
    the held-out validation slices among them (they chose the weights kept), and those a start
    model fine-tuned from (``init=``, self-training) had learned from on the same image.
    :func:`~napari_xrayseg.core.metrics.evaluate` reports the scores of the other slices apart
    (``Report.held_out``).

    Parameters
    ----------
    info : ModelInfo
        The model's description.
    image : array-like
        The image it segments.
    digest : str, optional
        ``input_digest(image)`` if already computed.
    """
    t = info.train or {}
    want = t.get("input_digest")
    slices = t.get("annotated_slices")
    if not want or not isinstance(slices, list) or t.get("two_d") or t.get("inputs") or len(image.shape) != 3:
        return None
    if (digest or input_digest(image)) != want:
        return None
    inherited = t.get("inherited_slices") or []  # a fine-tuning's start learned from these (self-training, rounds)
    return {"axis": int(t["axis"]), "slices": sorted({int(k) for k in slices} | {int(k) for k in inherited})}


def _meta(
    plans: list[SegmentPlan],
    model: Model,
    cfg: SegmentConfig,
    vox: tuple[tuple[float, ...], str] | None,
    image: Any,
    source: Any,
) -> dict[str, Any]:
    from .provenance import provenance

    p = plans[0]
    digest = input_digest(image)
    sha = model_digest(model)
    return {
        "complete": False,
        "input_digest": digest,  # --resume refuses another image of the same shape
        "trained_on": trained_on(model.info, image, digest),  # evaluate scores the other slices apart
        "shape": list(p.shape),
        "axis": p.axis,
        "axes": [q.axis for q in plans],
        "slab": p.depth,
        "tile": p.tile,
        "overlap": p.overlap,
        "blend": p.blend,
        "context": p.context,
        "classes": model.info.classes,
        "class_names": model.info.class_names,
        "model": str(model.path) if model.path else None,
        "model_sha256": sha,
        "normalization": p.normalization,
        "pyramid": bool(cfg.pyramid),
        "precision": p.precision,
        "confidence": cfg.confidence,
        "tta": tta_meta(cfg.tta),
        "voxel_size": list(vox[0]) if vox else None,
        "unit": vox[1] if vox else None,
        "origin": _origin(image, cfg, vox, len(p.shape)),
        "nodata": cfg.nodata,
        # a stack of unrelated 2D images (a 2D-mode model): evaluate takes no neighbours across them
        **({"independent": True} if p.independent and len(p.shape) == 3 else {}),
        # when, by which software and command, from which files (core/provenance.py; resumes add to it)
        "provenance": provenance({"image": source, "model": _model_file(model)}),
    }


def _origin(image: Any, cfg: SegmentConfig, vox: tuple[tuple[float, ...], str] | None, ndim: int) -> Any:
    """The outputs' origin (z, y, x) in the outputs' unit: ``cfg.origin``, else the input file's; None for none."""
    from .io import origin_of
    from .units import to_unit

    if cfg.origin is not None:
        try:
            origin = [float(v) for v in np.atleast_1d(np.asarray(cfg.origin, dtype=float))]
        except (TypeError, ValueError):
            origin = []
        if len(origin) != ndim or not all(np.isfinite(origin)):
            raise InputError(f"origin {cfg.origin!r} must be {ndim} finite numbers (z, y, x), one per axis")
        return origin if any(origin) else None
    found = origin_of(image)
    if found is None or len(found[0]) < ndim or not any(found[0]):
        return None
    values, unit = list(found[0][-ndim:]), found[1]
    want = vox[1] if vox is not None else "voxel"
    if unit == want:
        return values
    if "voxel" in (unit, want):  # a physical origin of an image segmented in voxel units, or the reverse
        log.warning(
            "the input's origin is in %s, the outputs' voxel size in %s: the outputs record no origin", unit, want
        )
        return None
    return [to_unit(v, unit, want) for v in values]


def _model_file(model: Model) -> dict[str, Any] | None:
    """A model's file as the provenance names it: absolute path and SHA-256 of its bytes (``sha256sum``)."""
    from .provenance import absolute_path, file_sha256

    if model.path is None:
        return None
    return {"path": absolute_path(model.path), "sha256": file_sha256(model.path)}


def _channel_input(
    image: Any, model: Model | str | os.PathLike, channel_axis: int | None = None, *, checked: bool = False
) -> Any:
    """A multi-channel model's image as a :class:`~napari_xrayseg.core.channels.ChannelStack`.

    Its channel axis is ``channel_axis``, else the one the model was trained with, else (that axis
    not holding the model's channel count) the one axis that does; a different channel count is an error.
    ``checked``: the file's channel metadata was looked at already (by this job), not read again.
    """
    info = model.info if isinstance(model, Model) else read_model_info(model)
    if info.channels == 1:
        if not checked:
            from .io import refuse_file_channels

            refuse_file_channels(image, "a one-channel model")
        return image
    from .channels import resolve_channel_axis, split_channels

    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        image = np.asarray(image)
    if channel_axis is not None:
        return split_channels(image, channel_axis, channels=info.channels)
    # QA: an OME-Zarr (channels first, as NGFF orders them) was refused by a model trained on Z,C,Y,X
    ax = resolve_channel_axis(tuple(image.shape), info.channels, info.channel_axis)
    if ax != info.channel_axis:
        log.info(
            "the model was trained with its %d channels on axis %s; this image has them on axis %d (shape %s): "
            "read there (channel_axis= or --channel-axis to choose)",
            info.channels,
            info.channel_axis,
            ax,
            tuple(image.shape),
        )
    return split_channels(image, ax, channels=info.channels)


def _levelled(image: Any, model: Model | str | os.PathLike) -> Any:
    """``image`` levelled slice by slice where the model was trained so (``normalize="slice"``; core/level.py)."""
    info = model.info if isinstance(model, Model) else read_model_info(model)
    if info.normalization.get("level") is None:
        return image
    from .level import as_model_input

    log.info(
        "levelling the grey scale of the %d slices along z, as the model was trained (normalize='slice')",
        image.shape[0],
    )
    return as_model_input(image, info)


def _compile_choice(choice: Any, model: Model, image: Any, passes: int, dev: Any, tile: Any) -> bool:
    """Whether to ``torch.compile`` the network: ``SegmentConfig.compile`` resolved for this job."""
    if choice is True or choice is False:
        return choice and tile == AUTO
    return tile == AUTO and worth_compiling(model, float(np.prod(image.shape)) * passes, dev)


def recorded_nodata(model: Model | str | os.PathLike) -> float | None:
    """The no-data value ``model`` (or its file) was trained with; None without one or an unreadable file."""
    try:
        info = model.info if isinstance(model, Model) else read_model_info(model)
    except XraysegError:  # said by the loading itself, which follows
        return None
    v = (info.train or {}).get("nodata")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def build_job(
    image: Any,
    model: Model | str | os.PathLike,
    config: SegmentConfig,
    *,
    inputs: Iterable[Any] = (),
    local: bool = True,
    predictor: SlicePredictor | None = None,
) -> SegmentJob:
    """Check everything, plan the passes and open the output: a job ready for :func:`run_job`.

    Parameters
    ----------
    image : array-like
        The volume.
    model : Model or path-like
        The model or its file.
    config : SegmentConfig
        All options.
    inputs : iterable
        More paths the run reads (the output may not be one of them, nor lie inside one).
    local : bool
        Build the predictor here (False when dask workers run the slabs).
    predictor : SlicePredictor, optional
        A predictor of an earlier job, reused when it runs the same model with the same
        settings (a batch of inputs: one inference copy of the network for all of them).

    Raises
    ------
    InputError, OutputExistsError, OutputWriteError
        As :func:`segment`.
    """
    cfg = config
    raw = image
    if isinstance(image, (str, os.PathLike)):  # segment("scan.zarr", ...): as the CLI opens it
        from .io import open_volume

        image = open_volume(image)
    opened = image  # the image as stored: what --resume's fingerprint is taken of (nodata is a setting)
    cfg = replace(cfg, nodata=model_nodata(cfg.nodata, recorded_nodata(model)))  # the model's unless given
    image = _channel_input(mark_missing(image, cfg.nodata), model, cfg.channel_axis)
    image = check_image(image)
    check_chunks_present(image)  # of the array as stored (a levelled view is not a zarr array)
    image = _levelled(image, model)
    axes = parse_axes(cfg.axes, len(image.shape), default=cfg.axis) if cfg.axes is not None else [cfg.axis]
    if cfg.confidence_out is not None and cfg.confidence is None:
        raise InputError("confidence_out is only used with confidence='maxprob' or 'entropy'")
    if cfg.confidence_out is not None and cfg.out is None:
        raise InputError("confidence_out needs out= as well (or neither, to get arrays back)")
    if not (cfg.compile is True or cfg.compile is False or cfg.compile == "auto"):
        raise InputError(f"compile {cfg.compile!r} must be 'auto', True or False (--compile auto|on|off)")
    if (cfg.resume or cfg.pyramid) and cfg.out is None:
        raise InputError("resume and pyramid need an output store: pass out= (--out PATH.zarr)")
    views = check_tta(cfg.tta)
    probs = len(axes) > 1 or cfg.confidence is not None or views > 1
    merger: LabelMerger | ProbMerger = ProbMerger(len(axes), views, cfg.confidence) if probs else LabelMerger()
    dev = resolve_device(cfg.device) if local else worker_device(cfg.device)  # a cluster's client only plans
    here = dev if local else torch.device("cpu")
    reads = [raw, opened, *inputs, *([model] if isinstance(model, (str, os.PathLike)) else [])]
    loading = _Loading(model, here) if isinstance(model, (str, os.PathLike)) else None
    try:
        info = loading.info if loading is not None else as_model(model, here).info
        _say_other_axis(info, axes, len(image.shape))
        if cfg.out is None:  # before the grey-level sample: a volume larger than RAM is refused at once
            _check_in_memory(image.shape, len(info.classes), len(axes), cfg.confidence is not None)
        vox = _voxel_size(image, info, cfg)
        prec = resolve_precision(cfg.precision, dev)
        labels_claim = conf_claim = None
        norm = None
        if cfg.out is not None:
            if cfg.confidence_out is not None and os.path.abspath(cfg.confidence_out) == os.path.abspath(cfg.out):
                raise InputError(
                    f"confidence_out and out are the same path {cfg.out}: give the confidence map its own "
                    "(--confidence-out), or leave it out to write it beside the labels"
                )
            labels_claim = claim(
                cfg.out, overwrite=cfg.overwrite, resume=cfg.resume, inputs=reads, hint=resume_hint, store=True
            )
            if cfg.confidence is not None:
                cpath = (
                    cfg.confidence_out
                    if cfg.confidence_out is not None
                    else sibling_path(cfg.out, f"-{cfg.confidence}")
                )
                conf_claim = claim(
                    cpath,
                    overwrite=cfg.overwrite,
                    resume=cfg.resume,
                    inputs=reads,
                    what="confidence output",
                    option="--confidence-out",
                    store=True,
                    beside=labels_claim.replacing,  # swapped in with the labels, resumed with them
                )
            old = read_output_meta(labels_claim.path) if labels_claim.resume else None
            if old is not None and info.normalization.get("low") is None:
                norm = old.get("normalization")  # the bounds the first run computed from this image
        if norm is None and info.channels == 1 and not (info.two_d and info.normalization.get("low") is None):
            norm = resolved_normalization(info.normalization, image)
        if loading is not None:
            model = loading.result()
    except BaseException:
        if loading is not None:
            loading.settle()
        raise
    plans = plan_passes(
        image,
        model,
        axes,
        slab=cfg.slab,
        tile=cfg.tile,
        overlap=cfg.overlap,
        batch=cfg.batch,
        blend=cfg.blend,
        normalization=norm,
        precision=prec,
    )
    p0 = plans[0]
    comp = _compile_choice(cfg.compile, model, image, len(plans) * views, dev, p0.tile)
    same = (dev, p0.tile, float(p0.overlap), p0.batch, p0.blend, prec, comp)
    if not local:
        predictor = None
    elif predictor is None or predictor.model is not model or predictor.settings != same:
        predictor = SlicePredictor(
            model,
            device=dev,
            tile=p0.tile,
            overlap=p0.overlap,
            batch=p0.batch,
            blend=p0.blend,
            precision=prec,
            compile=comp,
        )
    writer: StoreWriter | MemoryWriter
    if labels_claim is not None:
        from .provenance import is_named

        # the file (or the layer a widget named), for the provenance
        source = raw if isinstance(raw, (str, os.PathLike)) or is_named(raw) else opened
        if not labels_claim.resume:
            _check_scratch_space(labels_claim.final, p0.shape, len(plans), len(model.info.classes))
        writer = StoreWriter.open(
            labels_claim,
            conf_claim,
            shape=p0.shape,
            chunks=plans[-1].out_chunks,
            classes=len(model.info.classes),
            depth=p0.depth,
            passes=len(plans),
            axes=[p.axis for p in plans],
            meta=_meta(plans, model, cfg, vox, _channel_input(opened, model, cfg.channel_axis, checked=True), source),
        )
    else:
        writer = MemoryWriter(
            p0.shape, classes=len(model.info.classes), passes=len(plans), confidence=cfg.confidence is not None
        )
    return SegmentJob(image, plans, merger, writer, cfg, predictor)


def _say_other_axis(info: ModelInfo, axes: list[int], ndim: int) -> None:
    """Warn (once) when a volume is sliced along an axis the model never trained along.

    QA s45: a model trained with ``--axis 1`` was applied along axis 0 by ``predict``, ``suggest``
    and the Segment widget without a word; on anisotropic voxels its slices look unlike any it saw.
    """
    t = info.train or {}
    trained = t.get("axes") or ([t["axis"]] if isinstance(t.get("axis"), int) else [])
    if ndim != 3 or info.two_d or len(axes) > 1 or not trained or not all(isinstance(a, int) for a in trained):
        return  # orthoplane runs (axes="zyx") slice along every axis on purpose
    shapes = [t.get("image_shape")] + list(t.get("inputs") or [])
    if any(isinstance(sh, list) and len(sh) == 2 for sh in shapes):
        return  # trained on a 2D image: it has no axis to keep (review s45: "pass axis=0" for one image)
    other = [a for a in axes if a not in trained]
    if other and first_time("other-axis", str((trained, axes))):
        names = "zyx"
        log.warning(
            "the model trained on slices along axis %s; segmenting along axis %s, which it never saw: pass axis=%d "
            "(--axis %s) to slice as it learned",
            ", ".join(f"{a} ({names[a]})" for a in trained),
            ", ".join(f"{a} ({names[a]})" for a in other),
            trained[0],
            names[trained[0]],
        )


#: Share of the available RAM the outputs of a run without ``out`` may take.
IN_MEMORY_SHARE = 0.8


def _check_in_memory(shape: tuple[int, ...], classes: int, passes: int, confidence: bool) -> None:
    """Refuse a run without ``out`` whose outputs (labels, confidence, an orthoplane sum) exceed the RAM available.

    QA s45: a 40 GB dask volume segmented without *Save to zarr* filled RAM slab by slab for hours
    (20 GB of labels), or, at 268 GB, failed with numpy's bare MemoryError after 6 minutes.
    """
    from .device import available_memory

    n = math.prod(int(v) for v in shape)
    need = n * (1 + (4 if confidence else 0) + (4 * classes if passes > 1 else 0))  # as MemoryWriter holds them
    free = available_memory()
    if free is not None and need > IN_MEMORY_SHARE * free:
        raise InputError(
            f"the results of segmenting this {' x '.join(map(str, shape))} image need {need / 2**30:.1f} GiB in "
            f"memory, more than the {free / 2**30:.1f} GiB available: pass out='labels.zarr' (--out; out_dir= for "
            "several inputs; the Segment widget's Save to zarr) to write them to disk slab by slab"
        )


def _check_scratch_space(out: Path, shape: tuple[int, ...], passes: int, classes: int) -> None:
    """Refuse an orthoplane run whose output's disk cannot hold its earlier passes' probabilities.

    Each pass before the last keeps float16 probabilities of every class inside the output until
    the run ends (about 12 bytes a voxel for three classes and axes: 120 GB for 10^10 voxels);
    without this check a run failed on a full disk hours in (it resumes, but the space is still
    missing).
    """
    import shutil

    if passes < 2:
        return
    voxels = math.prod(int(n) for n in shape)
    need = (passes - 1) * classes * 2 * voxels + voxels  # the passes' float16 probabilities, the labels
    where = Path(os.path.abspath(out)).parent
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:  # cannot tell: go on
        return
    if free < need:
        raise InputError(
            f"{out}: an orthoplane run of {voxels:,} voxels keeps its earlier passes' class probabilities until it "
            f"ends, about {_size(need)}, and {_size(free)} are free there: free space, choose another "
            "--out, or segment along one axis"
        )


def _size(n: float) -> str:
    """Bytes in words (QA: "about 0.0 GB, and 0.0 GB are free").

    >>> _size(2.4e9), _size(3.1e8), _size(9_999_999), _size(4.2e6), _size(0)
    ('2.4 GB', '310 MB', '10 MB', '4.2 MB', '0.0 MB')
    """
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 9.95e6 else f"{n / 1e6:.1f} MB"


class LocalExecutor:
    """Runs a job's slabs in this process, reading the next slab in a thread while the net runs."""

    where = ""

    def __init__(self, job: SegmentJob, cancel: CancelToken | None = None) -> None:
        self.job, self.cancel = job, cancel
        if job.predictor is not None:
            job.predictor.cancel = cancel  # checked at every batch of tiles too

    def run(self, i: int, todo: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
        """Run the slabs ``todo`` of pass ``i``; yield each range once written."""
        plan = self.job.plans[i]
        for r, data in prefetched(lambda r: plan.read(self.job.image, r), todo):
            check(self.cancel)
            self.job.run_slab(i, r, data)
            yield r


def run_job(job: SegmentJob, executor: Any, cancel: CancelToken | None = None) -> Generator[Progress, None, Any]:
    """The slab loop: every pass, every slab not yet done, through ``executor``; then finish the output.

    Yields a :class:`Progress` per slab and returns :meth:`SegmentJob.result`.
    """
    plans = job.plans
    try:
        todos = [job.writer.todo(i, p.ranges) for i, p in enumerate(plans)]
    except BaseException:
        if isinstance(job.writer, StoreWriter):
            job.writer.release()
        raise
    total = sum(p.n for p in plans)
    done = total - sum(b - a for t in todos for a, b in t)
    log.info(
        "segmenting %s along axes %s: slabs of %d slices (%d of %d slices to do), tile %s%s",
        plans[0].shape,
        [p.axis for p in plans],
        plans[0].depth,
        total - done,
        total,
        plans[0].tile,
        executor.where,
    )
    t0 = time.perf_counter()
    ran = 0
    finished = False
    if done < total:  # a record before the first slab, which may take minutes: the CLI says the run started
        yield Progress(done, total, f"slices {done}/{total}: slabs of {plans[0].depth} slices{executor.where}")
    try:
        for i, (plan, todo) in enumerate(zip(plans, todos)):
            vox = math.prod(plan.slice_shape)
            for r in executor.run(i, todo):
                done += r[1] - r[0]
                ran += (r[1] - r[0]) * vox
                rate = ran / max(time.perf_counter() - t0, 1e-9)
                where = f"axis {plan.axis} ({i + 1}/{len(plans)}): " if len(plans) > 1 else ""
                yield Progress(
                    done,
                    total,
                    f"{where}slices {done}/{total} along axis {plan.axis}{executor.where} ({rate / 1e6:.2f} Mvox/s)",
                    {"voxels_per_s": float(rate)},
                )
        job.writer.finish(cancel)
        finished = True
    except Cancelled:
        log.info(
            "segmentation cancelled after %d/%d slices; the partial output is kept, marked incomplete "
            "(resume=True / --resume continues)",
            done,
            total,
        )
        raise
    except (MemoryError, RuntimeError, OSError) as e:
        oom = out_of_memory(e, "segmenting")
        if oom is None:
            raise
        if isinstance(job.writer, StoreWriter):
            oom.args = (f"{oom.args[0]}; finished slabs are kept: add --resume (resume=True) to continue",)
        raise oom from e
    finally:
        if not finished and isinstance(job.writer, StoreWriter):
            job.writer.release()  # cancelled, failed or abandoned: a retry (--resume) may take the outputs
    elapsed = time.perf_counter() - t0
    log.info("segmented %d voxels in %.1f s (%.2f Mvox/s)", ran, elapsed, ran / max(elapsed, 1e-9) / 1e6)
    return job.result()


@python_numbers
def iter_segment(
    image: Any,
    model: Model | str | os.PathLike,
    *,
    config: SegmentConfig | None = None,
    cancel: CancelToken | None = None,
    **options: Any,
) -> Generator[Progress, None, Any]:
    """Generator form of :func:`segment`: yields :class:`Progress` per slab, returns the labels.

    See :func:`segment` for the parameters.
    """
    job = build_job(image, model, SegmentConfig.of(config, **options))
    return (yield from run_job(job, LocalExecutor(job, cancel), cancel))


@python_numbers
def segment(
    image: Any,
    model: Model | str | os.PathLike,
    *,
    config: SegmentConfig | None = None,
    cancel: CancelToken | None = None,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> Any:
    """Segment a 2D slice or 3D volume slice by slice with a 2D network.

    Parameters
    ----------
    image : array-like of shape (Z, Y, X) or (Y, X), or path-like
        numpy, dask, zarr (or h5py, or TIFF) array of intensities. Read a slab at a time.
        A path is opened lazily with :func:`~napari_xrayseg.core.io.open_volume`.
    model : Model or path-like
        A model from :func:`~napari_xrayseg.init_model`/``train``/:func:`~napari_xrayseg.load_model`,
        or a model file path.
    config : SegmentConfig, optional
        All options at once; keyword options below replace its fields.
    cancel : CancelToken, optional
        Checked at every slab and every batch of tiles; raises
        :class:`~napari_xrayseg.core.errors.Cancelled`, leaving finished slabs in ``out``
        (resumable with ``resume=True``).
    progress : callable, optional
        Called with a :class:`~napari_xrayseg.core.progress.Progress` after each slab.
    **options
        Any field of :class:`~napari_xrayseg.core.config.SegmentConfig`:

        axis : int
            Slicing axis; 2D slices perpendicular to it go through the net.
        tile : "auto" or int or None
            ``"auto"`` (default): each slice goes through the net whole, padded to its
            stride (no tiles, no seams), as many per pass as fit the memory budget; slices
            too large for it are cut into the biggest tiles that fit, each with a halo of
            the net's receptive field (the same result as whole). An int: sliding windows
            of that side (a multiple of the net's stride) blended with ``overlap``;
            ``None``: sliding windows of the model's recommended tile.
        overlap : float
            Fraction of a sliding window shared with neighbours, in [0, 1) (integer tile).
        batch : int
            Sliding windows per forward pass (integer tile).
        device : str
            ``"auto"`` (CUDA if present, else Apple MPS, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``, ``"mps"``.
        slab : int, optional
            Slices read and written at a time (default: the input's chunk depth, or 16).
        blend : str
            ``"gaussian"`` or ``"constant"`` tile weighting.
        out : path-like, optional
            Write the labels to a zarr array here (needed for volumes larger than RAM). Its
            attribute ``napari_xrayseg.complete`` is true only once every slab is written.
        overwrite : bool
            Replace ``out`` if it exists (never done silently). The new result is written
            beside it (``.NAME.xrayseg-new``) and swapped in only when complete: on any
            failure the old output is intact, and ``overwrite=True, resume=True`` finishes the
            interrupted replacement.
        resume : bool
            If ``out`` holds an unfinished run (cancelled, killed, crashed) of the same model
            and settings, compute only the slabs it lacks (every pass of every mode); the
            result is identical to an uninterrupted run. Each slab gets a done-marker after
            its data is written, so a slab cut off mid-write is computed again. Without an
            existing ``out``, a normal run.
        pyramid : bool
            Write ``out`` as an OME-Zarr group: labels in array ``0`` plus levels ``1, 2, ...``
            each downsampled 2x (nearest), so napari can browse a big result smoothly.
        axes : str or sequence of int, optional
            Orthoplane ensemble: segment along each of these axes (``"zyx"`` or ``(0, 1, 2)``
            for all three) and average the class probabilities voxel by voxel (see
            :mod:`napari_xrayseg.core.merger`); costs one pass per axis. A single axis is
            the same as ``axis``.
        confidence : {"maxprob", "entropy"}, optional
            Also compute per-voxel confidence: the winning class's probability, or the
            normalised entropy (0 certain, 1 uniform). ``segment`` then returns
            ``(labels, confidence)``; with ``out`` the confidence (float32) is written to
            ``confidence_out`` (default: beside ``out``, ``NAME-maxprob.zarr``).
        tta : bool or int
            Test-time augmentation: average the class probabilities over N views of the
            slices, each flipped and/or transposed and mapped back (N x the work; ``True``:
            4 views; up to 16 for a 3D network, whose views also reverse the slice order,
            8 for a 2D one). On unseen hard scans 4 views take the shipped 3D start's error on
            interface voxels from 0.207 to 0.204 and its mean Dice from 0.9188 to 0.9203
            (docs/accuracy.md).
        confidence_out : path-like, optional
            Where the confidence map goes when ``out`` is given.
        precision : str
            Network arithmetic: ``"auto"`` (fp16 on CUDA; bf16 on CPUs with native bf16,
            1.6-2.8x faster there, same Dice, labels differing on 0.06 % of voxels, see
            docs/performance.md; else fp32), ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA only).
        nodata : float, optional
            A grey value that marks voxels without data, e.g. 0 outside a reconstruction's
            circular field of view (NaN always does). They are left out of the
            normalisation, filled from the nearest voxel with data in their slice before the
            network sees them, and labelled 0 (confidence NaN). A constant outside left as it
            is cost the shipped start 0.04 mean Dice inside the field of view of hard scans,
            and far more where it lies below the data (docs/segment.md).
        origin : sequence of float, optional
            Where the first voxel's centre lies (z, y, x, in the voxel size's unit), written
            into the outputs (default: the input OME-Zarr's translation, else none).
        channel_axis : int, optional
            A multi-channel model's image: the axis of its channels (default: the model's,
            or the one axis holding as many entries as the model has channels).

    Returns
    -------
    array or (array, array)
        uint8 labels of the image's shape holding the model's class values: numpy for
        numpy input; for dask input a dask array; for zarr input the zarr array written
        to ``out`` (numpy without ``out``). With ``confidence``: ``(labels, confidence)``.

    Raises
    ------
    InputError
        On bad input (dimensions, dtype, inf, no data at all, constant image, tile, axis, device), on
        ``resume`` of an output written with another model or settings, on an ``out``
        that is (inside) the input.
    OutputWriteError
        When the output cannot be written (disk full, read-only); finished slabs are kept.
    OutputExistsError
        If ``out`` exists and neither ``overwrite`` nor ``resume`` is given.
    TypeError
        On an unknown option.

    Examples
    --------
    >>> from napari_xrayseg import init_model, segment
    >>> model = init_model("unet", size="tiny", classes=3)
    >>> labels = segment(np.random.rand(2, 32, 32).astype("float32"), model, tile=32, device="cpu")
    >>> labels.shape, labels.dtype
    ((2, 32, 32), dtype('uint8'))
    """
    return drain(iter_segment(image, model, config=config, cancel=cancel, **options), progress)
