"""The ``xrayseg`` command line: batch work without a GUI.

Every subcommand calls the same core functions as the widgets and the console.
Errors the user can fix (:class:`~napari_xrayseg.core.errors.XraysegError`) are
printed as one line on stderr with exit code 2; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .core.config import ARCH_NAMES, MODEL_TILE, SUGGEST_MARGIN, SegmentConfig, TrainConfig

__all__ = ["build_parser", "main"]

log = logging.getLogger("napari_xrayseg.cli")
_S = SegmentConfig()
_T = TrainConfig()


def _duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class _ProgressPrinter:
    """Prints progress records to stderr, at most every ``every`` seconds (always the last).

    Each line ends with the time so far and, once the fraction has moved, an estimate of the
    time left (from the rate since the first record: a resumed run's skipped part is not
    counted as speed). ``rate`` keeps the last ``voxels_per_s`` a record reported.
    """

    def __init__(self, label: str, every: float = 1.0) -> None:
        self.label, self.every, self._last = label, every, 0.0
        self.tty = sys.stderr.isatty()
        self._start: tuple[float, float] | None = None  # (time, fraction) of the first record
        self.rate: float | None = None

    def _times(self, now: float, fraction: float, final: bool) -> str:
        if self._start is None:
            self._start = (now, fraction)
            return ""
        t0, f0 = self._start
        elapsed = now - t0
        if final or fraction <= f0 or elapsed < 2:
            return f" ({_duration(elapsed)})" if elapsed >= 2 else ""
        left = elapsed * (1 - fraction) / (fraction - f0)
        return f" ({_duration(elapsed)}, about {_duration(left)} left)"

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        final = p.step >= p.total
        if "voxels_per_s" in p.info:
            self.rate = float(p.info["voxels_per_s"])
        times = self._times(now, p.fraction, final)
        if not final and now - self._last < self.every and "val_dice" not in p.info:
            return
        self._last = now
        line = f"{self.label}: [{100 * p.fraction:5.1f}%] {p.message}{times}"
        if self.tty and not final and "val_dice" not in p.info:
            import shutil

            width = max(40, shutil.get_terminal_size((150, 24)).columns - 1)  # one row: wider wraps on 80 columns
            sys.stderr.write("\r" + line[:width].ljust(width))
        else:
            sys.stderr.write(("\r" if self.tty else "") + line + "\n")
        sys.stderr.flush()


# --------------------------------------------------------------------------- commands


def _cmd_sample(a: argparse.Namespace) -> int:
    from .core.io import write_volume
    from .core.output import claim, released_on_error
    from .core.sample import PHASES, make_phantom

    if a.annotate and (a.annotate < 0 or len(a.shape) != 3):
        from .core.errors import InputError

        raise InputError(f"--annotate {a.annotate}: give a positive number of slices and a 3D --shape Z Y X")
    out = Path(a.out)
    owns = ("image.zarr", "truth.zarr", "annotations.zarr")
    # beside the final folder until complete, a new sample too (QA: a full disk left half an image.zarr that
    # read as a finished sample, its missing chunks as zeros)
    target = claim(out, overwrite=a.overwrite, empty_ok=True, owns=owns, beside=True)
    t0 = time.perf_counter()
    image, truth = make_phantom(
        tuple(a.shape), seed=a.seed, noise=a.noise, feature_size=a.feature_size, pillar=a.pillar, preset=a.preset
    )
    with released_on_error(target):  # a failed run lets go of the output's lock at once
        work = target.take()
        chunks = (min(16, image.shape[0]), *image.shape[1:]) if image.ndim == 3 else None
        attrs = {
            "napari_xrayseg": {
                "sample": "pxct-phantom",
                "seed": a.seed,
                "preset": a.preset,
                "noise": a.noise,
                "feature_size": a.feature_size,
                "pillar": a.pillar,
                "phases": {str(k): v for k, v in PHASES.items()},
            }
        }
        names = {"classes": list(PHASES), "class_names": list(PHASES.values())}  # analyze / evaluate name the phases
        label_attrs = {"napari_xrayseg": {**attrs["napari_xrayseg"], **names}}
        write_volume(work / "image.zarr", image, chunks=chunks, attrs=attrs)
        write_volume(work / "truth.zarr", truth, chunks=chunks, attrs=label_attrs)
        written = f"{out}/image.zarr and {out}/truth.zarr"
        if a.annotate:
            from .core.demo import annotate_slices

            ann, idx = annotate_slices(truth, min(a.annotate, truth.shape[0]))
            write_volume(work / "annotations.zarr", ann, chunks=chunks, attrs=label_attrs)
            written += f", and the truth of slices {idx} (0 elsewhere) to {out}/annotations.zarr"
        target.commit()
    print(f"wrote sample {image.shape} (seed {a.seed}) to {written} in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_init_model(a: argparse.Namespace) -> int:
    from .core.models import init_model, save_model

    m = init_model(a.arch, size=a.size, classes=a.classes, seed=a.seed, tile=a.tile, context=a.context)
    path = save_model(m, a.out, overwrite=a.overwrite)
    print(
        f"wrote untrained {m.info.arch} ({m.info.size}) model with classes {m.info.classes}, context "
        f"{m.info.context}, stride {m.info.stride} to {path}"
    )
    return 0


def _tile_arg(value: str) -> int | str:
    """``--tile``: ``auto`` or a whole number of pixels."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not 'auto' or a whole number of pixels") from None


def _axis_arg(value: str) -> int:
    """``--axis``: a number, or the letter of a volume's axis (``z``, ``y``, ``x``), as the API and ``--axes`` take."""
    v = value.strip().lower()
    if v in ("z", "y", "x"):
        return "zyx".index(v)
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an axis: give 0, 1, 2 or z, y, x") from None


_COMPILE = {"auto": "auto", "on": True, "off": False}  # --compile -> SegmentConfig.compile


def _slices_hint(a: argparse.Namespace) -> None:
    """Warn when a folder given to a volume model looks like the slices of one volume (``--stack`` segments it so)."""
    from .core.errors import XraysegError
    from .core.io import TiffStack, slice_files
    from .core.models import read_model_info

    folders = [p for p in map(Path, a.image) if p.is_dir() and len(slice_files(p)) >= 3]
    if not folders:
        return
    try:
        info = read_model_info(a.model)
    except XraysegError:
        return  # the run says what is wrong with the model
    if info.two_d or (info.context <= 1 and info.arch != "unet3d"):
        return  # a model of independent 2D images: a folder of them is what it segments
    for folder in folders:
        try:
            stack = TiffStack(folder)
        except XraysegError:
            continue  # files of several shapes: independent images
        log.warning(
            "%s holds %d TIFF images of one size (%s): they are segmented one by one as independent 2D images, "
            "without the neighbouring slices this model (context %d) uses; if they are the slices of one volume, "
            "add --stack",
            folder,
            stack.shape[0],
            "x".join(map(str, stack.shape[1:])),
            info.context,
        )


def _cmd_predict(a: argparse.Namespace) -> int:
    from .core.batch import is_collection
    from .core.device import tune_allocator
    from .core.inference import segment
    from .core.io import open_volume

    tune_allocator()  # a CLI process is ours alone: keep freed activations (+19 %, docs/performance.md)

    if a.stack:
        if len(a.image) != 1 or not Path(a.image[0]).is_dir():
            from .core.errors import InputError

            raise InputError("--stack takes one --image: a folder of the 2D TIFF slices of one volume")
    elif len(a.image) > 1 or a.format is not None or a.summary is not None or is_collection(a.image[0]):
        _slices_hint(a)
        return _predict_many(a)
    a.image = a.image[0]
    if a.rgb is not None:
        from .core.channels import check_rgb_mode
        from .core.io import open_image
        from .core.models import read_model_info

        check_rgb_mode(a.rgb, read_model_info(a.model).channels)
        image = open_image(a.image, dataset=a.dataset, rgb=a.rgb)
    else:
        image = open_volume(a.image, dataset=a.dataset)
    kw = {
        "axis": a.axis,
        "tile": a.tile,
        "overlap": a.overlap,
        "batch": a.batch,
        "device": a.device,
        "slab": a.slab,
        "precision": a.precision,
        "overwrite": a.overwrite,
        "resume": a.resume,
        "pyramid": a.pyramid,
        "axes": a.axes,
        "confidence": a.confidence,
        "tta": a.tta,
        "compile": _COMPILE[a.compile],
        "confidence_out": a.confidence_out,
        "voxel_size": a.voxel_size,
        "unit": a.unit,
        "nodata": a.nodata,
        "channel_axis": a.channel_axis,
        "progress": _ProgressPrinter("predict"),
    }
    printer = kw["progress"]
    t0 = time.perf_counter()
    from .core.writer import output_complete

    was_complete = bool(a.resume and not a.overwrite and a.out and output_complete(a.out))
    if a.resume and not a.overwrite and a.out and not was_complete and Path(a.out).exists():
        from .core.writer import slabs_done

        n = slabs_done(a.out)
        if n is not None:  # said at once: the first progress line comes only after the first slab
            print(
                f"predict: resuming {a.out}: {n} slab{'s' if n != 1 else ''} already done",
                file=sys.stderr,
            )
    from .core.errors import Cancelled
    from .core.progress import CancelToken, signals_cancel

    token = CancelToken()
    kw["cancel"] = token
    got: list[int] = []
    note = (
        "predict: stopping after the current slab (Ctrl-C again quits at once); the same command with --resume "
        "continues"
        if a.workers is None and not a.scheduler
        else "predict: stopping; slabs already running on the cluster may still finish into this output (never "
        "into a later run's; Ctrl-C again quits at once); the same command with --resume continues"
    )
    try:
        with signals_cancel(token, note, got):  # SIGTERM (a batch system's time limit) too: said, not silent
            if a.workers is not None or a.scheduler:  # --workers 0 is refused there, not run in one process
                from .core.distributed import segment_distributed

                if a.verbose == 0:  # the cluster's start and stop (~30 INFO lines) only with -v
                    try:
                        import distributed  # noqa: F401  (configures its loggers on import: set the level after)
                    except ImportError:
                        pass  # segment_distributed says what to install, in one line
                    else:
                        logging.getLogger("distributed").setLevel(logging.WARNING)

                result = segment_distributed(
                    a.image,
                    a.model,
                    a.out,
                    dataset=a.dataset,
                    scheduler=a.scheduler,
                    workers=a.workers,
                    threads_per_worker=a.threads_per_worker,
                    torch_threads=a.torch_threads,
                    **kw,
                )
            else:
                from .core.output import check_not_input

                # an image read into memory (PNG, JPEG) has no path the core could see: the output may not replace it
                for out, option in ((a.out, "--out"), (a.confidence_out, "--confidence-out")):
                    if out is not None:
                        check_not_input(out, [a.image], option=option)
                result = segment(image, a.model, out=a.out, **kw)
    except Cancelled:
        term = signal.SIGTERM in got
        kept = ""
        if a.out:  # QA s45: said after a cancel before any slab finished too
            from .core.writer import SlabMarkers

            kept = (
                f": the finished slabs are kept in {a.out}, the same command with --resume continues"
                if SlabMarkers(a.out).any_done()
                else f": no slab was finished; the same command with --resume (or --overwrite) starts {a.out} again"
            )
        print(f"xrayseg predict: {'terminated' if term else 'interrupted'}{kept}", file=sys.stderr)
        return 143 if term else 130
    dt = time.perf_counter() - t0
    labels = result[0] if isinstance(result, tuple) else result
    shape = tuple(int(n) for n in labels.shape)  # the labels' (a multi-channel image has one more axis)
    nvox = 1
    for s in shape:
        nvox *= s
    kind = "OME-Zarr pyramid" if a.pyramid else "uint8 zarr"
    if was_complete:
        print(f"{a.out} was complete already (the same image, model and settings): nothing left to do")
        return 0
    # the rate of the slabs this run computed (a resumed run skipped some: total / time overstated it)
    rate = printer.rate if a.resume and printer.rate else nvox / dt
    print(f"wrote labels {shape} ({kind}) to {a.out} ({dt:.1f} s, {rate / 1e6:.2f} Mvox/s)")
    if a.confidence:
        from .core.writer import sibling_path

        where = a.confidence_out or sibling_path(a.out, "-" + a.confidence)
        print(f"wrote {a.confidence} confidence (float32) to {where}")
    return 0


