"""Out-of-core inference: voxels/s and peak RSS for zarr or TIFF volumes of increasing depth.

Each depth is segmented in a fresh subprocess so its peak RSS (ru_maxrss) is its own.
The volume is written chunk by chunk (zarr) or page by page (a zlib-compressed, tiled
BigTIFF, which cannot be memory-mapped and is read through tifffile's zarr interface),
never held in RAM whole.

    python benchmarks/streaming.py                       # default: 256x256 slices, depths 16..256
    python benchmarks/streaming.py --yx 512 --depths 32 128 512 --size small
    python benchmarks/streaming.py --formats tiff --allocators glibc
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"

CHILD = r"""
import json, sys, time, torch
from napari_xrayseg import init_model, segment, open_volume
from napari_xrayseg.core.io import volume_chunks
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
model = init_model("unet", size=a["size"], classes=3, tile=a["tile"])
image = open_volume(a["image"])
t0 = time.perf_counter()
segment(image, model, out=a["out"], device="cpu", batch=a["batch"], overlap=a["overlap"])
dt = time.perf_counter() - t0
# VmHWM is this process's own peak; ru_maxrss would carry the parent's peak across exec on Linux.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"seconds": dt, "peak_rss_mb": int(hwm) / 1024}))
"""


def flops_per_pixel(size: str, tile: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_xrayseg import init_model

    net = init_model("unet", size=size, classes=3, tile=tile).network.eval()
    x = torch.zeros(1, 1, tile, tile)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(x)
    return fc.get_total_flops() / (tile * tile)


def make_volume(path: Path, depth: int, yx: int, chunk: int) -> None:
    import numpy as np
    import tifffile
    import zarr

    from napari_xrayseg.core.sample import make_phantom

    block, _ = make_phantom((chunk, yx, yx), seed=1, artefacts=False)
    if path.suffix == ".tif":  # compressed, tiled BigTIFF written one page at a time
        with tifffile.TiffWriter(path, bigtiff=True) as tif:
            for z in range(depth):
                page = np.roll(block, z - z % chunk, axis=2)[z % chunk]
                tif.write(page, compression="zlib", tile=(64, 64), photometric="minisblack")
        return
    arr = zarr.create_array(store=str(path), shape=(depth, yx, yx), chunks=(chunk, yx, yx), dtype="float32")
    for z in range(0, depth, chunk):
        n = min(chunk, depth - z)
        arr[z : z + n] = np.roll(block, z, axis=2)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depths", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--yx", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--size", default="small")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--formats", nargs="+", default=["zarr"], choices=["zarr", "tiff"])
    ap.add_argument(
        "--allocators",
        nargs="+",
        default=["glibc", "tcmalloc"],
        help="run each depth with these allocators (tcmalloc via LD_PRELOAD when installed)",
    )
    a = ap.parse_args()
    fpp = flops_per_pixel(a.size, a.tile)
    print(f"# python {' '.join(sys.argv)}")
    print(
        f"# model unet/{a.size}: {fpp:,.0f} FLOP/pixel (torch.utils.flop_counter, {a.tile}^2 tile); "
        f"{a.threads} threads, chunks {a.chunk} slices\n"
    )
    print("| format | allocator | depth | voxels | input MB | seconds | Mvox/s | GFLOP/s | peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, d in [(f, d) for f in a.formats for d in a.depths]:
            img = Path(tmp) / f"in{d}.{'tif' if fmt == 'tiff' else 'zarr'}"
            out = Path(tmp) / f"out{d}.zarr"
            make_volume(img, d, a.yx, a.chunk)
            args = {
                "image": str(img),
                "out": str(out),
                "size": a.size,
                "tile": a.tile,
                "batch": a.batch,
                "overlap": a.overlap,
                "threads": a.threads,
            }
            for alloc in a.allocators:
                env = dict(os.environ)
                if alloc == "tcmalloc":
                    if not Path(TCMALLOC).exists():
                        print("| | tcmalloc | (not installed: apt-get install libtcmalloc-minimal4) | | | | | | |")
                        continue
                    env["LD_PRELOAD"] = TCMALLOC
                res = subprocess.run(
                    [sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, check=True, env=env
                )
                r = json.loads(res.stdout.strip().splitlines()[-1])
                vox = d * a.yx * a.yx
                r.update(
                    format=fmt,
                    allocator=alloc,
                    depth=d,
                    voxels=vox,
                    input_mb=vox * 4 / 2**20,
                    mvox_s=vox / r["seconds"] / 1e6,
                    gflop_s=vox * fpp / r["seconds"] / 1e9,
                    flops_per_pixel=fpp,
                )
                rows.append(r)
                print(
                    f"| {fmt} | {alloc} | {d} | {vox:,} | {r['input_mb']:.0f} | {r['seconds']:.1f} | "
                    f"{r['mvox_s']:.2f} | {r['gflop_s']:.0f} | {r['peak_rss_mb']:.0f} |",
                    flush=True,
                )
                import shutil

                shutil.rmtree(out)
            if img.is_dir():
                shutil.rmtree(img)
            else:
                img.unlink()
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"\n# total {time.perf_counter() - t:.0f} s")
