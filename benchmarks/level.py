"""Slices on different grey scales (stitched or drifting scans): ``normalize="image"`` against ``"slice"``.

Each hard volume is distorted along z (``--kinds``): ``none`` (the control: levelling a sound
scan should cost nothing), ``step`` (the lower half scanned with 0.8 times the gain, as two
heights stitched), ``offset`` (the lower half shifted by 15 % of the grey-level range), ``drift``
(a gain falling linearly from 1.15 to 0.85 along z). The default training (``init="auto"``) on 3
annotated slices, two above the middle and one below (``--slices``), runs with each
``normalize``; the model segments the distorted volume and is scored on the other slices: mean
Dice, interface error, and mean Dice of the slices above and below the middle. ``--forest``
also runs the ilastik-style random forest on 3D features (``benchmarks/baselines.py``) on the
same slices, the baseline from the same run.

    python benchmarks/level.py --seeds 801 802 --kinds none step drift --epochs 5
    python benchmarks/level.py --seeds 801 --kinds none step --forest --normalize
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def distort(image: np.ndarray, kind: str) -> np.ndarray:
    """``image`` (float32) with a grey-scale change along z of ``kind``."""
    z = np.arange(image.shape[0])[:, None, None]
    half = image.shape[0] // 2
    lo, hi = np.percentile(image, [0.5, 99.5])
    if kind == "none":
        return image
    if kind == "step":
        return np.where(z >= half, image * 0.8, image).astype(np.float32)
    if kind == "offset":
        return np.where(z >= half, image + 0.15 * (hi - lo), image).astype(np.float32)
    if kind == "drift":
        return (image * (1 + 0.15 * (1 - 2 * z / (image.shape[0] - 1)))).astype(np.float32)
    raise SystemExit(f"unknown kind {kind!r}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[801, 802])
    ap.add_argument("--preset", default="hard")
    ap.add_argument("--shape", type=int, nargs=3, default=(40, 128, 128), metavar=("Z", "Y", "X"))
    ap.add_argument("--kinds", nargs="+", default=["none", "step", "drift"])
    ap.add_argument("--slices", type=int, nargs="+", default=None, help="annotated slices (default: 1/5, 7/20, 3/4)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--normalize", nargs="*", default=["image", "slice"])
    ap.add_argument("--forest", action="store_true", help="also the random forest on 3D features (the baseline)")
    a = ap.parse_args(argv)

    import sys
    from pathlib import Path

    from napari_xrayseg import evaluate, make_phantom, segment, train

    sys.path.insert(0, str(Path(__file__).parent))
    from baselines import random_forest_3d

    zn = a.shape[0]
    picks = a.slices or [zn // 5, 7 * zn // 20, 3 * zn // 4]
    print(f"# {a.preset} {tuple(a.shape)}, slices {picks}, {a.epochs} epochs (init='auto'), training seed 0")
    print("seed | kind | normalize | mean Dice | interface error | above the middle | below | s")
    for seed in a.seeds:
        image, truth = make_phantom(tuple(a.shape), seed=seed, preset=a.preset)
        image = image.astype(np.float32)
        ann = np.zeros_like(truth)
        ann[picks] = truth[picks]
        keep = np.ones(zn, bool)
        keep[picks] = False
        for kind in a.kinds:
            im = distort(image, kind)
            for norm in [*a.normalize, *(["forest"] if a.forest else [])]:
                t = time.perf_counter()
                if norm == "forest":
                    lab = random_forest_3d(im, ann, seed=0)[0]
                else:
                    model = train(im, ann, epochs=a.epochs, seed=0, device="cpu", normalize=norm)
                    lab = segment(im, model, device="cpu")
                r = evaluate(lab[keep], truth[keep])
                half = zn // 2
                up = evaluate(lab[:half][keep[:half]], truth[:half][keep[:half]]).mean_dice
                down = evaluate(lab[half:][keep[half:]], truth[half:][keep[half:]]).mean_dice
                err = r.by_interface_distance["0"]["error_rate"]
                print(
                    f"{seed} | {kind} | {norm} | {r.mean_dice:.4f} | {err:.4f} | {up:.4f} | {down:.4f} | "
                    f"{time.perf_counter() - t:.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