def _predict_many(a: argparse.Namespace) -> int:
    """``xrayseg predict`` over several inputs (repeated --image, a folder, a list file) into the folder --out."""
    from .core.batch import check_summary_path, segment_many
    from .core.errors import InputError

    for flag, v in (("--workers", a.workers), ("--scheduler", a.scheduler), ("--confidence-out", a.confidence_out)):
        if v is not None:
            raise InputError(f"{flag} segments one volume: give a single --image (a batch names its outputs itself)")
    from .core.errors import Cancelled
    from .core.progress import CancelToken, signals_cancel

    replace_summary = False
    if a.summary is not None:  # refuse a bad or taken summary path now, not after the whole batch
        replace_summary = check_summary_path(a.summary, overwrite=a.overwrite)
    token = CancelToken()
    note = "predict: stopping after the current slab (Ctrl-C again quits at once); the same command continues"
    got: list[int] = []
    try:
        with signals_cancel(
            token, note, got
        ):  # the first Ctrl-C (or SIGTERM) stops cleanly: the table says what is done
            summary = _segment_many(a, segment_many, token)
    except Cancelled as e:
        done = getattr(e, "result", None)
        if done is not None:
            print(done.table())
            if a.summary is not None:
                print(f"wrote the summary to {done.write(a.summary, overwrite=replace_summary)}")
        term = signal.SIGTERM in got
        print(
            f"xrayseg predict: {'terminated' if term else 'interrupted'}: finished inputs are kept, and the same "
            "command skips them and resumes the one cut short",
            file=sys.stderr,
        )
        return 143 if term else 130
    print(summary.table())
    if a.summary is not None:
        print(f"wrote the summary to {summary.write(a.summary, overwrite=replace_summary)}")
    failed = summary.failed
    if failed:
        names = ", ".join(r.name for r in failed[:5]) + (", ..." if len(failed) > 5 else "")
        rest = (
            "the others are written, and a rerun skips them"
            if len(failed) < len(summary.results)
            else "no output was written" + (" (only the summary, which says why)" if a.summary is not None else "")
        )
        raise InputError(f"{len(failed)} of {len(summary.results)} inputs failed ({names}): see the table; {rest}")
    return 0


def _segment_many(a: argparse.Namespace, segment_many: Any, token: Any) -> Any:
    return segment_many(
        a.image,
        a.model,
        out_dir=a.out,
        fmt=a.format or "tiff",
        dataset=a.dataset,
        rgb=a.rgb,
        axis=a.axis,
        tile=a.tile,
        overlap=a.overlap,
        batch=a.batch,
        device=a.device,
        slab=a.slab,
        precision=a.precision,
        overwrite=a.overwrite,
        resume=a.resume,
        pyramid=a.pyramid,
        axes=a.axes,
        confidence=a.confidence,
        tta=a.tta,
        compile=_COMPILE[a.compile],
        voxel_size=a.voxel_size,
        unit=a.unit,
        nodata=a.nodata,
        channel_axis=a.channel_axis,
        progress=_ProgressPrinter("predict"),
        cancel=token,
    )


def _cmd_study(a: argparse.Namespace) -> int:
    if a.strategy:
        return _cmd_loop_study(a)
    from .core.errors import InputError
    from .core.study import study

    for flag, v in (
        ("--rounds", a.rounds),
        ("--round-epochs", a.round_epochs),
        ("--init", a.init),
        ("--preset", a.preset),
        ("--noise", a.noise),
        ("--feature-size", a.feature_size),
        ("--n-angles", a.n_angles),
    ):
        if v is not None:
            raise InputError(f"{flag} belongs to the annotation-loop study: add --strategy even suggest random")
    minutes = 1.0 if a.minutes is None else a.minutes
    res = study(
        shape=tuple(a.shape or (64, 128, 128)),
        seed=a.seed,
        slices=a.slices,
        modes=a.modes,
        axes=a.axes,
        repeats=a.repeats,
        size=a.size,
        context=1 if a.context is None else a.context,
        minutes=minutes if minutes > 0 else None,
        epochs=40 if a.epochs is None else a.epochs,
        patch=a.patch,
        batch=a.batch,
        steps_per_epoch=a.steps,
        device=a.device,
        out=a.out,
        overwrite=a.overwrite,
        progress=_ProgressPrinter("study", every=0.0),
    )
    print(res.table())
    print(f"wrote {res.files['table']}, {res.files['json']} and {res.files['plot']}")
    return 0


def _cmd_loop_study(a: argparse.Namespace) -> int:
    from .core.errors import InputError
    from .core.study import loop_study

    if a.minutes is not None:
        raise InputError(
            "the annotation-loop study budgets training in epochs (same numbers on a busy machine): "
            "use --epochs and --round-epochs instead of --minutes"
        )
    phantom = {
        k: v
        for k, v in (
            ("preset", a.preset),
            ("noise", a.noise),
            ("feature_size", a.feature_size),
            ("n_angles", a.n_angles),
        )
        if v is not None
    }
    res = loop_study(
        shape=tuple(a.shape or (48, 128, 128)),
        seed=a.seed,
        strategies=a.strategy,
        rounds=6 if a.rounds is None else a.rounds,
        repeats=a.repeats,
        size=a.size,
        context=3 if a.context is None else a.context,
        epochs=12 if a.epochs is None else a.epochs,
        round_epochs=a.round_epochs,
        patch=a.patch,
        batch=a.batch,
        steps_per_epoch=a.steps,
        phantom=phantom,
        init=a.init,
        device=a.device,
        out=a.out,
        overwrite=a.overwrite,
        progress=_ProgressPrinter("study", every=0.0),
    )
    print(res.table())
    print(f"wrote {res.files['table']}, {res.files['json']} and {res.files['plot']}")
    return 0


def _cmd_suggest(a: argparse.Namespace) -> int:
    from .core.annotation import rank_slices
    from .core.inference import recorded_nodata
    from .core.io import open_volume
    from .core.normalize import mark_missing, model_nodata

    recorded = recorded_nodata(a.model)  # the model's, as predict takes it
    image = mark_missing(open_volume(a.image, dataset=a.dataset), model_nodata(a.nodata, recorded))
    labels = open_volume(a.labels, dataset=a.labels_dataset) if a.labels else None
    ranking = rank_slices(
        image,
        a.model,
        labels,
        axis=a.axis,
        count=a.count,
        measure=a.measure,
        novelty=a.novelty,
        margin=a.margin,
        max_slices=a.max_slices or None,
        device=a.device,
        progress=_ProgressPrinter("suggest"),
    )
    picks = ranking.suggested
    if not picks:
        print(
            f"xrayseg suggest: every slice along axis {a.axis} is annotated (1 % or more of it painted, planes "
            "painted along the other axes left out): nothing to suggest; try another --axis",
            file=sys.stderr,
        )
        return 0
    fewer = f" (only {len(picks)} without annotations)" if len(picks) < a.count else ""
    print(f"xrayseg suggest: annotate these slices along axis {a.axis} next, best first{fewer}:", file=sys.stderr)
    for i in picks:
        print(i)  # stdout: one index a line, for scripts
    gaps = [s for s, why in zip(picks, ranking.reasons) if why == "gap"]
    if gaps:  # said on stderr: the indices stay the only output
        print(
            f"xrayseg suggest: {', '.join(map(str, gaps))}: no slice's score stands out there, so the middle of the "
            "widest gap between annotated slices",
            file=sys.stderr,
        )
    return 0


def _cmd_model_info(a: argparse.Namespace) -> int:
    from .core.models import read_model_info

    print(json.dumps(read_model_info(a.model).to_dict(), indent=2))
    return 0


def _cmd_info(a: argparse.Namespace) -> int:
    from .core.info import describe_file

    print(json.dumps(describe_file(a.path), indent=2))
    return 0


def _train_pairs(a: argparse.Namespace) -> tuple[Any, Any, bool | None]:
    """The (image, labels) pairs `train` was given: repeated --image/--labels, a folder pair or a list file."""
    from .core.errors import InputError
    from .core.io import is_image_folder, open_image, pair_image_folders

    images, labels = a.image, a.labels or []
    two_d = a.two_d
    if len(images) == 1 and Path(images[0]).suffix.lower() == ".txt" and not labels:
        pairs = _list_file(Path(images[0]))
    elif len(images) == 1 and is_image_folder(images[0]) and not (len(labels) == 1 and Path(labels[0]).is_file()):
        # (a folder of TIFF slices with one labels volume is that volume: open_volume stacks it)
        if len(labels) != 1 or not Path(labels[0]).is_dir():
            raise InputError(f"--image {images[0]} is a folder of images: give --labels a folder of label files")
        pairs = pair_image_folders(images[0], labels[0])
        two_d = True if two_d is None else two_d
    else:
        if len(labels) != len(images):
            raise InputError(
                f"{len(images)} --image but {len(labels)} --labels: give one --labels per --image "
                "(or an --image list file of IMAGE LABELS lines)"
            )
        pairs = [(Path(i), Path(lab)) for i, lab in zip(images, labels)]
    if len(pairs) == 1:
        ((i, lab),) = pairs
        return (
            open_image(i, dataset=a.dataset, rgb=a.rgb),
            open_image(lab, dataset=a.labels_dataset),
            two_d,
        )
    if a.dataset or a.labels_dataset:
        raise InputError("--dataset / --labels-dataset name one array: use them with one --image and --labels")
    imgs = [open_image(i, rgb=a.rgb) for i, lab in pairs if lab is not None]
    labs = [open_image(lab) for _, lab in pairs if lab is not None]
    n_skip = sum(lab is None for _, lab in pairs)
    if n_skip:
        print(f"{n_skip} of {len(pairs)} images have no label file: not annotated, not used")
    return imgs, labs, two_d


