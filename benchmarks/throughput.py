"""Inference throughput against the machine's own convolution limit, and what closes the gap.

In one run, on this machine:

1. the *limit*: sustained GFLOP/s of a 64->64 3x3 convolution (NCHW and channels_last,
   the better one counts), the kind of layer a U-Net spends its time in;
2. FLOPs per pixel of each model size (``torch.utils.flop_counter``; a multiply-add = 2);
3. for each variant, voxels/s of the real inference path (``SlicePredictor.labels``:
   sliding windows, Gaussian blending, best class) on 512x512 float32 slices, and
   the fraction of the limit it reaches: ``voxels/s x FLOP/pixel x window overhead / limit``.

Variants (each side by side, same slices, median of ``--repeats``): batch size, tile
size / overlap, torch threads, channels_last, bf16 autocast (only where the CPU has
native bf16), TorchScript (trace + freeze), ``torch.compile``, ONNX Runtime (if
installed: ``pip install onnxruntime onnx onnxscript``), and CUDA fp32 / fp16 when a
GPU is present. A second process measures the default path with tcmalloc preloaded.

    python benchmarks/throughput.py                      # medium, all variants (~5 min on 2 cores)
    python benchmarks/throughput.py --sizes tiny small medium large --quick
    python benchmarks/throughput.py --json results.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

from napari_xrayseg import init_model
from napari_xrayseg.core.inference import SlicePredictor
from napari_xrayseg.core.tiling import effective_tile, windows_per_slice

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def conv_limit(device: str, seconds: float = 3.0, dtype: torch.dtype | None = None) -> dict[str, float]:
    """Sustained GFLOP/s of a 64->64 3x3 conv on (8, 64, 128, 128), per memory format (under autocast to dtype)."""
    out = {}
    for fmt in ("nchw", "channels_last"):
        conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(device).eval()
        x = torch.randn(8, 64, 128, 128, device=device)
        if fmt == "channels_last":
            conv = conv.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        flops = 2 * 64 * 64 * 9 * 8 * 128 * 128
        ctx = torch.autocast(device.split(":")[0], dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            for _ in range(2):
                conv(x)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                conv(x)
                n += 1
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            out[fmt] = flops * n / (time.perf_counter() - t0) / 1e9
    return out


def flops_per_pixel(net: torch.nn.Module, in_ch: int, tile: int = 256) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, in_ch, tile, tile, device=next(net.parameters()).device)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        net(x)
    return fc.get_total_flops() / (tile * tile)


class _Wrapped(torch.nn.Module):
    """Presents a compiled/traced/ONNX callable as the predictor's network."""

    def __init__(self, fn: Any, ref: torch.nn.Module) -> None:
        super().__init__()
        self.fn, self.ref = fn, ref

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _onnx_runner(net: torch.nn.Module, in_ch: int, tile: int, threads: int) -> Any:
    import onnxruntime as ort

    path = os.path.join(tempfile.mkdtemp(), "net.onnx")
    x = torch.zeros(2, in_ch, tile, tile)
    torch.onnx.export(
        net,
        (x,),
        path,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
        dynamo=False,
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def run(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(sess.run(None, {"x": t.detach().cpu().numpy()})[0])

    return run


def measure(
    model: Any,
    slices: np.ndarray,
    *,
    device: str,
    tile: int,
    overlap: float,
    batch: int,
    repeats: int,
    net: torch.nn.Module | None = None,
    channels_last: bool = False,
    precision: str = "fp32",
) -> float:
    """Median voxels/s of SlicePredictor.labels over ``slices`` (after one warm-up call)."""
    pred = SlicePredictor(model, device=device, tile=tile, overlap=overlap, batch=batch, precision=precision)
    if net is not None:
        pred.net = net
    if channels_last:
        pred.net = pred.net.to(memory_format=torch.channels_last)
        inner = pred._forward
        pred._forward = lambda x: inner(x.contiguous(memory_format=torch.channels_last))  # type: ignore[method-assign]
    per = pred.slices_per_call(slices.shape[1:])
    pred.labels(slices[:per])  # warm-up (and the compile, for compiled variants)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in range(0, len(slices), per):
            pred.labels(slices[s : s + per])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return slices.size / statistics.median(times)


def child_row(
    size: str, n: int, threads: int, repeats: int, *, tcmalloc: bool = False, mallopt: bool = False
) -> float | None:
    """The default variant in a fresh process: with tcmalloc preloaded, or glibc tuned by mallopt."""
    if tcmalloc and not os.path.exists(TCMALLOC):
        return None
    args = [
        "--sizes",
        size,
        "--slices",
        str(n),
        "--threads",
        str(threads),
        "--repeats",
        str(repeats),
        "--child-default",
    ] + (["--child-mallopt"] if mallopt else [])
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if tcmalloc:
        env["LD_PRELOAD"] = TCMALLOC
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=True)
    return float(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["medium"])
    ap.add_argument("--slices", type=int, default=8, help="512x512 slices per measurement")
    ap.add_argument("--yx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="only the default variant per size")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (it takes a minute or two)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child-default", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-mallopt", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    slices = rng.random((a.slices, a.yx, a.yx), dtype=np.float32)
    if a.child_default:
        if a.child_mallopt:
            from napari_xrayseg.core.device import tune_allocator

            tune_allocator()
        m = init_model("unet", size=a.sizes[0], classes=3, tile=256)
        print(measure(m, slices, device="cpu", tile=256, overlap=0.25, batch=8, repeats=a.repeats, precision="fp32"))
        return

    cuda = torch.cuda.is_available()
    devices = ["cpu"] + (["cuda"] if cuda else [])
    limits = {d: conv_limit(d) for d in devices}
    for d, lim in limits.items():
        threads = f" ({a.threads} threads)" if d == "cpu" else ""
        print(
            f"[limit] {d}: 3x3 conv 64->64 {lim['nchw']:.0f} GFLOP/s NCHW, {lim['channels_last']:.0f} "
            f"channels_last{threads}"
        )
    cpu_flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    native_bf16 = "avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags
    if native_bf16:  # bf16 rows are compared with the bf16 limit, not the fp32 one
        limits["cpu-bf16"] = conv_limit("cpu", dtype=torch.bfloat16)
        print(
            f"[limit] cpu bf16: 3x3 conv 64->64 {limits['cpu-bf16']['nchw']:.0f} GFLOP/s NCHW, "
            f"{limits['cpu-bf16']['channels_last']:.0f} channels_last"
        )

    rows: list[dict[str, Any]] = []

    def row(
        size: str, variant: str, device: str, vps: float | None, fpp: float, tile: int, overlap: float, note: str = ""
    ) -> None:
        if vps is None:
            print(f"{size:7s} {variant:38s} skipped: {note}")
            rows.append({"size": size, "variant": variant, "device": device, "skipped": note})
            return
        roi = effective_tile((a.yx, a.yx), tile, 16)
        over = windows_per_slice((a.yx, a.yx), roi, overlap) * roi[0] * roi[1] / (a.yx * a.yx)
        lim = max(limits["cpu-bf16" if "bf16" in variant and device == "cpu" else device].values())
        net_gf = vps * fpp * over / 1e9
        r = {
            "size": size,
            "variant": variant,
            "device": device,
            "mvox_s": vps / 1e6,
            "window_overhead": over,
            "net_gflop_s": net_gf,
            "fraction_of_limit": net_gf / lim,
            "useful_fraction": vps * fpp / 1e9 / lim,
            "note": note,
        }
        rows.append(r)
        print(
            f"{size:7s} {variant:38s} {vps / 1e6:7.2f} Mvox/s  net {net_gf:6.1f} GFLOP/s  "
            f"{100 * r['fraction_of_limit']:5.1f}% of limit  (windows x{over:.2f}) {note}",
            flush=True,
        )

    for size in a.sizes:
        m = init_model("unet", size=size, classes=3, tile=256)
        fpp = flops_per_pixel(m.network, 1)
        print(f"\n== unet/{size}: {sum(p.numel() for p in m.network.parameters()):,} parameters, {fpp:,.0f} FLOP/pixel")
        base = {"device": "cpu", "tile": 256, "overlap": 0.25, "batch": 8, "repeats": a.repeats}
        row(size, "eager fp32, tile 256, batch 8 (1 context slice)", "cpu", measure(m, slices, **base), fpp, 256, 0.25)
        if a.quick:
            continue
        for b in (1, 4, 16):
            row(size, f"batch {b}", "cpu", measure(m, slices, **{**base, "batch": b}), fpp, 256, 0.25)
        for t, o in ((512, 0.25), (256, 0.0), (256, 0.5), (128, 0.25)):
            row(
                size,
                f"tile {t}, overlap {o}",
                "cpu",
                measure(m, slices, **{**base, "tile": t, "overlap": o}),
                fpp,
                t,
                o,
            )
        if a.threads > 1:
            torch.set_num_threads(1)
            row(size, "1 torch thread", "cpu", measure(m, slices, **base), fpp, 256, 0.25)
            torch.set_num_threads(a.threads)
        row(size, "channels_last", "cpu", measure(m, slices, channels_last=True, **base), fpp, 256, 0.25)
        if native_bf16:
            row(
                size,
                "bf16 autocast (precision='bf16')",
                "cpu",
                measure(m, slices, precision="bf16", **base),
                fpp,
                256,
                0.25,
                "CPU has native bf16",
            )
            row(
                size,
                "bf16, batch 4",
                "cpu",
                measure(m, slices, precision="bf16", **{**base, "batch": 4}),
                fpp,
                256,
                0.25,
            )
            row(
                size,
                "bf16 + channels_last",
                "cpu",
                measure(m, slices, precision="bf16", channels_last=True, **base),
                fpp,
                256,
                0.25,
            )
        else:
            row(size, "bf16 autocast", "cpu", None, fpp, 256, 0.25, "no avx512_bf16/amx_bf16 on this CPU")
        with torch.inference_mode():
            traced = torch.jit.freeze(torch.jit.trace(m.network.eval(), torch.zeros(8, 1, 256, 256)))
        row(
            size,
            "TorchScript (trace + freeze)",
            "cpu",
            measure(m, slices, net=_Wrapped(traced, m.network), **base),
            fpp,
            256,
            0.25,
        )
        if not a.no_compile:
            for cl in (False, True):
                t0 = time.perf_counter()
                comp = torch.compile(m.network.eval(), dynamic=False)
                net = comp.to(memory_format=torch.channels_last) if cl else comp
                vps = measure(m, slices, net=_Wrapped(net, m.network), channels_last=cl, **base)
                row(
                    size,
                    "torch.compile" + (" + channels_last" if cl else ""),
                    "cpu",
                    vps,
                    fpp,
                    256,
                    0.25,
                    f"(compile+warm-up {time.perf_counter() - t0:.0f} s incl. timing)",
                )
        try:
            run = _onnx_runner(m.network.eval(), 1, 256, a.threads)
            row(size, "ONNX Runtime", "cpu", measure(m, slices, net=_Wrapped(run, m.network), **base), fpp, 256, 0.25)
        except ImportError:
            row(size, "ONNX Runtime", "cpu", None, fpp, 256, 0.25, "pip install onnxruntime onnx onnxscript")
        row(
            size,
            "default again (order check: same as the first row?)",
            "cpu",
            measure(m, slices, **base),
            fpp,
            256,
            0.25,
        )
        row(
            size,
            "default, fresh process (glibc)",
            "cpu",
            child_row(size, a.slices, a.threads, a.repeats),
            fpp,
            256,
            0.25,
        )
        row(
            size,
            "glibc tuned by mallopt (fresh process)",
            "cpu",
            child_row(size, a.slices, a.threads, a.repeats, mallopt=True),
            fpp,
            256,
            0.25,
        )
        row(
            size,
            "tcmalloc (LD_PRELOAD, fresh process)",
            "cpu",
            child_row(size, a.slices, a.threads, a.repeats, tcmalloc=True),
            fpp,
            256,
            0.25,
            "" if os.path.exists(TCMALLOC) else "libtcmalloc-minimal4 not installed",
        )
        if cuda:
            for b in (8, 32):
                row(
                    size,
                    f"CUDA fp16 autocast, batch {b}",
                    "cuda",
                    measure(m, slices, precision="fp16", **{**base, "device": "cuda", "batch": b}),
                    fpp,
                    256,
                    0.25,
                )
            with contextlib.suppress(Exception):
                m32 = init_model("unet", size=size, classes=3, tile=256)
                pred_net = m32.network.to("cuda").eval()
                row(
                    size,
                    "CUDA fp32 (no autocast), batch 8",
                    "cuda",
                    measure(m32, slices, net=_Wrapped(pred_net, pred_net), **base | {"device": "cuda"}),
                    fpp,
                    256,
                    0.25,
                )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {"limits": limits, "threads": a.threads, "yx": a.yx, "slices": a.slices, "rows": rows}, f, indent=1
            )


if __name__ == "__main__":
    main()
