"""Blend study: which share of the fine-tuned weights should the blend with the pretrained start keep?

On each volume the start is fine-tuned on 3 annotated slices as ``train(init="pretrained")`` does
(5 epochs); then for every share ``a`` the weights ``a x fine-tuned + (1 - a) x start`` (the start
as matched to the classes) are scored three ways: validation Dice on the held-out rows that
training chooses by, mean Dice on the whole volume and on its second scan (``--second``, seed +
100, no new labels). The table shows what training kept (``training.START_BLENDS`` and
``START_BLEND_MARGIN``) beside the share validation ranks first, and the means of each choice:
docs/accuracy.md, sessions 26 and 27. Choose on fresh seeds (300 and up), never on the test
seeds of ``benchmarks/hard.py``.

    python benchmarks/blend_study.py --seeds 310 311 312                  # the shipped start
    python benchmarks/blend_study.py --start new.safetensors --seeds 310 311 312 313 314 315
    python benchmarks/blend_study.py --seeds 310 311 --slices 12 24 36 --round 6 18 30   # an Annotate round

With ``--round Z ...`` the study is of the round that follows: those slices are annotated too and
the model continues (``continue_training``, as the Annotate widget's *Continue training*), and the
shares of the round's blend with the first model are scored (``training.ROUND_BLENDS`` the grid;
docs/accuracy.md, session 28).

About 2 minutes per seed on one thread (``OMP_NUM_THREADS=1``; run two processes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

SHARES = (0.0, 0.15, 0.3, 0.5, 0.7, 1.0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", default=None, help="a start to study in place of the shipped one")
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--preset", default="hard")
    ap.add_argument("--second", default="hard-transfer", help="preset of the second scan (seed + 100)")
    ap.add_argument("--shape", type=int, nargs=3, default=(48, 160, 160), metavar=("Z", "Y", "X"))
    ap.add_argument("--shares", type=float, nargs="+", default=list(SHARES))
    ap.add_argument("--slices", type=int, nargs="+", default=None, help="the annotated Z slices (default: 3 even)")
    ap.add_argument("--round", type=int, nargs="+", default=None, metavar="Z", help="study a round with these slices")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    from napari_xrayseg import evaluate, make_phantom, segment, train
    from napari_xrayseg.core import training
    from napari_xrayseg.core.annotation import continue_training
    from napari_xrayseg.core.demo import annotate_slices

    if a.start:
        start = Path(a.start).resolve()
        training.pretrained_path = lambda: start  # what init="pretrained" loads
    seen: dict = {}
    blend = training._blend_start

    def spy(model, st, validate, *rest):  # the fine-tuned weights, the start as matched, the validation
        seen.update(tuned=training._state(model), start=st, validate=validate)
        return blend(model, st, validate, *rest)

    training._blend_start = spy
    rows = []
    for seed in a.seeds:
        image, truth = make_phantom(tuple(a.shape), seed=seed, preset=a.preset)[:2]
        image2, truth2 = make_phantom(tuple(a.shape), seed=seed + 100, preset=a.second)[:2]
        if a.slices:
            ann = np.zeros_like(truth)
            ann[a.slices] = truth[a.slices]
        else:
            ann, _ = annotate_slices(truth, 3)
        m = train(image, ann, init="pretrained", batch=4, arch="unet3d", seed=seed, device="cpu")
        if a.round:  # the blend spied on is now the round's, with the first model as its start
            ann[a.round] = truth[a.round]
            m = continue_training(image, ann, m, device="cpu")
        row = {"seed": seed, "kept": m.info.train["start_blend_kept"], "shares": {}}
        for s in a.shares:
            m.network.load_state_dict(training._lerp_state(seen["start"], seen["tuned"], float(s)))
            m.network.eval()
            val = seen["validate"]()
            m.network.eval()
            d1 = evaluate(np.asarray(segment(image, m)), truth, per_slice=False).mean_dice
            d2 = evaluate(np.asarray(segment(image2, m)), truth2, per_slice=False).mean_dice
            row["shares"][f"{s:g}"] = [round(float(val), 5), round(float(d1), 5), round(float(d2), 5)]
        grid = [k for k in row["shares"] if float(k) in (training.ROUND_BLENDS if a.round else training.START_BLENDS)]
        row["first"] = max(grid, key=lambda k: (row["shares"][k][0], float(k)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = list(rows[0]["shares"])
    print("\n(validation / volume / second scan)\n")
    print("| seed | " + " | ".join(f"a = {k}" for k in keys) + " | kept | validation's first |")
    print("|---|" + "---:|" * len(keys) + "---|---|")
    for r in rows:
        cells = " | ".join(" / ".join(f"{v:.4f}" for v in r["shares"][k]) for k in keys)
        print(f"| {r['seed']} | {cells} | {r['kept']:g} | {r['first']} |")
    mean = [" / ".join(f"{statistics.fmean(r['shares'][k][i] for r in rows):.4f}" for i in range(3)) for k in keys]
    print("| **mean** | " + " | ".join(mean) + " | | |")
    for what, pick in (("kept", lambda r: f"{r['kept']:g}"), ("validation's first", lambda r: r["first"])):
        got = [r["shares"][pick(r)] for r in rows if pick(r) in r["shares"]]
        if got:
            d1, d2 = statistics.fmean(g[1] for g in got), statistics.fmean(g[2] for g in got)
            print(f"{what}: volume {d1:.4f}, second scan {d2:.4f} (mean of {len(got)})")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
