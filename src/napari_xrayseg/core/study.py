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

from .errors import InputError, OutputExistsError
from .output import claim, os_litter, released_on_error
from .progress import CancelToken, Progress, ProgressCallback, check, drain
from .provenance import provenance

__all__ = ["STRATEGIES", "LoopStudyResult", "StudyResult", "iter_loop_study", "iter_study", "loop_study", "study"]

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
                cells.append("" if s is None else _mean_spread(s, 3))
            label = "one axis (z)" if axes == "z" else f"orthoplane ({axes})"
            lines.append(f"| {mode} | {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _mean_spread(s: dict[str, Any], digits: int) -> str:
    """``"0.912 ± 0.004"``; one run has no spread to show: ``"0.912 (1 run)"``."""
    if s.get("n", 2) < 2:
        return f"{s['mean']:.{digits}f} (1 run)"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[float]] = {}
    for r in runs:
        groups.setdefault((r["mode"], r["axes"], r["slices"]), []).append(r["mean_dice"])
    return [
        {"mode": m, "axes": a, "slices": n, "mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
        for (m, a, n), v in groups.items()
    ]


def _pick_slices(depth: int, n: int, rng: np.random.Generator) -> list[int]:
    """``n`` distinct slice indices spread over the depth: one random slice per equal stratum."""
    edges = np.linspace(0, depth, n + 1)
    return sorted(
        int(rng.integers(int(math.ceil(a)), max(int(math.ceil(a)) + 1, int(b)))) for a, b in zip(edges[:-1], edges[1:])
    )


def iter_study(
    *,
    shape: Sequence[int] = (64, 128, 128),
    seed: int = 0,
    slices: Sequence[int] = (1, 2, 4, 8, 16),
    modes: Sequence[str] = ("supervised", "pix2pix"),
    axes: Sequence[str] = ("z", "zyx"),
    repeats: int = 3,
    size: str = "small",
    context: int = 1,
    minutes: float | None = 1.0,
    epochs: int = 40,
    steps_per_epoch: int = 25,
    patch: int = 64,
    batch: int = 8,
    noise: float | None = None,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    cancel: CancelToken | None = None,
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
        target = claim(
            outdir,
            overwrite=overwrite,
            what="study output",
            empty_ok=True,
            owns=("study.json", "study.md", "study.png"),
        )

    phantom_kw = {"seed": seed} if noise is None else {"seed": seed, "noise": noise}
    image, truth = make_phantom(shape, **phantom_kw)
    settings = {
        "shape": list(shape),
        "seed": seed,
        "noise": noise,
        "slices": counts,
        "modes": list(modes),
        "axes": list(axes),
        "repeats": repeats,
        "size": size,
        "context": context,
        "minutes": minutes,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "patch": patch,
        "batch": batch,
        "device": device,
    }
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
                model = train(
                    image,
                    ann,
                    arch="unet",  # the study measures the 2.5D network of its size
                    size=size,
                    context=context,
                    minutes=minutes,
                    epochs=epochs,
                    steps_per_epoch=steps_per_epoch,
                    patch=patch,
                    batch=batch,
                    mode=mode,
                    seed=1000 * rep + n,
                    device=device,
                    cancel=cancel,
                )
                t_train = time.perf_counter() - t0
                for a in axes:
                    t1 = time.perf_counter()
                    pred = segment(image, model, axes=a, device=device, cancel=cancel)
                    rep_ = evaluate(pred, truth)
                    result.runs.append(
                        {
                            "mode": mode,
                            "axes": a,
                            "slices": n,
                            "repeat": rep,
                            "annotated": idx,
                            "mean_dice": rep_.mean_dice,
                            "dice": {str(c): v["dice"] for c, v in rep_.per_class.items()},
                            "train_seconds": t_train,
                            "segment_seconds": time.perf_counter() - t1,
                        }
                    )
                done += 1
                last = [r for r in result.runs[-len(axes) :]]
                msg = ", ".join(f"{r['axes']} {r['mean_dice']:.3f}" for r in last)
                yield Progress(
                    done, total, f"{mode}, {n} slice(s), repeat {rep + 1}/{repeats}: Dice {msg}", {"runs": last}
                )
    result.summary = _summarise(result.runs)
    if outdir is not None and target is not None:
        from .figures import study_plot

        with released_on_error(target):  # a failed run lets go of the output's lock at once
            work = target.take()
            (work / "study.json").write_text(
                json.dumps({**asdict(result), "provenance": provenance()}, indent=1), encoding="utf-8"
            )
            (work / "study.md").write_text(result.table() + "\n", encoding="utf-8")
            study_plot(
                result.summary,
                work / "study.png",
                overwrite=True,
                title=f"Sample {shape[0]}x{shape[1]}x{shape[2]}, unet/{size}, "
                f"{minutes if minutes else epochs} {'min' if minutes else 'epochs'} per model",
            )
            target.commit()
        result.files = {
            "json": str(outdir / "study.json"),
            "table": str(outdir / "study.md"),
            "plot": str(outdir / "study.png"),
        }
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


# --------------------------------------------------------------------------- the annotation-loop study

STRATEGIES = ("even", "suggest", "random")
#: First-model weights of the loop study: random weights (None, the 2.5D ``unet`` of ``size`` and
#: ``context``) or the shipped pretrained start (``unet3d`` medium, context 15), what ``train``
#: keeps by default on scans like its family.
LOOP_INITS = (None, "pretrained")


@dataclass
class LoopStudyResult:
    """Every round of an annotation-loop study and its summary.

    Attributes
    ----------
    runs : list of dict
        One per (strategy, repeat, round): ``slices`` (annotated so far), ``added`` (the
        slice this round added), ``annotated``, ``mean_dice`` (the whole volume, trained
        slices included), ``dice`` per class, ``held_out_dice`` (on the slices that no
        strategy annotated in that repeat, ``held_out_slices`` of them: the same voxels for
        every strategy), ``train_seconds``, ``pick_seconds``.
    summary : list of dict
        One per (strategy, slices): ``mean``, ``std`` (ddof=0) and ``n`` over repeats of the
        held-out Dice (``scored``: ``"held-out"``), ``mean_all`` of the whole volume's.
    settings : dict
        What was run.
    files : dict
        Paths written (``json``, ``table``, ``plot``) when ``out`` was given.
    """

    runs: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def mean(self, strategy: str, slices: int) -> float | None:
        """Mean Dice of ``strategy`` with ``slices`` annotated slices (None if not run)."""
        s = next((s for s in self.summary if (s["strategy"], s["slices"]) == (strategy, slices)), None)
        return None if s is None else s["mean"]

    def slices_to_reach(self, strategy: str, target: float) -> int | None:
        """The fewest annotated slices at which ``strategy``'s mean Dice reaches ``target``."""
        rows = sorted((s for s in self.summary if s["strategy"] == strategy), key=lambda s: s["slices"])
        return next((s["slices"] for s in rows if s["mean"] >= target - 1e-12), None)

    def table(self) -> str:
        """The summary as a markdown table: a row per strategy, a column per slice count."""
        counts = sorted({s["slices"] for s in self.summary})
        last = counts[-1] if counts else 0
        head = (
            "| strategy | "
            + " | ".join(f"{n} slice{'s' if n > 1 else ''}" for n in counts)
            + f" | slices to reach even's {last}-slice Dice |"
        )
        lines = [head, "|---|" + "---:|" * (len(counts) + 1)]
        target = self.mean("even", last)
        for strategy in dict.fromkeys(s["strategy"] for s in self.summary):
            cells = []
            for n in counts:
                s = next((s for s in self.summary if (s["strategy"], s["slices"]) == (strategy, n)), None)
                cells.append("" if s is None else _mean_spread(s, 4))
            reach = self.slices_to_reach(strategy, target) if target is not None else None
            cells.append("n/a" if target is None else (f"{reach}" if reach is not None else f"> {last}"))
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
        if any(s.get("scored") == "held-out" for s in self.summary):
            lines += ["", "Mean Dice ± std over repeats on the slices no strategy annotated in the repeat."]
        return "\n".join(lines)


def _score_held_out(runs: list[dict[str, Any]], preds: list[np.ndarray], truth: np.ndarray) -> None:
    """Add each run's Dice on the slices no strategy of its repeat annotated (``held_out_dice``).

    Scored on the whole volume, a run counts the slices it trained on, which a strategy that
    spreads its picks differently gains more or less from (QA: up to 0.0015 at 4 slices, 40 % of
    a lead); on the common held-out slices every strategy is scored on the same voxels.
    """
    from .metrics import evaluate

    taken = sorted({int(k) for r in runs for k in r["annotated"]})
    free = [i for i in range(truth.shape[0]) if i not in set(taken)]
    for r in runs:
        k = r.pop("pred")
        if not free:
            r["held_out_dice"], r["held_out_slices"] = None, 0
            continue
        rep = evaluate(preds[k][free], truth[free], per_slice=False, interfaces=False)
        r["held_out_dice"], r["held_out_slices"] = rep.mean_dice, len(free)


def _loop_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (strategy, slices): ``mean``/``std`` of the held-out Dice (the headline), ``mean_all`` the whole volume's."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["strategy"], r["slices"]), []).append(r)
    out = []
    for (s, n), rs in groups.items():
        held = [r["held_out_dice"] for r in rs if r.get("held_out_dice") is not None]
        whole = [r["mean_dice"] for r in rs]
        v = held if len(held) == len(rs) else whole  # runs saved before held-out scoring: the whole volume
        out.append(
            {
                "strategy": s,
                "slices": n,
                "mean": float(np.mean(v)),
                "std": float(np.std(v)),
                "n": len(v),
                "scored": "held-out" if v is held else "whole volume",
                "mean_all": float(np.mean(whole)),
            }
        )
    return out


def loop_plot(
    summary: Sequence[dict[str, Any]],
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    overwrite: bool = False,
) -> Any:
    """Mean Dice ± std against the number of annotated slices, a line per strategy; returns the Figure."""
    from .figures import _new_figure, _save, _title

    fig = _new_figure(None, (6.4, 4.2))
    ax = fig.add_subplot()
    styles = {"even": ("tab:gray", "s"), "suggest": ("tab:blue", "o"), "random": ("tab:orange", "^")}
    for strategy in dict.fromkeys(s["strategy"] for s in summary):
        rows = sorted((s for s in summary if s["strategy"] == strategy), key=lambda s: s["slices"])
        color, marker = styles.get(strategy, (None, "x"))
        ax.errorbar(
            [s["slices"] for s in rows],
            [s["mean"] for s in rows],
            yerr=None if all(s.get("n", 2) < 2 for s in rows) else [s["std"] for s in rows],  # one run: no bars
            color=color,
            marker=marker,
            capsize=3,
            label=strategy,
        )
    counts = sorted({s["slices"] for s in summary})
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("annotated slices (one more per round)")
    ax.set_ylabel("mean Dice (whole volume)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    if title:
        _title(ax, title)
    _save(fig, path, overwrite)
    return fig


def iter_loop_study(
    *,
    shape: Sequence[int] = (48, 128, 128),
    seed: int = 0,
    strategies: Sequence[str] = STRATEGIES,
    rounds: int = 6,
    repeats: int = 3,
    size: str = "small",
    context: int = 3,
    epochs: int = 12,
    round_epochs: int | None = None,
    fraction: float = 0.25,
    steps_per_epoch: int = 25,
    patch: int = 64,
    batch: int = 8,
    phantom: dict[str, Any] | None = None,
    start: int | None = None,
    init: str | None = None,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, LoopStudyResult]:
    """Generator form of :func:`loop_study`: yields a :class:`Progress` per trained round."""
    from .annotation import continue_training, even_next, rank_slices
    from .inference import segment
    from .metrics import evaluate
    from .sample import make_phantom
    from .training import train

    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise InputError(f"study shape {shape} must be three sides of at least 4 voxels, e.g. 48 128 128")
    for s in strategies:
        if s not in STRATEGIES:
            raise InputError(f"strategy {s!r} must be one of {list(STRATEGIES)}")
    if not strategies:
        raise InputError(f"give at least one strategy of {list(STRATEGIES)}")
    if not isinstance(rounds, int) or isinstance(rounds, bool) or not 1 <= rounds <= shape[0]:
        raise InputError(f"rounds {rounds!r} must be between 1 and the depth {shape[0]} (one slice per round)")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise InputError(f"repeats {repeats!r} must be a positive integer")
    start = shape[0] // 2 if start is None else int(start)
    if not 0 <= start < shape[0]:
        raise InputError(f"start slice {start} is outside 0..{shape[0] - 1}")
    if init not in LOOP_INITS:
        raise InputError(f"study init {init!r} must be one of {list(LOOP_INITS)} (None: random weights)")
    if round_epochs is None:
        round_epochs = max(1, math.ceil(fraction * epochs))
    outdir = Path(out) if out is not None else None
    if outdir is not None:
        if outdir.exists() and any(not os_litter(p) for p in outdir.iterdir()) and not overwrite:
            raise OutputExistsError(
                f"study output {outdir} exists and is not empty: choose another folder or "
                "pass overwrite=True (--overwrite)"
            )
        outdir.mkdir(parents=True, exist_ok=True)

    phantom = dict(phantom or {})
    image, truth = make_phantom(shape, seed=seed, **phantom)
    settings = {
        "kind": "annotation loop",
        "shape": list(shape),
        "seed": seed,
        "phantom": phantom,
        "strategies": list(strategies),
        "rounds": rounds,
        "repeats": repeats,
        "size": size,
        "context": context,
        "epochs": epochs,
        "round_epochs": round_epochs,
        "steps_per_epoch": steps_per_epoch,
        "patch": patch,
        "batch": batch,
        "start": start,
        "init": init,
        "device": device,
        "val_fraction": 0.0,
    }
    result = LoopStudyResult(settings=settings)
    total = repeats * (1 + len(strategies) * (rounds - 1))
    done = 0
    common = {
        "steps_per_epoch": steps_per_epoch,
        "patch": patch,
        "batch": batch,
        "device": device,
        "val_fraction": 0.0,
        "minutes": None,
        "cancel": cancel,
    }

    preds: list[np.ndarray] = []  # this repeat's segmentations, one per run, scored again when it ends

    def score(model: Any) -> tuple[float, dict[str, float]]:
        pred = np.asarray(segment(image, model, device=device, cancel=cancel))
        preds.append(pred)
        rep_ = evaluate(pred, truth)
        return rep_.mean_dice, {str(c): v["dice"] for c, v in rep_.per_class.items()}

    for rep in range(repeats):
        preds.clear()
        first_run = len(result.runs)
        check(cancel)
        ann0 = np.zeros_like(truth)
        ann0[start] = truth[start]
        t0 = time.perf_counter()
        if init is None:  # the 2.5D network of the given size and context, from random weights
            net: dict[str, Any] = {"arch": "unet", "size": size, "context": context}
        else:  # the shipped 3D start (unet3d medium, context 15), fine-tuned and blended back in
            net = {"init": init}
        first = train(image, ann0, epochs=epochs, seed=1000 * rep, **net, **common)
        t_first = time.perf_counter() - t0
        d0, per0 = score(first)
        for strategy in strategies:
            result.runs.append(
                {
                    "pred": 0,
                    "strategy": strategy,
                    "repeat": rep,
                    "round": 0,
                    "slices": 1,
                    "added": start,
                    "why": "start",
                    "annotated": [start],
                    "mean_dice": d0,
                    "dice": per0,
                    "train_seconds": t_first,
                    "pick_seconds": 0.0,
                }
            )
        done += 1
        yield Progress(done, total, f"repeat {rep + 1}/{repeats}: first model on slice {start}: Dice {d0:.4f}")
        for strategy in strategies:
            rng = np.random.default_rng([seed, rep, 7])
            model, ann, picked = first, ann0.copy(), [start]
            for k in range(1, rounds):
                check(cancel)
                t1 = time.perf_counter()
                why = strategy
                if strategy == "even":
                    nxt = even_next(shape[0], picked)
                elif strategy == "random":
                    free = [i for i in range(shape[0]) if i not in picked]
                    nxt = int(free[int(rng.integers(len(free)))])
                else:
                    ranked = rank_slices(image, model, ann, count=1, device=device, cancel=cancel)
                    nxt, why = ranked.suggested[0], ranked.reasons[0]
                t_pick = time.perf_counter() - t1
                picked.append(nxt)
                ann[nxt] = truth[nxt]
                t2 = time.perf_counter()
                model = continue_training(
                    image, ann, model, epochs=round_epochs, minutes=None, device=device, cancel=cancel
                )
                t_train = time.perf_counter() - t2
                d, per = score(model)
                result.runs.append(
                    {
                        "pred": len(preds) - 1,
                        "strategy": strategy,
                        "repeat": rep,
                        "round": k,
                        "slices": k + 1,
                        "added": nxt,
                        "why": why,
                        "annotated": list(picked),
                        "mean_dice": d,
                        "dice": per,
                        "train_seconds": t_train,
                        "pick_seconds": t_pick,
                    }
                )
                done += 1
                yield Progress(
                    done,
                    total,
                    f"repeat {rep + 1}/{repeats}, {strategy}, {k + 1} slices (+{nxt}): Dice {d:.4f}",
                    {"run": result.runs[-1]},
                )
        _score_held_out(result.runs[first_run:], preds, truth)
    result.summary = _loop_summary(result.runs)
    if outdir is not None:
        (outdir / "study.json").write_text(
            json.dumps({**asdict(result), "provenance": provenance()}, indent=1), encoding="utf-8"
        )
        (outdir / "study.md").write_text(result.table() + "\n", encoding="utf-8")
        what = ", ".join(f"{k}={v}" for k, v in phantom.items()) or "default sample"
        loop_plot(
            result.summary,
            outdir / "study.png",
            overwrite=True,
            title=f"Sample {shape[0]}x{shape[1]}x{shape[2]} ({what}), "
            f"{'unet/' + size if init is None else 'unet3d, pretrained start'}, "
            f"{epochs} + {round_epochs}/round epochs, {repeats} repeats",
        )
        result.files = {
            "json": str(outdir / "study.json"),
            "table": str(outdir / "study.md"),
            "plot": str(outdir / "study.png"),
        }
    return result


def loop_study(*, progress: ProgressCallback | None = None, **kwargs: Any) -> LoopStudyResult:
    """Simulate the annotation loop and measure which next-slice strategy pays.

    An annotator starts from one slice (the truth of the middle slice along Z), trains a
    first model, then adds one slice per round, taken from the truth, and continues
    training from the current model for a fixed budget (:func:`~napari_xrayseg.core.
    annotation.continue_training`). Each strategy picks the next slice its own way:

    - ``"even"``: the middle of the widest gap between annotated slices (volume ends
      count as annotated), so the slices stay evenly spaced;
    - ``"suggest"``: the first of :func:`~napari_xrayseg.suggest_slices` for the current
      model (where it contradicts itself, spread out; the middle of the widest gap where no
      slice stands out: each run's ``"why"`` says ``"score"`` or ``"gap"``);
    - ``"random"``: a uniformly random slice not yet annotated.

    After every round the whole volume is segmented and scored against the full truth
    (mean Dice over the classes). All strategies of a repeat share the first model;
    repeats differ by training seed (and the random strategy's draws). Validation is off
    (``val_fraction=0``): every annotated slice is trained on, the last weights are kept.

    Parameters
    ----------
    shape : (int, int, int)
        Sample size (Z, Y, X).
    seed : int
        Sample seed.
    strategies : sequence of str
        Any of ``"even"``, ``"suggest"``, ``"random"``.
    rounds : int
        Annotated slices at the end (one per round, the first training included).
    repeats : int
        Repeats (training seeds).
    size, context, epochs, steps_per_epoch, patch, batch, device
        First training, as for :func:`~napari_xrayseg.train` (an epoch budget, not
        minutes, so a loaded machine gives the same numbers, only later).
    round_epochs : int, optional
        Epochs per later round; default ``ceil(fraction x epochs)``.
    fraction : float
        See ``round_epochs``.
    phantom : dict, optional
        Extra :func:`~napari_xrayseg.make_phantom` arguments (e.g. ``noise``,
        ``feature_size``, ``n_angles``) for harder data.
    start : int, optional
        The first annotated slice (default: the middle one).
    init : {None, "pretrained"}
        The first model's weights: None trains the 2.5D ``unet`` of ``size`` and ``context``
        from random weights; ``"pretrained"`` fine-tunes the shipped 3D start (``unet3d``
        medium, context 15; ``size`` and ``context`` are ignored) for ``epochs`` and blends it
        back in (the share 0.5, as there are no validation rows), as ``train`` does by
        default on scans like the start's family. The rounds continue from either.
    out : path-like, optional
        Folder for ``study.json``, ``study.md`` (table) and ``study.png`` (Dice per round).
    overwrite : bool
        Write into a non-empty ``out``.
    cancel, progress
        As everywhere.

    Returns
    -------
    LoopStudyResult

    Raises
    ------
    InputError
        On an unknown strategy or bad sizes.
    OutputExistsError
        If ``out`` is a non-empty folder and ``overwrite`` is False.
    """
    return drain(iter_loop_study(**kwargs), progress)
