"""Network architectures and the model file format.

A model file is **one** ``.safetensors`` file: the weights as safetensors tensors
and, in the header's ``__metadata__`` under the key ``"napari_xrayseg"``, a JSON
document (the "sidecar") describing the architecture and its parameters, the class
label values and names, the input normalisation, the recommended tile size and the
training history.  Keeping both in one file means a model can't lose its sidecar,
and the file is written atomically (temporary file, then rename).

Loading never unpickles anything: the header is parsed as JSON with size bounds,
validated against a schema (known architecture, bounded parameters), the network
is built from it, and every tensor's name, shape and dtype is checked against that
network before a single weight is read.

The sidecar can be read without torch: ``read_model_info(path)``.
"""

from __future__ import annotations

import copy
import errno
import itertools
import json
import logging
import math
import os
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from .config import python_numbers
from .device import TORCH_GLOBAL_STATE
from .errors import InputError, ModelFileError, OutputExistsError, OutputWriteError, XraysegError
from .output import write_file
from .unet import UNet

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LEVEL_FORMAT_VERSION",
    "TWO_D_FORMAT_VERSION",
    "Model",
    "ModelInfo",
    "architectures",
    "build_network",
    "default_context",
    "default_dropout",
    "default_size",
    "describe_architecture",
    "init_model",
    "load_model",
    "pretrained_path",
    "read_model_info",
    "class_groups",
    "class_map",
    "reclass",
    "save_model",
    "with_context",
]

log = logging.getLogger(__name__)

FORMAT = "napari-xrayseg-model"
FORMAT_VERSION = 4
#: The format version a model with class groups (``params["groups"]``, :func:`reclass`) is written
#: with; the others are written as version 1, which napari-xrayseg before groups reads.
GROUPS_FORMAT_VERSION = 2
#: The format version a model that levels its inputs slice by slice (``normalization["level"]``,
#: ``train(normalize="slice")``) is written with: older versions refuse it instead of segmenting unlevelled.
LEVEL_FORMAT_VERSION = 3
#: The format version a model of independent 2D images (``two_d``: each image normalised by its own
#: grey levels) is written with: napari-xrayseg before it read ``two_d`` models as volumes, one grey range
#: for a whole stack (QA s45: mean Dice 0.82 -> 0.38 on images of different exposure); files written
#: before as version 1 still load.
TWO_D_FORMAT_VERSION = 4
_META_KEY = "napari_xrayseg"
_MAX_HEADER = 16 * 1024 * 1024  # a sane header is a few kB; refuse absurd ones before reading
_PICKLE_MAGIC = (b"\x80",)  # raw pickle protocol 2+ (zip archives, torch.save's among them: _zip_message)
#: Dropout of a new ``unet`` of size ``medium`` that :func:`~napari_xrayseg.train` builds (see
#: :func:`default_dropout`).
TRAIN_DROPOUT = 0.2
#: Largest number of context slices (input channels, or the depth of a 3D network's sub-volumes) a model
#: may take. 63: the shipped start was pretrained at 47 (benchmarks/pretrain.py --context 47).
MAX_CONTEXT = 63

# --------------------------------------------------------------------------- registry
#
# Each architecture has size presets (``params``), a builder, a validator that bounds
# every parameter a model file may declare (so a hostile sidecar cannot make the loader
# build an absurd network), and a *stride*: tiles and training patches must be a
# multiple of it.  The stride is the smallest tile side at which the network maps an
# (N, C, s, s) input to (N, classes, s, s) in eval mode with the same geometry in every
# tile, i.e. its total downsampling -- doubled where the deepest level uses instance
# normalisation, which cannot normalise a single (1 x 1) pixel.  Inference
# (``model.info.stride``) and training rely on it; see docs/architectures.md.


def _presets(arch: str, table: dict[str, dict[str, Any]], size: str) -> dict[str, Any]:
    if size not in table:
        raise InputError(f"unknown {arch} size {size!r}: choose one of {list(table)}")
    return json.loads(json.dumps(table[size]))  # a deep copy: presets are never shared


def _check_choice(p: dict, key: str, choices: tuple[str, ...]) -> None:
    if p.get(key) not in choices:
        raise ModelFileError(f"architecture parameter {key}={p.get(key)!r} is not one of {list(choices)}")


def _is_dropout(v: Any) -> bool:
    """A dropout probability: a number (not a bool) in [0, 1)."""
    return not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v < 1


def _check_dropout(p: dict, key: str = "dropout") -> None:
    v = p.get(key)
    if not _is_dropout(v):
        raise ModelFileError(f"architecture parameter {key}={v!r} is not a number in [0, 1)")


# ---- unet: MONAI's UNet (strided convolutions down, transposed convolutions up, residual units),
# built by the MONAI-compatible plain-torch reimplementation in .unet (same weights; MONAI's import is slow)

_UNET = {
    "tiny": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
    "small": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1},
    "medium": {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2},
    "large": {"channels": [32, 64, 128, 256, 512], "strides": [2, 2, 2, 2], "num_res_units": 2},
}


def _unet_params(size: str, in_channels: int, out_channels: int, arch: str = "unet") -> dict[str, Any]:
    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "norm": "batch",
        "dropout": 0.0,
        **_presets(arch, _UNET3D if arch == "unet3d" else _UNET, size),
    }


def _unet_build(p: dict[str, Any], spatial_dims: int = 2, in_channels: int | None = None) -> torch.nn.Module:
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=p["in_channels"] if in_channels is None else in_channels,
        out_channels=p["out_channels"],
        channels=tuple(p["channels"]),
        strides=tuple(p["strides"]),
        num_res_units=p["num_res_units"],
        norm=p["norm"],
        dropout=float(p["dropout"]),
    )


def _unet_validate(p: dict[str, Any]) -> None:
    _check_int_list(p, "channels", 2, 8, 1, 1024)
    _check_int_list(p, "strides", len(p["channels"]) - 1, len(p["channels"]) - 1, 1, 2)
    _check_int(p, "num_res_units", 0, 4)
    if p.get("norm") not in ("batch", "instance"):
        raise ModelFileError(f"unet norm {p.get('norm')!r} is not 'batch' or 'instance'")
    if not isinstance(p.get("dropout"), (int, float)) or not 0 <= p["dropout"] < 1:
        raise ModelFileError(f"unet dropout {p.get('dropout')!r} is not a number in [0, 1)")


def _unet_stride(p: dict[str, Any]) -> int:
    # strided convolutions round odd sides up and the transposed ones double them: only
    # multiples of prod(strides) come back at their own size (others fail or grow)
    return int(math.prod(p["strides"])) * (2 if p["norm"] == "instance" else 1)


# ---- unet3d: MONAI UNet in 3D over the context slices (3D evidence for every output slice)

_UNET3D = {
    "tiny": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
    "small": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 2},
    "medium": {"channels": [24, 48, 96, 192], "strides": [2, 2, 2], "num_res_units": 2},
    "large": {"channels": [32, 64, 128, 256], "strides": [2, 2, 2], "num_res_units": 2},
}


