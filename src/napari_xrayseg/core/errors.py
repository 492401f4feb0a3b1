"""Exceptions raised by napari-xrayseg.

Every message names the problem, the value seen and the fix, in one line, so the
CLI can print it as is and widgets can show it as a notification.
"""

from __future__ import annotations

import errno
import os

__all__ = [
    "USER_WRITE_ERRNOS",
    "Cancelled",
    "ClusterError",
    "InputError",
    "ModelFileError",
    "OutOfMemoryError",
    "OutputExistsError",
    "OutputWriteError",
    "TrainingInterrupted",
    "XraysegError",
    "for_cli",
    "for_gui",
    "out_of_memory",
    "write_error",
]


#: How a fix the API names reads on the command line and in the widgets: (API, CLI, widgets).
#: Messages name the API's argument with the CLI option in brackets, e.g. "pass overwrite=True
#: (--overwrite)"; the CLI and the widgets each show only their own words.
_FIXES = (
    (  # before the shorter fix below, which it starts with
        ", or pass overwrite=True (--overwrite) to start again",
        ", or add --overwrite to start again",
        ", or choose a new output to start again",
    ),
    (" or pass overwrite=True (--overwrite)", " or add --overwrite", ""),  # widgets never overwrite
    ("pass ignore_zero=False", "add --zero-is-class", "tick 'Treat 0 as a class'"),
    ("pass resume=True / --resume to finish it", "add --resume to finish it", "Segment again to finish it"),
    ("use --tile ", "use --tile ", "choose a Tile window of at most "),
    # write_error's hints for the CLI's --out (a model path checked before training, say)
    (
        ": choose a writable location with --out",
        ": choose a writable location with --out",
        ": choose a writable location",
    ),
    ("free space or choose another --out", "free space or choose another --out", "free space or choose another path"),
    ("or choose another --out", "or choose another --out", "or choose another path"),
    ("(tpb_phases=(a, b, c), --tpb-phases A B C)", "(--tpb-phases A B C)", "in the 'TPB phases' field, e.g. 1 2 3"),
    ("): choose another --out", "): choose another --out", "): choose another path"),
    (
        " or less, or leave the tile unset to use the model's default (which adapts to small slices)",
        " or less, or leave the tile unset to use the model's default (which adapts to small slices)",
        " px, or auto (whole slices)",
    ),
)


def _reword(message: object, front: int) -> str:
    """``message`` with each API fix replaced by column ``front`` of :data:`_FIXES` (1: CLI, 2: widgets)."""
    text = str(message)
    for fix in _FIXES:
        text = text.replace(fix[0], fix[front])
    return text


def for_cli(message: object) -> str:
    """An error's message in the command line's words.

    >>> for_cli("output a.zarr exists: choose another path or pass overwrite=True (--overwrite)")
    'output a.zarr exists: choose another path or add --overwrite'
    """
    return _reword(message, 1)


def for_gui(message: object) -> str:
    """An error's message in the widgets' words (they have no overwrite: another path is the fix).

    >>> for_gui("output a.zarr exists: choose another path or pass overwrite=True (--overwrite)")
    'output a.zarr exists: choose another path'
    >>> for_gui("use the same settings, or pass overwrite=True (--overwrite) to start again")
    'use the same settings, or choose a new output to start again'
    """
    return _reword(message, 2)


class XraysegError(Exception):
    """Base class of every error napari-xrayseg raises on purpose."""


class InputError(XraysegError, ValueError):
    """An argument, array or file given by the user cannot be used."""


class ModelFileError(XraysegError, ValueError):
    """A model file is missing, malformed, or does not match its declared architecture."""


class OutputExistsError(XraysegError, FileExistsError):
    """An output path exists and ``overwrite`` was not asked for."""


class OutputWriteError(XraysegError, OSError):
    """An output could not be written: the disk is full, the location is read-only or not writable.

    Also an :class:`OSError` (with the original ``errno``), so ``except OSError`` still catches it.

    Attributes
    ----------
    result : object or None
        What the job had achieved and could not write, if anything (training puts the
        trained model here, so it can be saved elsewhere); ``None`` otherwise.
    """

    result: object | None = None

    def __str__(self) -> str:
        # OSError would print "[Errno 28] ..." once errno is set: keep the one-line message
        return str(self.args[0]) if self.args else super().__str__()


#: errno values that mean "the output location cannot take this file": the user can fix them.
USER_WRITE_ERRNOS = frozenset(
    e
    for e in (
        errno.ENOSPC,
        getattr(errno, "EDQUOT", None),
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.ENAMETOOLONG,
    )
    if e is not None
)


