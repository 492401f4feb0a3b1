"""Property-based tests of the slab and tile geometry, on random shapes (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.tiling import (
    check_tile_fits,
    context_range,
    effective_tile,
    normalize_axis,
    plan_slab_depth,
    slab_ranges,
    slab_slicer,
    stack_context,
    windows_per_slice,
)

FAST = settings(max_examples=150, deadline=None)
strides = st.sampled_from([1, 2, 4, 8, 16, 32])
odd_k = st.integers(0, 7).map(lambda i: 2 * i + 1)


@FAST
@given(n=st.integers(0, 500), depth=st.integers(1, 80))
def test_slab_ranges_cover_exactly_once(n, depth):
    ranges = slab_ranges(n, depth)
    covered = [i for a, b in ranges for i in range(a, b)]
    assert covered == list(range(n))  # every slice once, in order, no gaps or overlaps
    assert all(0 < b - a <= depth for a, b in ranges)
    assert all(b - a == depth for a, b in ranges[:-1])  # only the last slab may be short
    assert len(ranges) == math.ceil(n / depth)


@FAST
@given(n=st.integers(0, 50), depth=st.integers(-5, 0))
def test_slab_ranges_refuse_a_depth_below_one(n, depth):
    with pytest.raises(InputError, match="at least 1"):
        slab_ranges(n, depth)


@FAST
@given(data=st.data(), n=st.integers(1, 200), k=odd_k)
def test_context_range_is_the_clipped_halo(data, n, k):
    start = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(start + 1, n))
    lo, hi = context_range(start, stop, k, n)
    h = k // 2
    assert 0 <= lo <= start < stop <= hi <= n
    assert start - lo == min(h, start) and hi - stop == min(h, n - stop)


@settings(max_examples=120, deadline=None)
@given(data=st.data(), n=st.integers(1, 12), k=odd_k, depth=st.integers(1, 6))
def test_stack_context_by_slabs_equals_clamped_neighbours(data, n, k, depth):
    """Slab by slab with the halo from context_range == the whole volume at once, borders included."""
    y, x = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    vol = np.arange(n * y * x, dtype=np.float32).reshape(n, y, x)
    h = k // 2
    expected = np.stack([vol[np.clip(np.arange(i - h, i + h + 1), 0, n - 1)] for i in range(n)])
    np.testing.assert_array_equal(stack_context(vol, k), expected)
    parts = []
    for a, b in slab_ranges(n, depth):
        lo, hi = context_range(a, b, k, n)
        parts.append(stack_context(vol[a:b], k, before=vol[lo:a], after=vol[b:hi]))
    got = np.concatenate(parts)
    assert got.shape == (n, k, y, x)
    np.testing.assert_array_equal(got, expected)
    # the middle channel is always the slice itself
    np.testing.assert_array_equal(got[:, h], vol)


@FAST
@given(k=st.one_of(st.integers(-3, 0), st.integers(1, 8).map(lambda i: 2 * i), st.just(True)))
def test_stack_context_refuses_even_or_non_positive_k(k):
    with pytest.raises(InputError, match="odd number"):
        stack_context(np.zeros((2, 2, 2)), k)


@FAST
@given(sy=st.integers(1, 2000), sx=st.integers(1, 2000), stride=strides, mult=st.integers(1, 64))
def test_effective_tile_is_minimal_and_a_multiple_of_the_stride(sy, sx, stride, mult):
    tile = stride * mult
    roi = effective_tile((sy, sx), tile, stride)
    for s, r in zip((sy, sx), roi):
        assert r % stride == 0 and stride <= r <= tile
        if r < tile:  # shrunk: covers the side with less than one stride to spare
            assert s <= r < s + stride
        else:
            assert r == tile


@FAST
@given(stride=strides.filter(lambda s: s > 1), tile=st.integers(-64, 600))
def test_effective_tile_refuses_tiles_off_the_stride(stride, tile):
    if tile >= stride and tile % stride == 0:
        return
    with pytest.raises(InputError, match=rf"tile {tile} must be a positive multiple of the network's stride"):
        effective_tile((64, 64), tile, stride)


@FAST
@given(sy=st.integers(1, 600), sx=st.integers(1, 600), stride=strides, mult=st.integers(1, 40))
def test_check_tile_fits_refuses_exactly_the_tiles_bigger_than_the_slice(sy, sx, stride, mult):
    tile = stride * mult
    fit = math.ceil(max(sy, sx) / stride) * stride
    if tile <= fit:
        check_tile_fits((sy, sx), tile, stride)
    else:
        with pytest.raises(
            InputError,
            match=rf"tile {tile} is larger than the {sy}x{sx} slice: "
            rf"use --tile {fit} or less",
        ):
            check_tile_fits((sy, sx), tile, stride)
    check_tile_fits((sy, sx), fit, stride)  # the suggested tile is always accepted


@settings(max_examples=60, deadline=None)
@given(
    sy=st.integers(1, 300),
    sx=st.integers(1, 300),
    stride=st.sampled_from([4, 8, 16]),
    mult=st.integers(1, 16),
    overlap=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75]),
)
def test_windows_per_slice_matches_monai(sy, sx, stride, mult, overlap):
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    roi = effective_tile((sy, sx), stride * mult, stride)
    padded = tuple(max(s, r) for s, r in zip((sy, sx), roi))  # sliding_window_inference pads to the roi
    interval = _get_scan_interval(padded, roi, 2, (overlap, overlap))
    n = windows_per_slice((sy, sx), roi, overlap)
    assert n == len(dense_patch_slices(padded, roi, interval))
    assert n >= 1


@FAST
@given(data=st.data(), ndim=st.integers(2, 4))
def test_normalize_axis_and_slab_slicer(data, ndim):
    axis = data.draw(st.integers(-ndim - 3, ndim + 2))
    if -ndim <= axis < ndim:
        a = normalize_axis(axis, ndim)
        assert 0 <= a < ndim and a % ndim == axis % ndim
        idx = slab_slicer(a, 1, 2, ndim)
        assert len(idx) == ndim and idx[a] == slice(1, 2)
        assert all(s == slice(None) for d, s in enumerate(idx) if d != a)
    else:
        with pytest.raises(InputError, match="out of range"):
            normalize_axis(axis, ndim)


@FAST
@given(
    shape=st.tuples(st.integers(1, 300), st.integers(1, 3000), st.integers(1, 3000)),
    axis=st.integers(0, 2),
    chunk=st.one_of(st.none(), st.integers(1, 100)),
    requested=st.one_of(st.none(), st.integers(1, 500)),
)
def test_plan_slab_depth_stays_in_the_volume(shape, axis, chunk, requested):
    chunks = None if chunk is None else tuple(chunk if d == axis else s for d, s in enumerate(shape))
    depth = plan_slab_depth(shape, axis, chunks, requested)
    assert 1 <= depth <= shape[axis]
    if requested is not None:
        assert depth == min(requested, shape[axis])
