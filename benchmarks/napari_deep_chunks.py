"""Opening a big zarr in napari: chunks many slices deep against chunks rechunked for viewing.

Writes a 192 x 2048 x 2048 float32 volume (3 GiB; the sample's texture tiled) in (64, 256, 256)
chunks, a copy rechunked to (8, 512, 512), then opens each with the plugin's reader in a fresh
process: seconds and peak resident memory to open, and seconds per slider move (docs/troubleshooting.md,
"A big zarr is slow to browse in napari"). Needs a display: run under xvfb-run.

    xvfb-run -a python benchmarks/napari_deep_chunks.py /tmp/deep
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path


def _make(folder: Path) -> None:
    import dask.array as da
    import numpy as np
    import zarr

    from napari_xrayseg import make_phantom

    deep, view = folder / "deep.zarr", folder / "view.zarr"
    if not deep.exists():
        tile = np.asarray(make_phantom((64, 256, 256), seed=1400)[0], dtype="f4")
        z = zarr.create_array(str(deep), shape=(192, 2048, 2048), chunks=(64, 256, 256), dtype="f4")
        for k in range(0, 192, 64):
            for i in range(0, 2048, 256):
                for j in range(0, 2048, 256):
                    z[k : k + 64, i : i + 256, j : j + 256] = tile
    if not view.exists():
        t0 = time.perf_counter()
        da.from_zarr(str(deep)).rechunk((8, 512, 512)).to_zarr(str(view))
        print(f"rechunked in {time.perf_counter() - t0:.0f} s", flush=True)


def _open(path: str) -> None:
    import napari  # noqa: TID251 - a benchmark of the viewer itself

    viewer = napari.Viewer(show=False)
    t0 = time.perf_counter()
    viewer.open(path, plugin="napari-xrayseg")
    opened = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    t0 = time.perf_counter()
    viewer.dims.set_current_step(0, 5)
    move = time.perf_counter() - t0
    print(f"{Path(path).name}: open {opened:.1f} s, peak {peak:.0f} MB; move to slice 5 {move:.2f} s", flush=True)
    viewer.close()


def main() -> None:
    """Make the two stores if missing, then open each in its own process."""
    if len(sys.argv) == 3 and sys.argv[1] == "--open":
        _open(sys.argv[2])
        return
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/deep")
    folder.mkdir(parents=True, exist_ok=True)
    _make(folder)
    for name in ("deep.zarr", "view.zarr"):
        subprocess.run([sys.executable, __file__, "--open", str(folder / name)], check=True)


if __name__ == "__main__":
    main()
