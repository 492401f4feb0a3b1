"""Slabs along an axis, and the tile geometry of 2D slices.

A volume is processed as *slabs*: runs of consecutive slices along the slicing axis,
read and written together (as deep as the storage chunks, so every chunk is decoded
once and no two slabs share an output chunk).  Each slice of a slab is then cut into
overlapping square tiles by MONAI's sliding-window inferer.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import InputError

__all__ = ["effective_tile", "normalize_axis", "plan_slab_depth", "slab_ranges", "slab_slicer"]


def normalize_axis(axis: int, ndim: int) -> int:
    """Check ``axis`` against ``ndim`` and make it non-negative.

    Examples
    --------
    >>> normalize_axis(-1, 3)
    2
    """
    if not isinstance(axis, int) or isinstance(axis, bool) or not -ndim <= axis < ndim:
        raise InputError(f"axis {axis!r} is out of range for a {ndim}D volume: use 0..{ndim - 1}")
    return axis % ndim


def slab_ranges(n: int, depth: int) -> list[tuple[int, int]]:
    """Half-open ``(start, stop)`` ranges of at most ``depth`` slices covering ``0..n``.

    Examples
    --------
    >>> slab_ranges(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    """
    if depth < 1:
        raise InputError(f"slab depth {depth} must be at least 1")
    return [(s, min(s + depth, n)) for s in range(0, n, depth)]


def slab_slicer(axis: int, start: int, stop: int, ndim: int) -> tuple[slice, ...]:
    """Index tuple selecting slices ``start:stop`` along ``axis``.

    Examples
    --------
    >>> slab_slicer(1, 2, 5, 3)
    (slice(None, None, None), slice(2, 5, None), slice(None, None, None))
    """
    return tuple(slice(start, stop) if d == axis else slice(None) for d in range(ndim))


def plan_slab_depth(shape: tuple[int, ...], axis: int, chunks: tuple[int, ...] | None,
                    requested: int | None, *, max_bytes: int = 256 * 2**20, itemsize: int = 4) -> int:
    """Choose how many slices to read and write at a time.

    The input's chunk depth along ``axis`` when it has chunks (so each chunk is decoded
    once), else 16; capped so a float32 slab stays under ``max_bytes``.
    """
    n = shape[axis]
    if requested is not None:
        if not isinstance(requested, int) or requested < 1:
            raise InputError(f"slab {requested!r} must be a positive number of slices")
        return min(requested, n)
    depth = chunks[axis] if chunks else 16
    per_slice = itemsize * math.prod(s for d, s in enumerate(shape) if d != axis)
    cap = max(1, max_bytes // max(per_slice, 1))
    return max(1, min(depth, 64, cap, n))


def effective_tile(slice_shape: tuple[int, int], tile: int, stride: int) -> tuple[int, int]:
    """The tile actually used for slices of ``slice_shape``.

    A tile larger than the slice is shrunk to the slice, rounded up to the network's
    stride (padding a 64x64 slice to 256x256 would cost 16x for nothing).

    Raises
    ------
    InputError
        If ``tile`` is not a positive multiple of ``stride``.

    Examples
    --------
    >>> effective_tile((100, 1000), 256, 16)
    (112, 256)
    """
    if not isinstance(tile, int) or isinstance(tile, bool) or tile < stride or tile % stride:
        raise InputError(
            f"tile {tile!r} must be a positive multiple of the network's stride {stride} "
            f"(e.g. {max(stride, round((tile if isinstance(tile, int) else stride) / stride) * stride)})")
    return tuple(min(tile, math.ceil(s / stride) * stride) for s in slice_shape)  # type: ignore[return-value]


def windows_per_slice(slice_shape: tuple[int, int], roi: tuple[int, int], overlap: float) -> int:
    """Number of sliding windows MONAI will run for one slice."""
    n = 1
    for s, r in zip(slice_shape, roi):
        if s <= r:
            continue
        step = max(1, int(r * (1 - overlap)))
        n *= math.ceil((s - r) / step) + 1
    return n


def describe(arr: Any) -> str:
    """Short description of an array-like for messages."""
    return f"{type(arr).__name__} {tuple(arr.shape)} {getattr(arr, 'dtype', '?')}"
