"""Sample data contribution: the synthetic three-phase PXCT phantom and its truth."""

from __future__ import annotations

from typing import Any

from ..core.sample import PHASES, make_phantom
from ._layers import label_features

SAMPLE_SHAPE = (48, 192, 192)
SAMPLE_SEED = 0
#: Radius (of half the side) of the pillar sample's cylinder.
PILLAR_RADIUS = 0.7


def _layers(pillar: float | None) -> list[tuple[Any, dict[str, Any], str]]:
    image, truth = make_phantom(SAMPLE_SHAPE, seed=SAMPLE_SEED, pillar=pillar)
    meta = {
        "napari_xrayseg": {
            "sample": "pxct-phantom" if pillar is None else "pxct-pillar",
            "seed": SAMPLE_SEED,
            "shape": list(SAMPLE_SHAPE),
            "phases": {str(k): v for k, v in PHASES.items()},
            **({} if pillar is None else {"pillar": pillar}),
        }
    }
    image_name, truth_name = ("PXCT sample", "PXCT truth") if pillar is None else ("PXCT pillar", "PXCT pillar truth")
    truth_kw = {"name": truth_name, "metadata": meta, "opacity": 0.5, "features": label_features(PHASES)}
    return [
        (image, {"name": image_name, "metadata": meta, "colormap": "gray"}, "image"),
        (truth, truth_kw, "labels"),
    ]


def make_sample_data() -> list[tuple[Any, dict[str, Any], str]]:
    """Return the PXCT phantom as an Image layer and its ground truth as a Labels layer.

    Console equivalent: ``napari_xrayseg.make_phantom((48, 192, 192), seed=0)``.
    """
    return _layers(None)


def make_pillar_sample_data() -> list[tuple[Any, dict[str, Any], str]]:
    """The same electrode as a pillar standing in air (the air is pore in the truth).

    For the Analyze widget's *Surrounded by label* (1). Console equivalent:
    ``napari_xrayseg.make_phantom((48, 192, 192), seed=0, pillar=0.7)``.
    """
    return _layers(PILLAR_RADIUS)
