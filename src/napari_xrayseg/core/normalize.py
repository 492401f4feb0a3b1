"""Robust input normalisation from percentiles of a sample of the image, and voxels without data.

The bounds are computed from a few evenly spaced slices (never the whole volume in
RAM), stored in the model and applied identically at inference.

NaN marks voxels without data: outside a reconstruction's circular field of view, or
masked out. They are left out of the percentiles and filled, before a network sees them,
with the nearest voxel that has data in the same slice (:func:`fill_missing`): a constant
there (the zero of a masked reconstruction) is an edge the network answers to, which cost
0.04 to 0.73 mean Dice inside the field of view of hard scans (docs/segment.md). Segmentation
labels them 0. A reconstruction whose outside holds a number (tomopy's ``circ_mask`` writes 0)
names it with ``nodata=`` (:func:`mark_missing`, ``--nodata``).
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import numpy as np

from .errors import InputError
from .said import first_time

log = logging.getLogger(__name__)

__all__ = [
    "MissingView",
    "apply_normalization",
    "compute_normalization",
    "constant_rows_missing",
    "constant_slices_missing",
    "dead_slices_missing",
    "fill_missing",
    "mark_missing",
    "normalize_of",
    "pooled_normalization",
]


def compute_normalization(
    image: Any,
    *,
    percentiles: tuple[float, float] = (0.5, 99.5),
    max_slices: int = 16,
    max_pixels: int = 4_000_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile bounds of an image, from a sample of slices along axis 0.

    Parameters
    ----------
    image : array-like of shape (Z, Y, X) or (Y, X)
        numpy, dask, zarr or h5py array.
    percentiles : (float, float)
        Lower and upper percentiles.
    max_slices : int
        Slices read at most (evenly spaced along axis 0).
    max_pixels : int
        Pixels used at most (a random sample, with replacement, of the slices read).
    seed : int
        Seed for the pixel subset.

    Returns
    -------
    dict
        ``{"method": "percentile", "low": lo, "high": hi, "percentiles": [p_lo, p_hi]}``.

    Raises
    ------
    InputError
        If the sample holds inf, holds no data (all NaN) or the image is constant.

    Examples
    --------
    >>> compute_normalization(np.arange(100.0).reshape(10, 10), percentiles=(0, 100))["high"]
    99.0
    """
    return _bounds(_sample(image, max_slices, max_pixels, seed), percentiles)


#: Array libraries that read a list of slices in one call, decoding each chunk once (numpy, dask, zarr's
#: orthogonal selection, h5py's hyperslab union); others are read a slice at a time.
_ONE_READ = ("numpy", "dask", "zarr", "h5py")


def working_dtype(dtype: Any) -> np.dtype:
    """The float type grey levels are held in before the normalisation: float32, or float64 where float32 is too coarse.

    float64 for values float32 cannot keep apart: float64 and integers of 32 bits or more.
    The normalisation takes the offset off in that type and narrows after (QA: a uint32 image on an offset of
    4e9 kept 5 of its 733 grey levels per slice, float64 ``+ 1e7`` 2 of 4096: mean Dice 0.79 and 0.55 instead
    of 0.94; int64 on 1e12 was called constant).

    >>> [str(working_dtype(t)) for t in ("uint8", "uint16", "float32", "int32", "uint32", "float64")]
    ['float32', 'float32', 'float32', 'float64', 'float64', 'float64']
    """
    dt = np.dtype(dtype)
    wide = (dt.kind in "iu" and dt.itemsize >= 4) or (dt.kind == "f" and dt.itemsize > 4)
    return np.dtype(np.float64 if wide else np.float32)


