"""Choose the torch device (``"auto"``: CUDA, then Apple MPS, then CPU), its precision and memory budget."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from .errors import InputError

__all__ = [
    "CPU_MEMORY_BUDGET",
    "CPU_VOLUME_BUDGET",
    "PRECISIONS",
    "TORCH_GLOBAL_STATE",
    "available_devices",
    "cpu_bf16_conv_faults",
    "cpu_has_amx",
    "cpu_has_bf16",
    "memory_budget",
    "release_memory",
    "resolve_device",
    "resolve_precision",
    "tune_allocator",
]

#: Held while process-wide torch/MONAI state is swapped for one job: the training steps' own
#: random stream (``training._StepRNG``), seeded weight initialisation, MONAI's ``track_meta``
#: switch. Two trainings in one process (the Train and Annotate widgets' workers) then neither
#: draw each other's dropout masks nor flip the switch under each other's transforms. The GUI
#: thread never takes it.
TORCH_GLOBAL_STATE = threading.RLock()


def available_devices() -> list[str]:
    """Names of the devices torch can use here, e.g. ``["cpu", "cuda:0"]``."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device name into a :class:`torch.device`, checking that it exists.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA if present, else Apple MPS, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    torch.device

    Raises
    ------
    InputError
        If the device does not exist on this machine; the message lists those that do.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    avail = available_devices()
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise InputError(f"unknown device {device!r}: use 'auto' or one of {avail}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device {device!r} asked for but CUDA is not available (devices here: {avail}); "
                "install a CUDA build of torch or use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} does not exist: devices here are {avail}")
    elif dev.type == "mps" and "mps" not in avail:
        raise InputError(f"device {device!r} is not available: devices here are {avail}")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {device!r}: use 'auto' or one of {avail}")
    return dev


