"""2D sections against known answers and against the volume they cut (docs/analyze.md, "A 2D section").

A disk (area fraction, boundary length per area, mean chord), three phases meeting at one corner
(one triple point), and every fourth z section of the built-in three-phase sample against the
volume's own numbers (fractions, S_V, mean size, TPB density).

    python benchmarks/section_stereology.py
"""

from __future__ import annotations

import time

import numpy as np

from napari_xrayseg import make_phantom
from napari_xrayseg.core.microstructure import analyze


def main() -> None:
    """Print the known answers, then the sections' means beside the volume's numbers."""
    n, r, px = 256, 40.0, 0.5
    yy, xx = np.mgrid[:n, :n] + 0.5
    disk = np.where((yy - n / 2) ** 2 + (xx - n / 2) ** 2 < r**2, 1, 2).astype(np.uint8)
    m = analyze(disk, voxel_size=px, unit="um")
    area = (n * px) ** 2
    print(f"disk: fraction {m.phases[1].volume_fraction:.5f} (true {np.pi * r**2 / n**2:.5f})")
    print(f"disk: L_A {m.section['boundary_length_per_area'][1]:.6f} (true {2 * np.pi * r * px / area:.6f}) 1/um")
    print(f"disk: mean chord {m.phases[1].mean_size:.3f} (true {np.pi * r * px / 2:.3f}) um")
    y = np.ones((64, 64), np.uint8)
    y[:32, 32:] = 2
    y[32:] = 3
    m = analyze(y)
    print(f"three phases at one corner: {m.section['triple_points']} triple point(s)")
    _, truth = make_phantom((48, 160, 160), seed=1378)
    t0 = time.perf_counter()
    whole = analyze(truth, voxel_size=0.02, unit="um", tortuosity=False)
    sections = [analyze(truth[z], voxel_size=0.02, unit="um") for z in range(0, 48, 4)]
    print(f"sample 48x160x160 (seed 1378), 12 z sections, {time.perf_counter() - t0:.1f} s: volume vs sections' mean")
    for k, p in whole.phases.items():
        mean = {
            q: np.mean([getattr(s.phases[k], q) for s in sections])
            for q in ("volume_fraction", "specific_surface_area", "mean_size")
        }
        print(
            f"phase {k}: V_V {p.volume_fraction:.4f} vs {mean['volume_fraction']:.4f}; "
            f"S_V {p.specific_surface_area:.3f} vs {mean['specific_surface_area']:.3f} 1/um; "
            f"size {p.mean_size:.4f} vs {mean['mean_size']:.4f} um"
        )
    tpb = [s.tpb_density for s in sections]
    print(f"TPB density {whole.tpb_density:.3f} vs {np.mean(tpb):.3f} +- {np.std(tpb):.3f} um/um^3")


if __name__ == "__main__":
    main()
