"""Slabs along an axis, and the tile geometry of 2D slices.

A volume is processed as *slabs*: runs of consecutive slices along the slicing axis,
read and written together (as deep as the storage chunks, so every chunk is decoded
once and no two slabs share an output chunk).  Each slice of a slab is then cut into
overlapping square tiles by MONAI's sliding-window inferer (in plain torch: core/windows.py).

Models with *context* k > 1 ("2.5D") see each slice together with its k // 2
neighbours on each side as input channels: a slab is read with a halo of k // 2
slices on each side (clipped at the volume ends) and :func:`stack_context` turns it
into (N, k, Y, X) inputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "AUTO",
    "auto_tile",
    "check_tile_fits",
    "halo_tiles",
    "pad_to_stride",
    "context_range",
    "effective_tile",
    "normalize_axis",
    "plan_slab_depth",
    "slab_ranges",
    "slab_slicer",
    "stack_context",
]


def normalize_axis(axis: int, ndim: int) -> int:
    """Check ``axis`` against ``ndim`` and make it non-negative.

    Examples
    --------
    >>> normalize_axis(-1, 3), normalize_axis("y", 3)
    (2, 1)
    """
    if isinstance(axis, str) and axis.strip().lower() in ("z", "y", "x") and ndim == 3:
        return "zyx".index(axis.strip().lower())  # as axes="zyx" reads them
    if not isinstance(axis, int) or isinstance(axis, bool) or not -ndim <= axis < ndim:
        raise InputError(f"axis {axis!r} is out of range for a {ndim}D volume: use 0..{ndim - 1} (or z, y, x)")
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


def context_range(start: int, stop: int, k: int, n: int) -> tuple[int, int]:
    """Slices to read for slices ``start:stop`` with ``k`` context slices.

    A halo of ``k // 2`` slices on each side, clipped to ``0..n``.

    Examples
    --------
    >>> context_range(0, 4, 3, 10), context_range(4, 8, 5, 10)
    ((0, 5), (2, 10))
    """
    h = k // 2
    return max(0, start - h), min(n, stop + h)


def stack_context(
    slab: np.ndarray, k: int, before: np.ndarray | None = None, after: np.ndarray | None = None
) -> np.ndarray:
    """Stack each slice with its neighbours as channels: (N, Y, X) -> (N, k, Y, X).

    Channel ``j`` of output slice ``i`` is slice ``i + j - k // 2`` of the sequence
    ``before + slab + after``.  ``before`` and ``after`` hold up to ``k // 2`` slices
    that precede / follow the slab (the halo read around it; more are ignored).  Where
    fewer are given the volume is taken to end there, and the missing neighbours are
    copies of the nearest existing slice (edge replication), so the first slice of a
    volume sees ``[s0, s0, s1]`` with ``k = 3``.

    The result is a read-only strided view when no padding is needed; copy it (e.g.
    ``np.ascontiguousarray``) before writing to it.

    Parameters
    ----------
    slab : array of shape (N, Y, X)
    k : int
        Odd number of slices per output (1 returns ``slab[:, None]``).
    before, after : array of shape (B, Y, X), optional
        Halo slices before / after the slab, in volume order.

    Examples
    --------
    >>> v = np.arange(4).reshape(4, 1, 1)
    >>> stack_context(v, 3)[:, :, 0, 0].tolist()
    [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    >>> stack_context(v[1:3], 3, before=v[:1])[:, :, 0, 0].tolist()
    [[0, 1, 2], [1, 2, 2]]
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise InputError(f"context {k!r} must be an odd number of slices (1, 3, 5, ...)")
    slab = np.asarray(slab)
    if slab.ndim != 3 or slab.shape[0] < 1:
        raise InputError(f"stack_context needs slices of shape (N, Y, X), not {slab.shape}")
    h = k // 2
    parts = []
    if h and before is not None and len(before):
        parts.append(np.asarray(before)[-h:])
    parts.append(slab)
    if h and after is not None and len(after):
        parts.append(np.asarray(after)[:h])
    nb = parts[0].shape[0] if len(parts) > 1 and parts[0] is not slab else 0
    na = parts[-1].shape[0] if parts[-1] is not slab else 0
    ext = np.concatenate(parts) if len(parts) > 1 else slab
    if nb < h or na < h:
        ext = np.pad(ext, ((h - nb, h - na), (0, 0), (0, 0)), mode="edge")
    # window i covers ext[i : i + k]: slice i of the slab sits in its middle
    return np.moveaxis(np.lib.stride_tricks.sliding_window_view(ext, k, axis=0), -1, 1)


def plan_slab_depth(
    shape: tuple[int, ...],
    axis: int,
    chunks: tuple[int, ...] | None,
    requested: int | None,
    *,
    max_bytes: int = 256 * 2**20,
    itemsize: int = 4,
    default: int = 16,
) -> int:
    """Choose how many slices to read and write at a time.

    ``default`` deep, rounded up to a whole number of the input's chunks along ``axis``
    when it has chunks (so each chunk is decoded once: a chunk deeper than ``default`` is
    one slab, chunks of one slice (a folder of TIFF slices, a slice-chunked HDF5) are
    ``default`` of them); at most 64, capped so a float32 slab stays under ``max_bytes``.
    """
    n = shape[axis]
    if requested is not None:
        if not isinstance(requested, int) or requested < 1:
            raise InputError(f"slab {requested!r} must be a positive number of slices")
        return min(requested, n)
    # not the chunk depth alone: a 3D network recomputes 14 context slices per slab, 15x the work
    # at one slice deep (12x slower measured on a folder of TIFF slices)
    c = max(1, int(chunks[axis])) if chunks else default
    depth = c * -(-default // c)
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
            f"(e.g. {max(stride, round((tile if isinstance(tile, int) else stride) / stride) * stride)})"
        )
    return tuple(min(tile, math.ceil(s / stride) * stride) for s in slice_shape)  # type: ignore[return-value]


def check_tile_fits(slice_shape: tuple[int, ...], tile: int, stride: int) -> None:
    """Refuse an explicitly chosen tile that is larger than the slice in every direction.

    A tile larger than the slice along one side only is fine (that side is shrunk, see
    :func:`effective_tile`); one that exceeds the whole slice is almost surely a mistake
    (a tile meant for another volume), so it is refused rather than silently changed.
    A model's *default* tile is never checked: it adapts to small slices.

    Raises
    ------
    InputError
        Naming the slice, the tile and the largest tile that fits.

    Examples
    --------
    >>> check_tile_fits((64, 300), 256, 16)
    >>> check_tile_fits((64, 64), 256, 16)
    Traceback (most recent call last):
    ...
    napari_xrayseg.core.errors.InputError: tile 256 is larger than the 64x64 slice: use --tile 64 or less, \
or leave the tile unset to use the model's default (which adapts to small slices)
    """
    fit = math.ceil(max(slice_shape) / stride) * stride
    if tile > fit:
        dims = "x".join(str(s) for s in slice_shape)
        raise InputError(
            f"tile {tile} is larger than the {dims} slice: use --tile {fit} or less, "
            "or leave the tile unset to use the model's default (which adapts to small slices)"
        )


#: ``tile="auto"``: whole slices when they fit the memory budget, else halo tiles.
AUTO = "auto"


def pad_to_stride(n: int, stride: int) -> int:
    """``n`` rounded up to a multiple of ``stride``.

    Examples
    --------
    >>> pad_to_stride(501, 16), pad_to_stride(512, 16)
    (512, 512)
    """
    return -(-int(n) // int(stride)) * int(stride)


def auto_tile(
    slice_shape: tuple[int, int], *, stride: int, halo: int, bytes_per_pixel: float, budget: float
) -> tuple[int, int]:
    """``(slices_per_call, tile)`` for ``tile="auto"``: whole slices if one fits ``budget``, else tiles.

    A slice padded to the stride that fits the budget goes through the network whole
    (``tile == 0``), as many slices per call as fit. A larger slice is cut into the biggest
    square tiles (a multiple of the stride) that fit, each with a halo of ``halo`` pixels
    around the part it keeps (see :func:`halo_tiles`), one slice per call.

    Parameters
    ----------
    slice_shape : (int, int)
        Shape of one slice.
    stride : int
        The network's stride (tile sides are multiples of it).
    halo : int
        Pixels of context a tile needs on each side (at least the receptive-field radius,
        a multiple of ``stride``).
    bytes_per_pixel : float
        Memory one input pixel costs in a forward pass (activations).
    budget : float
        Bytes a forward pass may use.

    Raises
    ------
    InputError
        If not even one tile with its halo fits the budget.

    Examples
    --------
    >>> auto_tile((501, 501), stride=16, halo=160, bytes_per_pixel=1000, budget=2**30)
    (4, 0)
    >>> auto_tile((4000, 4000), stride=16, halo=160, bytes_per_pixel=1000, budget=2**30)
    (1, 1024)
    """
    px = pad_to_stride(slice_shape[0], stride) * pad_to_stride(slice_shape[1], stride)
    fit = int(budget // (bytes_per_pixel * px))
    if fit >= 1:
        return fit, 0
    side = int(math.isqrt(int(budget // bytes_per_pixel))) // stride * stride
    if side <= 2 * halo:
        need = (2 * halo + stride) ** 2 * bytes_per_pixel
        raise InputError(
            f"a memory budget of {budget / 2**20:.0f} MiB does not fit one tile with its {halo}-pixel halo "
            f"(needs {need / 2**20:.0f} MiB): give a larger budget or a smaller model"
        )
    return 1, side


def halo_tiles(length: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Cut ``0..length`` into tiles of ``tile`` whose *cores* partition it: ``(t0, t1, c0, c1)`` each.

    Tile ``[t0, t1)`` goes through the network and its core ``[c0, c1)`` is kept. Every
    core has ``halo`` pixels of tile on each side except at the ends of the slice, so a
    network whose receptive-field radius is at most ``halo`` gives the same core as it
    would on the whole slice; tiles overlap only where they meet (by ``2 * halo``). With
    ``length``, ``tile`` and ``halo`` multiples of the stride, every tile starts on the
    stride grid (strided networks see the same sampling as on the whole slice).

    Examples
    --------
    >>> halo_tiles(100, 128, 16)
    [(0, 100, 0, 100)]
    >>> halo_tiles(320, 128, 32)
    [(0, 128, 0, 96), (64, 192, 96, 160), (128, 256, 160, 224), (192, 320, 224, 320)]
    """
    if length <= tile:
        return [(0, length, 0, length)]
    if tile <= 2 * halo:
        raise InputError(f"tile {tile} must be larger than twice the halo {halo}")
    out = []
    c0, c1 = 0, tile - halo
    while True:
        t0 = min(max(c0 - halo, 0), length - tile)
        if t0 + tile >= length:
            out.append((t0, length, c0, length))
            return out
        out.append((t0, t0 + tile, c0, c1))
        c0, c1 = c1, c1 + tile - 2 * halo


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Starts of the sliding windows of side ``roi`` along an axis of ``size`` (MONAI's placement).

    One every ``roi * (1 - overlap)`` pixels (at least 1), the last flush with the end; a
    side no longer than the window gets one window (it is padded to it).

    Examples
    --------
    >>> window_starts(100, 32, 0.25)
    [0, 24, 48, 68]
    """
    if size <= roi:
        return [0]
    step = max(1, int(roi * (1 - overlap)))
    n = math.ceil((size - roi) / step) + 1
    return [min(i * step, size - roi) for i in range(n)]


def windows_per_slice(slice_shape: tuple[int, int], roi: tuple[int, int], overlap: float) -> int:
    """Number of sliding windows run for one slice (:func:`window_starts` along each side)."""
    return math.prod(len(window_starts(s, r, overlap)) for s, r in zip(slice_shape, roi))


def describe(arr: Any) -> str:
    """Short description of an array-like for messages."""
    return f"{type(arr).__name__} {tuple(arr.shape)} {getattr(arr, 'dtype', '?')}"
