"""Injected faults shared by the tests: a full disk (works as root, unlike chmod) and a cancel at the n-th check."""

from __future__ import annotations

import errno
from pathlib import Path

from napari_xrayseg.core.errors import Cancelled
from napari_xrayseg.core.progress import CancelToken


def chunk_writes_fail(monkeypatch, code: int, text: str, allow: int = 0) -> None:
    """zarr chunk writes fail with ``OSError(code, text)`` after ``allow`` chunks (metadata still fits)."""
    import zarr.storage._local as local

    real = local._put
    calls = {"n": 0}

    def put(path, value, exclusive=False):
        if "c" in Path(path).parts:  # chunk keys live under c/
            calls["n"] += 1
            if calls["n"] > allow:
                raise OSError(code, text, str(path))
        return real(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", put)


def no_space_for_chunks(monkeypatch, allow: int = 0) -> None:
    """Disk full for zarr chunk writes after ``allow`` chunks (metadata still fits)."""
    chunk_writes_fail(monkeypatch, errno.ENOSPC, "No space left on device", allow)


def no_space_for_models(monkeypatch) -> None:
    """Disk full while safetensors writes a model: a partial temporary file, then ENOSPC."""
    import safetensors.torch

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a mod")
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


class NthCheck(CancelToken):
    """A cancel token that cancels at its ``n``-th check (a cancel in the middle of a job)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.calls = n, 0

    def check(self) -> None:
        self.calls += 1
        if self.calls >= self.n:
            raise Cancelled("cancelled by the test")
