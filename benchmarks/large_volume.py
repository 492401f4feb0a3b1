"""Larger than RAM: segment 1024-slice uint8 zarr volumes of 1024x1024 slices, peak RSS per depth.

Writes uint8 zarr volumes of shape (D, 1024, 1024) for each depth D (a 1024^3 volume is
1 GiB), slab by slab so the generator never holds a volume in RAM, then runs
``xrayseg predict`` on each in a fresh process and prints seconds, Mvox/s and the
process's own peak RSS (``VmHWM``). Peak RSS should not grow with the depth: it is set
by the slab, the tile batch and the model.

    python benchmarks/large_volume.py                                  # depths 256 512 1024, unet/tiny
    python benchmarks/large_volume.py --depths 64 128 --yx 512 --size small
    python benchmarks/large_volume.py --depths 48 --yx 1024 2048 --model start --tile auto   # the default 3D net
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python benchmarks/large_volume.py

The inputs are kept under ``--dir`` (default: a temporary directory, removed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time
a = json.loads(sys.argv[1])
import torch
torch.set_num_threads(a["threads"])
from napari_xrayseg.cli import main
t0, c0 = time.perf_counter(), time.process_time()
rc = main(a["argv"])
dt, cpu = time.perf_counter() - t0, time.process_time() - c0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"rc": rc, "seconds": dt, "cpu_seconds": cpu, "peak_rss_mb": int(hwm) / 1024}))
"""


def write_input(path: Path, depth: int, yx: int, chunk: int) -> None:
    """A PXCT-like uint8 volume (blobs + noise), written one chunk-deep slab at a time."""
    import zarr

    arr = zarr.create_array(
        store=str(path), shape=(depth, yx, yx), chunks=(chunk, yx, yx), dtype="uint8", compressors=None
    )  # raw: noisy CT does not compress (SETUP.md)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:yx, 0:yx].astype(np.float32) / yx * 2 * np.pi
    for z0 in range(0, depth, chunk):
        z = np.arange(z0, min(z0 + chunk, depth), dtype=np.float32)[:, None, None] / yx * 2 * np.pi
        field = np.sin(7 * x + 3 * z) * np.cos(5 * y - 2 * z) + np.sin(11 * (x + y) + 5 * z)
        slab = 128 + 50 * field + rng.normal(0, 20, field.shape).astype(np.float32)
        arr[z0 : z0 + len(z)] = np.clip(slab, 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depths", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--yx", type=int, nargs="+", default=[1024], help="slice sides (square slices)")
    ap.add_argument("--chunk", type=int, default=16, help="input chunk depth (= slab depth)")
    ap.add_argument("--size", default="tiny", help="unet size (default: tiny, so 1 GiB fits a benchmark budget)")
    ap.add_argument(
        "--model", default=None, help="a model file instead, or 'start': the shipped 3D start (the default network)"
    )
    ap.add_argument("--tile", default="512", help="a tile side, or 'auto' (predict's default)")
    ap.add_argument("--overlap", type=float, default=0.125)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dir", default=None, help="keep inputs/outputs here (default: a temporary directory)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    from napari_xrayseg.core.models import init_model, save_model

    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="xrayseg-large-"))
    work.mkdir(parents=True, exist_ok=True)
    if a.model == "start":
        from napari_xrayseg.core.models import pretrained_path

        model = pretrained_path()
    elif a.model:
        model = Path(a.model)
    else:
        model = save_model(
            init_model("unet", size=a.size, classes=3, tile=int(a.tile) if a.tile != "auto" else 256),
            work / "model.safetensors",
            overwrite=True,
        )
    rows = []
    try:
        for d, yx in [(d, yx) for yx in a.yx for d in a.depths]:
            inp, out = work / f"in-{d}-{yx}.zarr", work / f"out-{d}-{yx}.zarr"
            t0 = time.perf_counter()
            if not inp.exists():
                write_input(inp, d, yx, a.chunk)
            gen = time.perf_counter() - t0
            argv = [
                "predict",
                "--image",
                str(inp),
                "--model",
                str(model),
                "--out",
                str(out),
                "--overwrite",
                "--device",
                "cpu",
                "--tile",
                str(a.tile),
                "--precision",
                a.precision,
            ]
            if a.tile != "auto":  # predict's defaults otherwise
                argv += ["--overlap", str(a.overlap), "--batch", str(a.batch)]
            res = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps({"argv": argv, "threads": a.threads})],
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                sys.exit(f"predict failed for depth {d}:\n{res.stderr[-2000:]}")
            r = json.loads(res.stdout.strip().splitlines()[-1])
            vox = d * yx * yx
            row = {
                "depth": d,
                "yx": yx,
                "voxels": vox,
                "input_mb": vox / 2**20,
                "seconds": r["seconds"],
                "mvox_s": vox / r["seconds"] / 1e6,
                "peak_rss_mb": r["peak_rss_mb"],
                "generate_s": gen,
                "tcmalloc": "tcmalloc" in os.environ.get("LD_PRELOAD", ""),
            }
            rows.append(row)
            print(
                f"depth {d:5d}  slices {yx}^2  input {row['input_mb']:7.0f} MB  {r['seconds']:7.1f} s  "
                f"{row['mvox_s']:6.2f} Mvox/s  peak RSS {r['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)
            if not a.dir:
                shutil.rmtree(inp, ignore_errors=True)
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
