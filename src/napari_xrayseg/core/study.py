"""Data-efficiency study: how many slices must a user annotate for a given Dice.

On a synthetic PXCT sample with known truth, train models from 1, 2, 4, 8, 16...
annotated slices (the truth of that many slices along Z, at random positions; 0
elsewhere), for each training mode (plain U-Net, Pix2Pix), segment the whole volume
along one axis and as an orthoplane ensemble, and score the mean Dice against the
full truth. Each configuration is repeated with other slice positions and training
seeds, so the answer comes with a spread (mean ± std over repeats).

One model is trained per (mode, slices, repeat) and segmented both ways: the
orthoplane rows apply the model trained on xy slices to xz and yz slices as well,
which suits the isotropic sample (its structures look alike from every side).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .output import claim
from .progress import CancelToken, Progress, ProgressCallback, check, drain

__all__ = ["StudyResult", "iter_study", "study"]

log = logging.getLogger(__name__)


@dataclass
class StudyResult:
    """Every run of a study and its summary.

    Attributes
    ----------
    runs : list of dict
        One per (mode, slices, repeat, axes): ``mean_dice``, ``dice`` per class,
        ``train_seconds``, ``segment_seconds``, the annotated slice indices.
    summary : list of dict
        One per (mode, axes, slices): ``mean``, ``std`` (ddof=0) and ``n`` over repeats.
    settings : dict
        What was run (shape, seeds, model size, time budget...).
    files : dict
        Paths written (``json``, ``table``, ``plot``) when ``out`` was given.
    """

    runs: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        """The summary as a markdown table: a row per (mode, axes), a column per slice count."""
        counts = sorted({s["slices"] for s in self.summary})
        head = "| mode | inference | " + " | ".join(f"{n} slice{'s' if n > 1 else ''}" for n in counts) + " |"
        lines = [head, "|---|---|" + "---:|" * len(counts)]
        for mode, axes in dict.fromkeys((s["mode"], s["axes"]) for s in self.summary):
            cells = []
            for n in counts:
                s = next((s for s in self.summary if (s["mode"], s["axes"], s["slices"]) == (mode, axes, n)), None)
                cells.append("" if s is None else f"{s['mean']:.3f} ± {s['std']:.3f}")
            label = "one axis (z)" if axes == "z" else f"orthoplane ({axes})"
            lines.append(f"| {mode} | {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[float]] = {}
    for r in runs:
        groups.setdefault((r["mode"], r["axes"], r["slices"]), []).append(r["mean_dice"])
    return [{"mode": m, "axes": a, "slices": n, "mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
            for (m, a, n), v in groups.items()]


def _pick_slices(depth: int, n: int, rng: np.random.Generator) -> list[int]:
    """``n`` distinct slice indices spread over the depth: one random slice per equal stratum."""
    edges = np.linspace(0, depth, n + 1)
    return sorted(int(rng.integers(int(math.ceil(a)), max(int(math.ceil(a)) + 1, int(b)))) for a, b in
                  zip(edges[:-1], edges[1:]))


def iter_study(*, shape: Sequence[int] = (64, 128, 128), seed: int = 0, slices: Sequence[int] = (1, 2, 4, 8, 16),
               modes: Sequence[str] = ("supervised", "pix2pix"), axes: Sequence[str] = ("z", "zyx"),
               repeats: int = 3, size: str = "small", context: int = 1, minutes: float | None = 1.0,
               epochs: int = 40, steps_per_epoch: int = 25, patch: int = 64, batch: int = 8,
               noise: float | None = None, device: str = "auto", out: str | os.PathLike | None = None,
               overwrite: bool = False, cancel: CancelToken | None = None,
               ) -> Generator[Progress, None, StudyResult]:
    """Generator form of :func:`study`: yields a :class:`Progress` per trained model."""
    from .inference import segment
    from .metrics import evaluate
    from .sample import make_phantom
    from .training import MODES, train

    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise InputError(f"study shape {shape} must be three sides of at least 4 voxels, e.g. 64 128 128")
    counts = sorted({int(n) for n in slices})
    if not counts or counts[0] < 1 or counts[-1] > shape[0]:
        raise InputError(f"slice counts {list(slices)} must be between 1 and the depth {shape[0]}")
    for m in modes:
        if m not in MODES:
            raise InputError(f"mode {m!r} must be one of {list(MODES)}")
    for a in axes:
        if a not in ("z", "zyx"):
            raise InputError(f"axes {a!r} must be 'z' (one axis) or 'zyx' (orthoplane)")
    if not isinstance(repeats, int) or repeats < 1:
        raise InputError(f"repeats {repeats!r} must be a positive integer")
    outdir = Path(out) if out is not None else None
    target = None
    if outdir is not None:  # checked now, written at the end (beside an old study until complete)
        target = claim(outdir, overwrite=overwrite, what="study output", empty_ok=True)

    phantom_kw = {"seed": seed} if noise is None else {"seed": seed, "noise": noise}
    image, truth = make_phantom(shape, **phantom_kw)
    settings = {"shape": list(shape), "seed": seed, "noise": noise, "slices": counts, "modes": list(modes),
                "axes": list(axes), "repeats": repeats, "size": size, "context": context, "minutes": minutes,
                "epochs": epochs, "steps_per_epoch": steps_per_epoch, "patch": patch, "batch": batch,
                "device": device}
    result = StudyResult(settings=settings)
    total = len(modes) * len(counts) * repeats
    done = 0
    for rep in range(repeats):
        rng = np.random.default_rng([seed, rep])
        for n in counts:
            idx = _pick_slices(shape[0], n, rng)
            ann = np.zeros_like(truth)
            ann[idx] = truth[idx]
            for mode in modes:
                check(cancel)
                t0 = time.perf_counter()
                model = train(image, ann, size=size, context=context, minutes=minutes, epochs=epochs,
                              steps_per_epoch=steps_per_epoch, patch=patch, batch=batch, mode=mode,
                              seed=1000 * rep + n, device=device, cancel=cancel)
                t_train = time.perf_counter() - t0
                for a in axes:
                    t1 = time.perf_counter()
                    pred = segment(image, model, axes=a, device=device, cancel=cancel)
                    rep_ = evaluate(pred, truth)
                    result.runs.append({
                        "mode": mode, "axes": a, "slices": n, "repeat": rep, "annotated": idx,
                        "mean_dice": rep_.mean_dice,
                        "dice": {str(c): v["dice"] for c, v in rep_.per_class.items()},
                        "train_seconds": t_train, "segment_seconds": time.perf_counter() - t1})
                done += 1
                last = [r for r in result.runs[-len(axes):]]
                msg = ", ".join(f"{r['axes']} {r['mean_dice']:.3f}" for r in last)
                yield Progress(done, total, f"{mode}, {n} slice(s), repeat {rep + 1}/{repeats}: Dice {msg}",
                               {"runs": last})
    result.summary = _summarise(result.runs)
    if outdir is not None and target is not None:
        from .figures import study_plot

        work = target.take()
        (work / "study.json").write_text(json.dumps(asdict(result), indent=1))
        (work / "study.md").write_text(result.table() + "\n")
        study_plot(result.summary, work / "study.png", overwrite=True,
                   title=f"Sample {shape[0]}x{shape[1]}x{shape[2]}, unet/{size}, "
                         f"{minutes if minutes else epochs} {'min' if minutes else 'epochs'} per model")
        target.commit()
        result.files = {"json": str(outdir / "study.json"), "table": str(outdir / "study.md"),
                        "plot": str(outdir / "study.png")}
    return result


def study(*, progress: ProgressCallback | None = None, **kwargs: Any) -> StudyResult:
    """Run the data-efficiency study (see the module docstring); parameters as :func:`iter_study`.

    Parameters
    ----------
    shape : (int, int, int)
        Sample size (Z, Y, X); the phantom is generated with ``seed`` (and ``noise``).
    slices : sequence of int
        Numbers of annotated slices to try.
    modes : sequence of str
        Training modes (``"supervised"``, ``"pix2pix"``).
    axes : sequence of str
        ``"z"`` (one axis) and/or ``"zyx"`` (orthoplane) inference.
    repeats : int
        Repeats per configuration (other slice positions and training seeds).
    size, context, minutes, epochs, steps_per_epoch, patch, batch, device
        Training settings, as for :func:`~napari_xrayseg.train`.
    out : path-like, optional
        Folder for ``study.json``, ``study.md`` (table) and ``study.png`` (Dice vs slices).
    overwrite : bool
        Write into a non-empty ``out``.
    cancel, progress
        As everywhere.

    Returns
    -------
    StudyResult
    """
    return drain(iter_study(**kwargs), progress)
