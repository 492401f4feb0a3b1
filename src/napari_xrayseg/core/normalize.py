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
        Pixels used at most (random subset of the slices read).
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
    """Up to ``max_pixels`` values of ``image`` from up to ``max_slices`` evenly spaced slices."""
    from .io import read_block

    shape = image.shape
    if len(shape) == 2:
        sample = read_block(image, (Ellipsis,), what="image").astype(np.float32)[None]
    else:
        idx = np.unique(np.linspace(0, shape[0] - 1, min(max_slices, shape[0])).round().astype(int))
        sample = np.stack(
            [read_block(image, (int(i),), what=f"image (slices {i}..{i} along axis 0)").astype(np.float32) for i in idx]
        )
    flat = sample.reshape(-1)
    if flat.size > max_pixels:
        flat = np.random.default_rng(seed).choice(flat, max_pixels, replace=False)
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


def apply_normalization(x: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """Map ``low`` to 0 and ``high`` to 1 (float32; values outside are kept, not clipped)."""
    lo, hi = float(norm["low"]), float(norm["high"])
    out = np.asarray(x, dtype=np.float32)
    out = out - np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return out
