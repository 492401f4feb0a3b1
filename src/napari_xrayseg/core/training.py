"""Train a 2D segmentation network from sparse annotations of a volume.

The labels volume is scanned a slab at a time for slices (along ``axis``) that hold
annotations (label 0 = not annotated; a slice may be partly painted).  Only those
image and label slices are loaded, normalised once with the percentile bounds that
are stored in the model (and applied identically at inference), and class-balanced
square patches are cut from them: a class is drawn uniformly, a crop is centred on a
random annotated pixel of that class, and MONAI dictionary transforms augment image
and labels together.  With ``context=k`` > 1 each annotated slice is loaded with its
``k // 2`` neighbours on each side (edge-replicated at the volume ends) as input
channels, cropped and augmented together.  The loss is masked: unannotated pixels add nothing to the
loss or its gradient.

A part of the annotated slices (or, with a single annotated slice, a band of its
annotated pixels) is held out; after every epoch it is segmented with the same
:class:`~napari_xrayseg.core.inference.SlicePredictor` that :func:`segment` uses and
scored with :func:`~napari_xrayseg.core.metrics.dice_per_class`.  The weights with
the best validation Dice are kept and returned.

``mode="pix2pix"`` trains the same network as the generator of a conditional GAN
(pix2pix: a PatchGAN discriminator judges (image, class map) pairs, on annotated
pixels only; see :class:`_Pix2PixStep`).  Both modes share this module's loop; only
the step applied to each batch differs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F

from .channels import ChannelStack
from .config import TrainConfig, python_numbers, takes_train_config
from .device import TORCH_GLOBAL_STATE, cpu_bf16_conv_faults, cpu_has_amx, resolve_device, resolve_precision
from .errors import Cancelled, InputError, OutputExistsError, OutputWriteError, TrainingInterrupted, XraysegError
from .io import as_input, read_block, volume_chunks, voxel_size_of
from .labels import ignore_index_hint, names_by_label, read_labels
from .level import LevelledView, level_hint, level_slices
from .models import (
    AUTO_3D_MINUTES,
    AUTO_ARCH,
    AUTO_START,
    LEVEL_FORMAT_VERSION,
    MAX_CONTEXT,
    PRETRAINED,
    RANDOM_START,
    TWO_D_FORMAT_VERSION,
    Model,
    ModelInfo,
    default_dropout,
    init_model,
    load_model,
    model_file_path,
    pretrained_path,
    read_model_info,
    reclass,
    save_model,
)
from .normalize import (
    apply_normalization,
    compute_normalization,
    dead_slices_missing,
    fill_missing,
    is_no_nodata,
    mark_missing,
    normalize_of,
    pooled_normalization,
    working_dtype,
)
from .output import Claim, check_not_input, check_writable, claim
from .plan import channel_grey_ranges, check_image, small_slices_message
from .predictor import SlicePredictor, model_digest
from .progress import CancelToken, Progress, ProgressCallback, check, drain, signals_cancel
from .said import first_time
from .tiling import context_range, normalize_axis, plan_slab_depth, slab_ranges, slab_slicer, stack_context
from .units import pick_voxel_size

__all__ = ["DEFAULT_EPOCHS", "LOSSES", "MODES", "SCHEDULES", "SegmentationLoss", "iter_train", "make_loss", "train"]

log = logging.getLogger(__name__)
_D = TrainConfig()
#: Epochs of a fine-tuning of the pretrained start when none are given (``minutes`` then only
#: caps them): on the hard benchmark 5 epochs scored above 10 minutes of fine-tuning (about 58
#: epochs), which scored below the start as it is (docs/accuracy.md, session 14).
PRETRAINED_EPOCHS = 5
#: With ``init="auto"`` and a time budget, the pretrained candidate may use at most this share of it.
AUTO_PRETRAINED_SHARE = 0.5
#: With ``init="auto"``: when the blend of the :data:`PRETRAINED_EPOCHS`-epoch fine-tuning keeps
#: little of the start (``a`` at least :data:`LONG_FINE_TUNING_FROM`: a material unlike the start's
#: family, such as a foam, a sphere pack, a rock with a minor phase, four phases), the start is
#: fine-tuned again for this many epochs and the better validated of the two is the pretrained
#: candidate (+0.008 to +0.013 on four such phantoms). On the hard family ``a`` is 0.15 (every
#: protocol seed and fresh volume), so nothing changes there (docs/accuracy.md, session 35).
LONG_PRETRAINED_EPOCHS = 20
#: The blend share from which the start is fine-tuned again (:data:`LONG_PRETRAINED_EPOCHS`).
LONG_FINE_TUNING_FROM = 0.7
#: After fine-tuning the pretrained start, the weights kept are ``a * fine-tuned + (1 - a) * start``
#: for the smallest ``a`` of these whose validation Dice is within :data:`START_BLEND_MARGIN` of
#: the best (1 = the fine-tuned weights as they are). A weight-space ensemble of a model and its
#: own fine-tuning (WiSE-FT, Wortsman et al. 2022): 3 slices teach their own noise, the start knows what it
#: learned from the full truth of many volumes, and the blend keeps both (docs/accuracy.md,
#: session 16). Without validation rows :data:`START_BLEND` is used. 0.15 since session 26: on six
#: fresh hard volumes it validated above 0.3 on every one, scored +0.0002 on the hard scan and
#: +0.0012 to +0.0015 on the second scan of each (docs/accuracy.md, session 26).
START_BLENDS = (0.15, 0.3, 0.5, 0.7, 1.0)
#: The shares tried when a model the user trained is blended back into after a round of training
#: on new slices (``blend=True`` with a model as ``init``; docs/annotate.md): the round's new
#: labels should count. Session 28 measured 0.15 too: 0.0001-0.0004 better where a round's slices
#: teach nothing new, 0.0012 worse where one lies in a region unlike the first slices (what the
#: loop suggests), which validation on the annotated rows did not see (docs/accuracy.md).
ROUND_BLENDS = (0.3, 0.5, 0.7, 1.0)
#: For the shipped start, the smallest share of :data:`START_BLENDS` whose validation Dice is
#: within this of the best is kept (a round's blend, :data:`ROUND_BLENDS`, keeps the best, a tie
#: the larger share). Validation on the few annotated slices separates the shares by a few
#: 1e-4, less than its own noise; where it chose 0.3 or 0.5 over 0.15 by at most 0.0005 on
#: fresh hard volumes, 0.15 scored the same or higher there and 0.0017 to 0.0049 higher on
#: each second scan (docs/accuracy.md, sessions 26 and 27).
START_BLEND_MARGIN = 0.001
#: The fine-tuned share kept when there are no validation rows to choose one by.
START_BLEND = 0.5

#: Loss names accepted by :func:`train`.
LOSSES = ("dicece", "ce", "dice", "dice_gamma")
#: Learning-rate schedules accepted by :func:`train`.
SCHEDULES = ("cosine", "step", "constant")
#: Training modes accepted by :func:`train`.
MODES = ("supervised", "pix2pix")
#: Input normalisations accepted by :func:`train`.
NORMALIZE = ("image", "fixed", "slice")
#: The last images :func:`level_hint` looked at (the candidates of ``init="auto"`` train on the same one).
_LEVEL_HINTED: list[weakref.ref] = []

#: Non-finite training steps in a row (each skipped) after which CPU bf16 is switched off for the run.
NONFINITE_FALLBACK = 3

#: Epochs run when neither ``epochs`` nor ``minutes`` is given.
DEFAULT_EPOCHS = 40
#: How far (validation Dice) a weight average may score below the best epoch before that
#: epoch's weights are kept instead: a guard against a run that diverged late, not a selection.
AVERAGE_TOLERANCE = 0.02

_IGNORE = -1  # class index of unannotated pixels in training targets
#: True: a volumetric network (``unet3d``) is scored on every annotated slice of the sub-volume
#: it computes, not only on its middle slice, where the context slices are annotated too
#: (:func:`_context_rows`). Off: continuing the pretrained start on the full truth of 60 new
#: volumes that way scored lower as it is than the same run on the middle slices, on every hard
#: volume and most on coarser scans (session 24, docs/accuracy.md). ``benchmarks/pretrain.py --dense``.
DENSE_CONTEXT = False
#: Slices within this many of a sub-volume's ends are not scored in dense training (its middle
#: slice always is): they see less context than the interior slices of inference do.
DENSE_MARGIN = 0
_MAX_COORDS = 1 << 20  # annotated pixel positions kept per class for patch centres
_EPS = 1e-5


# --------------------------------------------------------------------------- losses


class SegmentationLoss(torch.nn.Module):
    """Masked segmentation loss: pixels with target ``-1`` contribute nothing.

    Parameters
    ----------
    kind : str
        ``"dicece"`` (soft Dice + cross-entropy), ``"ce"``, ``"dice"`` or
        ``"dice_gamma"`` (``1 - (2 sum(p t) + eps) / (sum(p^gamma) + sum(t^gamma) + eps)``
        per class, averaged over classes).
    gamma : float
        Exponent of the Dice denominator terms for ``"dice_gamma"``.
    boundary_weight : float
        Weight of the cross-entropy of annotated pixels on an interface (a 4-neighbour
        annotated with another class) against 1 for the others; 1 (default) = plain
        cross-entropy. Only for ``"ce"`` and ``"dicece"``.

    Notes
    -----
    ``forward(logits, target)`` takes logits of shape (B, C, Y, X) and class indices
    of shape (B, Y, X) (int64, ``-1`` = not annotated).  Dice terms are summed over
    the whole batch (MONAI ``batch=True``) so classes missing from one patch do not
    make the loss noisy.
    """

    def __init__(self, kind: str = "dicece", gamma: float = 1.0, boundary_weight: float = 1.0) -> None:
        super().__init__()
        from monai.losses import MaskedDiceLoss

        if kind not in LOSSES:
            raise InputError(f"unknown loss {kind!r}: choose one of {list(LOSSES)}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 8:
            raise InputError(f"gamma {gamma!r} must be a number in (0, 8], e.g. 1.0")
        if (
            isinstance(boundary_weight, bool)
            or not isinstance(boundary_weight, (int, float))
            or not 0 < boundary_weight <= 100
        ):
            raise InputError(f"boundary_weight {boundary_weight!r} must be a number in (0, 100], e.g. 1 (off) or 3")
        self.kind = kind
        self.gamma = float(gamma)
        self.boundary_weight = float(boundary_weight)
        self.dice = MaskedDiceLoss(softmax=True, batch=True, include_background=True, smooth_nr=_EPS, smooth_dr=_EPS)
        self.ce = torch.nn.CrossEntropyLoss(ignore_index=_IGNORE)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss value (a scalar tensor) of ``logits`` against ``target``."""
        logits = logits.float()
        mask = target != _IGNORE
        if not bool(mask.any()):
            return logits.sum() * 0.0
        total = logits.new_zeros(())
        if self.kind in ("ce", "dicece"):
            total = total + (
                self.ce(logits, target) if self.boundary_weight == 1.0 else self._boundary_ce(logits, target)
            )
        if self.kind == "ce":
            return total
        onehot = F.one_hot(target.clamp(min=0), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
        m = mask[:, None].to(logits.dtype)
        if self.kind in ("dice", "dicece"):
            return total + self.dice(logits, onehot, m)
        # dice_gamma: clamp before the power so d(p^gamma)/dp stays finite for gamma < 1
        p = torch.softmax(logits, 1)
        t = onehot * m
        dims = (0, 2, 3)
        inter = (p * t).sum(dims)
        den = (p.clamp(min=1e-6).pow(self.gamma) * m).sum(dims) + t.sum(dims)  # t^gamma == t
        return (1.0 - (2.0 * inter + _EPS) / (den + _EPS)).mean()

    def _boundary_ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with annotated interface pixels weighted by ``boundary_weight``."""
        edge = torch.zeros_like(target, dtype=torch.bool)
        h, w = target.shape[-2:]
        for dy, dx in ((0, 1), (1, 0)):
            a, b = target[:, : h - dy, : w - dx], target[:, dy:, dx:]
            d = (a != b) & (a != _IGNORE) & (b != _IGNORE)
            edge[:, : h - dy, : w - dx] |= d
            edge[:, dy:, dx:] |= d
        weight = (target != _IGNORE).to(logits.dtype)
        weight = torch.where(edge, weight * self.boundary_weight, weight)
        ce = F.cross_entropy(logits, target.clamp(min=0), reduction="none")
        return (ce * weight).sum() / weight.sum()


def make_loss(loss: str = _D.loss, gamma: float = _D.gamma, boundary_weight: float = 1.0) -> SegmentationLoss:
    """Build the masked training loss by name.

    Parameters
    ----------
    loss : str
        One of :data:`LOSSES`.
    gamma : float
        Dice denominator exponent (``"dice_gamma"`` only).
    boundary_weight : float
        Cross-entropy weight of annotated interface pixels (1 = off; see :class:`SegmentationLoss`).

    Returns
    -------
    SegmentationLoss
        Called as ``loss(logits, target)`` with ``target`` = class index, -1 = ignored.

    Raises
    ------
    InputError
        For an unknown loss name or a bad ``gamma``.

    Examples
    --------
    >>> fn = make_loss("ce")
    >>> target = torch.full((1, 4, 4), -1)
    >>> target[0, 0, 0] = 1
    >>> round(float(fn(torch.zeros(1, 3, 4, 4), target)), 4)  # log(3): only one pixel counts
    1.0986
    """
    return SegmentationLoss(loss, gamma, boundary_weight)


# --------------------------------------------------------------------------- step functions
#
# :func:`iter_train` runs one loop for every training mode: patch sampling, learning-rate
# schedule, progress, cancel, time budget, validation, best-model keeping and saving.  What
# happens to one batch is a *step function*: an object with ``train()`` (switch its
# networks to training mode), ``set_lr(lr)`` and ``__call__(x, y) -> dict[str, float]``
# (one optimiser step; ``"loss"`` is the segmentation loss shown in progress and history,
# any other keys are averaged per epoch into the history record too).


class _SupervisedStep:
    """Plain supervised step: masked loss, backward, Adam step (mixed precision unless ``precision`` is fp32)."""

    def __init__(
        self,
        net: torch.nn.Module,
        loss_fn: SegmentationLoss,
        lr: float,
        device: torch.device,
        betas: tuple[float, float] = (0.9, 0.999),
        precision: str = "fp32",
    ) -> None:
        self.net, self.loss_fn = net, loss_fn
        self.opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas)
        # mixed precision unless fp32 is asked for; on CPU bf16 where it is native
        # (AMX: 2x the steps of fp32 for unet3d, docs/performance.md); weights stay fp32
        self.device_type = device.type
        self.use_amp = precision in ("bf16", "fp16") and device.type in ("cuda", "cpu")
        self.amp_dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp and self.amp_dtype == torch.float16 else None
        self.skipped = 0  # optimiser steps skipped for a non-finite loss or gradient
        self.fell_back = False  # CPU bf16 switched off after NONFINITE_FALLBACK such steps in a row
        self.fp32_depths: list[int] = []  # a volumetric network's depths trained in fp32 (_check_cpu_bf16)
        self.failed_check: str | None = None  # the convolution whose CPU bf16 gradient failed, if any
        self._in_row = 0
        self._stats: list[torch.Tensor] = []
        self._bufs: list[torch.Tensor] = []

    def train(self) -> None:
        self.net.train()

    def _snapshot(self, *nets: torch.nn.Module) -> None:
        """Keep batch norm's running statistics, to put back if this step turns out non-finite."""
        bufs = [b for n in nets for b in n.buffers() if b.is_floating_point()]
        self._stats = [b.detach().clone() for b in bufs]
        self._bufs = bufs

    def _finite(self, value: torch.Tensor, opt: torch.optim.Optimizer) -> bool:
        """Whether ``value`` and the gradients are finite; if not, drop the gradients and restore the statistics.

        A guard, as CUDA's loss scaler has one: bf16 on some CPUs gave a non-finite loss within
        a few hundred steps (torch 2.13, AMD EPYC with AVX512-BF16, docs/train.md), and one such
        update ruins the weights. The step is skipped and counted; after
        :data:`NONFINITE_FALLBACK` in a row, CPU bf16 is switched off for the rest of the run.
        """
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        total = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if bool(torch.isfinite(value.detach()).all()) and bool(torch.isfinite(total)):
            self._in_row = 0
            return True
        opt.zero_grad(set_to_none=True)
        for b, s in zip(self._bufs, self._stats):
            b.copy_(s)
        self.skipped += 1
        self._in_row += 1
        log.warning("skipped a training step with a non-finite loss or gradient (%d so far)", self.skipped)
        if self.use_amp and self.device_type == "cpu" and self._in_row >= NONFINITE_FALLBACK:
            self.use_amp, self.fell_back = False, True
            log.warning("%d non-finite steps in a row under CPU bf16: training on in fp32", self._in_row)
        return False

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def _run(self, net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.use_amp:
            with torch.autocast(self.device_type, dtype=self.amp_dtype):
                return net(x).float()  # the loss in fp32
        return net(x)

    def _dense(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A volumetric net's scores of every slice of its sub-volume and their targets, as a batch of slices.

        ``y`` holds the targets of all ``k`` context slices ((B, k, Y, X), -1 = not annotated).
        """
        lo = [0]

        def run(v: torch.Tensor) -> torch.Tensor:
            scores, lo[0] = self.net.forward_dense(v)  # type: ignore[operator]
            return scores

        scores = self._run(run, x)  # (B, C, d, Y, X)
        d = scores.shape[2]
        flat = scores.permute(0, 2, 1, 3, 4).reshape(-1, scores.shape[1], *scores.shape[3:])
        y = y[:, lo[0] : lo[0] + d]
        m = min(DENSE_MARGIN, (d - 1) // 2)
        if m > 0:  # slices within m of the sub-volume's ends are not scored, its middle slice always is
            h = x.shape[1] // 2 - lo[0]
            keep = torch.zeros(d, dtype=torch.bool, device=y.device)
            keep[m : d - m] = True
            keep[h] = True
            y = torch.where(keep[None, :, None, None], y, torch.full_like(y, _IGNORE))
        return flat, y.reshape(-1, *y.shape[2:])

    def _scores(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's scores for a batch and the targets they answer to (dense for (B, k, Y, X) targets)."""
        if y.ndim == 4:
            return self._dense(x, y)
        return self._run(self.net, x), y

    def _minimise(self, value: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        if self.scaler is not None:  # it skips non-finite steps itself
            self.scaler.scale(value).backward()
            self.scaler.step(opt)
        else:
            value.backward()
            if self._finite(value, opt):
                opt.step()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        self._snapshot(self.net)
        value = self.loss_fn(*self._scores(x, y))
        self._minimise(value, self.opt)
        if self.scaler is not None:
            self.scaler.update()
        return {"loss": float(value.detach())}


_D_LR = 0.1  # pix2pix: discriminator learning rate / generator learning rate
# pix2pix: discriminator width (first layer; doubled per layer). pix2pix uses 64, which on a
# 128-pixel patch costs 1.5 GFLOP per forward pass, ~4x a medium U-Net's; a step runs D about
# 7 times (forward and backward), so training would be ~10x slower than supervised. 16 costs
# 0.1 GFLOP (176 k parameters): a pix2pix step is then about 2x a supervised one.
_D_CHANNELS = 16


def _discriminator_layers(patch: int) -> int:
    """Strided layers of the PatchGAN: 3 (pix2pix's 70x70 receptive field) from 64-pixel patches."""
    return 3 if patch >= 64 else 2 if patch >= 16 else 1


def _patch_discriminator(in_channels: int, patch: int, channels: int = _D_CHANNELS) -> torch.nn.Module:
    """MONAI's PatchDiscriminator laid out as pix2pix's (4x4 convs, batch norm, LeakyReLU 0.2).

    ``channels`` in the first layer, doubled per layer (pix2pix: C64-C128-C256-C512).
    """
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(
        spatial_dims=2,
        channels=channels,
        in_channels=in_channels,
        out_channels=1,
        num_layers_d=_discriminator_layers(patch),
        norm="BATCH",
    )


class _Pix2PixStep(_SupervisedStep):
    """Conditional-GAN (pix2pix) step: the segmentation network is the generator.

    The generator ``G`` (any registered architecture) maps an image patch ``x`` (its
    context slices as channels) to class logits.  A PatchGAN discriminator ``D``
    (:class:`monai.networks.nets.PatchDiscriminator`, pix2pix's 70x70 design at a
    quarter of its width, C16-C32-C64-C128, to keep CPU training affordable; fewer
    layers for patches under 64 pixels) scores overlapping patches of the pair
    ``(x, class map)`` as real or generated: the class map is the one-hot annotation for
    real pairs and ``softmax(G(x))`` for generated ones.  Losses are least squares
    (LSGAN): ``D`` minimises ``((D(real) - 1)^2 + D(fake)^2) / 2`` and ``G`` minimises
    ``(D(fake) - 1)^2 + pixel_weight * seg_loss``, with ``seg_loss`` the masked
    segmentation loss of supervised training (pix2pix's lambda-weighted L1 term).
    Both use Adam with pix2pix's ``betas=(0.5, 0.999)``; ``D`` and ``G`` step once each
    per batch, D first.  ``D`` learns at a tenth of the generator's (scheduled) rate:
    3e-4 at the default ``lr=3e-3``, close to pix2pix's 2e-4 (in a small test at the full
    rate, ``D``'s loss fell to ~0.05 within an epoch and stayed there).

    Sparse labels (0 = not annotated) are handled in three places:

    * the pixel loss ignores unannotated pixels (as in supervised training);
    * both class maps are multiplied by the annotation mask before ``D`` sees them, so
      real and generated pairs are identical (image + zeros) wherever nothing is
      annotated: ``D`` cannot tell them apart there, and ``G`` gets no adversarial
      gradient from those pixels (the product's derivative is 0).  The mask is the same
      in both pairs, so its shape carries no real-vs-fake signal;
    * each cell of ``D``'s output map is weighted by the annotated fraction of the
      patch area it covers (the mask average-pooled to the output grid), so cells that
      see no annotation (where the task is unanswerable) add nothing to either loss,
      and partly annotated cells count in proportion.

    Only the generator is kept: the best-validation weights are the generator's and the
    saved model is an ordinary segmentation model (``info.train["mode"] == "pix2pix"``).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        loss_fn: SegmentationLoss,
        lr: float,
        device: torch.device,
        *,
        in_channels: int,
        n_classes: int,
        patch: int,
        pixel_weight: float,
        seed: int,
        precision: str = "fp32",
    ) -> None:
        super().__init__(net, loss_fn, lr, device, betas=(0.5, 0.999), precision=precision)
        self.n_classes, self.pixel_weight = n_classes, float(pixel_weight)
        with TORCH_GLOBAL_STATE, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.disc = _patch_discriminator(in_channels + n_classes, patch).to(device)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=lr * _D_LR, betas=(0.5, 0.999))

    def train(self) -> None:
        self.net.train()
        self.disc.train()

    def set_lr(self, lr: float) -> None:
        for opt, f in ((self.opt, 1.0), (self.opt_d, _D_LR)):
            for g in opt.param_groups:
                g["lr"] = lr * f

    def _judge(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        # MONAI's PatchDiscriminator returns its list of feature maps, the last is the score map
        return self._run(lambda v: self.disc(v)[-1], torch.cat([x.to(classes.dtype), classes], 1)).float()

    @staticmethod
    def _ls(score: torch.Tensor, target: float, w: torch.Tensor) -> torch.Tensor:
        return ((score - target) ** 2 * w).sum() / w.sum().clamp(min=_EPS)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self._snapshot(self.net, self.disc)
        m = (y != _IGNORE)[:, None].float()
        real = F.one_hot(y.clamp(min=0), self.n_classes).permute(0, 3, 1, 2).float() * m
        logits = self._run(self.net, x)
        fake = torch.softmax(logits.float(), 1) * m
        # discriminator step: real pairs -> 1, generated pairs -> 0
        self.opt_d.zero_grad(set_to_none=True)
        d_real = self._judge(x, real)
        w = F.adaptive_avg_pool2d(m, d_real.shape[-2:])  # annotated fraction under each output cell
        loss_d = 0.5 * (self._ls(d_real, 1.0, w) + self._ls(self._judge(x, fake.detach()), 0.0, w))
        self._minimise(loss_d, self.opt_d)
        # generator step: fool D, and fit the annotations
        self.opt.zero_grad(set_to_none=True)
        self.disc.requires_grad_(False)
        try:
            adv = self._ls(self._judge(x, fake), 1.0, w)
        finally:
            self.disc.requires_grad_(True)
        pix = self.loss_fn(logits, y)
        self._minimise(adv + self.pixel_weight * pix, self.opt)
        if self.scaler is not None:
            self.scaler.update()
        return {"loss": float(pix.detach()), "loss_adv": float(adv.detach()), "loss_d": float(loss_d.detach())}


# --------------------------------------------------------------------------- data


def _check_positive_int(name: str, v: Any, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise InputError(f"{name} {v!r} must be an integer >= {lo}")
    return int(v)


def _annotated_slices(
    image: Any,
    labels: Any,
    axis: int,
    is2d: bool,
    cancel: CancelToken | None,
    context: int = 1,
    limit: int | None = None,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Scan ``labels`` a slab at a time; load the annotated slices of image and labels.

    Returns the slice indices, the image slices with their context (float32,
    (N, context, Y, X); neighbours beyond the volume ends replicated, as at inference)
    and the label slices (uint8, (N, Y, X)). With ``limit``, at most that many slices,
    evenly spread over those annotated.
    """
    if is2d:
        # a copy, never a view: nothing downstream may write into the caller's labels
        lab = read_labels(labels, ..., where="2D labels", max_value=255).copy()
        if not lab.any():
            return [], np.zeros((0, context, *lab.shape), np.float32), lab[None][:0]
        img = read_block(image, ...).astype(working_dtype(image.dtype))  # narrowed after the normalisation
        return [0], np.ascontiguousarray(stack_context(img[None], context)), lab[None]
    shape = tuple(int(s) for s in labels.shape)
    depth = plan_slab_depth(shape, axis, volume_chunks(labels), None, itemsize=1)
    other = tuple(d for d in range(3) if d != axis)
    found: list[int] = []
    labs: list[np.ndarray] = []
    for start, stop in slab_ranges(shape[axis], depth):
        check(cancel)
        where = f"slices {start}..{stop - 1} along axis {axis}"
        slab = read_labels(labels, slab_slicer(axis, start, stop, 3), where=where, max_value=255)
        hit = np.flatnonzero(slab.any(axis=other))
        for j in hit:
            found.append(start + int(j))
            labs.append(np.ascontiguousarray(np.take(slab, int(j), axis=axis)))
    if not found:
        return [], np.zeros((0,), np.float32), np.zeros((0,), np.uint8)
    if limit is not None and len(found) > limit:
        keep = np.unique(np.linspace(0, len(found) - 1, limit).round().astype(int))
        found, labs = [found[i] for i in keep], [labs[i] for i in keep]
    imgs = []
    for i in found:
        check(cancel)
        lo, hi = context_range(i, i + 1, context, shape[axis])
        ext = read_block(image, slab_slicer(axis, lo, hi, 3), what=f"image (slices {lo}..{hi - 1} along axis {axis})")
        ext = np.moveaxis(ext.astype(working_dtype(ext.dtype), copy=False), axis, 0)
        j = i - lo
        imgs.append(stack_context(ext[j : j + 1], context, before=ext[:j], after=ext[j + 1 :])[0])
    return found, np.stack(imgs), np.stack(labs)


def _orthogonal_slices(
    image: Any,
    labels: Any,
    axes: list[int],
    imgs: np.ndarray,
    labs: np.ndarray,
    cancel: CancelToken | None,
    context: int,
) -> tuple[np.ndarray, np.ndarray, dict[int, int], list[tuple[int, int]]]:
    """Add annotated slices along further ``axes`` to the training slices (isotropic volumes).

    Sparse annotations on xy slices show up as annotated rows of xz and yz slices; the
    masked loss learns from those rows, so the network also sees the volume sideways,
    as an orthoplane ensemble will at inference. At most ``max(8, 4 x N)`` slices are
    taken per extra axis (N = slices along the main axis), evenly spread, to bound
    memory. Slices of other shapes are padded to a common one (image edge-replicated,
    labels 0 = not annotated, so padding never teaches anything).
    """
    limit = max(8, 4 * len(labs))
    parts_i, parts_l, counts = [imgs], [labs], {}
    where: list[tuple[int, int]] = []  # (axis, index) of each row added
    for a in axes:
        found, im, lb = _annotated_slices(image, labels, a, False, cancel, context, limit=limit)
        counts[a] = len(found)
        if found:
            parts_i.append(im)
            parts_l.append(lb)
            where += [(a, int(j)) for j in found]
    h = max(p.shape[-2] for p in parts_l)
    w = max(p.shape[-1] for p in parts_l)

    def pad(a: np.ndarray, mode: str) -> np.ndarray:
        widths = ((0, 0),) * (a.ndim - 2) + ((0, h - a.shape[-2]), (0, w - a.shape[-1]))
        return np.pad(a, widths, mode=mode) if any(p for pp in widths for p in pp) else a  # type: ignore[call-overload]

    return (
        np.concatenate([pad(p, "edge") for p in parts_i]),
        np.concatenate([pad(p, "constant") for p in parts_l]),
        counts,
        where,
    )


def _crop(a: np.ndarray, cy: int, cx: int, size: int, mode: str) -> np.ndarray:
    """``size``-square crop of ``a``'s last two axes centred at (cy, cx), padded by ``mode``.

    Leading axes (context channels) are kept whole.
    """
    y0, x0 = cy - size // 2, cx - size // 2
    y1, x1 = y0 + size, x0 + size
    H, W = a.shape[-2:]
    c = a[..., max(y0, 0) : min(y1, H), max(x0, 0) : min(x1, W)]
    pads = ((0, 0),) * (a.ndim - 2) + ((max(0, -y0), max(0, y1 - H)), (max(0, -x0), max(0, x1 - W)))
    if any(p for pp in pads for p in pp):
        if mode == "reflect" and min(c.shape[-2:]) < 2:
            mode = "edge"
        c = np.pad(c, pads, mode=mode)  # type: ignore[call-overload]
    return c


class _PatchSampler:
    """Class-balanced patches of the training slices, optionally augmented with MONAI.

    ``images`` has shape (N, k, Y, X) (k context slices as channels, cropped and
    augmented together), ``targets`` (N, Y, X). With ``context_rows`` ((N, k) row indices
    into ``targets``, -1 = that context slice is not annotated), a patch's target is the
    (k, Y, X) stack of its context slices' targets (dense 3D supervision, :func:`_context_rows`).
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        n_classes: int,
        patch: int,
        augment: bool,
        seed: int,
        exposure: bool = False,
        context_rows: np.ndarray | None = None,
    ) -> None:
        self.images, self.targets, self.patch = images, targets, patch
        self.context_rows = context_rows
        self.rng = np.random.default_rng(seed)
        self.coords: dict[int, np.ndarray] = {}
        plane = targets.shape[1] * targets.shape[2]
        for c in range(n_classes):
            flat = np.flatnonzero(targets.reshape(-1) == c)
            if flat.size > _MAX_COORDS:
                flat = np.sort(self.rng.choice(flat, _MAX_COORDS, replace=False))
            if flat.size:
                self.coords[c] = flat
        self.available = sorted(self.coords)
        self.plane, self.width = plane, targets.shape[2]
        # crop a margin around the patch so rotations and zooms see real neighbours, not padding
        self.margin = patch // 4 if augment else 0
        self.transform = _augmentation(patch, seed, exposure) if augment else None

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.available[int(self.rng.integers(len(self.available)))]
        pos = int(self.coords[c][int(self.rng.integers(self.coords[c].size))])
        s, rest = divmod(pos, self.plane)
        cy, cx = divmod(rest, self.width)
        size = self.patch + 2 * self.margin
        img = _crop(self.images[s], cy, cx, size, "reflect")
        if self.context_rows is None:
            tgt = _crop(self.targets[s], cy, cx, size, "reflect")[None]
        else:
            rows = self.context_rows[s]
            tgt = np.full((rows.size, size, size), _IGNORE, self.targets.dtype)
            for j in np.flatnonzero(rows >= 0):
                tgt[j] = _crop(self.targets[rows[j]], cy, cx, size, "reflect")
        if self.transform is None:
            tgt = tgt.astype(np.int64)
            return img, tgt if self.context_rows is not None else tgt[0]
        # labels travel as float "index + 1" so affine zero padding reads as "not annotated"
        d = self.transform(
            {
                "image": torch.from_numpy(np.ascontiguousarray(img)),
                "label": torch.from_numpy((tgt + 1).astype(np.float32)),
            }
        )
        img = torch.as_tensor(d["image"]).numpy().astype(np.float32, copy=False)
        tgt = torch.as_tensor(d["label"]).numpy().round().astype(np.int64) - 1
        return img, tgt if self.context_rows is not None else tgt[0]

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is None:
            pairs = [self.sample() for _ in range(n)]
        else:
            from monai.data import get_track_meta, set_track_meta

            # MONAI's metadata tracking triples the cost of a small transform; it is a
            # module-wide switch, so it is turned off only while the batch is made (and
            # another training's batch waits: it would switch it back mid-transform).
            with TORCH_GLOBAL_STATE:
                prev = get_track_meta()
                set_track_meta(False)
                try:
                    pairs = [self.sample() for _ in range(n)]
                finally:
                    set_track_meta(prev)
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))
        return x, y


def _augmentation(patch: int, seed: int, exposure: bool = False) -> Any:
    """MONAI dictionary transforms for (image, label) pairs; seeded, no global state.

    ``exposure`` (independent 2D images) adds a random gamma to half of the patches: every
    radiograph has its own exposure curve, which per-image percentile bounds do not undo.
    """
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandRotate90d,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ("image", "label")
    # Exact geometric changes (flips, 90° turns) on every patch; resampling and intensity
    # changes only now and then: interpolation smooths the noise and shifts boundaries,
    # which costs accuracy on boundary voxels when overdone.
    t = Compose(
        [
            # always resamples: the margin crop is cut to the patch (identity when not drawn)
            RandAffined(
                keys,
                prob=0.25,
                rotate_range=(math.pi / 12,),
                scale_range=((-0.1, 0.1),) * 2,
                spatial_size=(patch, patch),
                mode=("bilinear", "nearest"),
                padding_mode=("reflection", "zeros"),
                lazy=False,
            ),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandRotate90d(keys, prob=0.75, max_k=3),
            RandScaleIntensityd("image", factors=0.1, prob=0.25),
            RandShiftIntensityd("image", offsets=0.05, prob=0.25),
            RandGaussianNoised("image", prob=0.15, std=0.03),
            RandGaussianSmoothd("image", sigma_x=(0.25, 0.75), sigma_y=(0.25, 0.75), prob=0.1),
            *([RandAdjustContrastd("image", prob=0.5, gamma=(0.7, 1.5))] if exposure else []),
        ],
        lazy=False,
    )
    t.set_random_state(seed=seed)
    return t


#: Draws of a validation band before training goes without validation (each must leave every class pixels).
BLOCK_DRAWS = 20

#: Fewest annotated slices (along the main axis) from which whole slices are held out for
#: validation; with fewer, a band of each slice is held out instead, so that every painted
#: slice teaches the network (holding out one of three slices throws away a third of the
#: annotation and scores the model on a single slice).
MIN_SLICES_HELD_OUT = 5


def _split(
    labs: np.ndarray,
    val_fraction: float,
    classes: list[int],
    rng: np.random.Generator,
    n_main: int | None = None,
    learned: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Choose held-out data: (held-out slices (N,), held-out pixels (N, Y, X), kind).

    ``kind`` is ``"slices"`` (whole slices, chosen so every class keeps training
    pixels; only with at least :data:`MIN_SLICES_HELD_OUT` slices along the main axis,
    the first ``n_main`` of ``labs``), ``"block"`` (a band of rows of each slice's
    annotated pixels) or ``"none"``. Slices the start model already learned from
    (``learned``, (n_main,) bool: a fine-tuning on the same image) are held out only
    where too few others are: they flatter the start and the blend that keeps it.
    """
    n = labs.shape[0]
    n_main = n if n_main is None else n_main
    none = np.zeros(n, bool), np.zeros(labs.shape, bool)
    if val_fraction <= 0:
        return *none, "none"
    if n_main >= MIN_SLICES_HELD_OUT:
        want = min(n_main - 1, max(1, int(round(val_fraction * n_main))))
        present = np.stack([[(labs[i] == c).any() for c in classes] for i in range(n)])  # (N, C)
        left = present.sum(0)
        chosen = []
        sizes = (labs[:n_main] > 0).reshape(n_main, -1).sum(1)
        cap, held = 2 * val_fraction * sizes.sum(), 0  # of the painted pixels: a scribbled slice is not lost whole
        order = rng.permutation(n_main)
        if learned is not None and learned.any():  # the same draw, the slices new to the start first
            order = np.concatenate([order[~learned[order]], order[learned[order]]])
        for i in order:
            if len(chosen) == want:
                break
            if np.all(left - present[i] > 0) and held + sizes[i] <= cap:  # every class keeps training pixels
                chosen.append(int(i))
                left = left - present[i]
                held += sizes[i]
        if chosen:
            sl = np.zeros(n, bool)
            sl[chosen] = True
            return sl, sl[:, None, None] & (labs > 0), "slices"
    # few slices (or no slice can go without losing a class): a band of rows of each slice
    painted = labs > 0
    for _ in range(BLOCK_DRAWS):  # a band that takes a class's every pixel (one stroke per class) is drawn again
        px = np.zeros(labs.shape, bool)
        for i in range(n_main):  # rows along other axes (axes="zyx") keep every pixel: they are masked instead
            rows = painted[i].sum(1)
            q = rng.uniform(0, 1 - val_fraction)  # drawn for every slice: the same draws as before
            total = rows.sum()
            if not total:  # its annotations all lay on voxels without data: nothing to hold out
                continue
            cum = np.cumsum(rows) / total
            band = (cum > q) & (cum - rows / total < q + val_fraction)
            px[i] = band[:, None] & painted[i]
        kept = labs[painted & ~px]
        if all((kept == c).any() for c in classes):
            return np.zeros(n, bool), px, "block"
    log.warning(
        "no band of rows can be held out for validation without taking all of a class's annotated pixels: "
        "training without validation (paint each class in more places to have it)"
    )
    return *none, "none"


def _mask_held_out_across(
    labs: np.ndarray,
    val_sl: np.ndarray,
    val_px: np.ndarray,
    ids: list[tuple[int, int]],
    extra: list[tuple[int, int, int]],
    axis: int,
    shapes: list[tuple[int, ...]],
) -> None:
    """Unannotate (0), in the rows along other axes, the voxels held out for validation in main-axis rows.

    A voxel of a held-out slice (or band) is also a pixel of the xz and yz slices through it: left
    annotated there, the network trained on the voxels it was validated on (6144 such pixels for a
    48-cube with 2 held-out slices, a QA run), and the validation Dice it chose by was flattered.
    ``labs`` holds the main rows (``ids``, (pair, slice)) then the ``extra`` rows ((pair, axis, slice)),
    padded at the end; it is changed in place.
    """
    n_main = len(ids)
    row_of = {key: r for r, key in enumerate(ids)}
    main_dims = [d for d in range(3) if d != axis]
    for k, (p, a, j) in enumerate(extra):
        r_extra = n_main + k
        dims = [d for d in range(3) if d != a]  # the extra row's (row, column) axes of the volume
        pos = dims.index(axis)  # which of them runs along the main axis
        q = dims[1 - pos]  # the other: the same axis in the main rows
        for i in range(min(shapes[p][axis], labs.shape[1 + pos])):
            r = row_of.get((p, i))
            if r is None:
                continue
            if val_sl[r]:
                line = np.ones(shapes[p][q], bool)
            else:  # a band: main row i's pixels at index j along a
                m = val_px[r][: shapes[p][main_dims[0]], : shapes[p][main_dims[1]]]
                line = m[j, :] if main_dims.index(a) == 0 else m[:, j]
            if not line.any():
                continue
            if pos == 0:
                labs[r_extra, i, : line.size][line] = 0
            else:
                labs[r_extra, : line.size, i][line] = 0


def _context_rows(ids: list[tuple[int, int]], train: np.ndarray, context: int) -> np.ndarray | None:
    """For each training row, the training rows of its context slices ((N_train, k), -1 = none); None if none has one.

    A volumetric network computes every slice of its sub-volume, so where the neighbours of
    an annotated slice are annotated too (a painted block of slices, or labels of a whole
    volume, as in pretraining) each of them is scored as well: ``k`` times the supervision for the same
    forward pass. Rows held out for validation are never a target (their context entries are
    -1), and rows along other axes (``train`` past ``len(ids)``) have only themselves.
    """
    h = context // 2
    pos = np.cumsum(train) - 1  # row -> its index among the training rows
    where = {key: int(pos[r]) for r, key in enumerate(ids) if train[r]}
    out = np.full((int(train.sum()), context), -1, np.int32)
    out[:, h] = np.arange(out.shape[0])
    for (p, i), r in where.items():
        for j in range(context):
            out[r, j] = where.get((p, i + j - h), -1)
    return out if (out >= 0).sum() > out.shape[0] else None


# --------------------------------------------------------------------------- helpers


def _out_claim(out: str | os.PathLike | None, overwrite: bool, start: Any = None) -> Claim | None:
    """The model file to write (``.safetensors`` added), claimed before any work; never the ``start`` model's file.

    The claim's lock is taken by :func:`_holding` for the training: a second run to the same file
    is refused at its start (two ``--overwrite`` runs both trained and reported success, the last
    one's model kept; QA).
    """
    if out is None:
        return None
    p = model_file_path(out)
    begun = start if isinstance(start, (str, os.PathLike)) else getattr(start, "path", None)
    if begun is not None and not (isinstance(begun, str) and begun in _STARTS):  # train --init X --out X
        check_not_input(p, [begun], option="--out")
    c = claim(p, overwrite=overwrite, what="model file")  # exists? (the model is written by save_model at the end)
    check_writable(p, "model file")  # before training, not after it: a run must not end with nowhere to save
    return c


@contextmanager
def _holding(c: Claim | None) -> Iterator[None]:
    """Hold the model file's lock while the block trains; let go of it however the block ends."""
    if c is None:
        yield
        return
    c.lock()
    try:
        yield
    finally:
        c.release()


def _save_out(model: Model, c: Claim | None, overwrite: bool) -> None:
    """Save a trained model to its claimed file (the lock let go of first: the file is written as any other).

    Raises
    ------
    OutputWriteError, OutputExistsError
        Carrying the model as ``.result`` (a full disk; another job took the path): the caller rescues it.
    """
    if c is None:
        return
    c.release()
    try:
        save_model(model, c.final, overwrite=overwrite)
    except (OutputWriteError, OutputExistsError) as e:
        e.result = model  # type: ignore[attr-defined]  # the trained model rides on the error
        raise


def _start_model(
    init: Model | str | os.PathLike | None,
    arch: str,
    size: str | None,
    classes: list[int],
    seed: int,
    device: torch.device,
    context: int = 1,
    channels: int = 1,
    dropout: float | None = None,
    grey: list[float] | None = None,
    votes: np.ndarray | None = None,
) -> Model:
    if init is None:
        size = size or (_D.size if arch == "unet" else None)  # others: their own default preset
        return init_model(
            arch,
            size=size,
            classes=classes,
            seed=seed,
            context=context,
            channels=channels,
            dropout=default_dropout(arch, size) if dropout is None else dropout,
        )
    if init == PRETRAINED:
        return _pretrained_start(classes, grey, context, channels, dropout, votes)
    if isinstance(init, (str, os.PathLike)):
        base = load_model(init, device="cpu")
    elif isinstance(init, Model):
        base = init
    else:
        raise InputError(f"init must be a Model or a model file path, not {type(init).__name__}")
    if list(base.info.classes) != list(classes):
        raise InputError(
            f"init model has classes {list(base.info.classes)} but the labels annotate classes "
            f"{classes}: paint the same classes or train a new model (init=None, --init random)"
        )
    if base.info.channels != channels:
        raise InputError(
            f"init model takes {base.info.channels} image channel(s) but the images have {channels}: "
            "give images with the model's channels or train a new model"
        )
    if base.info.context != context:
        raise InputError(
            f"init model takes {base.info.context} context slice(s) per slice but training was asked "
            f"for context={context}: pass context={base.info.context} (--context {base.info.context}) or train a "
            "new model"
        )
    has = base.info.params.get("dropout")
    if dropout is not None and has is not None and float(has) != dropout:
        raise InputError(
            f"dropout {dropout} was asked for, but the init model was built with dropout {has}: "
            "leave dropout unset to keep the model's, or train a new model (init=None, --init random)"
        )
    info = copy.deepcopy(base.info)
    info.history, info.train = [], {}
    return Model(copy.deepcopy(base.network).cpu(), info)


#: At most this many annotated slices, a crop of at most this side each, are segmented by the
#: pretrained start to group its classes into fewer annotated ones (:func:`_start_votes`).
VOTE_SLICES, VOTE_SIDE = 8, 192


def _start_votes(x: np.ndarray, labs: np.ndarray, classes: list[int]) -> np.ndarray | None:
    """``votes[c][j]``: annotated voxels of ``classes[j]`` the pretrained start calls its class ``c``.

    Only where the annotations have fewer classes than the start (``models.class_groups``), from
    the start's middle-slice scores on up to :data:`VOTE_SLICES` annotated slices (normalised
    context stacks ``x``, labels ``labs``), each cropped to at most :data:`VOTE_SIDE` pixels a side
    around its annotations: a second or two on a CPU. None elsewhere.
    """
    info = read_model_info(pretrained_path())  # the header alone: most trainings stop here
    fits = x.ndim == 4 and x.shape[1] == info.context and min(x.shape[-2:]) >= info.stride
    if len(classes) >= len(info.classes) or not fits:
        return None
    start, k = load_model(pretrained_path(), device="cpu"), len(info.classes)
    net, side = start.network.eval(), VOTE_SIDE - VOTE_SIDE % start.info.stride
    lut = np.full(256, -1, np.int64)
    lut[classes] = np.arange(len(classes))
    votes = np.zeros((k, len(classes)), np.int64)
    rows = [i for i in range(len(x)) if labs[i].any()]
    for i in rows[:: max(1, -(-len(rows) // VOTE_SLICES))]:
        ys, xs = np.nonzero(labs[i])
        box = []
        for centre, n in ((int(ys.mean()), x.shape[-2]), (int(xs.mean()), x.shape[-1])):
            w = min(side, n - n % start.info.stride) if n >= start.info.stride else n
            lo = min(max(0, centre - w // 2), n - w)
            box.append(slice(lo, lo + w))
        with torch.inference_mode():
            pred = net(torch.from_numpy(np.ascontiguousarray(x[i][:, box[0], box[1]]))[None].float())[0].argmax(0)
        j = lut[labs[i][box[0], box[1]]]
        ok = j >= 0
        np.add.at(votes, (pred.numpy()[ok], j[ok]), 1)
    return votes


def _start_digest(init: Any) -> str | None:
    """:func:`~.predictor.model_digest` of the start ``init`` as it is stored, or None where it is no model.

    Before its head is matched to the data's classes (review s45: the digest of the reclassed start
    named no file).
    """
    if isinstance(init, Model):
        return model_digest(init)
    if isinstance(init, str) and init == PRETRAINED:
        init = pretrained_path()
    elif isinstance(init, str) and init in _STARTS:
        return None
    p = Path(init)
    st = p.stat()
    return _file_digest(str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    """The digest of the model in ``path`` (cached while the file is unchanged: init="auto" asks per candidate)."""
    return model_digest(load_model(path, device="cpu"))


def _pretrained_start(
    classes: list[int],
    grey: list[float] | None,
    context: int,
    channels: int,
    dropout: float | None,
    votes: np.ndarray | None = None,
) -> Model:
    """The shipped pretrained start, its outputs matched to ``classes`` (:func:`models.reclass`)."""
    base = load_model(pretrained_path(), device="cpu")
    if channels != 1:
        raise InputError(
            f"the pretrained start takes single-channel images but the images have {channels} channels: "
            "train from a random start (init=None, --init random)"
        )
    if context != base.info.context:
        raise InputError(
            f"the pretrained start takes context {base.info.context} but training was asked for "
            f"context={context}: leave context unset, or train from a random start (init=None, --init random)"
        )
    if dropout not in (None, base.info.params.get("dropout")):
        raise InputError(f"the pretrained start has dropout {base.info.params.get('dropout')}: leave dropout unset")
    assert grey is not None  # _load_data measures it when init is the pretrained start
    return reclass(base, classes, grey, votes)


def _lr_at(kind: str, lr: float, frac: float, step: int, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = min(max(frac, 0.0), 1.0)
    if kind == "cosine":
        return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
    if kind == "step":
        return lr * (0.1 ** int(frac * 3 - 1e-9)) if frac < 1 else lr * 0.01
    return lr


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _label_rows(pred: SlicePredictor, x: np.ndarray) -> np.ndarray:
    """Labels of normalised slices ``x``, as many per call as fit."""
    per_call = pred.slices_per_call(x.shape[-2:])
    out = np.empty((x.shape[0], *x.shape[-2:]), np.uint8)
    for s in range(0, x.shape[0], per_call):
        out[s : s + per_call] = pred.labels(x[s : s + per_call])
    return out


#: Painted rows per class that :func:`_painted_check` keeps to score a class the held-out slices lack.
PAINTED_CHECK_ROWS = 4
#: Share of its own painted (training) voxels a class the held-out slices lack must get back, else it
#: is said to be not learned (:func:`unlearned_painted`).
PAINTED_RECALL_MIN = 0.5


def _painted_check(
    x: np.ndarray, labs: np.ndarray, train_sl: np.ndarray, val_truth: np.ndarray, classes: list[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Training rows (at most :data:`PAINTED_CHECK_ROWS`) of each class no held-out slice holds, to score it on.

    With whole slices held out (5 or more painted), a phase painted on a few slices is often in
    none of them: its validation Dice is n/a, and whether the model learned it was not known (QA:
    a rare phase predicted on 1 of its 656 painted voxels trained with "validation Dice 0.81").
    """
    held = {int(c) for c in np.unique(val_truth) if c}
    rows = np.flatnonzero(train_sl)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for c in classes:
        if c in held:
            continue
        has = [int(i) for i in rows if (labs[i] == c).any()][:PAINTED_CHECK_ROWS]
        if has:
            out[c] = (x[has], np.where(labs[has] == c, c, 0).astype(np.uint8))
    return out


def _painted_recall(pred: SlicePredictor, check: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Share of each class's painted voxels in :func:`_painted_check`'s rows that the model labels as that class."""
    got = {}
    for c, (x, t) in check.items():
        mask = t == c
        got[str(c)] = round(float((_label_rows(pred, x)[mask] == c).mean()), 4)
    return got


def _validate(
    pred: SlicePredictor, x: np.ndarray, truth: np.ndarray, classes: list[int]
) -> tuple[float | None, list[float | None]]:
    """Segment normalised slices ``x`` and score them against ``truth`` (0 = not scored)."""
    from .metrics import dice_per_class

    out = _label_rows(pred, x)
    d = dice_per_class(out, truth, classes)
    # a class absent from the held-out truth has no Dice to score (as MONAI's ignore_empty): scored, any
    # voxel predicted for it gave 0 and took a third off the mean (a class painted on one slice only);
    # its false positives still cost the classes whose voxels they took
    present = {int(c) for c in np.unique(truth) if c}
    per = [_finite(d.get(c)) if c in present else None for c in classes]
    vals = [v for v in per if v is not None]
    return (float(np.mean(vals)) if vals else None), per


# --------------------------------------------------------------------------- training: the pieces
#
# iter_train = _settings (check every argument, claim the output path)
#            -> _load_data (annotated slices, normalisation, split, patch sampler)
#            -> _build (model, optimiser step, validation predictor)
#            -> _fit (the epoch loop under a _Budget, best-weights bookkeeping)
#            -> save.


def _number(name: str, v: Any, ok: Any, hint: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v):
        raise InputError(f"{name} {v!r} must be {hint}")
    return float(v)


def _init_info(init: Model | str | os.PathLike | None) -> ModelInfo | None:
    """The starting model's metadata when fine-tuning (from its sidecar, without the weights), else None."""
    if isinstance(init, Model):
        return init.info
    if isinstance(init, (str, os.PathLike)):
        from .models import read_model_info

        return read_model_info(pretrained_path() if init == PRETRAINED else init)
    return None


def _resolve_context(context: int | None, init: ModelInfo | None, arch: str = _D.arch) -> int:
    """Fine-tuning keeps the starting model's context (``init``: its metadata); new models get their arch's default."""
    if context is None:
        from .models import default_context

        context = init.context if init is not None else default_context(arch)
    context = _check_positive_int("context", context)
    if context % 2 == 0 or context > MAX_CONTEXT:
        raise InputError(f"context {context} must be an odd number of slices in 1..{MAX_CONTEXT}, e.g. 1 or 3")
    return context


def _shapes(image: Any) -> list[tuple[int, ...]]:
    """The shape of each image given (one image, or a list of them); [] when one has none."""
    several = isinstance(image, (list, tuple)) and len(image) > 0 and all(hasattr(i, "shape") for i in image)
    shapes = [getattr(im, "shape", None) for im in (image if several else [image])]
    return [] if any(sh is None for sh in shapes) else [tuple(int(v) for v in sh) for sh in shapes]  # type: ignore[union-attr]


def _resolve_arch(kw: dict[str, Any], init: ModelInfo | None, quiet: bool = False) -> str:
    """The architecture to train: the starting model's when fine-tuning, ``"auto"`` chosen from the data."""
    from .models import AUTO_ARCH, choose_arch

    if init is not None:
        asked = [
            f"{k}={v!r}"
            for k, v, kept in (("arch", kw["arch"], init.arch), ("size", kw.get("size"), init.size))
            if v not in (None, AUTO_ARCH, kept)
        ]
        if asked:
            log.warning(
                "%s ignored: fine-tuning keeps the starting model's network (%s, %s); leave init unset "
                "(--init random) for a new one",
                " and ".join(asked),
                init.arch,
                init.size,
            )
        return init.arch
    if kw["arch"] != AUTO_ARCH:
        return kw["arch"]
    where = {
        "axis": kw["axis"] if isinstance(kw["axis"], int) else 0,
        "axes": kw["axes"],
        "channel_axis": kw["channel_axis"],
        "context": kw["context"],
        "two_d": kw["two_d"],
        "mode": kw["mode"],
    }
    minutes = kw["minutes"] if isinstance(kw["minutes"], (int, float)) else None
    arch = choose_arch(kw["shapes"], minutes=minutes, **where)
    if quiet:  # init="auto" asking which network it would be: said once, when it is trained
        return arch
    if arch != "unet3d" and choose_arch(kw["shapes"], minutes=None, **where) == "unet3d":  # only the clock decided
        log.warning(
            "arch='auto': the 2.5D unet, as %g minutes are under the %g the 3D unet3d (the more accurate network, "
            "docs/accuracy.md) needs; give minutes=%g or more (--minutes %g), or epochs alone without minutes "
            "(--epochs), or arch='unet3d' (--arch unet3d)",
            minutes,
            AUTO_3D_MINUTES,
            AUTO_3D_MINUTES,
            AUTO_3D_MINUTES,
        )
    log.info("arch='auto': training %s", arch)
    return arch


def _resolve_batch(batch: int | None, init: ModelInfo | None, arch: str = _D.arch) -> int:
    """The batch given, else the default of the architecture trained (the ``init`` model's when fine-tuning)."""
    if batch is None:
        from .models import default_batch

        return default_batch(init.arch if init is not None else arch)
    return _check_positive_int("batch", batch)


def _settings(kw: dict[str, Any], quiet: bool = False) -> dict[str, Any]:
    """Check every argument of :func:`iter_train` (cheap checks first); return them normalised."""
    s = dict(kw)
    s["out_claim"] = _out_claim(kw["out"], kw["overwrite"], kw["init"])  # before any work: never end unsaved
    s["epochs"] = None if kw["epochs"] is None else _check_positive_int("epochs", kw["epochs"])
    if s["epochs"] is None and isinstance(kw["init"], str) and kw["init"] == PRETRAINED:
        s["epochs"] = PRETRAINED_EPOCHS  # longer fine-tuning on a few slices loses what the start knows
    s["steps_per_epoch"] = _check_positive_int("steps_per_epoch", kw["steps_per_epoch"])
    _blends(kw["blend"], kw["init"])  # checks it
    init_info = _init_info(kw["init"])  # the starting model's sidecar, read once
    s["arch"] = _resolve_arch(kw, init_info, quiet)
    kw = {**kw, "arch": s["arch"]}
    s["batch"] = _resolve_batch(kw["batch"], init_info, kw["arch"])
    s["patch"] = _check_positive_int("patch", kw["patch"], 8)
    if kw["minutes"] is not None:
        s["minutes"] = _number("minutes", kw["minutes"], lambda v: v > 0, "a positive number or None")
    s["lr"] = _number("lr", kw["lr"], lambda v: 0 < v < 10, "a positive number, e.g. 3e-3")
    s["val_fraction"] = _number("val_fraction", kw["val_fraction"], lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.2")
    if kw["schedule"] not in SCHEDULES:
        raise InputError(f"unknown schedule {kw['schedule']!r}: choose one of {list(SCHEDULES)}")
    s["loss_fn"] = make_loss(kw["loss"], kw["gamma"], kw["boundary_weight"])
    s["average"] = _number("average", kw["average"], lambda v: 0 <= v <= 1, "in [0, 1], e.g. 0.5 (0 = off)")
    if kw["dropout"] is not None:
        s["dropout"] = _number("dropout", kw["dropout"], lambda v: 0 <= v < 1, "in [0, 1), e.g. 0 (off) or 0.2")
    if kw["mode"] not in MODES:
        raise InputError(f"unknown training mode {kw['mode']!r}: choose one of {list(MODES)}")
    s["pixel_weight"] = _number(
        "pixel_weight", kw["pixel_weight"], lambda v: 0 < v <= 1e6, f"a positive number, e.g. {_D.pixel_weight}"
    )
    s["seed"] = _check_positive_int("seed", kw["seed"], 0)
    s["context"] = _resolve_context(kw["context"], init_info, kw["arch"])
    s["context_arg"] = kw["context"]
    ca = kw["channel_axis"]
    if ca is not None and (isinstance(ca, bool) or not isinstance(ca, (int, np.integer))):
        raise InputError(f"channel_axis {ca!r} must be an integer axis of the image, or None")
    if kw["normalize"] not in NORMALIZE:
        raise InputError(f"unknown normalize {kw['normalize']!r}: choose one of {list(NORMALIZE)}")
    s["dev"] = resolve_device(kw["device"])
    s["precision"] = training_precision(kw["precision"], s["dev"], kw["mode"])
    return s


def training_precision(precision: str, dev: torch.device, mode: str = "supervised") -> str:
    """The arithmetic of the training steps for ``train(precision=)`` on ``dev`` (what the model records)."""
    got = resolve_precision(precision, dev)
    if precision == "auto" and dev.type == "cuda" and torch.cuda.is_bf16_supported():
        got = "bf16"  # no loss scaling needed
    if precision == "auto" and dev.type == "cpu" and (mode == "pix2pix" or not cpu_has_amx()):
        # pix2pix: its discriminator was never measured in bf16 on CPU; without AMX (AVX512-BF16
        # only) 3D convolutions' bf16 weight gradients were non-finite in 3-7 % of steps
        got = "fp32"
    if dev.type == "mps" and got != "fp32":  # the steps run fp32 there: record what they do (QA)
        log.warning("training on Apple MPS runs in fp32 (precision %r is not used for training there)", precision)
        got = "fp32"
    return got


class _Budget:
    """When training stops and how far it is: epochs, a wall-clock budget, or both.

    With ``minutes`` alone the whole budget is spent (no epoch cap); with ``epochs``
    alone that many epochs run; with both, the first limit reached stops training;
    with neither, :data:`DEFAULT_EPOCHS`. The learning-rate schedule and the progress
    follow whichever limit binds: with both, the steps while the run is on course to end
    within the budget (so a run the budget does not cut repeats, bit for bit), the clock
    from the first step at which it is not (it stays with the clock then).
    """

    def __init__(self, epochs: int | None, minutes: float | None, steps_per_epoch: int) -> None:
        self.t0 = time.perf_counter()
        self._t_first: float | None = None  # when the first step began (setup before it is not the steps' pace)
        self._clock = False  # both limits: the clock binds (latched)
        self.seconds = None if minutes is None else float(minutes) * 60.0
        self.epochs = epochs if epochs is not None or self.seconds is not None else DEFAULT_EPOCHS
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = None if self.epochs is None else self.epochs * steps_per_epoch
        self.warmup = 20 if self.total_steps is None else min(20, self.total_steps // 20)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def fraction(self, step: int) -> float:
        """How much of the budget is spent, in [0, 1]: by steps or time, whichever binds (see the class)."""
        f = 0.0 if self.total_steps is None else step / self.total_steps
        if self.seconds is None:
            return min(f, 1.0)
        now = time.perf_counter()
        if self._t_first is None:
            self._t_first = now
        if self.total_steps is not None and not self._clock and step > 0:
            pace = (now - self._t_first) / step  # seconds per step so far
            self._clock = (now - self.t0) + pace * (self.total_steps - step) > self.seconds
        if self.total_steps is None or self._clock:
            f = max(f, (now - self.t0) / self.seconds)
        return min(f, 1.0)

    def out_of_time(self) -> bool:
        return self.seconds is not None and self.elapsed() >= self.seconds

    def last_epoch(self, epoch: int) -> bool:
        return self.epochs is not None and epoch >= self.epochs

    def progress(self, epoch: int, step: int, per_epoch: bool) -> tuple[int, int]:
        """(done, total) for a :class:`Progress` record: epochs (or steps) when epochs bind, else per mille."""
        if self.epochs is not None and self.seconds is None:  # steps, epoch records too: one unit per stream
            total = self.epochs * self.steps_per_epoch
            return (epoch * self.steps_per_epoch if per_epoch else step), total
        done = int(1000 * self.fraction(step))
        if self.epochs is not None and per_epoch:
            done = max(done, int(1000 * epoch / self.epochs))
        return min(done, 1000), 1000

    def of(self, epoch: int) -> str:
        if self.seconds is None:
            return f"{epoch}/{self.epochs}"
        return f"{epoch} ({self.elapsed():.0f} of {self.seconds:.0f} s)"


def _pairs(image: Any, labels: Any) -> tuple[list[tuple[Any, Any]], bool, list[int]]:
    """The (image, labels) pairs to train on, and whether several were given.

    A list or tuple of arrays is several pairs (``labels`` then a list of the same length;
    ``None`` marks an image without annotations, which is skipped); anything else is one.
    """
    multi = isinstance(image, (list, tuple)) and len(image) > 0 and all(hasattr(i, "shape") for i in image)
    if not multi:
        if isinstance(labels, (list, tuple)) and labels and all(hasattr(v, "shape") for v in labels):
            raise InputError(
                "labels is a list of arrays but image is one array: give a list of images of the same length"
            )
        return [(image, labels)], False, [0]
    if not isinstance(labels, (list, tuple)) or len(labels) != len(image):
        n = len(labels) if isinstance(labels, (list, tuple)) else "one array"
        raise InputError(f"{len(image)} images but {n} labels: give one labels array (or None) per image")
    pairs, index = [], []  # index: the user's number of each pair (images without labels are left out)
    for i, (im, lab) in enumerate(zip(image, labels)):
        if lab is None:
            continue
        im = check_image(im, name=f"image {i}")
        if not hasattr(lab, "shape") or not hasattr(lab, "dtype"):
            lab = np.asarray(lab)
        if tuple(lab.shape) != tuple(im.shape):
            raise InputError(f"labels {i} shape {tuple(lab.shape)} does not match image {i} shape {tuple(im.shape)}")
        pairs.append((im, lab))
        index.append(i)
    if not pairs:
        raise InputError("no image has labels (all None): give labels for at least one image")
    return pairs, True, index


def _with_channels(image: Any, s: dict[str, Any]) -> Any:
    """Declare the channel axis of the image(s): :class:`ChannelStack` s with one channel count."""
    from .channels import split_channels

    if s["normalize"] != "image":
        raise InputError("multi-channel images are normalised per image and channel: use normalize='image'")
    if s["axes"] is not None:
        raise InputError("multi-channel images are trained along one axis: leave axes unset with channel_axis")
    several = isinstance(image, (list, tuple)) and len(image) > 0 and all(hasattr(i, "shape") for i in image)
    stacks = [
        split_channels(im, s["channel_axis"], what=f"image {i}") for i, im in enumerate(image if several else [image])
    ]
    counts = {st.channels for st in stacks}
    if len(counts) > 1:
        raise InputError(f"images have different channel counts {sorted(counts)}: give every image the same channels")
    return stacks if several else stacks[0]


def _is_plane(shape: tuple[int, ...], axis: int) -> bool:
    """A 2D image, or a volume one slice deep along ``axis``."""
    return len(shape) == 2 or shape[axis] == 1


def _resolve_two_d(two_d: bool | None, pairs: list[tuple[Any, Any]], multi: bool, axis: int) -> bool:
    """Declared 2D mode, or detected: several inputs that are all single 2D images."""
    if two_d is None:
        return multi and all(_is_plane(tuple(im.shape), axis) for im, _ in pairs)
    if not isinstance(two_d, (bool, np.bool_)):
        raise InputError(f"two_d {two_d!r} must be True, False or None (detect)")
    return bool(two_d)


def _item_2d(
    image: Any, labels: Any, axis: int, cancel: CancelToken | None
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Annotated independent 2D images of one input: a 2D image, or a stack of them along ``axis``."""
    if len(image.shape) == 2:
        return _annotated_slices(image, labels, 0, True, cancel, 1)
    return _annotated_slices(image, labels, axis, False, cancel, 1)


def _view_rows(
    image: Any,
    labels: Any,
    two_d: bool,
    axis: int,
    context: int,
    pooled: dict[str, Any] | None,
    cancel: CancelToken | None,
    constant: bool = True,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Annotated slices of one single-channel image, normalised: (indices, (N, k, Y, X), (N, Y, X)).

    ``constant=False``: a constant slice is data (a channel of a multi-channel image).
    """
    if two_d:
        idx, im, lb = _item_2d(image, labels, axis, cancel)
        if not idx:
            return idx, im, lb
        rows = []
        for r, lab in zip(im, lb):  # each image by its own bounds, unless pooled (dropped voxels: counted)
            bounds = pooled or compute_normalization(r[0])
            rows.append(apply_normalization(_no_data_filled(r, lab, bounds, constant), bounds))
        im = np.stack(rows)
        return idx, (np.repeat(im, context, axis=1) if context > 1 else im), lb  # context: the image itself
    idx, im, lb = _annotated_slices(image, labels, axis, len(image.shape) == 2, cancel, context)
    if not idx:
        return idx, im, lb
    bounds = pooled or compute_normalization(image)
    return idx, apply_normalization(_no_data_filled(im, lb, bounds, constant, axis, idx), bounds), lb


def _no_data_filled(
    im: np.ndarray,
    lb: np.ndarray,
    bounds: dict[str, Any],
    constant: bool = True,
    axis: int = 0,
    idx: list[int] | None = None,
    say: bool = True,
) -> np.ndarray:
    """Slices with their context (..., k, Y, X), voxels without data (NaN) filled as at inference.

    The annotations of those voxels in the middle slices ``lb`` (..., Y, X) are dropped in
    place (``lb`` is the trainer's own copy): a voxel without data teaches nothing. With
    ``constant``, constant slices are without data too, as ``segment`` reads single-channel
    images (a channel of a multi-channel image may be constant: a mask); slices along y or x
    (``axis`` 1 or 2) have a dead z slice as a row (their axis -2) constant through them all.
    Dropped annotations are said (:func:`_say_dropped`; ``idx`` names the slices), except with
    ``say=False``: rows along further axes, whose voxels the painted slices said already (review).
    """
    held = dead_slices_missing(im, axis, warn=False) if constant else im  # a dead or zero-padded slice
    if held is not im:
        log.warning("constant slices (dead or zero-filled) among the annotated slices or their context: no data")
    try:
        out, miss = fill_missing(held, float(bounds["low"]))
    except InputError as e:
        raise InputError(f"{e.args[0]} (in annotated slices)") from None
    if miss is not None:
        gone = miss[..., miss.shape[-3] // 2, :, :] & (lb > 0)
        if gone.any():
            lb[gone] = 0
            if say:
                _say_dropped(gone, lb, idx, axis)
    return out


def _say_dropped(gone: np.ndarray, lb: np.ndarray, idx: list[int] | None, axis: int) -> None:
    """Warn that the annotations ``gone`` (on voxels without data) are not used, naming their slices where known.

    QA: a painted slice that was NaN (or constant) lost its annotations without a word; the user
    did not learn that one of three painted slices went unused.
    """
    if not first_time("dropped", gone):  # init="auto" reads the same annotations for each candidate
        return
    per = gone.reshape(-1, *gone.shape[-2:]).sum((1, 2)) if gone.ndim >= 3 else np.array([gone.sum()])
    left = (lb > 0).reshape(per.size, -1).sum(1)
    if idx is not None and len(idx) == per.size:
        where = ", ".join(
            f"{idx[k]} ({'all' if not left[k] else f'{n} of {n + left[k]} voxels'})" for k, n in enumerate(per) if n
        )
        where = f"slices {where} along axis {axis}"
    else:
        where = f"{int(per.sum())} voxels"
    log.warning(
        "annotations on voxels without data (NaN, the no-data value or a constant slice) are not used: %s%s",
        where,
        "; paint slices with data" if np.any((per > 0) & (left == 0)) else " (nothing to learn there)",
    )


def _extra_filled(im: np.ndarray, lb: np.ndarray, where: list[tuple[int, int]], bounds: dict[str, Any]) -> np.ndarray:
    """:func:`_no_data_filled` for the rows along further axes, each axis's rows together (``where``: (axis, slice)).

    Along y or x a dead z slice is a row constant through the slices of that axis: rows of
    both axes checked as slices along z found none, and such a row was trained on as data.
    """
    axes = np.array([a for a, _ in where])
    out: np.ndarray | None = None
    for a in sorted(set(axes.tolist())):
        sel = np.flatnonzero(axes == a)
        sub = lb[sel]  # a copy: the annotations dropped there are written back
        filled = _no_data_filled(im[sel], sub, bounds, axis=a, say=False)  # the painted slices said these voxels
        lb[sel] = sub
        if out is None:
            out = np.empty((len(im), *filled.shape[1:]), dtype=filled.dtype)
        out[sel] = filled
    assert out is not None
    return out


def _load_rows(
    pairs: list[tuple[Any, Any]],
    s: dict[str, Any],
    two_d: bool,
    axis: int,
    ax_list: list[int],
    cancel: CancelToken | None,
) -> tuple[list[tuple[int, int]], list[np.ndarray], list[np.ndarray], dict[int, int], list[tuple[int, int, int]]]:
    """Annotated slices of every pair, normalised: (ids, image parts, label parts, extra-axis counts, extra rows).

    ``ids`` holds (pair, slice) per main-axis row; the parts hold the main-axis rows of
    every pair first, then the rows along further ``ax_list`` axes, each named in the
    extra rows as (pair, axis, slice). Normalisation is per image (each 2D
    image, or each volume, by its own percentile bounds) with ``normalize="image"``, and
    one set of bounds pooled over all inputs with ``"fixed"``.
    """
    context = s["context"]
    pooled = pooled_normalization([im for im, _ in pairs]) if s["normalize"] == "fixed" else None
    ids: list[tuple[int, int]] = []
    imgs: list[np.ndarray] = []
    labs: list[np.ndarray] = []
    extra_i: list[np.ndarray] = []
    extra_l: list[np.ndarray] = []
    counts: dict[int, int] = {}
    extra: list[tuple[int, int, int]] = []
    for p, (image, labels) in enumerate(pairs):
        if isinstance(image, ChannelStack):  # every channel by its own bounds, its context together
            # as segment() reads channels: a constant slice of a channel is data (a mask)
            got = [_view_rows(v, labels, two_d, axis, context, None, cancel, constant=False) for v in image.views]
            idx, lb = got[0][0], got[0][2]
            im = np.concatenate([g[1] for g in got], axis=1) if idx else None
        elif two_d:
            idx, im, lb = _view_rows(image, labels, True, axis, context, pooled, cancel)
        else:
            idx, im, lb = _view_rows(image, labels, False, axis, context, pooled, cancel)
            if idx and len(ax_list) > 1:
                bounds = pooled or compute_normalization(image)
                both_i, both_l, c, where = _orthogonal_slices(image, labels, ax_list[1:], im, lb, cancel, context)
                for k, v in c.items():
                    counts[k] = counts.get(k, 0) + v
                extra += [(p, a, j) for a, j in where]
                if len(both_l) > len(lb):
                    more_l = np.array(both_l[len(lb) :], copy=True)
                    extra_i.append(apply_normalization(_extra_filled(both_i[len(lb) :], more_l, where, bounds), bounds))
                    extra_l.append(more_l)
        if not idx:
            continue
        ids += [(p, i) for i in idx]
        imgs.append(im)
        labs.append(lb)
    return ids, imgs + extra_i, labs + extra_l, counts, extra


#: :func:`unpainted_hint` speaks when at least this share of the voxels left unpainted in the annotated
#: slices lies outside the grey range of every painted class (beyond its 0.1th / 99.9th percentile).
UNPAINTED_HINT = 0.01


def unpainted_hint(x: np.ndarray, labs: np.ndarray, seed: int = 0) -> str | None:
    """A warning when voxels left unpainted (0) in annotated slices are brighter or darker than every painted class.

    ``x``: the annotated slices, normalised ((N, Y, X), or (N, k, Y, X) with context: the
    middle slice is used); ``labs``: their annotations. A phase nobody painted is learned as
    none: the model calls it one of the painted classes, without a word (QA: 97 % of a
    bright catalyst became the brightest painted phase).
    """
    mid = x[:, x.shape[1] // 2] if x.ndim == 4 else x
    painted = labs > 0
    n_painted = int(painted.sum())
    if n_painted < 100 or n_painted == painted.size:
        return None
    rng = np.random.default_rng(seed)
    pv, uv = mid[painted], mid[~painted]
    pv = pv if pv.size <= 10**6 else rng.choice(pv, 10**6, replace=False)
    uv = uv if uv.size <= 10**6 else rng.choice(uv, 10**6, replace=False)
    lo, hi = np.percentile(pv, [0.1, 99.9])
    margin = 0.05 * (hi - lo)
    for side, share in (("brighter", float((uv > hi + margin).mean())), ("darker", float((uv < lo - margin).mean()))):
        if share >= UNPAINTED_HINT and share * uv.size >= 100:
            return (
                f"{share:.1%} of the voxels left unpainted in the annotated slices are {side} than every painted "
                "class: a phase not painted, an artefact, or no data outside the field of view? The model will call "
                "them one of the painted classes: paint a phase as a class of its own; mark no data as NaN (nodata=)"
            )
    return None


def _padded(parts: list[np.ndarray], mode: str) -> np.ndarray:
    """Concatenate slices of different shapes, padded at the end to a common one."""
    h = max(p.shape[-2] for p in parts)
    w = max(p.shape[-1] for p in parts)
    out = []
    for a in parts:
        widths = ((0, 0),) * (a.ndim - 2) + ((0, h - a.shape[-2]), (0, w - a.shape[-1]))
        out.append(np.pad(a, widths, mode=mode) if any(p for pp in widths for p in pp) else a)  # type: ignore[call-overload]
    return out[0] if len(out) == 1 else np.concatenate(out)


def _load_data(image: Any, labels: Any, s: dict[str, Any], cancel: CancelToken | None) -> dict[str, Any]:
    """Annotated slices -> normalised training and validation data and a patch sampler."""
    from .plan import parse_axes

    if s["channel_axis"] is not None:
        image = _with_channels(image, s)
    pairs, multi, index = _pairs(image, labels)
    if not multi:
        image = check_image(image)
        labels = as_input(labels, "labels")
        if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
            labels = np.asarray(labels)
        if tuple(labels.shape) != tuple(image.shape):
            raise InputError(f"labels shape {tuple(labels.shape)} does not match image shape {tuple(image.shape)}")
        pairs = [(image, labels)]
    ndims = {len(im.shape) for im, _ in pairs}
    axis = 0 if ndims == {2} else normalize_axis(s["axis"], 3)
    two_d = _resolve_two_d(s["two_d"], pairs, multi, axis)
    if two_d and s["context_arg"] is None and s["init"] is None:
        s["context"] = 1  # independent images have no neighbours to give as context
    ax_list = parse_axes(s["axes"], max(ndims), default=axis)
    if two_d and len(ax_list) > 1:
        raise InputError("independent 2D images have one slicing direction: leave axes unset with two_d")
    if multi and ndims == {2, 3} and not two_d:
        raise InputError("inputs mix 2D images and 3D volumes: pass two_d=True (each slice an image) or give one kind")
    axis = ax_list[0]
    try:
        ids, parts_i, parts_l, extra_axes, extra_rows = _load_rows(pairs, s, two_d, axis, ax_list, cancel)
    except Cancelled as e:
        err = Cancelled("training cancelled after 0 epochs (while reading the annotations)")
        err.result = None  # type: ignore[attr-defined]
        raise err from e
    if not ids:
        raise InputError("labels hold no annotations (all 0): paint at least two classes on some slices")
    labs = _padded(parts_l, "constant")  # padding is 0 = not annotated: it never teaches anything
    values, counts = np.unique(labs, return_counts=True)
    classes = sorted(int(c) for c in values if c != 0)
    if (hint := ignore_index_hint(dict(zip(values.tolist(), counts.tolist())))) and first_time("ignore-index", labs):
        log.warning("%s", hint)
    if not classes:  # every annotation lay on voxels without data (NaN or nodata=)
        raise InputError(
            "every annotated voxel is without data (NaN, the no-data value or a constant slice): annotate voxels "
            "inside the field of view, on slices with data"
        )
    if len(classes) < 2:
        raise InputError(
            f"labels annotate only class {classes[0]}: paint at least two classes to train (0 means not annotated: "
            "in a mask whose 0 is a phase, a 0/255 or 0/1 mask, give that phase a label of its own, e.g. "
            "numpy.where(mask == 0, 1, 2))"
        )
    x_all = _padded(parts_i, "edge")
    del parts_i
    if not np.all(np.isfinite(x_all)):  # voxels without data (NaN) were filled: what is left is inf
        raise InputError("image holds inf values in annotated slices: replace them (e.g. with NaN for no data)")
    if (hint := unpainted_hint(x_all, labs)) and first_time("unpainted", labs):
        log.warning("%s", hint)
    norm = (
        pooled_normalization([im for im, _ in pairs])
        if s["normalize"] == "fixed"
        else compute_normalization(pairs[0][0])
    )
    idx: list[Any] = [i for _, i in ids] if not multi else [list(t) for t in ids]
    grey = votes = None
    if s["init"] == PRETRAINED:  # the mean grey of each class matches them to the pretrained start's
        mid = x_all[:, x_all.shape[1] // 2] if x_all.ndim == 4 else x_all
        grey = [float(mid[labs == c].mean()) for c in classes]
        votes = _start_votes(x_all, labs, classes)
    lut = np.full(256, _IGNORE, np.int16)
    lut[classes] = np.arange(len(classes), dtype=np.int16)
    learned = None
    if not multi and s["init"] is not None and not (isinstance(s["init"], str) and s["init"] in _STARTS):
        # a fine-tuning on the same image: what its start trained on
        known = set(_inherited(s["init"], _digest({"pairs": pairs, "multi": multi, "two_d": two_d}), axis))
        learned = np.array([i in known for _, i in ids]) if known else None
    val_sl, val_px, val_kind = _split(
        labs, s["val_fraction"], classes, np.random.default_rng(s["seed"]), n_main=len(ids), learned=learned
    )
    if extra_rows:  # axes="zyx": the voxels held out in main-axis rows are no target in the rows across them
        _mask_held_out_across(labs, val_sl, val_px, ids, extra_rows, axis, [tuple(im.shape) for im, _ in pairs])
    train_sl = ~val_sl
    tgt = lut[labs[train_sl]]
    tgt[val_px[train_sl]] = _IGNORE
    painted: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if val_kind == "slices":
        val_x, val_truth = x_all[val_sl], labs[val_sl]
        painted = _painted_check(x_all, labs, train_sl, val_truth, classes)
    elif val_kind == "block":
        val_x, val_truth = x_all, np.where(val_px, labs, 0).astype(np.uint8)
    else:
        val_x = val_truth = None
    missing = [c for i, c in enumerate(classes) if not (tgt == i).any()]
    if missing:
        log.warning("classes %s have no training pixels left after holding out validation data", missing)
    # DENSE_CONTEXT: a 3D network scored on every annotated slice of its sub-volume (supervised only)
    dense = DENSE_CONTEXT and s["mode"] == "supervised" and s["arch"] == "unet3d" and not two_d
    ctx_rows = _context_rows(list(ids), train_sl, s["context"]) if dense and s["context"] >= 3 else None
    sampler = _PatchSampler(
        x_all[train_sl],
        tgt,
        len(classes),
        s["patch"],
        bool(s["augment"]),
        s["seed"],
        exposure=two_d,
        context_rows=ctx_rows,
    )
    if not sampler.available:
        raise InputError("too few annotated pixels to hold out validation data: paint more, or pass val_fraction=0")
    log.info(
        "training on %d annotated %s of %d input(s) along axis %d (+ %s along other axes; %d held out, "
        "validation by %s), classes %s, normalisation low=%.4g high=%.4g",
        len(idx),
        "2D images" if two_d else "slices",
        len(pairs),
        axis,
        extra_axes or "none",
        int(val_sl.sum()),
        val_kind,
        classes,
        norm["low"],
        norm["high"],
    )
    return {
        "pairs": pairs,
        "multi": multi,
        "input_index": index,
        "channels": pairs[0][0].channels if isinstance(pairs[0][0], ChannelStack) else 1,
        "two_d": two_d,
        "axis": axis,
        "axes": ax_list,
        "extra_axes": extra_axes,
        "idx": idx,
        "classes": classes,
        "grey": grey,
        "votes": votes,
        "norm": norm,
        "sampler": sampler,
        "val_x": val_x,
        "val_truth": val_truth,
        "val_kind": val_kind,
        "val_slices": [i for i, v in zip(idx, val_sl[: len(idx)]) if v],
        "val_interface_pixels": None if val_truth is None else _interface_pixels(val_truth),
        "painted_check": painted,
        "dense_rows": 0 if ctx_rows is None else int(((ctx_rows >= 0).sum(1) > 1).sum()),
    }


def _interface_pixels(truth: np.ndarray) -> int:
    """Annotated pixels of ``truth`` (N, Y, X) with an in-plane neighbour annotated with another class.

    None: validation scores only the insides of the phases (strokes painted away from the
    boundaries), where every reasonable model is right, so it cannot rank models.
    """
    n = 0
    for ax in (-1, -2):
        a, b = np.moveaxis(truth, ax, 0)[1:], np.moveaxis(truth, ax, 0)[:-1]
        n += int(((a != b) & (a > 0) & (b > 0)).sum())
    if n == 0 and first_time("blind-validation", truth):  # once for the same rows (init="auto": two candidates)
        log.warning(
            "the held-out annotations hold no interface between phases (strokes inside the phases?): validation "
            "Dice says little about where boundaries go; paint some strokes across interfaces"
        )
    return n


def _build(
    s: dict[str, Any], d: dict[str, Any], cancel: CancelToken | None
) -> tuple[Model, _SupervisedStep, SlicePredictor | None]:
    """The model to train (new or fine-tuned), its optimiser step and the validation predictor."""
    model = _start_model(
        s["init"],
        s["arch"],
        s["size"],
        d["classes"],
        s["seed"],
        s["dev"],
        s["context"],
        d["channels"],
        s["dropout"],
        grey=d["grey"],
        votes=d["votes"],
    )
    if d["channels"] > 1:
        model.info.channel_axis = d["pairs"][0][0].channel_axis
    if hasattr(model.network, "generator"):  # a network that draws at random in training (unet3d)
        model.network.generator = torch.Generator().manual_seed(s["seed"])
    was = normalize_of(model.info.normalization)  # a start's, when fine-tuning
    init = s["init"]
    if init is not None and not (isinstance(init, str) and init in _STARTS) and was != s["normalize"]:
        log.warning(  # asked for: a colleague's levelled or fixed-bounds model's inputs change meaning
            "the model fine-tuned was trained with normalize=%r, this training uses %r (as asked): it will "
            "map grey values otherwise; leave normalize unset to keep its normalisation",
            was,
            s["normalize"],
        )
    norm = dict(d["norm"])
    if s["normalize"] != "fixed":  # bounds computed from each input at inference; these are for the record
        norm = {**norm, "low": None, "high": None, "training_bounds": [norm["low"], norm["high"]]}
    if d["channels"] > 1:  # each channel's own grey range: segment() tells a swapped channel order by them
        norm["training_channel_bounds"] = channel_grey_ranges(d["pairs"][0][0], norm.get("percentiles"))
    if s["normalize"] == "slice":  # every input levelled slice by slice first (core/level.py); older versions refuse
        norm["level"] = "z"
        model.info.format_version = max(model.info.format_version, LEVEL_FORMAT_VERSION)
    else:
        norm.pop("level", None)  # a start that levelled, trained on without: not levelled any more
    model.info.normalization = norm
    stride = model.info.stride
    if s["patch"] % stride:
        raise InputError(
            f"patch {s['patch']} is not a multiple of the network's stride {stride} "
            f"(e.g. {max(1, round(s['patch'] / stride)) * stride})"
        )
    for k, (im, _) in enumerate(d["pairs"]):
        shape = tuple(int(v) for v in im.shape)
        planes = [shape] if len(shape) == 2 else [[v for i, v in enumerate(shape) if i != a] for a in d["axes"]]
        if min(min(pl) for pl in planes) < stride:
            which = f"input {k + 1} of {len(d['pairs'])}, {'x'.join(map(str, shape))}" if d["multi"] else ""
            raise InputError(small_slices_message(shape, d["axes"], stride, True, which))  # which image (QA s45)
    net = model.network.to(s["dev"])
    stepper: _SupervisedStep
    if s["mode"] == "pix2pix":
        stepper = _Pix2PixStep(
            net,
            s["loss_fn"],
            s["lr"],
            s["dev"],
            in_channels=model.info.in_channels,
            n_classes=len(d["classes"]),
            patch=s["patch"],
            pixel_weight=s["pixel_weight"],
            seed=s["seed"],
            precision=s["precision"],
        )
    else:
        stepper = _SupervisedStep(net, s["loss_fn"], s["lr"], s["dev"], precision=s["precision"])
        if stepper.use_amp and s["dev"].type == "cpu":
            _check_cpu_bf16(model, stepper, s["batch"], s["patch"])
    predictor = None
    if d["val_x"] is not None:
        predictor = SlicePredictor(
            model,
            device=s["dev"],
            tile=model.info.tile,
            fast=False,
            precision=validation_precision(s["dev"], s["precision"]),
        )
        predictor.cancel = cancel
    return model, stepper, predictor


def validation_precision(dev: torch.device, training: str) -> str:
    """The arithmetic training scores its held-out data in.

    On the CPU as inference runs (``"auto"``); on a GPU not fp16 (inference's auto there): the
    unfolded network's pre-norm activations may pass 65504, and these scores choose the epoch kept
    (QA, GPU paths).

    >>> validation_precision(torch.device("cpu"), "bf16"), validation_precision(torch.device("cuda"), "fp16")
    ('auto', 'fp32')
    """
    if dev.type == "cpu":
        return "auto"
    return "bf16" if training == "bf16" else "fp32"


def _check_cpu_bf16(model: Model, stepper: _SupervisedStep, batch: int, patch: int) -> None:
    """Train in fp32 what this CPU's bf16 convolution gradients get wrong (:func:`cpu_bf16_conv_faults`).

    A volumetric network trains on sub-volumes of a few depths: each depth is checked, and
    the failing ones run in fp32 (a medium ``unet3d`` on AMX: the 8-slice steps, 1 in 8,
    which were all skipped as non-finite before). Any other network runs at one shape: if that
    fails, the whole run is fp32. :func:`_guarded` records either in ``info.train``.
    """
    net = model.network
    if hasattr(net, "training_depths"):
        # a start trained in this process keeps its fp32 depths: they would run the check in fp32
        # and pass it, and the next run train them in bf16 again (every other stage of pretrain.py)
        net.fp32_depths = frozenset()
        bad = {}
        for depth in net.training_depths():
            x = torch.zeros(batch, 1, depth, patch, patch)
            faults = cpu_bf16_conv_faults(lambda x=x: net.forward_volume(x), net)
            if faults:
                bad[depth] = faults
        net.fp32_depths = frozenset(bad)
        if bad:
            stepper.fp32_depths = sorted(bad)
            log.info(
                "CPU bf16 gradients of %s are wrong here: sub-volumes of depth %s train in fp32",
                "; ".join(sorted({f for v in bad.values() for f in v})),
                sorted(bad),
            )
        return
    x = torch.zeros(batch, model.info.in_channels, patch, patch)
    faults = cpu_bf16_conv_faults(lambda: net(x), net)
    if faults:
        stepper.use_amp, stepper.failed_check = False, faults[0]
        log.warning("CPU bf16 gradients of %s are wrong here: training in fp32", "; ".join(faults))


def _digest(d: dict[str, Any]) -> str | None:
    """The fingerprint of the one 3D image trained on (:func:`~napari_xrayseg.core.writer.input_digest`)."""
    from .writer import input_digest

    image = d["pairs"][0][0]
    if isinstance(image, LevelledView):  # the image as given: what segment() checks it against
        image = image.source
    if d["multi"] or d["two_d"] or isinstance(image, ChannelStack) or len(image.shape) != 3:
        return None
    return input_digest(image)


_STARTS = (PRETRAINED, AUTO_START, RANDOM_START)  # init= names, not models


def _inherited(init: Any, digest: str | None, axis: int) -> list[int]:
    """The slices of the same image, along ``axis``, that the start model ``init`` (and its starts) trained on."""
    if digest is None or init is None or (isinstance(init, str) and init in _STARTS):
        return []
    try:
        t = init.info.train if isinstance(init, Model) else read_model_info(init).train
    except XraysegError:
        return []
    t = t or {}
    if t.get("input_digest") != digest or t.get("axis") != axis or not isinstance(t.get("annotated_slices"), list):
        return []
    return sorted({int(k) for k in t["annotated_slices"]} | {int(k) for k in t.get("inherited_slices") or []})


def _resolve_normalize(normalize: str | None, init: Any) -> str:
    """``normalize`` as given, else a fine-tuned model's own (levelled, fixed bounds), else ``"image"``."""
    if normalize is not None:
        return normalize
    if init is None or (isinstance(init, str) and init in _STARTS):
        return "image"
    try:
        info = init.info if isinstance(init, Model) else read_model_info(init)
    except XraysegError:  # a bad start file is named where it is loaded
        return "image"
    kept = normalize_of(info.normalization)
    if kept != "image":
        log.info("fine-tuning a model trained with normalize=%r: keeping it (pass normalize= to change it)", kept)
    return kept


def _provenance(image: Any, labels: Any) -> dict[str, Any]:
    """The command line, working folder and files a training used (its time and software: ``created``, ``software``)."""
    from .provenance import provenance

    rec = provenance({"image": image, "labels": labels})
    return {k: rec[k] for k in ("command", "cwd", "inputs")}


def _record(s: dict[str, Any], d: dict[str, Any], model: Model) -> dict[str, Any]:
    """The settings kept in the model's ``info.train``."""
    init = s["init"]
    digest = _digest(d)
    rec = {
        "axis": d["axis"],
        "axes": d["axes"],
        "extra_axis_slices": {str(k): v for k, v in d["extra_axes"].items()},
        "dense_rows": d["dense_rows"],
        "arch": model.info.arch,
        "size": model.info.size,
        "loss": s["loss"],
        "gamma": float(s["gamma"]),
        "boundary_weight": float(s["boundary_weight"]),
        "dropout": model.info.params.get("dropout"),
        "average": s["average"],
        "patch": s["patch"],
        "batch": s["batch"],
        "lr": s["lr"],
        "schedule": s["schedule"],
        "epochs": s["epochs"],
        "steps_per_epoch": s["steps_per_epoch"],
        "minutes": s["minutes"],
        "augment": bool(s["augment"]),
        "val_fraction": s["val_fraction"],
        "seed": s["seed"],
        "device": str(s["dev"]),
        "precision": s["precision"],
        "context": s["context"],
        "init": (
            str(init)
            if isinstance(init, (str, os.PathLike))
            else (str(init.path) if isinstance(init, Model) and init.path else ("model" if init is not None else None))
        ),
        "image_shape": [int(v) for v in d["pairs"][0][0].shape] if not d["multi"] else None,
        "inputs": [[int(v) for v in im.shape] for im, _ in d["pairs"]] if d["multi"] else None,
        # the user's number of each input above (annotated_slices' first item counts those inputs)
        "input_index": list(d["input_index"]) if d["multi"] else None,
        "two_d": d["two_d"],
        "channel_axis": s["channel_axis"],
        "annotated_slices": d["idx"],
        # which image those slices are of (writer.input_digest): evaluate scores the other slices apart
        "input_digest": digest,
        # the slices of this image the start model (init) learned from, and its own start's: fine-tuning keeps them
        "inherited_slices": _inherited(init, digest, d["axis"]),
        "val_slices": d["val_slices"],
        "val_interface_pixels": d["val_interface_pixels"],
        "validation": d["val_kind"],
        "mode": s["mode"],
        "normalize": s["normalize"],
    }
    if s["mode"] == "pix2pix":
        rec.update(
            pixel_weight=s["pixel_weight"],
            adversarial="lsgan",
            discriminator={
                "arch": "PatchDiscriminator",
                "channels": _D_CHANNELS,
                "layers": _discriminator_layers(s["patch"]),
                "lr_factor": _D_LR,
            },
        )
    return rec


class _Fit:
    """The epoch loop's state: history, best and averaged weights, why it stopped.

    With ``average`` > 0 the weights at the end of every epoch in the last ``average``
    share of the budget (by steps or time, as the schedule) are averaged (stochastic
    weight averaging, Izmailov et al. 2018; batch norm's running statistics averaged
    with them), and the average is the model returned. Otherwise, and before the
    averaging window opens (a run cancelled early), the best-validation epoch's weights.
    """

    def __init__(self, model: Model, budget: _Budget, average: float = 0.0, candidate: bool = False) -> None:
        self.model, self.budget, self.average = model, budget, float(average)
        # an init="auto" candidate's choices are said as info: the user sees the kept start's (QA s44: "keeping
        # epoch 2" of a random start that then lost)
        self.say = log.info if candidate else log.warning
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch, self.best_dice = 0, -1.0
        self.stopped, self.step = "epochs", 0
        self.avg_state: dict[str, torch.Tensor] | None = None
        self.avg_epochs: list[int] = []

    def keep_if_best(self, score: float, epoch: int) -> None:
        if score > self.best_dice or self.best_state is None:
            self.best_dice, self.best_epoch = float(score), epoch
            self.best_state = _state(self.model)

    def accumulate(self, epoch: int) -> None:
        """Add this epoch's weights to the running average once the averaging window is open."""
        if self.average <= 0 or self.budget.fraction(self.step) < 1.0 - self.average - 1e-9:
            return
        state = self.model.network.state_dict()
        if self.avg_state is None:
            self.avg_state = {k: v.detach().clone() for k, v in state.items()}
        else:
            n = len(self.avg_epochs) + 1
            for k, v in state.items():
                a = self.avg_state[k]
                if a.is_floating_point():
                    a.add_(v.detach().to(a.dtype) - a, alpha=1.0 / n)
                else:  # e.g. batch norm's num_batches_tracked: the latest
                    a.copy_(v)
        self.avg_epochs.append(epoch)

    def finish(
        self, settings: dict[str, Any], validated: bool, validate: Callable[[], float | None] | None = None
    ) -> Model:
        """Load the kept weights (see the class) into the model, record the run, return the model.

        ``validate`` scores the weights now in the network on the held-out rows; the
        average is checked with it and replaced by the best epoch's weights if it scores
        more than :data:`AVERAGE_TOLERANCE` below them (a run that diverged late).
        """
        net = self.model.network
        best = _finite(self.best_dice) if self.best_epoch and validated else None
        kept, val = "best", best
        if self.avg_state is not None:
            net.load_state_dict(self.avg_state)
            net.eval()
            kept, val = "average", (validate() if validate is not None and validated else None)
            if val is not None and self.best_epoch and val < self.best_dice - AVERAGE_TOLERANCE:
                self.say(
                    "the weight average of epochs %d-%d scored validation Dice %.4f, more than %.2f below "
                    "epoch %d's %.4f: keeping epoch %d",
                    self.avg_epochs[0], self.avg_epochs[-1], val, AVERAGE_TOLERANCE, self.best_epoch,
                    self.best_dice, self.best_epoch,
                )  # fmt: skip
                kept, val = "best", best
        if kept == "best" and self.best_state is not None:
            net.load_state_dict(self.best_state)
        net.eval()
        self.model.info.history = self.history
        self.model.info.train = {
            **settings,
            "epochs_run": len(self.history),
            "stopped": self.stopped,
            "best_epoch": self.best_epoch,
            "best_val_dice": best,
            "kept": kept,
            "averaged_epochs": [self.avg_epochs[0], self.avg_epochs[-1]] if kept == "average" else None,
            "val_dice": _finite(val),
            "elapsed_s": round(self.budget.elapsed(), 3),
        }
        return self.model


class _StepRNG:
    """A seeded torch RNG stream for the random layers of training steps (dropout).

    Dropout draws from torch's global generator. Each optimiser step runs with this stream
    swapped in and the caller's state swapped back after, so a seed gives one model however
    often, and between what, ``train`` is called, and the caller's own draws are untouched.
    """

    def __init__(self, seed: int, device: torch.device) -> None:
        self.device = device if device.type == "cuda" else None
        with TORCH_GLOBAL_STATE, torch.random.fork_rng(devices=[self.device] if self.device is not None else []):
            torch.manual_seed(seed)
            self.cpu = torch.get_rng_state()
            self.gpu = torch.cuda.get_rng_state(self.device) if self.device is not None else None

    @contextmanager
    def active(self) -> Iterator[None]:
        cpu = torch.get_rng_state()
        gpu = torch.cuda.get_rng_state(self.device) if self.device is not None else None
        torch.set_rng_state(self.cpu)
        if self.device is not None:
            torch.cuda.set_rng_state(self.gpu, self.device)
        try:
            yield
        finally:
            self.cpu = torch.get_rng_state()
            torch.set_rng_state(cpu)
            if self.device is not None:
                self.gpu = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(gpu, self.device)


def _fit(
    s: dict[str, Any],
    d: dict[str, Any],
    stepper: _SupervisedStep,
    predictor: SlicePredictor | None,
    fit: _Fit,
    cancel: CancelToken | None,
) -> Generator[Progress, None, None]:
    """Run epochs until the budget is spent; yields a record per step and per epoch."""
    budget, sampler, dev = fit.budget, d["sampler"], s["dev"]
    classes = d["classes"]
    rng = _StepRNG(s["seed"], dev)
    epoch = 0
    while True:
        epoch += 1
        stepper.train()
        losses: list[float] = []
        extra: dict[str, list[float]] = {}
        cur_lr = s["lr"]
        for b in range(1, s["steps_per_epoch"] + 1):
            check(cancel)
            if fit.step > 0 and budget.out_of_time():
                fit.stopped = "time"
                break
            cur_lr = _lr_at(s["schedule"], s["lr"], budget.fraction(fit.step), fit.step, budget.warmup)
            stepper.set_lr(cur_lr)
            xb, yb = sampler.batch(s["batch"])
            with TORCH_GLOBAL_STATE, rng.active():  # another training's steps wait (device.TORCH_GLOBAL_STATE)
                values = stepper(xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True))
            losses.append(values["loss"])
            for k, v in values.items():
                if k != "loss":
                    extra.setdefault(k, []).append(v)
            fit.step += 1
            yield Progress(
                *budget.progress(epoch, fit.step, per_epoch=False),
                f"epoch {budget.of(epoch)} step {b}/{s['steps_per_epoch']}",
                {"epoch": epoch, "batch": b},
            )
        if not losses:
            return
        val_dice: float | None = None
        per: list[float | None] = [None] * len(classes)
        if predictor is not None:
            # in eval mode: batch norm with its running statistics (which the held-out slices
            # must not update) and no dropout, as the saved model will run; the next epoch's
            # stepper.train() switches back
            fit.model.network.eval()
            val_dice, per = _validate(predictor, d["val_x"], d["val_truth"], classes)
        fit.keep_if_best(val_dice if val_dice is not None else (epoch if predictor is None else -1.0), epoch)
        fit.accumulate(epoch)
        mean_loss = float(np.mean(losses))
        rec = {
            "epoch": epoch,
            "loss": mean_loss,
            "val_dice": val_dice,
            "val_dice_per_class": per,
            "elapsed_s": round(budget.elapsed(), 3),
            "lr": cur_lr,
            "steps": len(losses),
            **{k: float(np.mean(v)) for k, v in extra.items()},
        }
        fit.history.append(rec)
        vd = "n/a" if val_dice is None else f"{val_dice:.3f}"
        msg = f"epoch {budget.of(epoch)} loss {mean_loss:.4f} val Dice {vd}"
        log.info("%s (%.1f s, lr %.2g)", msg, rec["elapsed_s"], cur_lr)
        yield Progress(*budget.progress(epoch, fit.step, per_epoch=True), msg, dict(rec))
        if fit.stopped == "time" or budget.last_epoch(epoch):
            return
        if budget.out_of_time():
            fit.stopped = "time"
            return


def _guarded(model: Model, stepper: _SupervisedStep) -> Model:
    """Record the training steps skipped as non-finite, and fp32 where CPU bf16 was asked for."""
    model.info.train["skipped_steps"] = stepper.skipped
    if stepper.fp32_depths:
        model.info.train["bf16_fp32_depths"] = stepper.fp32_depths
    if stepper.failed_check:
        model.info.train["precision"] = "fp32"
        model.info.train["precision_fallback"] = f"CPU bf16 gradients failed a check ({stepper.failed_check}): fp32"
    if stepper.fell_back:
        model.info.train["precision"] = "fp32"
        model.info.train["precision_fallback"] = "bf16 gave non-finite steps: switched to fp32"
    return model


@takes_train_config
@python_numbers
def iter_train(
    image: Any,
    labels: Any,
    *,
    axis: int = _D.axis,
    arch: str = _D.arch,
    size: str | None = None,
    epochs: int | None = _D.epochs,
    minutes: float | None = _D.minutes,
    steps_per_epoch: int = _D.steps_per_epoch,
    batch: int | None = _D.batch,
    patch: int = _D.patch,
    lr: float = _D.lr,
    schedule: str = _D.schedule,
    loss: str = _D.loss,
    gamma: float = _D.gamma,
    boundary_weight: float = _D.boundary_weight,
    dropout: float | None = _D.dropout,
    average: float = _D.average,
    augment: bool = _D.augment,
    val_fraction: float = _D.val_fraction,
    seed: int = _D.seed,
    device: str = _D.device,
    precision: str = _D.precision,
    init: Model | str | os.PathLike | None = AUTO_START,
    blend: bool | None = None,
    context: int | None = None,
    mode: str = _D.mode,
    pixel_weight: float = _D.pixel_weight,
    axes: str | Sequence[int] | None = None,
    normalize: str | None = _D.normalize,
    two_d: bool | None = None,
    channel_axis: int | None = None,
    voxel_size: float | Sequence[float] | None = None,
    unit: str | None = None,
    class_names: Sequence[str] | dict[int, str] | None = None,
    nodata: float | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    config: TrainConfig | None = None,
    cancel: CancelToken | None = None,
    _candidate: bool = False,
) -> Generator[Progress, None, Model]:
    """Generator form of :func:`train`: yields :class:`Progress` records, returns the model.

    After every optimiser step it yields a light record with ``info={"epoch": e,
    "batch": b}``; after every epoch a record with ``info`` holding ``epoch``, ``loss``,
    ``val_dice``, ``val_dice_per_class``, ``elapsed_s``, ``lr`` and ``steps`` (with
    ``mode="pix2pix"`` also ``loss_adv`` and ``loss_d``). Progress counts epochs (or
    steps) when only ``epochs`` limits training, else per mille of the time budget.
    See :func:`train` for the parameters (``_candidate``: one of ``init="auto"``'s candidates,
    whose choice says what the kept one lacks).
    """
    normalize = _resolve_normalize(normalize, init)
    several = isinstance(image, (list, tuple)) and all(hasattr(i, "shape") for i in image)
    if channel_axis is None and not two_d:  # a file's channels (2-channel 2D images) are not slices (QA)
        from .io import refuse_file_channels

        for im in image if several else [image]:
            refuse_file_channels(im, "training without a channel axis")
    if out is not None:  # a model written into an input's store or folder (an output inside an input is refused)
        check_not_input(Path(out), [*(image if several else [image]), labels], option="--out")
    if is_no_nodata(nodata):  # "none" (as segment takes it): no value; a string in the model broke it (review s45)
        nodata = None
    if nodata is not None:  # voxels equal to it are without data (NaN), as NaN always is
        image = [mark_missing(i, nodata) for i in image] if several else mark_missing(image, nodata)
    if normalize == "slice":  # each volume levelled slice by slice along z, as the model will level its inputs
        if channel_axis is not None or two_d:
            raise InputError("normalize='slice' levels the slices of single-channel volumes: use normalize='image'")
        image = [level_slices(i, cancel=cancel) for i in image] if several else level_slices(image, cancel=cancel)
    elif not two_d and channel_axis is None:  # slices that disagree on the grey scale: say what would help
        for im in image if several else [image]:
            if isinstance(im, (str, os.PathLike)) or any(seen() is im for seen in _LEVEL_HINTED):
                continue  # init="auto" trains its candidates on the same image: it was looked at already
            with contextlib.suppress(TypeError):  # an array without weak references is looked at each time
                _LEVEL_HINTED.append(weakref.ref(im))
                del _LEVEL_HINTED[:-4]
            hint = level_hint(im)
            if hint:
                log.warning("%s", hint)
                break
    args = {
            "shapes": _shapes(image),
            "axis": axis,
            "arch": arch,
            "size": size,
            "epochs": epochs,
            "minutes": minutes,
            "steps_per_epoch": steps_per_epoch,
            "batch": batch,
            "patch": patch,
            "lr": lr,
            "schedule": schedule,
            "loss": loss,
            "gamma": gamma,
            "boundary_weight": boundary_weight,
            "dropout": dropout,
            "average": average,
            "augment": augment,
            "val_fraction": val_fraction,
            "seed": seed,
            "device": device,
            "precision": precision,
            "init": init,
            "blend": blend,
            "context": context,
            "mode": mode,
            "pixel_weight": pixel_weight,
            "axes": axes,
            "normalize": normalize,
            "two_d": two_d,
            "channel_axis": channel_axis,
            "out": out,
            "overwrite": overwrite,
    }  # fmt: skip
    if isinstance(init, str) and init == RANDOM_START:
        init = args["init"] = None
    if blend is not None and not isinstance(blend, bool):  # before init="auto" picks a start
        raise InputError(f"blend {blend!r} must be True, False or None (blend back only the pretrained start)")
    if isinstance(init, str) and init == AUTO_START:
        rest = {"image": image, "labels": labels, "voxel_size": voxel_size, "unit": unit, "cancel": cancel}
        rest["nodata"] = nodata  # recorded by each candidate (the image is marked already: marking again is a no-op)
        rest["class_names"] = class_names
        return (yield from _iter_auto_start(args, rest))
    s = _settings(args)
    with _holding(s["out_claim"]):  # a second run to the same model file is refused while this one trains
        budget = _Budget(s["epochs"], s["minutes"], s["steps_per_epoch"])
        d = _load_data(image, labels, s, cancel)
        first = d["pairs"][0][0]
        ndim = len(first.shape)
        vox = pick_voxel_size(voxel_size, unit, voxel_size_of(first), ndim=ndim)  # a bad one fails before training
        if voxel_size is None:  # labels painted on a resampled copy: said, as evaluate says it (QA s44)
            from .metrics import other_voxel_sizes

            for im, lab in d["pairs"]:
                msg = other_voxel_sizes(im, lab, ("image's", "labels'"), "they are paired")
                if msg and first_time("voxel-size", msg):  # once, not per candidate
                    log.warning("%s", msg)
        model, stepper, predictor = _build(s, d, cancel)
        model.info.class_names = _class_names(class_names, labels, model.info, s["init"])
        parent_created = model.info.created  # a fine-tuned start's (the shipped one's, a colleague's): not this model's
        model.info.created = datetime.now(UTC).isoformat(timespec="seconds")
        model.info.two_d = d["two_d"]
        if d["two_d"]:  # older versions refuse it instead of reading the images as one volume (QA s45)
            model.info.format_version = max(model.info.format_version, TWO_D_FORMAT_VERSION)
        inherited = (model.info.voxel_size, model.info.unit) if model.info.voxel_size else None  # from init
        vox = vox or pick_voxel_size(None, unit, inherited, ndim=ndim)
        if vox is not None:
            model.info.voxel_size, model.info.unit = [float(v) for v in vox[0]], vox[1]
        settings = _record(s, d, model)
        if s["init"] is not None:
            settings["parent_created"] = parent_created
            # which start exactly (QA s45: five shipped starts shared one time stamp): the digest outputs record
            settings["parent_sha256"] = _start_digest(s["init"])
        settings["nodata"] = nodata  # which grey value was no data (left out of bounds and annotations)
        settings["torch_threads"] = torch.get_num_threads()  # the weights depend on it (docs/train.md; QA s45)
        settings["provenance"] = _provenance(image, labels)
        fit = _Fit(model, budget, s["average"], candidate=_candidate)

        def validate() -> float | None:
            predictor.cancel = None  # type: ignore[union-attr]  # the final check runs also after a cancel
            return _validate(predictor, d["val_x"], d["val_truth"], d["classes"])[0]  # type: ignore[arg-type]

        check_kept = validate if predictor is not None else None
        # the weights training started from (the shipped start as matched to the classes), to blend back in
        start = _state(model) if _blends(blend, s["init"]) else None

        def finish() -> Model:
            done = _guarded(fit.finish(settings, predictor is not None, check_kept), stepper)
            if start is None:
                return done
            shipped = isinstance(s["init"], str) and s["init"] == PRETRAINED
            shares, margin = (START_BLENDS, START_BLEND_MARGIN) if shipped else (ROUND_BLENDS, 0.0)
            return _blend_start(done, start, check_kept, shares, margin)

        try:
            yield from _fit(s, d, stepper, predictor, fit, cancel)
        except Cancelled as e:
            fit.stopped = "cancelled"  # not the "epochs" it starts as: the model so far says it was cut short
            done = len(fit.history)
            err = Cancelled(f"training cancelled after {done} epoch{'s' if done != 1 else ''}")
            err.result = finish() if fit.best_state is not None else None  # type: ignore[attr-defined]
            log.info("%s; nothing written", err)
            raise err from e
        model = finish()
        if predictor is not None:  # each class's Dice for the weights kept (a blend or an average: not an epoch's)
            predictor.cancel = None
            model.info.train["val_dice_per_class"] = _validate(predictor, d["val_x"], d["val_truth"], d["classes"])[1]
            if d["painted_check"]:  # classes the held-out slices lack: scored on their own painted voxels
                model.info.train["painted_recall"] = _painted_recall(predictor, d["painted_check"])
        t = model.info.train
        log.info(
            "training finished after %d epochs (%s, %.1f s); kept %s (best epoch %d)",
            len(fit.history),
            fit.stopped,
            budget.elapsed(),
            f"the average of epochs {t['averaged_epochs'][0]}-{t['averaged_epochs'][1]}"
            if t["kept"] == "average"
            else f"epoch {fit.best_epoch}",
            fit.best_epoch,
        )
        if not _candidate:
            warn_unlearned(model.info)
        _save_out(model, s["out_claim"], overwrite)
    return model


def _kept_scores(info: ModelInfo) -> list[float | None] | None:
    """Each class's held-out Dice of the kept weights, else the best epoch's; None without validation."""
    per = (info.train or {}).get("val_dice_per_class")
    if per is None:
        rows = [h for h in info.history if h.get("val_dice") is not None and h.get("val_dice_per_class")]
        if not rows:
            return None
        per = max(rows, key=lambda h: h["val_dice"])["val_dice_per_class"]
    return list(per)


def unlearned_classes(info: ModelInfo) -> list[int]:
    """Classes the kept weights did not find on the held-out rows (validation Dice 0).

    A rare phase (a crack, 1 % of a catalyst) that the network never learned is otherwise
    dropped from every segmentation without a word. The kept weights' own scores
    (``info.train["val_dice_per_class"]``), else the best epoch's; empty without validation.
    """
    per = _kept_scores(info) or []
    return [int(c) for c, v in zip(info.classes, per) if v is not None and v == 0.0]


def unchecked_classes(info: ModelInfo) -> list[int]:
    """Classes with no annotated voxel in the held-out rows: whether they were learned is not known.

    A phase painted in one place is kept whole for training (a band never takes all of a class), so
    its validation Dice is n/a and the mean leaves it out: a rare phase the model never predicted
    trained with "validation Dice 0.81" and no word (QA). Only where bands of rows are held out
    (under 5 painted slices): with whole slices held out, a class painted in a third of the slices
    missed them in 20-52 % of splits (review). Empty without validation.
    """
    per = _kept_scores(info)
    if not per or all(v is None for v in per) or (info.train or {}).get("val_slices"):
        return []  # whole slices held out (5 or more painted): a class may miss them by chance, and is painted apart
    return [int(c) for c, v in zip(info.classes, per) if v is None]


def unlearned_painted(info: ModelInfo) -> dict[int, float]:
    """Classes no held-out slice holds whose own painted voxels the model mostly misses: ``{class: share found}``.

    Trained on those voxels, a model that labels under :data:`PAINTED_RECALL_MIN` of them as
    their class has not learned it (``info.train["painted_recall"]``, whole slices held out).
    """
    got = (info.train or {}).get("painted_recall") or {}
    return {int(c): float(v) for c, v in got.items() if v < PAINTED_RECALL_MIN}


def _said(info: ModelInfo, classes: list[int]) -> str:
    """``classes`` as ``'2 (nickel), 4'`` (a name where the model has one of its own)."""
    names = dict(zip(info.classes, info.class_names or []))
    return ", ".join(f"{c} ({names[c]})" if names.get(c) and names[c] != f"class {c}" else str(c) for c in classes)


def warn_unlearned(info: ModelInfo) -> None:
    """Log a warning naming each of :func:`unlearned_classes` and :func:`unchecked_classes`, with what helps."""
    missed = unlearned_classes(info)
    if missed:
        many = len(missed) > 1
        them = "them" if many else "it"
        log.warning(
            "%s %s not learned: the kept model found none of the held-out annotated voxels of %s (validation Dice "
            "0), so segmentations will miss %s: paint more of %s in more slices, train longer (more epochs or "
            "minutes), or check that %s in grey level from the phases around %s",
            "classes" if many else "class",
            _said(info, missed),
            "these classes" if many else "this class",
            them,
            them,
            "they differ" if many else "it differs",
            them,
        )
    missed_painted = unlearned_painted(info)
    if missed_painted:
        many = len(missed_painted) > 1
        log.warning(
            "%s %s in none of the held-out slices, and the model labels only %s of %s painted voxels as %s, on "
            "slices it trained on: it has not learned %s, and the validation Dice leaves %s out; paint %s in "
            "more slices, or check that %s in grey level from the phases around %s",
            "classes" if many else "class",
            _said(info, list(missed_painted)) + (" are" if many else " is"),
            ", ".join(f"{100 * v:.0f} %" for v in missed_painted.values()),
            "their" if many else "its",
            "such" if many else "it",
            "them" if many else "it",
            "them" if many else "it",
            "them" if many else "it",
            "they differ" if many else "it differs",
            "them" if many else "it",
        )
    unchecked = unchecked_classes(info)
    if unchecked:
        many = len(unchecked) > 1
        log.warning(
            "%s %s in none of the held-out annotated rows (all of %s painted voxels went to training): whether the "
            "model learned %s is not checked, and the validation Dice leaves %s out; paint %s in another slice or "
            "another place of a slice, then check the segmentation for %s",
            "classes" if many else "class",
            _said(info, unchecked) + (" are" if many else " is"),
            "their" if many else "its",
            "them" if many else "it",
            "them" if many else "it",
            "them" if many else "it",
            "them" if many else "it",
        )


def _class_names(given: Any, labels: Any, info: ModelInfo, init: Any) -> list[str]:
    """Names of the model's classes: ``given``, else the labels' store's, else a user's start model's, else "class N".

    The shipped start's names (the sample's phases) are never a user's classes' names: every 3-class model
    was called "pore / nickel / YSZ".
    """
    classes = list(info.classes)
    if given is None:
        from .io import read_class_names

        first = labels[0] if isinstance(labels, (list, tuple)) and labels else labels
        found = read_class_names(first) if isinstance(first, (str, os.PathLike)) else None
        if found is None and hasattr(first, "attrs"):  # a zarr array opened by the caller
            found = _names_in_attrs(first)
        if found is None and init is not None and not (isinstance(init, str) and init in _STARTS):
            return list(info.class_names)  # a fine-tuned model of the user's keeps its names
        given = found or {}
    if not isinstance(given, dict):
        given = names_by_label(given, classes, what="classes the labels hold")
    out = [str(given.get(c) or f"class {c}") for c in classes]
    if init is not None and not (isinstance(init, str) and init in _STARTS):
        _warn_swapped(dict(zip(classes, info.class_names)), dict(zip(classes, out)))
    return out


def _warn_swapped(before: dict[int, str], now: dict[int, str]) -> None:
    """Warn when the labels name a fine-tuned model's classes under other label values (ids swapped).

    The start network answers ``1`` for what it calls "pore"; annotations that paint pores as 3
    teach it the opposite of what it knows, and its phases come out renamed or mixed.
    """
    real = {n: c for c, n in before.items() if n != f"class {c}"}
    moved = sorted((c, n, real[n]) for c, n in now.items() if n in real and real[n] != c)
    if moved:
        said = ", ".join(f"{n!r} is {c} here but {old} in the model" for c, n, old in moved)
        log.warning(
            "the labels number the fine-tuned model's classes otherwise (%s): relabel the annotations to the "
            "model's label values, or train from scratch (init='random', --init random)",
            said,
        )


def _names_in_attrs(arr: Any) -> dict[int, str] | None:
    """``{label: name}`` from a zarr array's ``napari_xrayseg`` attributes (a predict output, the sample's truth)."""
    try:
        meta = dict(arr.attrs).get("napari_xrayseg") or {}
    except Exception:  # noqa: BLE001 - attributes of an unknown store: no names
        return None
    classes, names = meta.get("classes"), meta.get("class_names")
    if isinstance(classes, list) and isinstance(names, list) and len(classes) == len(names):
        return {int(c): str(n) for c, n in zip(classes, names)}
    return None


def _state(model: Model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.network.state_dict().items()}


def _lerp_state(start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], a: float) -> dict[str, torch.Tensor]:
    """``a * tuned + (1 - a) * start`` for floating-point entries; the others (counters) are ``tuned``'s."""
    return {  # the start may live on another device (self-training's original stays on the CPU)
        k: torch.lerp(start[k].to(device=t.device, dtype=t.dtype), t, a) if t.is_floating_point() else t
        for k, t in tuned.items()
    }


def _blend_start(
    model: Model,
    start: dict[str, torch.Tensor],
    validate: Callable[[], float | None] | None,
    shares: tuple[float, ...] | None = None,
    margin: float = 0.0,
) -> Model:
    """Keep ``a * fine-tuned + (1 - a) * start`` for the best validated ``a`` of ``shares``.

    ``shares`` defaults to :data:`START_BLENDS` (the shipped start's; :data:`ROUND_BLENDS` for a
    model of the user's continued). With ``margin`` > 0 the smallest ``a`` whose validation Dice
    is within ``margin`` of the best is kept (:data:`START_BLEND_MARGIN` for the shipped start);
    with 0 the best, a tie the larger ``a``.

    Batch norm's running statistics are blended with the weights; integer buffers (batches
    counted) are the fine-tuned model's. The scores of every ``a`` are recorded in
    ``info.train["start_blend"]``, the ``a`` kept in ``info.train["start_blend_kept"]``.
    """
    net = model.network
    tuned = _state(model)
    grid = START_BLENDS if shares is None else shares
    alphas = sorted({float(a) for a in grid}) if validate is not None else [float(START_BLEND)]
    scores: dict[float, float | None] = {}
    for a in alphas:
        if validate is not None and a < 1.0:  # the fine-tuned weights were validated by _Fit.finish
            net.load_state_dict(_lerp_state(start, tuned, a))
            net.eval()
        scores[a] = _finite(validate()) if validate is not None and a < 1.0 else model.info.train.get("val_dice")
    best = max(alphas, key=lambda a: (-1.0 if scores[a] is None else scores[a], a))
    if margin > 0 and scores[best] is not None:
        best = min(a for a in alphas if scores[a] is not None and scores[a] >= scores[best] - margin)  # type: ignore[operator]
    net.load_state_dict(_lerp_state(start, tuned, best))
    net.eval()
    model.info.train["start_blend"] = {f"{a:g}": None if v is None else round(v, 5) for a, v in scores.items()}
    model.info.train["start_blend_kept"] = best
    if best < 1.0:
        model.info.train["val_dice"] = scores[best]
    log.info("kept %.2f x the fine-tuned weights + %.2f x the pretrained start (validation Dice %s)",
             best, 1.0 - best, model.info.train["start_blend"])  # fmt: skip
    return model


def _blends(blend: bool | None, init: Any) -> bool:
    """Whether training blends its weights back with those it started from (``train``'s ``blend``)."""
    if blend is None:
        return isinstance(init, str) and init == PRETRAINED
    if blend and init is None:
        raise InputError("blend=True blends the trained weights back with the starting ones: give init (a model)")
    return blend


def _auto_start_fits(args: dict[str, Any]) -> str | None:
    """Why ``init="auto"`` trains from random weights only here, or None where the pretrained start fits."""
    if args["mode"] != "supervised" or args["channel_axis"] is not None or args["two_d"]:
        return "pix2pix, channels or 2D images"
    if args["dropout"] is not None or args["normalize"] == "fixed":  # "slice": levelled, then the image's bounds
        return "a dropout or normalisation other than the start's"
    if args["axes"] is not None and len(args["axes"]) > 1:
        return "several axes"
    try:
        start = read_model_info(pretrained_path())
    except XraysegError as e:  # a package installed without its weights
        return str(e)
    s = _settings({**args, "init": None, "blend": None, "out": None}, quiet=True)
    if s["arch"] != start.arch or (args["size"] or start.train.get("size")) != start.train.get("size"):
        return f"the architecture trained is {s['arch']} {args['size'] or ''}, the start is {start.arch} {start.size}"
    if args["context"] is not None and s["context"] != start.context:  # none given: fine-tuning keeps the start's
        return f"context {s['context']}, the start's is {start.context}"
    if s["val_fraction"] <= 0:
        return "no validation rows to choose the start by (val_fraction=0)"
    return None


def _relay(run: Generator[Progress, None, Model], lo: float, hi: float, tag: str) -> Generator[Progress, None, Model]:
    """Yield ``run``'s records as per mille of the whole ``init="auto"`` job (``lo``-``hi`` of it), tagged."""
    while True:
        try:
            p = next(run)
        except StopIteration as stop:
            return stop.value
        done = int(1000 * (lo + (hi - lo) * p.fraction))
        yield Progress(done, 1000, f"{tag} start: {p.message}", {**p.info, "start": tag})


def _iter_auto_start(args: dict[str, Any], rest: dict[str, Any]) -> Generator[Progress, None, Model]:
    """``init="auto"``: the pretrained start fine-tuned briefly against random weights; the better validated is kept.

    The pretrained candidate runs first (:data:`PRETRAINED_EPOCHS` epochs, or the ``epochs``
    given if fewer; with ``minutes``, at most :data:`AUTO_PRETRAINED_SHARE` of them), and again
    for :data:`LONG_PRETRAINED_EPOCHS` where its blend kept little of the start; the random
    start then gets the ``epochs`` given and what is left of ``minutes``, so the budget is the
    user's. Both are validated on the same held-out rows; a tie keeps the pretrained start
    (:func:`_pick_start`).
    """
    kw = {k: v for k, v in args.items() if k != "shapes"}
    why = _auto_start_fits(args)
    if why is not None:
        log.info("init='auto': training from random weights (%s)", why)
        return (yield from iter_train(**rest, **{**kw, "init": None, "blend": None}))
    out_claim = _out_claim(args["out"], args["overwrite"], args["init"])  # before any work, as iter_train does
    with _holding(out_claim):
        t0 = time.perf_counter()
        epochs, minutes = args["epochs"], args["minutes"]
        pre_epochs = min(PRETRAINED_EPOCHS, epochs) if epochs else PRETRAINED_EPOCHS
        total_epochs = epochs or (None if minutes is not None else DEFAULT_EPOCHS)
        # the pretrained candidate's part of the progress bar: of the epochs, or of the time it may take (at most
        # AUTO_PRETRAINED_SHARE of the minutes; 0.1 made a 5-minute run say "about 24 min left")
        share = pre_epochs / (pre_epochs + total_epochs) if total_epochs else AUTO_PRETRAINED_SHARE
        pre_kw = {**kw, "init": PRETRAINED, "arch": AUTO_ARCH, "size": None, "context": None, "out": None}
        pre_kw.update(epochs=pre_epochs, minutes=None if minutes is None else minutes * AUTO_PRETRAINED_SHARE)
        log.info("init='auto': fine-tuning the pretrained start %d epochs, then random weights", pre_epochs)
        pre = yield from _relay(iter_train(**rest, **pre_kw, _candidate=True), 0.0, share, PRETRAINED)
        spent = (time.perf_counter() - t0) / 60.0
        long_epochs = min(LONG_PRETRAINED_EPOCHS, epochs) if epochs else LONG_PRETRAINED_EPOCHS
        left = None if minutes is None else (minutes - spent) * AUTO_PRETRAINED_SHARE
        kept = pre.info.train.get("start_blend_kept")
        if (
            kept is not None
            and kept >= LONG_FINE_TUNING_FROM
            and long_epochs > pre_epochs
            and (left is None or left > spent)
        ):
            # the start's weights added little back: 5 epochs were too few to adapt it (validation still rising)
            log.info(
                "init='auto': the blend kept %g of the fine-tuning; fine-tuning the start again, %d epochs",
                kept,
                long_epochs,
            )
            hi = share + (1.0 - share) * (long_epochs / (long_epochs + (total_epochs or long_epochs)))
            try:
                again = yield from _relay(
                    iter_train(**rest, **{**pre_kw, "epochs": long_epochs, "minutes": left}, _candidate=True),
                    share,
                    hi,
                    PRETRAINED,
                )
            except Cancelled as e:  # the better validated of the two so far
                part = getattr(e, "result", None)
                e.result = _pick_start(_better(pre, part), None, time.perf_counter() - t0)  # type: ignore[attr-defined]
                raise
            va, vb = pre.info.train.get("val_dice"), again.info.train.get("val_dice")
            pre = _better(pre, again)
            pre.info.train["long_fine_tuning"] = {"epochs": [pre_epochs, long_epochs], "val_dice": [va, vb]}
            spent = (time.perf_counter() - t0) / 60.0
            share = hi
        rand_kw = {**kw, "init": None, "blend": None, "arch": pre.info.arch, "out": None}
        if minutes is not None:
            rand_kw["minutes"] = max(minutes - spent, 0.01)
            share = max(share, min(spent / minutes, 1.0))
        try:
            rand = yield from _relay(iter_train(**rest, **rand_kw, _candidate=True), share, 1.0, "random")
        except Cancelled as e:
            e.result = _pick_start(pre, getattr(e, "result", None), time.perf_counter() - t0)  # type: ignore[attr-defined]
            raise
        model = _pick_start(pre, rand, time.perf_counter() - t0)
        warn_unlearned(model.info)
        _save_out(model, out_claim, args["overwrite"])
    return model


def _better(a: Model, b: Model | None) -> Model:
    """``b`` where it validated higher than ``a``, else ``a``."""
    va = a.info.train.get("val_dice")
    vb = None if b is None else b.info.train.get("val_dice")
    return b if b is not None and vb is not None and (va is None or vb > va) else a


#: What ``info.train["starts"]`` keeps of each ``init="auto"`` candidate.
_START_SUMMARY = ("val_dice", "epochs_run", "elapsed_s", "epochs", "minutes", "stopped", "long_fine_tuning")


def _pick_start(pre: Model, rand: Model | None, elapsed: float) -> Model:
    """The ``init="auto"`` candidate with the higher validation Dice, its choice recorded.

    A tie keeps the pretrained start, and so does validation without an interface (strokes
    painted inside the phases: every candidate scores 1, a QA run kept random weights 0.11
    below the start on the whole volume): the start knows how interfaces look.
    """
    va = pre.info.train.get("val_dice")
    vb = None if rand is None else rand.info.train.get("val_dice")
    blind = pre.info.train.get("val_interface_pixels") == 0
    if blind and rand is not None:
        log.warning(
            "init='auto': the held-out annotations hold no interface between phases (strokes inside the phases?), "
            "so validation cannot tell the starts apart: kept the pretrained start"
        )
    keep_pre = rand is None or blind or (va is not None and (vb is None or va >= vb))
    model = pre if keep_pre else rand
    assert model is not None
    summary = {
        name: None if m is None else {k: m.info.train.get(k) for k in _START_SUMMARY}
        for name, m in ((PRETRAINED, pre), ("random", rand))
    }
    kept = PRETRAINED if keep_pre else "random"
    model.info.train = {**model.info.train, "init": AUTO_START, "start": kept, "starts": summary}
    model.info.train["elapsed_s"] = round(elapsed, 3)
    log.info(
        "init='auto': kept the %s start (validation Dice %s against %s)",
        kept,
        "n/a" if va is None else f"{va:.4f}",
        "n/a" if vb is None else f"{vb:.4f}",
    )
    return model


@takes_train_config
@python_numbers
def train(
    image: Any,
    labels: Any,
    *,
    axis: int = _D.axis,
    arch: str = _D.arch,
    size: str | None = None,
    epochs: int | None = _D.epochs,
    minutes: float | None = _D.minutes,
    steps_per_epoch: int = _D.steps_per_epoch,
    batch: int | None = _D.batch,
    patch: int = _D.patch,
    lr: float = _D.lr,
    schedule: str = _D.schedule,
    loss: str = _D.loss,
    gamma: float = _D.gamma,
    boundary_weight: float = _D.boundary_weight,
    dropout: float | None = _D.dropout,
    average: float = _D.average,
    augment: bool = _D.augment,
    val_fraction: float = _D.val_fraction,
    seed: int = _D.seed,
    device: str = _D.device,
    precision: str = _D.precision,
    init: Model | str | os.PathLike | None = AUTO_START,
    blend: bool | None = None,
    context: int | None = None,
    mode: str = _D.mode,
    axes: str | Sequence[int] | None = None,
    normalize: str | None = _D.normalize,
    two_d: bool | None = None,
    channel_axis: int | None = None,
    pixel_weight: float = _D.pixel_weight,
    voxel_size: float | Sequence[float] | None = None,
    unit: str | None = None,
    class_names: Sequence[str] | dict[int, str] | None = None,
    nodata: float | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    config: TrainConfig | None = None,
    cancel: CancelToken | None = None,
    progress: ProgressCallback | None = None,
) -> Model:
    """Train a 2D segmentation model from (sparse) annotations of volumes or 2D images.

    Parameters
    ----------
    image : array-like of shape (Z, Y, X) or (Y, X), or a list of them
        Intensities (numpy, dask, zarr or h5py). Only the annotated slices are loaded.
        A list trains on several (image, labels) pairs at once: volumes of different
        shapes, or independent 2D images (see ``two_d``).
    labels : array-like, or a list of them (one per image; ``None`` = not annotated)
        Same shape as ``image``; non-negative integer labels, 0 = not annotated. Slices
        may be partly painted. The classes are the sorted nonzero values present;
        output channel ``i`` of the model stands for ``classes[i]``.
    axis : int
        Slicing axis: every slice along it that holds annotations is used.
    arch : str
        Architecture (see :func:`~napari_xrayseg.core.models.architectures`), or ``"auto"``
        (the default): ``unet3d`` for single-channel volumes with at least 15 slices along
        ``axis`` given epochs or at least 5 minutes (the more accurate network on every
        benchmark preset given the time, docs/accuracy.md), else the 2.5D ``unet``
        (:func:`~napari_xrayseg.core.models.choose_arch`). A fine-tuned model (``init``)
        keeps its own.
    size : str, optional
        Architecture size preset (``"tiny"``, ``"small"``, ...); default ``TrainConfig.size``.
    epochs : int, optional
        Epochs of ``steps_per_epoch`` optimiser steps each, at most. Default: no cap
        when ``minutes`` is given (the whole time budget is used), else
        :data:`DEFAULT_EPOCHS` (40).
    minutes : float, optional
        Wall-clock budget, spent in full unless ``epochs`` runs out first; the
        learning-rate schedule decays over it.
    steps_per_epoch : int
        Optimiser steps per epoch (validation runs after each epoch).
    batch : int, optional
        Patches per step (sub-volumes for ``unet3d``); default: the architecture's
        (8; 4 for ``unet3d``, which then makes about twice the steps of a time budget), or
        the ``init`` model's architecture's when fine-tuning.
    patch : int
        Side of the square training patches (slices smaller than this are reflect-padded).
    lr : float
        Peak Adam learning rate.
    schedule : str
        ``"cosine"`` (default; decays over the epochs or the time budget), ``"step"``
        (x0.1 at each third) or ``"constant"``; all with a short linear warm-up.
    loss : str
        ``"dicece"``, ``"ce"``, ``"dice"`` or ``"dice_gamma"``; unannotated pixels never count.
    gamma : float
        Denominator exponent of ``"dice_gamma"``.
    boundary_weight : float
        Weight of the cross-entropy of annotated pixels on an interface (1 = off, the
        default; e.g. 3 puts the loss where the phases meet: docs/accuracy.md).
    dropout : float, optional
        Dropout probability in [0, 1) of a new model's dropout layers. ``None`` (default):
        :func:`~napari_xrayseg.core.models.default_dropout` of the architecture and size: 0.2
        for ``unet`` ``medium`` (the default), which keeps a net trained on a few slices of a
        noisy scan from memorising their noise; 0 for the others. A model given as ``init``
        keeps its own.
    average : float
        Share of the budget, at its end, whose epochs' weights are averaged into the model
        returned (stochastic weight averaging, batch norm's running statistics averaged
        too). 0.5 (default): the epochs of the budget's second half. On the hard
        benchmark, three annotated slices and 200 epochs (about what ``minutes=10`` gives
        on 2 cores), the best-validation epoch scored 0.8983 mean Dice over four seeds,
        the average 0.9008, better on all four (docs/accuracy.md): the held-out rows of a
        few slices are too few to pick an epoch. The average is still validated, and if it scores more than
        :data:`AVERAGE_TOLERANCE` below the best epoch, that epoch is kept. 0: the
        best-validation epoch's weights (the behaviour before).
    augment : bool
        Random flips, 90° rotations, small rotations/zooms, intensity scale/shift,
        Gaussian noise and blur.
    val_fraction : float
        Fraction of the annotated slices held out for validation (at least one when
        there are two or more; with a single slice, a band of its annotated pixels).
        0 disables validation (the last weights are returned).
    seed : int
        Seed of the weights, the patch sampling, the augmentation and the split.
        Training on the CPU is deterministic for a given seed.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    precision : str
        Arithmetic of the training steps; the weights stay fp32. ``"auto"``: mixed
        precision on CUDA (bf16 where supported, else fp16 with loss scaling), bf16
        autocast on CPUs with AMX (2x the steps per second of fp32 there,
        docs/performance.md; pix2pix stays fp32 on CPU), else fp32: on CPUs with
        AVX512-BF16 but no AMX some bf16 weight gradients were not finite (docs/train.md).
        ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA only) force one. A step with a non-finite
        loss or gradient is skipped (``info.train["skipped_steps"]`` counts them); after
        :data:`NONFINITE_FALLBACK` in a row CPU bf16 is switched off for the run.
    init : Model, path-like, "auto", "pretrained", "random" or None
        Where the weights start. A model or model file: fine-tune it (its classes must
        equal the annotated classes and its context ``context``; it is not modified).
        ``"pretrained"``: the ``unet3d`` shipped with the package, trained on the full truth
        of synthetic PXCT scans (``models.pretrained_path``), its classes matched to the
        annotated ones by mean grey level (``models.reclass``; with fewer annotated classes
        than its three, each annotated class is the union of a group of its classes, grouped
        by its own predictions on the annotated slices), fine-tuned for
        :data:`PRETRAINED_EPOCHS` epochs unless ``epochs`` is given (``minutes`` then only
        caps them): longer fine-tuning on a few slices lost accuracy (docs/train.md);
        then blended back with the start, ``a * fine-tuned + (1 - a) * start`` for the best
        validated ``a`` of :data:`START_BLENDS` (``info.train["start_blend_kept"]``).
        ``"random"`` or None: random weights. ``"auto"`` (the default): where the
        pretrained start fits (a ``unet3d`` of its size and context, one channel, one
        axis, supervised, with validation rows), fine-tune it as ``"pretrained"`` does (and
        again for :data:`LONG_PRETRAINED_EPOCHS` where the blend kept little of the start,
        the better validated kept) and then train from random weights in the rest of the
        budget (the ``epochs`` given,
        what is left of ``minutes``), and return the one with the higher validation Dice
        (``info.train["start"]`` says which, ``info.train["starts"]`` holds both scores;
        progress then counts per mille of the whole); elsewhere random weights.
    blend : bool, optional
        After training from given weights, keep ``a * trained + (1 - a) * start`` for the
        best ``a`` by validation Dice (of :data:`START_BLENDS` for the shipped start, of
        :data:`ROUND_BLENDS` for a model given as ``init``, a tie the larger; for the shipped
        start the smallest within :data:`START_BLEND_MARGIN` of the best;
        without validation rows ``a`` = :data:`START_BLEND`): a weight-space ensemble of the
        start and its fine-tuning that scored above both on scans like the start's and
        steadied the rounds of the annotation loop (docs/accuracy.md, docs/annotate.md).
        None (the default): only when fine-tuning the shipped start (``"pretrained"``, and
        its candidate under ``"auto"``); True: also for a model given as ``init`` (as
        :func:`~napari_xrayseg.core.annotation.continue_training` does); False: never.
        Recorded in ``info.train["start_blend"]`` (the score of every ``a``) and
        ``["start_blend_kept"]``.
    context : int, optional
        Odd number of slices per input (1, 3, 5, ... up to 15): each slice is fed with
        its ``context // 2`` neighbours on each side along ``axis`` as input channels
        ("2.5D"), edge-replicated at the volume ends; only the middle slice needs
        annotations. Stored in the model (``info.context``) and used by ``segment``.
        Default: the ``init`` model's context when fine-tuning, else
        ``TrainConfig.context`` (3).
    axes : str or sequence of int, optional
        Also learn from slices along other axes, e.g. ``"zyx"`` (the first is the main
        ``axis``): sparse annotations on xy slices are annotated rows of xz and yz
        slices, and the masked loss learns from those rows. Suits isotropic volumes and
        orthoplane inference (``segment(..., axes="zyx")``). At most ``max(8, 4 x N)``
        slices per extra axis (N annotated slices along the main axis) are used.
    mode : str
        ``"supervised"`` (default): minimise the masked segmentation ``loss``.
        ``"pix2pix"``: train the network as the generator of a conditional GAN against
        a PatchGAN discriminator that sees (image, class map) pairs on annotated
        pixels, plus ``pixel_weight`` times the segmentation loss; only the generator
        is kept, so the model segments exactly like a supervised one
        (``info.train["mode"]`` records the mode, each history record ``loss_adv``
        and ``loss_d``). A step costs 1.4-2x a supervised one on the CPU.
    pixel_weight : float
        ``"pix2pix"`` only: weight of the segmentation loss against the adversarial
        loss (pix2pix's lambda).
    normalize : str, optional
        Default (None): a fine-tuned model's own (``init=`` a model file or Model trained
        with ``"fixed"`` or ``"slice"`` keeps it), else ``"image"``.
        ``"image"``: the model normalises every image it segments by that
        image's own percentile bounds, so another scan of the material with a
        grey-level offset or gain is mapped alike (``info.normalization`` keeps the
        training bounds as ``training_bounds``). ``"fixed"``: the training image's
        bounds are applied to every input. With several inputs, ``"image"`` normalises
        each input (each 2D image in ``two_d`` mode) by its own bounds ("per image"),
        ``"fixed"`` uses one set of bounds pooled over all inputs ("per dataset").
        ``"slice"``: as ``"image"``, after each slice along z is levelled onto the
        volume's typical grey scale (its 1st and 99th percentiles matched to theirs,
        :mod:`~napari_xrayseg.core.level`), for stitched or drifting scans whose
        slices disagree on the grey scale; the model levels every volume it segments
        the same way (model format version 3).
    two_d : bool, optional
        Declare the inputs independent 2D images (radiographs, micrographs): a 2D array is
        one image and a 3D array a stack of unrelated images along ``axis``. No image is
        ever given another as 2.5D context (``context`` defaults to 1; a larger one
        repeats the image itself), per-image normalisation is per 2D image, validation
        holds out whole images, and the model records the mode (``info.two_d``) so
        ``segment`` treats every slice of a stack it is given as an independent image.
        Default (None): on when several inputs are given and all are single 2D images.
    channel_axis : int, optional
        The images have channels along this axis (phase and absorption tomograms, dual
        energy, RGB): e.g. 1 for (Z, C, Y, X), 0 for (C, Y, X); the labels have the shape
        without it. Each channel is normalised by its own bounds (``normalize="image"``
        only); the network takes ``channels x context`` inputs; the model records the
        channel count and axis (``info.channels``, ``info.channel_axis``) and ``segment``
        refuses an image with another channel count.
    voxel_size : float or sequence of float, optional
        Voxel size of the training image, one number (isotropic) or one per axis (z, y, x),
        stored in the model (``info.voxel_size``, ``info.unit``) so that ``segment`` can warn
        when a volume of a very different voxel size is segmented. Default: what the image's
        file records (zarr/OME-Zarr, TIFF, HDF5 opened with
        :func:`~napari_xrayseg.open_volume`), else the ``init`` model's, else none.
    unit : str, optional
        Unit of ``voxel_size`` (default ``"um"``); without ``voxel_size``, the unit to
        convert the recorded voxel size to.
    class_names : sequence of str or dict, optional
        Names of the classes (one per class in the order of their label values, or
        ``{label: name}``), stored in the model and written with its segmentations. Default:
        what the labels' store records (a zarr written by ``xrayseg predict`` or ``sample``,
        an OME-Zarr label image), else a fine-tuned model's own, else ``"class N"``.
    nodata : float, optional
        A grey value that marks voxels without data (e.g. 0 outside a reconstruction's
        circular field of view); NaN always does. Such voxels are left out of the
        normalisation, filled from the nearest voxel with data as ``segment`` fills them,
        and their annotations are ignored.
    out : path-like, optional
        Save the trained model here (``.safetensors``) when training completes.
    overwrite : bool
        Replace an existing ``out``.
    config : TrainConfig, optional
        Options kept in one object: ``train(image, labels, config=TrainConfig(lr=1e-3))``
        is ``train(image, labels, lr=1e-3)``. The fields that differ from
        :class:`~napari_xrayseg.core.config.TrainConfig`'s defaults are used; a keyword
        given beside it wins.
    cancel : CancelToken, optional
        Checked at every step; see Raises.
    progress : callable, optional
        Called with every :class:`~napari_xrayseg.core.progress.Progress` record.

    Returns
    -------
    Model
        The model with the averaged weights (see ``average``), or the best validation
        epoch's, on ``device``, in eval mode; ``info.history`` holds one record per
        epoch, ``info.train`` the settings, the annotated slice indices, ``stopped``
        (``"epochs"``, ``"time"``, or ``"cancelled"`` in the model so far of a cancelled
        run), ``best_epoch`` and ``best_val_dice``, ``kept`` (``"average"`` or ``"best"``),
        ``averaged_epochs`` (first and last) and ``val_dice`` (the validation Dice of the
        weights returned); ``info.normalization``
        the normalisation (see ``normalize``).

    Raises
    ------
    InputError
        On mismatched shapes, non-integer or negative labels, no annotations, fewer
        than two annotated classes, NaN/inf or constant images, an ``init`` model with
        other classes, or bad settings (e.g. an unknown ``mode`` or ``arch``, or a
        ``patch`` that is not a multiple of the network's stride), slices smaller
        than the network's stride (e.g. an RGB image's colour axis), an ``out`` in an
        unwritable place, or image/labels storage that cannot be read (truncated).
    OutputExistsError
        If ``out`` exists and ``overwrite`` is False (checked before training, and again
        when saving: a file that appeared meanwhile is never replaced; then, as below,
        ``result`` holds the trained model).
    OutputWriteError
        If saving to ``out`` fails at the end (disk full, ...): its ``result``
        attribute holds the trained model, and an existing file at ``out`` is untouched.
    Cancelled
        If ``cancel`` was set; its ``result`` attribute holds the best model so far
        (``None`` if no epoch finished). Nothing is written to ``out``.
    TrainingInterrupted
        A ``KeyboardInterrupt``: the first Ctrl-C (in Jupyter, *Interrupt the kernel*)
        stops training at its next step, as a cancel does; the exception's ``result``
        holds the model so far (after it, in IPython or Jupyter: ``sys.last_value.result``),
        also saved to ``out`` if given (its ``saved``). A second Ctrl-C stops at once and
        keeps nothing. Only where Python lets a call set signal handlers (the main thread).

    Examples
    --------
    >>> from napari_xrayseg import make_phantom, segment
    >>> image, truth = make_phantom((4, 64, 64), seed=1)
    >>> sparse = np.zeros_like(truth)
    >>> sparse[::3] = truth[::3]
    >>> model = train(image, sparse, size="tiny", epochs=1, steps_per_epoch=2, batch=2, patch=32,
    ...               device="cpu")
    >>> model.info.classes
    [1, 2, 3]
    >>> segment(image, model, device="cpu").shape
    (4, 64, 64)
    """
    token = cancel if cancel is not None else CancelToken()
    got: list[int] = []
    note = "train: stopping after this step; the model so far comes with the KeyboardInterrupt (Ctrl-C again: quit)"
    try:
        with signals_cancel(token, note, got, term=False):
            return drain(
                iter_train(
                    image,
                    labels,
                    axis=axis,
                    arch=arch,
                    size=size,
                    epochs=epochs,
                    minutes=minutes,
                    steps_per_epoch=steps_per_epoch,
                    batch=batch,
                    patch=patch,
                    lr=lr,
                    schedule=schedule,
                    loss=loss,
                    gamma=gamma,
                    boundary_weight=boundary_weight,
                    dropout=dropout,
                    average=average,
                    augment=augment,
                    val_fraction=val_fraction,
                    seed=seed,
                    device=device,
                    precision=precision,
                    init=init,
                    blend=blend,
                    context=context,
                    mode=mode,
                    pixel_weight=pixel_weight,
                    axes=axes,
                    normalize=normalize,
                    two_d=two_d,
                    channel_axis=channel_axis,
                    voxel_size=voxel_size,
                    unit=unit,
                    class_names=class_names,
                    nodata=nodata,
                    out=out,
                    overwrite=overwrite,
                    cancel=token,
                ),
                progress,
            )
    except Cancelled as e:
        if not got:  # the caller's own token
            raise
        _interrupted(e, out, overwrite)


def _interrupted(e: Cancelled, out: str | os.PathLike | None, overwrite: bool) -> NoReturn:
    """Raise :class:`~napari_xrayseg.core.errors.TrainingInterrupted` with the model so far, saved to ``out``."""
    kept = getattr(e, "result", None)
    err = TrainingInterrupted(f"training interrupted ({e}) before an epoch finished: nothing kept")
    if kept is None:
        raise err from None
    err.result = kept
    where = "the model so far is this exception's result (in IPython/Jupyter: sys.last_value.result)"
    if out is not None:
        try:
            err.saved = str(save_model(kept, out, overwrite=overwrite))
            where = f"saved the model so far to {err.saved}; it is also this exception's result"
        except (OutputExistsError, OutputWriteError) as failed:
            where = f"could not save it to {out} ({failed}); {where}"
    err.args = (f"training interrupted ({e}): {where}",)
    raise err from None
