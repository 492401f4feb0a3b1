"""Simulated disk-full faults shared by the fault tests (they work as root, unlike chmod)."""

from __future__ import annotations

import errno
from pathlib import Path


def no_space_for_chunks(monkeypatch, allow: int = 0) -> None:
    """Disk full for zarr chunk writes after ``allow`` chunks (metadata still fits)."""
    import zarr.storage._local as local

    real = local._put
    calls = {"n": 0}

    def put(path, value, exclusive=False):
        if "c" in Path(path).parts:  # chunk keys live under c/
            calls["n"] += 1
            if calls["n"] > allow:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", put)


def no_space_for_models(monkeypatch) -> None:
    """Disk full while safetensors writes a model: a partial temporary file, then ENOSPC."""
    import safetensors.torch

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a mod")
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
