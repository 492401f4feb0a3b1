"""Choose the torch device: ``"auto"`` means CUDA when present, else CPU."""

from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["available_devices", "resolve_device"]


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
