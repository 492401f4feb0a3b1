"""Scans cut to a circular field of view: mean Dice inside it, with and without ``nodata``.

Tomographic reconstructions are circles: outside the field of view a reconstruction holds a
constant (tomopy's ``circ_mask`` writes 0) or NaN. Each hard volume is cut to a centred circle
(``--radius``, a fraction of the half side) and segmented several ways: the whole volume (the
reference: no field of view), the outside 0 as it is, the outside 0 declared ``nodata=0``, the
outside NaN; then an outside far below the data (as a uint16 scan whose data lie at 1000-3000
and whose outside is 0), without and with ``nodata``. Dice and interface error are scored
inside the circle only. By default the shipped pretrained start segments as it is (no labels);
``--train`` also trains the default (``init="auto"``) on 3 slices annotated inside the circle,
for the 0-outside volume with and without ``nodata=0``, and scores those models the same way.
``--suggest`` also ranks the slices along Z and X for annotation (``rank_slices``, the start as
the model, no labels) with each measure, on the NaN-outside volume and on the whole one, and
prints the rank correlation of each slice's score with its true error inside the circle (1 -
mean Dice of the slice): how well the suggestions point at the slices the model gets wrong.

    python benchmarks/fov.py --seeds 300 301 302
    python benchmarks/fov.py --seeds 300 --train --epochs 20
    python benchmarks/fov.py --seeds 300 301 302 303 304 305 --suggest
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[300, 301, 302])
    ap.add_argument("--preset", default="hard")
    ap.add_argument("--shape", type=int, nargs=3, default=(48, 160, 160), metavar=("Z", "Y", "X"))
    ap.add_argument("--radius", type=float, default=0.875, help="circle radius, a fraction of half the side")
    ap.add_argument("--train", action="store_true", help="also train the default on 3 slices, with and without nodata")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--suggest", action="store_true", help="also: suggestion scores against the slices' true error")
    a = ap.parse_args(argv)
    from napari_xrayseg import evaluate, load_model, make_phantom, rank_slices, segment, train
    from napari_xrayseg.core.models import pretrained_path
    from napari_xrayseg.core.sample import pillar_mask

    start = load_model(pretrained_path())
    rows: dict[str, list[tuple[float, float]]] = {}
    corr: dict[tuple[str, str, str], list[float]] = {}
    t0 = time.perf_counter()
    for seed in a.seeds:
        img, truth = make_phantom(tuple(a.shape), seed=seed, preset=a.preset)[:2]
        z, y, x = a.shape
        inside = pillar_mask((y, x), a.radius)
        t_in = np.where(inside, truth, 0).astype(truth.dtype)
        zero = np.where(inside, img, 0).astype(np.float32)
        nan = np.where(inside, img, np.nan).astype(np.float32)

        def score(name: str, image: np.ndarray, model, seed=seed, t_in=t_in, **kw) -> None:
            r = evaluate(np.asarray(segment(image, model, **kw)), t_in, per_slice=False)
            rows.setdefault(name, []).append((r.mean_dice, r.by_interface_distance["0"]["error_rate"]))
            print(f"seed {seed}  {name:44s} {r.mean_dice:.4f}  {rows[name][-1][1]:.4f}", flush=True)

        score("start as it is, whole volume", img, start)
        score("start as it is, outside 0", zero, start)
        score("start as it is, outside 0, nodata=0", zero, start, nodata=0)
        score("start as it is, outside NaN", nan, start)
        low = float(img.min() - (img.max() - img.min()))  # e.g. a uint16 scan: data 1000-3000, outside 0
        far = np.where(inside, img, low).astype(np.float32)
        score("start as it is, outside far below the data", far, start)
        score("start as it is, the same, nodata=that value", far, start, nodata=low)
        if a.suggest:
            for image, t, what in ((nan, t_in, "NaN outside"), (img, truth, "whole volume")):
                pred = np.asarray(segment(image, start))
                for axis, name in ((0, "Z"), (2, "X")):
                    err = _slice_error(pred, t, axis)
                    for measure in ("orthoplane", "entropy", "flips"):
                        r = rank_slices(image, start, axis=axis, measure=measure, max_slices=None)
                        rho = _spearman(r.uncertainty, err)
                        corr.setdefault((name, measure, what), []).append(rho)
                        print(f"seed {seed}  suggestions along {name}, {measure:10s} {what:12s} {rho:+.3f}", flush=True)
        if a.train:
            ann = np.zeros_like(truth)
            for s in (z // 4, z // 2, 3 * z // 4):
                ann[s] = t_in[s]  # painted inside the field of view only
            for name, kw in (("trained, outside 0", {}), ("trained, outside 0, nodata=0", {"nodata": 0})):
                m = train(zero, ann, epochs=a.epochs, seed=0, **kw)
                score(name, zero, m, **kw)
    print(f"\n{a.preset} {tuple(a.shape)}, radius {a.radius}, seeds {a.seeds}: mean Dice / interface error inside")
    print("| | mean Dice | interface error |\n|---|---:|---:|")
    for name, v in rows.items():
        d, e = statistics.fmean(r[0] for r in v), statistics.fmean(r[1] for r in v)
        print(f"| {name} | {d:.4f} | {e:.4f} |")
    if corr:
        print("\nrank correlation of the suggestion score with the slice's true error (mean over seeds)")
        print("| axis | measure | NaN outside | whole volume |\n|---|---|---:|---:|")
        for name, measure in dict.fromkeys((k[0], k[1]) for k in corr):
            v = [statistics.fmean(corr[(name, measure, w)]) for w in ("NaN outside", "whole volume")]
            print(f"| {name} | {measure} | {v[0]:+.3f} | {v[1]:+.3f} |")
    print(f"\n{time.perf_counter() - t0:.0f} s")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation over the slices where both are finite (a slice without data has neither)."""
    ok = np.isfinite(a) & np.isfinite(b)
    ra, rb = np.argsort(np.argsort(a[ok])), np.argsort(np.argsort(b[ok]))
    return float(np.corrcoef(ra, rb)[0, 1])


def _slice_error(pred: np.ndarray, truth: np.ndarray, axis: int) -> np.ndarray:
    """Per slice along ``axis``: 1 - mean Dice over the classes of the truth, where it is > 0 (NaN: none)."""
    out = []
    for p, t in zip(np.moveaxis(pred, axis, 0), np.moveaxis(truth, axis, 0)):
        m = t > 0
        d = [
            2 * np.sum((p[m] == c) & (t[m] == c)) / max(1, np.sum(p[m] == c) + np.sum(t[m] == c))
            for c in np.unique(t[m])
        ]
        out.append(1 - float(np.mean(d)) if d else np.nan)
    return np.array(out)


if __name__ == "__main__":
    main()