def not_intensities(what: object, dtype: object) -> InputError:
    """The refusal of an image whose values are not grey levels (bool, complex, strings, records).

    A complex image (a ptychographic object, a hologram) is named with the way to its real part.

    >>> str(not_intensities("image", "complex64")).split(":")[1].strip()
    'a complex image (e.g. a ptychographic object) has no grey levels'
    """
    why = "give integer or floating-point intensities"
    if getattr(dtype, "kind", None) == "c" or str(dtype).startswith("complex"):
        why = (
            "a complex image (e.g. a ptychographic object) has no grey levels: segment its phase "
            "(numpy.angle) or amplitude (numpy.abs), saved as floats"
        )
    return InputError(f"{what} has dtype {dtype}: {why}")


def write_error(e: OSError, path: str | os.PathLike | None, *, option: str = "--out") -> OutputWriteError:
    """Turn an :class:`OSError` raised while writing ``path`` into a one-line :class:`OutputWriteError`.

    Parameters
    ----------
    e : OSError
        The error the file system raised.
    path : path-like or None
        The output being written (named in the message; ``e.filename`` when None).
    option : str
        The CLI option that chooses this output, for the hint.

    Returns
    -------
    OutputWriteError
        To be raised ``from e``; keeps ``e.errno``.

    Examples
    --------
    >>> import errno
    >>> str(write_error(OSError(errno.ENOSPC, "No space left on device"), "out.zarr"))
    'no space left on device writing out.zarr: free space or choose another --out'
    >>> e = PermissionError(errno.EACCES, "The process cannot access the file")
    >>> e.winerror = 32  # Windows: the file is open elsewhere
    >>> str(write_error(e, "a.tif")).split(":")[1]
    ' it is open in another program (napari, Fiji, an Explorer preview)'
    """
    target = path if path is not None else (e.filename or "the output")
    code = e.errno
    if getattr(e, "winerror", None) in (32, 33):  # Windows: a sharing or lock violation, not a permission
        msg = (
            f"cannot write {target}: it is open in another program (napari, Fiji, an Explorer preview): close it "
            f"there and run again, or choose another {option}"
        )
    elif code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1), errno.EFBIG):
        msg = f"no space left on device writing {target}: free space or choose another {option}"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "read-only file system" if code == errno.EROFS else "permission denied"
        msg = f"cannot write {target} ({why}): choose a writable location with {option}"
    else:
        msg = f"cannot write {target} ({e.strerror or e}): choose another {option}"
    err = OutputWriteError(msg)
    err.errno, err.strerror, err.filename = code, e.strerror, str(target)
    return err


class ClusterError(XraysegError, RuntimeError):
    """A dask.distributed cluster failed a job: a worker died (``KilledWorker``) or went away."""


class OutOfMemoryError(XraysegError, MemoryError):
    """The machine (RAM) or the GPU ran out of memory; the message names the knobs that lower the need."""


#: the options that lower the memory a job needs, named in out-of-memory messages
MEMORY_KNOBS = "use a smaller --tile or --batch (or --slab), or --device cpu for a GPU that is too small"


def out_of_memory(e: BaseException, doing: str, fix: str | None = None) -> OutOfMemoryError | None:
    """An :class:`OutOfMemoryError` for ``MemoryError``, torch out-of-memory (CPU or CUDA) or ENOMEM; else None.

    Examples
    --------
    >>> str(out_of_memory(MemoryError(), "segmenting")).split(":")[0]
    'out of memory segmenting (RAM)'
    >>> out_of_memory(ValueError("x"), "segmenting") is None
    True
    """
    if isinstance(e, XraysegError):  # already one of ours
        return None
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    low = text.lower()
    if isinstance(e, MemoryError):
        what = "RAM"
    elif isinstance(e, OSError) and e.errno == errno.ENOMEM:
        what = "RAM"
    elif isinstance(e, RuntimeError) and (
        type(e).__name__ == "OutOfMemoryError"
        or "out of memory" in low
        or "not enough memory" in low
        or "can't allocate memory" in low
    ):
        what = "GPU" if any(k in low for k in ("cuda", "gpu", "hip", "mps")) else "RAM"
        what += f": {text[:120]}" if text else ""
    else:
        return None
    return OutOfMemoryError(f"out of memory {doing} ({what}): {fix or MEMORY_KNOBS}")


class Cancelled(XraysegError):
    """A long job stopped because its :class:`~napari_xrayseg.core.progress.CancelToken` was set.

    Attributes
    ----------
    result : object or None
        What the job had achieved when it stopped, if anything useful (training puts the
        best model so far here); ``None`` otherwise.
    """

    result: object | None = None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or Jupyter's *Interrupt the kernel*) stopped :func:`~napari_xrayseg.core.training.train`.

    A ``KeyboardInterrupt``, so a script stops as at any Ctrl-C, that carries the model so far.

    Attributes
    ----------
    result : Model or None
        The model so far, as a cancelled training keeps it (``None`` if no epoch finished).
        After the interrupt in IPython or Jupyter: ``sys.last_value.result``.
    saved : str or None
        Where it was also saved (training's ``out``), if it was.
    """

    result: object | None = None
    saved: str | None = None
