"""The main job on the built-in sample, as one function (``xrayseg demo``).

Generate the synthetic PXCT sample, keep the ground truth of a few slices as the
"manual" annotation, train a U-Net on them, segment the whole volume out of core,
and score it against the full ground truth next to multi-Otsu thresholding.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .progress import ProgressCallback
from .sample import PHASES

__all__ = ["DEMO_FILES", "annotate_slices", "multi_otsu", "run_demo"]

#: What the demo writes into its folder (``overwrite`` replaces a folder that holds nothing else).
DEMO_FILES = (
    "image.zarr",
    "truth.zarr",
    "annotations.zarr",
    "model.safetensors",
    "labels.zarr",
    "report.json",
    "summary.json",
    "figures",
)


def annotate_slices(truth: np.ndarray, n: int, *, axis: int = 0) -> tuple[np.ndarray, list[int]]:
    """Sparse annotation: the truth on ``n`` evenly spaced slices along ``axis``, 0 elsewhere."""
    depth = truth.shape[axis]
    idx = sorted({int(round(i)) for i in np.linspace(0, depth - 1, n + 2)[1:-1]})
    ann = np.zeros_like(truth)
    sl = [slice(None)] * truth.ndim
    sl[axis] = idx
    ann[tuple(sl)] = truth[tuple(sl)]
    return ann, idx


def multi_otsu(image: np.ndarray, order: tuple[int, ...] = (1, 3, 2)) -> np.ndarray:
    """Multi-Otsu thresholding baseline: grey-level classes mapped to labels ``order``.

    For the PXCT sample grey levels rise pore < YSZ < nickel, i.e. labels (1, 3, 2).
    """
    from skimage.filters import threshold_multiotsu

    th = threshold_multiotsu(np.asarray(image), classes=len(order))
    return np.asarray(order, np.uint8)[np.digitize(image, th)]


def _check_demo(shape: tuple[int, ...], n_slices: int, minutes: float, size: str, device: str) -> None:
    """Refuse what the demo would refuse at step 3 of 5, before step 1 writes the sample."""
    import math

    from .device import resolve_device
    from .models import _UNET, _presets
    from .sample import _check_shape

    _check_shape(shape)
    if isinstance(n_slices, bool) or not isinstance(n_slices, int) or n_slices < 1:
        raise InputError(f"slices {n_slices!r} must be a positive whole number: the demo paints that many (--slices)")
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, (int, float))
        or not (math.isfinite(minutes) and minutes > 0)
    ):
        raise InputError(f"minutes {minutes!r} must be a positive number of minutes of training (--minutes)")
    _presets("unet", _UNET, size)
    resolve_device(device)


def run_demo(
    out: str | os.PathLike = "xrayseg-demo",
    *,
    shape: tuple[int, int, int] = (48, 192, 192),
    seed: int = 7,
    n_slices: int = 3,
    minutes: float = 2.0,
    size: str = "small",
    device: str = "auto",
    overwrite: bool = False,
    echo: Callable[[str], Any] = print,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Run sample -> annotate ``n_slices`` -> train -> segment -> evaluate; return a summary.

    Files written under ``out``: ``image.zarr``, ``truth.zarr``, ``annotations.zarr``,
    ``model.safetensors``, ``labels.zarr``, ``report.json``, ``summary.json`` and PNG
    figures when :mod:`napari_xrayseg.core.figures` is available.
    """
    from .inference import segment
    from .io import write_volume
    from .metrics import evaluate
    from .output import claim, released_on_error
    from .sample import make_phantom
    from .training import train

    _check_demo(shape, n_slices, minutes, size, device)  # before the sample is written: a refused run leaves nothing
    outdir = Path(out)
    # written beside an existing folder (with overwrite) and swapped in at the end: a failed or
    # interrupted demo leaves the previous one as it was
    target = claim(outdir, overwrite=overwrite, what="output folder", empty_ok=True, owns=DEMO_FILES)
    with released_on_error(target):  # a failed run lets go of the output's lock at once
        work = target.take()
        t0 = time.perf_counter()
        echo(f"1/5 generating the synthetic PXCT sample {shape} (seed {seed}) ...")
        image, truth = make_phantom(shape, seed=seed)
        chunks = (min(16, shape[0]), shape[1], shape[2])
        write_volume(work / "image.zarr", image, chunks=chunks)
        write_volume(work / "truth.zarr", truth, chunks=chunks)
        ann, idx = annotate_slices(truth, n_slices)
        write_volume(work / "annotations.zarr", ann, chunks=chunks)
        echo(f"2/5 annotation: ground truth of {len(idx)} slices {idx} ({ann.astype(bool).mean():.1%} of voxels)")

        echo(f"3/5 training a U-Net ({size}) on those slices for at most {minutes:g} min ...")
        t1 = time.perf_counter()
        model = train(
            image,
            ann,
            arch="unet",  # the quick tour: the 2.5D net (2 minutes; unet3d wants more time on 2 cores)
            size=size,
            class_names=PHASES,
            minutes=minutes,
            epochs=1000,
            seed=0,
            device=device,
            out=work / "model.safetensors",
            progress=progress,
        )
        t_train = time.perf_counter() - t1

        echo("4/5 segmenting the whole volume ...")
        t2 = time.perf_counter()
        segment(image, model, out=work / "labels.zarr", device=device)
        t_seg = time.perf_counter() - t2
        import zarr

        labels = zarr.open_array(store=str(work / "labels.zarr"), mode="r")

        echo("5/5 evaluating against the full ground truth ...")
        report = evaluate(labels, truth, classes=[1, 2, 3])
        report.to_json(work / "report.json")
        otsu = evaluate(multi_otsu(image), truth, classes=[1, 2, 3], per_slice=False)
        figures: list[str] = []
        try:
            from .figures import save_figures
        except ImportError:  # pragma: no cover - figures module optional
            save_figures = None
        if save_figures is not None:
            figures = [
                str(outdir / p.relative_to(work))
                for p in save_figures(report, image, labels, truth, work / "figures", axis=0, history=model)
            ]
        names = dict(zip(model.info.classes, model.info.class_names))
        summary = {
            "sample": {"shape": list(shape), "seed": seed, "annotated_slices": idx},
            "train": {
                "seconds": round(t_train, 1),
                "epochs": len(model.info.history),
                "best_val_dice": model.info.train.get("best_val_dice"),
                "val_dice": model.info.validation[0],
                "kept": model.info.validation[1],
            },
            "segment": {"seconds": round(t_seg, 1), "mvox_per_s": round(image.size / t_seg / 1e6, 3)},
            "dice": {names.get(int(c), c): report.per_class[c]["dice"] for c in report.per_class},
            "mean_dice": report.mean_dice,
            "held_out_mean_dice": (report.held_out or {}).get("mean_dice"),  # the slices not trained on
            "otsu_mean_dice": otsu.mean_dice,
            "files": {
                "model": str(outdir / "model.safetensors"),
                "labels": str(outdir / "labels.zarr"),
                "report": str(outdir / "report.json"),
                "figures": figures,
            },
            "total_seconds": round(time.perf_counter() - t0, 1),
        }
        (work / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        target.commit()
    echo("")
    echo(
        f"Segmented the {shape[0]}x{shape[1]}x{shape[2]} synthetic PXCT electrode from {len(idx)} annotated "
        f"slices ({summary['total_seconds']:.0f} s in all: training {t_train:.0f} s, "
        f"segmentation {t_seg:.1f} s)."
    )
    echo("Dice against the full ground truth (U-Net | multi-Otsu thresholding):")
    for c in report.per_class:
        u, o = report.per_class[c]["dice"], otsu.per_class[c]["dice"]
        echo(f"  {names.get(int(c), str(c)):>8}: {u:.3f} | {o:.3f}")
    echo(f"  {'mean':>8}: {report.mean_dice:.3f} | {otsu.mean_dice:.3f}")
    if report.held_out is not None and report.held_out["mean_dice"] is not None:
        echo(
            f"  on the {report.held_out['n_slices']} slices not trained on alone, the U-Net's mean Dice is "
            f"{report.held_out['mean_dice']:.3f}"
        )
    echo(
        f"Files in {outdir}/: image.zarr and truth.zarr (the sample and its full truth), annotations.zarr "
        f"(the {len(idx)} slices trained on), model.safetensors (reuse with `xrayseg predict`), labels.zarr "
        f"(the segmentation), report.json, summary.json{', figures/' if figures else ''}"
    )
    echo(
        # with the plugin named: napari's own zarr reader would open the labels as a grey image (QA)
        f"Look at it: napari --plugin napari-xrayseg {outdir}/image.zarr {outdir}/labels.zarr  "
        "(or File > Open Sample > X-ray Segmentation in napari)"
    )
    return summary
