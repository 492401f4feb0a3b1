"""The GPU path, proved on a CUDA machine: agreement with CPU, end-to-end speed, one training minute.

1. trains the default model (``unet`` medium, 3 context slices) for ``--minutes`` on the GPU
   on 5 annotated slices of the built-in sample, and reports optimiser steps/s;
2. segments the sample on the GPU (``precision="auto"``: fp16 autocast) and on the CPU
   (fp32) and checks that at least 99.9 % of the voxels agree;
3. writes a 1024^3 uint8 zarr (chunks 16 slices deep) and segments it end to end (read,
   normalise, infer, merge, write) on the GPU, printing seconds, Mvox/s and peak GPU memory
   (``torch.cuda.max_memory_allocated``). Target on one H100/H200-class GPU: <= 10 s.

    python benchmarks/gpu.py                       # all three (needs CUDA)
    python benchmarks/gpu.py --depth 256 --minutes 0.5

On a machine without CUDA it exits at once with a message saying so (exit code 2).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=1024, help="slices of the 1024x1024 uint8 volume (default 1024)")
    ap.add_argument("--minutes", type=float, default=1.0, help="training time (default 1)")
    ap.add_argument("--dir", default=None, help="keep the volume and outputs here (default: a temporary directory)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(
            f"benchmarks/gpu.py needs a CUDA GPU, and torch {torch.__version__} sees none here "
            "(a CPU build, or no NVIDIA driver): run it on a machine with an NVIDIA GPU "
            "(scripts/setup.sh installs a CUDA torch there); CPU figures: benchmarks/end_to_end.py",
            file=sys.stderr,
        )
        return 2

    from large_volume import write_input

    from napari_xrayseg import make_phantom, segment, train
    from napari_xrayseg.core.demo import annotate_slices

    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    print(f"GPU: {res['gpu']}  torch {res['torch']}", flush=True)
    image, truth = make_phantom((64, 256, 256), seed=0)
    ann, _ = annotate_slices(truth, 5)

    t0 = time.perf_counter()
    model = train(image, ann, arch="unet", minutes=a.minutes, device="cuda")  # the 2.5D net of its other rows
    dt = time.perf_counter() - t0
    steps = len(model.info.history) * model.info.train.get("steps_per_epoch", 25)
    res["train"] = {"seconds": dt, "epochs": len(model.info.history), "steps_per_s": steps / dt}
    print(f"training: {len(model.info.history)} epochs, {steps / dt:.1f} steps/s in {dt:.0f} s", flush=True)

    gpu = segment(image, model, device="cuda")
    cpu = segment(image, model, device="cpu", precision="fp32")
    agree = float(np.mean(gpu == cpu))
    res["agreement"] = agree
    print(f"GPU (auto precision) vs CPU (fp32): {agree:.4%} of voxels agree (need >= 99.9 %)", flush=True)

    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="xrayseg-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        inp, out = work / f"u8-{a.depth}.zarr", work / "out.zarr"
        if not inp.exists():
            write_input(inp, a.depth, 1024, 16)
        from napari_xrayseg import open_volume

        segment(open_volume(inp)[:16], model, device="cuda")  # warm-up: CUDA context, cuDNN plans
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        segment(open_volume(inp), model, device="cuda", out=out, overwrite=True)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        vox = a.depth * 1024 * 1024
        res["volume"] = {
            "shape": [a.depth, 1024, 1024],
            "seconds": dt,
            "mvox_s": vox / dt / 1e6,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
        }
        print(
            f"{a.depth}x1024x1024 uint8 zarr end to end: {dt:.1f} s, {vox / dt / 1e6:.1f} Mvox/s, "
            f"peak GPU memory {res['volume']['peak_gpu_mb']:.0f} MB",
            flush=True,
        )
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0 if agree >= 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())