def worker_device(device: str | torch.device = "auto") -> torch.device:
    """The device a cluster's workers are asked for, as the client plans with it.

    The client only plans (the arithmetic, ``precision="auto"``) and need not have that device:
    a GPU cluster is driven from a login node without one (QA: ``--device cuda`` was refused
    there). The name is checked, not the device; ``"auto"`` is what this machine has.

    Examples
    --------
    >>> worker_device("cuda:1"), worker_device("cpu")
    (device(type='cuda', index=1), device(type='cpu'))
    """
    name = str(device).strip().lower()
    if name == "auto":
        return resolve_device(name)
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise InputError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from e
    if dev.type not in ("cpu", "cuda", "mps") or (dev.index is not None and dev.index < 0):
        raise InputError(f"unsupported device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return dev


_TUNED = False


def tune_allocator(threshold: int = 1 << 30) -> bool:
    """Keep glibc from ``mmap``-ing and unmapping every large activation (CPU inference speed-up).

    glibc serves blocks over 32 MB with a fresh ``mmap`` and returns them on ``free``, so
    eager CPU inference on big tiles pays a page fault per 4 KiB of every activation,
    every layer (measured: more CPU time in faults than in convolutions). ``mallopt``
    raises the mmap and trim thresholds so freed activations are reused. Memory freed by
    the network stays with the process (not given back between batches), and the kept heap
    fragments: peak RSS grows (measured on 2048² slices with the 3D network: 3415 -> 3941 MB,
    docs/performance.md). Linux/glibc only; a no-op elsewhere or if already called.

    Returns
    -------
    bool
        Whether the allocator was tuned.
    """
    global _TUNED
    if _TUNED:
        return True
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    _TUNED = bool(mallopt(m_mmap_threshold, threshold)) and bool(mallopt(m_trim_threshold, 2 * threshold))
    return _TUNED


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); emulated bf16 is far slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:  # not Linux: stay with fp32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles for bfloat16 (Intel Xeon since Sapphire Rapids).

    ``train(precision="auto")`` trains in bf16 on CPUs only on these: on a CPU with AVX512-BF16
    but no AMX (AMD EPYC, torch 2.13) oneDNN's bf16 weight gradient of 3D convolutions was not
    finite in 3-7 % of ``unet3d`` steps (docs/train.md), so such CPUs train in fp32 unless bf16 is
    asked for. Inference (forward passes only) uses bf16 wherever :func:`cpu_has_bf16`.
    """
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


#: (convolution, input shape) -> whether its CPU bf16 gradient failed the check; one check a process
_BF16_CHECKED: dict[tuple[Any, ...], bool] = {}
_conv_backward = torch.ops.aten.convolution_backward  # the kernel under check (a test stands in a faulty one)


def cpu_bf16_conv_faults(run: Callable[[], object], net: torch.nn.Module) -> list[str]:
    """The convolutions of ``net`` whose CPU bf16 weight gradient is wrong at the shapes ``run()`` gives them.

    oneDNN's bf16 weight gradient (torch 2.13, Xeon with AMX) is garbage, mostly NaN, in output
    channels 16-23 of some convolutions: 24 or 32 output channels at an output depth of 4 (a
    ``unet3d`` of size medium or large on 8 context slices), batch 4 or more. Every depth-8 step
    of such a network was non-finite, so training skipped it (docs/train.md). This runs ``run``
    (a forward pass of ``net``, put in training mode, without gradients, under CPU bf16 autocast;
    its mode, batch norm's running statistics and the torch RNG are put back after), records the shape
    of every convolution it calls with autocast on, and compares each one's bf16 weight and bias
    gradient of random data with the fp32 gradient of the same bf16 values: a fault is a
    non-finite value or a relative error over 5 % (a sound kernel's is about 0.2 %). Each
    (convolution, shape) is checked once a process. Returns ``"name (shape)"`` of each fault.
    """
    calls: list[tuple[str, torch.nn.Module, tuple[int, ...], tuple[int, ...]]] = []
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]

    def record(name: str) -> Callable[..., None]:
        def hook(m: torch.nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            if torch.is_autocast_enabled("cpu") and getattr(m, "padding_mode", "zeros") == "zeros":
                calls.append((name, m, tuple(args[0].shape), tuple(out.shape)))

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in convs]
    kept = [b.detach().clone() for b in net.buffers()]
    mode = net.training
    try:
        with (
            TORCH_GLOBAL_STATE,
            torch.random.fork_rng(devices=[]),
            torch.no_grad(),
            torch.autocast("cpu", dtype=torch.bfloat16),
        ):
            net.train()  # the layers that run in fp32 in training (unet.UNet's top block) are not checked
            run()
    finally:
        net.train(mode)
        for h in handles:
            h.remove()
        with torch.no_grad():
            for b, k in zip(net.buffers(), kept):
                b.copy_(k)
    faults = []
    for name, m, xs, ys in calls:
        w = m.weight  # type: ignore[union-attr]
        geometry = (m.stride, m.padding, m.dilation, m.output_padding, m.groups)
        key = (type(m), tuple(w.shape), geometry, m.bias is not None, xs)
        if key not in _BF16_CHECKED:
            _BF16_CHECKED[key] = _bf16_conv_grad_wrong(m, xs, ys)
        if _BF16_CHECKED[key]:
            faults.append(f"{name} ({tuple(w.shape)}, input {xs})")
    return faults


def _bf16_conv_grad_wrong(m: Any, xs: tuple[int, ...], ys: tuple[int, ...]) -> bool:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(xs, generator=g).bfloat16()
    go = (torch.randn(ys, generator=g) * 1e-3).bfloat16()
    w = m.weight.detach().cpu().bfloat16()
    bias = [int(m.out_channels)] if m.bias is not None else None
    args = (bias, m.stride, m.padding, m.dilation, bool(m.transposed), m.output_padding, m.groups)
    mask = (False, True, m.bias is not None)
    back = _conv_backward
    ref = back(go.float(), x.float(), w.float(), *args, mask)[1:]
    for _ in range(3):  # the garbage is not the same every call
        got = back(go, x, w, *args, mask)[1:]
        for a, r in zip(got, ref):
            if a is None:
                continue
            a = a.float()
            if not bool(torch.isfinite(a).all()) or float((a - r).norm()) > 0.05 * float(r.norm()) + 1e-12:
                return True
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The arithmetic the network runs in: ``"auto"`` picks fp16 on CUDA, bf16 on CPUs with native bf16, else fp32.

    Raises
    ------
    InputError
        For an unknown name, or fp16 on CPU (not supported by fast CPU kernels).
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} must be one of {PRECISIONS}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise InputError("precision 'fp16' needs a CUDA device: use 'bf16' or 'fp32' on CPU")
    return precision


#: Bytes of activations one forward pass may use on CPU with ``tile="auto"`` (a 1024x1024
#: slice of the default model fits whole; RSS stays under 1.5 GB, docs/performance.md).
CPU_MEMORY_BUDGET = 768 * 2**20
#: The same for a 3D network on CPU (``unet3d``): there larger windows pay, because each window
#: recomputes its overlap and its context slices. 512² slices in slabs of 32 run whole in 1.5 GiB
#: at 5.9 Mvox/s, against 3.3 Mvox/s in the parts that 768 MiB allows and 2.6 Mvox/s in 256²
#: windows (2 cores, fp32, ``benchmarks/volume_windows.py``), for 1.28 GiB of peak RSS.
CPU_VOLUME_BUDGET = 1536 * 2**20


def memory_budget(device: torch.device, free: int | None = None, total: int | None = None) -> float:
    """Bytes of activations a forward pass may use on ``device`` (sizes batches and tiles).

    On CUDA half of the free memory (``free``/``total``: ``torch.cuda.mem_get_info``, asked
    when not given), so another process or a viewer keeps room; elsewhere
    :data:`CPU_MEMORY_BUDGET` (on CPU, larger batches gain nothing: measured in
    docs/performance.md).

    Examples
    --------
    >>> memory_budget(torch.device("cuda"), free=40 * 2**30, total=80 * 2**30) / 2**30
    20.0
    >>> memory_budget(torch.device("cpu")) == CPU_MEMORY_BUDGET
    True
    """
    if device.type != "cuda":
        return float(CPU_MEMORY_BUDGET)
    if free is None:
        free, total = torch.cuda.mem_get_info(device)
    return max(0.5 * free, float(CPU_MEMORY_BUDGET) / 4)


def available_memory() -> int | None:
    """Bytes of RAM the system can give this process now (Linux ``MemAvailable``, else psutil), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def release_memory(device: torch.device | str | None = None) -> None:
    """Give cached accelerator memory back (after training or segmenting in a long-lived GUI process).

    torch keeps freed CUDA/MPS blocks cached for reuse; a napari session that trained a
    model would otherwise hold that memory until it exits. A no-op on CPU, where freed
    tensors go back at once: the full garbage collection that finds tensors held in
    reference cycles takes 1-2 s in a napari session (measured), so it runs only when an
    accelerator's cache is to be emptied.
    """
    import gc

    kind = torch.device(device).type if device is not None else None
    cuda = kind in (None, "cuda") and torch.cuda.is_available() and torch.cuda.is_initialized()
    mps = getattr(torch, "mps", None)
    mps = kind in (None, "mps") and mps is not None and torch.backends.mps.is_available()
    if not (cuda or mps):
        return
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    if mps:
        torch.mps.empty_cache()
