"""The 3D network on the CPU with oneDNN's convolution for every layer, against torch's own choice.

torch 2.13 runs its native ("slow") 3D convolution instead of oneDNN's wherever batch x
channels x depth x height is at most 20480, a rule written for 2D inputs (where the product
takes in the width). Inference copies of ``unet3d`` now run oneDNN's for every ``Conv3d``
(``predictor._OneDnnConv3d``). This prints, in one run, on the same inputs:

1. each convolution shape of a one-item ``unet3d`` ``small`` pass over 16 x 512² (what the
   Annotate widget's preview runs) under torch's choice and under oneDNN's;
2. the preview of a 512² slice (``predict_slice``, ``tile="auto"``) and ``segment`` of a
   volume, both ways (torch's choice: the inference copy's convolutions put back to
   ``torch.nn.Conv3d``'s own routine), with the voxels whose labels differ;
3. the machine's limit in the same run (``throughput.conv_limit``: a channels-last 64->64 3x3
   convolution) and the preview's net GFLOP/s as a share of it (FLOPs of the preview's own pass,
   by ``torch.utils.flop_counter``).

    python benchmarks/onednn_conv3d.py
    python benchmarks/onednn_conv3d.py --threads 1 --depth 32 --side 256
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from napari_xrayseg import init_model, predict_slice, segment
from napari_xrayseg.core import predictor


def _seconds(f: Callable[[], object], repeats: int) -> float:
    f()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextlib.contextmanager
def _torchs_choice() -> Iterator[None]:
    """Inference copies convolve as ``torch.nn.Conv3d`` does (the code before the change)."""
    fast = predictor._OneDnnConv3d._conv_forward
    predictor._OneDnnConv3d._conv_forward = torch.nn.Conv3d._conv_forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        predictor._OneDnnConv3d._conv_forward = fast  # type: ignore[method-assign]


def main() -> None:
    """Run the benchmark and print its tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per variant (default: 3)")
    p.add_argument("--side", type=int, default=512, help="slice side (default: 512)")
    p.add_argument("--depth", type=int, default=48, help="depth of the segmented volume (default: 48)")
    p.add_argument("--size", default="small", help="unet3d size (default: small, the 3D default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(
        f"# {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}; median of {a.repeats}"
    )
    print("\n## convolutions of a one-item pass (16 x 512², unet3d small): torch's choice vs oneDNN (ms)")
    shapes = [
        ((1, 1, 16, 512, 512), (16, 1, 3, 3, 3), 2),
        ((1, 32, 4, 128, 128), (32, 32, 3, 3, 3), 1),
        ((1, 32, 4, 128, 128), (64, 32, 3, 3, 3), 2),
        ((1, 64, 2, 64, 64), (64, 64, 3, 3, 3), 1),
        ((1, 128, 2, 64, 64), (128, 128, 3, 3, 3), 1),
    ]
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for xs, ws, s in shapes:
            x, w = torch.rand(xs, generator=gen), torch.rand(ws, generator=gen) - 0.5
            t_torch = _seconds(lambda x=x, w=w, s=s: torch.nn.functional.conv3d(x, w, stride=s, padding=1), a.repeats)
            t_onednn = _seconds(
                lambda x=x, w=w, s=s: torch.ops.aten.mkldnn_convolution(x, w, None, [1] * 3, [s] * 3, [1] * 3, 1),
                a.repeats,
            )
            print(
                f"{str(xs):22s} -> {ws[0]:3d} stride {s}: {t_torch * 1e3:7.1f} {t_onednn * 1e3:7.1f}  "
                f"x{t_torch / t_onednn:.1f}"
            )

    model = init_model("unet3d", size=a.size, classes=3, seed=0)
    model.info.normalization.update(low=0.0, high=1.0)  # as after training
    rng = np.random.default_rng(0)
    image = rng.random((a.depth, a.side, a.side), dtype=np.float32)
    print(f"\n## unet3d {a.size}, {a.side}² slices: seconds (torch's choice, oneDNN, ratio)")
    runs = {
        "preview of one slice (tile='auto')": lambda: predict_slice(image, model, a.depth // 2, device="cpu"),
        f"segment {a.depth} x {a.side}²": lambda: segment(image, model, device="cpu"),
    }
    seconds = {}
    for label, f in runs.items():
        with _torchs_choice():
            before = _seconds(f, a.repeats)
            old = np.asarray(f())
        after = _seconds(f, a.repeats)
        new = np.asarray(f())
        seconds[label] = (before, after)
        print(
            f"{label:38s} {before:7.3f} {after:7.3f}  x{before / after:.2f}; "
            f"labels differ in {int((old != new).sum())} of {old.size} voxels"
        )
    from throughput import conv_limit  # benchmarks/throughput.py, beside this script
    from torch.utils.flop_counter import FlopCounterMode

    limit = max(conv_limit("cpu").values())
    # the preview's own pass, as timed above; counted with torch's routine (the counter has no formula for
    # oneDNN's op, which it would count as 0)
    with _torchs_choice(), FlopCounterMode(display=False) as fc:
        runs["preview of one slice (tile='auto')"]()
    gflop = fc.get_total_flops() / 1e9
    before, after = seconds["preview of one slice (tile='auto')"]
    print(
        f"\n## against the limit: {limit:.0f} GFLOP/s (channels-last 3x3 conv 64->64, this run); a preview is "
        f"{gflop:.1f} GFLOP\npreview: torch's choice {gflop / before:.0f} GFLOP/s = "
        f"{100 * gflop / before / limit:.0f} % of the limit; oneDNN {gflop / after:.0f} GFLOP/s = "
        f"{100 * gflop / after / limit:.0f} %"
    )


if __name__ == "__main__":
    main()