class VolumeUNet(torch.nn.Module):
    """A 3D U-Net that takes a slice with its context slices and returns that slice's scores.

    ``forward`` maps (B, k, Y, X) -- a slice and ``k // 2`` neighbours on each side, as the
    2.5D networks get them -- to (B, classes, Y, X), the scores of the middle slice, so the
    model trains and predicts through the same slice machinery as every 2D network.
    Inside, the k slices are one 3D volume: the network sees the interfaces' extent in 3D.
    In training mode the middle slice is scored inside a random sub-volume of the context
    (random depth, random position), so that the network is right at every depth of a volume.
    ``forward_volume`` maps a whole run of consecutive slices (B, 1, D, Y, X) to
    (B, classes, D, Y, X) in one pass, which is how inference uses it (the predictor
    rebuilds the run from its context stacks, so each slice is computed once, not k times).
    The depth is padded (edge-replicated) to a multiple of the network's z stride.
    With ``p["groups"]`` (a start with fewer classes than its own, :func:`reclass`) the
    network keeps its ``out_channels`` scores and the softmax of its outputs gives each class
    the summed probabilities of one group of them: a class that is the union of the start's classes.
    """

    volumetric = True

    def __init__(self, p: dict[str, Any]) -> None:
        super().__init__()
        self.context = int(p["in_channels"])
        self.zstride = int(math.prod(p["strides"]))
        self.net = _unet_build(p, spatial_dims=3, in_channels=1)  # the k context slices are its depth
        self.groups: list[list[int]] | None = [list(g) for g in p["groups"]] if p.get("groups") else None
        # the random sub-volumes of training: train() seeds this, so a seed gives the same model
        self.generator: torch.Generator | None = None
        # padded depths whose training steps run in fp32 under CPU bf16 autocast: train() sets
        # them where this CPU's bf16 gradients fail a check (device.cpu_bf16_conv_faults)
        self.fp32_depths: frozenset[int] = frozenset()

    def training_depths(self) -> list[int]:
        """The padded depths of the sub-volumes :meth:`forward` trains on."""
        k, h = self.context, self.context // 2
        depths = range(h + 1, k + 1) if k >= 3 else [k]
        return sorted({d + (-d) % self.zstride for d in depths})

    def forward_volume(self, v: torch.Tensor) -> torch.Tensor:
        depth = v.shape[2]
        pad = (-depth) % self.zstride
        if pad:
            v = torch.nn.functional.pad(v, (0, 0, 0, 0, pad // 2, pad - pad // 2), mode="replicate")
        if self.training and depth + pad in self.fp32_depths and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                out = self.net(v.float())[:, :, pad // 2 : pad // 2 + depth]
        else:
            out = self.net(v)[:, :, pad // 2 : pad // 2 + depth]
        return out if self.groups is None else self._grouped(out)

    def _grouped(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores of the groups: ``logsumexp`` over each group's scores (a group of one: its score).

        ``log sum softmax(scores)`` over a group minus the same constant for every group (the
        log-sum-exp of all scores), which softmax, cross-entropy and argmax do not see: the
        groups' probabilities are exactly the sums of the scores' probabilities.
        """
        assert self.groups is not None
        return torch.stack(
            [scores[:, g[0]] if len(g) == 1 else torch.logsumexp(scores[:, g], dim=1) for g in self.groups], dim=1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[1] // 2
        if not self.training or x.shape[1] < 3:
            return self.forward_volume(x[:, None])[:, :, h]
        scores, lo = self.forward_dense(x)
        return scores[:, :, h - lo]

    def forward_dense(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Training: (B, k, Y, X) -> the scores of every slice of a random sub-volume, and its first slice.

        The sub-volume holds the middle slice, at a random depth, and at least half of the context:
        inference passes whole runs of slices, where each slice sits at another depth of the
        volume; trained on the middle alone, the network learns the middle's position from the
        padding and fails everywhere else. :meth:`forward` scores its middle slice; training scores
        every annotated slice of it where the context slices are annotated (``training._context_rows``).
        """
        h, k = x.shape[1] // 2, x.shape[1]
        if k < 3:
            return self.forward_volume(x[:, None]), 0
        g = self.generator
        depth = int(torch.randint(h + 1, k + 1, (), generator=g).item())
        lo = int(torch.randint(max(0, h - depth + 1), min(h, k - depth) + 1, (), generator=g).item())
        return self.forward_volume(x[:, None, lo : lo + depth]), lo


def _unet3d_build(p: dict[str, Any]) -> torch.nn.Module:
    return VolumeUNet(p)


def _unet3d_validate(p: dict[str, Any]) -> None:
    _unet_validate(p)
    groups = p.get("groups")
    if groups is None:
        return
    lists = isinstance(groups, list) and all(isinstance(g, list) and g for g in groups)
    flat = [c for g in groups for c in g] if lists else []
    if (
        not lists
        or not all(isinstance(c, int) and not isinstance(c, bool) for c in flat)
        or sorted(flat) != list(range(p["out_channels"]))
        or not 1 <= len(groups) < p["out_channels"]
    ):
        raise ModelFileError(f"unet3d groups {groups!r} do not split the {p['out_channels']} scores into fewer classes")


def _n_outputs(params: dict[str, Any]) -> int:
    """How many classes a network with these parameters scores (its groups, else its ``out_channels``)."""
    return len(params["groups"]) if params.get("groups") else int(params["out_channels"])


def _unet3d_params(size: str, in_channels: int, out_channels: int) -> dict[str, Any]:
    return _unet_params(size, in_channels, out_channels, arch="unet3d")


# ---- basicunet: MONAI BasicUNet (two 3x3 convs per level, max-pool down, deconv up; 4 levels)

_BASICUNET = {
    "tiny": {"features": [8, 8, 16, 32, 64, 8]},
    "small": {"features": [16, 16, 32, 64, 128, 16]},
    "medium": {"features": [32, 32, 64, 128, 256, 32]},  # MONAI's default
    "large": {"features": [64, 64, 128, 256, 512, 64]},
}


def _basicunet_params(size: str, in_channels: int, out_channels: int) -> dict[str, Any]:
    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "norm": "batch",
        "dropout": 0.0,
        **_presets("basicunet", _BASICUNET, size),
    }


def _basicunet_build(p: dict[str, Any]) -> torch.nn.Module:
    from monai.networks.nets import BasicUNet

    norm = ("instance", {"affine": True}) if p["norm"] == "instance" else "batch"
    return BasicUNet(
        spatial_dims=2,
        in_channels=p["in_channels"],
        out_channels=p["out_channels"],
        features=tuple(p["features"]),
        norm=norm,
        dropout=float(p["dropout"]),
        upsample="deconv",
    )


def _basicunet_validate(p: dict[str, Any]) -> None:
    _check_int_list(p, "features", 6, 6, 1, 1024)
    _check_choice(p, "norm", ("batch", "instance"))
    _check_dropout(p)


def _basicunet_stride(p: dict[str, Any]) -> int:
    # four 2x max-pools. The network pads odd sides itself, but then tiles would differ in
    # geometry; multiples of 16 keep every tile alike. Instance norm needs 2x2 at the bottom.
    return 16 * (2 if p["norm"] == "instance" else 1)


# ---- attentionunet: MONAI AttentionUnet (UNet with attention gates on the skip connections)

_ATTENTIONUNET = {
    "tiny": {"channels": [4, 8, 16], "strides": [2, 2]},
    "small": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2]},
    "medium": {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2]},
    "large": {"channels": [32, 64, 128, 256, 512], "strides": [2, 2, 2, 2]},
}


def _attentionunet_params(size: str, in_channels: int, out_channels: int) -> dict[str, Any]:
    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "dropout": 0.0,
        **_presets("attentionunet", _ATTENTIONUNET, size),
    }


def _attentionunet_build(p: dict[str, Any]) -> torch.nn.Module:
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(
        spatial_dims=2,
        in_channels=p["in_channels"],
        out_channels=p["out_channels"],
        channels=tuple(p["channels"]),
        strides=tuple(p["strides"]),
        dropout=float(p["dropout"]),
    )


def _attentionunet_validate(p: dict[str, Any]) -> None:
    _check_int_list(p, "channels", 2, 8, 1, 1024)
    _check_int_list(p, "strides", len(p["channels"]) - 1, len(p["channels"]) - 1, 1, 2)
    _check_dropout(p)


def _attentionunet_stride(p: dict[str, Any]) -> int:
    return int(math.prod(p["strides"]))  # batch norm throughout: 1x1 at the bottom is fine


# ---- segresnet: MONAI SegResNet (residual blocks with group norm, light decoder)

_SEGRESNET = {
    "tiny": {"init_filters": 8, "num_groups": 4, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
    "small": {"init_filters": 8, "num_groups": 8, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]},
    "medium": {"init_filters": 16, "num_groups": 8, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]},
    "large": {"init_filters": 32, "num_groups": 8, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]},
}


def _segresnet_params(size: str, in_channels: int, out_channels: int) -> dict[str, Any]:
    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "dropout": 0.0,
        "upsample": "nontrainable",
        **_presets("segresnet", _SEGRESNET, size),
    }


def _segresnet_build(p: dict[str, Any]) -> torch.nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(
        spatial_dims=2,
        init_filters=p["init_filters"],
        in_channels=p["in_channels"],
        out_channels=p["out_channels"],
        dropout_prob=float(p["dropout"]) or None,
        norm=("group", {"num_groups": p["num_groups"]}),
        blocks_down=tuple(p["blocks_down"]),
        blocks_up=tuple(p["blocks_up"]),
        upsample_mode=p["upsample"],
    )


