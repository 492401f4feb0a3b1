"""Seconds and peak memory of the Annotate preview (two predict_slice calls) per tile mode.

Each (side, tile) runs in a fresh process, so its peak resident memory (``ru_maxrss``) is its
own; ``before_MB`` is the process after import and model creation. The default model (``unet``
``medium``, random weights: the arithmetic is the same) on random slices, one thread.

    OMP_NUM_THREADS=1 python benchmarks/preview_memory.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def _one(side: int, tile: str) -> None:
    import numpy as np
    import torch

    from napari_xrayseg import init_model, predict_slice

    torch.set_num_threads(1)
    model = init_model("unet", size="medium", classes=3, seed=0)
    image = np.random.default_rng(1401).random((8, side, side), dtype="float32")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, out = [], None
    for i in range(2):
        t0 = time.perf_counter()
        out = predict_slice(image, model, 3 + i, tile=tile, device="cpu", normalization={"low": 0.0, "high": 1.0})
        times.append(round(time.perf_counter() - t0, 2))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = {"side": side, "tile": tile, "s": times, "peak_MB": peak / 1e3, "before_MB": before / 1e3}
    print(json.dumps({**row, "label_sum": int(out.sum())}), flush=True)


def main() -> None:
    """Run every (side, tile) in its own process and print one JSON line each."""
    if len(sys.argv) == 3:
        _one(int(sys.argv[1]), sys.argv[2])
        return
    for side in (512, 2048):
        for tile in ("slice", "auto"):
            subprocess.run([sys.executable, __file__, str(side), tile], check=True)


if __name__ == "__main__":
    main()
