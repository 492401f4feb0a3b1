"""Seconds to preview one 512x512 slice: what the Annotate widget does when the user moves the slider.

Times :func:`napari_xrayseg.predict_slice` (read the slice and its context slices, normalise,
sliding-window inference, best class) for the default model (``unet`` ``medium``, 2.5D
context 3) on the CPU, with the model's default tile (256, 25 % overlap: 9 windows per
slice), with ``tile="slice"`` (one window over the slice, up to 1024 a side) and with
``tile="auto"`` (the whole slice within the memory budget, cut into halo'd tiles beyond it:
what the Annotate widget runs since session 42).
Budget (issue #15): at most 1 s per slice on 2 CPU cores. Prints the median and the
spread of ``--repeats`` calls after one warm-up call, and the CPU time per call divided by
the threads: wall-clock numbers are noisy on a machine shared with other jobs, CPU time much
less so.

    python benchmarks/preview.py
    python benchmarks/preview.py --side 1024 --repeats 5 --threads 2
    python benchmarks/preview.py --arch unet3d        # the 3D net (small, 15 context slices)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from napari_xrayseg import init_model, predict_slice
from napari_xrayseg.core.config import TrainConfig
from napari_xrayseg.core.models import default_context


def main() -> None:
    """Run the benchmark and print one line per variant."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=512, help="slice side in pixels (default: 512)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per variant (default: 7)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--arch", default="unet", help="architecture (default: unet; unet3d: the 3D net)")
    p.add_argument("--size", default=TrainConfig().size, help="network size (default: the training default)")
    p.add_argument("--context", type=int, default=None, help="context slices (default: the architecture's)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    context = a.context if a.context is not None else default_context(a.arch)
    size = a.size if a.arch == "unet" or a.size != TrainConfig().size else "small"  # unet3d's default: small
    model = init_model(a.arch, size=size, classes=3, context=context, seed=0)
    model.info.normalization.update(low=0.0, high=1.0)  # as after training: no bounds computed per call
    rng = np.random.default_rng(0)
    image = rng.random((16, a.side, a.side), dtype=np.float32)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"# {a.arch}/{size}, context {context}, {a.side}x{a.side} slices, CPU fp32, median of {a.repeats}")
    variants = (
        ("model tile 256, overlap 0.25", None),
        ("tile='slice' (one window <= 1024)", "slice"),
        ("tile='auto' (what the widget runs)", "auto"),
    )
    for label, tile in variants:
        predict_slice(image, model, 8, tile=tile, device="cpu")  # warm-up
        times, cpu = [], []
        for i in range(a.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            predict_slice(image, model, 4 + i % 8, tile=tile, device="cpu")
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        # CPU seconds / threads: the wall time an otherwise idle machine would take (less noisy under load)
        print(
            f"{label:32s} {statistics.median(times):6.3f} s per slice (min {min(times):.3f}, "
            f"max {max(times):.3f}); CPU {statistics.median(cpu):.3f} s = "
            f"{statistics.median(cpu) / torch.get_num_threads():.3f} s on {torch.get_num_threads()} idle cores"
        )


if __name__ == "__main__":
    main()