def _segresnet_validate(p: dict[str, Any]) -> None:
    _check_int(p, "init_filters", 1, 64)
    _check_int(p, "num_groups", 1, 64)
    if p["init_filters"] % p["num_groups"]:
        raise ModelFileError(
            f"architecture parameter init_filters={p['init_filters']} is not a multiple of num_groups={p['num_groups']}"
        )
    _check_int_list(p, "blocks_down", 1, 5, 1, 8)
    _check_int_list(p, "blocks_up", len(p["blocks_down"]) - 1, len(p["blocks_down"]) - 1, 1, 8)
    _check_choice(p, "upsample", ("nontrainable", "deconv", "pixelshuffle"))
    _check_dropout(p)


def _segresnet_stride(p: dict[str, Any]) -> int:
    return 2 ** (len(p["blocks_down"]) - 1)  # group norm: 1x1 at the bottom is fine


@dataclass(frozen=True)
class _Arch:
    name: str
    description: str
    sizes: tuple[str, ...]
    default_size: str
    params: Any  # (size, in_ch, out_ch) -> dict
    build: Any  # dict -> nn.Module
    validate: Any  # dict -> None, raises ModelFileError
    stride: Any  # dict -> int
    default_context: int = 3  # slices per input of a new model when the user gives none
    default_batch: int = 8  # patches (sub-volumes) per training step when the user gives none
    # dropout of a model that train() builds when the user gives none, by size (absent: 0)
    train_dropout: tuple[tuple[str, float], ...] = ()


_ARCHS: dict[str, _Arch] = {
    "unet": _Arch(
        "unet",
        "MONAI UNet (residual units, batch norm)",
        tuple(_UNET),
        "small",
        _unet_params,
        _unet_build,
        _unet_validate,
        _unet_stride,
        # hard benchmark (docs/accuracy.md): 3 annotated slices are learnt in about 10 epochs,
        # then the medium 2.5D net memorises their noise; dropout 0.2 keeps it learning the
        # interfaces. The small net on the study's short schedule lost 0.003 with it: none there.
        train_dropout=(("medium", TRAIN_DROPOUT),),
    ),
    "unet3d": _Arch(
        "unet3d",
        "MONAI UNet in 3D over the context slices (interfaces placed with 3D evidence)",
        tuple(_UNET3D),
        "small",
        _unet3d_params,
        _unet3d_build,
        _unet3d_validate,
        _unet_stride,
        default_context=15,
        # hard benchmark with --minutes 10 (docs/accuracy.md): 4 sub-volumes per step (about 65
        # epochs) scored +0.0025 mean Dice over 8 (about 35 epochs) on both seeds.
        default_batch=4,
    ),
    "basicunet": _Arch(
        "basicunet",
        "MONAI BasicUNet (classic U-Net: two convs per level, max-pool, batch norm)",
        tuple(_BASICUNET),
        "small",
        _basicunet_params,
        _basicunet_build,
        _basicunet_validate,
        _basicunet_stride,
    ),
    "attentionunet": _Arch(
        "attentionunet",
        "MONAI AttentionUnet (U-Net with attention-gated skips)",
        tuple(_ATTENTIONUNET),
        "small",
        _attentionunet_params,
        _attentionunet_build,
        _attentionunet_validate,
        _attentionunet_stride,
    ),
    "segresnet": _Arch(
        "segresnet",
        "MONAI SegResNet (residual encoder, group norm, light decoder)",
        tuple(_SEGRESNET),
        "small",
        _segresnet_params,
        _segresnet_build,
        _segresnet_validate,
        _segresnet_stride,
    ),
}


def architectures() -> dict[str, tuple[str, ...]]:
    """Architecture names and their size presets.

    Examples
    --------
    >>> architectures()["unet"]
    ('tiny', 'small', 'medium', 'large')
    >>> sorted(architectures())
    ['attentionunet', 'basicunet', 'segresnet', 'unet', 'unet3d']
    """
    return {a.name: a.sizes for a in _ARCHS.values()}


#: ``train(arch=AUTO_ARCH)``: the architecture is chosen from the data (:func:`choose_arch`).
AUTO_ARCH = "auto"
#: The shortest time budget (minutes) for which ``"auto"`` picks ``unet3d``: its epochs cost 3x the
#: 2.5D net's, so short budgets favour the 2.5D net (built-in sample, 48x192x192, 2 CPU cores:
#: 2 minutes 0.951 against 0.956, 5 minutes 0.957 against 0.958; hard preset: 5 minutes 0.906
#: against 0.902, 10 minutes 0.907 against 0.901; 40 epochs, built-in sample: 0.960 against 0.958).
AUTO_3D_MINUTES = 5.0


def choose_arch(
    shapes: Sequence[tuple[int, ...]],
    *,
    axis: int = 0,
    axes: Any = None,
    channel_axis: int | None = None,
    context: int | None = None,
    two_d: bool | None = None,
    mode: str = "supervised",
    minutes: float | None = None,
) -> str:
    """The architecture ``train(arch="auto")`` trains on images of ``shapes``: ``unet3d`` or ``unet``.

    ``unet3d`` (interfaces placed with 3D evidence: the more accurate network on every
    benchmark preset given the time, docs/accuracy.md) for single-channel volumes with at
    least its 15 context slices along the training axis, trained along one axis with the
    supervised loss, with an epoch budget or at least :data:`AUTO_3D_MINUTES` minutes; else
    the 2.5D ``unet``: 2D images, stacks of independent 2D images, channels, several axes,
    pix2pix, thin volumes, a context given below 15, or a shorter time budget (its epochs
    cost a third of the 3D net's).

    Examples
    --------
    >>> choose_arch([(48, 160, 160)]), choose_arch([(512, 512)]), choose_arch([(8, 256, 256)])
    ('unet3d', 'unet', 'unet')
    >>> choose_arch([(48, 160, 160)], context=3), choose_arch([(48, 160, 160)], axes="zyx")
    ('unet', 'unet')
    >>> choose_arch([(48, 160, 160)], minutes=10), choose_arch([(48, 160, 160)], minutes=2)
    ('unet3d', 'unet')
    """
    k = default_context("unet3d")
    three_d = bool(shapes) and all(len(sh) == 3 and -3 <= axis < 3 and sh[axis] >= k for sh in shapes)
    simple = channel_axis is None and axes is None and not two_d and mode == "supervised"
    time = minutes is None or minutes >= AUTO_3D_MINUTES
    return "unet3d" if three_d and simple and time and (context is None or context >= k) else "unet"


def default_size(arch: str) -> str:
    """The size preset :func:`init_model` uses for ``arch`` when none is given.

    Raises
    ------
    InputError
        For an unknown architecture.

    Examples
    --------
    >>> default_size("basicunet")
    'small'
    """
    return _arch(arch).default_size


def default_batch(arch: str) -> int:
    """Patches per training step when none is given (4 sub-volumes for ``unet3d``, else 8).

    Examples
    --------
    >>> default_batch("unet"), default_batch("unet3d")
    (8, 4)
    """
    return _arch(arch).default_batch


def default_context(arch: str) -> int:
    """Context slices a new model of ``arch`` takes by default (15 for ``unet3d``, else 3).

    Examples
    --------
    >>> default_context("unet"), default_context("unet3d")
    (3, 15)
    """
    return _arch(arch).default_context


def default_dropout(arch: str, size: str | None = None) -> float:
    """Dropout that :func:`~napari_xrayseg.train` gives a new model of ``arch`` and ``size``.

    :data:`TRAIN_DROPOUT` for ``unet`` of size ``medium`` (the training default; measured on the
    hard benchmark, docs/accuracy.md), 0 for other sizes and architectures (a ``small`` unet on
    a short schedule lost accuracy with it; the rest was not measured). ``size`` defaults to the
    architecture's default size. :func:`init_model` itself keeps the preset's dropout (0)
    unless told otherwise.

    Examples
    --------
    >>> default_dropout("unet", "medium"), default_dropout("unet", "small"), default_dropout("segresnet")
    (0.2, 0.0, 0.0)
    """
    a = _arch(arch)
    return float(dict(a.train_dropout).get(size or a.default_size, 0.0))


def describe_architecture(arch: str) -> str:
    """One line saying what the architecture is (for help texts and docs).

    Examples
    --------
    >>> describe_architecture("segresnet").startswith("MONAI SegResNet")
    True
    """
    return _arch(arch).description


def _arch(name: str) -> _Arch:
    if name not in _ARCHS:
        raise InputError(f"unknown architecture {name!r}: choose one of {sorted(_ARCHS)}")
    return _ARCHS[name]


def _check_int(p: dict, key: str, lo: int, hi: int) -> None:
    v = p.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ModelFileError(f"architecture parameter {key}={v!r} is not an integer in [{lo}, {hi}]")


