"""Time and peak memory of `analyze` on synthetic three-phase volumes stored as zarr.

Each measurement runs in a fresh process (peak RSS = that process's maximum resident set):

    python benchmarks/analyze.py                      # 256^3 and 512^3, all parts
    python benchmarks/analyze.py --sizes 256 --tortuosity-size 64

Parts:
- slab:  volume fractions, surfaces (faces), TPB, slab by slab from zarr (--fractions-only);
- whole: slab + connectivity and chord sizes of every phase in memory (no tortuosity);
- tau:   tortuosity (multigrid on the CPU, TauFactor on a GPU) of every percolating phase along z, y, x on a cube of
         --tortuosity-size voxels (TauFactor is made for GPUs; on a CPU it is the slow part).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_volume(path: Path, n: int, seed: int = 0) -> None:
    """Three phases of about equal fraction, features ~8 voxels: smooth noise split at its tertiles."""
    import zarr
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    coarse = rng.random((n // 8 + 1,) * 3).astype(np.float32)
    z = zarr.create_array(store=str(path), shape=(n, n, n), chunks=(32, n, n), dtype="uint8")
    field = zoom(coarse, 8, order=1)[:n, :n, :n]
    lo, hi = np.quantile(field[::4, ::4, ::4], [1 / 3, 2 / 3])
    z[...] = np.where(field < lo, 1, np.where(field < hi, 2, 3)).astype(np.uint8)


def _hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(path: str, part: str, tau_size: int) -> dict:
    import zarr

    from napari_xrayseg.core.microstructure import analyze

    labels = zarr.open_array(store=path, mode="r")
    rss0 = _hwm_mb()
    t0 = time.perf_counter()
    if part == "slab":
        m = analyze(labels, voxel_size=0.05, connectivity=False, mean_size=False, tortuosity=False)
    elif part == "whole":
        m = analyze(labels, voxel_size=0.05, tortuosity=False)
    else:
        region = f"0:{tau_size},0:{tau_size},0:{tau_size}"
        m = analyze(labels, voxel_size=0.05, region=region)
    dt = time.perf_counter() - t0
    peak = _hwm_mb()
    return {
        "part": part,
        "shape": list(m.shape),
        "seconds": round(dt, 2),
        "peak_rss_mb": round(peak),
        "rss_before_mb": round(rss0),
        "tpb_density": m.tpb_density,
        "tau": {k: p.tortuosity for k, p in m.phases.items()} if part == "tau" else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--tortuosity-size", type=int, default=64)
    ap.add_argument("--one", nargs=3, metavar=("PATH", "PART", "TAU"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], int(a.one[2]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            path = Path(tmp) / f"lab{n}.zarr"
            t0 = time.perf_counter()
            make_volume(path, n)
            print(f"{n}^3: made the volume in {time.perf_counter() - t0:.1f} s ({n**3 / 1e6:.0f} Mvoxels)")
            parts = ["slab", "whole"] + (["tau"] if n == a.sizes[0] else [])
            for part in parts:
                out = subprocess.run(
                    [sys.executable, __file__, "--one", str(path), part, str(a.tortuosity_size)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rate = np.prod(r["shape"]) / r["seconds"] / 1e6
                print(
                    f"  {part:5s} {'x'.join(map(str, r['shape']))}: {r['seconds']:.1f} s ({rate:.1f} Mvox/s), "
                    f"peak RSS {r['peak_rss_mb']} MB (after imports {r['rss_before_mb']} MB)"
                    + (f", tau {r['tau']}" if r["tau"] else "")
                )


if __name__ == "__main__":
    main()
