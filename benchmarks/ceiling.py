"""How much do more labels and more training buy? Train on the full truth of hard volumes, score on another.

Each U-Net is trained on *every* slice of one or more phantoms (``--train-presets`` x
``--train-seeds``) and segments a volume it never saw (``--test-seed`` of each
``--test-presets``), the volume on which ``benchmarks/hard.py`` trains from 3 slices: the gap
between the two is what annotating many more slices (and training longer) can buy. Train
settings are the API defaults (``unet3d``: size small, context 15, batch 4 or ``--batch``) with fixed
epochs of 25 steps.

With ``--finetune E`` the question becomes whether such a model is a better *start* than random
weights: on each test volume, the full-truth model is fine-tuned for ``E`` epochs on the truth of
3 evenly spaced slices (``train(init=model)``), and a model with random weights is trained on the
same 3 slices for the same epochs; both are scored on the whole volume, beside a random forest
on 3D features from the same slices (``benchmarks/baselines.py``). ``--init MODEL`` skips the
full-truth training and starts from a saved model (e.g. one ``--out`` wrote on a GPU). The test
seed must not be a training seed: a seed draws the microstructure, and presets with the same
feature size (``hard``, ``hard-blur``) share it.

    python benchmarks/ceiling.py --shape 48 160 160 --epochs 40 --methods z 3d
    python benchmarks/ceiling.py --methods 3d --train-seeds 1 2 --epochs 100 --batch 8 --out full.safetensors \\
        --finetune 20 --test-presets hard hard-blur hard-transfer
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from baselines import random_forest_3d  # noqa: E402
from hard import _row  # noqa: E402


def _three_slices(truth: np.ndarray) -> np.ndarray:
    """The truth of 3 evenly spaced Z slices (12/24/36 of 48, the one-off protocol of docs/accuracy.md's
    noise and ceiling studies; ``hard.py``'s ``annotate_slices`` takes 12/24/35), 0 elsewhere."""
    ann = np.zeros_like(truth)
    for z in np.linspace(0, truth.shape[0], 5)[1:4].round().astype(int):
        ann[z] = truth[z]
    return ann


def _score(
    rows: list[dict[str, Any]], preset: str, seed: int, method: str, pred: Any, truth: Any, t: float
) -> dict[str, Any]:
    from napari_xrayseg import evaluate

    row = _row(preset, seed, method, evaluate(pred, truth), time.perf_counter() - t)
    rows.append(row)
    print(
        f"{preset} seed {seed}, {method}: mean Dice {row['mean_dice']:.4f}, interface error "
        f"{row['interface_error']:.3f}, 1 voxel away {row['near_error']:.4f} ({row['seconds']:.0f} s)",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(48, 160, 160), metavar=("Z", "Y", "X"))
    ap.add_argument("--preset", default="hard", help="preset of the training and test volumes (default hard)")
    ap.add_argument("--train-presets", nargs="+", help="presets of the full-truth volumes (default --preset)")
    ap.add_argument("--train-seed", "--train-seeds", dest="train_seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--test-presets", nargs="+", help="presets of the test volumes (default --preset)")
    ap.add_argument("--test-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40, help="epochs of 25 steps on the full truth")
    ap.add_argument("--batch", type=int, help="patches per step (default: the architecture's)")
    ap.add_argument("--methods", nargs="+", default=["z", "3d"], choices=["z", "3d"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="save the full-truth model here (with several methods: METHOD-OUT)")
    ap.add_argument("--init", help="a saved model to start from instead of training on the full truth")
    ap.add_argument("--finetune", type=int, default=0, metavar="E", help="also fine-tune on 3 slices for E epochs")
    ap.add_argument("--finetune-lr", type=float, help="peak learning rate of the fine-tuning (default: train's)")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    if a.init is None and a.test_seed in a.train_seeds:
        # a seed draws the microstructure, and presets with the same feature size share it
        ap.error(f"--test-seed {a.test_seed} is among --train-seeds: the test volume would have a trained-on structure")
    from napari_xrayseg import load_model, make_phantom, segment, train

    shape = tuple(a.shape)
    train_presets = a.train_presets or [a.preset]
    test_presets = a.test_presets or [a.preset]
    tests = {p: make_phantom(shape, seed=a.test_seed, preset=p) for p in test_presets}
    rows: list[dict[str, Any]] = []
    if a.finetune:
        for p, (img, truth) in tests.items():
            t = time.perf_counter()
            _score(
                rows,
                p,
                a.test_seed,
                "random forest, 3 slices",
                random_forest_3d(img, _three_slices(truth))[0],
                truth,
                t,
            )
    images, truths = [], []
    if a.init is None:
        for p in train_presets:
            for s in a.train_seeds:
                img, truth = make_phantom(shape, seed=s, preset=p)
                images.append(img)
                truths.append(truth)
    source = ", ".join(f"{p} seeds {' '.join(map(str, a.train_seeds))}" for p in train_presets)
    for method in a.methods:
        arch = "unet3d" if method == "3d" else "unet"
        kw: dict[str, Any] = {"arch": arch, "seed": 0, "device": a.device, "init": "random"}  # size, ...: the API's
        t = time.perf_counter()
        if a.init is not None:
            model, name = load_model(a.init), f"U-Net {method}, {Path(a.init).name}"
        else:
            out = None if a.out is None else (a.out if len(a.methods) == 1 else f"{method}-{a.out}")
            model = train(images, truths, epochs=a.epochs, batch=a.batch, out=out, overwrite=True, **kw)
            name = f"U-Net {method}, full truth of {source}, {a.epochs} epochs"
        for p, (img, truth) in tests.items():
            _score(rows, p, a.test_seed, name, segment(img, model, device=a.device), truth, t)
            t = time.perf_counter()
        for p, (img, truth) in tests.items() if a.finetune else ():
            ann = _three_slices(truth)
            t = time.perf_counter()
            lr = {} if a.finetune_lr is None else {"lr": a.finetune_lr}
            tuned = train(img, ann, init=model, epochs=a.finetune, seed=0, device=a.device, **lr)
            _score(
                rows,
                p,
                a.test_seed,
                f"U-Net {method}, that model fine-tuned, 3 slices",
                segment(img, tuned, device=a.device),
                truth,
                t,
            )
            t = time.perf_counter()
            fresh = train(img, ann, epochs=a.finetune, **kw)
            _score(
                rows,
                p,
                a.test_seed,
                f"U-Net {method}, random start, 3 slices",
                segment(img, fresh, device=a.device),
                truth,
                t,
            )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1, default=float))
    return rows


if __name__ == "__main__":
    main()