def _sample(image: Any, max_slices: int, max_pixels: int, seed: int) -> np.ndarray:
    """Up to ``max_pixels`` values of ``image`` from up to ``max_slices`` of its slices."""
    shape = image.shape
    from .io import read_block

    # the slices stay in the image's type until the pixels are drawn: 16 slices of 8192^2 uint16 took 8.1 GB as
    # float32 for a 4 M pixel sample (QA s45); the values drawn, converted after, are the same
    if len(shape) == 2:
        sample = read_block(image, (Ellipsis,), what="image")[None]
    elif type(image).__module__.split(".")[0] in _ONE_READ:
        # every sample slice in one read: a chunk several slices deep (or across the slices: (Z, Y, 1)) is decoded
        # once, not once per slice (16 times the file for an HDF5 chunked along x; the same slices, same bounds)
        idx = [k for _, _, ks in _sample_blocks(image, shape[0], max_slices) for k in ks]
        where = f"image (slices {idx[0]}..{idx[-1]} along axis 0)"  # the percentile sample's
        sample = read_block(image, (np.asarray(idx),), what=where)
    else:
        sample = np.concatenate(
            [
                read_block(image, (slice(a, b),), what=f"image (slices {a}..{b - 1} along axis 0)")[np.asarray(idx) - a]
                for a, b, idx in _sample_blocks(image, shape[0], max_slices)
            ]
        )
    if len(shape) != 2:
        idx = [k for _, _, ks in _sample_blocks(image, shape[0], max_slices) for k in ks]
        sample = _without_corrupt_slices(sample, idx)
    flat = sample.reshape(-1)
    if flat.size > max_pixels:
        flat = flat[np.random.default_rng(seed).integers(0, flat.size, max_pixels)]  # O(max_pixels), unlike choice
    return flat.astype(working_dtype(flat.dtype), copy=False)


#: a sampled slice whose median lies this many times the slices' typical spread (99.5th - 0.5th
#: percentile) from the slices' median median is taken for a corrupt slice (docs/train.md#normalisation)
CORRUPT_SPREADS = 2.0


