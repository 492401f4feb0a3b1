"""Accuracy of the TPB density of `analyze` on structures whose true TPB length is known.

    python benchmarks/tpb.py            # about 2 minutes on one core
    python benchmarks/tpb.py --quick    # smaller volumes, fewer Monte Carlo samples

Three checks, each printing the reported length over the true one:

- random: an isotropic random three-phase structure (phase 3 where a smooth random field f
  exceeds 1.5, phases 1 and 2 split by the sign of a second field g; each a sum of 40 plane
  waves of wavelength about 64 voxel sides / 2.5). Its triple line is {f = 1.5, g = 0}, whose
  length per volume is the integral of delta(f - 1.5) delta(g) |grad f x grad g| (Monte Carlo,
  Gaussian deltas of width 0.3, about 0.7 % statistical error). Reported: the corrected density
  (/ 1.5) and the edges' count (`tpb_edges`, the estimator before session 36) the same way.
- circles: pairs of overlapping balls (phases 2 and 3 in 1), randomly turned: each meets the
  other and the matrix along a circle of known length; compared with the circle's length times
  its own staircase factor (mean |t|_1 over its tangents), so only the counting is measured.
- lines: one straight line, direction u, its three interfaces turned about it by 0, 30, 60
  degrees; the uncorrected length over |u|_1 L.

Session 36 (2-core Xeon, one thread): random 1.043 with the crossings against 1.185 with the
edges; circles 1.012-1.020 against 1.07-1.09; lines within 1.000-1.022 against up to 1.52.
"""

from __future__ import annotations

import argparse
import logging
import math

import numpy as np

from napari_xrayseg import analyze
from napari_xrayseg.core.sample import triple_line

logging.disable(logging.WARNING)
KW = {"tortuosity": False, "connectivity": False, "mean_size": False}


def _waves(rng: np.random.Generator, k: int = 40, wavelength: float = 64.0) -> tuple[np.ndarray, np.ndarray]:
    d = rng.normal(size=(k, 3))
    d /= np.linalg.norm(d, axis=1)[:, None]
    return d * (2 * np.pi / wavelength * rng.uniform(0.7, 1.3, k))[:, None], rng.uniform(0, 2 * np.pi, k)


def random_structure(box: float, voxel: float, samples: int, seed: int = 708) -> None:
    """The random structure's reported TPB density against its Monte Carlo truth."""
    rng = np.random.default_rng(seed)
    (k1, p1), (k2, p2) = _waves(rng), _waves(rng)
    n = int(box / voxel)
    c = (np.arange(n) + 0.5) * voxel
    z, y, x = np.meshgrid(c, c, c, indexing="ij", sparse=True)
    f = sum(np.cos(k1[i, 0] * z + k1[i, 1] * y + k1[i, 2] * x + p1[i]) for i in range(len(p1)))
    g = sum(np.cos(k2[i, 0] * z + k2[i, 1] * y + k2[i, 2] * x + p2[i]) for i in range(len(p2)))
    lab = np.where(f > 1.5, 3, np.where(g > 0, 1, 2)).astype(np.uint8)
    del f, g
    m = analyze(lab, voxel_size=voxel, **KW)
    mc = np.random.default_rng(1)
    total, width = 0.0, 0.3
    for _ in range(samples):
        pts = mc.uniform(0, box, size=(200_000, 3))
        a, b = pts @ k1.T + p1, pts @ k2.T + p2

        def delta(v: np.ndarray) -> np.ndarray:
            return np.exp(-0.5 * (v / width) ** 2) / (width * math.sqrt(2 * math.pi))

        cross = np.cross(-np.sin(a) @ k1, -np.sin(b) @ k2)
        total += float((delta(np.cos(a).sum(1) - 1.5) * delta(np.cos(b).sum(1)) * np.linalg.norm(cross, axis=1)).sum())
    true = total / (samples * 200_000)
    edges = m.tpb_edges * voxel / 1.5 / m.volume  # isotropic voxels: every edge is one voxel long
    print(f"random, {n}^3 voxels: crossings {m.tpb_density / true:.3f} x the truth, edges {edges / true:.3f}")


def _circle_factor(u: np.ndarray) -> float:
    e1 = np.cross(u, [1.0, 0, 0] if abs(u[0]) < 0.9 else [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    th = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    return float(np.abs(np.outer(np.cos(th), e1) + np.outer(np.sin(th), e2)).sum(1).mean())


def circles(scale: float, seed: int = 702) -> None:
    """Circles where two balls meet (27 pairs, randomly turned): uncorrected length / its staircase length."""
    rng = np.random.default_rng(seed)
    r, d = 11.0 * scale, 12.0 * scale
    radius = math.sqrt(r * r - (d / 2) ** 2)
    cell = int(math.ceil(2 * r + d + 6))
    lab = np.ones((3 * cell,) * 3, np.uint8)
    staircase = 0.0
    zz, yy, xx = np.ogrid[:cell, :cell, :cell]
    for o in np.ndindex(3, 3, 3):
        centre = np.full(3, cell / 2) + rng.uniform(-0.5, 0.5, 3)
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        ca, cb = centre - u * d / 2, centre + u * d / 2
        sub = lab[o[0] * cell : (o[0] + 1) * cell, o[1] * cell : (o[1] + 1) * cell, o[2] * cell : (o[2] + 1) * cell]
        sub[(zz - cb[0]) ** 2 + (yy - cb[1]) ** 2 + (xx - cb[2]) ** 2 <= r * r] = 3
        sub[(zz - ca[0]) ** 2 + (yy - ca[1]) ** 2 + (xx - ca[2]) ** 2 <= r * r] = 2
        staircase += 2 * math.pi * radius * _circle_factor(u)
    m = analyze(lab, tpb_correction=1, **KW)
    crossings, edges = m.tpb_density * m.volume / staircase, m.tpb_edges / staircase
    print(f"circles of radius {radius:5.2f} voxels: crossings {crossings:.3f}, edges {edges:.3f}")


def lines(n: int) -> None:
    """One straight line per direction and turn: uncorrected length / (|u|_1 L)."""
    for u in [(0, 1, 1), (1, 1, 1), (1, 2, 3), (1, 3, 7)]:
        out = []
        for turn in (0, 30, 60):
            lab, length = triple_line(n, u, turn)
            m = analyze(lab, tpb_correction=1, **KW)
            l1 = np.abs(np.array(u, float) / np.linalg.norm(u)).sum() * length
            out.append(f"{turn:2d} deg {m.tpb_density * m.volume / l1:.3f} (edges {m.tpb_edges / l1:.3f})")
        print(f"line u={u}: " + "; ".join(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller volumes and fewer Monte Carlo samples")
    a = p.parse_args()
    random_structure(160.0 if a.quick else 240.0, 2.5, 10 if a.quick else 60)
    for scale in (0.5, 1) if a.quick else (0.5, 1, 2):
        circles(scale)
    lines(32 if a.quick else 48)


if __name__ == "__main__":
    main()
