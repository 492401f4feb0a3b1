"""Peak memory and speed of one slab through the default 3D network (the shipped start), in-process.

Runs ``SlicePredictor.labels`` on a random float32 slab of ``--depth`` slices of ``--yx``² (with
the network's context slices) and prints the layout, the peak RSS above the loaded model
(sampled every 20 ms) and Mvox/s. Compare code versions in one run by ``PYTHONPATH``:

    python benchmarks/slab_memory.py --yx 2048 --depth 16
    PYTHONPATH=/path/to/old/checkout/src python benchmarks/slab_memory.py --yx 2048 --depth 16
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np


def rss_mb() -> int:
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--yx", type=int, default=2048, help="slice side (square slices)")
    ap.add_argument("--depth", type=int, default=16, help="slices in the slab (without context)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    from napari_xrayseg.core.models import load_model, pretrained_path
    from napari_xrayseg.core.predictor import SlicePredictor
    from napari_xrayseg.core.tiling import stack_context

    torch.set_num_threads(a.threads)
    model = load_model(pretrained_path())
    pred = SlicePredictor(model, device="cpu")
    k = model.info.in_channels
    print(
        "layout (slices per pass, roi):", pred.volume_layout(a.depth + k - 1, (a.yx, a.yx)), "precision", pred.precision
    )
    slab = np.random.default_rng(0).random((a.depth, a.yx, a.yx), dtype=np.float32)
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.02)

    base = rss_mb()
    threading.Thread(target=watch, daemon=True).start()
    t0 = time.perf_counter()
    pred.labels(stack_context(slab, k))
    dt = time.perf_counter() - t0
    done.set()
    print(
        f"{a.depth} x {a.yx}^2: peak RSS {peak[0]} MB, {peak[0] - base} MB above the loaded model; "
        f"{dt:.1f} s, {a.depth * a.yx * a.yx / dt / 1e6:.2f} Mvox/s"
    )


if __name__ == "__main__":
    main()
