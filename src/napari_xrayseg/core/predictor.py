"""The predictor stage of segmentation: network, precision and device; slices in, scores out.

:class:`SlicePredictor` runs a model on batches of normalised 2D slices (with their
context channels). With ``tile="auto"`` (the default) a slice that fits the memory
budget goes through the network whole, padded to the network's stride: no tiles, no
blending, no seams; a larger slice is cut into the biggest tiles that fit, each with a
halo of at least the network's receptive-field radius (:func:`receptive_field`), and
only the tiles' cores are kept, so the result equals the whole-slice one. With an
integer ``tile``, sliding windows (MONAI's inferer, in plain torch: :mod:`.windows`) cut
slices into overlapping tiles, run them in batches of ``batch`` tiles and blend the scores. It knows nothing of
volumes, slabs or output stores.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from typing import Any

import numpy as np
import torch

from .config import SegmentConfig
from .device import CPU_VOLUME_BUDGET, memory_budget, resolve_device, resolve_precision
from .errors import InputError, out_of_memory
from .models import Model, ModelInfo, build_network, load_model
from .plan import check_window_options
from .progress import CancelToken, check
from .tiling import AUTO, auto_tile, effective_tile, halo_tiles, pad_to_stride, windows_per_slice
from .windows import sliding_window_inference

__all__ = [
    "TTA_DEFAULT",
    "TTA_ORDER",
    "SlicePredictor",
    "check_tta",
    "tta_meta",
    "tta_views",
    "activation_bytes_per_pixel",
    "volume_bytes_per_voxel",
    "as_model",
    "flops_per_pixel",
    "model_digest",
    "receptive_field",
    "worth_compiling",
]

_D = SegmentConfig()
log = logging.getLogger(__name__)

# Layers that normalise over a whole image (not per pixel): their output depends on every
# input pixel, so they are left out when measuring the receptive field of the convolutions.
_GLOBAL_NORMS = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d)


def _arch_key(info: ModelInfo) -> str:
    return json.dumps([info.arch, info.params, info.stride, info.in_channels], sort_keys=True)


def _probe_network(arch: str, params: dict[str, Any]) -> torch.nn.Module:
    """A fresh (random, eval-mode) network of an architecture, with image-wide norms removed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network(arch, params).eval()
    for name, mod in list(net.named_modules()):
        if isinstance(mod, _GLOBAL_NORMS) and name:
            parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
            setattr(parent, name.rpartition(".")[2], torch.nn.Identity())
    return net


@functools.lru_cache(maxsize=32)
def _receptive_field(key: str) -> int:
    arch, params, st, k = json.loads(key)
    with torch.inference_mode(False), torch.enable_grad():  # first asked inside a prediction (QA: no grad there)
        return _measure_field(_probe_network(arch, params), st, k)


def _measure_field(net: torch.nn.Module, st: int, k: int) -> int:
    side = 16 * st
    while True:
        x = torch.randn(1, k, side, side, requires_grad=True)
        c = side // 2 // st * st  # a stride-aligned block of outputs: every phase of the stride grid
        net(x)[0, :, c : c + st, c : c + st].sum().backward()
        ys, xs = torch.nonzero(x.grad.abs().sum((0, 1)), as_tuple=True)
        lo, hi = int(min(ys.min(), xs.min())), int(max(ys.max(), xs.max()))
        if lo > 0 and hi < side - 1 or side >= 4096:  # the support lies inside the input: measured
            return 2 * max(c - lo, hi - (c + st - 1)) + 1
        side *= 2


def receptive_field(info: ModelInfo | Model) -> int:
    """Receptive field of a model's network, in pixels: one output pixel depends on a square this wide.

    Measured, not assumed: the support of the gradient of a block of output pixels (one
    per phase of the stride grid) with respect to the input, on a fresh copy of the
    architecture in eval mode. Layers that normalise over the whole image (instance,
    group and layer norm) are left out: they make every output pixel depend weakly on
    every input pixel, which no finite halo can reproduce, so tiled results of such
    networks differ slightly from whole-slice results. Cached per architecture.

    Examples
    --------
    >>> from napari_xrayseg import init_model
    >>> receptive_field(init_model("unet", size="tiny", classes=3))
    17
    """
    info = getattr(info, "info", info)
    return _receptive_field(_arch_key(info))


