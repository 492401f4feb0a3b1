"""How much do more labels buy? Train on the full truth of one hard volume, score on another.

Each U-Net is trained on *every* slice of a hard phantom (``--train-seed``) and segments a
second one (``--test-seed``), the volume on which ``benchmarks/hard.py`` trains from 3 slices:
the gap between the two runs is what annotating 16x more slices can buy. Train settings are the
API defaults (``unet3d``: batch 8 sub-volumes of 15 x 128^2, size small), fixed epochs of 25 steps.

    python benchmarks/ceiling.py --shape 48 160 160 --epochs 40 --methods z 3d
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from hard import _row  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(48, 160, 160), metavar=("Z", "Y", "X"))
    ap.add_argument("--preset", default="hard")
    ap.add_argument("--train-seed", type=int, default=1)
    ap.add_argument("--test-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--methods", nargs="+", default=["z", "3d"], choices=["z", "3d"])
    a = ap.parse_args(argv)
    from napari_xrayseg import evaluate, make_phantom, segment, train

    img1, truth1 = make_phantom(tuple(a.shape), seed=a.train_seed, preset=a.preset)
    img0, truth0 = make_phantom(tuple(a.shape), seed=a.test_seed, preset=a.preset)
    rows = []
    for method in a.methods:
        kw: dict[str, Any] = {"arch": "unet3d" if method == "3d" else "unet"}
        t = time.perf_counter()
        model = train(img1, truth1, epochs=a.epochs, seed=0, device="cpu", **kw)
        report = evaluate(segment(img0, model, device="cpu"), truth0)
        row = _row(a.preset, a.test_seed, f"U-Net {method}, full truth of seed {a.train_seed}", report, 0.0)
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print(
            f"{row['method']}: mean Dice {row['mean_dice']:.4f}, interface error {row['interface_error']:.3f}, "
            f"1 voxel away {row['near_error']:.4f} ({row['seconds']:.0f} s)",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
