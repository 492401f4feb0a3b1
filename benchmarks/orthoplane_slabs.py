"""Orthoplane segmentation (``axes="zyx"``) to a zarr output at several slab depths: time and scratch files.

The early passes keep their class probabilities in stores inside the output; their chunks are one slab
deep along the pass's axis (``plan.pass_chunks``). Prints wall and CPU time per slab depth and the
number of chunk files the first pass's store would hold. Compare code versions in one run by
``PYTHONPATH``:

    OMP_NUM_THREADS=1 python benchmarks/orthoplane_slabs.py --slabs 2 4 8 32
    OMP_NUM_THREADS=1 PYTHONPATH=/path/to/old/checkout/src python benchmarks/orthoplane_slabs.py --slabs 4 32
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    from napari_xrayseg import init_model, make_phantom, segment

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[48, 192, 192])
    ap.add_argument("--slabs", type=int, nargs="+", default=[2, 4, 8, 32])
    a = ap.parse_args()
    image, _ = make_phantom(tuple(a.shape), seed=1520)
    model = init_model("unet", size="tiny", classes=[1, 2, 3])  # untrained: the network's cost is not the point
    try:
        from napari_xrayseg.core.plan import pass_chunks
    except ImportError:  # an older checkout: cubes of the slab depth
        pass_chunks = None
    for slab in a.slabs:
        chunks = pass_chunks(a.shape, slab, 0) if pass_chunks else (slab,) * 3
        files = math.prod(-(-n // c) for n, c in zip(a.shape, chunks))
        d = Path(tempfile.mkdtemp())
        try:
            t, c = time.perf_counter(), time.process_time()
            segment(image, model, out=d / "o.zarr", axes="zyx", slab=slab, device="cpu")
            print(
                f"slab {slab:3d}: wall {time.perf_counter() - t:7.1f} s, CPU {time.process_time() - c:7.1f} s, "
                f"{files:,} chunk files a pass",
                flush=True,
            )
        finally:
            shutil.rmtree(d)


if __name__ == "__main__":
    main()
