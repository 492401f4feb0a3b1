"""Accuracy benchmark: a U-Net trained on 3 annotated slices vs. two classical baselines.

A fresh synthetic PXCT phantom (``make_phantom``) is generated; the ground truth of
only 3 slices, evenly spaced along Z, is kept as the annotation.  Three methods
segment the whole volume from it and are scored against the full ground truth with
:func:`napari_xrayseg.core.metrics.evaluate`:

* **U-Net**: :func:`napari_xrayseg.train` (``TrainConfig`` defaults, CPU, a time
  budget of ``--minutes``), then :func:`napari_xrayseg.segment`; one row per
  ``--context`` value (slices fed per slice as channels, 1 = plain 2D).
* **multi-Otsu**: :func:`skimage.filters.threshold_multiotsu` with 3 classes, the
  grey-level classes mapped in order pore < YSZ < Ni (labels 1, 3, 2).  Unsupervised.
* **random forest**: an ilastik-style pixel classifier: ``sklearn``
  ``RandomForestClassifier`` on per-slice features (Gaussian smoothing, Laplacian of
  Gaussian, gradient magnitude, structure-tensor and Hessian eigenvalues at sigmas
  0.7, 1, 1.6, 3.5, 5, plus the raw intensity), trained on a class-balanced
  subsample of the same 3 slices' pixels.

Usage::

    python benchmarks/accuracy.py                      # 96x256x256, seed 2026, 8 min
    python benchmarks/accuracy.py --noise 1.6 --feature-size 6 --json out.json
    python benchmarks/accuracy.py --context 1 3         # a U-Net row per context

Prints a markdown table (per-class and mean Dice, wall times) headed by the command.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from typing import Any

import numpy as np

log = logging.getLogger("accuracy")

SIGMAS = (0.7, 1.0, 1.6, 3.5, 5.0)


def annotate(truth: np.ndarray, n: int = 3) -> tuple[np.ndarray, list[int]]:
    """Keep the ground truth of ``n`` slices evenly spaced along Z; 0 elsewhere."""
    z = truth.shape[0]
    idx = [int(round((i + 0.5) * z / n - 0.5)) for i in range(n)]
    sparse = np.zeros_like(truth)
    sparse[idx] = truth[idx]
    return sparse, idx


def otsu(image: np.ndarray) -> np.ndarray:
    """Three-class multi-Otsu thresholds; grey classes -> labels pore 1, YSZ 3, Ni 2."""
    from skimage.filters import threshold_multiotsu

    thresholds = threshold_multiotsu(image, classes=3)
    return np.asarray([1, 3, 2], np.uint8)[np.digitize(image, thresholds)]


def features(sl: np.ndarray) -> np.ndarray:
    """ilastik-style features of one 2D slice, shape (Y, X, F), float32."""
    import scipy.ndimage as ndi
    from skimage.feature import (
        hessian_matrix,
        hessian_matrix_eigvals,
        structure_tensor,
        structure_tensor_eigenvalues,
    )

    sl = sl.astype(np.float32)
    out = [sl]
    for s in SIGMAS:
        out.append(ndi.gaussian_filter(sl, s))
        out.append(ndi.gaussian_laplace(sl, s))
        out.append(ndi.gaussian_gradient_magnitude(sl, s))
        st = structure_tensor(sl, sigma=s, order="rc")
        out.extend(structure_tensor_eigenvalues(st))
        hm = hessian_matrix(sl, sigma=s, order="rc", use_gaussian_derivatives=False)
        out.extend(hessian_matrix_eigvals(hm))
    return np.stack(out, axis=-1).astype(np.float32)


def random_forest(image: np.ndarray, sparse: np.ndarray, idx: list[int], seed: int,
                  per_class: int = 20_000) -> tuple[np.ndarray, float]:
    """Train a random forest on the annotated slices and predict every slice."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    feats = {i: features(image[i]) for i in idx}
    fx = np.concatenate([feats[i].reshape(-1, feats[i].shape[-1]) for i in idx])
    fy = np.concatenate([sparse[i].reshape(-1) for i in idx])
    for c in np.unique(fy[fy > 0]):
        where = np.flatnonzero(fy == c)
        take = rng.choice(where, min(per_class, where.size), replace=False)
        xs.append(fx[take])
        ys.append(fy[take])
    rf = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, n_jobs=os.cpu_count(),
                                random_state=seed)
    t0 = time.perf_counter()
    rf.fit(np.concatenate(xs), np.concatenate(ys))
    fit_s = time.perf_counter() - t0
    out = np.empty(image.shape, np.uint8)
    for z in range(image.shape[0]):
        f = features(image[z])
        out[z] = rf.predict(f.reshape(-1, f.shape[-1])).reshape(image.shape[1:])
    return out, fit_s


