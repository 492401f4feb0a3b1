"""`evaluate` against sparse truth (a few annotated slices of a deep volume), with and without the interface pass.

python benchmarks/evaluate_sparse.py --shape 64 1024 1024 --annotated 20 45
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 1024, 1024])
    ap.add_argument("--annotated", type=int, nargs="+", default=[20, 45])
    a = ap.parse_args()
    from scipy import ndimage as ndi

    from napari_xrayseg.core.metrics import evaluate, interface_errors

    rng = np.random.default_rng(1811)
    f = ndi.gaussian_filter(rng.random(tuple(a.shape), dtype=np.float32), (0, 4, 4))
    full = (1 + (f > np.quantile(f, 0.33)) + (f > np.quantile(f, 0.66))).astype(np.uint8)
    pred = full.copy()
    pred[rng.random(pred.shape) < 0.02] = 1
    truth = np.zeros_like(full)
    truth[a.annotated] = full[a.annotated]
    for name, call in (
        ("interface_errors", lambda: interface_errors(pred, truth)),
        ("evaluate", lambda: evaluate(pred, truth)),
        ("evaluate(interfaces=False)", lambda: evaluate(pred, truth, interfaces=False)),
    ):
        t0 = time.perf_counter()
        call()
        print(f"{name:28s} {time.perf_counter() - t0:6.2f} s")


if __name__ == "__main__":
    main()
