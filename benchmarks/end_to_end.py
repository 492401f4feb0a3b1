"""End-to-end segmentation throughput (read, normalise, infer, merge, write) against the conv limit.

For the default model (``unet`` medium, 3 context slices, untrained: speed does not depend on
the weights) this script writes zarr volumes to disk and runs ``xrayseg predict`` on each in
a fresh process, as a user would, then prints per case: seconds, Mvox/s, the fraction of the
machine's limit reached and the process's own peak RSS (``VmHWM``).

The *limit* is measured in the same run (before and after the cases, the mean counts): the
sustained GFLOP/s of a 64->64 3x3 convolution in channels_last (see ``throughput.py``).
*Roofline fraction* = FLOP/pixel of the network (``torch.utils.flop_counter``) x voxels/s /
limit: 1.0 would be every voxel pushed once through the network at the speed of the
machine's best convolution, with reading, normalising, merging and writing for free.

On a shared machine wall-clock figures move with the other processes' load, so the same
fraction is also given in CPU time (*cpu fraction*): FLOPs per CPU-second of the prediction
process over FLOPs per CPU-second of the conv, which other processes disturb far less.

    python benchmarks/end_to_end.py                                  # both default volumes, fp32
    python benchmarks/end_to_end.py --cases f32 u8:128 u8:1024        # 500x501x501 float32; 1024^2 x 128 / 1024
    python benchmarks/end_to_end.py --cases f32 --extra "--tile 256"  # the former sliding windows, for comparison
    python benchmarks/end_to_end.py --cases f32 --profile 64           # also: where the time goes (cProfile)
    python benchmarks/end_to_end.py --cases --per-core                 # only: the network per CPU-second
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python benchmarks/end_to_end.py

Cases: ``f32`` is a 500x501x501 float32 volume (chunks 16 slices deep), ``u8:D`` a uint8
volume of D 1024x1024 slices (chunks 16 deep). Inputs are kept under ``--dir`` (default: a
temporary directory, removed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from large_volume import CHILD, write_input
from throughput import conv_limit, flops_per_pixel


def write_float_input(path: Path, shape: tuple[int, int, int], chunk: int) -> None:
    """A PXCT-like float32 volume (three phases + noise), written one chunk-deep slab at a time."""
    import zarr

    arr = zarr.create_array(store=str(path), shape=shape, chunks=(chunk, *shape[1:]), dtype="float32")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0 : shape[1], 0 : shape[2]].astype(np.float32) / 64
    for z0 in range(0, shape[0], chunk):
        z = np.arange(z0, min(z0 + chunk, shape[0]), dtype=np.float32)[:, None, None] / 64
        field = np.sin(7 * x + 3 * z) * np.cos(5 * y - 2 * z)
        phase = np.digitize(field, [-0.3, 0.3]).astype(np.float32)
        arr[z0 : z0 + len(z)] = phase + rng.normal(0, 0.3, field.shape).astype(np.float32)


def conv_cpu(seconds: float = 3.0) -> float:
    """GFLOP per CPU-second of the channels_last 64->64 3x3 conv of ``conv_limit`` (all threads counted)."""
    import torch

    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval().to(memory_format=torch.channels_last)
    x = torch.randn(8, 64, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        conv(x)
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            conv(x)
            n += 1
    return 2 * 64 * 64 * 9 * 8 * 128 * 128 * n / (time.process_time() - c0) / 1e9


def per_core(model, precision: str, repeats: int = 3) -> None:
    """Mvox per CPU-second of ``SlicePredictor.labels``, with and without the inference copy, per slice size.

    CPU time (``time.process_time``) of one thread is what other processes on a shared
    machine disturb least; rounds are interleaved and the best of ``repeats`` counts.
    """
    import torch

    from napari_xrayseg.core.predictor import SlicePredictor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    preds = {f: SlicePredictor(model, device="cpu", precision=precision, fast=f) for f in (True, False)}
    rng = np.random.default_rng(0)
    k = model.info.in_channels
    xs = {n: rng.random((1024 * 1024 // n**2, k, n, n), dtype=np.float32) for n in (1024, 512, 256)}
    best: dict = {}
    for r in range(repeats + 1):
        for f, pred in preds.items():
            for n, x in xs.items():
                c0 = time.process_time()
                pred.labels(x)
                if r:  # the first round warms up
                    best[f, n] = min(best.get((f, n), 1e9), time.process_time() - c0)
    torch.set_num_threads(threads)
    for (f, n), t in best.items():
        print(
            f"per core: {'inference copy' if f else 'plain network':14s} {n}x{n} slices: {2**20 / t / 1e6:.2f} Mvox/s"
        )


def variants(model, precision: str, rounds: int = 8) -> None:
    """The inference copy without and with in-place activations, and compiled: 4 x 512^2 slices, median of ``rounds``.

    One process, calls alternating, so a shared machine's load falls on all three alike.
    """
    import torch

    from napari_xrayseg.core import predictor as P

    real = P._inplace_activation
    P._inplace_activation = lambda adn: None
    try:
        plain = P._inference_copy(model.network.eval())
    finally:
        P._inplace_activation = real
    copy = P._inference_copy(model.network.eval())
    x = torch.randn(4, model.info.in_channels, 512, 512).contiguous(memory_format=torch.channels_last)
    nets = {"copy, PReLU": plain, "copy, in-place leaky ReLU": copy}
    with torch.inference_mode():
        t0 = time.perf_counter()
        nets["copy, in-place, torch.compile"] = comp = torch.compile(copy, dynamic=False)
        comp(x)
        print(f"variants: first compiled call (the compile) {time.perf_counter() - t0:.1f} s", flush=True)
        times: dict[str, list[float]] = {k: [] for k in nets}
        for _ in range(rounds):
            for k, net in nets.items():
                t0 = time.perf_counter()
                net(x)
                times[k].append(time.perf_counter() - t0)
    for k, v in times.items():
        med = sorted(v)[len(v) // 2]
        print(f"variants: {k:32s} median {med:.3f} s per call, {x.shape[0] * 512 * 512 / med / 1e6:.2f} Mvox/s")


def profile(inp: Path, model: Path, n: int, precision: str) -> None:
    """cProfile of ``segment`` on the first ``n`` slices of ``inp`` (in this process): the top functions."""
    import cProfile
    import pstats

    from napari_xrayseg import open_volume, segment
    from napari_xrayseg.core.device import tune_allocator

    tune_allocator()
    if not inp.exists():
        write_float_input(inp, (500, 501, 501), 16)
    image = open_volume(inp)[:n]
    segment(image[:4], model, device="cpu", precision=precision)  # warm-up
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(segment, image, model, device="cpu", precision=precision)
    total = time.perf_counter() - t0
    print(f"profile: {n} slices in {total:.2f} s ({image.size / total / 1e6:.2f} Mvox/s); share of the time:")
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:12]
    for (file, line, fn), (_, _, tottime, _, _) in top:
        print(f"  {tottime / total:6.1%}  {fn} ({Path(file).name}:{line})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=["f32", "u8:128", "u8:1024"])
    ap.add_argument("--size", default="medium")
    ap.add_argument("--context", type=int, default=3)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--extra", default="", help="more `xrayseg predict` options, e.g. '--tile 256'")
    ap.add_argument("--dir", default=None, help="keep inputs here (default: a temporary directory)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile", type=int, default=0, help="profile segmenting this many slices of the f32 volume")
    ap.add_argument("--per-core", action="store_true", help="the predictor per CPU-second: inference copy or not")
    ap.add_argument("--variants", action="store_true", help="in-place activations and torch.compile, in one process")
    a = ap.parse_args()

    import torch

    from napari_xrayseg.core.models import init_model, save_model

    torch.set_num_threads(a.threads)
    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="xrayseg-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    model = init_model("unet", size=a.size, classes=3, context=a.context)
    fpp = flops_per_pixel(model.network.eval(), a.context)
    path = save_model(model, work / "model.safetensors", overwrite=True)
    lim0, cpu0 = conv_limit("cpu")["channels_last"], conv_cpu()
    print(f"load: {os.getloadavg()}  conv limit (channels_last): {lim0:.0f} GFLOP/s", flush=True)
    print(f"unet/{a.size}, context {a.context}: {fpp:,.0f} FLOP/pixel; {a.precision}; {a.threads} threads", flush=True)
    rows = []
    try:
        for case in a.cases:
            if case == "f32":
                inp, shape = work / "f32.zarr", (500, 501, 501)
                if not inp.exists():
                    write_float_input(inp, shape, 16)
            else:
                d = int(case.split(":")[1])
                inp, shape = work / f"u8-{d}.zarr", (d, 1024, 1024)
                if not inp.exists():
                    write_input(inp, d, 1024, 16)
            out = work / "out.zarr"
            argv = ["predict", "--image", str(inp), "--model", str(path), "--out", str(out), "--overwrite"]
            argv += ["--device", "cpu", "--precision", a.precision, *shlex.split(a.extra)]
            res = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps({"argv": argv, "threads": a.threads})],
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                sys.exit(f"predict failed for {case}:\n{res.stderr[-2000:]}")
            r = json.loads(res.stdout.strip().splitlines()[-1])
            vox = int(np.prod(shape))
            rate = vox / r["seconds"]
            rows.append(
                {
                    "case": case,
                    "shape": shape,
                    "seconds": r["seconds"],
                    "mvox_s": rate / 1e6,
                    "gflop_s": rate * fpp / 1e9,
                    "peak_rss_mb": r["peak_rss_mb"],
                    "gflop_cpu_s": vox * fpp / r["cpu_seconds"] / 1e9,
                    "load": os.getloadavg()[0],
                }
            )
            print(
                f"{case:8s} {'x'.join(map(str, shape)):>14s}  {r['seconds']:6.1f} s  {rate / 1e6:6.2f} Mvox/s  "
                f"{rate * fpp / 1e9:6.0f} GFLOP/s  peak RSS {r['peak_rss_mb']:5.0f} MB",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
    if a.profile:
        profile(work / "f32.zarr", path, a.profile, a.precision)
    if a.per_core:
        per_core(model, a.precision)
    if a.variants:
        variants(model, a.precision)
    lim1, cpu1 = conv_limit("cpu")["channels_last"], conv_cpu()
    lim, cpu = (lim0 + lim1) / 2, (cpu0 + cpu1) / 2
    print(f"conv limit after: {lim1:.0f} GFLOP/s (mean {lim:.0f}); limit = {lim * 1e9 / fpp / 1e6:.2f} Mvox/s")
    print(f"conv per CPU-second: {cpu0:.0f} before, {cpu1:.0f} after")
    print("| case | shape | s | Mvox/s | roofline fraction | cpu fraction | peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        r["roofline"], r["cpu_fraction"] = r["gflop_s"] / lim, r["gflop_cpu_s"] / cpu
        print(
            f"| {r['case']} | {'x'.join(map(str, r['shape']))} | {r['seconds']:.1f} | {r['mvox_s']:.2f} | "
            f"{r['roofline']:.2f} | {r['cpu_fraction']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    print(f"load after: {os.getloadavg()}  (date {time.strftime('%Y-%m-%d %H:%M')})")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "limit_gflop_s": lim, "fpp": fpp, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