def _check_int_list(p: dict, key: str, nmin: int, nmax: int, lo: int, hi: int) -> None:
    v = p.get(key)
    if (
        not isinstance(v, list)
        or not nmin <= len(v) <= nmax
        or not all(isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in v)
    ):
        raise ModelFileError(
            f"architecture parameter {key}={v!r} is not a list of {nmin}-{nmax} integers in [{lo}, {hi}]"
        )


def build_network(arch: str, params: dict[str, Any]) -> torch.nn.Module:
    """Build an (untrained) network of a registered architecture from its parameters."""
    return _arch(arch).build(params)


# --------------------------------------------------------------------------- model object


@dataclass
class ModelInfo:
    """Everything about a model except its weights (the JSON sidecar).

    Attributes
    ----------
    arch : str
        Architecture name (see :func:`architectures`).
    params : dict
        Architecture parameters, enough to rebuild the network.
    classes : list of int
        Label value of each output channel (``classes[i]`` is written where channel i wins).
    class_names : list of str
        Human-readable names, same order as ``classes``.
    normalization : dict
        ``{"method": "percentile", "low": float | None, "high": float | None,
        "percentiles": [lo, hi]}``; ``None`` bounds are computed from each input image.
    tile : int
        Recommended tile side for inference.
    size : str or None
        Size preset the parameters came from.
    history : list of dict
        Per-epoch training records (``epoch``, ``loss``, ``val_dice``, ...).
    train : dict
        Training settings (empty for an untrained model).
    context : int
        Slices fed to the network per output slice (odd: 1, 3, 5, ...): the slice and
        ``context // 2`` neighbours on each side along the slicing axis, as input
        channels in order (see :func:`~napari_xrayseg.core.tiling.stack_context`).
        Equals ``params["in_channels"]``; 1 for plain slice-by-slice models.
    voxel_size : list of float or None
        Voxel size (z, y, x) of the data the model was trained on, in ``unit``; None when
        unknown (files written before napari-xrayseg recorded it read as None).
    unit : str or None
        Length unit of ``voxel_size`` ("nm", "um", ...).
    channels : int
        Image channels per slice (phase + absorption, RGB, ...): the network takes
        ``channels x context`` inputs, channel-major (every context slice of channel 0, then
        of channel 1, ...). 1 for single-channel images.
    channel_axis : int or None
        The channel axis of the training images (``train(..., channel_axis=)``), used for
        the images ``segment`` is given; None for single-channel models.
    two_d : bool
        Trained on independent 2D images (``train(..., two_d=True)``): a stack given to
        ``segment`` is a set of unrelated images, each its own context and (with
        per-image normalisation) its own percentile bounds.
    """

    arch: str
    params: dict[str, Any]
    classes: list[int]
    class_names: list[str]
    normalization: dict[str, Any] = field(
        default_factory=lambda: {"method": "percentile", "low": None, "high": None, "percentiles": [0.5, 99.5]}
    )
    tile: int = 256
    size: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=dict)
    context: int = 1
    voxel_size: list[float] | None = None
    unit: str | None = None
    two_d: bool = False
    channels: int = 1
    channel_axis: int | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    software: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = 1

    @property
    def in_channels(self) -> int:
        """Number of input channels the network takes."""
        return int(self.params["in_channels"])

    @property
    def stride(self) -> int:
        """Tile sides must be a multiple of this (the network's total downsampling)."""
        return _arch(self.arch).stride(self.params)

    @property
    def trained(self) -> bool:
        """Whether the model has a training history."""
        return bool(self.history)

    @property
    def validation(self) -> tuple[float | None, str]:
        """The validation Dice of the weights this model holds, and which weights they are.

        ``(dice, "average of epochs A-B")`` for a weight average, ``(dice, "epoch E")`` for
        the best-validation epoch (models trained before averaging have only these);
        ``dice`` is None without held-out annotations.

        A fine-tuning blended back with its start (``start_blend_kept`` < 1: the pretrained
        start, or the model a round of the annotation loop continued) says so, with the
        blend's validation Dice.

        >>> t = {"kept": "average", "averaged_epochs": [20, 40], "val_dice": 0.9}
        >>> ModelInfo("unet", {}, [1, 2], ["pore", "nickel"], train=t).validation
        (0.9, 'average of epochs 20-40')
        >>> t = {"kept": "best", "best_epoch": 5, "best_val_dice": 0.9, "val_dice": 0.92, "start_blend_kept": 0.3}
        >>> ModelInfo("unet3d", {}, [1, 2], ["pore", "nickel"], train=t).validation
        (0.92, 'epoch 5, 0.3 x it + 0.7 x the pretrained start')
        >>> ModelInfo("unet3d", {}, [1, 2], ["pore", "nickel"], train={**t, "init": "pretrained"}).validation
        (0.92, 'epoch 5, 0.3 x it + 0.7 x the pretrained start')
        >>> ModelInfo("unet3d", {}, [1, 2], ["pore", "nickel"], train={**t, "init": "model"}).validation
        (0.92, 'epoch 5, 0.3 x it + 0.7 x the model it started from')

        A self-trained model (``xrayseg self-train``) was validated on its own pseudo-labels:

        >>> st = {**t, "start_blend_kept": 1, "self_training": {"threshold": 0.9}}
        >>> ModelInfo("unet", {}, [1, 2], ["a", "b"], train=st).validation
        (0.9, 'epoch 5; against its own confident pseudo-labels, not your labels')

        With the user's annotations, they scored it (and chose the blend):

        >>> st["self_training"] |= {"label_blend_kept": 0.3, "label_dice": 0.85}
        >>> ModelInfo("unet", {}, [1, 2], ["a", "b"], train=st).validation[1]
        '0.3 x the self-trained weights + 0.7 x the model it started from, on your annotated slices (held out of \
the self-training)'
        """
        t = self.train or {}
        if t.get("kept") == "average" and t.get("averaged_epochs"):
            a, b = t["averaged_epochs"]
            val, which = t.get("val_dice"), f"average of epochs {a}-{b}"
        else:
            val, which = t.get("best_val_dice"), f"epoch {t.get('best_epoch')}"
        blend = t.get("start_blend_kept")
        if blend is not None and blend < 1:
            own = t.get("init") not in (None, "pretrained", "auto")  # a model given as init, a round
            start = "the model it started from" if own else "the pretrained start"
            val, which = t.get("val_dice"), f"{which}, {blend:g} x it + {1 - blend:g} x {start}"
        st = t.get("self_training")
        if st and st.get("label_blend_kept") is not None:  # scored on the user's annotations, held out
            a = st["label_blend_kept"]
            kept = (
                "the self-trained weights"
                if a == 1
                else "the model as it was"
                if a == 0
                else (f"{a:g} x the self-trained weights + {1 - a:g} x the model it started from")
            )
            return st.get("label_dice"), f"{kept}, on your annotated slices (held out of the self-training)"
        if st:  # held-out rows of its own pseudo-labels: agreement, not accuracy
            which += "; against its own confident pseudo-labels, not your labels"
        return val, which

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


@dataclass
class Model:
    """A network together with its :class:`ModelInfo`.

    Create one with :func:`init_model`, :func:`load_model` or ``train``.
    """

    network: torch.nn.Module
    info: ModelInfo
    path: Path | None = None

    def __repr__(self) -> str:
        i = self.info
        n = sum(p.numel() for p in self.network.parameters())
        state = f"trained {len(i.history)} epochs" if i.trained else "untrained"
        where = f", path={str(self.path)!r}" if self.path else ""
        ctx = f", context={i.context}" if i.context != 1 else ""
        ctx += ", two_d" if i.two_d else ""
        ctx += f", channels={i.channels}" if i.channels != 1 else ""
        return f"Model(arch={i.arch!r}, size={i.size!r}, classes={i.classes}{ctx}, parameters={n:,}, {state}{where})"


def _software() -> dict[str, str]:
    """Versions of Python and the packages behind a model (core/provenance.py)."""
    from .provenance import software

    return software()


def _default_names(classes: list[int]) -> list[str]:
    """``class N``: a user's classes are not the sample's phases (give the names: ``class_names=``)."""
    return [f"class {c}" for c in classes]