def _row(name: str, report: Any, seconds: float, note: str) -> dict[str, Any]:
    return {"method": name, "mean_dice": report.mean_dice, "error_rate": 1.0 - float(report.accuracy),
            "dice": {int(c): report.per_class[c]["dice"] for c in report.classes},
            "seconds": round(seconds, 1), "note": note}


def table(rows: list[dict[str, Any]], names: dict[int, str]) -> str:
    classes = sorted(rows[0]["dice"])
    head = ["method", *[f"Dice {names.get(c, c)} ({c})" for c in classes], "mean Dice", "wrong voxels",
            "wall time", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|"]
    for r in rows:
        cells = [r["method"], *[f"{r['dice'][c]:.4f}" for c in classes], f"**{r['mean_dice']:.4f}**",
                 f"{100 * r['error_rate']:.2f} %", f"{r['seconds']:.0f} s", r["note"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(96, 256, 256), metavar=("Z", "Y", "X"))
    ap.add_argument("--seed", type=int, default=2026, help="phantom seed (not used by the tests)")
    ap.add_argument("--minutes", type=float, default=8.0, help="U-Net training budget")
    ap.add_argument("--size", default=None, help="U-Net size preset (default: TrainConfig.size)")
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--feature-size", type=float, default=4.0)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--context", type=int, nargs="+", default=None, metavar="K",
                    help="U-Net context slices, one row each (default: TrainConfig.context)")
    ap.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")

    import torch

    from napari_xrayseg.core.config import TrainConfig
    from napari_xrayseg.core.inference import segment
    from napari_xrayseg.core.metrics import evaluate
    from napari_xrayseg.core.sample import PHASES, make_phantom
    from napari_xrayseg.core.training import train

    command = "python benchmarks/accuracy.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    t0 = time.perf_counter()
    image, truth = make_phantom(tuple(args.shape), seed=args.seed, feature_size=args.feature_size,
                                noise=args.noise)
    phantom_s = time.perf_counter() - t0
    sparse, idx = annotate(truth)
    classes = sorted(PHASES)
    rows = []

    t0 = time.perf_counter()
    pred = otsu(image)
    rows.append(_row("multi-Otsu (3 classes)", evaluate(pred, truth, classes=classes),
                     time.perf_counter() - t0, "unsupervised"))

    t0 = time.perf_counter()
    pred, fit_s = random_forest(image, sparse, idx, args.seed)
    rows.append(_row("random forest (ilastik-style features)", evaluate(pred, truth, classes=classes),
                     time.perf_counter() - t0, f"100 trees, fit {fit_s:.0f} s"))

    cfg = TrainConfig()
    histories = {}
    for k in args.context or [cfg.context]:
        t0 = time.perf_counter()
        model = train(image, sparse, size=args.size, minutes=args.minutes, seed=args.train_seed, device="cpu",
                      context=k)
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        pred = segment(image, model, device="cpu")
        seg_s = time.perf_counter() - t1
        tr = model.info.train
        histories[k] = model.info.history
        ctx = "" if k == 1 else f", context {k}"
        rows.append(_row(f"U-Net {model.info.size}{ctx} (napari-xrayseg)", evaluate(pred, truth, classes=classes),
                         train_s + seg_s,
                         f"train {train_s:.0f} s ({tr['epochs_run']} epochs, stopped by {tr['stopped']}, best "
                         f"epoch {tr['best_epoch']}), segment {seg_s:.0f} s"))

    result = {
        "command": command, "shape": list(args.shape), "seed": args.seed, "noise": args.noise,
        "feature_size": args.feature_size, "annotated_slices": idx, "phantom_s": round(phantom_s, 1),
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "platform": platform.platform(),
        "train_config": {**cfg.__dict__, "size": model.info.size, "minutes": args.minutes},
        "history": histories, "rows": rows,
    }
    print(f"`{command}`\n")
    print(f"phantom {tuple(args.shape)} seed {args.seed}, noise {args.noise}, feature size "
          f"{args.feature_size}; annotation = ground truth of slices {idx}; Dice over the whole volume; "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}\n")
    print(table(rows, PHASES))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
