"""Self-training: learn from the unannotated part of a volume, or adapt to a new scan.

A model segments a volume (or a bounded sub-volume of it) as an orthoplane ensemble
(:func:`~napari_xrayseg.segment` with ``axes="zyx"``, class probabilities averaged over
the z, y and x passes). Voxels where the ensemble is confident (highest averaged
probability at least ``threshold``: the three views agree) on evenly spaced slices become
pseudo-labels, and the model is fine-tuned on them with :func:`~napari_xrayseg.train`
(``init=model``). Unsure voxels, mostly those on interfaces, stay unannotated, so the
masked loss never learns from a guess there.

The fine-tuning validates on its own pseudo-labels: agreement, not accuracy. The user's
annotations (if any) are therefore held out of it and score the result honestly: the
fine-tuned weights are blended back with the model's (``a * adapted + (1 - a) * model``,
``a`` of :data:`LABEL_BLENDS`, 0 the model as it was) and the ``a`` whose Dice on the
annotated slices is best (the smallest within :data:`LABEL_BLEND_MARGIN`) is kept. A QA run
measured why (a hard second scan, a pretrained-start model): self-training without this lost
0.019 mean Dice, with the annotations trained on 0.009.

Two uses:

* **a second scan** (another sample, another beamtime, another grey-level calibration)
  without new labels: the model adapts to its noise, blur and contrast;
* **the same scan**: the model sees the whole volume, not only the painted slices.

Memory is bounded: a volume of more than ``max_voxels`` voxels is represented by its
central sub-volume of about that size (read once into RAM as float32).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Generator
from typing import Any

import numpy as np

from .config import python_numbers
from .errors import InputError
from .models import Model, load_model
from .normalize import normalize_of, working_dtype
from .progress import CancelToken, Progress, ProgressCallback, check, drain

__all__ = ["iter_self_train", "self_train"]

log = logging.getLogger(__name__)

#: Default size bound of the (sub-)volume self-training reads into memory.
MAX_VOXELS = 1 << 25

#: Shares of the self-trained weights tried against the user's annotations (0: the model as it was).
LABEL_BLENDS = (0.0, 0.3, 0.5, 0.7, 1.0)

#: The smallest share whose Dice on the user's annotations is within this of the best is kept.
LABEL_BLEND_MARGIN = 0.001


def _blend_on_labels(
    adapted: Model,
    original: Model,
    image: np.ndarray,
    labels: np.ndarray,
    axis: int,
    device: str,
    cancel: CancelToken | None,
) -> tuple[float, dict[float, float | None]]:
    """Keep the share ``a`` of :data:`LABEL_BLENDS` that scores best on the annotated slices of ``labels``.

    The network of ``adapted`` ends up holding the kept blend. Returns ``(a, {a: mean Dice})``.
    """
    from .annotation import annotated_slices, predict_slice, slice_normalization
    from .metrics import dice_per_class
    from .training import _lerp_state, _state

    idx = annotated_slices(labels, axis=axis)
    truth = np.stack([np.take(labels, i, axis=axis) for i in idx])
    present = [int(c) for c in np.unique(truth) if c]
    norm = None if original.info.normalization.get("low") is not None else slice_normalization(image, original)
    start, tuned = _state(original), _state(adapted)
    scores: dict[float, float | None] = {}
    for a in LABEL_BLENDS:
        check(cancel)
        adapted.network.load_state_dict(_lerp_state(start, tuned, a))
        adapted.network.eval()
        pred = np.stack([predict_slice(image, adapted, i, axis=axis, device=device, normalization=norm) for i in idx])
        d = dice_per_class(pred, truth, present)
        vals = [v for c in present if (v := d.get(c)) is not None and math.isfinite(v)]
        scores[a] = float(np.mean(vals)) if vals else None
    valid = {a: v for a, v in scores.items() if v is not None}
    kept = 1.0
    if valid:
        best = max(valid.values())
        kept = min(a for a, v in valid.items() if v >= best - LABEL_BLEND_MARGIN)
    adapted.network.load_state_dict(start if kept == 0 else _lerp_state(start, tuned, kept))  # 0: exactly as it was
    adapted.network.eval()
    return kept, scores


def _region(shape: tuple[int, ...], max_voxels: int) -> tuple[slice, ...]:
    """Central box of ``shape`` holding at most about ``max_voxels`` voxels (the same aspect)."""
    n = math.prod(shape)
    if n <= max_voxels:
        return tuple(slice(0, s) for s in shape)
    f = (max_voxels / n) ** (1.0 / len(shape))
    sizes = [max(min(s, 32), int(s * f)) for s in shape]
    return tuple(slice((s - k) // 2, (s - k) // 2 + k) for s, k in zip(shape, sizes, strict=True))


def pseudo_labels(
    labels: np.ndarray,
    confidence: np.ndarray,
    *,
    threshold: float,
    slices: int,
    axis: int = 0,
    annotations: np.ndarray | None = None,
) -> np.ndarray:
    """Sparse pseudo-labels: confident voxels of ``slices`` evenly spaced slices along ``axis``.

    Parameters
    ----------
    labels : numpy.ndarray of uint8
        Predicted labels.
    confidence : numpy.ndarray
        Highest class probability of each voxel, same shape.
    threshold : float
        Keep voxels whose confidence is at least this.
    slices : int
        Slices to take along ``axis`` (evenly spaced, the two ends left out).
    axis : int
        Slicing axis.
    annotations : numpy.ndarray, optional
        The user's labels (0 = not annotated); they overrule pseudo-labels wherever set.

    Returns
    -------
    numpy.ndarray of uint8
        Labels, 0 where nothing is known.

    Examples
    --------
    >>> lab = np.ones((5, 2, 2), np.uint8)
    >>> conf = np.full((5, 2, 2), 0.95)
    >>> conf[2, 0, 0] = 0.5
    >>> int(pseudo_labels(lab, conf, threshold=0.9, slices=1).sum())
    3
    """
    depth = labels.shape[axis]
    idx = sorted({int(round(v)) for v in np.linspace(0, depth - 1, slices + 2)[1:-1]})
    out = np.zeros(labels.shape, np.uint8)
    sel = [slice(None)] * labels.ndim
    sel[axis] = idx
    s = tuple(sel)
    out[s] = np.where(confidence[s] >= threshold, labels[s], 0)
    if annotations is not None:
        out = np.where(annotations > 0, annotations, out).astype(np.uint8)
    return out


@python_numbers
def iter_self_train(
    image: Any,
    model: Model | str | os.PathLike,
    labels: Any = None,
    *,
    threshold: float = 0.9,
    slices: int = 12,
    axes: str | None = None,
    minutes: float | None = None,
    epochs: int | None = None,
    max_voxels: int = MAX_VOXELS,
    seed: int = 0,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, Model]:
    """Generator form of :func:`self_train`: yields :class:`Progress`, returns the model."""
    from .inference import check_image, iter_segment
    from .io import read_block
    from .training import _holding, _out_claim, _save_out, iter_train

    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, device="cpu")
    if not isinstance(model, Model):
        raise InputError(f"model must be a Model or a model file path, not {type(model).__name__}")
    if not model.info.trained:
        raise InputError("the model is untrained: train it on annotated slices first, then self-train")
    if model.info.channels > 1:
        raise InputError(
            f"the model takes {model.info.channels} image channels, which self-training does not handle yet: "
            "fine-tune it with train(..., init=model) on annotated slices instead"
        )
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise InputError(f"threshold {threshold!r} must be in (0, 1), e.g. 0.9")
    if isinstance(slices, bool) or not isinstance(slices, int) or slices < 1:
        raise InputError(f"slices {slices!r} must be a positive integer, e.g. 12")
    out_claim = _out_claim(out, overwrite, model)  # before any work; never the model's own file
    with _holding(out_claim):  # a second run to the same model file is refused while this one trains
        image = check_image(image)
        shape = tuple(int(s) for s in image.shape)
        if labels is not None and tuple(labels.shape) != shape:
            raise InputError(f"labels shape {tuple(labels.shape)} does not match image shape {shape}")
        train_info = model.info.train
        axis = int(train_info.get("axis", 0)) if len(shape) == 3 else 0
        if axes is None:
            axes = "zyx" if len(shape) == 3 else None
        region = _region(shape, int(max_voxels))
        check(cancel)
        sub = read_block(image, region, what="image")
        sub = sub.astype(working_dtype(sub.dtype), copy=False)  # narrowed after the normalisation
        ann = None if labels is None else np.asarray(read_block(labels, region, what="labels"))
        if ann is not None:
            extra = sorted(int(v) for v in np.unique(ann) if v and int(v) not in model.info.classes)
            if extra:  # mixed into the pseudo-labels and scored under the wrong classes
                raise InputError(
                    f"the labels hold values {extra} that are not classes of the model {list(model.info.classes)}: "
                    "give annotations of the model's classes (0 = not annotated), "
                    "or fine-tune with train(..., init=model)"
                )
        yield Progress(0, 2, f"self-training: segmenting {'x'.join(map(str, sub.shape))} voxels as an ensemble")
        gen = iter_segment(sub, model, axis=axis, axes=axes, confidence="maxprob", device=device, cancel=cancel)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            pred, conf = stop.value
        # the user's annotations are held out: they score the result (and choose its blend) below
        held = ann is not None and bool(np.any(ann))
        pseudo = pseudo_labels(np.asarray(pred), np.asarray(conf), threshold=float(threshold), slices=slices, axis=axis)
        if held:
            pseudo[np.asarray(ann) > 0] = 0  # never learnt from where they score it
            alone = {int(c) for c in np.unique(pseudo) if c}
            if alone != set(model.info.classes):  # a class only the user's labels hold: they must teach it
                log.warning(
                    "self-training: no confident voxel of class %s, so your labels are trained on instead of held out; "
                    "nothing scores the result: check it with xrayseg evaluate",
                    sorted(set(model.info.classes) - alone),
                )
                held = False
                pseudo = pseudo_labels(
                    np.asarray(pred),
                    np.asarray(conf),
                    threshold=float(threshold),
                    slices=slices,
                    axis=axis,
                    annotations=ann,
                )
        kept = float((pseudo > 0).mean())
        present = sorted(int(c) for c in np.unique(pseudo) if c)
        if present != list(model.info.classes):
            raise InputError(
                f"self-training found confident voxels of classes {present} only, not all of "
                f"{list(model.info.classes)}: lower threshold (now {threshold}), or fine-tune on painted slices "
                "(train with init=model, xrayseg train --init MODEL)"
            )
        log.info(
            "self-training on %.1f %% of the voxels of %d slices (threshold %.2f)",
            100 * kept * shape[axis] / max(1, slices),
            slices,
            threshold,
        )
        yield Progress(1, 2, "self-training: fine-tuning on confident voxels", {"pseudo_fraction": kept})
        if minutes is None and epochs is None:
            epochs = 10
        axes_train = train_info.get("axes") if len(shape) == 3 else None
        result = yield from iter_train(
            sub,
            pseudo,
            init=model,
            axis=axis,
            axes=axes_train if axes_train and len(axes_train) > 1 else None,
            minutes=minutes,
            epochs=epochs,
            seed=seed,
            device=device,
            normalize=normalize_of(model.info.normalization),
            patch=int(train_info.get("patch", 128)),
            batch=train_info.get("batch"),  # None (not recorded): the model's architecture's default
            cancel=cancel,
        )
        record = {
            "threshold": float(threshold),
            "slices": slices,
            "region": [[r.start, r.stop] for r in region],
            "pseudo_fraction": kept,
            "user_labels": labels is not None,
            "from": train_info.get("annotated_slices"),
        }
        if held:
            yield Progress(2, 2, "self-training: scoring the blends on your annotated slices")
            share, scores = _blend_on_labels(result, model, sub, np.asarray(ann), axis, device, cancel)
            record |= {
                "label_blend": {f"{a:g}": None if v is None else round(v, 5) for a, v in scores.items()},
                "label_blend_kept": share,
                "label_dice": None if scores[share] is None else round(scores[share], 5),
                "label_dice_before": None if scores[0.0] is None else round(scores[0.0], 5),
            }
            log.info(
                "self-training: Dice on your annotated slices %s as it was, %s self-trained; kept %.2f x it + %.2f x "
                "the model it started from",
                scores[0.0],
                scores[1.0],
                share,
                1 - share,
            )
        result.info.train["self_training"] = record
        _save_out(result, out_claim, overwrite)
    return result


@python_numbers
def self_train(
    image: Any,
    model: Model | str | os.PathLike,
    labels: Any = None,
    *,
    threshold: float = 0.9,
    slices: int = 12,
    axes: str | None = None,
    minutes: float | None = None,
    epochs: int | None = None,
    max_voxels: int = MAX_VOXELS,
    seed: int = 0,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    cancel: CancelToken | None = None,
    progress: ProgressCallback | None = None,
) -> Model:
    """Fine-tune a model on its own confident predictions (no new labels needed).

    Parameters
    ----------
    image : array-like of shape (Z, Y, X) or (Y, X)
        The volume to learn from: the training scan, or a new scan to adapt to.
    model : Model or path-like
        A trained model; it is not modified.
    labels : array-like, optional
        The user's annotations of ``image`` (0 = not annotated): held out of the
        fine-tuning, they score it and choose how much of it to keep (see the module
        docstring); ``info.train["self_training"]`` records the scores.
    threshold : float
        Highest averaged class probability a voxel needs to become a pseudo-label.
    slices : int
        Evenly spaced slices along the model's axis that get pseudo-labels.
    axes : str, optional
        Passes of the ensemble that makes the pseudo-labels (default ``"zyx"`` in 3D).
    minutes, epochs : optional
        Fine-tuning budget as in :func:`~napari_xrayseg.train` (default 10 epochs).
    max_voxels : int
        Larger volumes are represented by their central sub-volume of about this size.
    seed, device, out, overwrite, cancel, progress
        As in :func:`~napari_xrayseg.train`.

    Returns
    -------
    Model
        The fine-tuned model; ``info.train["self_training"]`` records the threshold, the
        region and the share of voxels that became pseudo-labels.

    Raises
    ------
    InputError
        For an untrained model, bad settings, or when a class gets no confident voxel.

    Examples
    --------
    >>> from napari_xrayseg import make_phantom, train
    >>> image, truth = make_phantom((8, 64, 64), seed=1)
    >>> sparse = np.zeros_like(truth)
    >>> sparse[4] = truth[4]
    >>> model = train(image, sparse, size="tiny", epochs=1, steps_per_epoch=2, batch=2, patch=32, device="cpu")
    >>> adapted = self_train(image, model, sparse, slices=2, epochs=1, device="cpu")
    >>> adapted.info.train["self_training"]["slices"]
    2
    """
    return drain(
        iter_self_train(
            image,
            model,
            labels,
            threshold=threshold,
            slices=slices,
            axes=axes,
            minutes=minutes,
            epochs=epochs,
            max_voxels=max_voxels,
            seed=seed,
            device=device,
            out=out,
            overwrite=overwrite,
            cancel=cancel,
        ),
        progress,
    )