@python_numbers
def init_model(
    arch: str = "unet",
    *,
    size: str | None = None,
    classes: int | list[int] = 3,
    class_names: list[str] | None = None,
    context: int = 1,
    channels: int = 1,
    tile: int = 256,
    seed: int = 0,
    dropout: float | None = None,
) -> Model:
    """Create an untrained model of a registered architecture.

    Parameters
    ----------
    arch : str
        Architecture name, see :func:`architectures`.
    size : str, optional
        Size preset; the architecture's default when omitted.
    classes : int or list of int
        Number of classes (label values ``1..N``) or the explicit label values.
    class_names : list of str, optional
        Names for the classes.
    context : int
        Slices per input (odd, 1..31): the slice and ``context // 2`` neighbours on each
        side, fed as input channels ("2.5D"). 1 for plain slice-by-slice models.
    channels : int
        Image channels (1..16); the network takes ``channels x context`` inputs.
    tile : int
        Recommended inference tile side.
    seed : int
        Seed for the initial weights.
    dropout : float, optional
        Dropout probability in [0, 1) of the network's dropout layers (every architecture
        has them); the size preset's (0) when omitted. It only acts in training.

    Returns
    -------
    Model

    Examples
    --------
    >>> m = init_model("unet", size="tiny", classes=3)
    >>> m.info.classes
    [1, 2, 3]
    """
    a = _arch(arch)
    size = size or a.default_size
    values = list(range(1, classes + 1)) if isinstance(classes, int) else [int(c) for c in classes]
    if len(values) < 2 or len(set(values)) != len(values) or not all(0 <= v <= 255 for v in values):
        raise InputError(f"classes {classes!r} must be at least 2 distinct label values in 0..255")
    if isinstance(context, bool) or not isinstance(context, int) or not 1 <= context <= MAX_CONTEXT or context % 2 == 0:
        raise InputError(f"context {context!r} must be an odd number of slices in 1..{MAX_CONTEXT}, e.g. 1 or 3")
    names = list(class_names) if class_names else _default_names(values)
    if len(names) != len(values):
        raise InputError(f"{len(names)} class names given for {len(values)} classes")
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 16:
        raise InputError(f"channels {channels!r} must be an integer in 1..16")
    if channels > 1 and arch == "unet3d":
        raise InputError("unet3d reads its context slices as depth and takes one channel: choose another arch")
    params = a.params(size, int(context) * channels, len(values))
    if dropout is not None:
        if not _is_dropout(dropout):
            raise InputError(f"dropout {dropout!r} must be a number in [0, 1), e.g. 0 (off) or {TRAIN_DROPOUT}")
        params["dropout"] = float(dropout)
    stride = a.stride(params)
    if isinstance(tile, bool) or not isinstance(tile, int) or not 8 <= tile <= 8192:  # what load_model accepts
        raise InputError(f"tile {tile!r} must be an integer in [8, 8192], a multiple of {stride}, e.g. 256")
    if tile % stride:
        raise InputError(f"tile {tile} is not a multiple of the network's stride {stride}")
    with TORCH_GLOBAL_STATE, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = a.build(params)
    info = ModelInfo(
        arch=arch,
        params=params,
        classes=values,
        class_names=names,
        tile=int(tile),
        size=size,
        context=int(context),
        channels=int(channels),
        software=_software(),
    )
    return Model(net.eval(), info)


# --------------------------------------------------------------------------- save / load


def model_file_path(path: str | os.PathLike) -> Path:
    """The model file a path names: ``.safetensors`` added to another suffix; a folder refused.

    Raises
    ------
    InputError
        If ``path`` is a folder or ends with a separator (QA: ``--out models/`` wrote
        ``models.safetensors`` beside the folder).
    """
    given = os.fspath(path)
    p = Path(path)
    if given.endswith(("/", os.sep)) or p.is_dir():
        raise InputError(f"model path {given} is a folder: give a file name, e.g. {p / 'model.safetensors'}")
    if p.suffix != ".safetensors":
        p = p.with_name(p.name + ".safetensors")
    if p.is_dir():
        raise InputError(f"model path {p} is a directory: give a file name ending in .safetensors")
    return p


def save_model(model: Model, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a model to one ``.safetensors`` file, atomically.

    Parameters
    ----------
    model : Model
        The model to save.
    path : path-like
        Target file; ``.safetensors`` is appended when it has another suffix.
    overwrite : bool
        Replace an existing file. Without it an existing file is never touched.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    OutputExistsError
        If ``path`` exists (or appears while writing) and ``overwrite`` is False.
    OutputWriteError
        If the file cannot be written (disk full, read-only or unwritable location);
        an existing file at ``path`` is left as it was.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    if not isinstance(model, Model):
        raise InputError(f"save_model needs a Model (from train, init_model or load_model), not {type(model).__name__}")
    path = model_file_path(path)
    info = replace(model.info, software=_software())
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.network.state_dict().items()}
    meta = {_META_KEY: json.dumps(info.to_dict()), "format": FORMAT}

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except SafetensorError as e:  # the writer's own error type for I/O failures
            raise OSError(errno.ENOSPC if "space" in str(e).lower() else errno.EIO, str(e)) from e
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())

    write_file(path, write, overwrite=overwrite, what="model file")
    model.path = path
    log.info("saved model to %s", path)
    return path


def rescue_model(model: Model, wanted: str | os.PathLike) -> Path | None:
    """Save a trained model that could not be written to ``wanted`` (a full disk) somewhere else.

    Tries the temporary folder, the home folder and the working folder, under a new name
    (``NAME-rescued-PID.safetensors``); returns where it went, or None where nothing could
    be written. Training runs for hours: its result is worth a second place.
    """
    import tempfile

    stem = Path(wanted).stem
    for folder in (tempfile.gettempdir, Path.home, Path.cwd):  # each asked only when needed (no $HOME: an error)
        try:
            name = f"{stem}-rescued-{os.getpid()}"
            path, k = Path(folder()) / f"{name}.safetensors", 1
            while path.exists():  # a napari session rescues more than once: one file each (review)
                k += 1
                path = path.with_name(f"{name}-{k}.safetensors")
            return save_model(model, path)
        except (XraysegError, OSError, RuntimeError, KeyError):
            continue
    return None


def save_or_rescue(model: Model, path: str | os.PathLike) -> tuple[Path, str | None]:
    """Save ``model`` to ``path``, else (a refused folder, a full disk) to a rescue file (:func:`rescue_model`).

    Returns
    -------
    (Path, str or None)
        Where the model went, and why not to ``path`` (None when it went there).

    Raises
    ------
    OutputWriteError, OutputExistsError
        Where nothing could be written at all.
    """
    try:
        return save_model(model, path), None
    except (OutputWriteError, OutputExistsError) as e:
        rescued = rescue_model(model, path)
        if rescued is None:
            raise
        return rescued, f"{e}; the model was saved to {rescued} instead: move it where you want it"


def raise_rescued(err: Exception, model: Model | None, wanted: str | os.PathLike) -> NoReturn:
    """Raise ``err`` (the model could not be saved to ``wanted``) retold with where ``model`` went instead.

    The model is saved by :func:`rescue_model`; ``err`` itself is raised where there is no model or
    nothing could be written. The CLI and the Train widget end a training this way.
    """
    rescued = rescue_model(model, wanted) if model is not None else None
    if rescued is None:
        raise err
    new = type(err)(f"{err}; the trained model was saved to {rescued} instead: move it where you want it")
    new.errno = getattr(err, "errno", None)  # type: ignore[attr-defined]  # a full disk stays ENOSPC
    raise new from err


