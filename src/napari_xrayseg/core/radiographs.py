"""Synthetic chest radiographs with lung masks: a 2D test set made here, never downloaded.

:func:`make_radiographs` draws independent posteroanterior chest X-ray-like images: a
bright thorax on a dark background, two dark lungs (tapered apices, domed diaphragm, the
heart cutting into the left lung, smoothly wobbling outlines), spine, clavicles and
curved ribs crossing the lungs, blur, noise and a per-image exposure (gain, offset,
gamma, a slow gradient). Every image has its own pose (shift, scale, rotation) and
anatomy, so they are unrelated images, not slices of one volume. The masks are the
true lung fields (ribs and vessels over the lungs stay lung).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage as ndi

from .config import python_numbers
from .errors import InputError

__all__ = ["BACKGROUND", "LUNG", "make_radiographs"]

#: Label of everything that is not lung.
BACKGROUND = 1
#: Label of the lung fields.
LUNG = 2


@python_numbers
def make_radiographs(
    n: int = 40, *, side: int = 256, seed: int = 0, dtype: str = "uint8"
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` synthetic chest radiographs and their lung masks.

    Parameters
    ----------
    n : int
        Number of images.
    side : int
        Image side in pixels (at least 32).
    seed : int
        Seed; the same seed gives the same images.
    dtype : {"uint8", "uint16"}
        Pixel type of the images (8 or 16 bit, full range).

    Returns
    -------
    images : numpy.ndarray of shape (n, side, side)
        The radiographs (bright = attenuating, as displayed clinically).
    labels : numpy.ndarray of shape (n, side, side), uint8
        :data:`BACKGROUND` (1) outside the lungs, :data:`LUNG` (2) inside.

    Raises
    ------
    InputError
        On a bad ``n``, ``side`` or ``dtype``.

    Examples
    --------
    >>> images, labels = make_radiographs(2, side=64, seed=1)
    >>> images.shape, images.dtype, sorted(np.unique(labels).tolist())
    ((2, 64, 64), dtype('uint8'), [1, 2])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n {n!r} must be a positive integer, e.g. 40")
    if isinstance(side, bool) or not isinstance(side, int) or side < 32:
        raise InputError(f"side {side!r} must be an integer >= 32, e.g. 256")
    if dtype not in ("uint8", "uint16"):
        raise InputError(f"dtype {dtype!r} must be 'uint8' or 'uint16'")
    rng = np.random.default_rng(seed)
    images = np.empty((n, side, side), dtype)
    labels = np.empty((n, side, side), np.uint8)
    for i in range(n):
        img, lung = _one(rng, side)
        top = np.iinfo(dtype).max
        images[i] = np.clip(np.round(img * top), 0, top).astype(dtype)
        labels[i] = np.where(lung, LUNG, BACKGROUND)
    return images, labels


def _one(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """One image in [0, 1] and its lung mask."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    # pose: each image its own shift, scale and rotation, as patients stand differently
    ang = math.radians(rng.uniform(-6, 6))
    sc = rng.uniform(0.88, 1.1)
    cy, cx = 0.5 + rng.uniform(-0.04, 0.04), 0.5 + rng.uniform(-0.04, 0.04)
    y = ((yy - cy) * math.cos(ang) - (xx - cx) * math.sin(ang)) / sc
    x = ((yy - cy) * math.sin(ang) + (xx - cx) * math.cos(ang)) / sc
    # smooth random warp of the anatomy (a few pixels), so outlines are not plain ellipses
    warp = [ndi.gaussian_filter(rng.normal(size=(side, side)), side / 10) for _ in range(2)]
    warp = [w / (np.abs(w).max() + 1e-9) * 0.025 for w in warp]
    y, x = y + warp[0], x + warp[1]
    # thorax: a wide rounded body, shoulders at the top, fading into air at the sides
    body = _soft(1 - ((x / 0.43) ** 2 + (np.maximum(y - 0.05, 0) / 0.6) ** 2), 0.08)
    lungs = np.zeros((side, side), bool)
    for s in (-1, 1):  # s = -1: image left (patient's right lung, the larger one)
        lx = s * rng.uniform(0.16, 0.2)
        top, bottom = -0.36 + rng.uniform(-0.03, 0.03), 0.26 + rng.uniform(-0.03, 0.04)
        half = rng.uniform(0.12, 0.15) * (1.0 if s < 0 else 0.93)
        t = np.clip((y - top) / (bottom - top), 0, 1)
        width = half * (0.35 + 0.65 * np.sqrt(t))  # narrow apex, wide base
        dome = 0.06 * (1 - ((x - lx) / (half * 1.2)) ** 2)  # the diaphragm bulges up in the middle
        inside = (np.abs(x - lx) < width) & (y > top) & (y < bottom - np.maximum(dome, 0))
        apex = (y - top) ** 2 / 0.01 + ((x - lx) / (half * 0.45)) ** 2 < 1
        lungs |= inside | (apex & (y > top - 0.06))
    heart = ((x - 0.07 - rng.uniform(0, 0.03)) / rng.uniform(0.13, 0.16)) ** 2 + ((y - 0.17) / 0.14) ** 2 < 1
    mediastinum = np.abs(x - 0.01) < 0.055
    lungs &= ~heart & ~mediastinum
    lungs = ndi.binary_opening(lungs, iterations=2)
    img = 0.08 + 0.5 * body  # air dark, soft tissue mid-grey
    img += 0.12 * ndi.gaussian_filter(heart.astype(np.float32), 2.5)  # heart
    img += 0.15 * _soft(0.035 - np.abs(x), 0.012) * (y > -0.45)  # spine
    img -= rng.uniform(0.12, 0.24) * ndi.gaussian_filter(lungs.astype(np.float32), rng.uniform(1.2, 2.5))
    # soft tissue (breasts, pectoral muscles) over the lung bases: brighter, blurring the lower outline
    img += rng.uniform(0.0, 0.12) * _soft(y - 0.05, 0.15) * _soft(0.4 - np.abs(np.abs(x) - 0.2) * 2, 0.3)
    bones = np.zeros((side, side), np.float32)
    for s in (-1, 1):
        # clavicle: a bright bar from the neck to the shoulder
        d = np.abs((y + 0.38) - 0.25 * (s * x - 0.05))
        bones += 0.16 * _soft(0.018 - d, 0.006) * (s * x > 0.03) * (s * x < 0.35)
        # ribs: arcs sweeping down and out from the spine, over the lungs
        for k in range(9):
            y0 = -0.34 + k * 0.075 + rng.uniform(-0.01, 0.01)
            u = s * x - 0.03
            arc = y0 + 1.1 * u**2 - 0.05 * u
            bones += rng.uniform(0.06, 0.11) * _soft(0.014 - np.abs(y - arc), 0.005) * (u > 0) * (u < 0.4)
    img += bones
    # vessels: faint branching texture in the lungs
    img += 0.04 * ndi.gaussian_filter(rng.normal(size=(side, side)), 1.5) * lungs / 0.25
    img = ndi.gaussian_filter(img, 0.8)
    # exposure: gain, offset, a slow gradient and gamma per image; then quantum noise
    img = img * rng.uniform(0.8, 1.15) + rng.uniform(-0.05, 0.08)
    img += rng.uniform(-0.08, 0.08) * (xx - 0.5) + rng.uniform(-0.08, 0.08) * (yy - 0.5)
    img = np.clip(img, 0, 1) ** rng.uniform(0.75, 1.35)
    img += rng.normal(0, rng.uniform(0.015, 0.035), img.shape)
    return np.clip(img, 0, 1), lungs


def _soft(v: np.ndarray, width: float) -> np.ndarray:
    """A smooth step from 0 (``v`` < 0) to 1 (``v`` > ``width``)."""
    return np.clip(v / width, 0, 1).astype(np.float32)
