"""Model exchange with the BioImage Model Zoo (bioimage.io model description 0.5).

:func:`export_bioimageio` writes a napari-xrayseg model as a bioimage.io model package
(a zip) that other tools run -- ``bioimageio.core``, ilastik, deepImageJ, the Model Zoo:

- weights as **TorchScript** (the network followed by a softmax over the classes: the
  output is one probability map per class, channel ``i`` for label value ``classes[i]``);
- axes ``batch, channel, y, x``; the input channels are the model's context slices
  (``slice-1, slice, slice+1`` for context 3), the output channels its class names;
- the normalisation as preprocessing: a trained model's stored bounds as ``scale_linear``
  (the same arithmetic as :func:`~napari_xrayseg.core.normalize.apply_normalization`); a
  model without bounds as ``scale_range`` with its percentiles per sample (napari-xrayseg
  computes them over a sample of the whole volume instead: see docs/bioimageio.md); both
  followed by ``clip`` to -1 .. 2, as napari-xrayseg clips;
- a test input (a crop of the given image, or of the synthetic sample) and, as test
  output, what napari-xrayseg's own predictor makes of it;
- no output halo (bioimage.io tools would pad it at the image border too and so change the
  border against napari-xrayseg); the README gives the overlap tiles need (receptive field);
- a generated README.md, authors, licence, citations, class names, and the model's
  training metadata (``config.napari_xrayseg``);
- the napari-xrayseg model file itself as an attachment, from which
  :func:`import_bioimageio` restores it bit for bit, never unpickling anything.

Export needs the ``bioimageio`` extra (``pip install "napari-xrayseg[bioimageio]"``),
imported only when used; import needs nothing beyond napari-xrayseg.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ModelFileError
from .models import Model, ModelInfo, describe_architecture, load_model, save_model
from .normalize import CLIP
from .output import claim, write_file
from .progress import CancelToken, Progress, ProgressCallback, check, drain

__all__ = [
    "PACKAGE_MODEL_FILE",
    "export_bioimageio",
    "import_bioimageio",
    "iter_export_bioimageio",
    "iter_import_bioimageio",
    "package_test_input",
]

log = logging.getLogger(__name__)

#: Name of the napari-xrayseg model file inside a package (an attachment).
PACKAGE_MODEL_FILE = "napari_xrayseg.safetensors"
_CONFIG_KEY = "napari_xrayseg"
_PACKAGE_FORMAT = "napari-xrayseg-bioimageio"
_PACKAGE_FORMAT_VERSION = 1
_MAX_RDF = 4 * 1024 * 1024  # bytes of rdf.yaml read at most
_MAX_MODEL = 1024**3  # an attachment larger than this is not a napari-xrayseg model (the large ones: ~80 MB)
_NAME_BAD = re.compile(r"[^A-Za-z0-9_+\- ()]")
_EXTRA_HINT = 'pip install "napari-xrayseg[bioimageio]"'
_CITES = [
    {
        "text": "napari-xrayseg: deep-learning segmentation of X-ray tomograms",
        "url": "https://github.com/napari-xrayseg/napari-xrayseg",
    },
    {
        "text": "Cardoso et al. MONAI: An open-source framework for deep learning in healthcare (2022)",
        "doi": "10.48550/arXiv.2211.02701",
    },
    {
        "text": "Ronneberger et al. U-Net: Convolutional Networks for Biomedical Image Segmentation (MICCAI 2015)",
        "doi": "10.1007/978-3-319-24574-4_28",
    },
]


def _require_bioimageio() -> None:
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec  # noqa: F401
    except ImportError as e:
        raise InputError(
            f"exporting to bioimage.io needs the bioimageio extra ({e.name} is missing): {_EXTRA_HINT}"
        ) from None


# --------------------------------------------------------------------------- geometry


def _halo(model: Model) -> int:
    """Overlap tiles need: the receptive-field radius rounded up to the stride (the predictor's halo tiles)."""
    from .predictor import receptive_field
    from .tiling import pad_to_stride

    return pad_to_stride(receptive_field(model) // 2, model.info.stride)


def _min_side(model: Model) -> int:
    """Smallest input side the package accepts: the network's stride."""
    return model.info.stride


def _side(model: Model, want: int, limit: int | None) -> int:
    """The test input's side: the smallest valid side >= ``want``, no larger than ``limit``."""
    lo, s = _min_side(model), model.info.stride
    side = max(lo, lo + s * -(-(want - lo) // s))
    if limit is not None:
        if limit < lo:
            raise InputError(
                f"the test image is {limit} pixels wide, the package's smallest input is {lo}x{lo} "
                f"(the network's stride): give a larger --image"
            )
        side = min(side, lo + s * ((limit - lo) // s))
    return side


def _volumetric(model: Model) -> bool:
    """A 3D network (``unet3d``): packaged as a volume model (z axis), not a 2.5D one."""
    return bool(getattr(model.network, "volumetric", False))


def _depths(model: Model) -> tuple[int, int]:
    """(smallest, step) of the depths a 3D package takes.

    The depth plus the context halo on both sides is a multiple of the network's z stride,
    so the network pads nothing itself (a traced graph cannot vary that padding).
    """
    zs, h = int(model.network.zstride), model.info.in_channels // 2
    return (-2 * h) % zs or zs, zs


def _channel_names(k: int) -> list[str]:
    h = k // 2
    return ["slice" if j == h else f"slice{j - h:+d}" for j in range(k)]


# --------------------------------------------------------------------------- test data


def package_test_input(model: Model, image: Any = None, *, side: int = 128) -> np.ndarray:
    """The raw (not normalised) test input of a package, shape (1, k, S, S), float32.

    The middle slice of ``image`` with its ``k = context`` neighbours (edge-replicated at
    the ends, as in segmentation), cropped to an S x S square around its centre; without
    ``image``, a synthetic sample (:func:`~napari_xrayseg.core.sample.make_phantom`).
    S is the smallest size the package accepts that is at least ``side``.

    Raises
    ------
    InputError
        If ``image`` is not 2D/3D or smaller than the package's smallest input.
    """
    from .io import read_block
    from .tiling import stack_context

    k = model.info.in_channels
    if _volumetric(model):
        return _volume_test_input(model, image, side)
    if image is None:
        from .sample import make_phantom

        s = _side(model, side, None)
        img, _ = make_phantom((max(k, 2), s, s), seed=0)
        z0, z1, mid = 0, k, k // 2
    else:
        shape = tuple(image.shape)
        if len(shape) not in (2, 3):
            raise InputError(f"test image has shape {shape}: give a 2D (Y, X) or 3D (Z, Y, X) image")
        s = _side(model, side, min(shape[-2:]))
        n = 1 if len(shape) == 2 else shape[0]
        mid = n // 2
        z0, z1 = max(0, mid - k // 2), min(n, mid + k // 2 + 1)
        y0, x0 = (shape[-2] - s) // 2, (shape[-1] - s) // 2
        crop = (slice(y0, y0 + s), slice(x0, x0 + s))
        img = read_block(image, crop if len(shape) == 2 else (slice(z0, z1), *crop), what="test image")
        img = np.asarray(img, dtype=np.float32)[None] if len(shape) == 2 else np.asarray(img, np.float32)
        mid -= z0
        z0, z1 = 0, img.shape[0]
    stack = stack_context(img[mid : mid + 1], k, before=img[z0:mid], after=img[mid + 1 : z1])
    return np.ascontiguousarray(stack, dtype=np.float32)


def _volume_test_input(model: Model, image: Any, side: int) -> np.ndarray:
    """A 3D package's raw test input, shape (1, 1, D, S, S): the middle D slices of ``image``, centre crop."""
    from .io import read_block

    lo, step = _depths(model)
    depth = lo + step * -(-(max(model.info.in_channels, 2 * step) - lo) // step)
    if image is None:
        from .sample import make_phantom

        s = _side(model, side, None)
        return make_phantom((depth, s, s), seed=0)[0][None, None].astype(np.float32)
    shape = tuple(image.shape)
    if len(shape) != 3 or shape[0] < lo:
        raise InputError(
            f"test image has shape {shape}: a 3D model's package needs a volume of at least {lo} slices (--image)"
        )
    depth = min(depth, lo + step * ((shape[0] - lo) // step))
    s = _side(model, side, min(shape[-2:]))
    z0, y0, x0 = (shape[0] - depth) // 2, (shape[1] - s) // 2, (shape[2] - s) // 2
    block = read_block(image, (slice(z0, z0 + depth), slice(y0, y0 + s), slice(x0, x0 + s)), what="test image")
    return np.ascontiguousarray(block, dtype=np.float32)[None, None]


def _normalised(model: Model, raw: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The test input normalised as the package does (bounds from the model, else from every voxel of the input).

    The package's ``scale_range`` takes its percentiles over the whole test input; napari-xrayseg's
    own bounds sample up to 16 slices, which for a 3D model's 18-slice input gave other bounds,
    and the package failed its own test.
    """
    from .normalize import apply_normalization

    norm = dict(model.info.normalization)
    if norm.get("low") is None or norm.get("high") is None:
        pct = tuple(norm.get("percentiles") or (0.5, 99.5))
        lo, hi = np.percentile(raw[np.isfinite(raw)], pct)
        norm.update(low=float(lo), high=float(hi), percentiles=list(pct))
    return apply_normalization(raw, norm), norm


def _preprocessing(info: ModelInfo, volumetric: bool = False) -> list[dict[str, Any]]:
    norm = info.normalization
    steps: list[dict[str, Any]] = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
    if norm.get("low") is not None and norm.get("high") is not None:
        lo, hi = float(norm["low"]), float(norm["high"])
        steps.append({"id": "scale_linear", "kwargs": {"gain": 1.0 / (hi - lo), "offset": -lo / (hi - lo)}})
    else:
        p0, p1 = (float(p) for p in (norm.get("percentiles") or (0.5, 99.5)))
        axes = ["channel", "z", "y", "x"] if volumetric else ["channel", "y", "x"]
        kw = {"axes": axes, "min_percentile": p0, "max_percentile": p1}
        steps.append({"id": "scale_range", "kwargs": kw})
    steps.append({"id": "clip", "kwargs": {"min": CLIP[0], "max": CLIP[1]}})  # as apply_normalization clips
    return steps


def _preprocessing_text(info: ModelInfo) -> str:
    norm = info.normalization
    if norm.get("low") is not None and norm.get("high") is not None:
        whose = (
            "the image given at export, frozen into the package"
            if norm.get("frozen")
            else "the training image, stored in the model"
        )
        return (
            f"grey levels mapped linearly so that {norm['low']:.6g} -> 0 and {norm['high']:.6g} -> 1 "
            f"(the {norm.get('percentiles', [0.5, 99.5])} percentiles of {whose}), then clipped to -1 .. 2: "
            "`scale_linear` and `clip`, exactly as napari-xrayseg does"
        )
    p = norm.get("percentiles") or [0.5, 99.5]
    return (
        f"grey levels mapped linearly so that the {p[0]} and {p[1]} percentiles of each input go to 0 and 1 "
        "(`scale_range` per sample; napari-xrayseg takes them over a sample of the whole volume, so inputs "
        "that are part of a volume can differ slightly: export with fixed bounds for exactly its result), then "
        "clipped to -1 .. 2 (`clip`)"
    )


# --------------------------------------------------------------------------- export


def _trace(net: Any, x: np.ndarray, halo: int = 0) -> Any:
    """TorchScript of ``softmax(net(x), dim=1)`` traced on ``x`` (eval mode, CPU).

    A 3D network (``x`` of shape (B, 1, D, Y, X)) runs as napari-xrayseg runs a slab: the
    volume edge-replicated by the context ``halo`` in z, the network, the halo cropped.
    """
    import torch

    if x.ndim == 5:

        class _Volume(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, v: torch.Tensor) -> torch.Tensor:
                v = torch.nn.functional.pad(v, (0, 0, 0, 0, halo, halo), mode="replicate")
                y = self.net.forward_volume(v)
                return torch.softmax(y[:, :, halo : y.shape[2] - halo], dim=1)

        wrapped = _Volume().eval()
    else:
        wrapped = torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notes, MONAI's trace-time shape checks
        with torch.no_grad():
            return torch.jit.trace(wrapped, torch.from_numpy(x), check_trace=False)


def _cover(x: np.ndarray, probs: np.ndarray, path: Path) -> None:
    """A 2:1 PNG: the test input's middle slice (normalised grey) beside its segmentation (colours)."""
    from matplotlib.image import imsave

    from .units import LABEL_COLORS

    if x.ndim == 5:  # a volume: its middle slice
        x, probs = x[:, 0].copy(), probs[:, :, probs.shape[2] // 2]
    grey = np.clip(x[0, x.shape[1] // 2], 0, 1)
    labels = probs[0].argmax(0)
    colours = np.array(LABEL_COLORS)[labels % len(LABEL_COLORS)]  # class i shows as label value i + 1
    imsave(path, np.concatenate([np.repeat(grey[..., None], 3, axis=2), colours], axis=1))


def _input_text(info: ModelInfo, min_side: int, depths: tuple[int, int] | None) -> str:
    k = info.in_channels
    size = f"Height and width: multiples of {info.stride}, at least {min_side}."
    if depths:
        return (
            "Tensor `input`, axes `batch, channel, z, y, x`: a volume, one grey channel. The 3D network "
            f"sees each slice with {k // 2} neighbours on each side; the package pads the volume's ends "
            f"by repeating the end slices, as napari-xrayseg does. Depth: {depths[0]} + a multiple of "
            f"{depths[1]}. {size}"
        )
    ctx = (
        "one slice"
        if k == 1
        else f"a slice and its {k // 2} neighbours on each side along the slicing axis ({', '.join(_channel_names(k))})"
    )
    kind = "" if k == 1 else ': the model is "2.5D" (its output is the middle slice\'s segmentation)'
    return f"Tensor `input`, axes `batch, channel, y, x`. The channels are {ctx}{kind}. {size}"


def _readme(
    info: ModelInfo, name: str, description: str, min_side: int, halo: int, depths: tuple[int, int] | None = None
) -> str:
    tr = info.train or {}
    rows = "\n".join(f"| {i} | {c} | {n} |" for i, (c, n) in enumerate(zip(info.classes, info.class_names)))
    best, which = info.validation
    epochs = tr.get("epochs_run", len(info.history))
    valid = (
        f"Mean Dice on the validation slices held out during training: **{best:.4f}** ({which}; {epochs} epochs run)."
        if isinstance(best, (int, float))
        else "This model has no validation score: it was not trained with held-out slices"
        + (" (or not trained at all)." if not info.trained else ".")
    )
    return f"""# {name}

{description}

Exported from [napari-xrayseg](https://github.com/napari-xrayseg/napari-xrayseg): architecture
`{info.arch}` ({describe_architecture(info.arch)}), size `{info.size}`.

## Input

{_input_text(info, min_side, depths)}

Preprocessing: {_preprocessing_text(info)}.

## Output

Tensor `probabilities`, axes `batch, channel, {"z, " if depths else ""}y, x`: one probability map per class
(softmax over the channels). The segmentation is the argmax over the channels;
channel *i* stands for label value `classes[i]`:

| channel | label value | class |
|---|---|---|
{rows}

No output halo is declared: bioimage.io tools pad a declared halo at the image border too,
which changes the border pixels against napari-xrayseg (whose network sees the border as it
is). For tiled prediction of images too large to run whole, overlap the tiles by at least
{halo} pixels on each side (the receptive-field radius; napari-xrayseg's own halo tiles use it).

## Training

{_training_text(info)}

## Validation

{valid}

The package's test output is napari-xrayseg's own prediction for the test input
(`bioimageio test` checks that the TorchScript weights reproduce it).

## Use

- napari-xrayseg: `xrayseg import THIS.zip --out model.safetensors`, then segment with it
  (the attachment `{PACKAGE_MODEL_FILE}` is the original model file, restored bit for bit).
- bioimage.io tools: `bioimageio predict THIS.zip --inputs ...`, or ilastik, deepImageJ
  (TorchScript weights).
"""


def _training_text(info: ModelInfo) -> str:
    tr = info.train or {}
    if not info.trained:
        return "Untrained (initial weights only): for testing the exchange, not for segmenting."
    keys = ("loss", "patch", "batch", "lr", "schedule", "epochs_run", "minutes", "augment", "val_fraction", "seed")
    lines = [f"- {k}: `{tr[k]}`" for k in keys if k in tr]
    vs = f"{info.voxel_size} {info.unit}" if info.voxel_size else "not recorded"
    return "\n".join([*lines, f"- voxel size of the training data: {vs}", f"- created: {info.created}"])


def _training_details(info: ModelInfo) -> dict[str, Any]:
    tr = info.train or {}
    out: dict[str, Any] = {"training_preprocessing": _preprocessing_text(info)}
    for src, dst in (
        ("epochs_run", "training_epochs"),
        ("batch", "training_batch_size"),
        ("lr", "initial_learning_rate"),
    ):
        if isinstance(tr.get(src), (int, float)) and not isinstance(tr.get(src), bool):
            out[dst] = float(tr[src])
    if isinstance(tr.get("schedule"), str):
        out["learning_rate_schedule"] = tr["schedule"]
    if isinstance(tr.get("loss"), str):
        out["loss_function"] = tr["loss"]
    return out


def _space_axis(name: str, info: ModelInfo, size: Any) -> dict[str, Any]:
    ax: dict[str, Any] = {"type": "space", "id": name, "size": size}
    from .units import LENGTH_UNITS

    unit = LENGTH_UNITS.get(info.unit or "", (None,))[0]
    if info.voxel_size and unit and len(info.voxel_size) >= {"x": 1, "y": 2, "z": 3}[name]:
        ax["unit"] = unit
        ax["scale"] = float(info.voxel_size[{"x": -1, "y": -2, "z": -3}[name]])
    return ax


def _rdf(
    info: ModelInfo,
    *,
    name: str,
    description: str,
    authors: Sequence[str],
    license: str,
    cite: Sequence[dict[str, str]],
    min_side: int,
    halo: int,
    model_sha: str,
    files: dict[str, str],
    original: dict[str, Any],
    depths: tuple[int, int] | None = None,
) -> dict[str, Any]:
    import torch

    from .. import __version__

    k = info.in_channels
    spatial = {"min": min_side, "step": info.stride}
    ref = {"tensor_id": "input"}
    dims = "3d" if depths else "2d" if k == 1 else "2.5d"
    if depths:  # a 3D network: one grey channel, a z axis
        channels = {"type": "channel", "channel_names": ["grey"]}
        z_in = [_space_axis("z", info, {"min": depths[0], "step": depths[1]})]
        z_out = [_space_axis("z", info, {**ref, "axis_id": "z"})]
        what = "a volume (raw grey levels)"
    else:
        channels = {"type": "channel", "channel_names": _channel_names(k)}
        z_in = z_out = []
        what = f"{k} context slice{'s' if k > 1 else ''} (raw grey levels)"
    return {
        "format_version": "0.5.12",
        "type": "model",
        "name": name,
        "description": description,
        "authors": [{"name": a} for a in authors],
        "license": license,
        "cite": [dict(c) for c in cite],
        "tags": ["napari-xrayseg", "semantic-segmentation", "x-ray-tomography", "pytorch", dims, info.arch],
        "documentation": {"source": "README.md", "sha256": files["README.md"]},
        "covers": [{"source": "cover.png", "sha256": files["cover.png"]}],
        "attachments": [{"source": PACKAGE_MODEL_FILE, "sha256": model_sha}],
        "inputs": [
            {
                "id": "input",
                "description": what,
                "axes": [
                    {"type": "batch"},
                    channels,
                    *z_in,
                    _space_axis("y", info, dict(spatial)),
                    _space_axis("x", info, dict(spatial)),
                ],
                "data": {"type": "float32"},  # other types: the first preprocessing step converts them
                "test_tensor": {"source": "test_input.npy", "sha256": files["test_input.npy"]},
                "preprocessing": _preprocessing(info, volumetric=bool(depths)),
            }
        ],
        "outputs": [
            {
                "id": "probabilities",
                "description": "class probabilities (softmax); argmax over channel = segmentation",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": list(info.class_names)},
                    *z_out,
                    _space_axis("y", info, {**ref, "axis_id": "y"}),
                    _space_axis("x", info, {**ref, "axis_id": "x"}),
                ],
                "data": {"type": "float32", "range": [0.0, 1.0]},
                "test_tensor": {"source": "test_output.npy", "sha256": files["test_output.npy"]},
            }
        ],
        "weights": {
            "torchscript": {
                "source": "weights_torchscript.pt",
                "sha256": files["weights_torchscript.pt"],
                "pytorch_version": torch.__version__.split("+")[0],
            }
        },
        "config": {
            "bioimageio": {
                "architecture_type": info.arch,
                "architecture_description": describe_architecture(info.arch),
                "modality": "X-ray computed tomography",
                "target_structure": list(info.class_names),
                "task": "semantic segmentation",
                "training": _training_details(info),
            },
            _CONFIG_KEY: {
                "format": _PACKAGE_FORMAT,
                "format_version": _PACKAGE_FORMAT_VERSION,
                "model_file": PACKAGE_MODEL_FILE,
                "model_sha256": model_sha,
                "tile_overlap": halo,
                "fixed_bounds": bool(info.normalization.get("frozen")),
                "exported_by": f"napari-xrayseg {__version__}",
                "classes": list(info.classes),
                "model": original,
            },
        },
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def iter_export_bioimageio(
    model: Model | str | os.PathLike,
    out: str | os.PathLike,
    *,
    image: Any = None,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str] = (),
    license: str = "CC-BY-4.0",
    cite: Sequence[dict[str, str]] = (),
    side: int = 128,
    fixed_bounds: bool = False,
    test: bool = True,
    overwrite: bool = False,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, Path]:
    """Write ``model`` as a bioimage.io model package (zip); yields progress, returns the path.

    Parameters
    ----------
    model : Model or path-like
        The model, or its ``.safetensors`` file (then that very file is the attachment).
    out : path-like
        The package (``.zip`` is appended when missing).
    image : array-like, optional
        2D or 3D image the test input is cropped from (default: the synthetic sample).
    name, description : str, optional
        The package's title and one-sentence description (defaults name the architecture
        and the classes).
    authors : sequence of str
        Names of the model's authors (default: "napari-xrayseg user").
    license : str
        SPDX licence identifier of the model (default ``CC-BY-4.0``, the Model Zoo's usual one).
    cite : sequence of dict
        Extra citations (``{"text": ..., "doi": ...}`` or ``{"text": ..., "url": ...}``)
        before napari-xrayseg's, MONAI's and U-Net's.
    side : int
        Smallest side of the test input (rounded up to what the package accepts).
    fixed_bounds : bool
        For a model that normalises each image by its own percentiles: freeze the
        percentile bounds of ``image`` (the whole volume, as napari-xrayseg computes them)
        into the package as ``scale_linear``, so that it segments scans like ``image``
        exactly as napari-xrayseg does, instead of taking the percentiles of each slice
        (``scale_range``). The attached model file is unchanged.
    test : bool
        Run ``bioimageio.core``'s model test on the package before writing it (a failed
        test raises instead of writing).
    overwrite : bool
        Replace an existing package.
    cancel : CancelToken, optional
        Checked between the steps.

    Raises
    ------
    InputError
        Without the ``bioimageio`` extra, for bad arguments, or when bioimage.io finds the
        package invalid (the message names the first problem).
    """
    from .predictor import SlicePredictor, as_model
    from .tiling import AUTO

    _require_bioimageio()
    if not isinstance(side, int) or isinstance(side, bool) or not 8 <= side <= 4096:
        raise InputError(f"side {side!r} must be an integer in 8..4096")
    authors = [str(a) for a in authors] or ["napari-xrayseg user"]
    for c in cite:
        if not isinstance(c, dict) or not c.get("text") or not (c.get("doi") or c.get("url")):
            raise InputError(f"citation {c!r} needs a 'text' and a 'doi' or 'url'")
    out = Path(out)
    if out.suffix != ".zip":
        out = out.with_name(out.name + ".zip")
    claim(out, overwrite=overwrite, what="model package")  # an existing package: say so now, not after the work
    source = Path(model) if isinstance(model, (str, os.PathLike)) else None
    m = as_model(model)
    if m.info.channels > 1:  # the package took them for context slices, normalised together (QA: 34 % agreement)
        raise InputError(
            f"the model takes {m.info.channels} image channels, which this export does not describe yet (a "
            "package would normalise them together and call them slices): share the .safetensors file instead"
        )
    if m.info.normalization.get("level"):
        raise InputError(
            "the model levels every slice of its inputs (trained with normalize='slice'), which a bioimage.io "
            "package's preprocessing cannot express: export a model trained with normalize='image'"
        )
    m = Model(copy.deepcopy(m.network).cpu().eval(), copy.deepcopy(m.info), None)
    info = m.info
    attached = copy.deepcopy(info)  # the attachment's description, whatever the package's preprocessing
    if fixed_bounds:
        if image is None:
            raise InputError("fixed_bounds (--fixed-bounds) freezes the bounds of an image: give the image (--image)")
        from .normalize import compute_normalization

        pct = tuple(info.normalization.get("percentiles") or (0.5, 99.5))
        info.normalization = {**compute_normalization(image, percentiles=pct), "frozen": True}
    total = 6 if test else 5
    classes = ", ".join(info.class_names)
    name = name or _NAME_BAD.sub("-", f"napari-xrayseg {info.arch} ({' '.join(info.class_names)})")[:128]
    if not 5 <= len(name) <= 128 or _NAME_BAD.search(name):
        raise InputError(f"name {name!r} must be 5-128 letters, digits, spaces or _+-() (bioimage.io's rule)")
    description = description or (
        f"Semantic segmentation of X-ray tomograms into {len(info.classes)} classes ({classes}); "
        f"a {info.arch} network on {info.in_channels} context slice(s), trained with napari-xrayseg."
    )

    with tempfile.TemporaryDirectory(prefix="xrayseg-bioimageio-") as tmp:
        d = Path(tmp)
        yield Progress(0, total, "making the test input")
        halo = _halo(m)
        raw = package_test_input(m, image, side=side)
        x, _ = _normalised(m, raw)
        s = raw.shape[-1]
        check(cancel)
        yield Progress(1, total, f"predicting the test input ({s}x{s}) with napari-xrayseg")
        if _volumetric(m):  # each slice with its context stack, as segment() feeds a 3D net; one window
            from .tiling import stack_context

            stacks = stack_context(x[0, 0], m.info.in_channels)
            probs = SlicePredictor(m, device="cpu", tile=s, precision="fp32").probs(stacks)
            expected = np.ascontiguousarray(probs.transpose(1, 0, 2, 3)[None], dtype=np.float32)
        else:
            expected = SlicePredictor(m, device="cpu", tile=AUTO, precision="fp32").probs(x).astype(np.float32)
        check(cancel)
        yield Progress(2, total, "tracing the network to TorchScript")
        ts = _trace(m.network, x, m.info.in_channels // 2)
        import torch

        ts_path = d / "weights_torchscript.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still what the zoo runs
            torch.jit.save(ts, str(ts_path))
        with torch.no_grad():
            got = ts(torch.from_numpy(x)).numpy()
        diff = float(np.abs(got - expected).max())
        if diff > 1e-3:  # the traced graph must compute what the predictor computes
            raise InputError(f"the TorchScript trace differs from napari-xrayseg's prediction by {diff:.3g}")
        np.save(d / "test_input.npy", raw)
        np.save(d / "test_output.npy", expected)
        _cover(x, expected, d / "cover.png")
        if source is not None:
            shutil.copyfile(source, d / PACKAGE_MODEL_FILE)
        else:
            save_model(Model(m.network, attached), d / PACKAGE_MODEL_FILE)
        (d / "README.md").write_text(
            _readme(info, name, description, _min_side(m), halo, _depths(m) if _volumetric(m) else None),
            encoding="utf-8",
        )
        files = {
            f: _sha256(d / f)
            for f in ("test_input.npy", "test_output.npy", "weights_torchscript.pt", "README.md", "cover.png")
        }
        model_sha = _sha256(d / PACKAGE_MODEL_FILE)
        rdf = _rdf(
            info,
            name=name,
            description=description,
            authors=authors,
            license=license,
            cite=[*cite, *_CITES],
            min_side=_min_side(m),
            halo=halo,
            model_sha=model_sha,
            files=files,
            original=attached.to_dict(),
            depths=_depths(m) if _volumetric(m) else None,
        )
        (d / "rdf.yaml").write_text(json.dumps(rdf, indent=2), encoding="utf-8")  # JSON is YAML
        check(cancel)
        yield Progress(3, total, "validating the description (bioimage.io spec 0.5)")
        descr = _load_description(d / "rdf.yaml")
        check(cancel)
        yield Progress(4, total, "writing the package")
        zipped = d / "package.zip"
        _save_package(descr, zipped)
        if test:
            check(cancel)
            yield Progress(5, total, "testing the package with bioimageio.core")
            _test_package(zipped)
        path = write_file(out, lambda t: shutil.copyfile(zipped, t), overwrite=overwrite, what="model package")
    yield Progress(total, total, f"wrote {path}")
    log.info("exported %s", path)
    return path


def export_bioimageio(
    model: Model | str | os.PathLike,
    out: str | os.PathLike,
    *,
    callback: ProgressCallback | None = None,
    **kwargs: Any,
) -> Path:
    """Write ``model`` as a bioimage.io model package; see :func:`iter_export_bioimageio`.

    Examples
    --------
    >>> from napari_xrayseg import init_model
    >>> export_bioimageio(init_model("unet", size="tiny"), tmp / "m.zip").name  # doctest: +SKIP
    'm.zip'
    """
    return drain(iter_export_bioimageio(model, out, **kwargs), callback)


def _load_description(rdf: Path) -> Any:
    from bioimageio.spec import InvalidDescr, load_description

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        descr = load_description(rdf, perform_io_checks=True)
    if isinstance(descr, InvalidDescr):
        raise InputError(
            f"bioimage.io finds the package description invalid: {_first_errors(descr.validation_summary)}"
        )
    return descr


_LONG_CHOICE = re.compile(r"((?:'[^']*', ){3})(?:'[^']*'(?:, | or ))+'[^']*'")


def _first_errors(summary: Any) -> str:
    """The first two problems of a validation summary, on one line (long lists of choices cut)."""
    found: dict[str, str] = {}
    for e in (e for dt in summary.details for e in (dt.errors or [])):
        loc = [str(x) for x in e.loc]
        if loc[:1] == ["license"]:
            where, msg = "license", "not an SPDX licence identifier (e.g. CC-BY-4.0, MIT, BSD-3-Clause)"
        else:
            where, msg = ".".join(loc), _LONG_CHOICE.sub(r"\1...", " ".join(str(e.msg).split()))
        found.setdefault(where, f"{where}: {msg}" if where else msg)
    return "; ".join(list(found.values())[:2])[:400] or str(summary.status)


def _save_package(descr: Any, path: Path) -> None:
    from bioimageio.spec import save_bioimageio_package

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_bioimageio_package(descr, output_path=path)


def _test_package(path: Path) -> None:
    from bioimageio.core import test_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = test_model(path, weight_format="torchscript", devices=["cpu"])
    if summary.status != "passed":
        raise InputError(f"bioimageio.core's test of the package failed: {_first_errors(summary)}")


# --------------------------------------------------------------------------- import


#: What zipfile raises on a damaged member: a bad CRC or a truncated file, a compression method it
#: does not know (NotImplementedError), an encrypted member (RuntimeError).
_ZIP_DAMAGE = (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError, EOFError)


def _open_package(path: Path) -> tuple[dict[str, Any], Any]:
    """The package's description (a dict) and a reader of its files (a zip or a folder)."""
    import yaml

    if not path.exists():
        raise InputError(f"model package {path} does not exist: check the path")
    if path.is_dir():
        names = [n for n in ("rdf.yaml", "bioimageio.yaml") if (path / n).is_file()]
        if not names:
            raise InputError(
                f"{path} is a folder without rdf.yaml or bioimageio.yaml: give a bioimage.io model package"
            )
        rdf_file = path / names[0]
        if rdf_file.is_symlink() or rdf_file.stat().st_size > _MAX_RDF:  # (it was read whole: a sparse 3 GB file)
            raise InputError(f"{path}: {names[0]} is a link or larger than {_MAX_RDF} bytes: not a model description")
        raw = rdf_file.read_bytes()
        files: Any = path
    else:
        try:
            files = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise InputError(f"{path} is not a bioimage.io model package (not a zip file: {e})") from None
        names = [n for n in ("rdf.yaml", "bioimageio.yaml") if n in files.namelist()]
        if not names:
            files.close()
            raise InputError(f"{path} is a zip without rdf.yaml or bioimageio.yaml: give a bioimage.io model package")
        if files.getinfo(names[0]).file_size > _MAX_RDF:
            files.close()
            raise InputError(f"{path}: {names[0]} is larger than {_MAX_RDF} bytes: not a model description")
        try:
            raw = files.read(names[0])
        except _ZIP_DAMAGE as e:  # a CRC error, an unknown compression, an encrypted member
            files.close()
            raise InputError(f"{path}: cannot read {names[0]} ({e}): the package is damaged or encrypted") from None
    try:
        rdf = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise InputError(f"{path}: {names[0]} is not valid YAML ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise InputError(
            f"{path} does not describe a model (type {rdf.get('type') if isinstance(rdf, dict) else None!r})"
        )
    return rdf, files


def _refusal(path: Path, rdf: dict[str, Any]) -> str:
    weights = rdf.get("weights") if isinstance(rdf.get("weights"), dict) else {}
    formats = sorted(k for k, v in weights.items() if v)
    if formats and set(formats) <= {"pytorch_state_dict", "keras_hdf5"}:
        return (
            f"{path} holds only pickled weights ({', '.join(formats)}): napari-xrayseg never unpickles model "
            "files (they can run code); run this package with bioimageio.core instead"
        )
    return (
        f"{path} is a bioimage.io model not written by napari-xrayseg (weights: {', '.join(formats) or 'none'}, no "
        f"{PACKAGE_MODEL_FILE} attachment): only `xrayseg export` packages can be imported; run it with bioimageio.core"
    )


def import_bioimageio(package: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Restore the napari-xrayseg model file from a package written by :func:`export_bioimageio`.

    The attachment ``napari_xrayseg.safetensors`` is checked against the SHA-256 the
    description records and validated as a model file (no unpickling; tensors checked
    against the declared architecture), then written to ``out`` unchanged: the same bytes,
    hence bit-exact weights and the same metadata. Needs no bioimageio package.

    Parameters
    ----------
    package : path-like
        The package (zip) or its unpacked folder.
    out : path-like
        The model file (``.safetensors`` is appended when missing).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        If ``package`` is not a bioimage.io model, or one without napari-xrayseg's model
        file (a foreign package; one with only pickled weights is refused with a word on why).
    ModelFileError
        If the attachment is damaged or not a valid model file.
    """
    path = Path(package)
    out = Path(out)
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    claim(out, overwrite=overwrite, inputs=[path], what="model file")
    rdf, files = _open_package(path)
    try:
        cfg = (rdf.get("config") or {}).get(_CONFIG_KEY) if isinstance(rdf.get("config"), dict) else None
        member = cfg.get("model_file") if isinstance(cfg, dict) else None
        if member != PACKAGE_MODEL_FILE:
            raise InputError(_refusal(path, rdf))
        if isinstance(files, Path):
            src = files / member
            if not src.is_file():
                raise InputError(_refusal(path, rdf))
            if src.is_symlink():  # a link can point anywhere (/proc/self/pagemap: an endless copy)
                raise ModelFileError(f"{path}: {member} is a link, not a file of the package: refused")
            size = src.stat().st_size
        else:
            if member not in files.namelist():
                raise InputError(_refusal(path, rdf))
            size = files.getinfo(member).file_size
        if size > _MAX_MODEL:
            raise ModelFileError(f"{path}: {member} is {size} bytes, larger than any napari-xrayseg model")
        with tempfile.TemporaryDirectory(prefix="xrayseg-import-") as tmp:
            model_path = Path(tmp) / member
            want = cfg.get("model_sha256")
            if isinstance(files, Path):
                shutil.copyfile(src, model_path)
                got = _sha256(model_path)
            else:
                try:
                    with files.open(member) as fin, open(model_path, "wb") as fout:
                        got = _copy_checked(fin, fout, size, f"{path}: {member}")
                except _ZIP_DAMAGE as e:  # a CRC error, a truncated zip, an unknown compression, encryption
                    raise ModelFileError(f"{path}: cannot read {member} ({e}): the package is damaged") from None
            if got != want:
                raise ModelFileError(f"{path}: {member} does not match its recorded SHA-256: the package is damaged")
            try:
                load_model(model_path)  # validates header, architecture, every tensor; never unpickles
            except ModelFileError as e:  # name the package and its member, not the temporary copy
                raise ModelFileError(str(e).replace(str(model_path), f"{path} ({member})")) from None
            return write_file(
                out, lambda t: shutil.copyfile(model_path, t), overwrite=overwrite, inputs=[path], what="model file"
            )
    finally:
        if not isinstance(files, Path):
            files.close()


def _copy_checked(fin: Any, fout: Any, size: int, what: str) -> str:
    """Copy a package's model file, hashing it; refuse at its first bytes when they are no safetensors header.

    A 4.6 MB package of 4 GiB of zeros was copied whole (58 s, 4 GiB of temporary space, RAM where
    /tmp is a tmpfs) before its hash refused it (QA). Returns the SHA-256 of what was copied.
    """
    from .models import plausible_header

    head = fin.read(9)
    if not plausible_header(head, size):
        raise ModelFileError(f"{what} does not start like a safetensors model file: the package is damaged")
    h = hashlib.sha256(head)
    fout.write(head)
    done = len(head)
    while chunk := fin.read(1 << 20):
        done += len(chunk)
        if done > size:
            raise ModelFileError(f"{what} holds more than its declared {size} bytes: the package is damaged")
        h.update(chunk)
        fout.write(chunk)
    return h.hexdigest()


def iter_import_bioimageio(
    package: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False, cancel: CancelToken | None = None
) -> Generator[Progress, None, Path]:
    """:func:`import_bioimageio` as a progress generator (for the widgets' job runner)."""
    check(cancel)
    yield Progress(0, 1, f"reading {Path(package).name}")
    path = import_bioimageio(package, out, overwrite=overwrite)
    yield Progress(1, 1, f"wrote {path}")
    return path