def _zip_message(path: Path) -> str:
    """Why a zip archive given as a model file is not one: a bioimage.io package, a torch.save checkpoint, other."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        names = []
    if any(n.rsplit("/", 1)[-1] in ("rdf.yaml", "bioimageio.yaml") for n in names):
        return (
            f"{path} is a bioimage.io model package, not a model file: import it first with "
            "xrayseg import (import_bioimageio), which writes the .safetensors model"
        )
    if any(n.endswith("data.pkl") for n in names):
        return (
            f"{path} looks like a pickled PyTorch checkpoint; napari-xrayseg never unpickles "
            "model files (they can run code): export the weights to safetensors"
        )
    return f"{path} is a zip archive, not a safetensors model file"


def _read_header(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist: check the path")
    if path.is_dir():
        raise ModelFileError(f"model path {path} is a directory: give the .safetensors file")
    if not path.is_file():  # a FIFO or a device: reading it waited forever
        raise ModelFileError(f"model path {path} is not a regular file: give the .safetensors file")
    if zipfile.is_zipfile(path):
        raise ModelFileError(_zip_message(path))
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
            n = header_length(head)
            # A safetensors header length can start with byte 0x80 too (any length = 128 mod 256):
            # only call it a pickle when it is not a plausible safetensors file (JSON header next).
            plausible = plausible_header(head, size)
            # a truncated safetensors file (JSON next, too short for its header) is not a pickle either
            if len(head) < 9:  # before the pickle test: a safetensors file cut to 4 bytes can start 0x80 (QA s45)
                raise ModelFileError(f"{path} is not a safetensors model file (only {size} bytes)")
            if not plausible and (head.startswith(_PICKLE_MAGIC) and head[8:9] != b"{" or _old_pickle(path)):
                raise ModelFileError(
                    f"{path} looks like a pickled PyTorch checkpoint; napari-xrayseg never unpickles "
                    "model files (they can run code): export the weights to safetensors"
                )
            if n < 2 or n > _MAX_HEADER or 8 + n > size:
                raise ModelFileError(
                    f"{path} is not a valid safetensors model file (header length {n} "
                    f"for a file of {size} bytes): the file is truncated or of another format"
                )
            raw = head[8:] + fh.read(n - 1)
    except OSError as e:
        raise ModelFileError(f"cannot read model file {path}: {e.strerror or e}") from e
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # nested 100000 deep: not ours
        raise ModelFileError(f"{path} is not a valid safetensors model file (header is not JSON)") from e
    if not isinstance(header, dict):
        raise ModelFileError(f"{path} is not a valid safetensors model file (header is not a mapping)")
    header["__size__"] = size - 8 - n
    return header


def _validate_info(d: Any, path: Path) -> ModelInfo:
    def bad(msg: str) -> ModelFileError:
        return ModelFileError(f"{path}: invalid model description: {msg}")

    if not isinstance(d, dict):
        raise bad("not a JSON object")
    if d.get("format") != FORMAT:
        raise bad(f"format {d.get('format')!r} is not {FORMAT!r}")
    v = d.get("format_version")
    if not isinstance(v, int) or v < 1 or v > FORMAT_VERSION:
        raise bad(
            f"format_version {v!r} is not supported (this napari-xrayseg reads 1..{FORMAT_VERSION}); "
            "upgrade napari-xrayseg"
        )
    arch = d.get("arch")
    if not isinstance(arch, str) or arch not in _ARCHS:  # a list or object: unhashable (QA: a TypeError)
        raise bad(f"unknown architecture {arch!r} (known: {sorted(_ARCHS)})")
    params = d.get("params")
    if not isinstance(params, dict):
        raise bad("params is not an object")
    for key in ("in_channels", "out_channels"):
        try:
            _check_int(params, key, 1, 256)
        except ModelFileError as e:
            raise bad(str(e)) from None
    try:
        _ARCHS[arch].validate(params)
    except ModelFileError as e:
        raise bad(str(e)) from None
    if params.get("groups") and arch != "unet3d":  # only the 3D network groups its outputs (QA: an IndexError)
        raise bad(f"params has groups, which only a unet3d has (this is a {arch})")
    context = d.get("context", 1)
    if isinstance(context, bool) or not isinstance(context, int) or not 1 <= context <= MAX_CONTEXT or context % 2 == 0:
        raise bad(f"context {context!r} is not an odd integer in [1, {MAX_CONTEXT}]")
    channels = d.get("channels", 1)
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 16:
        raise bad(f"channels {channels!r} is not an integer in [1, 16]")
    if context * channels != params["in_channels"]:
        got = f"context {context}" + (f" x channels {channels}" if channels > 1 else "")
        raise bad(
            f"{got} does not match in_channels {params['in_channels']} "
            "(the network takes one input channel per context slice of each image channel)"
        )
    ca = d.get("channel_axis")
    if ca is not None and (isinstance(ca, bool) or not isinstance(ca, int) or not 0 <= ca <= 3):
        raise bad(f"channel_axis {ca!r} is not null or an integer in [0, 3]")
    classes = d.get("classes")
    if (
        not isinstance(classes, list)
        or len(classes) != _n_outputs(params)
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise bad(f"classes {classes!r} must be {_n_outputs(params)} distinct integers in 0..255")
    if params.get("groups") and v < GROUPS_FORMAT_VERSION:
        raise bad(f"params has groups, which format_version {v} does not have")
    names = d.get("class_names")
    if (
        not isinstance(names, list)
        or len(names) != len(classes)
        or not all(isinstance(s, str) and len(s) <= 200 and _printable(s) for s in names)
    ):
        raise bad("class_names must be one short string per class, without control characters")
    norm = d.get("normalization")
    if not isinstance(norm, dict) or norm.get("method") != "percentile":
        raise bad(f"normalization {norm!r} is not a percentile normalisation")
    for key in ("low", "high"):
        x = norm.get(key)
        if x is not None and (not isinstance(x, (int, float)) or not math.isfinite(x)):
            raise bad(f"normalization {key}={x!r} is not a finite number or null")
    lo, hi = norm.get("low"), norm.get("high")
    if (lo is None) != (hi is None) or (lo is not None and not hi > lo):  # equal: a division by zero
        raise bad(f"normalization low={lo!r}, high={hi!r}: both null, or high above low")
    pct = norm.get("percentiles") or [0.5, 99.5]  # null: the default, as every reader takes it
    if not (
        isinstance(pct, list) and len(pct) == 2 and all(_finite_number(x) for x in pct) and 0 <= pct[0] < pct[1] <= 100
    ):  # QA: a traceback from numpy at the first segmentation, or a reversed grey scale without a word
        raise bad(f"normalization percentiles {pct!r} are not two numbers 0 <= low < high <= 100")
    level = norm.get("level")
    if level is not None and (level != "z" or v < LEVEL_FORMAT_VERSION):
        raise bad(f"normalization level={level!r}: only 'z', from format_version {LEVEL_FORMAT_VERSION}")
    tile = d.get("tile")
    if not isinstance(tile, int) or not 8 <= tile <= 8192:
        raise bad(f"tile {tile!r} is not an integer in [8, 8192]")
    for key, typ in (("history", list), ("train", dict), ("software", dict)):
        if not isinstance(d.get(key, typ()), typ):
            raise bad(f"{key} has the wrong type")
    vs = d.get("voxel_size")
    if vs is not None and (
        not isinstance(vs, list)
        or len(vs) not in (2, 3)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in vs)
    ):
        raise bad(f"voxel_size {vs!r} is not null or a list of 2 or 3 positive numbers")
    unit = d.get("unit")
    if unit is not None and (not isinstance(unit, str) or len(unit) > 20 or not _printable(unit)):
        raise bad(f"unit {unit!r} is not null or a short string")
    if why := _bad_train_record(d.get("train", {})):
        raise bad(f"train: {why}")
    if not isinstance(d.get("two_d", False), bool):
        raise bad(f"two_d {d.get('two_d')!r} is not true or false")
    known = {f for f in ModelInfo.__dataclass_fields__}
    return ModelInfo(**{k: v for k, v in d.items() if k in known})


def _finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _printable(text: str) -> bool:
    """No control characters: a name with a newline split a row of evaluate's table, an escape reached the terminal."""
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def _bad_train_record(t: dict[str, Any]) -> str | None:
    """What is wrong with the training record's fields that :attr:`ModelInfo.validation` and the figures read.

    They were trusted: a one-entry ``averaged_epochs`` or a string ``start_blend_kept`` loaded, then
    crashed export and the training-curves figure (QA).
    """
    ep = t.get("averaged_epochs")
    if ep is not None and not (isinstance(ep, list) and len(ep) == 2 and all(isinstance(e, int) for e in ep)):
        return f"averaged_epochs {ep!r} is not two epoch numbers"
    for key in ("start_blend_kept", "val_dice", "best_val_dice"):
        x = t.get(key)
        if x is not None and not _finite_number(x):
            return f"{key} {x!r} is not a number"
    st = t.get("self_training")
    if st is not None and not isinstance(st, dict):
        return f"self_training {st!r} is not an object"
    if isinstance(st, dict):
        for key in ("label_blend_kept", "label_dice"):
            if (x := st.get(key)) is not None and not _finite_number(x):
                return f"self_training.{key} {x!r} is not a number"
    return None