def _without_corrupt_slices(sample: np.ndarray, idx: list[int]) -> np.ndarray:
    """The sampled slices (K, Y, X) without those that look corrupt: constant, or far from the others' grey levels.

    One slice of 16 is 6 % of the pooled sample, more than the 0.5 % tails the bounds are taken
    at: a dead (all 0) or saturated (all 65535) slice, or one stored 10x too bright, set a bound
    by itself and every other slice lost its contrast (mean Dice 0.88 to 0.16 in a QA run).
    Such slices are left out, with a warning, while most slices remain; in a sound scan none is
    (a drift of 20 % along the axis moves a slice's median by a fraction of one spread).
    """
    stats: list[tuple[int, float, float, bool]] = []
    for k, sl in enumerate(sample):
        v = sl.reshape(-1)[:: max(1, sl.size // 65536)]
        v = v.astype(working_dtype(v.dtype), copy=False)  # as the sample's values are used (in the image's type)
        v = v[np.isfinite(v)]
        if v.size:
            lo, med, hi = np.percentile(v, (0.5, 50, 99.5))
            stats.append((k, float(med), float(hi - lo), bool(v.min() == v.max())))
    sound = [t for t in stats if not t[3]]
    if len(stats) < 3 or not sound:
        return sample
    centre = float(np.median([t[1] for t in sound]))
    spread = float(np.median([t[2] for t in sound]))
    bad = [t for t in stats if t[3] or abs(t[1] - centre) > CORRUPT_SPREADS * spread]
    if not bad or 2 * len(bad) >= len(stats):
        return sample
    what = ", ".join(f"{idx[k]} ({'constant' if const else 'median'} {med:g})" for k, med, _, const in bad)
    if first_time("corrupt-slices", what, str(centre)):  # once a run, not once per pass over the image
        log.warning(
            "slices %s along axis 0 look corrupt (grey levels unlike the other sampled slices': median %g): "
            "left out of the grey-level bounds; set them to NaN (no data) if they hold none",
            what,
            centre,
        )
    drop = {t[0] for t in bad}
    return sample[[k for k in range(len(sample)) if k not in drop]]


def _bounds(flat: np.ndarray, percentiles: tuple[float, float]) -> dict[str, Any]:
    flat = flat[~np.isnan(flat)]  # no data (outside the field of view): not part of the grey levels
    if flat.size == 0:
        raise InputError("image holds no data: every value sampled is NaN (NaN marks voxels without data)")
    if not np.all(np.isfinite(flat)):
        raise InputError("image holds inf values: replace them (e.g. with NaN for no data) before segmenting")
    say = first_time("bounds", flat)  # one run normalises the same image several times: its warnings said once
    kept = _without_outlier_tails(flat, say=say)
    lo, hi = (float(v) for v in np.percentile(kept, percentiles))
    if not hi > lo:
        lo, hi = float(flat.min()), float(flat.max())
        if not hi > lo:
            raise InputError(f"image is constant (all values {lo:g}): there is nothing to segment")
    hint = outside_hint(flat) if say else None
    if hint:
        log.warning("%s", hint)
    return {"method": "percentile", "low": lo, "high": hi, "percentiles": [float(p) for p in percentiles]}


#: An empty band of grey levels at least this many times as wide as the middle 90 % of the sampled
#: values, beyond its 5th or 95th percentile, cuts off an outlier tail (:func:`_without_outlier_tails`).
TAIL_GAP = 1.0
#: Sampled values the gap search sorts (a stride of the random sample beyond it).
TAIL_SAMPLE = 262_144


def _without_outlier_tails(flat: np.ndarray, *, say: bool = True) -> np.ndarray:
    """``flat`` (finite) without values cut off from the rest by an empty band of grey levels, with a warning.

    Hot, saturated or corrupt voxels (zingers, 65535 in a scan of 1000-4000, a slice with 10 %
    of its voxels at 1e30) took the 99.5th percentile once they were over 0.5 % of the sample:
    every real grey level then normalised to about 0 and the whole volume came out as one
    class, with no word (QA: Dice 0.91 to 0.15 from 0.6 % of the voxels). Such values lie far
    beyond the others with nothing between them; real phases do not, as blur and partial volume
    fill the grey levels between any two of them. Values beyond an empty band at least
    :data:`TAIL_GAP` times as wide as the 5th-95th percentile range are left out of the bounds
    (and so clipped like one hot pixel is); nothing changes where there is none.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(1000.0, 100.0, 10_000)
    >>> _without_outlier_tails(x).size == x.size  # a sound scan: nothing left out
    True
    >>> x[:100] = 65535.0  # 1 % saturated
    >>> bool(_without_outlier_tails(x).max() < 2000)
    True
    """
    v = np.sort(flat if flat.size <= TAIL_SAMPLE else flat[:: -(-flat.size // TAIL_SAMPLE)])
    i5, i95 = int(0.05 * (v.size - 1)), int(0.95 * (v.size - 1))
    width = float(v[i95]) - float(v[i5])
    if not width > 0 or v.size < 100:
        return flat
    lo_cut, hi_cut = float(v[0]), float(v[-1])
    top = np.diff(v[i95:].astype(np.float64))
    if top.size and top.max() > TAIL_GAP * width:
        hi_cut = float(v[i95 + int(top.argmax())])
    bottom = np.diff(v[: i5 + 1].astype(np.float64))
    if bottom.size and bottom.max() > TAIL_GAP * width:
        lo_cut = float(v[int(bottom.argmax()) + 1])
    if lo_cut == float(v[0]) and hi_cut == float(v[-1]):
        return flat
    keep = (flat >= lo_cut) & (flat <= hi_cut)
    if not say:
        return flat[keep]
    out = flat[~keep]
    log.warning(
        "%.2g%% of the sampled voxels (%g..%g) lie far beyond the image's other grey levels (%g..%g), with none "
        "between: hot, saturated or corrupt voxels; left out of the grey-level bounds and clipped. Set them to NaN "
        "(no data) if they hold none",
        100.0 * out.size / flat.size,
        float(out.min()),
        float(out.max()),
        lo_cut,
        hi_cut,
    )
    return flat[keep]


#: share of an image's sampled voxels at exactly its lowest or highest value from which that value
#: looks like the outside of a field of view (a circle in its square leaves 21 % outside)
OUTSIDE_SHARE = 0.05
#: Sampled values in which :func:`outside_hint` looks for one float value repeated that often, and how
#: many distinct values make a float scan (data converted from 8 bits has 256 at most)
OUTSIDE_SAMPLE = 65_536
OUTSIDE_DISTINCT = 1024


def outside_hint(flat: np.ndarray) -> str | None:
    """A hint to pass ``nodata`` when many voxels hold exactly the lowest or highest grey level, else None.

    Examples
    --------
    >>> x = np.linspace(1.0, 2.0, 1000)
    >>> outside_hint(x) is None
    True
    >>> outside_hint(np.concatenate([x, np.zeros(300)]))[:40]
    '23% of the image holds exactly 0, its lo'
    >>> outside_hint(np.concatenate([x - 1.5, np.zeros(300)]))[:60]  # 0 amid the grey levels, a float image
    '23% of the image holds exactly 0, though values below and ab'
    >>> y = np.random.default_rng(0).random(4000)
    >>> outside_hint(np.concatenate([y, np.full(1000, 0.5)]))[:70]  # a constant amid them
    '20% of the image holds exactly 0.5, though a float scan repeats no oth'
    """
    if flat.size == 0:
        return None
    candidates = [(flat.min(), "its lowest grey level"), (flat.max(), "its highest grey level")]
    if flat.dtype.kind == "f":  # reconstructions fill the outside of their circle with 0, below or above noise
        candidates.append((flat.dtype.type(0), "though values below and above it occur inside"))
        # or with another constant amid the grey levels (the mean, the median: QA s44, Dice -0.015 to -0.026
        # inside, no word): a float scan with many distinct values repeats none of them that often
        sub = flat[:: max(1, flat.size // OUTSIDE_SAMPLE)]
        values, counts = np.unique(sub, return_counts=True)
        if values.size > OUTSIDE_DISTINCT:
            candidates.append((values[counts.argmax()], "though a float scan repeats no other value that often"))
    for v, which in candidates:
        share = np.count_nonzero(flat == v) / flat.size
        if share >= OUTSIDE_SHARE:
            return (
                f"{share:.0%} of the image holds exactly {_exact(v)}, {which}: if that is outside "
                f"the field of view, pass nodata={_exact(v)} (--nodata {_exact(v)}) so that it is not segmented "
                "and does not skew the grey levels (docs/segment.md)"
            )
    return None


def _exact(v: Any) -> str:
    """``v`` as the shortest decimal that reads back as the same value of its type (``nodata=`` must match it)."""
    if isinstance(v, np.floating):
        big = v != 0 and not 1e-4 <= abs(v) < 1e16
        return np.format_float_scientific(v, trim="-") if big else np.format_float_positional(v, trim="-")
    if isinstance(v, (int, np.integer)):  # review: a uint32 image's 4294967295 read as 4.29497e+09 matched nothing
        return str(int(v))
    return f"{float(v):g}"


def pooled_normalization(
    images: Any,
    *,
    percentiles: tuple[float, float] = (0.5, 99.5),
    max_pixels: int = 4_000_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile bounds of a whole dataset: the pixels of several images pooled.

    Each image (2D or 3D, any shape) gives an equal share of ``max_pixels`` (from up
    to 16 of its slices, as :func:`compute_normalization`).

    Examples
    --------
    >>> b = pooled_normalization([np.zeros((4, 4)), np.ones((4, 4))], percentiles=(0, 100))
    >>> b["low"], b["high"]
    (0.0, 1.0)
    """
    images = list(images)
    share = max(1, max_pixels // max(1, len(images)))
    flat = np.concatenate([_sample(im, 16, share, seed + i) for i, im in enumerate(images)])
    return _bounds(flat, percentiles)


def _sample_blocks(image: Any, n: int, max_slices: int) -> list[tuple[int, int, list[int]]]:
    """Which slices the percentile sample reads: ``(start, stop, slices)`` per block read.

    Evenly spaced slices, whatever the storage: the same image in other chunks (a copy,
    another format) gets the same bounds and so the same labels. Choosing whole chunks
    instead (fewer chunks decoded where chunks are several slices deep) made a re-chunked
    copy's labels differ on 0.2 % of the voxels. Reading a slice of a deep chunk decodes
    the chunk: at most ``max_slices`` chunks, once per run.
    """
    idx = np.unique(np.linspace(0, n - 1, min(max_slices, n)).round().astype(int))
    return [(int(i), int(i) + 1, [int(i)]) for i in idx]


#: Normalised values are clipped to this range: one range width beyond each bound. Values there
#: are kept as they are (a phase brighter than the 99.5th percentile stays brighter than all
#: others); a hot pixel is not: one pixel at 65535 in a scan of 1000-3040 (31.6 normalised)
#: changed 2333 of 12288 labels of a radiograph through the network's receptive field (Dice
#: 0.931 to 0.695, a QA run), clipped it changes none beyond its own neighbourhood.
CLIP = (-1.0, 2.0)


def normalize_of(norm: dict[str, Any]) -> str:
    """The ``normalize`` a model was trained with (``"image"``, ``"fixed"``, ``"slice"``), from its normalisation."""
    if norm.get("low") is not None:
        return "fixed"
    return "slice" if norm.get("level") == "z" else "image"


def apply_normalization(x: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """Map ``low`` to 0 and ``high`` to 1 (float32), clipped to :data:`CLIP` (NaN stays NaN).

    Values float32 cannot keep apart (:func:`working_dtype`), and bounds closer than float32 can scale (QA:
    subnormal grey levels), are shifted and scaled in float64 before they are narrowed.
    """
    lo, hi = float(norm["low"]), float(norm["high"])
    scale = 1.0 / (hi - lo)
    x = np.asarray(x)
    if working_dtype(x.dtype) == np.float64 or abs(scale) > float(np.finfo(np.float32).max):
        out = ((x.astype(np.float64) - lo) * scale).astype(np.float32)
        np.clip(out, np.float32(CLIP[0]), np.float32(CLIP[1]), out=out)
        return out
    out = np.asarray(x, dtype=np.float32)
    out = out - np.float32(lo)
    out *= np.float32(scale)
    np.clip(out, np.float32(CLIP[0]), np.float32(CLIP[1]), out=out)
    return out


def fill_missing(x: np.ndarray, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Voxels without data (NaN) filled from the nearest voxel with data in the same 2D slice.

    A slice without any data (a missing projection set, a dropped slice) is filled with the
    nearest slice along axis -3 that has some, as the volume's ends are: a constant slice there
    was context unlike anything in a scan, and the neighbours' labels suffered (a 3D network's
    14 neighbours: Dice 0.92 down to 0.2-0.8 in a QA run).

    Parameters
    ----------
    x : numpy.ndarray of shape (..., Y, X)
        Slices (raw or normalised grey levels), axis -3 (if any) along the slicing axis.
        Integer arrays hold no NaN.
    fill : float
        The value of slices with no data at all where no slice along axis -3 has any.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray or None)
        ``x`` with its NaN filled (a copy; ``x`` itself when it holds none) and the mask of
        the voxels that were NaN (``None`` when none were).

    Raises
    ------
    InputError
        If ``x`` holds inf.

    Examples
    --------
    >>> y, miss = fill_missing(np.array([[1.0, np.nan, np.nan, 4.0]]))
    >>> y.tolist(), miss.tolist()
    ([[1.0, 1.0, 4.0, 4.0]], [[False, True, True, False]])
    """
    if x.dtype.kind != "f" or np.isfinite(x).all():  # the usual case: one pass, as the check before NaN was data
        return x, None
    miss = np.isnan(x)
    if not miss.any():
        raise InputError("image holds inf values: replace them (e.g. with NaN for no data)")
    from scipy import ndimage as ndi

    out = np.array(x, copy=True)
    flat, fmask = out.reshape(-1, *x.shape[-2:]), miss.reshape(-1, *x.shape[-2:])
    empty = fmask.all(axis=(1, 2))
    last: tuple[np.ndarray, tuple[np.ndarray, ...]] | None = None
    for i in range(len(flat)):
        m = fmask[i]
        if not m.any() or empty[i]:
            continue
        if last is None or not np.array_equal(last[0], m):  # a field of view is usually the same in every slice
            idx = ndi.distance_transform_edt(m, return_distances=False, return_indices=True)
            last = (m, tuple(idx[:, m]))
        flat[i][m] = flat[i][last[1]]
    if empty.any():  # whole slices without data: the nearest slice with some along axis -3 (the lower on a tie)
        depth = x.shape[-3] if x.ndim >= 3 else 1
        for g in range(0, len(flat), depth):
            have = np.flatnonzero(~empty[g : g + depth])
            for j in np.flatnonzero(empty[g : g + depth]):
                flat[g + j] = flat[g + have[np.argmin(np.abs(have - j))]] if have.size else fill
    if not np.isfinite(out).all():
        raise InputError("image holds inf values: replace them (e.g. with NaN for no data)")
    return out, miss


def _constant(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's lowest value, and whether it holds one value throughout (NaN, no data, left out).

    A row of NaN only is not constant (NaN == NaN is false): it has no data already.
    """
    if rows.dtype.kind != "f":
        low = rows.min(axis=1)
        return low, low == rows.max(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row of NaN only
        low = np.nanmin(rows, axis=1)
        return low, low == np.nanmax(rows, axis=1)


def dead_slices_missing(data: np.ndarray, axis: int, first: int = 0, *, warn: bool = True) -> np.ndarray:
    """``data``, slices along ``axis`` of a volume (slices first), its dead z slices as NaN (no data).

    Along z (``axis`` 0) they are constant slices (:func:`constant_slices_missing`); along y
    or x a row of each slice (:func:`constant_rows_missing`). ``data`` may be stacks of
    slices (..., k, A, B). ``first`` names the first slice along z in the warning.
    """
    if axis == 0:
        return constant_slices_missing(data, first, 0, warn=warn)
    if data.ndim < 3:
        return data
    flat = data.reshape(-1, *data.shape[-2:])
    got = constant_rows_missing(flat, warn=warn)
    return data if got is flat else got.reshape(data.shape)


def constant_slices_missing(data: np.ndarray, first: int = 0, axis: int = 0, *, warn: bool = True) -> np.ndarray:
    """``data`` (slices first) with its constant slices as NaN (no data): a dead or zero-filled slice.

    A reconstruction holds noise in every slice it has data for; a slice with one value
    throughout (a dead detector row reconstructs to zeros, a zero-padded stack) has none. Left
    as it is, it was context unlike any scan, and a 3D network's labels of up to 14 neighbours
    suffered as they did from a slice of NaN (fixed in session 35). As no data it is labelled 0
    and filled from its nearest slice with data (:func:`~napari_xrayseg.core.normalize.fill_missing`).
    ``first`` and ``axis`` only name the slices in the warning (``warn=False``: none). ``data``
    may also be stacks of slices (..., k, Y, X): each slice along axis -3 is checked.

    Examples
    --------
    >>> x = np.arange(12.0).reshape(3, 2, 2); x[1] = 0
    >>> np.isnan(constant_slices_missing(x)).all(axis=(1, 2)).tolist()
    [False, True, False]
    >>> x[2, 0] = np.nan  # a field of view's outside: the voxels with data are constant there too
    >>> x[2, 1] = 9.0
    >>> np.isnan(constant_slices_missing(x)).all(axis=(1, 2)).tolist()
    [False, True, True]
    """
    if data.ndim < 3 or (data.ndim == 3 and len(data) < 2) or data.shape[-2] * data.shape[-1] < 2:
        return data  # one slice: a constant image is refused by the normalisation
    flat = data.reshape(-1, data.shape[-2] * data.shape[-1])
    low, const = _constant(flat)
    if not const.any():
        return data
    out = data.astype(working_dtype(data.dtype)) if data.dtype.kind != "f" else data.copy()
    out.reshape(flat.shape)[const] = np.nan
    if not warn:
        return out
    log.warning(
        "slices %s along axis %d are constant (%s): taken for slices without data, labelled 0 "
        "and filled from their neighbours for the network",
        ", ".join(str(first + int(i)) for i in np.flatnonzero(const)),
        axis,
        ", ".join(f"{low[i]:g}" for i in np.flatnonzero(const)[:3]),
    )
    return out


def constant_rows_missing(data: np.ndarray, *, warn: bool = True) -> np.ndarray:
    """``data`` (N, Z, W), slices along y or x of a volume: its dead z slices (constant rows) as NaN.

    A dead or zero-padded z slice is a row of each slice along y or x. A row constant through
    all N slices of ``data`` is taken for such a slice, as :func:`constant_slices_missing` takes
    it when slicing along z, unless ``data`` itself is constant (a band wholly outside a field
    of view): segmenting along y or x, its neighbours' labels suffered as they did along z.

    Examples
    --------
    >>> x = np.arange(24.0).reshape(2, 3, 4); x[:, 1] = 0
    >>> np.isnan(constant_rows_missing(x)).all(axis=(0, 2)).tolist()
    [False, True, False]
    """
    if data.ndim != 3 or data.shape[1] < 2 or data.shape[0] * data.shape[2] < 2:
        return data
    low, const = _constant(np.moveaxis(data, 1, 0).reshape(data.shape[1], -1))
    if not const.any() or const.all():
        return data
    out = data.astype(working_dtype(data.dtype)) if data.dtype.kind != "f" else data.copy()
    out[:, const] = np.nan
    if not warn:
        return out
    log.warning(
        "z slices %s are constant (%s): taken for slices without data, labelled 0 and filled from their "
        "neighbours for the network",
        ", ".join(str(int(i)) for i in np.flatnonzero(const)),
        ", ".join(f"{low[i]:g}" for i in np.flatnonzero(const)[:3]),
    )
    return out


def _source_attribute(attr: str) -> Any:
    """A read-only property: the wrapped ``source``'s attribute ``attr``, or None."""
    return property(lambda self: getattr(self.source, attr, None), doc=f"The source's ``{attr}``, or None.")


class MissingView:
    """``source`` read lazily as floats, with the voxels equal to ``value`` as NaN (no data).

    Attributes
    ----------
    source : array-like
        The image (numpy, zarr, h5py, TIFF, ...).
    value : float
        The value that marks voxels without data.
    """

    def __init__(self, source: Any, value: float) -> None:
        self.source, self.value = source, value
        self.shape = tuple(int(s) for s in source.shape)
        self.ndim = len(self.shape)
        self.dtype = working_dtype(source.dtype)
        chunks = getattr(source, "chunks", None)
        if chunks is not None:
            self.chunks = chunks

    # where the source was read from (zarr store and path, HDF5 file and dataset name, memmap file
    # name), for its voxel size and the checks that an output is not an input (output.source_path)
    store = _source_attribute("store")
    path = _source_attribute("path")
    file = _source_attribute("file")
    filename = _source_attribute("filename")
    name = _source_attribute("name")

    def __getitem__(self, index: Any) -> np.ndarray:
        x = np.asarray(self.source[index])
        out = x.astype(self.dtype)  # a copy: the source is never written to
        out[x == self.value] = np.nan
        return out

    def __repr__(self) -> str:
        return f"MissingView({self.source!r}, value={self.value!r})"


#: ``nodata=`` that asks for no value at all, not even the one a model was trained with (``--nodata none``).
NO_NODATA = "none"


def is_no_nodata(value: Any) -> bool:
    """Whether ``value`` is :data:`NO_NODATA` ("none", any case)."""
    return isinstance(value, str) and value.strip().lower() == NO_NODATA


def model_nodata(given: Any, recorded: Any) -> float | None:
    """The no-data value to segment with: ``given``, else the one the model was trained with (``recorded``).

    QA s45: a model trained with ``nodata=0`` segmented a scan of the same kind without it unless
    the value was given again: every outside voxel got a phase and the zeros shifted the grey-level
    bounds (2,137 of 39,248 inside voxels changed), under a generic hint. Its normalisation already
    came from the model; its no-data value now does too, said once. :data:`NO_NODATA` asks for none.

    >>> model_nodata(None, 0.0), model_nodata(5, 0.0), model_nodata("none", 0.0), model_nodata(None, None)
    (0.0, 5, None, None)
    """
    if is_no_nodata(given):
        return None
    if given is not None or recorded is None:
        return given
    v = float(recorded)
    if first_time("model-nodata", str(v)):  # a warning: an info line went unseen (review s45)
        log.warning(
            "no-data value %s from the model (it was trained with it): voxels equal to it are left out and labelled "
            "0; pass nodata='none' (--nodata none) if they hold data",
            _exact(v),
        )
    return v


def mark_missing(image: Any, value: float | str | None) -> Any:
    """``image`` with the voxels equal to ``value`` marked as no data (NaN), read lazily.

    ``None`` or :data:`NO_NODATA`: ``image`` as it is (NaN is always no data). A dask array stays a
    dask array.

    Raises
    ------
    InputError
        If ``value`` is not a finite number.

    Examples
    --------
    >>> mark_missing(np.array([0, 5, 0, 7], np.uint16), 0)[:].tolist()
    [nan, 5.0, nan, 7.0]
    """
    if value is None or is_no_nodata(value):
        return image
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not np.isfinite(value)
    ):
        raise InputError(f"nodata {value!r} must be a finite number (the value outside the field of view, e.g. 0)")
    dt = np.dtype(image.dtype)
    if dt.kind in "iu" and (value != int(value) or not np.iinfo(dt).min <= value <= np.iinfo(dt).max):
        info = np.iinfo(dt)
        raise InputError(  # QA: nodata=300 on a uint8 image matched no voxel, without a word
            f"nodata {value!r} cannot occur in a {dt} image (whole numbers {info.min}..{info.max}): give the value "
            "its voxels without data hold"
        )
    da = sys.modules.get("dask.array")
    if da is not None and isinstance(image, da.Array):
        return da.where(image == value, np.nan, image.astype(working_dtype(image.dtype)))
    return MissingView(image, float(value))
