"""Time and peak RSS of the grey-level sample every segment, preview and suggestion reads first.

A zarr of 4096^2 uint16 slices (one slice a chunk) is written once, then `compute_normalization` runs in a
fresh process (peak RSS = that process's maximum resident set):

    python benchmarks/normalization_sample.py --slices 64 --side 4096
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MEASURE = """
import resource, sys, time, zarr
from napari_xrayseg.core.normalize import compute_normalization
z = zarr.open_array(sys.argv[1], mode="r")
t = time.perf_counter()
b = compute_normalization(z)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(f"{z.shape} {z.dtype}: {time.perf_counter() - t:.1f} s, peak RSS {peak:.2f} GB", b['low'], b['high'])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--side", type=int, default=4096)
    a = ap.parse_args()
    import zarr

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scan.zarr"
        z = zarr.create_array(str(path), shape=(a.slices, a.side, a.side), chunks=(1, 1024, 1024), dtype="u2")
        rng = np.random.default_rng(1809)
        for i in range(a.slices):
            z[i] = rng.integers(1000, 4000, (a.side, a.side), dtype=np.uint16)
        subprocess.run([sys.executable, "-c", MEASURE, str(path)], check=True)


if __name__ == "__main__":
    main()
