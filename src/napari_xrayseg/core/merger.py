"""The merger stage of segmentation: scores of a slab become what is stored.

- :class:`LabelMerger`: one pass, labels straight from the scores (a running max over
  classes: the fast path).
- :class:`ProbMerger`: class probabilities, summed over passes (an orthoplane ensemble
  runs one pass per axis, and flip test-time augmentation averages inside a pass); the
  last pass adds the earlier passes' sum, picks the class and derives a confidence map.

A 2D network sees a volume one plane at a time; averaging the probabilities of xy, xz
and yz passes voxel by voxel removes much of a single axis's slice-to-slice
inconsistency. The winning probability (or normalised entropy) shows where the model
is unsure and annotation helps most.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["CONFIDENCE", "LabelMerger", "ProbMerger", "confidence_from_probs"]

CONFIDENCE = ("maxprob", "entropy")


def confidence_from_probs(p: np.ndarray, kind: str) -> np.ndarray:
    """Per-voxel confidence from class probabilities ``p`` of shape (C, ...).

    ``"maxprob"``: the winning class's probability (1 = certain, 1/C = no idea).
    ``"entropy"``: entropy divided by log(C) (0 = certain, 1 = uniform: an *un*certainty).

    Examples
    --------
    >>> p = np.array([[1.0, 0.5], [0.0, 0.5]])
    >>> confidence_from_probs(p, "maxprob").tolist(), confidence_from_probs(p, "entropy").round(3).tolist()
    ([1.0, 0.5], [0.0, 1.0])
    """
    if kind == "maxprob":
        return p.max(axis=0).astype(np.float32)
    if kind == "entropy":
        q = np.clip(p, 1e-12, 1.0)
        # 0.0 - x, not -x: a certain voxel's entropy is 0.0, not -0.0 (the docstring's example failed)
        return (0.0 - (p * np.log(q)).sum(axis=0) / math.log(p.shape[0])).astype(np.float32)
    raise InputError(f"confidence {kind!r} must be one of {CONFIDENCE}")


Previous = Callable[[int, tuple[slice, ...]], np.ndarray]


@dataclass(frozen=True)
class LabelMerger:
    """Labels of one pass, straight from the scores."""

    passes: int = 1

    def slab(
        self, pred: Any, plan: Any, index: int, r: tuple[int, int], data: np.ndarray, previous: Previous
    ) -> dict[str, np.ndarray]:
        """``{"labels": uint8 slab}`` in the volume's orientation."""
        labels = np.empty((r[1] - r[0], *data.shape[-2:]), dtype=np.uint8)
        for s, e, xs in plan.inputs(data, r, pred.slices_per_call(plan.slice_shape)):
            labels[s:e] = pred.labels(xs)
        labels = plan.orient(labels)
        miss = plan.missing(data, r)
        if miss is not None:  # voxels without data: not segmented
            labels[miss] = 0
        return {"labels": labels}


@dataclass(frozen=True)
class ProbMerger:
    """Probabilities summed over ``passes`` passes; the last gives labels (and confidence)."""

    passes: int = 1
    tta: bool | int = False
    confidence: str | None = None

    def __post_init__(self) -> None:
        if self.confidence is not None and self.confidence not in CONFIDENCE:
            raise InputError(f"confidence {self.confidence!r} must be one of {CONFIDENCE} or None")

    def slab(
        self, pred: Any, plan: Any, index: int, r: tuple[int, int], data: np.ndarray, previous: Previous
    ) -> dict[str, np.ndarray]:
        """``{"probs": (C, *slab)}`` for an early pass; ``{"labels", "confidence"}`` for the last."""
        p = np.empty((len(pred.lut), r[1] - r[0], *data.shape[-2:]), dtype=np.float32)
        for s, e, xs in plan.inputs(data, r, pred.slices_per_call(plan.slice_shape)):
            p[:, s:e] = np.moveaxis(pred.probs(xs, tta=self.tta), 1, 0)
        p = plan.orient(p, lead=1)
        if index < self.passes - 1:
            return {"probs": p}
        if self.passes > 1:
            p += previous(index, plan.region(r))
            p /= self.passes
        out = {"labels": pred.lut[p.argmax(axis=0)]}
        if self.confidence is not None:
            out["confidence"] = confidence_from_probs(p, self.confidence)
        miss = plan.missing(data, r)
        if miss is not None:  # voxels without data: not segmented, no confidence
            out["labels"][miss] = 0
            if "confidence" in out:
                out["confidence"][miss] = np.nan
        return out