def _each_layer_output(net: torch.nn.Module, run: Any, seen: Any) -> None:
    """Call ``run()`` in inference mode with ``seen(t)`` called on every tensor a leaf module outputs."""

    def hook(_m: Any, _i: Any, out: Any) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                seen(t)

    hooks = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in hooks:
            h.remove()


@functools.lru_cache(maxsize=32)
def _bytes_per_pixel(key: str) -> float:
    arch, params, st, k = json.loads(key)
    net, side = _probe_network(arch, params), 8 * st
    sizes: list[int] = []
    _each_layer_output(
        net, lambda: net(torch.zeros(1, k, side, side)), lambda t: sizes.append(t.numel() * t.element_size())
    )
    return (sum(sizes) + 4 * k * side * side) / (side * side)


#: Peak memory of a 3D network's forward pass over the peak of its live layer outputs: measured
#: as the process's peak RSS growth for a 46 x 512 x 512 volume through ``unet3d``/small on CPU,
#: fp32 (about 85 B per voxel, against 41.7 B of live layer outputs): convolution workspaces,
#: padding copies and the output.
_VOLUME_OVERHEAD = 2.0


@functools.lru_cache(maxsize=32)
def _volume_bytes(key: str) -> float:
    import weakref

    arch, params, st, _k = json.loads(key)
    net = _probe_network(arch, params)
    live: dict[int, int] = {}  # storage address -> bytes, while the tensor lives
    cur = peak = 0

    def drop(ptr: int) -> None:
        nonlocal cur
        cur -= live.pop(ptr, 0)

    def seen(t: torch.Tensor) -> None:
        nonlocal cur, peak
        ptr = t.untyped_storage().data_ptr()
        if ptr not in live:  # in-place layers and views return storage already counted
            live[ptr] = t.untyped_storage().nbytes()
            cur += live[ptr]
            peak = max(peak, cur)
            weakref.finalize(t, drop, ptr)

    x = torch.zeros(1, 1, 2 * int(getattr(net, "zstride", st)), 4 * st, 4 * st)
    _each_layer_output(net, lambda: net.forward_volume(x), seen)
    return _VOLUME_OVERHEAD * (peak + 4 * x.numel()) / x.numel()


def volume_bytes_per_voxel(info: ModelInfo | Model) -> float:
    """Bytes a 3D network's forward pass (fp32) needs per voxel of the volume it is given.

    The peak of the layer outputs alive at once (tracked as layers free their inputs), times
    a measured overhead (:data:`_VOLUME_OVERHEAD`); used to size the windows of 3D networks.
    """
    info = getattr(info, "info", info)
    return _volume_bytes(_arch_key(info))


def activation_bytes_per_pixel(info: ModelInfo | Model) -> float:
    """Bytes a forward pass (fp32) allocates per input pixel: the sum of every layer's output.

    An upper bound on what eager inference holds at once (layers free their inputs as
    they go), used to size whole-slice batches and tiles for ``tile="auto"``.
    """
    info = getattr(info, "info", info)
    return _bytes_per_pixel(_arch_key(info))


