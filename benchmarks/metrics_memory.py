"""Out-of-core metrics: seconds and peak RSS of ``evaluate`` on zarr volumes of growing size.

A uint8 truth/prediction pair is written to zarr chunk by chunk (never whole in RAM):
truth is a three-phase microstructure-like pattern (classes 1..3, optionally with
unannotated slices), the prediction is the truth with ~5 % of voxels given another
label.  Data are written and each size is evaluated in fresh subprocesses of a parent
that never imports numpy: on Linux ``ru_maxrss`` carries the spawning process's peak
across ``exec``, so a heavy parent would inflate the child's number.  "RSS after
imports" is the evaluating process before ``evaluate`` ran.

    python benchmarks/metrics_memory.py                     # 256^3 and 512^3
    python benchmarks/metrics_memory.py --sizes 128 256 512 --sparse 4 --dask
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, time
import zarr
from napari_xrayseg.core.metrics import evaluate
a = json.loads(sys.argv[1])
pred = zarr.open_array(store=a["pred"], mode="r")
truth = zarr.open_array(store=a["truth"], mode="r")
if a["dask"]:
    import dask
    import dask.array as da
    dask.config.set(scheduler="synchronous")
    pred, truth = da.from_zarr(pred), da.from_zarr(truth)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
r = evaluate(pred, truth, axis=0)
dt = time.perf_counter() - t0
hwm = None
if os.path.exists("/proc/self/status"):
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
print(json.dumps({"seconds": dt, "base_rss_mb": base, "vmhwm_mb": hwm, "n_voxels": r.n_voxels,
                  "mean_dice": r.mean_dice, "accuracy": r.accuracy,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


GEN = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from metrics_memory import make_pair
make_pair(**json.loads(sys.argv[1]))
"""


def make_pair(paths: list[str], n: int, chunk: int, error: float, sparse: int, seed: int = 0):
    """Write truth and pred (n^3 uint8) to zarr, ``chunk`` slices at a time."""
    import numpy as np
    import zarr

    kw = {"shape": (n, n, n), "chunks": (chunk, min(n, 256), min(n, 256)), "dtype": "uint8"}
    truth = zarr.create_array(store=paths[0], **kw)
    pred = zarr.create_array(store=paths[1], **kw)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    for z0 in range(0, n, chunk):
        z = np.arange(z0, min(z0 + chunk, n), dtype=np.float32)[:, None, None]
        # smooth, phase-separated pattern: three classes of similar volume fraction
        f = np.sin(x / 9.0 + z / 23.0) + np.sin(y / 13.0 - z / 17.0) + np.sin((x + y) / 29.0 + z / 11.0)
        t = np.where(f < -0.5, 1, np.where(f < 0.6, 2, 3)).astype(np.uint8)
        rng = np.random.default_rng([seed, z0])
        p = t.copy()
        flip = rng.random(t.shape, dtype=np.float32) < error
        p[flip] = (t[flip] + rng.integers(1, 4, int(flip.sum()), dtype=np.uint8)) % 4
        if sparse > 1:
            t[(z[:, 0, 0].astype(int) % sparse) != 0] = 0
        truth[z0 : z0 + t.shape[0]] = t
        pred[z0 : z0 + t.shape[0]] = p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--chunk", type=int, default=16, help="zarr chunk depth (slices)")
    ap.add_argument("--error", type=float, default=0.05, help="fraction of changed voxels")
    ap.add_argument("--sparse", type=int, default=1, help="annotate every k-th slice only (1 = dense truth)")
    ap.add_argument("--dask", action="store_true", help="wrap the zarr arrays in dask")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    print(f"# python {' '.join(sys.argv)}")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}; zarr chunks {a.chunk} slices; "
        f"{'dask over zarr' if a.dask else 'zarr'}; "
        f"truth {'dense' if a.sparse <= 1 else f'every {a.sparse}th slice'}\n"
    )
    print("| volume | voxels | MB per array | seconds | Mvox/s | RSS after imports MB | peak RSS MB | mean Dice |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            truth, pred = str(Path(tmp) / f"truth{n}.zarr"), str(Path(tmp) / f"pred{n}.zarr")
            gen = {"paths": [truth, pred], "n": n, "chunk": a.chunk, "error": a.error, "sparse": a.sparse}
            subprocess.run([sys.executable, "-c", GEN, json.dumps(gen), str(Path(__file__).parent)], check=True)
            args = {"truth": truth, "pred": pred, "dask": a.dask}
            res = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, check=True
            )
            r = json.loads(res.stdout.strip().splitlines()[-1])
            vox = n**3
            r.update(size=n, voxels=vox, mb=vox / 2**20, mvox_s=vox / r["seconds"] / 1e6)
            rows.append(r)
            print(
                f"| {n}³ uint8 | {vox:,} | {r['mb']:.0f} | {r['seconds']:.1f} | "
                f"{r['mvox_s']:.1f} | {r['base_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                f"{r['mean_dice']:.4f} |",
                flush=True,
            )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"\n# total {time.perf_counter() - t:.0f} s")
