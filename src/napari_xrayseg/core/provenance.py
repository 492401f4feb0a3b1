"""Where a result came from: when, by which software, from which command and inputs.

A predict output (its ``napari_xrayseg`` attributes), an evaluation report and a
microstructure analysis (their JSON) carry a ``provenance`` record, so a number in a paper
can be traced back to the files and versions that produced it::

    {"created": "2026-12-06T01:30:12+00:00",
     "software": {"napari-xrayseg": "0.9.0", "python": "3.12.3", "torch": "2.13.0", ...},
     "command": "xrayseg predict --image scan.zarr --model m.safetensors --out labels.zarr",
     "cwd": "/data/beamtime",
     "inputs": {"image": {"path": "/data/beamtime/scan.zarr"}, "model": {"path": ..., "sha256": ...}}}

``command`` is the command line when the ``xrayseg`` CLI ran, else None (the Python API, the
napari widgets). An input read from a file is named by its absolute path (and its dataset
inside an HDF5 file); one given as an array in memory by its type, shape and dtype.
``xrayseg info PATH`` (:func:`~napari_xrayseg.core.info.describe_file`) prints the record of a model
file, a predict output or a JSON report.
"""

from __future__ import annotations

import functools
import os
import platform
import shlex
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "absolute_path",
    "command_line",
    "describe_input",
    "file_sha256",
    "inputs_named",
    "is_named",
    "provenance",
    "software",
]

#: packages whose versions decide a result (the network's numbers, the arrays' reading)
PACKAGES = ("napari-xrayseg", "torch", "monai", "numpy", "scipy", "zarr", "dask", "tifffile", "h5py")

#: The command line of what is made in this thread (a context variable: a thread started meanwhile, as a
#: napari widget's job, starts without it, so a CLI run in napari's console does not stamp its jobs).
_COMMAND: ContextVar[list[str] | None] = ContextVar("xrayseg_command", default=None)


#: Descriptions of in-memory arrays by ``id()`` (the napari layers a widget's job reads), for this thread.
_NAMED: ContextVar[dict[int, dict[str, Any]] | None] = ContextVar("xrayseg_named_inputs", default=None)


@contextmanager
def inputs_named(named: Mapping[int, Mapping[str, Any]]):  # type: ignore[no-untyped-def]
    """Name arrays made inside as ``named[id(array)]`` says (e.g. ``{"layer": ..., "path": ...}``).

    A widget hands ``segment`` a layer's array: without this, an output saved to a store named
    its image only as ``dask.Array`` of a shape, although the widget knew the layer and its file.
    """
    token = _NAMED.set({**(_NAMED.get() or {}), **{int(k): dict(v) for k, v in named.items()}})
    try:
        yield
    finally:
        _NAMED.reset(token)


def is_named(obj: Any) -> bool:
    """Whether :func:`inputs_named` names ``obj`` here."""
    return id(obj) in (_NAMED.get() or {})


@contextmanager
def command_line(argv: Sequence[str]):  # type: ignore[no-untyped-def]
    """Record ``argv`` (e.g. ``["xrayseg", "predict", ...]``) as the command of what is made inside."""
    token = _COMMAND.set([str(a) for a in argv])
    try:
        yield
    finally:
        _COMMAND.reset(token)


def software() -> dict[str, str]:
    """Versions of Python, the platform and the packages a result depends on (absent ones left out)."""
    return dict(_software())


@functools.cache
def _software() -> tuple[tuple[str, str], ...]:  # looked up once: a batch records it for every input
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    cpu = _cpu_name()
    if cpu:  # the same seed gives other weights on another CPU or thread count (docs/train.md; QA s45)
        out["cpu"] = cpu
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    source = _source_commit()
    if source is not None:
        out["napari-xrayseg source"] = source
    return tuple(out.items())