def _train_names(a: argparse.Namespace) -> Any:
    """``--names``, else the names the (first) labels' store records, else None."""
    if a.names:
        return a.names
    from .core.io import read_class_names

    first = (a.labels or [None])[0]
    return read_class_names(first, dataset=a.labels_dataset) if first else None


def _list_file(path: Path) -> list[tuple[Path, Path | None]]:
    """Pairs from a list file: one ``IMAGE LABELS`` line per pair (tab- or space-separated; LABELS optional)."""
    from .core.batch import read_list_text
    from .core.errors import InputError

    pairs: list[tuple[Path, Path | None]] = []
    for n, line in enumerate(read_list_text(path).splitlines(), 1):  # a BOM (Notepad) is no path
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) > 2:
            raise InputError(
                f"{path} line {n}: {len(parts)} paths; write IMAGE LABELS (tab-separated if paths hold spaces)"
            )
        img, lab = (path.parent / parts[0].strip()), (path.parent / parts[1].strip() if len(parts) == 2 else None)
        pairs.append((img, lab))
    if not pairs:
        raise InputError(f"list file {path} names no images: write one IMAGE LABELS line per pair")
    return pairs


def _training(cmd: str, a: argparse.Namespace, run: Any) -> Any:
    """``run(token)``, a training that ``token`` cancels (Ctrl-C, SIGTERM): its model, or an exit status.

    A cancelled run saves the model it kept to ``--out`` (exit 130, 143 for SIGTERM); a model
    that cannot be saved is rescued next to it (:func:`~napari_xrayseg.core.models.raise_rescued`).
    """
    from .core.errors import Cancelled, OutputExistsError, OutputWriteError
    from .core.models import raise_rescued, save_model
    from .core.progress import CancelToken, signals_cancel

    token = CancelToken()
    note = f"xrayseg {cmd}: stopping; the model so far goes to {a.out} (Ctrl-C again: quit, save nothing)"
    got: list[int] = []
    try:
        with signals_cancel(token, note, got):
            return run(token)
    except (OutputWriteError, OutputExistsError) as e:  # trained, then the disk was full: the model rides on it
        raise_rescued(e, getattr(e, "result", None), a.out)
    except Cancelled as e:
        kept = getattr(e, "result", None)
        term = signal.SIGTERM in got
        if kept is None or kept.path is not None:  # nothing new: not one epoch, or continue-training's --model kept
            how = "terminated" if term else "interrupted"
            why = "before the first epoch finished" if kept is None else f"({e})"  # e: why the start was kept
            print(f"xrayseg {cmd}: {how} {why}; nothing was saved", file=sys.stderr)
            return 143 if term else 130
        try:
            path = save_model(kept, a.out, overwrite=a.overwrite)
        except (OutputWriteError, OutputExistsError) as err:  # a full disk as the time limit struck
            raise_rescued(err, kept, a.out)
        how = "terminated" if term else "interrupted"
        print(f"xrayseg {cmd}: {how}, {e}: wrote the model so far to {path}", file=sys.stderr)
        return 143 if term else 130


def _cmd_train(a: argparse.Namespace) -> int:
    image, labels, two_d = _train_pairs(a)
    t0 = time.perf_counter()
    model = _training("train", a, lambda token: _train_run(a, image, labels, two_d, token))
    if isinstance(model, int):
        return model
    t = model.info.train
    inputs = f"{len(t['inputs'])} {'2D images' if model.info.two_d else 'volumes'}, " if t.get("inputs") else ""
    print(
        f"wrote model to {model.path}: {model.info.arch} ({model.info.size}, {t.get('mode', 'supervised')}), "
        f"{inputs}classes {model.info.classes}, "
        f"{len(model.info.history)} epochs{' (the kept start' + chr(39) + 's)' if t.get('starts') else ''} "
        f"in {time.perf_counter() - t0:.0f} s, "
        f"validation Dice {_fmt(model.info.validation[0])} ({model.info.validation[1]})"  # not .format: a { in the path
        + _starts(t)
    )
    return 0


def _train_run(a: argparse.Namespace, image: Any, labels: Any, two_d: bool, token: Any) -> Any:
    """``train`` with the command's options; ``token`` cancels it (Ctrl-C)."""
    from .core.training import train

    return train(
        image,
        labels,
        axis=a.axis,
        arch=a.arch,
        size=a.size,
        epochs=a.epochs,
        minutes=a.minutes,
        steps_per_epoch=a.steps,
        batch=a.batch,
        patch=a.patch,
        lr=a.lr,
        schedule=a.schedule,
        loss=a.loss,
        gamma=a.gamma,
        boundary_weight=a.boundary_weight,
        dropout=a.dropout,
        average=a.average,
        augment=not a.no_augment,
        val_fraction=a.val_fraction,
        seed=a.seed,
        device=a.device,
        precision=a.precision,
        init=a.init,
        blend={"auto": None, "yes": True, "no": False}[a.blend],
        context=a.context,
        mode=a.mode,
        pixel_weight=a.pixel_weight,
        axes=a.axes,
        normalize=a.normalize,
        two_d=two_d,
        channel_axis=0 if a.channel_axis is None and a.rgb == "channels" else a.channel_axis,
        voxel_size=a.voxel_size,
        unit=a.unit,
        class_names=_train_names(a),
        nodata=_given_nodata(a),
        out=a.out,
        overwrite=a.overwrite,
        progress=_ProgressPrinter("train"),
        cancel=token,
    )


def _cmd_continue_training(a: argparse.Namespace) -> int:
    from .core.annotation import continue_training

    a.rgb, a.two_d = None, None  # as the first training read them (the model records its channels)
    image, labels, two_d = _train_pairs(a)
    kw: dict[str, Any] = {"two_d": True} if two_d else {}
    if a.blend != "auto":
        kw["blend"] = a.blend == "yes"
    if a.nodata is not None:  # else the first training's (none: no value)
        kw["nodata"] = _given_nodata(a)
    t0 = time.perf_counter()
    model = _training(
        "continue-training",
        a,
        lambda token: continue_training(
            image,
            labels,
            a.model,
            fraction=a.fraction,
            epochs=a.epochs,
            minutes=a.minutes,
            lr=a.lr,
            seed=a.seed,
            device=a.device,
            precision=a.precision,
            out=a.out,
            overwrite=a.overwrite,
            progress=_ProgressPrinter("continue-training"),
            cancel=token,
            **kw,
        ),
    )
    if isinstance(model, int):
        return model
    r = model.info.train["rounds"][-1]
    blend = r.get("blend_kept")
    print(
        f"wrote model to {model.path}: round {r['round']}, {r.get('epochs_run')} "
        f"epoch{'' if r.get('epochs_run') == 1 else 's'} on "
        f"{len(r.get('annotated_slices') or [])} annotated slices in {time.perf_counter() - t0:.0f} s, "
        f"validation Dice {_fmt(model.info.validation[0])} ({model.info.validation[1]})"
        + ("" if blend is None else f"; kept {blend:g} x the round's weights + {1 - blend:g} x the model's")
    )
    return 0


def _starts(t: dict[str, Any]) -> str:
    """With ``--init auto``: which start was kept, and both validation scores."""
    starts = t.get("starts")
    if not starts:
        return ""
    scores = ", ".join(f"{k} {_fmt(v['val_dice']) if v else 'cancelled'}" for k, v in starts.items())
    return f"; kept the {t['start']} start (validation Dice {scores})"


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _cmd_self_train(a: argparse.Namespace) -> int:
    from .core.io import open_volume
    from .core.selftrain import self_train

    image = open_volume(a.image, dataset=a.dataset)
    labels = open_volume(a.labels, dataset=a.labels_dataset) if a.labels else None
    t0 = time.perf_counter()
    model = self_train(
        image,
        a.model,
        labels,
        threshold=a.threshold,
        slices=a.slices,
        minutes=a.minutes,
        epochs=a.epochs,
        seed=a.seed,
        device=a.device,
        out=a.out,
        overwrite=a.overwrite,
        progress=_ProgressPrinter("self-train"),
    )
    st = model.info.train["self_training"]
    head = (
        f"wrote model to {model.path}: fine-tuned on {100 * st['pseudo_fraction']:.1f} % of the voxels of "
        f"{a.image} (confident pseudo-labels on {st['slices']} slices) in {time.perf_counter() - t0:.0f} s; "
    )
    if st.get("label_blend_kept") is not None:
        val, which = model.info.validation
        print(
            f"{head}Dice on your annotated slices {_fmt(st['label_dice_before'])} as it was, {_fmt(val)} now: "
            f"kept {which}"
        )
    else:
        print(
            f"{head}its 'val Dice' is agreement with those pseudo-labels, not accuracy: score it with xrayseg evaluate "
            "(or give --labels: a few painted slices score it and keep only what helps)"
        )
    return 0


def _voxel_size(
    a: argparse.Namespace, path: str, dataset: str | None, ndim: int = 3
) -> tuple[tuple[float, ...], str] | None:
    """``--voxel-size``/``--unit`` if given, else what the file records (converted to ``--unit``).

    ``ndim`` 2: a section's pixel size (y x; a z y x size gives its y and x).
    """
    from .core.io import read_voxel_size
    from .core.units import pick_voxel_size

    given = a.voxel_size
    if ndim == 2 and given is not None and len(given) == 3:
        given = given[1:]
    recorded = read_voxel_size(path, dataset=dataset)
    picked = pick_voxel_size(given, a.unit, None if given else recorded, ndim=ndim)
    if given and picked is not None and recorded is not None:  # say what it replaces (QA s44: nm read as um)
        theirs = pick_voxel_size(None, picked[1], recorded, ndim=ndim)
        if theirs is not None and any(abs(g - f) > 0.01 * f for g, f in zip(picked[0], theirs[0], strict=True)):
            log.warning(
                "--voxel-size %s %s replaces the %s %s that %s records",
                " x ".join(f"{v:g}" for v in picked[0]),
                picked[1],
                " x ".join(f"{v:g}" for v in recorded[0][-ndim:]),
                recorded[1] or "(no unit)",
                path,
            )
    return picked


def _in_voxels(a: argparse.Namespace) -> bool:
    """Whether ``--unit voxel`` asks for lengths in voxels."""
    from .core.units import normalize_unit

    return bool(a.unit) and normalize_unit(a.unit) == "voxel"


