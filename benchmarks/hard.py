"""Hard benchmark: U-Net recipes vs. thresholding and a 3D random forest on hard presets.

For each ``--preset`` and ``--seeds`` a phantom is generated (``make_phantom(preset=...)``),
the truth of ``--slices`` evenly spaced Z slices is kept as the annotation and every method
is trained on exactly that, then scored on the whole volume against the full truth
(:func:`napari_xrayseg.evaluate`: mean Dice and error rates by distance to a truth
interface). Baselines come from the same run:

* multi-Otsu thresholding (unsupervised),
* a random forest on 46 ilastik-style 3D features (``benchmarks/baselines.py``).

With ``--transfer PRESET`` every model (and the forest) trained on a ``hard`` volume also
segments a second scan of another preset (seed + 100) with no new labels; the U-Net rows
then include ``adapt``: :func:`napari_xrayseg.self_train` on the second scan. With ``--tta N``
every U-Net also segments each scan with N test-time views (``segment(tta=N)``: the same model,
one more row each, its wall time the training's plus that segmentation's).

U-Net recipes (``--methods``):

``before``   what `xrayseg train --minutes M` did before this benchmark existed: 2.5D context 3,
             z slices only, one slice in three held out for validation, fixed normalisation,
             one-axis prediction (``val_fraction``/``normalize``/axes set to the old values).
``z``        today's training (all painted slices teach, a band of each is held out, per-image
             normalisation), z slices only, one-axis prediction.
``ortho``    learn from all three axes (``axes="zyx"``: painted z slices are painted rows of xz
             and yz slices) and predict as an orthoplane ensemble (``segment(axes="zyx")``).
``3d``       ``arch="unet3d"``: a 3D U-Net over each slice and its 14 context slices
             (``context=15``), one-axis prediction (a slab at a time through the 3D net).
``3d-pre``   the same network fine-tuned from the pretrained start shipped with the package
             (``init="pretrained"``, ``benchmarks/pretrain.py``) instead of random weights;
             like ``train``, 5 epochs unless ``--epochs`` is given (``--minutes`` caps them),
             at train's learning rate unless ``--pre-lr``.
``3d-auto``  ``init="auto"``: ``3d-pre`` (5 epochs) and ``3d`` in the rest of the budget, the one
             with the higher validation Dice kept (what ``train`` does by default where the start fits).

Training uses ``--minutes`` (each model spends it in full) or, with ``--epochs``, a fixed
number of epochs of 25 steps, so that runs on a loaded machine stay comparable; wall times
are printed either way.

Usage::

    python benchmarks/hard.py --seeds 0 1 2 --epochs 20 --transfer hard-transfer --json hard.json
    python benchmarks/hard.py --preset default --seeds 0 --minutes 10
    python benchmarks/hard.py --shape 48 160 160 --seeds 320 --epochs 20 --methods 3d-auto --relabel 3=2
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
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from baselines import features_3d, otsu, random_forest_3d  # noqa: E402

log = logging.getLogger("hard")


def _row(preset: str, seed: int, method: str, report: Any, seconds: float, **extra: Any) -> dict[str, Any]:
    b = report.by_interface_distance
    return {
        "preset": preset,
        "seed": seed,
        "method": method,
        "mean_dice": report.mean_dice,
        "error_rate": 1.0 - float(report.accuracy),
        "interface_error": b["0"]["error_rate"],
        "near_error": b["1"]["error_rate"],
        "far_error": b["2+"]["error_rate"],
        "interface_fraction": b["0"]["voxels"] / report.n_voxels,
        "dice": {str(c): report.per_class[c]["dice"] for c in report.classes},
        "seconds": round(seconds, 1),
        **extra,
    }


def _unet(method: str, image: np.ndarray, ann: np.ndarray, budget: dict[str, Any], seed: int) -> tuple[Any, str]:
    from napari_xrayseg import train

    kw: dict[str, Any] = dict(budget, seed=seed, device="cpu", arch="unet")  # the 2.5D net ("3d": unet3d)
    pre_lr = kw.pop("pre_lr", None)
    if method == "before":
        kw.update(val_fraction=0.2, normalize="fixed")
        from napari_xrayseg.core import training

        old, training.MIN_SLICES_HELD_OUT = training.MIN_SLICES_HELD_OUT, 2  # the old split: whole slices
        try:
            return train(image, ann, **kw), "z"
        finally:
            training.MIN_SLICES_HELD_OUT = old
    if method == "ortho":
        return train(image, ann, axes="zyx", **kw), "zyx"
    if method == "3d":
        kw["arch"] = "unet3d"
        return train(image, ann, init="random", size="small", context=15, batch=4, **kw), "z"
    if method == "3d-pre":
        kw["arch"] = "unet3d"
        if pre_lr is not None:
            kw["lr"] = pre_lr
        return train(image, ann, init="pretrained", batch=4, **kw), "z"
    if method == "3d-auto":
        kw["arch"] = "unet3d"
        model = train(image, ann, init="auto", batch=4, **kw)
        log.info("3d-auto kept the %s start: %s", model.info.train.get("start"), model.info.train.get("starts"))
        return model, "z"
    return train(image, ann, **kw), "z"


def summary(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["preset"], r["method"]), []).append(r)
    lines = [
        "| preset | method | mean Dice (mean ± std over seeds) | interface-voxel error | 1 voxel away | "
        "2+ away | wall time per seed | seeds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (preset, method), rs in groups.items():
        d = np.array([r["mean_dice"] for r in rs])
        ie = np.mean([r["interface_error"] for r in rs])
        ne = np.mean([r["near_error"] for r in rs])
        fe = np.mean([r["far_error"] for r in rs])
        sec = np.mean([r["seconds"] for r in rs])
        lines.append(
            f"| {preset} | {method} | **{d.mean():.4f}** ± {d.std():.4f} | {ie:.3f} | {ne:.4f} | {fe:.4f} "
            f"| {sec:.0f} s | {len(rs)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", nargs="+", default=["hard"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--phantom",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="make_phantom settings over the preset's, e.g. feature_size=6 noise=1.6 (a scan outside the "
        "pretrained start's family)",
    )
    ap.add_argument("--shape", type=int, nargs=3, default=(64, 192, 192), metavar=("Z", "Y", "X"))
    ap.add_argument("--slices", type=int, default=3, help="annotated Z slices (default 3)")
    ap.add_argument(
        "--methods",
        nargs="+",
        default=["before", "z", "ortho"],
        choices=["before", "z", "ortho", "3d", "3d-pre", "3d-auto"],
    )
    ap.add_argument("--baselines", nargs="+", default=["otsu", "rf"], help="otsu, rf (or none)")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="U-Net training budget (spent in full)")
    budget.add_argument("--epochs", type=int, default=None, help="U-Net epochs of 25 steps instead of minutes")
    ap.add_argument(
        "--transfer",
        default=None,
        metavar="PRESET",
        help="also segment a second scan of this preset (seed + 100) with every model",
    )
    ap.add_argument(
        "--boundary-weight", type=float, default=1.0, help="U-Net cross-entropy weight of interface pixels (1 = off)"
    )
    ap.add_argument("--adapt-minutes", type=float, default=None, help="self-training budget on the second scan")
    ap.add_argument("--adapt-epochs", type=int, default=None, help="self-training epochs (default: 10; 0: none)")
    ap.add_argument("--pre-lr", type=float, default=None, help="peak learning rate of 3d-pre (default: train's)")
    ap.add_argument(
        "--invert",
        action="store_true",
        help="invert the grey levels (pore brightest): a scan unlike the pretrained start's, for init='auto'",
    )
    ap.add_argument(
        "--relabel",
        nargs="+",
        default=[],
        metavar="OLD=NEW",
        help="merge the truth's phases, e.g. 3=2 (pore / solid) or 2=1 3=2 (YSZ / the rest): a scan with fewer "
        "classes than the pretrained start's three; multi-Otsu's three classes are merged alike",
    )
    ap.add_argument("--precision", default="auto", help="U-Net training arithmetic: auto, fp32, bf16 (train's)")
    ap.add_argument(
        "--start",
        default=None,
        metavar="FILE",
        help="use this model file as the pretrained start of 3d-pre and 3d-auto (a candidate start before shipping it)",
    )
    ap.add_argument(
        "--tta",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="also score every U-Net with N test-time views (segment's tta=N; the same model, extra rows)",
    )
    ap.add_argument("--json", default=None, metavar="OUT", help="append-safe JSON of every row")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )
    import torch

    from napari_xrayseg import evaluate, make_phantom, segment
    from napari_xrayseg.core.demo import annotate_slices

    if args.start:
        from napari_xrayseg.core import training

        start = Path(args.start).resolve()
        if not start.is_file():
            ap.error(f"--start {args.start}: no such file")
        training.pretrained_path = lambda: start  # type: ignore[assignment]  # what init="pretrained" loads

    command = "python benchmarks/hard.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    budget_kw: dict[str, Any] = {"epochs": args.epochs} if args.epochs else {"minutes": args.minutes or 10.0}
    budget_kw["precision"] = args.precision
    if args.pre_lr is not None:
        budget_kw["pre_lr"] = args.pre_lr
    if args.boundary_weight != 1.0:
        budget_kw["boundary_weight"] = args.boundary_weight
    rows: list[dict[str, Any]] = []
    overrides: dict[str, float] = {}
    for item in args.phantom:
        name, _, value = item.partition("=")
        try:
            overrides[name] = float(value)
        except ValueError:
            ap.error(f"--phantom {item!r}: give NAME=NUMBER, e.g. feature_size=6")

    lut = np.arange(256, dtype=np.uint8)
    for item in args.relabel:
        old, _, new = item.partition("=")
        if not (old.isdigit() and new.isdigit() and 1 <= int(old) <= 255 and 1 <= int(new) <= 255):
            ap.error(f"--relabel {item!r}: give OLD=NEW with labels 1..255, e.g. 3=2")
        lut[int(old)] = int(new)

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"command": command, "rows": rows}, indent=1))

    for preset in args.preset:
        for seed in args.seeds:
            image, truth = make_phantom(tuple(args.shape), seed=seed, preset=preset, **overrides)
            truth = lut[truth]
            label = preset + "".join(f" {k}={v:g}" for k, v in overrides.items())
            label += "".join(f" {a}" for a in args.relabel)
            ann, idx = annotate_slices(truth, args.slices)
            second = None
            if args.transfer:
                second = make_phantom(tuple(args.shape), seed=seed + 100, preset=args.transfer)
                second = (second[0], lut[second[1]])
            if args.invert:
                image = image.max() + image.min() - image
                second = None if second is None else (second[0].max() + second[0].min() - second[0], second[1])
            if "otsu" in args.baselines:
                t0 = time.perf_counter()
                emit(_row(label, seed, "multi-Otsu", evaluate(lut[otsu(image)], truth), time.perf_counter() - t0))
                if second is not None:
                    emit(_row(args.transfer, seed, "multi-Otsu", evaluate(lut[otsu(second[0])], second[1]), 0.0))
            if "rf" in args.baselines:
                t0 = time.perf_counter()
                pred, t = random_forest_3d(image, ann, seed=seed)
                emit(
                    _row(
                        label,
                        seed,
                        "random forest (3D features)",
                        evaluate(pred, truth),
                        time.perf_counter() - t0,
                        timings=t,
                    )
                )
                if second is not None:
                    # the forest trained on the first scan's features, applied to the second scan
                    f1 = features_3d(image)
                    from sklearn.ensemble import RandomForestClassifier

                    lab = ann.reshape(-1)
                    rng = np.random.default_rng(seed)
                    take = np.sort(
                        np.concatenate(
                            [
                                rng.choice(np.flatnonzero(lab == c), min(20_000, int((lab == c).sum())), replace=False)
                                for c in np.unique(lab[lab > 0])
                            ]
                        )
                    )
                    rf = RandomForestClassifier(
                        n_estimators=100, min_samples_leaf=2, n_jobs=os.cpu_count(), random_state=seed
                    ).fit(f1.reshape(f1.shape[0], -1)[:, take].T, lab[take])
                    del f1
                    f2 = features_3d(second[0]).reshape(46, -1)
                    pred2 = np.concatenate(
                        [
                            rf.predict(np.ascontiguousarray(f2[:, s : s + (1 << 18)].T))
                            for s in range(0, f2.shape[1], 1 << 18)
                        ]
                    ).reshape(second[1].shape)
                    del f2
                    emit(
                        _row(
                            args.transfer,
                            seed,
                            "random forest (3D features)",
                            evaluate(pred2.astype(np.uint8), second[1]),
                            0.0,
                            note="trained on the first scan",
                        )
                    )
            for method in args.methods:
                t0 = time.perf_counter()
                model, axes = _unet(method, image, ann, budget_kw, seed)
                t_train = time.perf_counter() - t0
                pred = segment(image, model, axes=axes, device="cpu")
                t_all = time.perf_counter() - t0
                tr = model.info.train
                emit(
                    _row(
                        label,
                        seed,
                        f"U-Net {method}",
                        evaluate(pred, truth),
                        t_all,
                        train_s=round(t_train, 1),
                        epochs=tr["epochs_run"],
                        best_epoch=tr["best_epoch"],
                        stopped=tr["stopped"],
                        val_dice=tr.get("val_dice"),
                        start=tr.get("start"),
                        starts=tr.get("starts"),
                        start_blend=tr.get("start_blend_kept"),
                    )
                )
                for n in args.tta:
                    t0 = time.perf_counter()
                    pred_n = segment(image, model, axes=axes, device="cpu", tta=n)
                    emit(
                        _row(
                            label,
                            seed,
                            f"U-Net {method}, {n} views",
                            evaluate(pred_n, truth),
                            t_train + time.perf_counter() - t0,
                        )
                    )
                if second is not None:
                    for n in (1, *args.tta):  # the default inference, then each number of test-time views
                        t0 = time.perf_counter()
                        pred2 = segment(second[0], model, axes=axes, device="cpu", tta=n)
                        emit(
                            _row(
                                args.transfer,
                                seed,
                                f"U-Net {method}" + (f", {n} views" if n > 1 else ""),
                                evaluate(pred2, second[1]),
                                time.perf_counter() - t0,
                                note="trained on the first scan",
                            )
                        )
                    if method != "before" and args.adapt_epochs != 0:
                        from napari_xrayseg import XraysegError, self_train

                        t0 = time.perf_counter()
                        try:
                            adapted = self_train(
                                second[0],
                                model,
                                minutes=args.adapt_minutes,
                                epochs=args.adapt_epochs,
                                device="cpu",
                                seed=seed,
                            )
                        except XraysegError as e:  # e.g. a class with no confident voxel
                            print(
                                json.dumps(
                                    {
                                        "preset": args.transfer,
                                        "seed": seed,
                                        "method": f"U-Net {method} + adapt",
                                        "failed": str(e),
                                    }
                                ),
                                flush=True,
                            )
                            continue
                        pred3 = segment(second[0], adapted, axes=axes, device="cpu")
                        emit(
                            _row(
                                args.transfer,
                                seed,
                                f"U-Net {method} + adapt",
                                evaluate(pred3, second[1]),
                                time.perf_counter() - t0,
                                note="self-trained on the second scan, no labels",
                            )
                        )
    print(f"\n`{command}`\n")
    print(
        f"{args.shape} volumes, {args.slices} annotated Z slices, budget {budget_kw}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {platform.platform()}\n"
    )
    print(summary(rows))
    return {"command": command, "rows": rows}


if __name__ == "__main__":
    main()
