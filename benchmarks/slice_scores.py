"""Which per-slice score predicts where annotating helps? (the choice behind ``suggest_slices``)

The annotation-loop study (``xrayseg study --strategy ...``) starts from the middle slice of a
``make_phantom(preset=...)`` volume and adds evenly spaced slices. This script replays that
for ``--rounds`` rounds and, after each round, scores every slice not yet annotated with each
candidate score and compares it with the slice's true error (1 - mean Dice of the slice
against the full truth), by Spearman rank correlation over the free slices:

``orthoplane``, ``flips``, ``entropy``, ``maxprob``
    the :func:`napari_xrayseg.rank_slices` measures (whole slices, every line);
``previous``
    share of the slice's pixels whose class changed since the previous round's model;
``interfaces``
    share of the slice's pixels next to a predicted class interface;
``distance``
    distance in slices to the nearest annotated slice;
``novelty``
    distance in grey-level statistics (mean, std, 5/25/50/75/95 % quantiles, mean gradient,
    each standardised over the slices) to the nearest annotated slice.

With ``--gain-epochs E``, the last state is also continued for one round of ``E`` epochs
after adding each free slice in turn (``--gain-repeats`` training seeds each), and once
without adding any slice: the whole-volume Dice gained per candidate is what a score should
predict, and its spread over candidates against the spread over seeds says whether the
choice of slice can matter at all at that budget.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/slice_scores.py --seeds 0 1 --rounds 3
    OMP_NUM_THREADS=1 python benchmarks/slice_scores.py --seeds 0 --rounds 2 --gain-epochs 6 --gain-repeats 3
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from napari_xrayseg import continue_training, make_phantom, rank_slices, train
from napari_xrayseg.core.annotation import even_next
from napari_xrayseg.core.inference import segment
from napari_xrayseg.core.metrics import evaluate

MEASURES = ("orthoplane", "flips", "entropy", "maxprob")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (ties broken by order: the scores here are continuous)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def slice_error(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1 - mean Dice over the classes, per Z slice."""
    out = []
    for p, t in zip(pred, truth):
        d = [2 * np.sum((p == c) & (t == c)) / max(1, np.sum(p == c) + np.sum(t == c)) for c in np.unique(t)]
        out.append(1 - float(np.mean(d)))
    return np.asarray(out)


def grey_features(image: np.ndarray) -> np.ndarray:
    """Standardised grey-level statistics per Z slice."""
    f = []
    for s in image:
        g = np.hypot(*np.gradient(s.astype(np.float32)))
        f.append([s.mean(), s.std(), *np.percentile(s, [5, 25, 50, 75, 95]), g.mean()])
    f = np.asarray(f)
    return (f - f.mean(0)) / (f.std(0) + 1e-12)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="hard")
    ap.add_argument("--shape", type=int, nargs=3, default=(48, 128, 128))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="sample seed = training seed offset")
    ap.add_argument("--rounds", type=int, default=3, help="evenly spaced rounds after the first slice")
    ap.add_argument("--epochs", type=int, default=10, help="first training (epochs of --steps steps)")
    ap.add_argument("--round-epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--gain-epochs", type=int, default=0, help="also measure one-round gains (0: no)")
    ap.add_argument("--gain-repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="write every score, error and gain here")
    a = ap.parse_args()
    common = {"steps_per_epoch": a.steps, "patch": 64, "batch": 4, "device": "cpu", "val_fraction": 0.0}
    rows: dict[str, list[float]] = {}
    dump = []
    for seed in a.seeds:
        image, truth = make_phantom(tuple(a.shape), seed=seed, preset=a.preset)
        n = image.shape[0]
        feats = grey_features(image)
        picked = [n // 2]
        ann = np.zeros_like(truth)
        ann[picked] = truth[picked]
        model = train(image, ann, size="small", context=3, epochs=a.epochs, seed=1000 * seed, minutes=None, **common)
        for _ in range(a.rounds):
            nxt = even_next(n, picked)
            picked.append(nxt)
            ann[nxt] = truth[nxt]
            prev = model
            model = continue_training(image, ann, model, epochs=a.round_epochs, minutes=None, device="cpu")
            pred = segment(image, model, device="cpu", precision="fp32")
            err = slice_error(pred, truth)
            free = np.array([i for i in range(n) if i not in picked])
            scores = {
                m: rank_slices(
                    image, model, ann, measure=m, max_slices=None, max_side=None, device="cpu", precision="fp32"
                ).uncertainty
                for m in MEASURES
            }
            scores["previous"] = (segment(image, prev, device="cpu", precision="fp32") != pred).mean(axis=(1, 2))
            edge = np.zeros(pred.shape, bool)
            edge[:, 1:] |= pred[:, 1:] != pred[:, :-1]
            edge[:, :, 1:] |= pred[:, :, 1:] != pred[:, :, :-1]
            scores["interfaces"] = edge.mean(axis=(1, 2))
            z = np.arange(n)
            scores["distance"] = np.min(np.abs(z[:, None] - np.asarray(picked)[None]), axis=1).astype(float)
            scores["novelty"] = np.min(np.linalg.norm(feats[:, None] - feats[picked][None], axis=2), axis=1)
            rho = {m: spearman(v[free], err[free]) for m, v in scores.items()}
            for m, r in rho.items():
                rows.setdefault(m, []).append(r)
            print(f"seed {seed}, {len(picked)} slices {picked}: " + ", ".join(f"{m} {r:+.2f}" for m, r in rho.items()))
            dump.append(
                {"seed": seed, "annotated": list(picked), "error": err.tolist(), "rho": rho}
                | {"scores": {m: np.asarray(v).tolist() for m, v in scores.items()}}
            )
        if a.gain_epochs:
            t0 = time.perf_counter()

            def dice(m, image=image, truth=truth):
                return evaluate(segment(image, m, device="cpu"), truth).mean_dice

            base = dice(model)
            kw = {"epochs": a.gain_epochs, "minutes": None, "device": "cpu"}
            none = [
                dice(continue_training(image, ann, model, seed=500 + r, **kw)) - base for r in range(a.gain_repeats)
            ]
            gains = []
            for c in free:
                a2 = ann.copy()
                a2[c] = truth[c]
                g = [
                    dice(continue_training(image, a2, model, seed=500 + r, **kw)) - base for r in range(a.gain_repeats)
                ]
                gains.append(g)
            g = np.asarray(gains)
            print(
                f"  one more round of {a.gain_epochs} epochs from {picked} (Dice {base:.4f}, "
                f"{time.perf_counter() - t0:.0f} s): no slice added {np.mean(none):+.4f} ± {np.std(none):.4f}; "
                f"a slice added {g.mean():+.4f} (candidates {g.mean(1).min():+.4f} .. {g.mean(1).max():+.4f}, "
                f"their spread {g.mean(1).std():.4f}, seed spread {g.std(1).mean():.4f})"
            )
            print(
                "  gain vs score: " + ", ".join(f"{m} {spearman(v[free], g.mean(1)):+.2f}" for m, v in scores.items())
            )
            print(f"  gain vs true error {spearman(err[free], g.mean(1)):+.2f}")
            dump[-1]["gain"] = {"none": none, "candidates": free.tolist(), "gains": g.tolist()}
    print("\nSpearman rho of each score with the true per-slice error (mean, min..max over states):")
    for m, v in sorted(rows.items(), key=lambda kv: -np.mean(kv[1])):
        print(f"  {m:11s} {np.mean(v):+.2f}  ({min(v):+.2f} .. {max(v):+.2f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dump, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