def _outputs_free(
    a: argparse.Namespace,
    files: Sequence[tuple[str | None, str, str]],
    inputs: Sequence[str | None],
    figures: str | None = None,
) -> None:
    """Check, before a command computes, the outputs it writes after: a long run never ends on "exists".

    ``files`` are ``(path or None, what, option)``; ``figures`` a folder for ``save_figures``. None
    of them may be one of the ``inputs`` or lie inside one (``--overwrite`` would destroy it).
    """
    from pathlib import Path

    from .core.errors import InputError
    from .core.output import check_not_input, check_writable, claim

    reads = [p for p in inputs if p]
    paths = [p for p, _, _ in files if p is not None] + ([figures] if figures is not None else [])
    if len(set(map(os.path.abspath, paths))) < len(paths):
        raise InputError(f"two outputs share a path ({', '.join(paths)}): give each its own")
    for path, what, option in files:
        if path is None:
            continue
        if Path(path).is_dir():
            raise InputError(f"{what} {path} is a directory: give a file name")
        claim(path, overwrite=a.overwrite, what=what, option=option, inputs=reads)
        check_writable(path, what, option)  # a read-only folder: said now, not after the work
    if figures is not None:
        # the PNGs evaluate writes (a folder that holds the inputs is fine)
        check_writable(Path(figures) / "collage.png", "figures", "--figures")
        from .core.figures import check_figure_folder

        names = ("collage.png", "slice_dice.png")
        for name in names:
            check_not_input(Path(figures) / name, reads, option="--figures")
        check_figure_folder(figures, a.overwrite, names)


def _tortuosity_or_note(cmd: str) -> bool:
    """Whether tortuosity can be solved; if not (no TauFactor), say so once and go on without it."""
    from .core.microstructure import tortuosity_available

    if tortuosity_available():
        return True
    print(
        f"xrayseg {cmd}: note: no tortuosity (it needs TauFactor: pip install 'napari-xrayseg[physics]')",
        file=sys.stderr,
    )
    return False


def _cmd_analyze(a: argparse.Namespace) -> int:
    from .core.errors import InputError
    from .core.io import open_volume, read_class_names
    from .core.microstructure import (
        analyze,
        compare_microstructure,
        microstructure_interval,
        same_shape,
        write_text_file,
    )

    _outputs_free(
        a,
        [(a.json, "JSON output", "--json"), (a.csv, "CSV output", "--csv"), (a.profile, "CSV output", "--profile")],
        [a.labels, a.truth, *(a.spread or []), a.model],
    )
    labels = open_volume(a.labels, dataset=a.dataset)
    if a.profile_axis is None:
        a.profile_axis = "y" if len(labels.shape) == 2 else "z"
    elif len(labels.shape) == 2 and a.profile_axis == "z":
        raise InputError(f"{a.labels} is a 2D section: its profiles run along y or x (--profile-axis y or x)")
    truth = open_volume(a.truth, dataset=a.truth_dataset) if a.truth else None
    spread = [open_volume(p) for p in a.spread or []]
    if truth is not None:
        same_shape([labels, truth], ["--labels", "--truth"])
    if spread:
        same_shape([labels, *spread], ["--labels", *(f"--spread {p}" for p in a.spread)])
    found = _voxel_size(a, a.labels, a.dataset, ndim=2 if len(labels.shape) == 2 else 3)
    if found is None and _in_voxels(a):  # asked for: nothing to note
        voxel, unit = None, "voxel"
    elif found is None:
        unit = f" (--unit {a.unit} converts a voxel size: give one with it)" if a.unit else ""
        print(
            f"xrayseg analyze: note: {a.labels} records no voxel size: numbers are in voxel units (give "
            f"--voxel-size){unit}",
            file=sys.stderr,
        )
        voxel, unit = None, "voxel"
    else:
        voxel, unit = found
    if a.names:
        names: Any = a.names
    elif a.model:
        from .core.models import read_model_info

        info = read_model_info(a.model)
        names = dict(zip(info.classes, info.class_names))
    else:
        names = read_class_names(a.labels, dataset=a.dataset)
    whole = not a.fractions_only
    kw = {
        "voxel_size": voxel,
        "unit": unit,
        "class_names": names,
        "region": a.region,
        "surface": a.surface,
        "connectivity": whole,
        "mean_size": whole,
        "tortuosity": whole and not a.no_tortuosity and _tortuosity_or_note("analyze"),
        "size_distribution": whole and a.size_distribution,
        "device": a.device,
        "max_voxels": a.max_voxels,
        "outside": a.outside,
        "envelope": a.envelope,
        "envelope_radius": a.envelope_radius,
        "tpb_phases": a.tpb_phases,
    }
    t0 = time.perf_counter()
    m = analyze(labels, progress=_ProgressPrinter("analyze"), **kw)
    print(m.table())
    print(f"analysed {m.shape} in {time.perf_counter() - t0:.1f} s")
    out = m.to_dict()
    if truth is not None:
        out["comparison"] = cmp = compare_microstructure(m, analyze(truth, **kw))
        print("prediction vs truth (error %):")
        for k, v in cmp.items():
            if v["error_percent"] is not None:
                print(f"  {k}: {v['pred']:.5g} vs {v['truth']:.5g} ({v['error_percent']:+.2f} %)")
    if a.spread:
        others = [analyze(v, **kw) for v in spread]
        out["interval"] = iv = microstructure_interval([m, *others])
        print(f"interval over {len(others) + 1} segmentations (mean +- std [min, max]):")
        for k, v in iv.items():
            if v["n"] and v["n"] > 1:
                print(f"  {k}: {v['mean']:.5g} +- {v['std']:.2g} [{v['min']:.5g}, {v['max']:.5g}]")
    if a.json:
        if out.get("provenance") and (a.truth or a.spread):  # the other files the numbers came from
            from .core.provenance import describe_input

            more = {"truth": describe_input(a.truth), "spread": describe_input(a.spread) if a.spread else None}
            out["provenance"]["inputs"].update({k: v for k, v in more.items() if v is not None})
        text = json.dumps(out, indent=2) + "\n"
        print(f"wrote {write_text_file(a.json, text, overwrite=a.overwrite, what='JSON')}")
    if a.csv:
        print(f"wrote {m.to_csv(a.csv, overwrite=a.overwrite)}")
    if a.profile:
        print(f"wrote {m.to_profile_csv(a.profile, axis=a.profile_axis, overwrite=a.overwrite)}")
    return 0


def _nodata_arg(text: str) -> float | str:
    """``--nodata``: a number, or ``none`` (not even the model's value)."""
    from .core.normalize import NO_NODATA, is_no_nodata

    if is_no_nodata(text):
        return NO_NODATA
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is no number: give the grey value (e.g. 0), or none") from None


def _add_nodata(p: argparse.ArgumentParser, default: str = "none") -> None:
    p.add_argument(
        "--nodata",
        type=_nodata_arg,
        default=None,
        metavar="V",
        help="grey value of voxels without data, e.g. 0 outside a reconstruction's circular field of view (NaN "
        f"always is): left out of the normalisation, filled from the nearest voxel with data, labelled 0 (default: "
        f"{default}; none: no value)",
    )


def _given_nodata(a: argparse.Namespace) -> float | None:
    """``--nodata`` for a training: ``none`` is no value."""
    from .core.normalize import is_no_nodata

    return None if is_no_nodata(a.nodata) else a.nodata


def _add_voxel_size(p: argparse.ArgumentParser, default: str = "default: what the file records") -> None:
    p.add_argument(
        "--voxel-size",
        type=float,
        nargs="+",
        default=None,
        metavar="V",
        help=f"voxel size: one number (isotropic) or three (z y x; y x for a 2D image); {default}",
    )
    p.add_argument(
        "--unit",
        default=None,
        help="length unit of --voxel-size (nm, um, mm; default um), or the unit to convert the file's voxel size to",
    )


