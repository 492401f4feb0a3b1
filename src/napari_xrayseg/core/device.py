"""Choose the torch device: ``"auto"`` means CUDA when present, else CPU."""

from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["PRECISIONS", "available_devices", "cpu_has_bf16", "resolve_device", "resolve_precision", "tune_allocator"]


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
        ``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

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
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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


_TUNED = False


def tune_allocator(threshold: int = 1 << 30) -> bool:
    """Keep glibc from ``mmap``-ing and unmapping every large activation (CPU inference speed-up).

    glibc serves blocks over 32 MB with a fresh ``mmap`` and returns them on ``free``, so
    eager CPU inference on big tiles pays a page fault per 4 KiB of every activation,
    every layer (measured: more CPU time in faults than in convolutions). ``mallopt``
    raises the mmap and trim thresholds so freed activations are reused. Memory freed by
    the network stays with the process (peak RSS is unchanged; it is just not given back
    between batches). Linux/glibc only; a no-op elsewhere or if already called.

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
