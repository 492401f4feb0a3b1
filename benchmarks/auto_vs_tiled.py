"""How much does ``tile="auto"`` (whole slices) change the labels of today's sliding windows?

Trains the default model (``unet`` medium, 3 context slices) for ``--minutes`` on 5 annotated
slices of the built-in sample (``make_phantom``), then segments the whole sample twice in
fp32: with ``tile="auto"`` (each slice whole, padded to the stride) and with the former
default (256x256 sliding windows, overlap 0.25, Gaussian blending). Prints the fraction of
voxels whose label differs, each run's mean Dice against the ground truth and its time.

    python benchmarks/auto_vs_tiled.py                 # 64x256x256 sample, 3 minutes of training
    python benchmarks/auto_vs_tiled.py --shape 64 512 512 --minutes 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 256, 256])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--annotated", type=int, default=5)
    a = ap.parse_args()

    from napari_xrayseg import evaluate, make_phantom, segment, train
    from napari_xrayseg.core.demo import annotate_slices

    image, truth = make_phantom(tuple(a.shape), seed=0)
    ann, _ = annotate_slices(truth, a.annotated)
    model = train(image, ann, arch="unet", minutes=a.minutes, device="cpu")  # 2D tiling: the 2.5D net
    runs = {}
    for name, tile in (("auto", "auto"), ("tiled 256 / 0.25", None)):
        t0 = time.perf_counter()
        lab = segment(image, model, tile=tile, precision="fp32", device="cpu")
        dt = time.perf_counter() - t0
        runs[name] = lab
        rep = evaluate(lab, truth)
        print(f"{name:18s} mean Dice {rep.mean_dice:.4f}  {dt:6.1f} s  {image.size / dt / 1e6:5.2f} Mvox/s", flush=True)
    diff = np.mean(runs["auto"] != runs["tiled 256 / 0.25"])
    print(f"voxels labelled differently: {diff:.4%} of {image.size:,}")


if __name__ == "__main__":
    main()
