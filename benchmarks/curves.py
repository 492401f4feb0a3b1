"""Training curves against the whole volume: which epoch is best, and does validation find it?

For each seed a phantom of ``--preset`` is generated, the truth of 3 evenly spaced Z slices is
the annotation, and the default U-Net trains for ``--epochs`` (with ``--dropout``). Every
``--every`` epochs the weights are copied; after training each copy segments the whole volume
and is scored against the full truth, beside the validation Dice of that epoch. Printed per
seed: the model ``train`` returns (best validation epoch), the last epoch's weights, the best
copy in hindsight; with ``--transfer PRESET`` also the returned and the last model on a second
scan of that preset (seed + 100), with no new labels.

This is how docs/accuracy.md chose the dropout default and found that validation used to run
the network in training mode, and (with ``--every 1``, so that every epoch's weights are kept)
why ``train`` now returns the average of the second half's weights (``--average``; printed
beside the best-validation epoch's weights, ``best``, and the last epoch's).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/curves.py --seeds 0 1 --epochs 40 --dropout 0.2 --transfer hard-transfer
    OMP_NUM_THREADS=1 python benchmarks/curves.py --preset default --seeds 0 --dropout 0
    OMP_NUM_THREADS=1 python benchmarks/curves.py --seeds 0 1 2 3 --epochs 200 --every 1 --transfer hard-transfer
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def run(preset: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from napari_xrayseg import evaluate, make_phantom, segment, train
    from napari_xrayseg.core import training
    from napari_xrayseg.core.demo import annotate_slices

    copies: list[tuple[int, dict[str, Any]]] = []
    keep = training._Fit.keep_if_best

    def spy(fit: Any, score: float, epoch: int) -> None:  # called once per epoch, after validation
        if epoch % args.every == 0 or (args.epochs and epoch == args.epochs):
            copies.append((epoch, {k: v.detach().clone() for k, v in fit.model.network.state_dict().items()}))
        keep(fit, score, epoch)

    training._Fit.keep_if_best = spy  # type: ignore[method-assign]
    try:
        image, truth = make_phantom(tuple(args.shape), seed=seed, preset=preset)
        ann, _ = annotate_slices(truth, 3)
        t0 = time.perf_counter()
        model = train(
            image,
            ann,
            arch="unet",  # the 2.5D network whose curves docs/accuracy.md reads
            seed=seed,
            device="cpu",
            epochs=args.epochs,
            dropout=args.dropout,
            average=args.average,
        )
        seconds = time.perf_counter() - t0
    finally:
        training._Fit.keep_if_best = keep  # type: ignore[method-assign]
    net, hist = model.network, model.info.history
    returned = {k: v.clone() for k, v in net.state_dict().items()}

    def score(state: dict[str, Any], img: np.ndarray, tr: np.ndarray) -> tuple[float, float]:
        net.load_state_dict(state)
        net.eval()
        r = evaluate(segment(img, model, device="cpu"), tr)
        return float(r.mean_dice), float(r.by_interface_distance["0"]["error_rate"])

    rows = []
    for epoch, state in copies:
        d, ie = score(state, image, truth)
        rows.append({"epoch": epoch, "val_dice": hist[epoch - 1]["val_dice"], "volume_dice": d, "interface_error": ie})
    out = {
        "preset": preset,
        "seed": seed,
        "dropout": model.info.params.get("dropout"),
        "epochs": len(hist),
        "train_s": round(seconds, 1),
        "best_epoch": model.info.train["best_epoch"],
        "kept": model.info.validation[1],
        "returned": score(returned, image, truth)[0],
        "last": rows[-1]["volume_dice"],
        "hindsight": max(r["volume_dice"] for r in rows),
        "curve": rows,
    }
    best = dict(copies).get(out["best_epoch"])
    if best is not None:
        out["best"] = next(r["volume_dice"] for r in rows if r["epoch"] == out["best_epoch"])
    if args.transfer:
        img2, tr2 = make_phantom(tuple(args.shape), seed=seed + 100, preset=args.transfer)
        out["transfer_returned"] = score(returned, img2, tr2)[0]
        out["transfer_last"] = score(copies[-1][1], img2, tr2)[0]
        if best is not None:
            out["transfer_best"] = score(best, img2, tr2)[0]
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="hard")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(48, 160, 160), metavar=("Z", "Y", "X"))
    ap.add_argument("--epochs", type=int, default=40, help="epochs of 25 steps (default 40)")
    ap.add_argument("--dropout", type=float, default=None, help="default: models.default_dropout (0.2 for unet medium)")
    ap.add_argument("--average", type=float, default=0.5, help="train(average=): 0 returns the best epoch")
    ap.add_argument("--every", type=int, default=4, help="score the weights of every k-th epoch (default 4)")
    ap.add_argument("--transfer", default=None, metavar="PRESET", help="also score a second scan, e.g. hard-transfer")
    ap.add_argument("--json", default=None, metavar="OUT")
    args = ap.parse_args(argv)
    results = []
    for seed in args.seeds:
        r = run(args.preset, seed, args)
        results.append(r)
        curve = " ".join(f"{c['epoch']}:{c['val_dice']:.3f}/{c['volume_dice']:.4f}" for c in r["curve"])
        print(f"seed {seed} curve (epoch:validation/volume Dice) {curve}", flush=True)
        print(json.dumps({k: v for k, v in r.items() if k != "curve"}), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    for key in ("returned", "best", "last", "hindsight", "transfer_returned", "transfer_best", "transfer_last"):
        vals = [r[key] for r in results if key in r]
        if vals:
            print(f"{key:18s} mean {np.mean(vals):.4f}  " + " ".join(f"{v:.4f}" for v in vals))
    return results


if __name__ == "__main__":
    main()
