"""Architecture benchmark: parameters, FLOPs per pixel and inference speed of every preset.

For each registered architecture and size preset (``napari_xrayseg.core.models``), an
untrained model with 1 input channel (context 1) and 3 classes is built and measured:

* **parameters**: trainable and buffer-free, ``sum(p.numel())``;
* **FLOPs per pixel**: :class:`torch.utils.flop_counter.FlopCounterMode` on one
  1x1x256x256 input, divided by 65536.  FlopCounterMode counts 2 FLOPs per
  multiply-add and only counts convolutions, transposed convolutions and matrix
  products (not normalisation, activations, pooling, interpolation or additions), which
  are nearly all of the arithmetic of these networks;
* **speed**: ``--batch`` (8) tiles of ``--tile``² (256²) through the network in eval mode
  under :func:`torch.inference_mode`, after ``--warmup`` untimed runs; the median of
  ``--repeats`` timed runs, as input megapixels per second, and the GFLOP/s that
  achieves (FLOPs per pixel x pixels per second).  This is the network alone: tiling,
  blending and I/O of ``segment`` are not included.

Usage::

    python benchmarks/architectures.py                    # all archs and sizes, CPU
    python benchmarks/architectures.py --arch unet basicunet --size tiny small --repeats 3
    python benchmarks/architectures.py --device cuda --json arch.json

Prints a markdown table headed by the exact command and the machine.  Timings on a
shared machine are noisy: compare rows from one run, on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Any


def flops_per_pixel(net: Any, in_channels: int, side: int = 256) -> float:
    """FLOPs (2 per multiply-add, convolutions and matmuls only) per input pixel."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, in_channels, side, side)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / (side * side)


def speed(
    net: Any, in_channels: int, *, batch: int, tile: int, warmup: int, repeats: int, device: str
) -> tuple[float, list[float]]:
    """Median seconds per forward pass of ``batch`` tiles, and all timings."""
    import torch

    x = torch.rand(batch, in_channels, tile, tile, generator=torch.Generator().manual_seed(0)).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            net(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def table(rows: list[dict[str, Any]]) -> str:
    head = ["arch", "size", "parameters", "stride", "FLOPs / pixel", "Mpix/s", "GFLOP/s", "s / batch (runs)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        runs = ", ".join(f"{t:.2f}" for t in r["times_s"])
        size = f"{r['size']} (default)" if r["default"] else r["size"]
        lines.append(
            f"| {r['arch']} | {size} | {r['parameters']:,} | {r['stride']} | "
            f"{r['flops_per_pixel'] / 1e3:,.1f} k | {r['mpix_s']:.2f} | {r['gflop_s']:.1f} | "
            f"{r['median_s']:.3f} ({runs}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from napari_xrayseg.core.models import architectures

    archs = architectures()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", nargs="+", default=list(archs), choices=list(archs), help="architectures (default: all)")
    ap.add_argument("--size", nargs="+", default=None, help="size presets (default: all of each arch)")
    ap.add_argument("--batch", type=int, default=8, help="tiles per forward pass (default: 8)")
    ap.add_argument("--tile", type=int, default=256, help="tile side (default: 256)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (default: 2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs, the median is reported (default: 5)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON here")
    args = ap.parse_args(argv)

    import monai
    import torch

    from napari_xrayseg.core.models import default_size, init_model

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/architectures.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    rows = []
    for arch in args.arch:
        for size in archs[arch]:
            if args.size and size not in args.size:
                continue
            m = init_model(arch, size=size, classes=3, context=1, tile=args.tile)
            net = m.network.eval()
            fpp = flops_per_pixel(net, 1)
            net = net.to(args.device)
            med, times = speed(
                net, 1, batch=args.batch, tile=args.tile, warmup=args.warmup, repeats=args.repeats, device=args.device
            )
            px_s = args.batch * args.tile**2 / med
            rows.append(
                {
                    "arch": arch,
                    "size": size,
                    "default": size == default_size(arch),
                    "parameters": sum(p.numel() for p in net.parameters()),
                    "stride": m.info.stride,
                    "flops_per_pixel": fpp,
                    "median_s": med,
                    "times_s": times,
                    "mpix_s": px_s / 1e6,
                    "gflop_s": fpp * px_s / 1e9,
                }
            )
            print(f"{arch} {size}: {rows[-1]['mpix_s']:.2f} Mpix/s", file=sys.stderr, flush=True)
    device = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    result = {
        "command": command,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "platform": platform.platform(),
        "batch": args.batch,
        "tile": args.tile,
        "rows": rows,
    }
    print(
        f"`{command}`\n\n{args.device}: {device}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"MONAI {monai.__version__}; batch {args.batch} x 1 x {args.tile} x {args.tile}, median of "
        f"{args.repeats} runs after {args.warmup} warm-up\n"
    )
    print(table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
