"""Batch prediction: many inputs, one model load, one output per input, a summary.

:func:`iter_segment_many` (and :func:`segment_many`, which drains it) segments a list of
inputs -- files, folders of files, list files, or in-memory arrays with names -- with one
model, each through the same :func:`~napari_xrayseg.core.inference.build_job` /
:func:`~napari_xrayseg.core.inference.run_job` as :func:`~napari_xrayseg.segment`:

- ``out_dir/NAME.tif`` (``fmt="tiff"``, the default) or ``out_dir/NAME.zarr`` (``fmt="zarr"``)
  per input, ``NAME`` being the input's base name (``scan_01.tif`` -> ``scan_01``); a 2D input
  gives a 2D TIFF. A TIFF is segmented into a resumable zarr work store beside it
  (``.NAME.tif.xrayseg-work.zarr``), then written page by page and swapped in whole
  (:func:`~napari_xrayseg.core.output.write_file`), so memory stays bounded;
- a finished output of the same model and settings is skipped on a rerun; an unfinished one
  (cancelled, crashed, killed) is resumed; an existing output of another model or settings,
  or a file that is not ours, is refused (``overwrite=True`` replaces it, as for one volume);
- an input that fails (unreadable, wrong shape, an output in the way) is recorded in the
  :class:`BatchSummary` with its message and the others still run;
- progress spans the files: one :class:`Progress` per slab with ``info["file"]`` (1-based),
  ``info["files"]``, ``info["name"]``, and one with ``info["result"]`` (a :class:`FileResult`)
  when a file is finished.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
import unicodedata
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .channels import check_rgb_mode
from .config import SegmentConfig, python_numbers
from .errors import Cancelled, InputError, OutputExistsError, XraysegError
from .io import TIFF_META as _TIFF_META
from .io import open_image, open_volume
from .io import tiff_output_meta as _tiff_meta
from .output import check_not_input, remove_path, write_file, write_text
from .predictor import tta_meta
from .progress import CancelToken, Progress, ProgressCallback, drain
from .writer import input_digest, output_complete, output_levels, read_output_meta

__all__ = [
    "FORMATS",
    "BatchSummary",
    "FileResult",
    "check_summary_path",
    "collect_inputs",
    "is_collection",
    "iter_segment_many",
    "output_name",
    "segment_many",
]

log = logging.getLogger(__name__)

#: Output formats of a batch: suffix of the output per input.
FORMATS = {"tiff": ".tif", "zarr": ".zarr"}
#: Suffixes of the files a folder of inputs contributes (zarr stores are folders).
INPUT_SUFFIXES = (".tif", ".tiff", ".h5", ".hdf5", ".hdf", ".nxs", ".npy", ".zarr", ".png", ".jpg", ".jpeg")
#: Suffixes of list files: one input path per line.
LIST_SUFFIXES = (".txt", ".lst", ".list")
WORK = ".xrayseg-work.zarr"
_STEPS = 1000  # progress units per file


@dataclass
class FileResult:
    """What happened to one input of a batch.

    Attributes
    ----------
    name : str
        The input's base name (the output's stem).
    input : str
        The input's path (or ``"<array>"`` for an in-memory array).
    output : str or None
        The output's path (None in memory).
    status : str
        ``"done"``, ``"skipped"`` (a finished output of the same model and settings was
        there), ``"failed"`` or ``"cancelled"``.
    shape : tuple of int or None
        The input's shape, once it could be opened.
    seconds : float
        Wall-clock time spent on this input.
    voxels_per_s : float or None
        Voxels segmented per second (None when nothing was segmented).
    message : str
        Why it failed, or a note.
    labels : array or None
        The labels: in memory without an output folder, the zarr array written with
        ``fmt="zarr"``; None for TIFF outputs (open :attr:`output` to read them).
    """

    name: str
    input: str
    output: str | None
    status: str = "failed"
    shape: tuple[int, ...] | None = None
    seconds: float = 0.0
    voxels_per_s: float | None = None
    message: str = ""
    labels: Any = field(default=None, repr=False)

    def row(self) -> dict[str, Any]:
        """The summary row: plain values only."""
        return {
            "name": self.name,
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "shape": "x".join(str(s) for s in self.shape) if self.shape else "",
            "seconds": round(self.seconds, 3),
            "mvox_per_s": None if self.voxels_per_s is None else round(self.voxels_per_s / 1e6, 3),
            "message": self.message,
        }


@dataclass
class BatchSummary:
    """The outcome of a batch: one :class:`FileResult` per input, in order.

    Attributes
    ----------
    results : list of FileResult
    seconds : float
        Wall-clock time of the whole batch.
    """

    results: list[FileResult]
    seconds: float = 0.0

    @property
    def failed(self) -> list[FileResult]:
        """The inputs that failed."""
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        """Whether every input is done or skipped."""
        return all(r.status in ("done", "skipped") for r in self.results)

    def counts(self) -> dict[str, int]:
        """How many inputs ended in each status."""
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """Rows and totals as plain values (what :meth:`to_json` writes)."""
        return {"seconds": round(self.seconds, 3), "counts": self.counts(), "files": [r.row() for r in self.results]}

    def table(self) -> str:
        """A fixed-width text table: file, shape, seconds, Mvox/s, status (and why it failed)."""
        head = ("file", "shape", "seconds", "Mvox/s", "status")
        rows = [
            (
                r.name,
                "x".join(str(s) for s in r.shape) if r.shape else "-",
                f"{r.seconds:.2f}",
                "-" if r.voxels_per_s is None else f"{r.voxels_per_s / 1e6:.2f}",
                r.status + (f": {r.message}" if r.message and r.status != "done" else ""),
            )
            for r in self.results
        ]
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        c = self.counts()
        lines.append(
            f"{len(self.results)} inputs in {self.seconds:.1f} s: "
            + ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
        )
        return "\n".join(lines)

    def to_csv(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write one row per input as CSV (empty cell = n/a).

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``overwrite`` is False.
        OutputWriteError
            If the file cannot be written.
        """
        buf = io.StringIO()
        rows = [r.row() for r in self.results]
        w = csv.DictWriter(buf, fieldnames=list(FileResult("", "", None).row()), lineterminator="\n")
        w.writeheader()
        w.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
        return _write_text(path, buf.getvalue(), overwrite)

    def to_json(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write :meth:`to_dict` as JSON.

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``overwrite`` is False.
        OutputWriteError
            If the file cannot be written.
        """
        from .provenance import provenance

        text = json.dumps({**self.to_dict(), "provenance": provenance()}, indent=2) + "\n"
        return _write_text(path, text, overwrite)

    def write(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the summary as CSV or JSON, by the suffix of ``path``."""
        return (
            self.to_json(path, overwrite=overwrite)
            if _summary_kind(path) == "json"
            else self.to_csv(path, overwrite=overwrite)
        )


def _summary_kind(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".json"):
        raise InputError(f"summary file {path} must end in .csv or .json (--summary NAME.csv)")
    return suffix[1:]


def _write_text(path: str | os.PathLike, text: str, overwrite: bool) -> Path:
    return write_text(path, text, overwrite=overwrite, what="summary", option="--summary")


def check_summary_path(path: str | os.PathLike, *, overwrite: bool = False) -> bool:
    """Check a summary path before a batch runs; return whether the summary may replace what is there.

    A summary that an earlier batch wrote (the same columns) is replaced, so the same
    command can be run again to resume; any other existing file only with ``overwrite``.

    Raises
    ------
    InputError
        If the path does not end in ``.csv`` or ``.json``.
    OutputExistsError
        If another file is there and ``overwrite`` is False.
    """
    from .output import claim

    kind = _summary_kind(path)
    p = Path(path)
    if p.is_file() and not overwrite:
        try:
            text = p.read_text(encoding="utf-8")
            ours = (
                text.startswith(",".join(FileResult("", "", None).row()))
                if kind == "csv"
                else isinstance(json.loads(text).get("files"), list)
            )
        except (OSError, ValueError, AttributeError):
            ours = False
        if ours:
            return True
    claim(path, overwrite=overwrite, what="summary", option="--summary")
    return overwrite


# --------------------------------------------------------------------------- inputs and names


def _is_zarr(p: Path) -> bool:
    return p.suffix.lower() == ".zarr" or any((p / m).exists() for m in ("zarr.json", ".zarray", ".zgroup"))


def _is_folder(p: Path) -> bool:
    """A folder of inputs: a directory that is not a zarr store and not named like a file (``x.npy/``)."""
    return p.is_dir() and not _is_zarr(p) and p.suffix.lower() not in INPUT_SUFFIXES


def read_list_text(path: Path) -> str:
    """The text of a list file: UTF-8 (a BOM allowed) or UTF-16 with its BOM (Windows Notepad's "Unicode").

    Raises
    ------
    InputError
        For other encodings (Notepad's "ANSI"), naming the line (QA: a UnicodeDecodeError traceback).
    """
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(
            f"list file {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}): save it as UTF-8 "
            "(Notepad: Save as, Encoding UTF-8)"
        ) from None


def collect_inputs(specs: Iterable[str | os.PathLike]) -> list[str]:
    """Expand folders and list files into the inputs they stand for, in order.

    Parameters
    ----------
    specs : iterable of path-like
        Each is a volume or image (a file, a zarr store, ``file.h5:/dataset``), a folder
        (its files and zarr stores with a known suffix -- zarr, TIFF, HDF5, .npy, PNG,
        JPEG -- sorted by name, hidden ones left out, not recursive), or a list file
        (``.txt``, ``.lst``: one path per line, relative to the list file's folder;
        blank lines and lines starting with ``#`` are ignored).

    Returns
    -------
    list of str
        Paths; ones that do not exist are kept, to be reported by the batch.

    Raises
    ------
    InputError
        If a folder holds no inputs, or a list file names none that exists (not a list of paths).

    Examples
    --------
    >>> collect_inputs(["a.tif", "b.zarr"])
    ['a.tif', 'b.zarr']
    """
    out: list[str] = []
    for spec in specs:
        p = Path(spec)
        if _is_folder(p):
            found, other = [], []
            for c in sorted(p.iterdir()):
                if c.name.startswith("."):
                    continue
                ok = c.suffix.lower() in INPUT_SUFFIXES and (c.is_file() or _is_zarr(c))
                (found if ok else other).append(c)
            if not found:
                raise InputError(f"folder {p} holds no images ({', '.join(INPUT_SUFFIXES)}): check the path")
            if other:  # a zarr store without its suffix, a .raw: said, not silently dropped
                shown = ", ".join(c.name for c in other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
                log.warning(
                    "%s: left out %d entr%s that %s not an image file by %s suffix (%s): images are %s",
                    p,
                    len(other),
                    "y" if len(other) == 1 else "ies",
                    "is" if len(other) == 1 else "are",
                    "its" if len(other) == 1 else "their",
                    shown,
                    ", ".join(INPUT_SUFFIXES),
                )
            out += [str(c) for c in found]
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            lines = [ln.strip() for ln in read_list_text(p).splitlines()]
            entries = [ln for ln in lines if ln and not ln.startswith("#")]
            if not entries:
                raise InputError(f"list file {p} names no inputs: write one path per line")
            paths = [str(e if Path(e).is_absolute() else p.parent / e) for e in entries]
            if not any(Path(x).exists() or Path(x.rpartition(":")[0]).is_file() for x in paths):
                raise InputError(
                    f"list file {p} names no existing input (first line {entries[0][:60]!r}): a list file holds "
                    "one image path per line, relative to its folder; images are zarr, TIFF, HDF5 or .npy"
                )
            out += collect_inputs(paths)
        else:
            out.append(str(spec))
    return out


def is_collection(path: str | os.PathLike) -> bool:
    """Whether ``path`` stands for several inputs: a folder that is not a zarr store, or a list file."""
    p = Path(path)
    return _is_folder(p) or (p.is_file() and p.suffix.lower() in LIST_SUFFIXES)


def output_name(path: str | os.PathLike) -> str:
    """The base name of an input, which its output is named after.

    Examples
    --------
    >>> output_name("scans/tomo_01.ome.tif"), output_name("a/b.zarr"), output_name("f.h5:/entry/data")
    ('tomo_01', 'b', 'f')
    """
    s = str(path)
    if not Path(s).exists() and ":" in s:  # file.h5:/dataset
        base = s.rpartition(":")[0]
        if Path(base).exists() or Path(base).suffix.lower() in INPUT_SUFFIXES:
            s = base
    name = Path(s.rstrip("/\\")).name
    stem, suffix = os.path.splitext(name)
    if suffix.lower() in INPUT_SUFFIXES:
        name = stem
        if name.lower().endswith(".ome"):
            name = name[:-4]
    return name or "image"


def _check_names(names: Sequence[str], sources: Sequence[str]) -> None:
    seen: dict[str, str] = {}
    for n, s in zip(names, sources):
        key = unicodedata.normalize("NFC", n).lower()  # one file on a case-insensitive disk (macOS: NFD too)
        if key in seen:
            raise InputError(
                f"inputs {seen[key]} and {s} both give the output name {n!r}: rename one, "
                "or segment them into different output folders"
            )
        seen[key] = s


# --------------------------------------------------------------------------- the batch


def _check_out_folder(out: Path) -> None:
    """A batch's ``--out`` is a folder of label files: not a file, not a zarr store (its outputs went inside)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: many inputs are written into a folder, one label file each")
    if out.suffix.lower() == ".zarr" or _is_zarr(out):
        raise InputError(
            f"--out {out} is (named as) a zarr store: many inputs are written into a plain folder, one label file "
            "each (NAME.tif, or NAME.zarr with --format zarr); give a folder name such as labels/"
        )


def _fingerprint(cfg: SegmentConfig, digest: str, shape: tuple[int, ...], source: str) -> dict[str, Any]:
    """What must match for a finished TIFF output to count as this run's result (then skipped)."""
    keys = ("axis", "axes", "tile", "overlap", "batch", "blend", "slab", "precision", "tta", "voxel_size", "unit")
    return json.loads(
        json.dumps(
            {
                "model_sha256": digest,
                "shape": list(shape),
                "input": os.path.abspath(source) if source != "<array>" else source,
                **{k: getattr(cfg, k) for k in keys},
                "tta": tta_meta(cfg.tta),  # True meant 3 flips before it meant 4 views
                # only when given: outputs written before nodata existed still match a run without it
                **({"nodata": cfg.nodata} if cfg.nodata is not None else {}),
            },
            default=str,
        )
    )


#: Label TIFFs of more voxels are BigTIFF (ImageJ's format ends at 4 GB; 2^26 left for the tags).
BIGTIFF_VOXELS = 2**32 - 2**26


def _write_tiff(path: Path, labels: Any, meta: dict[str, Any], *, overwrite: bool, inputs: Sequence[Any]) -> Path:
    """Write a label array (zarr, read a slice at a time) as a TIFF: ImageJ below 4 GB, else BigTIFF.

    2D labels give a 2D page; 3D labels one page per slice. The voxel size goes into the
    resolution tags (and ImageJ ``spacing`` / ``unit``), ``meta`` as JSON.
    """
    import numpy as np
    import tifffile

    shape = tuple(int(s) for s in labels.shape)
    vox, unit = meta.get("voxel_size"), meta.get("unit")
    kw: dict[str, Any] = {}
    if vox:
        kw["resolution"] = (1.0 / float(vox[-1]), 1.0 / float(vox[-2]))
    payload = {_TIFF_META: meta}
    physical = bool(vox and unit and unit != "voxel")
    big = math.prod(shape) > BIGTIFF_VOXELS
    if big:
        kw.update(bigtiff=True, metadata=payload, photometric="minisblack")  # 3 slices are no RGB planes
        kw.pop("resolution", None)  # without a unit other readers take it in inches (QA: 6350 um voxels)
        if physical:
            from .units import to_unit

            kw["resolution"] = tuple(1.0 / to_unit(float(v), unit, "cm") for v in (vox[-1], vox[-2]))
            kw["resolutionunit"] = "CENTIMETER"
    else:
        ij: dict[str, Any] = {"axes": "ZYX" if len(shape) == 3 else "YX", "Info": json.dumps(payload)}
        classes = [int(c) for c in meta.get("classes") or () if isinstance(c, int) and 0 < c < 256]
        if classes:  # Fiji shows the labels in napari's colours over 0..max, not near-black grey (QA h4)
            from .units import label_color

            lut = np.zeros((3, 256), np.uint8)
            for v in range(1, 256):
                lut[:, v] = [round(255 * c) for c in label_color(v)]
            ij.update(Ranges=(0.0, 255.0), LUTs=[lut])
        if physical:
            ij["unit"] = "um" if unit == "um" else unit
            if len(shape) == 3:
                ij["spacing"] = float(vox[0])
            origin = meta.get("origin")
            if origin and len(origin) >= len(shape):  # ImageJ's origin, in pixels: position = (i - origin) x size
                for a, o, v in zip("zyx"[-len(shape) :], origin[-len(shape) :], vox[-len(shape) :]):
                    ij[f"{a}origin"] = -float(o) / float(v)
        kw.update(imagej=True, metadata=ij)

    def pages() -> Iterable[np.ndarray]:
        if len(shape) == 2:
            yield np.asarray(labels[...], dtype=np.uint8)
            return
        for z in range(shape[0]):
            yield np.asarray(labels[z], dtype=np.uint8)

    def write(tmp: Path) -> None:
        tifffile.imwrite(str(tmp), data=pages(), shape=shape, dtype="uint8", compression="zlib", **kw)

    return write_file(path, write, overwrite=overwrite, inputs=inputs, what="output", option="--out")


def _segment_one(
    image: Any,
    model: Any,
    cfg: SegmentConfig,
    cancel: CancelToken | None,
    source: str,
    cache: dict[str, Any],
) -> Generator[Progress, None, Any]:
    """One input through the one pipeline (build_job -> run_job), as :func:`~napari_xrayseg.iter_segment`."""
    from .inference import LocalExecutor, build_job, run_job

    reads = [source] if source != "<array>" else []
    job = build_job(image, model, cfg, inputs=reads, predictor=cache.get("predictor"))
    cache["predictor"] = job.predictor  # the next input reuses the network's inference copy if it can
    return (yield from run_job(job, LocalExecutor(job, cancel), cancel))


#: Options :func:`segment_many` takes per input (``per_input=``): where each one lies.
PER_INPUT = ("voxel_size", "unit", "origin", "channel_axis")


def _per_input(per_input: dict[str, dict[str, Any]] | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """``per_input`` checked: every name an input's, every key one of :data:`PER_INPUT`."""
    if not per_input:
        return {}
    if unknown := sorted(set(per_input) - set(names)):
        raise InputError(f"per_input names {unknown}, which are not inputs of this batch (inputs: {names})")
    for name, opts in per_input.items():
        if not isinstance(opts, dict):
            raise InputError(f"per_input[{name!r}] is {opts!r}: give a dict of {list(PER_INPUT)}")
        if bad := sorted(set(opts) - set(PER_INPUT)):
            raise InputError(f"per_input[{name!r}] sets {bad}: only {list(PER_INPUT)} can differ between inputs")
    return {k: dict(v) for k, v in per_input.items()}


@python_numbers
def iter_segment_many(
    inputs: Sequence[Any] | dict[str, Any],
    model: Any,
    *,
    out_dir: str | os.PathLike | None = None,
    fmt: str = "tiff",
    dataset: str | None = None,
    config: SegmentConfig | None = None,
    cancel: CancelToken | None = None,
    rgb: str | None = None,
    per_input: dict[str, dict[str, Any]] | None = None,
    **options: Any,
) -> Generator[Progress, None, BatchSummary]:
    """Generator form of :func:`segment_many`: yields :class:`Progress`, returns the :class:`BatchSummary`.

    See :func:`segment_many` for the parameters.
    """
    from .device import resolve_device
    from .predictor import as_model, model_digest

    cfg = SegmentConfig.of(config, **options)
    if fmt not in FORMATS:
        raise InputError(f"output format {fmt!r} is not one of {sorted(FORMATS)}")
    if cfg.out is not None or cfg.confidence_out is not None:
        raise InputError("a batch names its outputs after its inputs: give out_dir (--out DIR), not out/confidence_out")
    if out_dir is None and (cfg.resume or cfg.pyramid):
        raise InputError("resume and pyramid need an output folder: pass out_dir= (--out DIR)")
    if fmt == "tiff" and out_dir is not None and (cfg.pyramid or cfg.confidence is not None):
        raise InputError("a pyramid and a confidence map are written to zarr: add --format zarr (fmt='zarr')")
    if isinstance(inputs, dict):
        names, items, sources = list(inputs), list(inputs.values()), ["<array>"] * len(inputs)
    else:
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        if not all(isinstance(x, (str, os.PathLike)) for x in inputs):
            raise InputError("give inputs as paths (files, folders, list files), or as a dict of name -> array")
        items = collect_inputs(inputs)
        names, sources = [output_name(x) for x in items], [str(x) for x in items]
    if not items:
        raise InputError("no inputs given: pass images, folders or list files")
    _check_names(names, sources)
    own = _per_input(per_input, names)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        folders = [] if isinstance(inputs, dict) else [x for x in inputs if _is_folder(Path(x))]
        check_not_input(out, [*folders, *(s for s in sources if s != "<array>")])  # a rerun would read the outputs
        _check_out_folder(out)
    model_reads = [model] if isinstance(model, (str, os.PathLike)) else []
    model = as_model(model, resolve_device(cfg.device))  # one load for every input
    check_rgb_mode(rgb, model.info.channels)
    digest = model_digest(model) if fmt == "tiff" and out is not None else ""
    n = len(items)
    results: list[FileResult] = []
    cache: dict[str, Any] = {}  # what one input leaves for the next (the predictor)
    t_batch = time.perf_counter()
    log.info("segmenting %d inputs into %s", n, out if out is not None else "memory")
    for k, (name, item, source) in enumerate(zip(names, items, sources)):
        target = out / f"{name}{FORMATS[fmt]}" if out is not None else None
        res = FileResult(name, source, str(target) if target is not None else None)
        results.append(res)
        t0 = time.perf_counter()
        yield Progress(k * _STEPS, n * _STEPS, f"file {k + 1}/{n} {name}", {"file": k + 1, "files": n, "name": name})
        try:
            if source == "<array>":
                image = item
            else:  # colour 2D files as the model was trained on them (rgb), else refused
                image = (
                    open_image(item, dataset=dataset, rgb=rgb)
                    if rgb is not None
                    else open_volume(item, dataset=dataset)
                )
            res.shape = tuple(int(s) for s in image.shape)
            c = SegmentConfig.of(cfg, **own[name]) if name in own else cfg
            gen = _one(image, model, c, cancel, source, target, fmt, digest, model_reads, res, cache)
            while True:
                try:
                    p = next(gen)
                except StopIteration as stop:
                    res.labels = stop.value
                    break
                yield Progress(
                    k * _STEPS + int(_STEPS * p.fraction),
                    n * _STEPS,
                    f"file {k + 1}/{n} {name}: {p.message}",
                    {**p.info, "file": k + 1, "files": n, "name": name},
                )
        except Cancelled as e:
            res.status, res.message = (
                "cancelled",
                "cancelled; a rerun resumes it" if target is not None else "cancelled",
            )
            res.seconds = time.perf_counter() - t0
            for name_, src in zip(names[k + 1 :], sources[k + 1 :]):
                results.append(FileResult(name_, src, None, status="cancelled", message="not started"))
            e.result = BatchSummary(results, time.perf_counter() - t_batch)  # what was finished before
            raise
        except (XraysegError, OSError) as e:
            res.status, res.message = "failed", str(e)
            log.warning("%s failed: %s", source if source != "<array>" else name, e)
        res.seconds = time.perf_counter() - t0
        if res.status == "done" and res.shape:
            res.voxels_per_s = math.prod(res.shape) / max(res.seconds, 1e-9)  # input voxels, as for one volume
        yield Progress(
            (k + 1) * _STEPS,
            n * _STEPS,
            f"file {k + 1}/{n} {name}: {res.status}",
            {"file": k + 1, "files": n, "name": name, "result": res},
        )
    summary = BatchSummary(results, time.perf_counter() - t_batch)
    log.info("batch of %d inputs: %s", n, summary.counts())
    return summary


def _one(
    image: Any,
    model: Any,
    cfg: SegmentConfig,
    cancel: CancelToken | None,
    source: str,
    target: Path | None,
    fmt: str,
    digest: str,
    model_reads: list[Any],
    res: FileResult,
    cache: dict[str, Any],
) -> Generator[Progress, None, Any]:
    """Segment one input into ``target`` (or memory), skipping or resuming as the batch rules say."""
    res.status = "done"
    if len(res.shape or ()) == 2:  # a 2D image is one slice, whatever axis the volumes are cut along
        cfg = SegmentConfig.of(cfg, axis=0, axes=None)
    if target is None:
        return (yield from _segment_one(image, model, cfg, cancel, source, cache))
    resume = cfg.resume or not cfg.overwrite  # a batch resumes unfinished outputs by default
    if fmt == "zarr":
        finished = target.exists() and not cfg.overwrite and output_complete(target)
        c = SegmentConfig.of(cfg, out=target, resume=resume)
        labels = yield from _segment_one(image, model, c, cancel, source, cache)
        if finished:
            res.status, res.message = "skipped", "finished output of this model and settings"
        return labels
    # the image's content too: a scan replaced under the same name and shape kept the old labels
    # the no-data value the run will use: the model's unless given (review s45: an output made without it was
    # "finished output of this model and settings" while its sibling got the model's value)
    from .inference import recorded_nodata
    from .normalize import model_nodata

    used = model_nodata(cfg.nodata, recorded_nodata(model))
    fp = {**_fingerprint(SegmentConfig.of(cfg, nodata=used), digest, res.shape or (), source)}
    fp["input_digest"] = input_digest(image)
    work = target.with_name(f".{target.name}{WORK}")
    if target.exists() and not cfg.overwrite:
        old = _tiff_meta(target) if target.is_file() else None
        was = old.get("batch") if old is not None else None
        if isinstance(was, dict) and "input_digest" not in was:  # written before the digest was recorded
            fp.pop("input_digest")
        if was == fp:
            res.status, res.message = "skipped", "finished output of this model and settings"
            remove_path(work)  # left by a run killed between writing the TIFF and cleaning up
            return None
        keys = set(fp) | (set(was) if isinstance(was, dict) else set())
        differ = sorted(k for k in keys if not isinstance(was, dict) or was.get(k) != fp.get(k))
        if old is None:
            why = "not an output of xrayseg predict"
        elif set(differ) <= {"input", "input_digest"}:  # QA: another file of that name was called other settings
            why = "written from another image of that name: the input changed since, or is another file"
        else:
            named = [{"model_sha256": "model"}.get(k, k) for k in differ if k not in ("input", "input_digest")]
            why = f"written with another {', '.join(named)}"
        raise OutputExistsError(f"output {target} exists ({why}): choose another --out or pass --overwrite")
    c = SegmentConfig.of(cfg, out=work, resume=resume, overwrite=cfg.overwrite and not resume)
    yield from _segment_one(image, model, c, cancel, source, cache)
    meta = dict(read_output_meta(work) or {})
    meta.pop("model", None)
    meta["batch"] = fp
    reads = [*([source] if source != "<array>" else []), *model_reads]
    _write_tiff(target, output_levels(work)[0], meta, overwrite=cfg.overwrite, inputs=reads)
    remove_path(work)
    return None  # not kept open: a batch of thousands would hold as many files (read FileResult.output)


@python_numbers
def segment_many(
    inputs: Sequence[Any] | dict[str, Any],
    model: Any,
    *,
    out_dir: str | os.PathLike | None = None,
    fmt: str = "tiff",
    dataset: str | None = None,
    config: SegmentConfig | None = None,
    cancel: CancelToken | None = None,
    progress: ProgressCallback | None = None,
    rgb: str | None = None,
    per_input: dict[str, dict[str, Any]] | None = None,
    **options: Any,
) -> BatchSummary:
    """Segment many images or volumes with one model: one output per input, a summary.

    Parameters
    ----------
    inputs : sequence of path-like, or dict of str -> array
        Paths (files, zarr stores, ``file.h5:/dataset``, folders of them, list files; see
        :func:`collect_inputs`), or in-memory arrays by name (e.g. napari layers).
    model : Model or path-like
        Loaded once for every input.
    out_dir : path-like, optional
        Folder of the outputs, one per input named after its base name; None keeps the
        labels in memory (``FileResult.labels``).
    fmt : {"tiff", "zarr"}
        Output format: ``NAME.tif`` (2D inputs give 2D TIFFs; voxel size in the resolution
        tags, the model and settings in the ImageJ ``Info``) or ``NAME.zarr`` (as
        :func:`~napari_xrayseg.segment` with ``out=``: pyramid, confidence, metadata).
    dataset : str, optional
        The array inside each zarr group or HDF5 file.
    rgb : {"luminance", "channels"}, optional
        Colour 2D files (PNG, JPEG, TIFF) converted as for training (:func:`~napari_xrayseg.core.io.read_image_2d`);
        without it they are refused.
    per_input : dict of str -> dict, optional
        Where each input lies, by input name: ``{"a": {"voxel_size": (2, 1, 1), "unit": "um",
        "origin": (100, 0, 0)}}`` (keys among :data:`PER_INPUT`), over the options for every input;
        e.g. napari layers of crops at different places or of different voxel sizes.
    config : SegmentConfig, optional
        Options for every input; keyword options replace its fields (not ``out`` or
        ``confidence_out``: the batch names its outputs). ``overwrite=True`` recomputes
        and replaces existing outputs (each written beside the old one and swapped in
        when complete); without it finished outputs are skipped and unfinished ones resumed.
    cancel : CancelToken, optional
        Stops the batch at the next slab; the file being segmented keeps its finished
        slabs (a rerun resumes it) and :class:`~napari_xrayseg.core.errors.Cancelled` is raised.
    progress : callable, optional
        Called with every :class:`Progress` (``info`` has ``file``, ``files``, ``name``).
    **options
        Fields of :class:`~napari_xrayseg.core.config.SegmentConfig`.

    Returns
    -------
    BatchSummary
        One :class:`FileResult` per input; ``summary.ok`` is False if any failed.

    Raises
    ------
    InputError
        On options no input can use (an unknown format, ``out=``), two inputs with the same
        base name, an output folder inside an input folder, or a folder with no inputs.
        Errors of one input (unreadable, of the wrong shape, an output in the way) are
        recorded in the summary instead.
    Cancelled
        If ``cancel`` was set.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_xrayseg import init_model
    >>> model = init_model("unet", size="tiny", classes=3)
    >>> images = {"a": np.random.rand(2, 32, 32).astype("float32"), "b": np.random.rand(32, 32).astype("float32")}
    >>> s = segment_many(images, model, device="cpu")
    >>> [(r.name, r.status, r.labels.shape) for r in s.results]
    [('a', 'done', (2, 32, 32)), ('b', 'done', (32, 32))]
    """
    gen = iter_segment_many(
        inputs,
        model,
        out_dir=out_dir,
        fmt=fmt,
        dataset=dataset,
        config=config,
        cancel=cancel,
        rgb=rgb,
        per_input=per_input,
        **options,
    )
    return drain(gen, progress)
