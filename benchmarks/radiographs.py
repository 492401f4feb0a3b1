"""Lung Dice on synthetic chest radiographs: declared 2D images vs the same stack treated as a volume.

Builds ``--n`` synthetic chest radiographs with lung masks
(:func:`napari_xrayseg.core.radiographs.make_radiographs`: independent images, each its
own pose, anatomy and exposure; nothing downloaded), annotates ``--train`` of them (every
n/train-th image) in full, and scores the lung Dice on all the others:

* ``2d``: ``train([...10 images...], [...their masks...], two_d=True)``: each image on its
  own (context 1, per-image normalisation, whole images held out for validation), then
  ``segment`` of the whole stack, which the model treats as independent images;
* ``volume``: what a user got before issue #18: the images stacked as a (n, Y, X) volume
  with the annotated images painted, trained with the defaults (2.5D context 3: every
  image sees its unrelated neighbours as context, one normalisation for the stack).

Both train for the same wall-clock budget (``--minutes``), or the same number of epochs
(``--epochs``: the same work, whatever else runs on the machine). Prints one line per mode: lung
Dice over the held-out images (mean and worst image), the training time and epochs, and the
time to segment the stack. CPU seconds are printed beside the wall time: on a machine shared
with other jobs they say more about the work than the wall clock does. Issue #18's target on
real radiographs: lung Dice >= 0.97 from 10 images in <= 5 min on 2 CPU cores.

    python benchmarks/radiographs.py                     # 40 images, 10 annotated, 2 min each
    python benchmarks/radiographs.py --minutes 5 --threads 2
    python benchmarks/radiographs.py --epochs 60 --threads 1  # 1500 steps each, on a busy machine
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from napari_xrayseg import segment, train
from napari_xrayseg.core.metrics import dice_per_class
from napari_xrayseg.core.radiographs import LUNG, make_radiographs


def lung_dice(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """Lung Dice of every image of a stack."""
    return [float(dice_per_class(p, t, [1, LUNG])[LUNG]) for p, t in zip(pred, truth)]


def main() -> None:
    """Run both modes and print one line each."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40, help="images (default: 40)")
    p.add_argument("--train", type=int, default=10, help="annotated images (default: 10)")
    p.add_argument("--side", type=int, default=256, help="image side (default: 256)")
    p.add_argument("--minutes", type=float, default=2.0, help="training budget per mode (default: 2)")
    p.add_argument(
        "--epochs", type=int, default=None, help="train this many epochs instead (same work on a busy machine)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--size", default=None, help="unet size preset (default: the training default)")
    p.add_argument("--patch", type=int, default=None, help="training patch side (default: the training default)")
    p.add_argument("--batch", type=int, default=None, help="patches per step (default: the training default)")
    p.add_argument("--modes", default="2d,volume", help="comma-separated: 2d, volume (default: both)")
    p.add_argument("--seed", type=int, default=0, help="seed of the images (default: 0)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    images, masks = make_radiographs(a.n, side=a.side, seed=a.seed)
    annotated = np.unique(np.linspace(0, a.n - 1, a.train).round().astype(int))
    held = np.setdiff1d(np.arange(a.n), annotated)
    print(
        f"# {a.n} synthetic radiographs {a.side}x{a.side}, {annotated.size} annotated, {held.size} scored; "
        f"torch {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    common = {"minutes": None if a.epochs else a.minutes, "epochs": a.epochs, "device": "cpu", "seed": 0}
    for k in ("size", "patch", "batch"):
        if getattr(a, k):
            common[k] = getattr(a, k)
    for mode in a.modes.split(","):
        t0, c0 = time.perf_counter(), time.process_time()
        if mode == "2d":
            model = train([images[i] for i in annotated], [masks[i] for i in annotated], two_d=True, **common)
        elif mode == "volume":
            sparse = np.zeros_like(masks)
            sparse[annotated] = masks[annotated]
            model = train(images, sparse, **common)
        else:
            raise SystemExit(f"unknown mode {mode!r}: use 2d or volume")
        t_train, c_train = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        pred = segment(images, model, device="cpu")
        t_seg = time.perf_counter() - t0
        d = lung_dice(pred[held], masks[held])
        print(
            f"{mode:7s} lung Dice {np.mean(d):.4f} (worst image {np.min(d):.4f}) over {held.size} held-out images; "
            f"context {model.info.context}, {len(model.info.history)} epochs in {t_train:.0f} s "
            f"({c_train:.0f} CPU-s); "
            f"segment {a.n} images in {t_seg:.1f} s"
        )


if __name__ == "__main__":
    main()