def _add_analyze(sub: Any) -> None:
    from .core.microstructure import AXES, MAX_VOXELS

    p = sub.add_parser(
        "analyze",
        help="microstructure numbers of a label volume in physical units: volume "
        "fractions, surface, connectivity, size, tortuosity, TPB density (of a 2D section: stereological estimates)",
    )
    p.add_argument(
        "--labels", required=True, help="label volume, or a 2D section's labels (zarr, OME-Zarr, TIFF, PNG, HDF5, .npy)"
    )
    p.add_argument("--dataset", default=None, help="array name inside the labels' group / file")
    _add_voxel_size(p)
    p.add_argument(
        "--names",
        nargs="+",
        default=None,
        metavar="NAME",
        help="phase names, one per phase in the order of their label values, or one per label 1, 2, ... (default: "
        "from the labels' store or --model)",
    )
    p.add_argument("--model", default=None, help="take the phase names from this model file")
    p.add_argument(
        "--region",
        default=None,
        metavar="Z0:Z1,Y0:Y1,X0:X1",
        help="analyse this sub-volume only, e.g. 0:256,:,: (empty bounds = whole axis)",
    )
    p.add_argument(
        "--surface",
        choices=["faces", "mesh"],
        default="faces",
        help="surface estimator: voxel faces / 1.5 (isotropic; default) or marching cubes",
    )
    p.add_argument("--no-tortuosity", action="store_true", help="skip the tortuosity solves (the slow part)")
    p.add_argument(
        "--size-distribution",
        action="store_true",
        help="also each phase's continuous size distribution and median diameter d50 (about a minute per 256^3)",
    )
    p.add_argument(
        "--outside",
        type=int,
        default=None,
        metavar="L",
        help="label of voxels outside the sample, e.g. 0 where predict --nodata met no data: not a phase, "
        "numbers per volume of the sample",
    )
    p.add_argument(
        "--envelope",
        type=int,
        default=None,
        metavar="L",
        help="label of what surrounds the sample, e.g. 1 for a pillar in air segmented as pore: per z slice, what "
        "lies beyond the convex hull of the sample's other phases is outside (--outside, default 0)",
    )
    p.add_argument(
        "--envelope-radius",
        type=float,
        default=None,
        metavar="R",
        help="with --envelope, for a sample that is not convex: its phases closed by a disc of R voxels instead of "
        "their convex hull",
    )
    p.add_argument(
        "--tpb-phases",
        type=int,
        nargs=3,
        default=None,
        metavar=("A", "B", "C"),
        help="the three labels whose triple-phase boundary is measured (default: the labels, when there are three)",
    )
    p.add_argument(
        "--fractions-only",
        action="store_true",
        help="only what is computed slab by slab (fractions, surface, TPB): any volume size",
    )
    p.add_argument(
        "--max-voxels",
        type=int,
        default=MAX_VOXELS,
        help=f"largest region held in memory for connectivity, size, tortuosity (default: {MAX_VOXELS})",
    )
    p.add_argument(
        "--device", default="auto", help="where TauFactor solves: auto (default: CUDA if present), cpu, cuda, cuda:N"
    )
    p.add_argument(
        "--truth",
        default=None,
        help="ground-truth labels of the same region: report the error of each number (e.g. TPB density error in %%)",
    )
    p.add_argument("--truth-dataset", default=None, help="array name inside the truth's group / file")
    p.add_argument(
        "--spread",
        nargs="+",
        default=None,
        metavar="LABELS",
        help="other segmentations of the same volume (orthoplane axes, TTA, models): report "
        "mean, std, min and max of each number",
    )
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--csv", default=None, help="write one row per phase as CSV here")
    p.add_argument(
        "--profile",
        default=None,
        metavar="CSV",
        help="write the phase fractions slice by slice along --profile-axis as CSV here (the JSON has all three)",
    )
    p.add_argument(
        "--profile-axis", default=None, choices=list(AXES), help="axis of --profile (default: z; y for a 2D section)"
    )
    _add_overwrite(p)
    p.set_defaults(func=_cmd_analyze)


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from .core.io import open_volume
    from .core.metrics import evaluate

    _outputs_free(
        a, [(a.json, "JSON output", "--json"), (a.csv, "CSV output", "--csv")], [a.pred, a.truth, a.image], a.figures
    )
    pred = open_volume(a.pred, dataset=a.pred_dataset)
    truth = open_volume(a.truth, dataset=a.truth_dataset)
    image = open_volume(a.image) if a.figures and a.image else None
    if image is not None and tuple(image.shape) != tuple(pred.shape):  # said now, not after the scoring
        from .core.errors import InputError

        raise InputError(
            f"--image {a.image} has shape {tuple(image.shape)}, the prediction {tuple(pred.shape)}: give the image "
            "that was segmented (the figures overlay the labels on it)"
        )
    from .core.io import read_class_names

    names = (
        a.names
        or read_class_names(a.pred, dataset=a.pred_dataset)
        or read_class_names(a.truth, dataset=a.truth_dataset)
    )
    physics: Any = False
    if a.physics:
        found = _voxel_size(a, a.pred, a.pred_dataset)
        physics = {
            "tortuosity": not a.no_tortuosity and _tortuosity_or_note("evaluate"),
            "device": a.device,
            "region": a.region,
        }
        if found is not None:
            physics.update(voxel_size=found[0], unit=found[1])
        elif _in_voxels(a):  # lengths in voxels whatever the files record (review: the file's um came back)
            physics.update(unit="voxel")
    report = evaluate(
        pred,
        truth,
        axis=a.axis,
        ignore_zero=not a.zero_is_class,
        classes=a.classes,
        class_names=names,
        microstructure=physics,
        trained_slices=a.trained_slices,
        progress=_ProgressPrinter("evaluate"),
    )
    print(repr(report))
    if a.figures:  # first: the large files, most likely to fail; the JSON and CSV then stay as they were (QA)
        from .core.figures import save_figures

        vox = _voxel_size(a, a.pred, a.pred_dataset)  # --voxel-size, else the prediction's file's
        kw = {"voxel_size": vox[0], "unit": vox[1]} if vox is not None and vox[1] != "voxel" else {}
        for f in save_figures(report, image, pred, truth, a.figures, axis=a.axis, overwrite=a.overwrite, **kw):
            print(f"wrote {f}")
    if a.json:
        print(f"wrote {report.to_json(a.json, overwrite=a.overwrite)}")
    if a.csv:
        print(f"wrote {report.to_csv(a.csv, overwrite=a.overwrite)}")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from .core.demo import run_demo

    run_demo(
        a.out,
        shape=tuple(a.shape),
        seed=a.seed,
        n_slices=a.slices,
        minutes=a.minutes,
        size=a.size,
        overwrite=a.overwrite,
        device=a.device,
        echo=print,
        progress=_ProgressPrinter("demo"),
    )
    return 0


def _cmd_export(a: argparse.Namespace) -> int:
    from .core.bioimageio import export_bioimageio

    image = None
    if a.image:
        from .core.io import open_volume

        image = open_volume(a.image, dataset=a.dataset)
    cite = [{"text": t, ("url" if ref.startswith(("http://", "https://")) else "doi"): ref} for t, ref in a.cite or []]
    t0 = time.perf_counter()
    path = export_bioimageio(
        a.model,
        a.out,
        image=image,
        name=a.name,
        description=a.description,
        authors=a.author or (),
        license=a.license,
        cite=cite,
        side=a.side,
        fixed_bounds=a.fixed_bounds,
        test=not a.no_test,
        overwrite=a.overwrite,
        callback=_ProgressPrinter("export"),
    )
    tested = "not tested (--no-test)" if a.no_test else "bioimageio.core's model test passed"
    print(
        f"wrote bioimage.io model package {path} ({path.stat().st_size / 1e6:.2f} MB, "
        f"{time.perf_counter() - t0:.1f} s; {tested})"
    )
    return 0


def _cmd_import(a: argparse.Namespace) -> int:
    from .core.bioimageio import import_bioimageio
    from .core.models import read_model_info

    path = import_bioimageio(a.package, a.out, overwrite=a.overwrite)
    info = read_model_info(path)
    print(f"wrote {info.arch} ({info.size}) model with classes {info.classes}, context {info.context} to {path}")
    return 0


def _add_bioimageio(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write a model as a bioimage.io model package (zip) that bioimageio.core, ilastik and "
        "deepImageJ run (needs the bioimageio extra)",
    )
    p.add_argument("--model", required=True, help="model file (.safetensors)")
    p.add_argument("--out", required=True, help="package to write (.zip)")
    p.add_argument(
        "--image",
        default=None,
        help="image the package's test input is cropped from (default: the synthetic sample)",
    )
    p.add_argument("--dataset", default=None, help="dataset inside --image (HDF5/zarr group)")
    p.add_argument(
        "--name", default=None, help="package title (letters, digits, spaces, _+-(); default: from the model)"
    )
    p.add_argument("--description", default=None, help="one-sentence description (default: from the model)")
    p.add_argument("--author", action="append", metavar="NAME", help="an author of the model (repeat for several)")
    p.add_argument("--license", default="CC-BY-4.0", help="SPDX licence of the model (default: CC-BY-4.0)")
    p.add_argument(
        "--cite",
        nargs=2,
        action="append",
        metavar=("TEXT", "DOI_OR_URL"),
        help="a reference to cite, e.g. your paper (repeat for several); napari-xrayseg, MONAI and U-Net are cited",
    )
    p.add_argument(
        "--side", type=int, default=128, help="side of the test input, rounded to what the model takes (default: 128)"
    )
    p.add_argument(
        "--fixed-bounds",
        action="store_true",
        help="freeze --image's percentile bounds into the package (exactly napari-xrayseg's result on scans "
        "like it) instead of the percentiles of each slice (for models that normalise per image)",
    )
    p.add_argument("--no-test", action="store_true", help="skip bioimageio.core's model test of the package")
    _add_overwrite(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "import", help="read a package written by `xrayseg export` back into a model file (never unpickles)"
    )
    p.add_argument("package", help="bioimage.io model package (.zip) or its unpacked folder")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    _add_overwrite(p)
    p.set_defaults(func=_cmd_import)


# --------------------------------------------------------------------------- parser


