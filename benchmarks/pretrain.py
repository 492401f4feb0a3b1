"""Make the pretrained start shipped with the package (``train(..., init="pretrained")``).

A ``unet3d`` (context 15; ``--size``, small by default; the shipped start is medium since session 22)
is trained on the *full* truth of a family of
synthetic PXCT scans that spans what the presets vary: feature size (2.4 to 4 voxels), noise,
blur, projection angles, misalignment and a grey-level offset (``default``, ``hard``,
``hard-blur`` and ``hard-transfer``). Seed 0 of every preset is left out: it is the test volume
of ``benchmarks/hard.py`` and ``benchmarks/ceiling.py``. The mean normalised grey level of each
class over the family is stored in the model (``info.train["class_grey"]``): fine-tuning matches
a user's classes to the model's by it (``models.reclass``).

    python benchmarks/pretrain.py --epochs 120 --size medium --out M120.safetensors
    python benchmarks/pretrain.py --init M120.safetensors --lr 1e-3 --fresh 10 --epochs 80 --first-stage 34 \
        --resume --out src/napari_xrayseg/weights/unet3d-medium-pretrained.safetensors

(sessions 21-22, 65 + 31 minutes on the 2-core Xeon with AMX; docs/accuracy.md). The history below
is of the small start shipped before it.

On the 2-core development machine (bf16 autocast on AMX) 120 epochs took 39 minutes (session 14).
Session 17 (docs/accuracy.md) continued that start for 100 epochs on the same ten volumes
(``--init FILE``: no better on new volumes) and on eighteen (``--wide``: worse as it is), and
with new volumes every few epochs (``--fresh K``: no volume seen for more than K epochs, the
way a longer pretraining, on a GPU, should run). Session 18 continued it with ``--fresh 10 --epochs 80`` on the
original ten presets: better as it is on every unseen volume of their kinds (+0.0015), but not yet
shipped (0.011 lower on the second scan after the held-out protocol, one seed). Session 19 continued
that for 90 more epochs on 90 more new volumes (``--init fresh80.safetensors --lr 5e-4 --fresh 10
--epochs 90 --first-stage 9``, 95 minutes on one thread; docs/accuracy.md): that model is the shipped
start now (+0.0013 on the four hard seeds of the held-out protocol, the second scan level).

On a GPU the volumes, not the network, are the bottleneck (each stage makes ten on the CPU), and
a lent device runs 10 minutes a call: ``--workers 8`` makes them in 8 processes, the next stage's
while this one trains, and ``--resume`` writes ``--out`` after every stage and continues an
interrupted run with the same arguments on the same schedule::

    python benchmarks/pretrain.py --init src/napari_xrayseg/weights/unet3d-medium-pretrained.safetensors \
        --lr 5e-4 --fresh 10 --epochs 400 --first-stage 42 --device cuda --workers 8 --resume --out long.safetensors

Session 20 continued the shipped start twice more for 80 epochs (stages 18-25 and 26-33): level as
it is on the hard scans (docs/accuracy.md). This network has stopped learning from more volumes,
so the next GPU run should be a larger one from random weights, e.g. ``--size medium`` (or a wider
``--context``) with ``--lr 3e-3 --fresh 10 --epochs 400 --first-stage 34``, judged as it is on the
test seeds against the shipped start before the held-out protocol. Session 21 (CPU, bf16 on AMX)
widened the shipped start to medium with the same function and continued it 40 epochs: no better
(docs/accuracy.md), but ``--size medium --epochs 120`` from random weights (65 minutes there) scored
+0.0021 above ``--size small`` with the same command on the hard test seeds as it is: the next start
to continue with ``--fresh``. On that CPU about 12 % of a medium network's bf16 steps had non-finite
gradients and were skipped (the small network's: none): all its steps on 8-slice sub-volumes, which
train in fp32 since session 22 (docs/train.md). Session 22 continued that medium start for 80 epochs
on 80 new volumes (the second command above): +0.0029 above the small start as it is, +0.0015 under
the held-out protocol on all four hard seeds; shipped. Session 23 continued that twice (``--lr 5e-4
--first-stage 42``, then ``--lr 1e-3 --first-stage 50``, 80 epochs each): level as it is, so the
medium network has stopped learning from more volumes too. The uniform average of four points of
that run (``state_dict``s averaged) was +0.0007 as it is on nine fresh volumes and +0.0006 under
the held-out protocol: shipped. The next start should be trained differently (docs/accuracy.md).
Session 24 tried two ways from that start, each against the same continuation as a control
(``--lr 5e-4 --fresh 10 --epochs 60 --first-stage 60``): every slice of each sub-volume scored
(``--dense``) and interface voxels weighted in the loss (``--boundary-weight``); docs/accuracy.md.
Neither helped. Session 25 continued it the same way on deeper sub-volumes (``--context 23``, the
start's weights at another depth, ``models.with_context``) and wrote it at the old depth::

    python benchmarks/pretrain.py --init src/napari_xrayseg/weights/unet3d-medium-pretrained.safetensors \
        --context 23 --lr 5e-4 --fresh 10 --epochs 60 --first-stage 60 --device cpu --resume \
        --out X23.safetensors --out-context 15

(43 minutes alone in fp32 on a 2-core AMD EPYC, session 26): +0.0008 as it is on the fresh hard
volumes where the same run at context 15 lost 0.0005; shipped. Depth is the lever the volumes
were not. Session 27 went deeper on a lent H200 (``--device cuda --workers 4``, three runs side by
side in one 10-minute call, 40-50 s a stage each; docs/accuracy.md)::

    python benchmarks/pretrain.py --init src/napari_xrayseg/weights/unet3d-medium-pretrained.safetensors \
        --context 31 --lr 5e-4 --fresh 10 --epochs 150 --first-stage 66 --device cuda --workers 4 --resume \
        --out L31.safetensors --out-context 15

(cut by the call's limit and resumed: stages 1-14 there, the last one here on the CPU in 9 minutes):
+0.0015 as it is on twelve fresh hard volumes, where 60 epochs at 31 gave +0.0008 and 60 at 23
+0.0003; shipped. 40 more epochs at 31 (``--lr 3e-4 --first-stage 81``, on the CPU) were level
with it. Session 30 went deeper again, on the CPU (``models.MAX_CONTEXT`` is 63 since)::

    python benchmarks/pretrain.py --init src/napari_xrayseg/weights/unet3d-medium-pretrained.safetensors \
        --context 47 --lr 5e-4 --fresh 10 --epochs 60 --first-stage 85 --device cpu --resume \
        --out C47.safetensors --out-context 15

(137 minutes in fp32 on a 2-core AMD EPYC, sharing it with tests): as it is higher on 18 of 19 fresh
volumes, by little (hard 0.9190 against 0.9188, interface error 0.2067 against 0.2073); under the
held-out protocol + 0.0205 over the forest against + 0.0203; shipped in session 31. Depth keeps
paying, a little less each time. The next run is a new start, from random weights at 31 or deeper
or a larger network, with more runs side by side (the GPU was not what limited them), judged as it
is with ``benchmarks/start_as_is.py`` before the held-out protocol.

Where a stage's time goes when the network is not the cost (session 28: ``--size tiny --context 31
--fresh 2 --epochs 2 --steps 50 --device cpu`` under cProfile, 2-core AMD EPYC): drawing and augmenting
a batch of 8 sub-volumes takes 44 ms in the main process (35 ms of it MONAI's transforms), and
validating on the held-out rows of the stage's ten volumes 2.4 s an epoch (165 calls of the 3D
network). A stage of 10 epochs x 25 steps thus spends about 11 s sampling and 24 s validating
besides its 250 steps, which would account for most of the 40-50 s a stage took on the H200 (not
measured there). So on a GPU validate once a stage: ``--steps 250 --fresh 1`` (stages of one epoch
of 250 steps; ``--epochs`` then counts stages, e.g. ``--epochs 15`` for session 27's 150 epochs of
25 steps; the last stage then keeps its one epoch's weights instead of averaging its second half).
Check the stage time in the first call before starting the long runs. Session 28 also continued the
shipped start as M31 was with ``--loss ce`` (cross-entropy alone): level with it as it is
(docs/accuracy.md).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

#: (preset, seed) of the training volumes
FAMILY = [
    ("default", 1),
    ("default", 2),
    ("hard", 1),
    ("hard", 2),
    ("hard", 3),
    ("hard-blur", 4),
    ("hard-blur", 5),
    ("hard-transfer", 1),
    ("hard-transfer", 2),
    ("hard-transfer", 3),
]

#: more volumes for ``--wide`` (a continuation of the start, session 17): other seeds of the same
#: presets, a layered and a resin-infiltrated scan. Still none of the test seeds of
#: ``benchmarks/hard.py`` (hard 0, 6, 7, 8; their second scans 100-108) or the out-of-family
#: volumes of accuracy.md (seeds 11 and 12).
WIDE = [
    ("default", 3),
    ("hard", 4),
    ("hard", 5),
    ("hard-blur", 9),
    ("hard-transfer", 4),
    ("hard-transfer", 5),
    ("hard-layered", 2),
    ("hard-infiltrated", 1),
]


def class_grey(images: list[np.ndarray], truths: list[np.ndarray], classes: list[int]) -> list[float]:
    """Mean grey level of each class over all volumes, each normalised as the model normalises it."""
    from napari_xrayseg.core.normalize import apply_normalization, compute_normalization

    sums, counts = np.zeros(len(classes)), np.zeros(len(classes))
    for img, truth in zip(images, truths):
        x = apply_normalization(img, compute_normalization(img))
        for i, c in enumerate(classes):
            sums[i] += float(x[truth == c].sum())
            counts[i] += int((truth == c).sum())
    return [float(v) for v in sums / counts]


def _phantom(shape: tuple[int, ...], seed: int, preset: str) -> tuple[np.ndarray, np.ndarray]:
    from napari_xrayseg import make_phantom

    return make_phantom(shape, seed=seed, preset=preset)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(48, 160, 160), metavar=("Z", "Y", "X"))
    ap.add_argument("--epochs", type=int, default=120, help="epochs of 25 steps")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the cosine schedule")
    ap.add_argument("--init", default=None, help="continue from this model file (e.g. the shipped start)")
    ap.add_argument("--wide", action="store_true", help="train on FAMILY + WIDE (18 volumes)")
    ap.add_argument(
        "--fresh",
        type=int,
        default=0,
        metavar="K",
        help="make new volumes (the same presets, new seeds from 1000 on) every K epochs, so that no volume is "
        "seen for more than K epochs; the cosine schedule then runs over all stages (0: the same volumes throughout)",
    )
    ap.add_argument(
        "--first-stage",
        type=int,
        default=1,
        metavar="S",
        help="number the fresh stages from S (their seeds 1000 x stage + i), so that a continuation of a --fresh "
        "run sees new volumes (e.g. 9 after a run of 8 stages)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="W",
        help="make a stage's volumes in W processes, and the next stage's while this one trains (a GPU run: the "
        "CPU cores would otherwise sit idle while the GPU waits for volumes)",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="with --fresh: --out is written after every stage; continue an interrupted run from the stages it "
        "finished (same arguments), on the same schedule",
    )
    ap.add_argument("--steps", type=int, default=25, help="steps per epoch")
    ap.add_argument("--size", default=None, help="network size of a new start: small (the default), medium, large")
    ap.add_argument(
        "--context",
        type=int,
        default=None,
        help="slices a new start sees (the default: 15); with --init, the start's weights continue at this context "
        "(sub-volumes of K // 2 + 1 to K slices; session 25: 23)",
    )
    ap.add_argument(
        "--out-context",
        type=int,
        default=None,
        metavar="K",
        help="the context the finished model is written with (same weights; the inference halo is K // 2; "
        "session 25 trained at 23 and shipped at 15)",
    )
    ap.add_argument(
        "--dense",
        action="store_true",
        help="score every slice of each sub-volume against the volumes' full truth (training.DENSE_CONTEXT), not "
        "only its middle slice (session 24: worse as it is, docs/accuracy.md)",
    )
    ap.add_argument(
        "--dense-margin",
        type=int,
        default=0,
        metavar="M",
        help="with --dense, leave out the slices within M of a sub-volume's ends (training.DENSE_MARGIN)",
    )
    ap.add_argument(
        "--boundary-weight",
        type=float,
        default=1.0,
        help="cross-entropy weight of interface voxels (train's boundary_weight; 1 = off, as every shipped start)",
    )
    ap.add_argument(
        "--loss",
        default="dicece",
        choices=["dicece", "ce"],
        help="training loss (train's loss): soft Dice + cross-entropy (every shipped start) or cross-entropy alone",
    )
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    from napari_xrayseg import load_model, save_model, train
    from napari_xrayseg.core import training
    from napari_xrayseg.core.models import with_context

    if a.dense_margin and not a.dense:
        raise SystemExit("--dense-margin goes with --dense")
    training.DENSE_CONTEXT = a.dense
    training.DENSE_MARGIN = a.dense_margin

    t = time.perf_counter()
    family = FAMILY + (WIDE if a.wide else [])
    last = [time.perf_counter()]

    def report(p):  # an epoch's line a minute
        if "loss" in p.info and time.perf_counter() - last[0] > 60:
            last[0] = time.perf_counter()
            print(f"{time.perf_counter() - t:7.0f} s  {p.message}", flush=True)

    pool = ProcessPoolExecutor(a.workers) if a.workers > 1 else None

    def submit(stage: int) -> tuple[list, list]:
        # stage 0 of a plain run: the family's own seeds; fresh stages: seeds 1000 x stage + i, never a
        # test seed of benchmarks/hard.py (0, 6, 7, 8, 11, 12, 100-108)
        fam = family if stage == 0 else [(p, 1000 * stage + i) for i, (p, _) in enumerate(family)]
        args = [(tuple(a.shape), s, p) for p, s in fam]
        return [pool.submit(_phantom, *x) if pool else x for x in args], fam

    def volumes(pending: tuple[list, list]) -> tuple[list, list, list]:
        jobs, fam = pending
        pairs = [j.result() if pool else _phantom(*j) for j in jobs]
        return [q[0] for q in pairs], [q[1] for q in pairs], fam

    common = {"arch": "unet3d", "batch": a.batch, "device": a.device, "progress": report, "steps_per_epoch": a.steps}
    if a.boundary_weight != 1.0:
        common["boundary_weight"] = a.boundary_weight
    if a.loss != "dicece":
        common["loss"] = a.loss
    start = a.init
    if a.size and a.init:
        raise SystemExit("--size makes a new start: it does not go with --init")
    if a.context and a.init:  # the same weights at another depth (models.with_context)
        start = with_context(load_model(a.init, device="cpu"), a.context)
    elif a.size or a.context:  # a new start of another shape: from random weights
        common.update({k: v for k, v in (("size", a.size), ("context", a.context)) if v})
    if a.fresh <= 0:
        if a.resume:
            raise SystemExit("--resume needs --fresh: a run on the same volumes is written only at its end")
        images, truths, _ = volumes(submit(0))
        model = train(images, truths, init=start or "random", epochs=a.epochs, lr=a.lr, seed=0, **common)
    else:
        import math

        from napari_xrayseg.core.training import _lr_at

        model, used, stages = start or "random", [], math.ceil(a.epochs / a.fresh)
        keys = ("shape", "epochs", "batch", "lr", "init", "wide", "fresh", "first_stage", "size", "context", "steps")
        run = {k: getattr(a, k) for k in keys}
        if a.dense or a.boundary_weight != 1.0:  # a checkpoint of a run before these options resumes as before
            run.update(dense=a.dense, dense_margin=a.dense_margin, boundary_weight=a.boundary_weight)
        if a.loss != "dicece":
            run["loss"] = a.loss
        run["shape"], done = list(a.shape), 0
        if a.resume and Path(a.out).exists():
            model = load_model(a.out, device="cpu")
            was = model.info.train.get("pretrain_run")
            if was is None:
                raise SystemExit(f"{a.out} is a finished model, not a checkpoint: give another --out")
            if was["args"] != run:
                raise SystemExit(f"{a.out} is the checkpoint of another run (its arguments: {was['args']})")
            done, used = was["stages_done"], [tuple(f) for f in was["family"]]
            print(f"resuming after stage {done}/{stages} of {a.out}", flush=True)
        pending = submit(a.first_stage + done) if done < stages else None
        for k in range(done, stages):
            images, truths, fam = volumes(pending)
            if k + 1 < stages:
                pending = submit(a.first_stage + k + 1)  # made while this stage trains
            used += fam
            lr = _lr_at("cosine", a.lr, (k + 0.5) / stages, 10**9, 0)  # the cosine's value mid-stage
            final = k == stages - 1  # only the last stage averages its second half's weights
            model = train(
                images,
                truths,
                init=model,
                epochs=min(a.fresh, a.epochs - k * a.fresh),
                lr=lr,
                schedule="cosine" if final else "constant",
                average=0.5 if final else 0.0,
                seed=k,
                **common,
            )
            print(
                f"{time.perf_counter() - t:7.0f} s  stage {k + 1}/{stages} (lr {lr:.2g}): "
                f"validation Dice {model.info.train['val_dice']:.4f} on held-out rows of this stage's volumes",
                flush=True,
            )
            if a.resume and k + 1 < stages:  # a checkpoint, written atomically: a cut run loses one stage at most
                model.info.train["pretrain_run"] = {
                    "args": run,
                    "stages_done": k + 1,
                    "family": [list(f) for f in used],
                }
                save_model(model, a.out, overwrite=True)
        model.info.train.pop("pretrain_run", None)
        family = used
    if pool:
        pool.shutdown()
    model.info.train["class_grey"] = class_grey(images, truths, model.info.classes)  # the last volumes seen
    model.info.train["family"] = [list(f) for f in family]
    if a.out_context:
        model = with_context(model, a.out_context)
    save_model(model, a.out, overwrite=True)
    print(f"saved {a.out} after {time.perf_counter() - t:.0f} s; class grey {model.info.train['class_grey']}")


if __name__ == "__main__":
    main()
