"""Grey levels levelled slice by slice along z: for scans whose slices disagree on the grey scale.

Volumes stitched from scans at several heights, a detector or beam whose gain drifted during
a lab scan, or ptychographic slices reconstructed with different phase offsets: the same phase
then has other grey values in different slices. One set of percentile bounds for the whole
volume (:mod:`~napari_xrayseg.core.normalize`) cannot serve both sides of a step: a 20 % gain
step cost the slices below it 0.065 mean Dice on a hard scan (docs/segment.md).

``normalize="slice"`` (:func:`~napari_xrayseg.train`, ``xrayseg train --normalize slice``)
maps each slice along axis 0 (z) affinely so that its 1st and 99th grey-level percentiles
are the volume's typical ones (the median over the slices), before the usual bounds. The
model records it and applies it to every image it segments. It assumes every slice holds
all the phases in similar amounts (a homogeneous sample): in a sample whose make-up changes
along z it would level real contrast away. A slice whose percentile range is under 0.4 of the
typical one (mostly air above a sample, the end of a tapered sample) is not trusted: it takes
the levels of the nearest slice that is.
"""

from __future__ import annotations

import math
import sys
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["LEVEL_PERCENTILES", "LevelledView", "as_model_input", "level_hint", "level_slices", "slice_levels"]

#: The grey-level percentiles of a slice matched to the volume's typical ones.
LEVEL_PERCENTILES = (1.0, 99.0)
#: Pixels of a slice its percentiles are taken from at most (an even grid of them).
LEVEL_PIXELS = 65536
#: A slice whose percentile range is under this share of the typical one (the 90th percentile of the slices'
#: ranges: most slices may be air above a sample) takes its nearest sound slice's levels.
LEVEL_MIN_RANGE = 0.4
#: Side of the central crop of each slice :func:`level_hint` reads (a few chunks, not whole planes).
HINT_CROP = 256


def _block_depth(image: Any) -> int:
    """Slices read per call: one chunk deep along z where the array is chunked, else 8."""
    chunks = getattr(image, "chunks", None)
    if chunks:
        c = chunks[0]
        c = max(c) if isinstance(c, tuple) else c  # dask: a tuple of chunk sizes per axis
        return int(max(1, min(int(c), 64)))
    return 8


def slice_levels(image: Any, *, cancel: Any = None) -> np.ndarray:
    """``(gain, offset)`` per slice along axis 0 that level ``image``'s grey scale: array of shape (Z, 2).

    Slice ``z`` levelled is ``image[z] * gain + offset``: its 1st and 99th percentiles (of an
    even grid of at most :data:`LEVEL_PIXELS` pixels, NaN left out) become the medians of those
    over all slices. A slice without data, constant, or whose range is under
    :data:`LEVEL_MIN_RANGE` of the typical one (most slices may be air) takes the nearest sound slice's levels.

    Parameters
    ----------
    image : array-like of shape (Z, Y, X)
        numpy, dask, zarr, h5py or any array read by slicing.
    cancel : CancelToken, optional
        Checked between blocks of slices.

    Raises
    ------
    InputError
        If the image is not 3D, or no slice holds a range of grey levels.

    Examples
    --------
    >>> x = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    >>> x[2:] = x[2:] * 0.5 + 3  # a step: the lower two slices on another grey scale
    >>> lv = slice_levels(x)
    >>> levelled = x * lv[:, 0, None, None] + lv[:, 1, None, None]
    >>> bool(abs(np.percentile(levelled[3], 99) - np.percentile(levelled[0], 99)) < 0.05)
    True
    """
    return _levels(image, cancel)[0]