@functools.lru_cache(maxsize=32)
def _flops_per_pixel(key: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    arch, params, st, k = json.loads(key)
    net, side = _probe_network(arch, params), 4 * st
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(torch.zeros(1, k, side, side))
    return counter.get_total_flops() / (side * side)


def flops_per_pixel(info: ModelInfo | Model) -> float:
    """FLOPs (a multiply-add is 2) of one forward pass per input pixel (``torch.utils.flop_counter``).

    Examples
    --------
    >>> from napari_xrayseg import init_model
    >>> round(flops_per_pixel(init_model("unet", size="tiny", classes=3)))
    414
    """
    info = getattr(info, "info", info)
    return _flops_per_pixel(_arch_key(info))


#: Sustained network FLOP/s assumed when deciding whether ``torch.compile`` pays back: on
#: the high side of what was measured (CPU: 2 cores of an AVX-512 machine, fp32; CUDA: an
#: H100-class GPU), so that compiling is only chosen where it surely pays.
COMPILE_RATE = {"cpu": 3.0e11, "cuda": 1.0e14}
#: ... and the network time (seconds) from which it pays: the first compile took 2-90 s on
#: 2 CPU cores (warm or cold cache) and gained 6-24 % (docs/performance.md): at 15 %, 10
#: minutes save 90 s, as much as the slowest compile costs.
COMPILE_MIN_SECONDS = 600.0


def worth_compiling(info: ModelInfo | Model, pixels: float, device: str | torch.device) -> bool:
    """Whether ``torch.compile`` pays back for pushing ``pixels`` through the network on ``device``.

    True when the network time, estimated from :func:`flops_per_pixel` at the rate of
    :data:`COMPILE_RATE`, exceeds :data:`COMPILE_MIN_SECONDS`; never on other devices
    (Apple MPS) or for 3D networks (windows of several shapes).

    Examples
    --------
    >>> from napari_xrayseg import init_model
    >>> m = init_model("unet", size="medium", classes=3, context=3)
    >>> worth_compiling(m, 10 * 512 * 512, "cpu"), worth_compiling(m, 2048**3, "cpu")
    (False, True)
    """
    info = getattr(info, "info", info)
    rate = COMPILE_RATE.get(torch.device(device).type)
    if rate is None or info.arch == "unet3d" or pixels * 24_000 < rate * COMPILE_MIN_SECONDS:
        return False  # (24 kFLOP/pixel: the default net's; skips the FLOP count for small jobs)
    return pixels * flops_per_pixel(info) / rate > COMPILE_MIN_SECONDS


class _Compiled:
    """``torch.compile(net)`` on first use, and the network itself if compiling or running it compiled fails."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net, self.compiled = net, None
        self.failed: str | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.failed is None:
            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.net, dynamic=False)
                return self.compiled(x)
            except Exception as e:  # no C++ compiler, an unsupported op or device: run eager
                if out_of_memory(e, "segmenting") is not None:  # memory, not the compiler (QA: logged as a compile
                    raise  # failure, compiling switched off for good and the batch retried eager, needing more)
                self.failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                log.warning("torch.compile failed (%s); running the network without it", self.failed)
        return self.net(x)


_CONVS = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Conv3d, torch.nn.ConvTranspose3d)
_NORMS = (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
_INSTANCE_NORMS = (torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d)


class _OneDnnConv3d(torch.nn.Conv3d):
    """The ``Conv3d`` of an inference copy: oneDNN's convolution on the CPU (fp32) whatever the input's size.

    torch runs its native 3D convolution instead of oneDNN's where batch x channels x depth x
    height is at most 20480 (torch 2.13's ``use_mkldnn``: a rule for 2D inputs, where that product
    takes in the width, applied unchanged to 3D ones). For a one-item batch of ``unet3d`` that is
    the first layer and the deep levels: 47 % of the Annotate widget's 512² preview, each layer
    3-11x slower than oneDNN's (``benchmarks/preview.py --arch unet3d``, docs/annotate.md). The
    numbers differ from torch's choice by float rounding only (a test checks it).
    """

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == weight.dtype == torch.float32
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and not torch.is_autocast_enabled("cpu")
            and torch.backends.mkldnn.is_available()
            and torch._C._get_mkldnn_enabled()
        ):
            return torch.ops.aten.mkldnn_convolution(
                x, weight, bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super()._conv_forward(x, weight, bias)


def _fold_batchnorm(conv: torch.nn.Module, bn: torch.nn.Module) -> bool:
    """Fold an eval-mode ``bn`` that follows ``conv`` (2D or 3D) into the conv's weights; False if it cannot."""
    transposed = isinstance(conv, (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d))
    if conv.groups != 1 or bn.running_mean is None or not bn.track_running_stats:
        return False
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    w = conv.weight
    ones = (1,) * (w.dim() - 2)  # transposed convolutions' weights are (in, out, *kernel)
    shape = (1, -1, *ones) if transposed else (-1, 1, *ones)
    with torch.no_grad():
        conv.weight = torch.nn.Parameter(w * scale.reshape(shape))
        b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.bias = torch.nn.Parameter((b - bn.running_mean) * scale + shift)
    return True


def _inplace_activation(adn: torch.nn.Sequential) -> None:
    """Swap a one-parameter PReLU that follows a convolution's norm/dropout for an in-place leaky ReLU.

    ``adn`` directly follows a convolution (MONAI's ADN block): the activation's input is
    then a tensor nothing else reads (the conv's or the norm's output; dropout and a folded
    norm pass it on as it is), so it can be overwritten. With a single slope ``a``, PReLU
    *is* a leaky ReLU of slope ``a`` (the same numbers, bit for bit); done in place, it
    saves writing a new activation per layer.
    """
    for name, m in adn.named_children():
        if isinstance(m, torch.nn.PReLU) and m.weight.numel() == 1:
            setattr(adn, name, torch.nn.LeakyReLU(float(m.weight.detach()), inplace=True))
        elif not isinstance(m, (torch.nn.Identity, torch.nn.Dropout, *_NORMS, *_INSTANCE_NORMS)):
            return


def _inference_copy(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of an eval-mode network for inference: batch norm folded into the conv before it, channels-last.

    Folding removes a pass over every activation; channels-last is the layout the CPU
    convolutions are fastest in (together +40-50 % on CPU for ``unet`` medium,
    docs/performance.md). Only a batch norm that directly follows a convolution inside a
    ``Sequential`` (so runs right after it) is folded, e.g. the U-Net's conv -> ADN(norm, dropout,
    act); anything else is left as it is. The activation after it runs in place
    (:func:`_inplace_activation`). The model's own network is never changed.
    """
    import copy

    fast = copy.deepcopy(net).eval()
    for seq in [m for m in fast.modules() if isinstance(m, torch.nn.Sequential)]:
        kids = list(seq.named_children())
        for (_, a), (name, b) in zip(kids, kids[1:]):
            if not isinstance(a, _CONVS):
                continue
            if isinstance(b, _NORMS):
                if _fold_batchnorm(a, b):
                    setattr(seq, name, torch.nn.Identity())
            elif isinstance(b, torch.nn.Sequential) and len(b) and isinstance(b[0], _NORMS):
                first = next(iter(b.named_children()))[0]
                if _fold_batchnorm(a, b[0]):
                    setattr(b, first, torch.nn.Identity())
            if isinstance(b, torch.nn.Sequential):
                _inplace_activation(b)
    for m in fast.modules():
        if type(m) is torch.nn.Conv3d:
            m.__class__ = _OneDnnConv3d  # the same module and weights, another convolution routine
    volumetric = bool(getattr(net, "volumetric", False))
    return fast.to(memory_format=torch.channels_last_3d if volumetric else torch.channels_last)


#: Test-time augmentation views, in the order they are used: each names what it does to
#: the slices (``z``: the run of slices reversed, for 3D networks; ``t``: the in-plane axes
#: swapped; ``y``, ``x``: flipped along that axis); ``""`` is the slices as given. Ordered
#: so that each view differs from the ones before it in as many ways as it can: on 12
#: unseen hard volumes (docs/accuracy.md, session 28) the interface error of the shipped 3D
#: start falls from 0.2073 (1 view) to 0.2048 (2), 0.2038 (4), 0.2034 (8) and 0.2033 (16);
#: the three views of ``tta=True`` before (the slices and their two flips) gave 0.2047.
#: Without the ``z`` views (2D networks) the first 8 are the 8 turns and flips of a square.
TTA_ORDER = ("", "ztyx", "yx", "zt", "ty", "zx", "tx", "zy", "z", "tyx", "zyx", "t", "zty", "x", "ztx", "y")
#: Views of ``tta=True``.
TTA_DEFAULT = 4


def tta_views(tta: bool | int, *, volumetric: bool = True) -> tuple[str, ...]:
    """The test-time augmentation views of ``tta`` (see :data:`TTA_ORDER`).

    ``False``, 0 or 1: the slices as given; ``True``: :data:`TTA_DEFAULT` views; a number N
    from 2 to 16: the first N views. A 2D network (``volumetric=False``) has no ``z`` views:
    at most 8 distinct views, and asking for more uses those 8.

    Raises
    ------
    InputError
        If ``tta`` is not a bool or a whole number from 0 to 16.

    Examples
    --------
    >>> tta_views(2)
    ('', 'ztyx')
    >>> tta_views(True, volumetric=False)
    ('', 'tyx', 'yx', 't')
    """
    n = check_tta(tta)
    views = TTA_ORDER if volumetric else tuple(dict.fromkeys(v.replace("z", "") for v in TTA_ORDER))
    return views[: max(1, n)]


def tta_meta(tta: Any) -> bool | int:
    """How an output records ``tta``: ``False`` (none), else the number of views asked for."""
    n = check_tta(tta)
    return n if n > 1 else False


def check_tta(tta: Any) -> int:
    """The number of views ``tta`` asks for (1: none), or a clear :class:`InputError`."""
    if tta is True:
        return TTA_DEFAULT
    if tta is False or tta is None:
        return 1
    if isinstance(tta, (int, np.integer)) and 0 <= int(tta) <= len(TTA_ORDER):
        return max(1, int(tta))
    raise InputError(
        f"tta {tta!r} must be True, False or a number of views from 1 to {len(TTA_ORDER)} "
        f"(--tta N; True: {TTA_DEFAULT} views)"
    )


class SlicePredictor:
    """Runs a model on batches of 2D slices: tiles, blends and picks the best class.

    Parameters
    ----------
    model : Model
        The model (its normalisation must be resolved: ``low``/``high`` not None).
    device : str or torch.device
        Where the network runs.
    tile, overlap, batch, blend, precision
        As in :func:`~napari_xrayseg.segment`. ``tile="auto"``: whole slices (padded to the
        stride) in batches that fit ``memory``, or halo tiles for slices too large for it;
        an integer: sliding windows of that side with ``overlap``, ``batch`` and ``blend``.
    memory : float, optional
        Bytes a forward pass may use with ``tile="auto"`` (default: :func:`memory_budget`
        of the device).
    fast : bool, optional
        Run an inference copy of the network: batch norm folded into the convolutions
        before it and channels-last memory layout (default: on; docs/performance.md). Off,
        the model's own network runs as it is (training's validation, which must see the
        weights as they change).

    Examples
    --------
    >>> from napari_xrayseg import init_model
    >>> pred = SlicePredictor(init_model("unet", size="tiny", classes=3), device="cpu", tile=32)
    >>> pred.labels(np.zeros((2, 32, 32), np.float32)).shape
    (2, 32, 32)
    """

    def __init__(
        self,
        model: Model,
        *,
        device: str | torch.device = _D.device,
        tile: int | str = AUTO,
        overlap: float = _D.overlap,
        batch: int = _D.batch,
        blend: str = _D.blend,
        precision: str = _D.precision,
        memory: float | None = None,
        fast: bool = True,
        compile: bool = False,
    ) -> None:
        check_window_options(overlap, batch, blend)
        self.model = model
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        net = model.network.to(self.device).eval()
        self.channels_last = bool(fast)
        self.net = _inference_copy(net) if self.channels_last else net
        self.overlap, self.batch, self.blend = float(overlap), batch, blend
        self.stride = model.info.stride
        if tile != AUTO:
            if not isinstance(tile, (int, np.integer)) or isinstance(tile, bool):
                raise InputError(f"tile {tile!r} must be 'auto' or a multiple of the network's stride {self.stride}")
            tile = int(tile)
            effective_tile((tile, tile), tile, self.stride)  # validates tile
        self.tile = tile
        self.lut = np.asarray(model.info.classes, dtype=np.uint8)
        self.volumetric = bool(getattr(self.net, "volumetric", False))
        self.memory = float(memory) if memory is not None else memory_budget(self.device)
        if memory is None and self.volumetric and self.device.type != "cuda":
            self.memory = max(self.memory, float(CPU_VOLUME_BUDGET))
        # whole slices only (one batch shape: the last batch is padded to it), never 3D windows
        self.compiled = _Compiled(self.net) if compile and not self.volumetric and tile == AUTO else None
        self._batch: tuple[int, ...] | None = None  # the compiled graph's input shape
        self.cancel: CancelToken | None = None
        self._halo: int | None = None

    @property
    def settings(self) -> tuple[Any, ...]:
        """``(device, tile, overlap, batch, blend, precision, compiled)``: what a job needs to reuse this predictor."""
        return (self.device, self.tile, self.overlap, self.batch, self.blend, self.precision, self.compiled is not None)

    @property
    def halo(self) -> int:
        """Context a halo tile keeps on each side: the receptive-field radius, rounded up to the stride."""
        if self._halo is None:
            self._halo = pad_to_stride(receptive_field(self.model) // 2, self.stride)
        return self._halo

    def layout(self, slice_shape: tuple[int, int]) -> tuple[int, int]:
        """``(slices_per_call, tile)`` of ``tile="auto"`` for slices of ``slice_shape`` (tile 0: whole slices)."""
        per, side = auto_tile(
            slice_shape,
            stride=self.stride,
            halo=0,
            bytes_per_pixel=activation_bytes_per_pixel(self.model),
            budget=self.memory,
        )
        if side:  # too large for the budget: tiles with a halo of the receptive field
            per, side = auto_tile(
                slice_shape,
                stride=self.stride,
                halo=self.halo,
                bytes_per_pixel=activation_bytes_per_pixel(self.model),
                budget=self.memory,
            )
        return per, side

    def volume_layout(self, depth: int, slice_shape: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        """``(outputs_per_pass, roi)`` for a 3D network over a run of ``depth`` slices (context included).

        With an integer tile, the run goes through whole in windows of that tile. With
        ``tile="auto"`` the cheapest layout that fits the memory budget: whole slices (padded
        to the stride: no overlap, no seams in the plane), or windows of once or twice the
        model's tile; a run too deep for the budget is cut into parts along the slicing axis, each
        with the context half-width (``k // 2`` slices) on either side of the slices it keeps.
        Cost is counted in voxels through the network.
        """
        k = self.model.info.in_channels
        h = k // 2
        n = depth - 2 * h  # slices kept
        if self.tile != AUTO:
            return n, effective_tile(slice_shape, self.tile, self.stride)
        bpv = volume_bytes_per_voxel(self.model)
        whole = (pad_to_stride(slice_shape[0], self.stride), pad_to_stride(slice_shape[1], self.stride))
        options = []
        tile = self.model.info.tile
        for roi in {whole, *(effective_tile(slice_shape, t, self.stride) for t in (tile, 2 * tile))}:
            area = roi[0] * roi[1]
            fit = int(self.memory // (bpv * area)) - 2 * h  # slices kept per pass within the budget
            per = min(n, max(1, fit))
            voxels = (n + 2 * h * -(-n // per)) * windows_per_slice(slice_shape, roi, self.overlap) * area
            # within the budget: the fewest voxels; else (tiny budgets) the smallest pass
            options.append((fit < 1, (1 + 2 * h) * area if fit < 1 else voxels, per, roi))
        _, _, per, roi = min(options)
        return per, roi

    def _run(self, fn: Any, x: torch.Tensor) -> torch.Tensor:
        """``fn(x)`` in the predictor's precision (fp32 scores back from bf16/fp16 autocast).

        Non-finite scores are an error: every voxel of them became class 0 without a word (QA: one
        weight of 3e38 in a model file, finite, so loading took it).
        """
        if self.precision == "fp32":
            out = fn(x)
        else:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            with torch.autocast(self.device.type, dtype=dtype):
                out = fn(x).float()
        if not bool(torch.isfinite(out.sum())):  # NaN and inf carry into the sum: 0.7 ms, not isfinite's 17 (4 x 512²)
            raise InputError(
                "the network gave non-finite scores (NaN or inf): the model's weights may be damaged (a value out "
                "of range)"
                + (
                    ""
                    if self.precision == "fp32"
                    else f", or its {self.precision} arithmetic overflowed: try precision='fp32' (--precision fp32)"
                )
            )
        return out

    def _windows(
        self, x: torch.Tensor, roi: tuple[int, ...], batch: int, fn: Any, keep: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Sliding windows over ``x`` with the predictor's overlap, blending and device (MONAI's, in plain torch)."""
        return sliding_window_inference(
            x, roi, batch, fn, overlap=self.overlap, mode=self.blend, device=self.device, keep=keep
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        check(self.cancel)  # once per batch of tiles
        if self.channels_last and not self.volumetric:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._run(self.net, x)

    def _whole_compiled(self, x: torch.Tensor, per: int) -> torch.Tensor:
        """Whole slices through the compiled network, ``per`` at a time (the last batch padded with its last slice)."""
        assert self.compiled is not None
        n, parts = len(x), []
        if self._batch is None or x.shape[1:] != self._batch[1:]:  # the first call fixes the batch shape
            self._batch = (min(per, n), *x.shape[1:])
        per = self._batch[0]
        for i in range(0, n, per):
            b = x[i : i + per]
            if len(b) < per:  # e.g. the last slab: padded, not a new graph
                b = torch.cat([b, b[-1:].expand(per - len(b), *b.shape[1:])])
            check(self.cancel)
            b = b.contiguous(memory_format=torch.channels_last) if self.channels_last else b
            parts.append(self._run(self.compiled, b)[: n - i])
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _auto(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of ``tile="auto"``: whole slices padded to the stride, or halo tiles (cores kept)."""
        n, _, h, w = x.shape
        hp, wp = pad_to_stride(h, self.stride), pad_to_stride(w, self.stride)
        if (hp, wp) != (h, w):
            x = torch.nn.functional.pad(x, (0, wp - w, 0, hp - h), mode="replicate")
        per, side = self.layout((h, w))
        if not side:
            if self.compiled is not None:  # one shape for the compiled graph: pad the last batch
                return self._whole_compiled(x, per)[..., :h, :w]
            parts = [self._forward(x[i : i + per]) for i in range(0, n, per)]
            return (parts[0] if len(parts) == 1 else torch.cat(parts))[..., :h, :w]
        out = torch.empty((n, len(self.lut), hp, wp), dtype=torch.float32, device=x.device)
        for i in range(n):  # one slice per call: a tile is as large as the budget allows
            for ty0, ty1, cy0, cy1 in halo_tiles(hp, side, self.halo):
                for tx0, tx1, cx0, cx1 in halo_tiles(wp, side, self.halo):
                    y = self._forward(x[i : i + 1, :, ty0:ty1, tx0:tx1])
                    out[i, :, cy0:cy1, cx0:cx1] = y[0, :, cy0 - ty0 : cy1 - ty0, cx0 - tx0 : cx1 - tx0]
        return out[..., :h, :w]

    def scores(self, slices: np.ndarray) -> torch.Tensor:
        """Blended class scores, shape (N, C, Y, X), for normalised slices.

        ``slices`` has shape (N, Y, X) for a model with context 1, or (N, k, Y, X) with
        the k context slices of each slice as channels (see
        :func:`~napari_xrayseg.core.tiling.stack_context`).
        """
        k = self.model.info.in_channels
        if slices.ndim == 3 and k == 1:
            slices = slices[:, None]
        if slices.ndim != 4 or slices.shape[1] != k:
            raise InputError(
                f"the model takes {k} context slice{'s' if k > 1 else ''} per slice; got input "
                f"of shape {tuple(slices.shape)} (expected (N, {k}, Y, X))"
            )
        if self.volumetric and k > 1:  # a 3D network: runs of consecutive slices as volumes
            return self._volume_scores(slices)
        arr = np.ascontiguousarray(slices, dtype=np.float32)
        if not arr.flags.writeable:  # a stack_context view: torch wants a writable buffer
            arr = arr.copy()
        x = self._to_device(torch.from_numpy(arr))
        with torch.inference_mode():
            if self.tile == AUTO:
                return self._auto(x)
            return self._windows(x, effective_tile(slices.shape[2:], self.tile, self.stride), self.batch, self._forward)

    def _forward_volume(self, x: torch.Tensor) -> torch.Tensor:
        check(self.cancel)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return self._run(self.net.forward_volume, x)

    def _volume_scores(self, slices: np.ndarray) -> torch.Tensor:
        """Scores of a 3D network: each run of consecutive slices goes through it as a volume.

        The context stacks of consecutive slices overlap (channel ``j + 1`` of slice ``i`` is
        channel ``j`` of slice ``i + 1``); such a run is the volume ``run + k - 1`` slices deep,
        rebuilt without copies of the stacks, and every slice of it is computed once, in the
        windows and parts along the run of :meth:`volume_layout`.
        """
        n, k = slices.shape[:2]
        h = k // 2
        starts = [0] + [i + 1 for i in range(n - 1) if not np.array_equal(slices[i + 1, : k - 1], slices[i, 1:])]
        out: torch.Tensor | None = None
        for a, b in zip(starts, [*starts[1:], n]):
            vol = np.concatenate([slices[a, :h], slices[a:b, h], slices[b - 1, h + 1 :]]).astype(np.float32, copy=False)
            per, roi = self.volume_layout(len(vol), vol.shape[1:])
            for c in range(0, b - a, per):  # slices c .. c + per of the run, with h of context each side
                m = min(per, b - a - c)
                x = self._to_device(torch.from_numpy(vol[c : c + m + 2 * h])[None, None])
                with torch.inference_mode():
                    s = self._windows(x, (m + 2 * h, *roi), 1, self._forward_volume, keep=(h, h + m))
                kept = s[0].transpose(0, 1)  # the context slices were dropped as computed
                if m == n:  # all in one pass
                    return kept
                if out is None:  # filled part by part: the parts' context slices are not kept meanwhile
                    out = torch.empty((n, *kept.shape[1:]), dtype=kept.dtype, device=kept.device)
                out[a + c : a + c + m] = kept
                del s, kept
        assert out is not None
        return out

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

    def probs(self, slices: np.ndarray, *, tta: bool | int = False) -> np.ndarray:
        """Class probabilities (float32, shape (N, C, Y, X)) for normalised slices, as in :meth:`scores`.

        With ``tta`` (``True`` or a number of views, see :func:`tta_views`), the average
        over that many views of the slices, each flipped and/or transposed and mapped back
        (test-time augmentation: one pass of the network per view).
        """
        # z views need a 3D network over context stacks (N, k, Y, X): reversing the run reverses each stack
        views = tta_views(tta, volumetric=self.volumetric and self.model.info.in_channels > 1)
        p: torch.Tensor | None = None
        for view in views:
            x = slices
            if "z" in view:  # the run reversed, and each slice's context with it
                x = x[::-1, ::-1]
            if "t" in view:
                x = np.swapaxes(x, -1, -2)
            for ax, name in ((-2, "y"), (-1, "x")):
                if name in view:
                    x = np.flip(x, axis=ax)
            q = torch.softmax(self.scores(x), dim=1)  # views, not copies: a 3D net's context stacks are large
            for ax, name in ((-1, "x"), (-2, "y")):
                if name in view:
                    q = q.flip(ax)
            if "t" in view:
                q = q.transpose(-1, -2)
            if "z" in view:
                q = q.flip(0)
            p = q if p is None else p.add_(q)
        assert p is not None
        if len(views) > 1:
            p /= len(views)
        return p.cpu().numpy()

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the network's device; on CUDA through pinned memory with a non-blocking copy."""
        if self.device.type == "cpu":
            return x
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)  # MPS and other devices (without this, every Mac failed: CPU input, MPS weights)

    def slices_per_call(self, slice_shape: tuple[int, int]) -> int:
        """Slices to run together: as many as fit the memory budget (``tile="auto"``), else about ``batch`` tiles."""
        if self.volumetric:  # a whole slab in one volume: the context halo is computed once per slab
            return 1 << 16
        if self.tile == AUTO:
            return self.layout(slice_shape)[0]
        roi = effective_tile(slice_shape, self.tile, self.stride)
        return max(1, self.batch // windows_per_slice(slice_shape, roi, self.overlap))


def as_model(model: Model | str | os.PathLike, device: torch.device | str = "cpu") -> Model:
    """A :class:`Model` as given, or loaded from a model file path.

    Raises
    ------
    InputError
        If ``model`` is neither.
    """
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device=device)
    raise InputError(f"model must be a Model or a model file path, not {type(model).__name__}")


def model_digest(model: Model) -> str:
    """SHA-256 of a model's architecture and weights (identifies it in outputs, for ``resume``)."""
    h = hashlib.sha256(json.dumps([model.info.arch, model.info.params], sort_keys=True).encode())
    for name, t in sorted(model.network.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()
