"""Cost of dropout per training step: the default medium U-Net with and without it, alternating.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/dropout_step.py --dropout 0 0.2 --repeats 3 --steps 15
"""

from __future__ import annotations

import argparse
import time

import torch

from napari_xrayseg.core.models import init_model
from napari_xrayseg.core.training import _StepRNG, _SupervisedStep, make_loss


def main(argv: list[str] | None = None) -> dict[float, list[float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.2])
    ap.add_argument("--size", default="medium")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=15)
    args = ap.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.patch, args.patch, generator=g)
    y = torch.randint(0, 3, (args.batch, args.patch, args.patch), generator=g)
    cpu = torch.device("cpu")
    times: dict[float, list[float]] = {}
    for _ in range(args.repeats):  # alternate, so that load changes hit every setting alike
        for d in args.dropout:
            net = init_model("unet", size=args.size, context=3, dropout=d).network.train()
            step, rng = _SupervisedStep(net, make_loss(), 3e-3, cpu), _StepRNG(0, cpu)
            for _ in range(3):  # warm-up
                step(x, y)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                with rng.active():
                    step(x, y)
            times.setdefault(d, []).append((time.perf_counter() - t0) / args.steps)
    print(f"unet {args.size}, batch {args.batch} x 3 x {args.patch}^2, {torch.get_num_threads()} threads")
    for d, v in times.items():
        print(f"dropout {d}: " + " ".join(f"{1000 * s:.1f}" for s in v) + " ms per step")
    return times


if __name__ == "__main__":
    main()
