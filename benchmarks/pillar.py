"""A pillar in air: ``analyze(envelope=1)`` against the truth of the true cylinder.

A FIB-milled PXCT pillar stands in air, which a segmentation labels as pore. Each hard volume
is made as a pillar (``make_phantom(pillar=R)``: a cylinder along Z of radius R of half the
side, air around it) and analysed four ways: the truth inside the true cylinder (the
reference), the truth with ``envelope=1`` (the default convex hull, and a closing of
``--radius`` voxels), the whole box (no envelope), and the shipped start's segmentation as it
is with ``envelope=1``. It prints the pore fraction, the pore's specific surface area and the
TPB density of each (voxel units) and the envelope's overlap (IoU) with the cylinder, then the
time of :func:`~napari_xrayseg.core.microstructure.sample_envelope` per slice of a large one.

    python benchmarks/pillar.py --seeds 300 301 302
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[300, 301, 302])
    ap.add_argument("--radii", type=float, nargs="+", default=[0.5, 0.7, 0.9], help="pillar radii (of half the side)")
    ap.add_argument("--shape", type=int, nargs=3, default=(48, 160, 160), metavar=("Z", "Y", "X"))
    ap.add_argument("--radius", type=float, default=8.0, help="the closing's radius (voxels) for the second envelope")
    ap.add_argument(
        "--time-side", type=int, nargs="+", default=[1024, 2048], help="slice sides to time the envelope on"
    )
    a = ap.parse_args(argv)
    from napari_xrayseg import load_model, make_phantom, segment
    from napari_xrayseg.core.microstructure import analyze, sample_envelope
    from napari_xrayseg.core.models import pretrained_path
    from napari_xrayseg.core.sample import pillar_mask

    start = load_model(pretrained_path())
    kw = {"connectivity": False, "mean_size": False, "tortuosity": False}
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    for seed in a.seeds:
        for r in a.radii:
            img, truth = make_phantom(tuple(a.shape), seed=seed, preset="hard", pillar=r)[:2]
            cyl = pillar_mask(tuple(a.shape[1:]), r)
            seg = np.asarray(segment(img, start))
            ref = analyze(np.where(cyl, truth, 0), outside=0, **kw)
            cases = {
                "truth in the true cylinder (reference)": (ref, cyl[None]),
                "truth, envelope=1 (convex hull)": (analyze(truth, envelope=1, **kw), sample_envelope(truth, 1)),
                f"truth, envelope=1, envelope_radius={a.radius:g}": (
                    analyze(truth, envelope=1, envelope_radius=a.radius, **kw),
                    sample_envelope(truth, 1, radius=a.radius),
                ),
                "truth, the whole box": (analyze(truth, **kw), np.ones_like(cyl)[None]),
                "segmentation, envelope=1 (convex hull)": (analyze(seg, envelope=1, **kw), sample_envelope(seg, 1)),
            }
            for name, (m, env) in cases.items():
                iou = float(np.sum(env & cyl) / np.sum(env | cyl))
                v = (m.phases[1].volume_fraction, m.phases[1].specific_surface_area, m.tpb_density or 0.0, iou)
                rows.setdefault(name, []).append(v)
                print(f"seed {seed} R {r}  {name:48s} " + " ".join(f"{x:.4f}" for x in v), flush=True)
    print(f"\nhard {tuple(a.shape)}, pillar radii {a.radii}, seeds {a.seeds} (means; voxel units)")
    print("| | pore fraction | pore S_V | TPB density | envelope IoU with the cylinder |\n|---|---:|---:|---:|---:|")
    for name, v in rows.items():
        m = [statistics.fmean(x[i] for x in v) for i in range(4)]
        print(f"| {name} | {m[0]:.4f} | {m[1]:.4f} | {m[2]:.5f} | {m[3]:.3f} |")
    ref = rows["truth in the true cylinder (reference)"]
    for name, v in rows.items():
        err = [abs(x[0] - y[0]) for x, y in zip(v, ref)]
        print(f"{name}: pore fraction off by {statistics.fmean(err):.4f} on average, {max(err):.4f} at most")
    for side in a.time_side:
        _, t = make_phantom((2, side, side), seed=1, pillar=0.7, artefacts=False)
        for radius in (None, a.radius):
            sample_envelope(t[:1], 1, radius=radius)
            t0 = time.perf_counter()
            sample_envelope(t, 1, radius=radius)
            dt = (time.perf_counter() - t0) / len(t)
            print(f"sample_envelope of a {side}^2 slice, radius {radius}: {dt:.3f} s")


if __name__ == "__main__":
    main()
