"""Make the pretrained start shipped with the package (``train(..., init="pretrained")``).

A ``unet3d`` (small, context 15, the API's defaults) is trained on the *full* truth of a family of
synthetic PXCT scans that spans what the presets vary: feature size (2.4 to 4 voxels), noise,
blur, projection angles, misalignment and a grey-level offset (``default``, ``hard``,
``hard-blur`` and ``hard-transfer``). Seed 0 of every preset is left out: it is the test volume
of ``benchmarks/hard.py`` and ``benchmarks/ceiling.py``. The mean normalised grey level of each
class over the family is stored in the model (``info.train["class_grey"]``): fine-tuning matches
a user's classes to the model's by it (``models.reclass``).

    python benchmarks/pretrain.py --epochs 120 --out src/napari_xrayseg/weights/unet3d-small-pretrained.safetensors

On the 2-core development machine (bf16 autocast on AMX) 120 epochs took 39 minutes (session 14).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

#: (preset, seed) of the training volumes
FAMILY = [
    ("default", 1),
    ("default", 2),
    ("hard", 1),
    ("hard", 2),
    ("hard", 3),
    ("hard-blur", 4),
    ("hard-blur", 5),
    ("hard-transfer", 1),
    ("hard-transfer", 2),
    ("hard-transfer", 3),
]


def class_grey(images: list[np.ndarray], truths: list[np.ndarray], classes: list[int]) -> list[float]:
    """Mean grey level of each class over all volumes, each normalised as the model normalises it."""
    from napari_xrayseg.core.normalize import apply_normalization, compute_normalization

    sums, counts = np.zeros(len(classes)), np.zeros(len(classes))
    for img, truth in zip(images, truths):
        x = apply_normalization(img, compute_normalization(img))
        for i, c in enumerate(classes):
            sums[i] += float(x[truth == c].sum())
            counts[i] += int((truth == c).sum())
    return [float(v) for v in sums / counts]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(48, 160, 160), metavar=("Z", "Y", "X"))
    ap.add_argument("--epochs", type=int, default=120, help="epochs of 25 steps")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    from napari_xrayseg import make_phantom, save_model, train

    t = time.perf_counter()
    pairs = [make_phantom(tuple(a.shape), seed=s, preset=p) for p, s in FAMILY]
    images, truths = [p[0] for p in pairs], [p[1] for p in pairs]
    last = [time.perf_counter()]

    def report(p):  # an epoch's line a minute
        if "loss" in p.info and time.perf_counter() - last[0] > 60:
            last[0] = time.perf_counter()
            print(f"{time.perf_counter() - t:7.0f} s  {p.message}", flush=True)

    model = train(
        images,
        truths,
        arch="unet3d",
        init="random",
        epochs=a.epochs,
        batch=a.batch,
        seed=0,
        device=a.device,
        progress=report,
    )
    model.info.train["class_grey"] = class_grey(images, truths, model.info.classes)
    model.info.train["family"] = [list(f) for f in FAMILY]
    save_model(model, a.out, overwrite=True)
    print(f"saved {a.out} after {time.perf_counter() - t:.0f} s; class grey {model.info.train['class_grey']}")


if __name__ == "__main__":
    main()
