"""Peak memory and time of segmenting one zarr volume: ``segment()``, with ``tune_allocator()``, and the CLI.

Writes a random uint8 zarr volume of ``--depth`` slices of ``--yx``² (chunks of 16 slices, raw),
then segments it with the shipped start (the default 3D network, ``tile="auto"``) in three fresh
processes and prints each one's peak RSS (``VmHWM``) and seconds:

- ``segment(open_volume(...), out=...)`` as a Python user calls it;
- the same after ``device.tune_allocator()`` (glibc keeps freed activations for reuse);
- ``xrayseg predict`` (which tunes the allocator).

    python benchmarks/allocator_memory.py --yx 2048 --depth 32
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
a = json.loads(sys.argv[1])
import torch
torch.set_num_threads(a["threads"])
from napari_xrayseg.core.models import pretrained_path
t0 = time.perf_counter()
if a["how"] == "cli":
    from napari_xrayseg.cli import main
    argv = ["predict", "--image", a["image"], "--model", str(pretrained_path()), "--out", a["out"]]
    rc = main([*argv, "--device", "cpu"])
    assert rc == 0
else:
    from napari_xrayseg import open_volume, segment
    from napari_xrayseg.core.models import load_model
    if a["how"] == "tuned":
        from napari_xrayseg.core.device import tune_allocator
        tune_allocator()
    segment(open_volume(a["image"]), load_model(pretrained_path()), out=a["out"], device="cpu")
hwm = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) // 1024
print(json.dumps({"peak_rss_mb": hwm, "seconds": time.perf_counter() - t0}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--yx", type=int, default=2048, help="slice side (square slices)")
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import numpy as np
    import zarr

    work = Path(tempfile.mkdtemp(prefix="xrayseg-alloc-"))
    try:
        image = work / "in.zarr"
        arr = zarr.create_array(
            store=str(image), shape=(a.depth, a.yx, a.yx), chunks=(16, a.yx, a.yx), dtype="uint8", compressors=None
        )
        rng = np.random.default_rng(0)
        for z in range(0, a.depth, 16):
            arr[z : z + 16] = rng.integers(0, 255, (min(16, a.depth - z), a.yx, a.yx), dtype=np.uint8)
        print(f"{a.depth} x {a.yx}² uint8, the shipped start, tile auto, {a.threads} threads")
        for how in ("segment", "tuned", "cli"):
            out = work / f"out-{how}.zarr"
            args = {"how": how, "image": str(image), "out": str(out), "threads": a.threads}
            res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"{how} failed:\n{res.stderr[-2000:]}")
            r = json.loads(res.stdout.strip().splitlines()[-1])
            what = {"segment": "segment()", "tuned": "segment() + tune_allocator()", "cli": "xrayseg predict"}[how]
            print(f"{what:30s} peak RSS {r['peak_rss_mb']:6d} MB  {r['seconds']:6.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
