"""Training throughput: optimiser steps/s of the default training batch against the conv limit, fp32 and bf16.

In one run: the machine's conv limit (``throughput.conv_limit``, channels_last fp32), the
FLOPs of one optimiser step of the default model and batch (``unet`` medium, 3 context
slices, 8 patches of 128x128, Dice+CE loss, Adam; forward + backward counted by
``torch.utils.flop_counter``), then

- *step*: steps/s of that step alone on a fixed random batch (what the network costs);
- *train()*: steps/s of the real loop (sampling, augmentation, validation each epoch) for
  ``--minutes`` on the built-in sample, which uses the whole time budget.

*Fraction of the limit* = FLOP/step x steps/s / conv limit.

    python benchmarks/train_throughput.py                # 1 minute of train()
    python benchmarks/train_throughput.py --minutes 0.5 --steps 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from end_to_end import conv_cpu
from throughput import conv_limit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=20, help="timed steps of the bare step")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--arch", default="unet", choices=["unet", "unet3d"], help="unet: medium, context 3; unet3d: small, 15"
    )
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from torch.utils.flop_counter import FlopCounterMode

    from napari_xrayseg import make_phantom, train
    from napari_xrayseg.core.config import TrainConfig
    from napari_xrayseg.core.demo import annotate_slices
    from napari_xrayseg.core.device import cpu_has_bf16
    from napari_xrayseg.core.models import default_batch, default_context, init_model
    from napari_xrayseg.core.training import _SupervisedStep, make_loss

    cfg = TrainConfig()
    lim, lim_cpu = conv_limit("cpu")["channels_last"], conv_cpu()
    print(f"load {os.getloadavg()}; conv limit {lim:.0f} GFLOP/s (fp32); {a.threads} threads", flush=True)
    three_d = a.arch == "unet3d"
    context = default_context("unet3d") if three_d else cfg.context
    batch = default_batch(a.arch)
    model = init_model(a.arch, size=None if three_d else cfg.size, classes=3, context=context)
    net = model.network
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, context, cfg.patch, cfg.patch, generator=g)
    y = torch.randint(-1, 3, (batch, cfg.patch, cfg.patch), generator=g)  # class indices, -1 = not annotated
    precisions = ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]  # emulated bf16 is far slower: not offered
    for prec in precisions:
        step = _SupervisedStep(net, make_loss(cfg.loss, cfg.gamma), cfg.lr, torch.device("cpu"), precision=prec)
        step.train()
        step(x, y)  # warm-up
        with FlopCounterMode(display=False) as fc:
            step(x, y)
        fps = fc.get_total_flops()
        times = []
        c0 = time.process_time()
        for _ in range(a.steps):
            t0 = time.perf_counter()
            step(x, y)
            times.append(time.perf_counter() - t0)
        per_cpu = fps * a.steps / (time.process_time() - c0) / 1e9
        rate = 1 / statistics.median(times)
        print(
            f"step alone, {a.arch} {prec}: batch {batch}x{context}x{cfg.patch}x{cfg.patch}, {fps / 1e9:.1f} "
            f"GFLOP/step, {rate:.2f} steps/s, {fps * rate / 1e9:.0f} GFLOP/s = {fps * rate / 1e9 / lim:.2f} of the "
            f"fp32 limit; per CPU-second {per_cpu:.0f} GFLOP = {per_cpu / lim_cpu:.2f} of the conv's",
            flush=True,
        )
    image, truth = make_phantom((64, 256, 256), seed=0)
    ann, _ = annotate_slices(truth, 5)
    t0 = time.perf_counter()
    # the step measured above, train's precision, from random weights
    m = train(image, ann, arch=a.arch, init="random", minutes=a.minutes, device="cpu")
    dt = time.perf_counter() - t0
    steps = len(m.info.history) * cfg.steps_per_epoch
    r2 = steps / dt
    print(
        f"train() ({m.info.train['precision']}): {len(m.info.history)} epochs x {cfg.steps_per_epoch} steps "
        f"in {dt:.1f} s "
        f"(budget {a.minutes * 60:.0f} s): {r2:.2f} steps/s = {fps * r2 / 1e9 / lim:.2f} of the limit",
        flush=True,
    )
    print(f"conv limit after: {conv_limit('cpu')['channels_last']:.0f} GFLOP/s; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
