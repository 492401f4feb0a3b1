"""Sample data contribution: the synthetic three-phase PXCT phantom and its truth."""

from __future__ import annotations

from typing import Any

from ..core.sample import PHASES, make_phantom
from ._layers import label_features

SAMPLE_SHAPE = (48, 192, 192)
SAMPLE_SEED = 0


def make_sample_data() -> list[tuple[Any, dict[str, Any], str]]:
    """Return the PXCT phantom as an Image layer and its ground truth as a Labels layer.

    Console equivalent: ``napari_xrayseg.make_phantom((48, 192, 192), seed=0)``.
    """
    image, truth = make_phantom(SAMPLE_SHAPE, seed=SAMPLE_SEED)
    meta = {
        "napari_xrayseg": {
            "sample": "pxct-phantom",
            "seed": SAMPLE_SEED,
            "shape": list(SAMPLE_SHAPE),
            "phases": {str(k): v for k, v in PHASES.items()},
        }
    }
    return [
        (image, {"name": "PXCT sample", "metadata": meta, "colormap": "gray"}, "image"),
        (truth, {"name": "PXCT truth", "metadata": meta, "opacity": 0.5, "features": label_features(PHASES)}, "labels"),
    ]