def _levels(
    image: Any, cancel: Any = None, percentiles: tuple[float, float] = LEVEL_PERCENTILES
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`slice_levels`' levels, and which slices were sound (their own levels, not a neighbour's).

    ``percentiles``: the pair of each slice mapped onto the typical slice's.
    """
    from .io import read_block
    from .plan import check_image
    from .progress import check

    image = check_image(image)  # a grey-level image: its dtype and dimensions
    shape = tuple(int(s) for s in image.shape)
    if len(shape) != 3:
        raise InputError(
            f"normalize='slice' levels the slices of a volume along z: got an image of shape {shape} "
            "(use normalize='image' for 2D images and stacks of unrelated images)"
        )
    n, h, w = shape
    step = max(1, math.ceil(math.sqrt(h * w / LEVEL_PIXELS)))
    q = np.full((n, 2), np.nan)
    depth = _block_depth(image)
    for a in range(0, n, depth):
        check(cancel)
        b = min(n, a + depth)
        block = read_block(image, (slice(a, b), slice(None, None, step), slice(None, None, step)), what="image")
        for z, sl in enumerate(np.asarray(block, dtype=np.float64), start=a):
            v = sl[np.isfinite(sl)]
            if v.size >= 16 and v.min() < v.max():
                q[z] = np.percentile(v, percentiles)
    spread = q[:, 1] - q[:, 0]
    have = np.isfinite(spread) & (spread > 0)
    if not have.any():
        raise InputError("normalize='slice': no slice holds a range of grey levels (the image is constant or empty)")
    sound = have & (spread >= LEVEL_MIN_RANGE * np.percentile(spread[have], 90))
    ref = np.median(q[sound], axis=0)
    gain = np.ones(n)
    offset = np.zeros(n)
    gain[sound] = (ref[1] - ref[0]) / spread[sound]
    offset[sound] = ref[0] - gain[sound] * q[sound, 0]
    good = np.flatnonzero(sound)
    nearest = good[np.abs(np.arange(n)[:, None] - good[None, :]).argmin(axis=1)]  # the first of two as near
    return np.stack([gain[nearest], offset[nearest]], axis=1), sound


#: Slices :func:`level_hint` compares (evenly spaced along z).
HINT_SLICES = 16
#: :func:`level_hint` speaks when the levelling would move a slice's mid-grey by this share of the
#: typical grey-level range, or more, between slices (sound hard scans: 0.01-0.03; a 10 % gain step: 0.06-0.08).
LEVEL_HINT = 0.06
#: Percentiles :func:`level_hint` also levels by: a change of the scan's grey scale moves them as it moves
#: :data:`LEVEL_PERCENTILES`; a rare phase whose amount changes along z moves the 99th percentile alone.
HINT_CHECK_PERCENTILES = (10.0, 90.0)


def level_hint(image: Any) -> str | None:
    """A hint to train with ``normalize="slice"`` when slices along z disagree on the grey scale, else None.

    Compares :data:`HINT_SLICES` evenly spaced slices: the spread (90th - 10th percentile over
    them) of how far levelling moves each one's mid-grey, as a share of the typical range. It
    speaks when that is at least :data:`LEVEL_HINT` whether the slices are levelled by their
    1st/99th percentiles or by :data:`HINT_CHECK_PERCENTILES` (a rare phase whose amount changes
    along z moves the former alone).

    Examples
    --------
    >>> x = np.random.default_rng(0).random((16, 64, 64)).astype(np.float32)
    >>> level_hint(x) is None
    True
    >>> x[8:] *= 0.7  # a 30 % gain step at slice 8
    >>> level_hint(x)[:48]
    'the grey scale changes along z: levelling would '
    """
    from .plan import check_image

    try:  # a hint never stops a training: what is no grey-level volume is refused later, with its own message
        image = check_image(image)
    except (InputError, TypeError, ValueError, AttributeError):
        return None
    shape = tuple(int(s) for s in image.shape)
    if len(shape) != 3 or shape[0] < 4:
        return None
    idx = np.unique(np.linspace(0, shape[0] - 1, min(HINT_SLICES, shape[0])).round().astype(int))
    crop = tuple(slice(max(0, s // 2 - HINT_CROP // 2), s // 2 + HINT_CROP // 2) for s in shape[1:])
    try:
        sample = _Picked(image, idx, crop)
        lv, sound = _levels(sample)
        check, _ = _levels(sample, percentiles=HINT_CHECK_PERCENTILES)
    except InputError:  # unreadable (a damaged chunk: training names it) or without a range of grey levels
        return None
    if 2 * sound.sum() <= len(sound):  # mostly air or no data: levelling is not the answer
        return None
    mid_slice = np.asarray(sample[(slice(len(idx) // 2, len(idx) // 2 + 1), slice(None), slice(None))], dtype=float)
    v = mid_slice[np.isfinite(mid_slice)]
    if v.size < 16:
        return None
    lo, hi = np.percentile(v, LEVEL_PERCENTILES)
    if not hi > lo:
        return None
    mid = (lo + hi) / 2
    moved = (lv[:, 0] * mid + lv[:, 1] - mid) / (hi - lo)
    spread = float(np.percentile(moved, 90) - np.percentile(moved, 10))
    also = (check[:, 0] * mid + check[:, 1] - mid) / (hi - lo)
    if min(spread, float(np.percentile(also, 90) - np.percentile(also, 10))) < LEVEL_HINT:
        return None
    a, b = int(idx[int(np.argmin(moved))]), int(idx[int(np.argmax(moved))])
    return (
        f"the grey scale changes along z: levelling would move the mid-grey of slice {a} against slice {b} "
        f"by {spread:.0%} of the grey-level range; if that is the scan (stitched heights, a drift) and not the "
        "material, train with normalize='slice' (--normalize slice; docs/segment.md)"
    )


class _Picked:
    """The ``crop`` (y, x slices) of slices ``idx`` along axis 0 of ``source``, seen as a volume."""

    def __init__(self, source: Any, idx: np.ndarray, crop: tuple[slice, slice]) -> None:
        self.source, self.idx = source, idx
        from .io import read_block

        self.data = [read_block(source, (int(i), *crop), what="image") for i in idx]  # a few chunks per slice
        self.shape = (len(idx), *self.data[0].shape)
        self.dtype = self.data[0].dtype

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        return np.stack([self.data[k][index[1:]] for k in range(len(self.idx))[index[0]]])


def _z_of(index: Any, n: int) -> np.ndarray:
    """The slices along axis 0 that ``index`` selects (a 0-d array where it takes one slice)."""
    first = index[0] if isinstance(index, tuple) and index else (slice(None) if isinstance(index, tuple) else index)
    if first is Ellipsis:
        first = slice(None)
    return np.arange(n)[first]


class LevelledView:
    """``source`` read lazily as floats, each slice along axis 0 levelled by :func:`slice_levels`.

    Attributes
    ----------
    source : array-like
        The image (numpy, zarr, h5py, a :class:`~napari_xrayseg.core.normalize.MissingView`, ...).
    levels : numpy.ndarray
        ``(gain, offset)`` per slice, shape (Z, 2).
    """

    def __init__(self, source: Any, levels: np.ndarray) -> None:
        self.source, self.levels = source, np.asarray(levels, dtype=np.float64)
        self.shape = tuple(int(s) for s in source.shape)
        if self.levels.shape != (self.shape[0], 2):
            raise InputError(f"levels of shape {self.levels.shape} do not fit an image of {self.shape[0]} slices")
        self.ndim = len(self.shape)
        from .normalize import working_dtype

        self.dtype = working_dtype(source.dtype)
        chunks = getattr(source, "chunks", None)
        if chunks is not None:
            self.chunks = chunks

    def __getattr__(self, attr: str) -> Any:
        # where the source was read from (store, path, file, filename, name: its voxel size, the
        # checks that an output is not an input), as the source has them
        if attr in ("store", "path", "file", "filename", "name"):
            return getattr(self.source, attr, None)
        raise AttributeError(attr)

    def __getitem__(self, index: Any) -> np.ndarray:
        x = np.asarray(self.source[index]).astype(self.dtype)  # a copy: the source is never written to
        z = _z_of(index, self.shape[0])
        g, o = self.levels[z, 0].astype(self.dtype), self.levels[z, 1].astype(self.dtype)
        if z.ndim:
            g, o = g.reshape(-1, *([1] * (x.ndim - 1))), o.reshape(-1, *([1] * (x.ndim - 1)))
        x *= g
        x += o
        return x

    def __repr__(self) -> str:
        return f"LevelledView({self.source!r})"


#: Levels already computed (the last :data:`CACHE_SIZE`), by the identity of the array they were computed from
#: while it lives, or by a dask array's name (its content's token: a new ``mark_missing`` view of the same
#: data each preview has the same name): previews and suggestions of one image level it once. An array edited
#: in place keeps the levels of its first read: pass ``levels=slice_levels(image)`` after an edit.
_CACHE: OrderedDict[tuple[Any, ...], tuple[weakref.ref | None, np.ndarray]] = OrderedDict()
CACHE_SIZE = 8


def _cached_levels(image: Any, cancel: Any) -> np.ndarray:
    from .normalize import MissingView

    base, marks = image, []
    while isinstance(base, MissingView):  # a new view of the same array (nodata=) each call: the array is the key
        marks.append(base.value)
        base = base.source
    da = sys.modules.get("dask.array")
    name = base.name if da is not None and isinstance(base, da.Array) else None
    key: tuple[Any, ...] = ("dask", name, tuple(marks)) if name else (id(base), tuple(marks))
    hit = _CACHE.get(key)
    if hit is not None and (hit[0] is None or hit[0]() is base):
        _CACHE.move_to_end(key)
        return hit[1]
    levels = slice_levels(image, cancel=cancel)
    ref = None
    if name is None:
        try:
            ref = weakref.ref(base, lambda _r, k=key: _CACHE.pop(k, None))
        except TypeError:  # an object without weak references: not cached
            return levels
    _CACHE[key] = (ref, levels)
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return levels


def level_slices(image: Any, levels: np.ndarray | None = None, *, cancel: Any = None) -> Any:
    """``image`` with each slice along axis 0 levelled onto the volume's typical grey scale, read lazily.

    ``levels`` (from :func:`slice_levels`) are computed when not given, once per array while it
    lives (a :class:`~napari_xrayseg.core.normalize.MissingView` of it: once per array and
    ``nodata``). An image levelled already is returned as it is.

    Examples
    --------
    >>> x = np.stack([np.arange(64.0).reshape(8, 8), np.arange(64.0).reshape(8, 8) * 2 + 10])
    >>> y = level_slices(x)[:]
    >>> bool(np.allclose(y[0], y[1]))
    True
    """
    if isinstance(image, LevelledView):
        return image
    from .plan import check_image

    image = check_image(image)  # a path, a napari layer, a torch tensor: the array they hold
    if levels is None:
        levels = _cached_levels(image, cancel)
    return LevelledView(image, levels)


def as_model_input(image: Any, info: Any, *, cancel: Any = None) -> Any:
    """``image`` levelled as the model's inputs are (``info.normalization["level"]``), else as it is.

    Raises
    ------
    InputError
        If the model levels its inputs and ``image`` is not a volume.
    """
    if (getattr(info, "normalization", None) or {}).get("level") != "z" or isinstance(image, LevelledView):
        return image
    if len(image.shape) != 3:
        raise InputError(
            f"the model levels the slices of volumes along z (trained with normalize='slice'): got an image of "
            f"shape {tuple(image.shape)}; give a 3D volume, or a model trained with normalize='image'"
        )
    return level_slices(image, cancel=cancel)