def _cpu_name() -> str | None:
    """The CPU's model name (Linux ``/proc/cpuinfo``, else ``platform.processor()``), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def _source_commit() -> str | None:
    """``"git <commit>"`` (``-dirty`` with uncommitted changes) when the package runs from a git checkout, else None.

    Every development version reports ``napari-xrayseg 0.1.0``: the records of two behaviours could not be told apart
    (QA h5, session 41). Only a checkout whose ``src/napari_xrayseg`` is this package counts, not a repository a
    site-packages folder happens to lie in.
    """
    import subprocess
    from pathlib import Path

    pkg = Path(__file__).resolve().parent.parent
    root = pkg.parent.parent
    if pkg.name != "napari_xrayseg" or pkg.parent.name != "src" or not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12", "--exclude", "*"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):  # no git: the record has the version alone
        return None
    commit = done.stdout.strip()
    return f"git {commit}" if commit else None


def describe_input(obj: Any) -> Any:
    """An input as the record names it: ``{"path", "dataset"?}`` for a file, ``{"array": ...}`` in memory.

    Several inputs (a list, a ``{name: input}`` mapping) give a list or mapping of descriptions;
    a description (a mapping with ``path`` or ``array``) is kept as it is.
    """
    from pathlib import Path

    from .output import source_path

    if obj is None:
        return None
    named = _NAMED.get()
    if named and id(obj) in named:  # a layer's array: as the widget named it
        return dict(named[id(obj)])
    if isinstance(obj, (str, os.PathLike)):  # "scan.h5:/entry/data" names a dataset in a file
        text = str(obj)
        base, _, ds = text.rpartition(":")
        if base and ds.startswith("/") and not Path(text).exists() and Path(base).is_file():
            return {"path": absolute_path(base), "dataset": ds}
        return {"path": absolute_path(text)}
    if isinstance(obj, Mapping):
        if {"path", "array", "layer"} & set(obj):  # already described (a layer by the widgets)
            return {str(k): v for k, v in obj.items()}
        return {str(k): describe_input(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and obj and (hasattr(obj[0], "shape") or isinstance(obj[0], (str, os.PathLike))):
        return [describe_input(v) for v in obj]
    src = source_path(obj)
    if src is not None:
        out: dict[str, Any] = {"path": absolute_path(src)}
        name = getattr(obj, "name", None)  # an h5py dataset's name inside its file
        if isinstance(name, str) and getattr(obj, "file", None) is not None:
            out["dataset"] = name
        return out
    shape = getattr(obj, "shape", None)
    if shape is not None:
        kind = f"{type(obj).__module__.split('.')[0]}.{type(obj).__name__}"
        return {"array": kind, "shape": [int(n) for n in shape], "dtype": str(getattr(obj, "dtype", "?"))}
    return {"array": type(obj).__name__}


def _cwd() -> str | None:
    """The working folder, or None where it was deleted (a cleaned-up scratch folder)."""
    try:
        return os.getcwd()
    except OSError:
        return None


def absolute_path(path: str | os.PathLike) -> str:
    """``path`` made absolute where the working folder still exists, else as given."""
    return os.path.abspath(path) if _cwd() is not None or os.path.isabs(path) else str(path)


def file_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's bytes (what ``sha256sum`` prints), or None where it cannot be read.

    Kept per (path, size, modification time): a batch of thousands of images names its one model
    file in every output without reading it again each time.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str | None:
    import hashlib

    try:
        with open(path, "rb") as f:
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def provenance(inputs: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The record of a result made now: time (UTC), software, command line, working folder, inputs.

    Parameters
    ----------
    inputs : mapping, optional
        ``{role: input}``: paths, arrays (see :func:`describe_input`) or ready descriptions.
    **extra
        More keys of the record (e.g. ``model_sha256``).
    """
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),  # as a model's ``created``
        "software": software(),
        "command": shlex.join(argv) if (argv := _COMMAND.get()) else None,
        "cwd": _cwd(),
        "inputs": {k: describe_input(v) for k, v in (inputs or {}).items() if v is not None},
        **extra,
    }
