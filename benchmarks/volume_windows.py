"""How a 3D network (``unet3d``) is laid over a volume: speed, peak memory and agreement of each layout.

A 3D network recomputes, in every window, the part of the window it shares with its
neighbours (sliding-window overlap in the plane) and the context slices around the slices
it keeps (the halo along the slicing axis). ``tile="auto"`` picks the layout that puts the
fewest voxels through the network within the memory budget (``SlicePredictor.volume_layout``).
This script segments one volume with each layout, each in a fresh process (so that peak RSS
is the layout's), and prints Mvox/s, peak RSS, the useful GFLOP/s (voxels kept per second x
the network's FLOPs per voxel, counted by ``torch.utils.flop_counter``) as a share of the
machine's limit measured in the same run (a channels_last 64->64 3x3 convolution,
``benchmarks/throughput.py``; before and after the layouts, the mean counts), and the share of
voxels whose label differs from the default layout's (and mean Dice against the truth, with
``--model`` and ``--preset``):

* ``windows-256``: 256² windows with 25 % overlap over whole slabs (what ``tile="auto"`` did
  before; the same as ``tile=256``);
* ``auto-768MiB``: ``tile="auto"`` within the 2D networks' CPU budget (768 MiB);
* ``auto``: ``tile="auto"`` within :data:`~napari_xrayseg.core.device.CPU_VOLUME_BUDGET`;
* ``2.5D``: the default 2.5D network (``unet``/medium, context 3), for reference.

    python benchmarks/volume_windows.py                            # untrained nets, random volume
    python benchmarks/volume_windows.py --preset hard --model m.safetensors   # a trained unet3d

fp32 on CPU, the threads torch is given (``OMP_NUM_THREADS``). Compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

LAYOUTS = ("windows-256", "auto-768MiB", "auto", "2.5D")


def one(a: argparse.Namespace) -> None:
    """Run one layout in this process; print a JSON line."""
    import numpy as np
    import torch

    from napari_xrayseg import init_model, load_model, segment
    from napari_xrayseg.core import predictor

    if a.layout == "auto-768MiB":
        predictor.CPU_VOLUME_BUDGET = 768 * 2**20
    image = np.load(a.image)
    if a.layout == "2.5D":
        model = init_model("unet", size="medium", classes=3, context=3)
    elif a.model:
        model = load_model(a.model)
    else:
        model = init_model("unet3d", size="small", classes=3, context=15)
    tile = 256 if a.layout == "windows-256" else "auto"
    kw = {"device": "cpu", "precision": "fp32", "tile": tile}
    segment(image[: min(len(image), 24)], model, **kw)  # warm-up
    t0 = time.perf_counter()
    labels = segment(image, model, **kw)
    dt = time.perf_counter() - t0
    np.save(a.out, labels)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"layout": a.layout, "seconds": dt, "mvox_s": image.size / dt / 1e6, "rss": rss,
                      "flops_per_voxel": _flops_per_voxel(model), "threads": torch.get_num_threads()}))  # fmt: skip


def _flops_per_voxel(model: Any) -> float:
    """FLOPs (a multiply-add is 2) per output voxel: a 3D net's volume pass, a 2D net's slice pass."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = model.network.eval()
    k = model.info.in_channels
    volumetric = bool(getattr(net, "volumetric", False))
    x = torch.zeros((1, 1, 16, 64, 64) if volumetric else (1, k, 64, 64))
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        net.forward_volume(x) if volumetric else net(x)
    return fc.get_total_flops() / (x.numel() if volumetric else x[0, 0].numel())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 512, 512])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", help="a make_phantom preset (else a random volume, and no Dice)")
    ap.add_argument("--model", help="a trained unet3d model file (else an untrained one)")
    ap.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    ap.add_argument("--layout", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.layout:
        one(a)
        return
    import numpy as np

    print("# python benchmarks/volume_windows.py " + shlex.join(sys.argv[1:]))
    print(f"# {platform.machine()}, {os.cpu_count()} cores, volume {'x'.join(map(str, a.shape))}, fp32 on CPU")
    from throughput import conv_limit

    limits = [conv_limit("cpu")["channels_last"]]
    truth = None
    if a.preset:
        from napari_xrayseg import make_phantom

        image, truth = make_phantom(tuple(a.shape), seed=a.seed, preset=a.preset)
    else:
        image = np.random.default_rng(a.seed).random(tuple(a.shape), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "image.npy"), image)
        rows = []
        for layout in a.layouts:
            out = os.path.join(tmp, f"{layout}.npy")
            cmd = [sys.executable, __file__, "--layout", layout, "--out", out]
            cmd += ["--image", os.path.join(tmp, "image.npy")]
            cmd += ["--model", a.model] if a.model else []
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append((json.loads(res.stdout.strip().splitlines()[-1]), out))
        limits.append(conv_limit("cpu")["channels_last"])
        limit = sum(limits) / len(limits)
        print(f"# limit: channels_last 3x3 conv 64->64, {limits[0]:.0f} / {limits[1]:.0f} GFLOP/s before / after")
        print("| layout | Mvox/s | seconds | peak RSS | useful GFLOP/s | of the limit | labels differing from `auto` "
              "| mean Dice |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        ref = np.load(next(o for r, o in rows if r["layout"] == "auto")) if "auto" in a.layouts else None
        for r, out in rows:
            lab = np.load(out)
            diff = f"{100 * float((lab != ref).mean()):.3f} %" if ref is not None and r["layout"] != "2.5D" else ""
            dice = ""
            if truth is not None and a.model and r["layout"] != "2.5D":
                from napari_xrayseg import evaluate

                dice = f"{evaluate(lab, truth).mean_dice:.4f}"
            useful = r["mvox_s"] * r["flops_per_voxel"] / 1e3
            print(
                f"| {r['layout']} | {r['mvox_s']:.2f} | {r['seconds']:.1f} | {r['rss'] / 2**30:.2f} GiB "
                f"| {useful:.0f} | {100 * useful / limit:.0f} % | {diff} | {dice} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
