"""Write the synthetic PXCT sample as ``image.npy`` and ``truth.npy``.

Usage: ``python sample_data/make_sample.py OUT_DIR [--shape Z Y X] [--seed N]``
(``xrayseg sample --out DIR`` writes the same data as zarr).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_xrayseg.core.sample import make_phantom


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, make the phantom and save it; return the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--shape", type=int, nargs="+", default=[64, 256, 256], metavar="N",
                   help="Z Y X (or Y X for one slice); default 64 256 256")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    a = p.parse_args(argv)
    image, truth = make_phantom(tuple(a.shape), seed=a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    np.save(a.out / "image.npy", image)
    np.save(a.out / "truth.npy", truth)
    print(f"wrote {a.out / 'image.npy'} and {a.out / 'truth.npy'} {image.shape} (seed {a.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
