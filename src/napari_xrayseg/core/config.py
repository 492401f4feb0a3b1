"""Defaults, kept once: signatures, widgets and the CLI all read these dataclasses."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "ARCH_NAMES",
    "MODEL_TILE",
    "SUGGEST_MARGIN",
    "SegmentConfig",
    "TrainConfig",
    "python_numbers",
    "takes_train_config",
]

F = TypeVar("F", bound=Callable[..., Any])


def _plain(v: Any) -> Any:
    """A NumPy scalar as the Python number it holds; a list or tuple of them likewise; else ``v``."""
    if isinstance(v, np.generic):
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.floating):
            return float(v)
        return v
    if isinstance(v, (list, tuple)) and any(isinstance(x, np.generic) for x in v):
        return type(v)(_plain(x) for x in v)
    return v


def _with_keywords(func: F, convert: Callable[[dict[str, Any]], dict[str, Any]]) -> F:
    """``func`` with its keyword arguments passed through ``convert`` first.

    Generator functions stay generator functions, as napari's workers and
    :func:`~napari_xrayseg.core.progress.drain` expect.
    """
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen(*args: Any, **kwargs: Any) -> Any:
            return (yield from func(*args, **convert(kwargs)))

        return gen  # type: ignore[return-value]

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **convert(kwargs))

    return call  # type: ignore[return-value]


def python_numbers(func: F) -> F:
    """Let ``func``'s keyword options be NumPy scalars (``np.int64(1)`` from ``np.argmin``, ``np.float32(.5)``).

    They become Python ints, floats and bools before the checks, which accept those alone (and
    would say "axis 1 is out of range" of ``np.int64(1)``). Generator functions stay generator
    functions.
    """
    return _with_keywords(func, lambda kwargs: {k: _plain(v) for k, v in kwargs.items()})


#: The architectures' names, kept here without torch: the CLI's parser offers them (importing the networks took
#: ``xrayseg --help`` 2.2 CPU s and 230 MB; QA). ``models.architectures()`` is checked against it by a test.
ARCH_NAMES = ("attentionunet", "basicunet", "segresnet", "unet", "unet3d")
#: Recommended tile side of a new model (stored in the model file; ``SegmentConfig.tile=None`` uses the model's).
MODEL_TILE = 256
#: suggest_slices: a slice is suggested over the middle of the widest gap between annotated slices only
#: where its (spread-penalised) score is at least 1 + SUGGEST_MARGIN times the middle's (docs/annotate.md)
SUGGEST_MARGIN = 0.5


@dataclass(frozen=True)
class SegmentConfig:
    """Every option of :func:`napari_xrayseg.segment`, with its default.

    One object travels through the pipeline (plan, predictor, merger, writer), the
    widgets and the CLI; ``segment(image, model, axis=1)`` is
    ``segment(image, model, config=SegmentConfig(axis=1))``.

    Attributes
    ----------
    axis : int
        Slicing axis of the volume; 2D slices are taken perpendicular to it.
    axes : str or sequence of int or None
        Orthoplane ensemble: one pass per axis (``"zyx"`` for all three), class
        probabilities averaged voxel by voxel; None is ``axis`` alone.
    tile : "auto" or int or None
        ``"auto"``: each slice goes through the network whole (padded to the net's
        stride; no tiles, no seams) when it fits the memory budget, as many slices per
        pass as fit; larger slices are cut into the biggest tiles that fit, each with a
        halo of the network's receptive field, so the result equals the whole-slice one.
        An int: sliding windows of that side (a multiple of the net's stride) blended
        with ``overlap``; None: sliding windows of the model's recommended tile.
    overlap : float
        Fraction of a sliding window shared with its neighbour, in [0, 1) (integer ``tile`` only).
    batch : int
        Sliding windows per forward pass (integer ``tile`` only; ``"auto"`` sizes its
        batches from the memory budget).
    device : str
        ``"auto"`` (CUDA if present, else Apple MPS, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"``, ``"mps"``.
    slab : int or None
        Slices read and written at a time; ``None`` picks the input chunk depth
        (clipped to [1, 64]) or 16 (32 for several axes).
    blend : str
        Tile blending: ``"gaussian"`` or ``"constant"``.
    precision : str
        Network arithmetic: ``"auto"`` (fp16 on CUDA, bf16 on CPUs with native bf16 such
        as AVX512-BF16/AMX, else fp32), ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA only).
    confidence : str or None
        ``"maxprob"`` or ``"entropy"``: also compute a per-voxel confidence map.
    tta : bool or int
        Test-time augmentation: average the class probabilities over this many views of
        the slices, flipped and transposed (N x the work; ``True``: 4 views; up to 16 for a
        3D network, 8 for a 2D one; see :data:`~napari_xrayseg.core.predictor.TTA_ORDER`).
    compile : str or bool
        ``torch.compile`` the network: ``"auto"`` (default) when the job's network work is
        large enough for the compile time (17-90 s on 2 CPU cores) to pay back, i.e. more
        than about 10 minutes of compute (:func:`~napari_xrayseg.core.predictor.worth_compiling`;
        +25 % on CPU) and the slices go through whole; ``True`` or ``False`` force it. A
        compile that fails (no C++ compiler, an unsupported device) falls back to eager
        with a warning.
    out : path-like or None
        Zarr store for the labels (needed for volumes larger than RAM).
    confidence_out : path-like or None
        Zarr store for the confidence (default ``NAME-KIND.zarr`` beside ``out``).
    overwrite : bool
        Replace existing outputs (written beside them, swapped in when complete).
    resume : bool
        Continue an unfinished output of the same model and settings.
    pyramid : bool
        Write ``out`` as an OME-Zarr multiscale group.
    voxel_size : float or sequence of float or None
        Voxel size written into the outputs: one number (isotropic) or one per axis
        (z, y, x); None reads it from the input file, else from the model file (the
        voxel size it was trained at), else the outputs record none (voxel units).
    unit : str or None
        Length unit of ``voxel_size`` ("nm", "um", "mm"; default "um"); without
        ``voxel_size``, the unit to convert the recorded voxel size to.
    nodata : float or None
        A grey value that marks voxels without data, e.g. 0 outside a reconstruction's
        circular field of view. NaN always does. Such voxels are left out of the
        normalisation, filled from the nearest voxel with data before the network sees
        them, and labelled 0 (their confidence NaN).
    origin : sequence of float or None
        Where the image's first voxel's centre lies (z, y, x), in the voxel size's unit (its
        placement, e.g. a crop of a larger scan, napari's ``translate``), written into the
        outputs (``origin`` and the OME-Zarr ``translation``). None: the input file's (an
        OME-Zarr translation, or an output's ``origin``), else none.
    channel_axis : int or None
        The image's channel axis, for a multi-channel model. None: the axis the model was
        trained with, or, where that axis does not hold the model's channel count, the one
        axis that does (a C,Z,Y,X file for a model trained on Z,C,Y,X).
    """

    axis: int = 0
    axes: Any = None
    tile: int | str | None = "auto"
    overlap: float = 0.25
    batch: int = 8
    device: str = "auto"
    slab: int | None = None
    blend: str = "gaussian"
    precision: str = "auto"
    confidence: str | None = None
    tta: bool | int = False
    compile: str | bool = "auto"
    out: Any = None
    confidence_out: Any = None
    overwrite: bool = False
    resume: bool = False
    pyramid: bool = False
    voxel_size: Any = None
    unit: str | None = None
    nodata: float | None = None
    origin: Any = None
    channel_axis: int | None = None

    @classmethod
    def of(cls, config: SegmentConfig | None = None, **options: Any) -> SegmentConfig:
        """``config`` (or the defaults) with ``options`` replaced.

        Raises
        ------
        TypeError
            On an option that is not a field, naming it and the valid ones.

        Examples
        --------
        >>> SegmentConfig.of(SegmentConfig(axis=1), tile=64).axis
        1
        """
        base = config if config is not None else cls()
        if not isinstance(base, cls):
            raise TypeError(f"config must be a SegmentConfig, not {type(base).__name__}")
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown segment option(s) {unknown}: valid are {[f.name for f in fields(cls)]}")
        return replace(base, **options)


@dataclass(frozen=True)
class TrainConfig:
    """Defaults for :func:`napari_xrayseg.train`.

    Attributes
    ----------
    axis : int
        Slicing axis; every slice along it that holds annotations is used.
    arch : str
        Architecture name from :func:`napari_xrayseg.core.models.architectures`
        (``"unet"``, ``"unet3d"``, ``"basicunet"``, ``"attentionunet"``, ``"segresnet"``;
        docs/architectures.md compares them), or ``"auto"``: ``unet3d`` for single-channel
        volumes at least 15 slices deep, else ``unet``
        (:func:`napari_xrayseg.core.models.choose_arch`).
    size : str
        Architecture size preset (``"tiny"``, ``"small"``, ``"medium"``, ``"large"``);
        used for ``unet``, other architectures (``unet3d`` too) default to their own preset.
    mode : str
        ``"supervised"`` (the masked segmentation loss alone) or ``"pix2pix"``
        (conditional GAN: the network is the generator, a PatchGAN discriminator
        judges (image, class map) pairs on annotated pixels; docs/train.md).
    pixel_weight : float
        Pix2Pix only: weight of the segmentation loss against the adversarial loss
        (pix2pix's lambda, 100 as in pix2pix; 10 lost 0.4 points of mean Dice on
        the sample, docs/train.md).
    epochs : int or None
        Most epochs (an epoch is ``steps_per_epoch`` optimiser steps). ``None``: no cap
        when ``minutes`` is given, so the whole time budget is used; 40 when neither is.
    minutes : float or None
        Wall-clock budget, spent in full unless ``epochs`` runs out first.
    steps_per_epoch : int
        Optimiser steps per epoch.
    batch : int or None
        Patches per step; ``None``: the architecture's default (8; 4 sub-volumes for
        ``unet3d``, ``models.default_batch``; a fine-tuned model's architecture counts).
    patch : int
        Side of the square training patches.
    lr : float
        Peak Adam learning rate.
    schedule : str
        Learning-rate decay: ``"cosine"`` (over the epochs or the time budget),
        ``"step"`` or ``"constant"``.
    loss : str
        ``"dicece"`` (default), ``"ce"``, ``"dice"`` or ``"dice_gamma"``.
    gamma : float
        Exponent on the Dice denominator for ``loss="dice_gamma"``.
    boundary_weight : float
        Cross-entropy weight of annotated pixels on an interface (1 = off).
    dropout : float or None
        Dropout of a new model; ``None``: ``models.default_dropout`` (0.2 for ``unet`` ``medium``, else 0).
    average : float
        Share of the budget, at its end, whose epochs' weights are averaged into the
        model returned (stochastic weight averaging); 0 returns the best-validation
        epoch's weights instead. 0.5 by default (docs/accuracy.md).
    augment : bool
        Random flips, rotations, scaling, intensity changes, noise and blur.
    val_fraction : float
        Fraction of annotated slices (or of patches, with one slice) held out.
    seed : int
        Seed for weights, sampling and augmentation.
    device : str
        As in :class:`SegmentConfig`.
    precision : str
        Arithmetic of the training steps (the weights stay fp32): ``"auto"`` (mixed
        precision on CUDA, bf16 autocast on CPUs with AMX, else fp32), ``"fp32"``,
        ``"bf16"``, ``"fp16"`` (CUDA only).
    context : int
        Odd number of slices fed per slice (the slice and ``context // 2``
        neighbours on each side, as input channels, "2.5D"); 1 = plain 2D.
        3 by default: on the accuracy benchmark it removes about 17 % of the
        wrong voxels of plain 2D at the same training time (docs/accuracy.md).
        A new ``unet3d`` model takes 15 when none is given (the slice and 7 on each
        side as one volume; ``models.default_context``).
    normalize : str, optional
        Input normalisation stored in the model: ``"image"`` (percentile bounds of each
        image the model segments, so a second scan with another grey-level calibration
        is mapped alike), ``"fixed"`` (the training image's bounds for every input) or
        ``"slice"`` (each slice levelled along z first). None: a fine-tuned model's own,
        else ``"image"``.
    """

    axis: int = 0
    arch: str = "auto"
    size: str = "medium"
    mode: str = "supervised"
    pixel_weight: float = 100.0
    epochs: int | None = None
    minutes: float | None = None
    steps_per_epoch: int = 25
    batch: int | None = None
    patch: int = 128
    lr: float = 3e-3
    schedule: str = "cosine"
    loss: str = "dicece"
    gamma: float = 1.0
    boundary_weight: float = 1.0
    dropout: float | None = None
    average: float = 0.5
    augment: bool = True
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    context: int = 3
    normalize: str | None = None


def takes_train_config(func: F) -> F:
    """Let ``func`` (:func:`napari_xrayseg.train`, ``iter_train``) take ``config=TrainConfig(...)``.

    The fields where ``config`` differs from :class:`TrainConfig`'s defaults are passed as
    keywords; a keyword given explicitly wins over ``config``. Fields left at their defaults
    keep ``func``'s own defaults (``size=None`` and ``context=None`` pick the architecture's).
    Generator functions stay generator functions.
    """

    def options(kwargs: dict[str, Any]) -> dict[str, Any]:
        config = kwargs.pop("config", None)
        if config is None:
            return kwargs
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, not {type(config).__name__}")
        default = TrainConfig()
        changed = {f.name: getattr(config, f.name) for f in fields(TrainConfig)}
        return {**{k: v for k, v in changed.items() if v != getattr(default, k)}, **kwargs}

    return _with_keywords(func, options)
