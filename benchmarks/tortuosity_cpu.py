"""Tortuosity on the CPU: pyamg's multigrid (what `analyze` runs on a CPU) against TauFactor, in one run.

One phase (about a third of the voxels, features ~8 voxels) of a smooth random three-phase volume,
one solve along y per size and solver; both solve TauFactor's finite-volume problem, so the tau
agree to TauFactor's convergence criterion (its default 1e-2 here, as `analyze` runs it):

    python benchmarks/tortuosity_cpu.py                   # 48 x 192^2 and 96 x 256^2
    python benchmarks/tortuosity_cpu.py --sizes 128x384x384 --solvers amg

Each solve runs in this process one after the other; the peak RSS printed is the process's so far.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def phase(shape: tuple[int, int, int], seed: int = 2040) -> np.ndarray:
    from scipy import ndimage as ndi

    f = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32), 3)
    lo, hi = np.quantile(f, [0.35, 0.65])
    return (f > lo) & (f <= hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["48x192x192", "96x256x256"])
    ap.add_argument("--solvers", nargs="+", default=["amg", "taufactor"], choices=["amg", "taufactor"])
    ap.add_argument("--axis", type=int, default=1)
    a = ap.parse_args()
    import torch

    from napari_xrayseg.core import microstructure as ms

    print(f"torch threads {torch.get_num_threads()}")
    for size in a.sizes:
        shape = tuple(int(v) for v in size.lower().split("x"))
        mask = phase(shape)  # type: ignore[arg-type]
        times = {}
        for solver in a.solvers:
            t0 = time.perf_counter()
            if solver == "amg":
                tau = ms._amg_solve(mask, a.axis, (1.0, 1.0, 1.0), None)
            else:
                tau = ms._taufactor_solve(mask, a.axis, (1.0, 1.0, 1.0), torch.device("cpu"), None, 100_000, 1e-2)
            times[solver] = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"{size} {solver:9s} tau {tau:.6f}  {times[solver]:6.1f} s  peak RSS {peak:.2f} GB", flush=True)
        if len(times) == 2:
            print(f"{size} TauFactor / multigrid time: {times['taufactor'] / times['amg']:.2f}")


if __name__ == "__main__":
    main()