def _add_training_device(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision`` of a command that trains."""
    p.add_argument("--device", default=_T.device, help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument(
        "--precision",
        default=_T.precision,
        choices=["auto", "fp32", "bf16", "fp16"],
        help="arithmetic of the training steps (default auto: mixed on CUDA, bf16 on CPUs with AMX, else fp32)",
    )


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never done silently)")


def add_tta_argument(p: argparse.ArgumentParser) -> None:
    """``--tta [N]``: N test-time views (``segment``'s ``tta``); alone, ``True`` (4 views); absent, ``False``."""
    p.add_argument(
        "--tta",
        nargs="?",
        const=True,
        default=False,
        type=int,
        metavar="N",
        help="test-time augmentation: average the probabilities over N flipped/transposed views of the "
        "slices (N x the work; --tta alone: 4; up to 16, 8 for a 2D model); lowers the error on interfaces",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``xrayseg`` argument parser (also used to generate the CLI reference)."""
    from . import __version__

    parser = _Parser(
        prog="xrayseg",
        description="Segment X-ray tomograms with deep learning (napari-xrayseg).",
        # the docs/*.md that messages name are online (the wheel carries none of them: QA)
        epilog="exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + f". Docs (docs/*.md): {DOCS}",
    )
    parser.add_argument("--version", action="version", version=f"napari-xrayseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    from .core.sample import PRESETS

    p = sub.add_parser("sample", help="write the synthetic three-phase PXCT sample (image + truth) as zarr")
    p.add_argument(
        "--out", required=True, help="output folder (gets image.zarr and truth.zarr, with --annotate annotations.zarr)"
    )
    p.add_argument(
        "--shape",
        type=int,
        nargs="+",
        default=[64, 256, 256],
        metavar="N",
        help="Z Y X (or Y X) shape (default: 64 256 256)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="named settings: default, hard (noisy, blurred, small particles: a random forest "
        "reaches about 0.90 mean Dice from 3 slices), hard-blur (the same forest score from half the noise "
        "and more blur), hard-transfer (a second, harder scan), "
        "hard-layered (the hard scan with a coarser, nickel-rich layer along Z, a fifth of the depth), "
        "hard-thin-layer (the same, a tenth of the depth), hard-infiltrated (the hard scan with a band of "
        "a tenth of the depth where resin fills the pores and raises their grey level)",
    )
    p.add_argument("--noise", type=float, default=None, help="noise level multiplier (default: 1.0 or the preset's)")
    p.add_argument(
        "--feature-size", type=float, default=None, help="particle size in voxels (default: 4.0 or the preset's)"
    )
    p.add_argument(
        "--pillar",
        type=float,
        default=None,
        metavar="R",
        help="the sample as a pillar along Z in air (pore in the truth), radius R of half the side, e.g. 0.7 "
        "(analyze it with --envelope 1)",
    )
    p.add_argument(
        "--annotate",
        type=int,
        default=0,
        metavar="N",
        help="also write annotations.zarr: the truth of N evenly spaced Z slices (fewer where the volume is too thin "
        "for N apart), 0 elsewhere: what a user paints; train on it with --labels",
    )
    _add_overwrite(p)
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("init-model", help="create an untrained model file (to exercise the pipeline)")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    p.add_argument("--arch", default="unet", choices=ARCH_NAMES, help="architecture (default: unet)")
    p.add_argument("--size", default=None, help="size preset: tiny, small, medium, large (default: small)")
    p.add_argument(
        "--context",
        type=int,
        default=1,
        metavar="K",
        help="odd number of slices per input, taken as channels (2.5D; default: 1)",
    )
    p.add_argument("--classes", type=int, default=3, help="number of classes, labels 1..N (default: 3)")
    p.add_argument("--tile", type=int, default=MODEL_TILE, help=f"recommended tile (default: {MODEL_TILE})")
    p.add_argument("--seed", type=int, default=0, help="seed for the initial weights (default: 0)")
    _add_overwrite(p)
    p.set_defaults(func=_cmd_init_model)

    p = sub.add_parser(
        "predict",
        help="segment a volume slice by slice into a uint8 zarr array, or many images into a folder of label files",
    )
    p.add_argument(
        "--image",
        required=True,
        action="append",
        help="input volume or image: zarr array/group, TIFF, HDF5 or .npy; repeat it, or give a folder or a "
        "list file (.txt, one path per line) to segment many into the folder --out",
    )
    p.add_argument("--dataset", default=None, help="array name inside a zarr group or HDF5 file")
    p.add_argument(
        "--stack",
        action="store_true",
        help="the folder --image holds the 2D TIFF slices of one volume (a reconstruction's recon_00000.tif, ...): "
        "segment them as that volume, each slice with its neighbours, into one --out (default: a folder's files "
        "are independent images)",
    )
    p.add_argument(
        "--rgb",
        default=None,
        choices=["luminance", "channels"],
        help="colour 2D images converted as for training (luminance, or R, G, B as three channels); "
        "default: colour images are refused",
    )
    p.add_argument("--model", required=True, help="model file (.safetensors) from init-model or train")
    p.add_argument(
        "--out",
        required=True,
        help="output zarr array (uint8, same shape as the image); for many inputs a folder: one label file per "
        "input, named after its base name",
    )
    p.add_argument(
        "--format",
        choices=["tiff", "zarr"],
        default=None,
        help="many inputs: label files as TIFF (default; 2D for 2D images) or zarr; finished ones are skipped on "
        "a rerun, unfinished ones resumed",
    )
    p.add_argument(
        "--summary",
        default=None,
        metavar="FILE",
        help="many inputs: also write the summary table (file, shape, seconds, Mvox/s, status) to FILE (.csv or .json)",
    )
    p.add_argument(
        "--axis", type=_axis_arg, default=_S.axis, help=f"slicing axis: 0, 1, 2 or z, y, x (default: {_S.axis})"
    )
    p.add_argument(
        "--device", default=_S.device, help="auto (CUDA if present, else Apple MPS, else CPU), cpu, cuda, cuda:N, mps"
    )
    p.add_argument(
        "--tile",
        type=_tile_arg,
        default=_S.tile,
        help="auto (default): whole slices through the network, or tiles with a halo of its receptive field "
        "for slices too large for memory; a number: sliding windows of that side blended with --overlap",
    )
    p.add_argument(
        "--overlap",
        type=float,
        default=_S.overlap,
        help=f"sliding-window overlap with --tile N (default: {_S.overlap})",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=_S.batch,
        help=f"sliding windows per forward pass with --tile N (default: {_S.batch})",
    )
    p.add_argument("--slab", type=int, default=None, help="slices per read/write (default: input chunk depth)")
    p.add_argument(
        "--precision",
        default=_S.precision,
        choices=["auto", "fp32", "bf16", "fp16"],
        help="network arithmetic: auto = fp16 on CUDA, bf16 on CPUs with native bf16, else fp32",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted run into the same --out (same model and settings): slabs already done are skipped",
    )
    p.add_argument(
        "--pyramid",
        action="store_true",
        help="write OME-Zarr with a multiscale pyramid (levels 0, 1, ...) for smooth browsing in napari",
    )
    p.add_argument(
        "--axes",
        default=None,
        help="orthoplane ensemble: segment along these axes and average the class probabilities, "
        "e.g. zyx (all three; one pass each)",
    )
    p.add_argument(
        "--confidence",
        choices=["maxprob", "entropy"],
        default=None,
        help="also write per-voxel confidence (winning probability, or normalised entropy)",
    )
    p.add_argument("--confidence-out", default=None, help="where the confidence goes (default: OUT-KIND.zarr)")
    add_tta_argument(p)
    p.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="torch.compile the network: auto (default) when the job is long enough for it to pay back "
        "(about 10 minutes of network time), on, off",
    )
    _add_voxel_size(p, "written into the outputs; default: what the image records, else the model")
    _add_nodata(p, "the value the model was trained with")
    p.add_argument(
        "--channel-axis",
        type=int,
        default=None,
        metavar="AXIS",
        help="for a multi-channel model: the image's channel axis (default: the axis the model was trained with, "
        "or the one axis holding as many entries as the model has channels)",
    )
    g = p.add_argument_group("dask.distributed (input and output on a file system all workers see)")
    g.add_argument("--workers", type=int, default=None, help="run on a local cluster of N worker processes")
    g.add_argument("--scheduler", default=None, help="run on the cluster of this scheduler, e.g. tcp://host:8786")
    g.add_argument("--threads-per-worker", type=int, default=1, help="tasks at once per local worker (default: 1)")
    g.add_argument("--torch-threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    _add_overwrite(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "study",
        help="data-efficiency study: Dice against the number of annotated slices, on "
        "the synthetic sample; with --strategy, the annotation-loop study",
    )
    p.add_argument("--out", required=True, help="folder for study.md (table), study.json and study.png (plot)")
    p.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=None,
        metavar=("Z", "Y", "X"),
        help="sample size (default: 64 128 128; with --strategy 48 128 128)",
    )
    p.add_argument("--seed", type=int, default=0, help="sample seed (default: 0)")
    p.add_argument(
        "--slices", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="annotated slice counts (default: 1 2 4 8 16)"
    )
    p.add_argument(
        "--modes",
        nargs="+",
        default=["supervised", "pix2pix"],
        choices=["supervised", "pix2pix"],
        help="training modes (default: supervised pix2pix)",
    )
    p.add_argument(
        "--axes",
        nargs="+",
        default=["z", "zyx"],
        choices=["z", "zyx"],
        help="inference: one axis and/or orthoplane (default: z zyx)",
    )
    p.add_argument("--repeats", type=int, default=3, help="repeats per configuration (default: 3)")
    p.add_argument("--size", default="small", help="unet size (default: small)")
    p.add_argument("--context", type=int, default=None, help="context slices (default: 1; with --strategy 3)")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="time budget per model (default: 1; 0 = epochs only; not with --strategy)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs per model at most (default: 40; with --strategy: of the first training, 12)",
    )
    p.add_argument("--patch", type=int, default=64, help="training patch (default: 64)")
    p.add_argument("--batch", type=int, default=8, help="patches per step (default: 8)")
    p.add_argument("--steps", type=int, default=25, help="optimiser steps per epoch (default: 25)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g = p.add_argument_group("annotation-loop study (start from one slice, add one per round, continue training)")
    g.add_argument(
        "--strategy",
        nargs="+",
        default=None,
        choices=["even", "suggest", "random"],
        help="how the simulated annotator picks the next slice: even (widest gap), suggest "
        "(xrayseg suggest), random; several compare them",
    )
    g.add_argument("--rounds", type=int, default=None, help="annotated slices at the end, one per round (default: 6)")
    g.add_argument(
        "--round-epochs", type=int, default=None, help="epochs per later round (default: a quarter of --epochs)"
    )
    g.add_argument(
        "--init",
        default=None,
        choices=["pretrained"],
        help="first model: the shipped 3D pretrained start fine-tuned for --epochs (--size and "
        "--context ignored); default: the 2.5D unet from random weights",
    )
    g.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="sample preset (e.g. hard: noisy, blurred, few angles); --noise etc. override it",
    )
    g.add_argument("--noise", type=float, default=None, help="sample noise multiplier (harder data: e.g. 2)")
    g.add_argument("--feature-size", type=float, default=None, help="sample particle size in voxels (e.g. 3)")
    g.add_argument("--n-angles", type=int, default=None, help="projection angles of the sample (fewer: streaks)")
    _add_overwrite(p)
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser(
        "suggest",
        help="which slices to annotate next: where the model contradicts itself, spread out; "
        "prints indices, best first",
    )
    p.add_argument("--image", required=True, help="input volume: zarr, TIFF, HDF5 or .npy")
    p.add_argument("--dataset", default=None, help="array name inside the image's zarr group / HDF5 file")
    p.add_argument("--model", required=True, help="model file (.safetensors)")
    p.add_argument("--labels", default=None, help="annotations so far (0 = not annotated): never suggested again")
    p.add_argument("--labels-dataset", default=None, help="array name inside the labels' group / file")
    p.add_argument("--axis", type=_axis_arg, default=0, help="slicing axis: 0, 1, 2 or z, y, x (default: 0)")
    p.add_argument("--count", type=int, default=1, help="how many slices (default: 1)")
    p.add_argument(
        "--measure",
        default="orthoplane",
        choices=["orthoplane", "flips", "entropy", "maxprob"],
        help="slice score: share of pixels classed differently along the other two axes (orthoplane, "
        "default), or under flips; or the mean normalised entropy, or 1 - winning probability",
    )
    p.add_argument(
        "--no-novelty",
        dest="novelty",
        action="store_false",
        help="rank by the model's score alone; by default a slice whose grey levels no mix of the annotated "
        "slices' shows has its score multiplied by how new they are",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=SUGGEST_MARGIN,
        help="a slice is suggested over the middle of the widest gap between annotated slices only if it scores "
        f"1 + MARGIN times as high (default: {SUGGEST_MARGIN}; 0 = by score alone)",
    )
    p.add_argument(
        "--max-slices",
        type=int,
        default=64,
        help="score at most this many slices, evenly spaced (default: 64; 0 = all)",
    )
    p.add_argument("--device", default=_S.device, help="auto (CUDA if present), cpu, cuda, cuda:N")
    _add_nodata(p, "the value the model was trained with")
    p.set_defaults(func=_cmd_suggest)

    p = sub.add_parser("train", help="train a model from annotated slices (0 = not annotated)")
    p.add_argument(
        "--image",
        required=True,
        action="append",
        help="input volume (zarr, TIFF, HDF5, .npy) or 2D image (PNG, JPEG, TIFF); repeat for several "
        "pairs; or a folder of 2D images (with --labels a folder: a label file has its image's base name, "
        "any of these extensions; images without one are not annotated); or a .txt list file of "
        "IMAGE LABELS lines",
    )
    p.add_argument("--dataset", default=None, help="array name inside the image's zarr group / HDF5 file")
    p.add_argument(
        "--labels",
        action="append",
        help="labels of the same shape (0 = not annotated), one per --image; or a folder of label files",
    )
    p.add_argument(
        "--names",
        nargs="+",
        default=None,
        metavar="NAME",
        help="class names, one per class in the order of their label values (default: from the labels' store, "
        "e.g. the sample's truth; else 'class N')",
    )
    p.add_argument(
        "--2d",
        dest="two_d",
        action="store_const",
        const=True,
        default=None,
        help="the inputs are independent 2D images (a stack: one image per slice): never each other's "
        "context (default: on for a folder, or several 2D files)",
    )
    p.add_argument(
        "--rgb",
        default=None,
        choices=["luminance", "channels"],
        help="convert colour images: luminance (grey = 0.299 R + 0.587 G + 0.114 B) or channels "
        "(R, G, B as three input channels; default: colour images are refused)",
    )
    p.add_argument(
        "--channel-axis",
        type=int,
        default=None,
        metavar="AXIS",
        help="the images have channels along AXIS (e.g. 1 for Z,C,Y,X stacks of phase and absorption); "
        "stored in the model, which then takes images with as many channels",
    )
    p.add_argument("--labels-dataset", default=None, help="array name inside the labels' group / file")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    p.add_argument(
        "--axis", type=_axis_arg, default=_T.axis, help=f"slicing axis: 0, 1, 2 or z, y, x (default: {_T.axis})"
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock budget in minutes, used in full unless --epochs runs out first",
    )
    p.add_argument("--epochs", type=int, default=None, help="most epochs (default: no cap with --minutes, else 40)")
    p.add_argument(
        "--steps",
        type=int,
        default=_T.steps_per_epoch,
        help=f"optimiser steps per epoch (default: {_T.steps_per_epoch})",
    )
    p.add_argument(
        "--arch",
        default=_T.arch,
        choices=["auto", *ARCH_NAMES],
        help=f"architecture (default: {_T.arch}: unet3d for single-channel volumes at least 15 slices deep "
        "with --epochs or at least 5 --minutes, else unet; see docs/architectures.md)",
    )
    p.add_argument(
        "--size",
        default=None,
        help=f"size preset: tiny, small, medium, large (default: {_T.size} for unet, else small)",
    )
    p.add_argument(
        "--mode",
        default=_T.mode,
        choices=["supervised", "pix2pix"],
        help=f"supervised, or pix2pix: conditional GAN with a PatchGAN discriminator (default: {_T.mode})",
    )
    p.add_argument(
        "--normalize",
        default=_T.normalize,
        choices=["image", "fixed", "slice"],
        help="input normalisation: percentile bounds of each image segmented (robust to another "
        "scan's grey-level offset; per image), the training images' bounds (pooled: per dataset), or "
        "each slice along z levelled onto the volume's typical grey scale first, then the image's bounds "
        "(stitched or drifting scans whose slices disagree; see docs/segment.md) (default: the --init model's "
        "own, else image)",
    )
    p.add_argument(
        "--pixel-weight",
        type=float,
        default=_T.pixel_weight,
        help=f"pix2pix: weight of the segmentation loss vs the adversarial loss (default: {_T.pixel_weight:g})",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="patches per step (default: 8, or 4 sub-volumes for --arch unet3d; the --init model's architecture's)",
    )
    p.add_argument("--patch", type=int, default=_T.patch, help=f"patch side (default: {_T.patch})")
    p.add_argument("--lr", type=float, default=_T.lr, help=f"learning rate (default: {_T.lr})")
    p.add_argument(
        "--schedule",
        default=_T.schedule,
        choices=["cosine", "step", "constant"],
        help=f"learning-rate decay over the epochs or the time budget (default: {_T.schedule}); the Train widget's "
        "'Learning-rate schedule'",
    )
    p.add_argument(
        "--loss", default=_T.loss, choices=["dicece", "ce", "dice", "dice_gamma"], help=f"loss (default: {_T.loss})"
    )
    p.add_argument("--gamma", type=float, default=_T.gamma, help="Dice denominator exponent for dice_gamma")
    p.add_argument(
        "--boundary-weight",
        type=float,
        default=_T.boundary_weight,
        help="cross-entropy weight of annotated interface pixels (default: 1 = off; e.g. 3 for noisy scans)",
    )
    p.add_argument(
        "--dropout",
        type=float,
        default=_T.dropout,
        help="dropout of a new model, in [0, 1) (default: 0.2 for unet medium, 0 for other sizes and archs)",
    )
    p.add_argument(
        "--average",
        type=float,
        default=_T.average,
        help="share of the budget, at its end, whose epochs' weights are averaged into the model "
        f"(default {_T.average}); 0 keeps the best-validation epoch",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=_T.val_fraction,
        help=f"share of the annotated slices (or, under 5 slices, of each slice's rows) held out to validate "
        f"(default: {_T.val_fraction}; 0: none, nothing scores the epochs and the last ones are kept)",
    )
    p.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    p.add_argument(
        "--init",
        default="auto",
        help="where the weights start: 'auto' (default): where it fits (unet3d medium, context 15, one "
        "channel and axis), fine-tune the pretrained start 5 epochs and blend it back in, train from random "
        "weights in the rest of the budget, keep the higher validation Dice; 'pretrained': the start shipped "
        "with the package (unet3d, its classes matched to yours by grey level); 'random'; or a model file to "
        "fine-tune",
    )
    p.add_argument(
        "--blend",
        default="auto",
        choices=["auto", "yes", "no"],
        help="after fine-tuning, keep a x fine-tuned + (1 - a) x the start for the a that validates best: "
        "'auto' (default) for the pretrained start only, 'yes' also for a model file given to --init (as "
        "the annotation loop's rounds do), 'no' never",
    )
    p.add_argument(
        "--axes",
        default=None,
        help="also learn from slices along other axes of an isotropic volume, e.g. zyx (main axis first)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=None,
        metavar="K",
        help="odd number of slices per input: each slice with its K//2 neighbours on each side as "
        f"channels (2.5D; default: the --init model's, else {_T.context} for unet, 15 for unet3d)",
    )
    p.add_argument("--seed", type=int, default=_T.seed, help=f"random seed (default: {_T.seed})")
    _add_training_device(p)
    _add_voxel_size(p)
    _add_nodata(p)
    _add_overwrite(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "continue-training",
        help="one more round of the annotation loop: fine-tune a trained model with all annotations so far",
        description="One more round of training (the Annotate widget's Continue training): a warm start from "
        "--model with every annotation so far, keeping the first training's settings, with FRACTION of its "
        "budget and half its learning rate; the round's weights are blended back with the model's for the share "
        "that validates best. See docs/annotate.md.",
    )
    p.add_argument(
        "--image",
        required=True,
        action="append",
        help="the volume or 2D images the model was trained on (as for train: repeat, a folder, or a list file)",
    )
    p.add_argument("--dataset", default=None, help="array name inside the image's zarr group / HDF5 file")
    p.add_argument(
        "--labels", action="append", help="all annotations so far (0 = not annotated), one per --image; or a folder"
    )
    p.add_argument("--labels-dataset", default=None, help="array name inside the labels' group / file")
    p.add_argument("--model", required=True, help="the trained model to start from (.safetensors; not changed)")
    p.add_argument("--out", required=True, help="model file to write (.safetensors; not --model's own file)")
    p.add_argument(
        "--fraction",
        type=float,
        default=0.25,
        help="share of the first training's budget (epochs, and minutes if it had a time budget) (default: 0.25)",
    )
    p.add_argument("--epochs", type=int, default=None, help="the round's epochs (default: FRACTION of the first's)")
    p.add_argument(
        "--minutes", type=float, default=None, help="the round's time budget (default: FRACTION of the first's)"
    )
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: half the first training's)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the first training's + the round)")
    p.add_argument(
        "--blend",
        default="auto",
        choices=["auto", "yes", "no"],
        help="keep a x the round + (1 - a) x --model for the a that validates best: auto/yes (default), or no "
        "(the round's own weights)",
    )
    _add_training_device(p)
    _add_nodata(p, "the first training's")
    _add_overwrite(p)
    p.set_defaults(func=_cmd_continue_training)

    p = sub.add_parser(
        "self-train",
        help="fine-tune a model on its own confident predictions of a volume (adapt to a new scan without labels)",
    )
    p.add_argument("--image", required=True, help="volume to learn from: zarr, TIFF, HDF5 or .npy")
    p.add_argument("--dataset", default=None, help="array name inside the image's zarr group / HDF5 file")
    p.add_argument("--model", required=True, help="trained model file (.safetensors)")
    p.add_argument(
        "--labels",
        default=None,
        help="a few painted slices of this volume (0 = not annotated), optional: held out of the self-training, "
        "they score it and keep only as much of it as helps",
    )
    p.add_argument("--labels-dataset", default=None, help="array name inside the labels' group / file")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.9,
        help="ensemble probability a voxel needs to become a pseudo-label (default: 0.9)",
    )
    p.add_argument("--slices", type=int, default=12, help="slices that get pseudo-labels (default: 12)")
    p.add_argument("--minutes", type=float, default=None, help="fine-tuning budget in minutes")
    p.add_argument("--epochs", type=int, default=None, help="most epochs (default: 10 without --minutes)")
    p.add_argument("--seed", type=int, default=_T.seed, help=f"random seed (default: {_T.seed})")
    p.add_argument("--device", default=_T.device, help="auto (CUDA if present), cpu, cuda, cuda:N")
    _add_overwrite(p)
    p.set_defaults(func=_cmd_self_train)

    p = sub.add_parser("evaluate", help="Dice, IoU, precision, recall, accuracy vs (sparse) manual labels")
    p.add_argument("--pred", required=True, help="predicted labels (zarr, TIFF, HDF5, .npy)")
    p.add_argument("--pred-dataset", default=None, help="array name inside the prediction's group / file")
    p.add_argument("--truth", required=True, help="manual labels (0 = not annotated unless --zero-is-class)")
    p.add_argument("--truth-dataset", default=None, help="array name inside the truth's group / file")
    p.add_argument("--axis", type=_axis_arg, default=0, help="axis for per-slice Dice: 0, 1, 2 or z, y, x (default: 0)")
    p.add_argument("--zero-is-class", action="store_true", help="count label 0 as a real class")
    p.add_argument(
        "--classes",
        type=int,
        nargs="+",
        default=None,
        metavar="C",
        help="the label values to score (default: every value in the prediction or the truth)",
    )
    p.add_argument(
        "--names",
        nargs="+",
        default=None,
        metavar="NAME",
        help="class names for the tables, one per class in the order of their label values, or one per label 1, "
        "2, ... (default: from the prediction's store)",
    )
    p.add_argument(
        "--trained-slices",
        type=int,
        nargs="*",
        default=None,
        metavar="K",
        help="slices along --axis the model trained on: the others are also scored alone (held out). Default: "
        "what a predict output records when its model trained on that image; with no K: none",
    )
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.add_argument("--csv", default=None, help="write the per-class table as CSV here")
    p.add_argument("--figures", default=None, help="write PNG figures (collage, per-slice Dice) to this folder")
    p.add_argument("--image", default=None, help="raw image for the collage's raw panel (optional)")
    g = p.add_argument_group("microstructure error (how the segmentation error moves the numbers of analyze)")
    g.add_argument(
        "--physics",
        action="store_true",
        help="also compare the microstructure of prediction and truth on the fully annotated box around "
        "the annotations (or --region): volume fractions, surfaces, clusters, sizes, tortuosity, TPB; error in %%",
    )
    g.add_argument(
        "--region", default=None, metavar="Z0:Z1,Y0:Y1,X0:X1", help="reference region (default: the annotated box)"
    )
    g.add_argument("--no-tortuosity", action="store_true", help="skip the tortuosity solves (the slow part)")
    g.add_argument("--device", default="auto", help="where TauFactor runs: auto (CUDA if present), cpu, cuda")
    _add_voxel_size(g, "default: what the prediction's file records")
    _add_overwrite(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("demo", help="the main job on the built-in sample: annotate 3 slices, train, segment, evaluate")
    p.add_argument("--out", default="xrayseg-demo", help="output folder (default: xrayseg-demo)")
    p.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=[48, 192, 192],
        metavar="N",
        help="sample shape Z Y X (default: 48 192 192)",
    )
    p.add_argument("--slices", type=int, default=3, help="annotated slices (default: 3)")
    p.add_argument("--minutes", type=float, default=2.0, help="training budget in minutes (default: 2)")
    p.add_argument("--size", default="small", help="U-Net size (default: small)")
    p.add_argument("--seed", type=int, default=7, help="sample seed (default: 7)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    _add_overwrite(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("model-info", help="print a model file's description (JSON) without loading weights")
    p.add_argument("model", help="model file (.safetensors)")
    p.set_defaults(func=_cmd_model_info)

    p = sub.add_parser(
        "info",
        help="print what a file xrayseg wrote records (JSON): how it was made (provenance: time, software, "
        "command, inputs), its settings",
    )
    p.add_argument("path", help="a model (.safetensors), a predict output (zarr, TIFF) or an evaluate/analyze JSON")
    p.set_defaults(func=_cmd_info)

    for extra in _EXTRA_COMMANDS:
        extra(sub)
    for p in sub.choices.values():  # xrayseg predict -v ... as well as xrayseg -v predict ... (counted together)
        p.add_argument(
            "-v", "--verbose", dest="verbose_here", action="count", default=0, help="more log output (-vv for debug)"
        )
    return parser


class _Parser(argparse.ArgumentParser):
    """Options spelt out: argparse took ``--out 1`` for ``--outside 1`` and ``--epoch`` for ``--epochs``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


_EXTRA_COMMANDS: list[Callable[[Any], None]] = [_add_analyze, _add_bioimageio]


EXIT_CODES = {
    0: "success",
    2: "an error you can fix: bad input, an existing output, a full disk or an "
    "unwritable output location, a failed cluster",
    3: "out of memory (RAM or GPU): the message names the options that lower the need",
    4: "an input/output error of the system (e.g. a failing disk or network file system)",
    130: "interrupted (Ctrl-C)",
    141: "the reader of a pipe has gone (xrayseg model-info m.safetensors | head)",
    143: "terminated (SIGTERM, e.g. a batch scheduler's time limit; predict keeps its finished slabs, train writes "
    "the model so far)",
}

#: Where the docs that messages name (``docs/train.md``, ...) are read.
DOCS = "https://github.com/napari-xrayseg/napari-xrayseg/tree/main/docs"


#: Commands that never need torch (the rest import it at once, with Ctrl-C held: :func:`_ctrl_c_held`).
_NO_TORCH = frozenset({"info", "sample"})  # analyze (tortuosity) and evaluate --physics import it mid-run


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) for the block, then raise ``KeyboardInterrupt`` if one came.

    Importing torch runs native code that calls back into Python; a ``KeyboardInterrupt`` raised
    in such a callback cannot propagate and aborts the process ("terminate called after throwing
    an instance of 'pybind11::error_already_set'", exit -6). Held, the interrupt waits the few
    seconds of the import and then ends the command as any Ctrl-C does (exit 130). Only the main
    thread can set signal handlers; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old if old is not None else signal.default_int_handler)
    if came:
        raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``xrayseg`` command line; returns the exit code.

    Every error is one line on stderr (``xrayseg CMD: error: ...``), never a traceback,
    with a documented exit code: 0 success; 2 an error the user can fix (bad input, an
    existing output, a full disk, an unwritable location, a failed cluster); 3 out of
    memory; 4 an input/output error of the system; 143 ``train`` terminated (SIGTERM: the
    model so far is written); 130 interrupted (also while the
    parser still imports torch).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code.
    """
    command = "xrayseg"
    for name in ("stdout", "stderr"):  # closed (`cmd 2>&-`) or absent (Windows pythonw): nowhere to say things
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - for the process's life
    try:
        parser = build_parser()  # no torch: --help and the light commands start in a fraction of a second
        args = _expand_home(parser.parse_args(argv))
        if args.command not in _NO_TORCH:
            with _ctrl_c_held():  # the network commands import torch: Ctrl-C is held until it is done
                import torch  # noqa: F401
        args.verbose += getattr(args, "verbose_here", 0)
        command = f"xrayseg {args.command}"
        from .core.provenance import command_line

        with command_line(["xrayseg", *(sys.argv[1:] if argv is None else argv)]):  # recorded in what it writes
            rc = _run(args)
    except KeyboardInterrupt:
        _quiet_asyncio(process=argv is None)
        image = getattr(args, "image", None) if command == "xrayseg predict" else None
        one = isinstance(image, str) and getattr(args, "out", None)  # _cmd_predict made it one path
        hint = " (finished slabs are kept: the same command with --resume continues)" if one else ""
        print(f"{command}: interrupted{hint}", file=sys.stderr)
        return 130
    if rc != 0:  # the one line is said: what zarr's cut-short writes log as they are collected is noise
        _quiet_asyncio(process=argv is None)
    return rc


def _expand_home(args: argparse.Namespace) -> argparse.Namespace:
    """``~/x.zarr`` where the shell left the ``~`` (``--out=~/x``, a quoted path) means the home folder.

    Left as it was, it made a folder named ``~`` in the working folder (which ``rm -rf ~``
    would then "clean up"), and inputs "did not exist".
    """
    for k, v in vars(args).items():
        if isinstance(v, str) and v.startswith("~"):
            setattr(args, k, os.path.expanduser(v))
        elif isinstance(v, list) and any(isinstance(x, str) and x.startswith("~") for x in v):
            setattr(args, k, [os.path.expanduser(x) if isinstance(x, str) else x for x in v])
    return args


def _quiet_asyncio(*, process: bool) -> None:
    """Silence what zarr's pending writes print as they are collected, after the one-line error.

    Cut short by an error or Ctrl-C, they print asyncio's "Task was destroyed but it is
    pending!" and "Future exception was never retrieved" (its log), and "Exception ignored in:
    <coroutine ...>" tracebacks (Python's hook for exceptions nobody can catch) and "coroutine
    ... was never awaited" warnings: ~2000 lines on a full disk.
    """
    import warnings

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    if process:  # the command line's own process (main() without argv), which ends now: not a caller's
        sys.unraisablehook = lambda _unraisable: None
        warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone; then it is pointed at /dev/null.

    (Python would report the broken pipe again when it flushes stdout at exit.) A pipe's write
    end polls as an error once its reader has closed it.
    """
    import select

    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        closed = any(ev & select.POLLERR for _, ev in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is no file
        return False
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return closed


def _run(args: argparse.Namespace) -> int:
    """Run a parsed command; every error the user can act on becomes one line and an exit code."""
    import errno

    from .core.errors import (
        USER_WRITE_ERRNOS,
        OutOfMemoryError,
        XraysegError,
        for_cli,
        out_of_memory,
        write_error,
    )

    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    def fail(msg: Any, code: int) -> int:
        print(f"xrayseg {args.command}: error: {for_cli(msg)}", file=sys.stderr)
        return code

    said = _SafeStdout(sys.stdout)
    try:
        sys.stdout = said  # type: ignore[assignment]
        rc = int(args.func(args) or 0)
        if said.failed is not None and args.command in STDOUT_PRODUCTS:  # what it makes is its printout (review)
            return fail(f"cannot write standard output ({said.failed}): its result is lost; run it again", 2)
        if said.failed is not None:
            print(
                f"xrayseg {args.command}: warning: standard output could not be written ({said.failed}): its "
                "messages are lost; the files the command writes are complete",
                file=sys.stderr,
            )
        return rc
    except XraysegError as e:
        return fail(e, 3 if isinstance(e, OutOfMemoryError) else 2)
    except (MemoryError, RuntimeError, OSError) as e:
        sys.stdout = said.stream
        small = "the synthetic volume is made in memory: give a smaller --shape"  # no tiles or batches to shrink
        oom = out_of_memory(
            e, f"running {args.command}", small if args.command in ("sample", "demo", "study") else None
        )
        if oom is not None:
            return fail(oom, 3)
        if not isinstance(e, OSError):
            raise  # a bug: keep the traceback
        if isinstance(e, BrokenPipeError) and _stdout_closed():
            return 141  # `xrayseg ... | head`: the reader has what it wanted; end quietly, as a pipe does
        out = getattr(args, "out", None)
        culprit = e.filename if e.filename and not (out and str(e.filename).startswith(str(out))) else out
        if e.errno in USER_WRITE_ERRNOS:  # disk full, read-only or unwritable location: the user can fix these
            return fail(write_error(e, culprit), 2)
        what = f" on {e.filename}" if e.filename else ""
        why = e.strerror or errno.errorcode.get(e.errno or 0, type(e).__name__)
        return fail(
            f"input/output error{what} ({why}): check the disk or network file system, then run the "
            f"same command again{' with --resume' if args.command == 'predict' else ''}",
            4,
        )
    finally:
        sys.stdout = said.stream


#: Commands whose result is what they print (JSON, slice indices): a failed standard output fails them.
STDOUT_PRODUCTS = ("model-info", "info", "suggest")


class _SafeStdout:
    """Standard output that never ends a command the outputs of which are being written (QA).

    A character its encoding lacks (an ASCII or cp1252 console, ``Al₂O₃``, a path in another
    encoding) is written escaped: printed between two writes, it raised UnicodeEncodeError and
    cost evaluate's JSON and CSV. A failed write (a full disk behind a redirect) is remembered and
    the rest of the output dropped, and the command goes on; the error was blamed on ``--out``.
    A closed pipe (``| head``) still ends the command, as a pipe does.
    """

    def __init__(self, stream: Any) -> None:
        self.stream, self.failed = stream, None

    def write(self, text: str) -> int:
        if self.failed is not None:
            return len(text)
        try:
            return self.stream.write(text)
        except UnicodeEncodeError:
            enc = getattr(self.stream, "encoding", None) or "ascii"
            return self.stream.write(text.encode(enc, "backslashreplace").decode(enc))
        except BrokenPipeError:
            raise
        except OSError as e:
            self.failed = e.strerror or type(e).__name__
            return len(text)

    def flush(self) -> None:
        if self.failed is None:
            try:
                self.stream.flush()
            except BrokenPipeError:
                raise
            except OSError as e:
                self.failed = e.strerror or type(e).__name__

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