def _model_path(path: Any) -> Path:
    """``path`` as a Path; anything else (None, an array) is a one-line error, not a TypeError."""
    if isinstance(path, Model):
        raise InputError("a loaded Model was given where a model file is read: pass the Model itself, or its path")
    if isinstance(path, torch.nn.Module):  # its repr is the whole network: dozens of lines
        raise InputError(
            f"model is a bare torch network ({type(path).__name__}): give a Model (init_model, load_model, train) "
            "or a .safetensors file"
        )
    if not isinstance(path, (str, os.PathLike)):
        shown = repr(path)
        shown = shown if len(shown) <= 80 else f"{shown[:60]}... ({type(path).__name__})"
        raise InputError(f"model {shown} is neither a Model nor a file path: give a .safetensors file or a Model")
    return Path(path)


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read and validate a model file's description without loading weights (or torch work).

    Raises
    ------
    ModelFileError
        If the file is missing, not a napari-xrayseg safetensors file, or its description
        fails validation.
    """
    path = _model_path(path)
    header = _read_header(path)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or _META_KEY not in meta:
        raise ModelFileError(
            f"{path} is a safetensors file without a napari-xrayseg model description: "
            "create models with `xrayseg init-model` or `xrayseg train`"
        )
    try:
        d = json.loads(meta[_META_KEY])
    except (TypeError, json.JSONDecodeError, RecursionError) as e:
        raise ModelFileError(f"{path}: the model description is not valid JSON") from e
    ends = [
        v["data_offsets"][1] for v in header.values() if isinstance(v, dict) and len(v.get("data_offsets", ())) == 2
    ]
    ends = [e for e in ends if isinstance(e, int)]
    if ends and max(ends) > header["__size__"]:  # `model-info` printed it and exited 0
        raise ModelFileError(
            f"{path}: the weights need {max(ends):,} bytes, the file holds {header['__size__']:,}: truncated"
        )
    if ends and max(ends) < header["__size__"]:  # model-info passed it, loading said "may be truncated" (QA)
        raise ModelFileError(
            f"{path}: {header['__size__'] - max(ends):,} bytes follow the weights: not a file save_model wrote "
            "(data appended to it, or a damaged copy)"
        )
    return _validate_info(d, path)


def header_length(head: bytes) -> int:
    """The header length the first 8 bytes of a safetensors file declare (-1 for fewer than 9 bytes)."""
    return struct.unpack("<Q", head[:8])[0] if len(head) >= 9 else -1


def plausible_header(head: bytes, size: int) -> bool:
    """Whether a file of ``size`` bytes starting with ``head`` (9 bytes) can be safetensors.

    A sane header length, inside the file, and a JSON object next.
    """
    n = header_length(head)
    return 2 <= n <= _MAX_HEADER and 8 + n <= size and head[8:9] == b"{"


def _old_pickle(path: Path) -> bool:
    """Whether a file starts with a protocol 0/1 pickle (``torch.save(..., pickle_protocol=1)``, legacy files).

    Parsed with :mod:`pickletools` (reads opcodes, runs nothing) up to its STOP: such files were called
    "truncated or of another format" (QA), protocol 2+ ones are told by their first byte.
    """
    import pickletools

    with open(path, "rb") as fh:
        data = fh.read(1 << 16)
    if data[:1] not in (b"(", b"c", b"}", b"]"):
        return False
    try:
        return any(op.name == "STOP" for op, _, _ in pickletools.genops(data))
    except Exception:  # noqa: BLE001 - not a pickle, or one longer than the bytes read: say nothing
        return False


_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.float64: "F64",
    torch.int32: "I32",
}


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Model:
    """Load a model file safely (no unpickling; shapes checked before weights are used).

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_model`.
    device : str or torch.device
        Where to put the network.

    Returns
    -------
    Model

    Raises
    ------
    ModelFileError
        If the file is missing, truncated, of another format, or its tensors do not match
        the architecture it declares.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _model_path(path)
    header = _read_header(path)
    info = read_model_info(path)
    with torch.device("meta"):  # shapes only, no memory: a 1 kB file declaring a huge network allocated 6 GB
        expected = build_network(info.arch, info.params).state_dict()
    found = {k: v for k, v in header.items() if k not in ("__metadata__", "__size__")}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise ModelFileError(
            f"{path}: tensors do not match the declared {info.arch} architecture "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''})"
        )
    for k, t in expected.items():
        entry = found[k]
        if (
            not isinstance(entry, dict)
            or list(entry.get("shape", [])) != list(t.shape)
            or entry.get("dtype") != _DTYPES.get(t.dtype)
        ):
            raise ModelFileError(
                f"{path}: tensor {k!r} has shape {entry.get('shape') if isinstance(entry, dict) else '?'} "
                f"{entry.get('dtype') if isinstance(entry, dict) else ''}, the declared architecture needs "
                f"{list(t.shape)} {_DTYPES.get(t.dtype)}"
            )
    need = sum(t.numel() * t.element_size() for t in expected.values())
    if need > header["__size__"]:  # the tensors the header lists do not fit in the file
        raise ModelFileError(
            f"{path}: the weights need {need:,} bytes, the file holds {header['__size__']:,}: truncated"
        )
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: cannot read the weights ({e}); the file may be truncated") from e
    bad = next((k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:  # it labelled every voxel alike, without a word
        raise ModelFileError(
            f"{path} holds NaN or infinite weights ({bad}): the training that wrote it diverged; train it again "
            "(a lower learning rate, precision fp32)"
        )
    var = next((k for k, t in state.items() if k.endswith("running_var") and bool((t < 0).any())), None)
    if var is not None:  # a variance below 0: the square root of it is NaN, every output NaN
        raise ModelFileError(
            f"{path} holds a negative batch-norm variance ({var}): the file is damaged; use another copy or train "
            "it again"
        )
    with torch.random.fork_rng(devices=[]):  # its random initial weights are replaced: the caller's draws stay
        net = build_network(info.arch, info.params)
    net.load_state_dict(state, strict=True)
    net.eval()
    from .device import resolve_device

    net.to(resolve_device(device))
    return Model(net, info, path)


# ---- the pretrained start shipped with the package

#: ``train(..., init=PRETRAINED)``: fine-tune the start shipped with the package instead of a
#: model file (``unet3d`` medium, context 15, 3 classes, trained on the full truth of a family of
#: synthetic PXCT scans; ``benchmarks/pretrain.py`` makes it, docs/accuracy.md measures it).
PRETRAINED = "pretrained"
#: ``train(..., init=AUTO_START)``: where the pretrained start fits (a single-channel ``unet3d``
#: of its size and context, supervised, validated), fine-tune it briefly and train from random
#: weights in the rest of the budget, and keep whichever scores the higher validation Dice;
#: elsewhere random weights (``training._auto_start_fits``; docs/train.md).
AUTO_START = "auto"
#: ``train(..., init=RANDOM_START)``: random weights (the same as ``init=None``).
RANDOM_START = "random"
_PRETRAINED_FILE = "unet3d-medium-pretrained.safetensors"


def pretrained_path() -> Path:
    """The file of the pretrained start shipped with the package.

    Raises
    ------
    ModelFileError
        If the package was installed without it.
    """
    from importlib.resources import files

    path = Path(str(files("napari_xrayseg.weights") / _PRETRAINED_FILE))
    if not path.is_file():
        raise ModelFileError(
            f"the pretrained start {path} is missing from this installation: reinstall napari-xrayseg, "
            "or train from a random start (init=None, --init random)"
        )
    return path


def _head_dims(model: Model) -> dict[str, list[int]]:
    """The tensors whose shape depends on the number of classes, and along which dimensions."""
    info = model.info
    n = len(info.classes)
    other = build_network(info.arch, {**info.params, "out_channels": n + 1}).state_dict()
    dims: dict[str, list[int]] = {}
    for k, v in model.network.state_dict().items():
        w = other[k]
        if v.shape != w.shape:
            dims[k] = [i for i, (a, b) in enumerate(zip(v.shape, w.shape)) if a != b]
    return dims


def class_map(grey: Sequence[float], own: Sequence[float]) -> list[int]:
    """For each of the user's classes (mean grey ``grey``), the model's class (of mean grey ``own``) it starts from.

    The classes of both are put in order of grey level and matched in that order: with as many
    classes, rank to rank (so an inverted image still maps its darkest class to the model's
    darkest); with fewer, the increasing choice of the model's classes nearest in grey (a pore /
    solid scan takes the start's pore and the solid phase nearest its grey); with more, every
    model class used and neighbours in grey sharing one, the split nearest in grey.

    Examples
    --------
    >>> class_map([0.9, 0.2, 0.6], [0.1, 0.8, 0.5])  # same count: by rank
    [1, 0, 2]
    >>> class_map([0.28, 0.65], [0.28, 0.75, 0.58])  # pore / solid -> pore, YSZ
    [0, 2]
    >>> class_map([0.1, 0.3, 0.6, 0.8], [0.1, 0.8, 0.5])  # four classes: the two darkest share the pore
    [0, 0, 2, 1]
    """
    n, k = len(grey), len(own)
    mine, theirs = np.argsort(grey, kind="stable"), np.argsort(own, kind="stable")
    g, o = np.asarray(grey, float)[mine], np.asarray(own, float)[theirs]
    if n <= k:  # strictly increasing model ranks
        choices = itertools.combinations(range(k), n)
    else:  # non-decreasing and covering every model rank
        choices = (c for c in itertools.combinations_with_replacement(range(k), n) if len(set(c)) == k)
    best = min(choices, key=lambda c: float(np.abs(g - o[list(c)]).sum()))
    out = [0] * n
    for rank, user in enumerate(mine):
        out[int(user)] = int(theirs[best[rank]])
    return out


def _input_dim(net: torch.nn.Module, key: str) -> int | None:
    """The dimension of a weight tensor that indexes its layer's input channels (None: not a weight of a conv)."""
    name, _, leaf = key.rpartition(".")
    module = net.get_submodule(name) if name else net
    if leaf != "weight":
        return None
    if isinstance(module, torch.nn.modules.conv._ConvTransposeNd):
        return 0
    if isinstance(module, torch.nn.modules.conv._ConvNd | torch.nn.Linear):
        return 1
    return None


def class_groups(grey: Sequence[float], own: Sequence[float], votes: Any = None) -> list[list[int]]:
    """For fewer user classes than the model's: the model's classes whose union each user class is.

    Each user class first gets one model class of its own: by :func:`class_map` (grey level), or,
    with ``votes`` (``votes[c][j]``: voxels of the user's class ``j`` that the model calls its
    class ``c``, on the annotated slices), the one-to-one choice that finds the largest share of
    each user class's voxels. Every other model class joins the user class that holds most of
    the voxels it claims (with no votes for it, or none at all, the one nearest in grey). Grey
    alone cannot place a middle phase against "the rest", whose mean grey lies between; the
    model's own predictions can.

    Examples
    --------
    >>> class_groups([0.27, 0.65], [0.28, 0.75, 0.58])  # pore / solid
    [[0], [1, 2]]
    >>> class_groups([0.5, 0.57], [0.28, 0.75, 0.58], votes=[[90, 2], [80, 5], [10, 70]])  # the rest / YSZ
    [[0, 1], [2]]
    """
    n, k = len(grey), len(own)
    if not 1 <= n < k:
        raise InputError(f"class_groups is for fewer classes than the model's {k}, not {n}")
    v = None if votes is None else np.asarray(votes, dtype=float)
    if v is not None and (v.shape != (k, n) or not np.isfinite(v).all() or (v < 0).any()):
        raise InputError(f"votes must be a {k} x {n} table of counts")
    if v is None or not v.sum():
        first = class_map(grey, own)
        v = None
    else:
        share = v / np.maximum(v.sum(axis=0, keepdims=True), 1)
        first = list(max(itertools.permutations(range(k), n), key=lambda p: sum(share[c, j] for j, c in enumerate(p))))
    groups = [[c] for c in first]
    for c in range(k):
        if c in first:
            continue
        if v is not None and v[c].sum() > 0:
            j = int(np.argmax(v[c]))
        else:
            j = int(np.argmin([abs(g - own[c]) for g in grey]))
        groups[j].append(c)
    return [sorted(g) for g in groups]


def reclass(model: Model, classes: list[int], grey: list[float], votes: Any = None) -> Model:
    """A copy of ``model`` whose outputs are ``classes``, started from the model's classes they match.

    For a start whose classes mean nothing to the user (the shipped pretrained model's are the
    synthetic sample's). ``grey`` is the mean grey of each of ``classes`` in the user's
    annotations, the model's come from ``info.train["class_grey"]``.

    * As many classes: the output channels are reordered (:func:`class_map`) so that the
      user's darkest class takes the model's darkest one and so on.
    * Fewer (a pore / solid scan for a three-phase start): a ``unet3d`` keeps all its scores
      and each user class is the union of a group of the model's classes (:func:`class_groups`,
      by ``votes`` where given, else by grey level): the network gives at first exactly the
      probabilities the model gives those unions, and fine-tuning trains it through the sums.
      Other networks copy the matched channels of the layers that depend on the class count.
    * More: each output channel of those layers is a copy of the matched model channel's
      (:func:`class_map`), a channel fed in twice at half weight, so that the new network gives
      each class exactly its matched class's scores until fine-tuning tells them apart.

    Nothing starts from random weights.

    Examples
    --------
    >>> m = init_model("unet", size="tiny", classes=[1, 2, 3])
    >>> m.info.train["class_grey"] = [0.1, 0.8, 0.5]
    >>> reclass(m, [4, 7, 9], [0.9, 0.2, 0.6]).info.classes
    [4, 7, 9]
    """
    info = model.info
    own = info.train.get("class_grey")
    if own is None or len(own) != len(info.classes):
        raise InputError("model records no grey level per class (info.train['class_grey']): cannot match classes")
    if len(grey) != len(classes):
        raise InputError(f"{len(grey)} grey levels given for {len(classes)} classes")
    if info.params.get("groups"):
        raise InputError("the model already groups its classes: match classes from the start it was made from")
    # CPU copies: the new network is built on the CPU, and index tensors made here met a CUDA state (QA)
    state = {k: v.detach().cpu().clone() for k, v in model.network.state_dict().items()}
    params, version = dict(info.params), info.format_version
    if len(classes) < len(info.classes) and getattr(model.network, "volumetric", False):
        groups = class_groups(grey, own, votes)
        params["groups"], version = groups, max(version, GROUPS_FORMAT_VERSION)
        log.info("classes %s are the start's %s", list(classes), [[info.classes[c] for c in g] for g in groups])
    else:
        mapping = class_map(grey, own)
        index = torch.as_tensor(mapping)
        shares = torch.as_tensor([1.0 / mapping.count(c) for c in mapping])
        for k, ds in _head_dims(model).items():
            inp = _input_dim(model.network, k)
            for d in ds:
                state[k] = state[k].index_select(d, index)
                if d == inp:  # a channel fed in twice counts half each time
                    shape = [-1 if i == d else 1 for i in range(state[k].ndim)]
                    state[k] = state[k] * shares.to(state[k].dtype).view(shape)
        params["out_channels"] = len(classes)
        log.info("classes %s start from the start's %s", list(classes), [info.classes[m] for m in mapping])
    net = build_network(info.arch, params)
    net.load_state_dict(state)
    new = copy.deepcopy(info)
    new.params, new.classes, new.class_names = params, list(classes), _default_names(list(classes))
    new.history, new.train, new.format_version = [], {}, version
    return Model(net, new)


def with_context(model: Model, context: int) -> Model:
    """A copy of a ``unet3d`` model that reads ``context`` slices: the same weights, another depth.

    A 3D network's weights do not depend on its context (the slices are its depth, not its
    input channels). The context sets how deep the sub-volumes it trains on are (``context // 2
    + 1`` to ``context`` slices) and the halo of slices a slab is read with in inference, so a
    start can be trained deeper and written shallower (``benchmarks/pretrain.py --out-context``;
    docs/accuracy.md, session 25).

    Examples
    --------
    >>> m = init_model("unet3d", size="tiny", classes=3, context=15)
    >>> with_context(m, 23).info.context, with_context(m, 23).info.params["in_channels"]
    (23, 23)
    """
    if not getattr(model.network, "volumetric", False):
        raise InputError(
            f"{model.info.arch} reads its context slices as input channels: its weights depend on the context, "
            "so it cannot be given another one (only unet3d can)"
        )
    if isinstance(context, bool) or not isinstance(context, int) or not 3 <= context <= MAX_CONTEXT or context % 2 == 0:
        raise InputError(f"context {context!r} must be an odd number of slices in 3..{MAX_CONTEXT}, e.g. 15")
    params = {**model.info.params, "in_channels": context}
    net = build_network(model.info.arch, params)
    net.load_state_dict(model.network.state_dict())
    info = copy.deepcopy(model.info)
    info.params, info.context = params, context
    return Model(net.to(next(model.network.parameters()).device), info)
