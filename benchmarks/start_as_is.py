"""Score pretrained starts as they are (no labels): mean Dice and interface error on unseen volumes.

How a new start is judged before the held-out protocol of ``benchmarks/hard.py`` (docs/accuracy.md,
sessions 17-27): each model segments the same synthetic volumes, none of which it trained on and
none a test seed of the protocol (hard 0, 6, 7, 8; second scans 100-108; 11, 12), and the table
gives every volume's mean Dice, each preset's mean and interface-voxel error (the share of voxels
with a 6-neighbour of another phase in the truth that are wrong), and on how many volumes each
model beats the first. ``benchmarks/pretrain.py`` trains on seeds 1-5 and ``1000 x stage + i``,
so the default volumes (seeds 300-315 and 400-402, those of sessions 26 and 27) are unseen by
every start it made.

    python benchmarks/start_as_is.py src/napari_xrayseg/weights/unet3d-medium-pretrained.safetensors new.safetensors
    python benchmarks/start_as_is.py new.safetensors --volumes hard:300-305 "default:11:feature_size=6,noise=1.6"
    python benchmarks/start_as_is.py new.safetensors --tta 4 --context 31 --json as_is.json

A volume is ``preset:seed``, ``preset:first-last`` or ``preset:seed:key=value,...`` (options of
``make_phantom``). About a second per volume and model on 2 CPU cores at 48x160x160 (N times that with
``--tta N``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

#: the fresh volumes of sessions 26 and 27: 12 hard, 5 second scans, a blurred and a default one
VOLUMES = (
    "hard:300-305",
    "hard:310-315",
    "hard-transfer:306-307",
    "hard-transfer:400-402",
    "hard-blur:308",
    "default:309",
)
#: test seeds of benchmarks/hard.py and accuracy.md: never chosen on (``--allow-test-seeds`` to score them)
TEST_SEEDS = {0, 6, 7, 8, 11, 12, *range(100, 109)}


def parse_volumes(specs: list[str]) -> list[tuple[str, int, dict[str, float]]]:
    """``preset:seed[:k=v,...]`` or ``preset:first-last[:k=v,...]`` -> [(preset, seed, options)]."""
    out = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[1]:
            raise SystemExit(f"volume {spec!r}: give preset:seed, preset:first-last or preset:seed:key=value,...")
        preset, seeds = parts[0], parts[1]
        opts = {}
        if len(parts) == 3 and parts[2]:
            for kv in parts[2].split(","):
                k, _, v = kv.partition("=")
                opts[k] = float(v)
        first, _, last = seeds.partition("-")
        out += [(preset, s, opts) for s in range(int(first), int(last or first) + 1)]
    return out


def name(preset: str, seed: int, opts: dict[str, float]) -> str:
    extra = ",".join(f"{k}={v:g}" for k, v in opts.items())
    return f"{preset}:{seed}" + (f":{extra}" if extra else "")


def main(argv: list[str] | None = None) -> None:
    from napari_xrayseg.cli import add_tta_argument

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model files (the first is the reference)")
    ap.add_argument("--volumes", nargs="+", default=list(VOLUMES))
    ap.add_argument("--shape", type=int, nargs=3, default=(48, 160, 160), metavar=("Z", "Y", "X"))
    add_tta_argument(ap)  # xrayseg predict's --tta [N]
    ap.add_argument("--context", type=int, default=None, help="score each model at this context (models.with_context)")
    ap.add_argument("--allow-test-seeds", action="store_true", help="also score the test seeds of the protocol")
    ap.add_argument("--json", default=None, help="write every score to this file")
    a = ap.parse_args(argv)
    from napari_xrayseg import evaluate, load_model, make_phantom, segment
    from napari_xrayseg.core.models import with_context

    vols = parse_volumes(a.volumes)
    tests = sorted({s for _, s, _ in vols if s in TEST_SEEDS})
    if tests and not a.allow_test_seeds:
        raise SystemExit(
            f"seeds {tests} are test seeds of the held-out protocol: choose on others (or --allow-test-seeds)"
        )
    models = []
    for path in a.models:
        m = load_model(path, device="cpu")
        models.append(with_context(m, a.context) if a.context else m)
    labels = [Path(p).stem for p in a.models]
    scores: dict[str, dict[str, list[float]]] = {lab: {} for lab in labels}
    t = time.perf_counter()
    for preset, seed, opts in vols:
        image, truth = make_phantom(tuple(a.shape), seed=seed, preset=preset, **opts)[:2]
        for lab, m in zip(labels, models):
            r = evaluate(np.asarray(segment(image, m, tta=a.tta)), truth, per_slice=False)
            scores[lab][name(preset, seed, opts)] = [
                float(r.mean_dice),
                float(r.by_interface_distance["0"]["error_rate"]),
            ]
    keys = [name(*v) for v in vols]
    head = "| volume | " + " | ".join(labels) + " |"
    print(head + "\n|---|" + "---:|" * len(labels))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{scores[lab][k][0]:.4f}" for lab in labels) + " |")
    ref = labels[0]
    group = {name(*v): name(v[0], -1, v[2]).replace(":-1", "") for v in vols}  # preset and options
    for preset in dict.fromkeys(group.values()):
        ks = [k for k in keys if group[k] == preset]
        mean = [statistics.fmean(scores[lab][k][0] for k in ks) for lab in labels]
        err = [statistics.fmean(scores[lab][k][1] for k in ks) for lab in labels]
        won = [sum(scores[lab][k][0] > scores[ref][k][0] for k in ks) for lab in labels]
        print(f"| **{preset}, mean of {len(ks)}** | " + " | ".join(f"**{v:.4f}**" for v in mean) + " |")
        print(f"| {preset}, interface error | " + " | ".join(f"{v:.4f}" for v in err) + " |")
        print(f"| {preset}, higher than {ref} | " + " | ".join(f"{w} / {len(ks)}" for w in won) + " |")
    took = time.perf_counter() - t
    print(f"\n{len(vols)} volumes x {len(labels)} models in {took:.0f} s (tta={a.tta}, context={a.context})")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "scores": scores}, indent=1))


if __name__ == "__main__":
    main()
