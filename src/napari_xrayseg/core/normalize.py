"""Robust input normalisation from percentiles of a sample of the image.

The bounds are computed from a few evenly spaced slices (never the whole volume in
RAM), stored in the model and applied identically at inference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["apply_normalization", "compute_normalization", "pooled_normalization"]


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
        If the sample holds NaN/inf or the image is constant.

    Examples
    --------
    >>> compute_normalization(np.arange(100.0).reshape(10, 10), percentiles=(0, 100))["high"]
    99.0
    """
    return _bounds(_sample(image, max_slices, max_pixels, seed), percentiles)


def _sample(image: Any, max_slices: int, max_pixels: int, seed: int) -> np.ndarray:
    """Up to ``max_pixels`` values of ``image`` from up to ``max_slices`` of its slices."""
    shape = image.shape
    from .io import read_block

    if len(shape) == 2:
        sample = read_block(image, (Ellipsis,), what="image").astype(np.float32)[None]
    else:
        sample = np.concatenate(
            [
                read_block(image, (slice(a, b),), what=f"image (slices {a}..{b - 1} along axis 0)")[
                    np.asarray(idx) - a
                ].astype(np.float32)
                for a, b, idx in _sample_blocks(image, shape[0], max_slices)
            ]
        )
    flat = sample.reshape(-1)
    if flat.size > max_pixels:
        flat = flat[np.random.default_rng(seed).integers(0, flat.size, max_pixels)]  # O(max_pixels), unlike choice
    return flat


def _bounds(flat: np.ndarray, percentiles: tuple[float, float]) -> dict[str, Any]:
    if not np.all(np.isfinite(flat)):
        raise InputError("image holds NaN or inf values: replace them (e.g. np.nan_to_num) before segmenting")
    lo, hi = (float(v) for v in np.percentile(flat, percentiles))
    if not hi > lo:
        lo, hi = float(flat.min()), float(flat.max())
        if not hi > lo:
            raise InputError(f"image is constant (all values {lo:g}): there is nothing to segment")
    return {"method": "percentile", "low": lo, "high": hi, "percentiles": [float(p) for p in percentiles]}


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

    Evenly spaced slices, unless the array is stored in chunks several slices deep: reading one
    slice decodes its whole chunk, so the sample then takes ``max_slices`` slices from at least
    four evenly spaced chunks (a 500-slice zarr in 16-deep chunks: 4 chunks decoded, not 16).
    """
    from .io import volume_chunks

    depth = (volume_chunks(image) or (1,))[0]
    if depth <= 1 or n <= max_slices:
        idx = np.unique(np.linspace(0, n - 1, min(max_slices, n)).round().astype(int))
        return [(int(i), int(i) + 1, [int(i)]) for i in idx]
    n_chunks = -(-n // depth)
    groups = min(n_chunks, max(4, -(-max_slices // depth)))
    per = -(-max_slices // groups)
    blocks = []
    for c in np.unique(np.linspace(0, n_chunks - 1, groups).round().astype(int)):
        a, b = int(c) * depth, min(int(c + 1) * depth, n)
        idx = np.unique(np.linspace(a, b - 1, min(per, b - a)).round().astype(int))
        blocks.append((a, b, [int(i) for i in idx]))
    return blocks


def apply_normalization(x: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """Map ``low`` to 0 and ``high`` to 1 (float32; values outside are kept, not clipped)."""
    lo, hi = float(norm["low"]), float(norm["high"])
    out = np.asarray(x, dtype=np.float32)
    out = out - np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return out
