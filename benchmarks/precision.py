"""Does bf16 (or fp16) inference change the answer? Dice and agreement against fp32, same trained model.

Trains a model on a few annotated slices of the synthetic sample (as benchmarks/hard.py does),
then segments the volume with each precision the machine supports and prints, per precision:
voxels/s, mean Dice against the full truth, and the fraction of voxels whose label differs
from the fp32 result.

    python benchmarks/precision.py                    # 64x192x192, unet/medium, 1.5 min of training
    python benchmarks/precision.py --minutes 3 --size small
"""

from __future__ import annotations

import argparse
import time

import torch

from napari_xrayseg import evaluate, make_phantom, segment, train
from napari_xrayseg.core.demo import annotate_slices
from napari_xrayseg.core.device import cpu_has_bf16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 192, 192])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--slices", type=int, default=3)
    ap.add_argument("--size", default="medium")
    ap.add_argument("--minutes", type=float, default=1.5)
    a = ap.parse_args()
    image, truth = make_phantom(tuple(a.shape), seed=a.seed)
    ann, idx = annotate_slices(truth, a.slices)
    t0 = time.perf_counter()
    model = train(image, ann, arch="unet", size=a.size, minutes=a.minutes, device="cpu", seed=0)
    print(
        f"# trained unet/{a.size} on slices {idx} in {time.perf_counter() - t0:.0f} s; CPU native bf16: "
        f"{cpu_has_bf16()}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    precisions = ["fp32", "bf16"] + (["fp16"] if torch.cuda.is_available() else [])
    ref = None
    print("| precision | device | Mvox/s | mean Dice | labels differing from fp32 |")
    print("|---|---|---:|---:|---:|")
    for p in precisions:
        dev = "cuda" if p == "fp16" else "cpu"
        segment(image[:4], model, device=dev, precision=p)  # warm-up
        t1 = time.perf_counter()
        lab = segment(image, model, device=dev, precision=p)
        dt = time.perf_counter() - t1
        ref = lab if ref is None else ref
        d = evaluate(lab, truth).mean_dice
        diff = float((lab != ref).mean())
        print(f"| {p} | {dev} | {image.size / dt / 1e6:.2f} | {d:.4f} | {100 * diff:.3f} % |", flush=True)


if __name__ == "__main__":
    main()
