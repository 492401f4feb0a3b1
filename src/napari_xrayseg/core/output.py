"""Every path the project writes is claimed here: exists? overwrite? never into an input.

One rule for labels, confidence maps, pyramids, temporary stores, models, reports and
figures:

- a new path is created exclusively (of two writers racing for it, one wins);
- an existing path is refused unless ``overwrite`` (CLI ``--overwrite``) is given, and
  then the new result is written *beside* it, in ``.NAME.xrayseg-new``, and swapped in
  only once complete. Until then the old output is untouched: a NaN slice, a full disk,
  Ctrl-C, a dead worker or a refused cluster leave it as it was;
- a stale ``.NAME.xrayseg-new`` (from a run that was killed) is resumable with
  ``overwrite=True, resume=True`` (``--overwrite --resume``) and cleared by a plain
  ``--overwrite``; a swap cut short by a kill is completed or undone on the next claim;
- an output that is an input, or lies inside one (or holds one), is refused.

Files (models, JSON, CSV, PNG) are written to a temporary name and moved in place
with :func:`write_file`; folders (zarr stores) are claimed with :func:`claim`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, OutputExistsError, OutputWriteError, XraysegError, write_error

__all__ = [
    "Claim",
    "check_not_input",
    "check_writable",
    "claim",
    "released_on_error",
    "remove_path",
    "source_path",
    "write_file",
]

log = logging.getLogger(__name__)

NEW = ".xrayseg-new"
OLD = ".xrayseg-old"
#: ``.NAME.xrayseg-lock`` beside an output folder: held (``flock``) by the run writing it, so a second run
#: on the same output is refused instead of writing into the first one's folder (two ``--overwrite`` runs
#: mixed their slabs, a QA run). Removed when the output is committed; the operating system releases it
#: when the run dies (a kill leaves an empty file, which the next run on that output takes over).
LOCK = ".xrayseg-lock"


#: Windows: a read-only file cannot be replaced or deleted until its read-only flag is cleared (POSIX asks the
#: folder). Outputs being replaced and our temporary files are cleared of it first (QA: a read-only file in an
#: old output failed a finished --overwrite, and left a hidden temporary file named in the error).
_WINDOWS = os.name == "nt"


def _read_only(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file with Windows' read-only flag (no write bit in its mode there)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and not st.st_mode & stat.S_IWRITE


def _clear_read_only(path: str | os.PathLike) -> None:
    """Let Windows delete or replace ``path``: clear its read-only flag (a no-op elsewhere, or if already clear)."""
    if _WINDOWS and _read_only(path):
        os.chmod(path, stat.S_IWRITE | stat.S_IREAD)


def _unlink(path: str | os.PathLike) -> None:
    """``os.unlink``, a read-only file included on Windows."""
    _clear_read_only(path)
    os.unlink(path)


def _rmtree_retry(func: Callable[..., Any], path: str, exc: Any) -> None:
    """``shutil.rmtree``'s error handler: a read-only file (Windows) is made writable and removed; else re-raised."""
    if not (_WINDOWS and _read_only(path)):
        raise exc[1] if isinstance(exc, tuple) else exc  # onerror gives sys.exc_info(), onexc the error
    _clear_read_only(path)
    func(path)


def remove_path(p: Path) -> None:
    """Remove a file, link or folder tree (missing is fine; read-only files too, on Windows)."""
    if p.is_dir() and not p.is_symlink():
        handler = "onexc" if sys.version_info >= (3, 12) else "onerror"  # onerror is deprecated from 3.12
        shutil.rmtree(p, **{handler: _rmtree_retry})
    elif p.exists() or p.is_symlink():
        _unlink(p)


def _name_max(folder: Path) -> int:
    """The longest file name the file system of ``folder`` (or its nearest existing parent) takes (255 usually)."""
    for f in (folder, *folder.parents):
        if f.exists():
            try:
                return int(os.pathconf(f, "PC_NAME_MAX"))
            except (OSError, ValueError, AttributeError):  # not POSIX (Windows), or not told
                return 255
    return 255


def _sibling(p: Path, tag: str) -> Path:
    return p.with_name(f".{p.name}{tag}")


def _ours(p: Path) -> bool:
    """Whether ``p`` is a lock file of ours (``.NAME.xrayseg-lock``), which a folder check does not count."""
    return p.name.startswith(".") and p.name.endswith(LOCK)


def _busy(final: Path) -> bool:
    """Whether another run holds ``final``'s lock now (taken and let go of at once; False where it cannot tell)."""
    if not _sibling(final, LOCK).exists():  # a run holding the lock has its file there: the common case ends here
        return False
    probe = Claim(final, final, False)
    try:
        probe.lock()
    except OutputExistsError:
        return True
    except XraysegError:  # an unwritable folder: take() says so
        return False
    probe.release()
    return False


def _acquire(c: Claim) -> Any:
    """Hold ``c``'s lock file (an open file) or raise :class:`OutputExistsError` if another run holds it.

    None where advisory locks do not exist (Windows) or the file system refuses them (some NFS).
    """
    try:
        import fcntl
    except ImportError:
        return None
    lock = _sibling(c.final, LOCK)
    for _ in range(3):
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fh = open(lock, "a")  # noqa: SIM115  # held for the run, closed by release()
        except OSError as e:
            raise write_error(e, c.final, option=c.option) from e
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise OutputExistsError(
                f"{c.what} {c.final} is being written by another run right now: wait for it to end, "
                f"or choose another path ({c.option})"
            ) from None
        except OSError:  # no locks on this file system: as before them
            fh.close()
            return None
        try:
            if os.stat(lock).st_ino == os.fstat(fh.fileno()).st_ino:
                return fh
        except FileNotFoundError:
            pass
        fh.close()  # the run holding it finished and removed it meanwhile: lock the new one
    return None


#: Files the operating system leaves in folders it shows (Finder, Explorer): no one's data.
OS_LITTER = (".DS_Store", "Thumbs.db", "desktop.ini", "Desktop.ini")


def os_litter(p: Path) -> bool:
    """Whether ``p`` is a file the OS left (``.DS_Store``, ``Thumbs.db``, macOS ``._NAME``).

    An output folder holding only such files counts as empty, and replacing it deletes them.
    """
    return p.is_file() and (p.name in OS_LITTER or p.name.startswith("._"))


def source_path(obj: Any) -> Path | None:
    """The file or folder an array-like is read from, where it can be told (zarr, h5py, memmap, TIFF)."""
    if obj is None:
        return None
    if isinstance(obj, (str, os.PathLike)):
        text = str(obj)
        if ":" in text and not Path(text).exists():  # file.h5:/dataset names the file file.h5
            base = text.rpartition(":")[0]
            if base and Path(base).exists():
                return Path(base)
        return Path(obj)
    store = getattr(obj, "store", None)
    root = getattr(store, "xrayseg_source", None) or getattr(store, "root", None)
    if root is not None and not callable(root):
        try:
            base = Path(str(root))
            sub = getattr(obj, "path", "") or ""
            return base / sub if isinstance(sub, str) and sub else base
        except TypeError:
            return None
    fname = getattr(obj, "filename", None)  # numpy memmap (a Path since numpy 2, a str before)
    if isinstance(fname, (str, os.PathLike)):
        return Path(fname)
    f = getattr(obj, "file", None)  # h5py dataset
    fname = getattr(f, "filename", None)
    if isinstance(fname, str):
        return Path(fname)
    return None


def _file_key(p: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of an existing path; None where it is missing or its file system has no inodes.

    Some network drives (sshfs-win, Google Drive, WebDAV) give every file inode 0, where
    ``os.path.samefile`` calls any two paths one file (CPython #78116): every output there was
    refused as "inside the input" (review).
    """
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if st.st_ino else None


def check_not_input(out: str | os.PathLike, inputs: Iterable[Any], *, option: str = "--out") -> None:
    """Refuse an output that is an input, lies inside one, or holds one.

    Paths are compared as strings and by ``(device, inode)``: on a case-insensitive disk (macOS,
    exFAT) ``proj.zarr`` is the group ``Proj.zarr`` that holds the input ``Proj.zarr/tomo``, which
    ``--overwrite`` deleted (QA); so are NFC and NFD spellings of one name (macOS).

    Raises
    ------
    InputError
        Naming both paths and the option to change.
    """
    o = Path(os.path.abspath(out))
    ro = Path(os.path.realpath(o))
    for src in inputs:
        s = source_path(src)
        if s is None:
            continue
        s = Path(os.path.realpath(s))
        s_key = _file_key(s)
        for a in {o, ro}:
            a_key = _file_key(a)
            if a == s or (a_key is not None and a_key == s_key):
                raise InputError(
                    f"{option} {out} is the input {s}: writing there would destroy it; choose another {option}"
                )
            inside = s in a.parents or (s_key is not None and any(_file_key(p) == s_key for p in a.parents))
            if inside or a in s.parents or (a_key is not None and any(_file_key(p) == a_key for p in s.parents)):
                rel = "inside" if inside else "around"
                raise InputError(
                    f"{option} {out} lies {rel} the input {s}: writing there could destroy it; "
                    f"choose a path outside the input for {option}"
                )


def check_writable(path: str | os.PathLike, what: str = "output", option: str = "--out") -> None:
    """Refuse, before the work, an output whose nearest existing folder is a file or cannot be written.

    Raises
    ------
    InputError
        Naming the folder and the option to change.
    """
    p = Path(path)
    parent = next((q for q in p.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(f"cannot write {what} {p}: {parent} is a file, not a folder; choose another {option}")
    if parent is not None and not (os.access(parent, os.W_OK) and _can_create_in(parent)):
        raise InputError(f"cannot write {what} {p}: folder {parent} is not writable; choose another {option}")


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be made in ``folder``, tried (an unnamed temporary file, gone at once).

    ``os.access`` says yes on Windows for any folder (only the read-only attribute counts, which folders
    ignore): a folder the ACLs refuse (Controlled Folder Access, Program Files, a share) passed, and the
    save failed after the whole training (QA). Errors other than a refusal are left to the write itself.
    """
    import errno
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".xrayseg-probe-"):
            return True
    except OSError as e:
        return e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS)


@dataclass
class Claim:
    """A decided output: write to :attr:`path`, then :meth:`commit` to make it :attr:`final`.

    Attributes
    ----------
    final : Path
        Where the result must end up.
    path : Path
        Where to write: ``final`` itself, or ``.NAME.xrayseg-new`` beside an existing
        ``final`` that is being overwritten.
    resume : bool
        Whether ``path`` already exists and the run continues it.
    """

    final: Path
    path: Path
    resume: bool
    what: str = "output"
    option: str = "--out"
    reuse: bool = False  # write into an existing empty folder
    held: Any = field(default=None, repr=False, compare=False)  # the lock file, from lock() to commit()

    def lock(self) -> None:
        """Hold the output's lock (before reading or removing anything of it); a no-op when held.

        Raises
        ------
        OutputExistsError
            If another run is writing this output.
        """
        if self.held is None:
            self.held = _acquire(self)

    def release(self) -> None:
        """Let go of the lock and remove its file (:meth:`commit` does; :func:`released_on_error` on failure)."""
        fh, self.held = self.held, None
        if fh is None or fh.closed:
            return
        lock = _sibling(self.final, LOCK)
        with contextlib.suppress(OSError):
            if os.stat(lock).st_ino == os.fstat(fh.fileno()).st_ino:  # ours still, not a later run's
                lock.unlink()
        fh.close()

    @property
    def replacing(self) -> bool:
        """Whether an existing output is being replaced (writing beside it)."""
        return self.path != self.final

    def take(self, *, folder: bool = True) -> Path:
        """Create the parent folders and (for folders) claim :attr:`path` exclusively; return it.

        Raises
        ------
        OutputExistsError
            If another writer created ``path`` meanwhile.
        OutputWriteError
            If the location cannot be written.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError as e:
            raise write_error(
                OSError(20, "Not a directory", str(self.path.parent)), self.final, option=self.option
            ) from e
        except OSError as e:
            raise write_error(e, self.final, option=self.option) from e
        if folder:
            self.lock()
        if self.resume or self.reuse or not folder:
            return self.path
        if self.replacing:
            remove_path(self.path)  # a stale attempt: --overwrite starts again
        try:
            self.path.mkdir()  # atomic: only one writer gets a given new path
        except FileExistsError as e:
            raise OutputExistsError(_exists(self)) from e
        except OSError as e:
            raise write_error(e, self.final, option=self.option) from e
        return self.path

    def commit(self) -> Path:
        """Swap the finished result in place of the old one (no-op when writing in place); release the lock."""
        if not self.replacing:
            self.release()
            return self.final
        old = _sibling(self.final, OLD)
        try:
            remove_path(old)
            if not (self.final.exists() or self.final.is_symlink()):  # written beside a new one (beside=True)
                os.rename(self.path, self.final)
            elif self.path.is_dir() and not self.path.is_symlink():
                os.rename(self.final, old)  # a kill between the two renames is repaired by the next claim
                os.rename(self.path, self.final)
            else:
                _clear_read_only(self.final)
                os.replace(self.path, self.final)
        except OSError as e:
            raise write_error(e, self.final, option=self.option) from e
        try:  # the new result is in place: an old one that cannot be removed is no failure of the run
            remove_path(old)
        except OSError as e:
            log.warning("replaced %s; could not remove the old output %s (%s): remove it by hand", self.final, old, e)
        log.info("replaced %s with the new result", self.final)
        self.release()
        return self.final


@contextlib.contextmanager
def released_on_error(*claims: Claim | None) -> Iterator[None]:
    """Let go of the claims' locks if the block fails: a retry in this process (napari, a notebook) may take them."""
    try:
        yield
    except BaseException:
        for c in claims:
            if c is not None:
                c.release()
        raise


def _exists(c: Claim, hint: str = "") -> str:
    return f"{c.what} {c.final} exists{hint}: choose another path or pass overwrite=True (--overwrite)"


def _repair(final: Path) -> None:
    """Finish or undo a swap that a kill cut short."""
    old = _sibling(final, OLD)
    if old.exists() or old.is_symlink():
        if final.exists() or final.is_symlink():
            try:
                remove_path(old)  # the swap finished
            except OSError as e:  # left by a commit that could not remove it either: before the work, not after it
                raise OutputWriteError(
                    f"the old output {old}, left beside {final} by an earlier replacement, cannot be removed "
                    f"({e.strerror or e}): remove it by hand, then run again"
                ) from e
        else:
            os.rename(old, final)  # the new one never arrived: the old one comes back
            log.warning("restored %s from an interrupted replacement", final)


def claim(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[Any] = (),
    what: str = "output",
    option: str = "--out",
    hint: Callable[[Path], str] | None = None,
    empty_ok: bool = False,
    owns: Iterable[str] | None = None,
    store: bool = False,
    beside: bool = False,
) -> Claim:
    """Decide where an output goes; nothing is created or removed until :meth:`Claim.take`.

    Parameters
    ----------
    path : path-like
        The output.
    overwrite : bool
        Replace an existing output: the new one is written beside it and swapped in by
        :meth:`Claim.commit`.
    resume : bool
        Continue an unfinished output: ``path`` itself, or (with ``overwrite``) the
        unfinished replacement beside it.
    inputs : iterable
        Paths or arrays the job reads; the output may not be one of them or lie inside one.
    what, option : str
        Name the output and the CLI option that sets it, in messages.
    hint : callable, optional
        Adds to the "exists" message, e.g. how to resume an existing output.
    empty_ok : bool
        An existing *empty* folder counts as free (output folders a user made beforehand).
    owns : iterable of str, optional
        The names an output *folder* holds. With ``overwrite`` the old folder is replaced whole,
        so one holding anything else (the user's notes, another tool's files) is refused.
    store : bool
        The output is a zarr store: with ``overwrite`` only a zarr store (or an empty folder)
        is replaced, never a file or a folder of other things (``--out myproject``).
    beside : bool
        Write a new output beside its final path too, as one being replaced is (it goes with
        another output that is replaced: a confidence map new to a replaced segmentation), so a
        run cut short resumes both with ``overwrite=True, resume=True``.

    Returns
    -------
    Claim

    Raises
    ------
    OutputExistsError
        If ``path`` exists and neither ``overwrite`` nor ``resume`` is given.
    InputError
        If ``path`` is (inside) an input.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> c = claim(d / "a.zarr")
    >>> c.path == c.final, c.resume
    (True, False)
    """
    if "://" in os.fspath(path):  # QA: s3://bucket/x.zarr made a local folder "s3:"
        raise InputError(
            f"{what} {os.fspath(path)} is a URL: outputs are written to local or mounted folders; give a path "
            f"({option})"
        )
    final = Path(path)
    if final.is_symlink():  # written through the link (to scratch space, say): --overwrite replaced the link itself
        try:
            final = final.resolve()
        except (RuntimeError, OSError) as e:  # a loop of links
            raise InputError(f"{what} {final} is a symlink that leads nowhere ({e}): choose another {option}") from None
    check_not_input(final, inputs, option=option)
    if final.exists() and not (final.is_file() or final.is_dir()):  # --overwrite made /dev/null a plain file
        raise InputError(
            f"{what} {final} is not a regular file (a device, a named pipe or a socket): nothing is written to "
            f"it or in its place; give a file name ({option})"
        )
    if store and final.suffix.lower() in NOT_STORE_SUFFIXES:  # a zarr folder named x.tif: no reader opens it
        raise InputError(
            f"{what} {final} is written as a zarr store: name it {final.with_suffix('.zarr')} (label files as "
            "TIFF: segment_many, xrayseg predict --format tiff, into a folder)"
        )
    # the longest name written beside it (".NAME.xrayseg-lock"), in bytes as the file system counts them (QA: 82
    # CJK characters, 246 bytes, passed a count of characters)
    longest = len(os.fsencode(_sibling(final, LOCK).name))
    limit = _name_max(final.parent)
    if longest > limit:  # QA: "cannot write .NAME.xrayseg-lock (File name too long)" for a legal NAME
        size = len(os.fsencode(final.name))
        extra = longest - size
        raise InputError(
            f"{what} name {final.name[:40]}... is {size} bytes: at most {limit - extra} here (the files written "
            f"beside it while it is made add {extra}); choose a shorter name ({option})"
        )
    if _busy(final):  # checked before anything of it is repaired or removed: another run's work is left alone
        raise OutputExistsError(
            f"{what} {final} is being written by another run right now: wait for it to end, or choose another path "
            f"({option})"
        )
    _repair(final)
    new = _sibling(final, NEW)
    if not (final.exists() or final.is_symlink()):
        if beside:
            return Claim(final, new, bool(resume and new.exists()), what, option)
        if new.exists():
            remove_path(new)  # a replacement whose original is gone
        return Claim(final, final, False, what, option)
    if (
        empty_ok
        and final.is_dir()
        and not final.is_symlink()
        and all(os_litter(p) or _ours(p) for p in final.iterdir())
    ):
        return Claim(final, final, False, what, option, reuse=True)
    if overwrite and owns is not None and not final.is_dir():
        raise OutputExistsError(
            f"{what} {final} is a file, and {option} writes a folder there: --overwrite replaces only such a "
            "folder; choose another path"
        )
    if overwrite:
        if store and not _replaceable_store(final):
            kind = "a folder" if final.is_dir() else "a file"
            held = sorted(p.name for p in final.iterdir()) if final.is_dir() else []
            shown = f" (it holds {', '.join(held[:4])}{', ...' if len(held) > 4 else ''})" if held else ""
            raise OutputExistsError(
                f"{what} {final} is {kind}, not a zarr store{shown}: {option} with --overwrite replaces only a "
                "zarr store; choose another path"
            )
        if owns is not None and final.is_dir() and not final.is_symlink():
            ours = set(owns)
            foreign = sorted(
                p.name for p in final.iterdir() if p.name not in ours and not os_litter(p) and not _ours(p)
            )
            if foreign:
                shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
                raise OutputExistsError(
                    f"{what} {final} holds files it does not write ({shown}), which {option} with --overwrite "
                    "would delete: move them or choose another folder"
                )
        return Claim(final, new, bool(resume and new.exists()), what, option)
    if resume:
        return Claim(final, final, True, what, option)
    c = Claim(final, final, False, what, option)
    raise OutputExistsError(_exists(c, hint(final) if hint else ""))


#: File name endings of other formats: a zarr store under such a name (``labels.tif``) opens nowhere.
NOT_STORE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".h5", ".hdf5", ".hdf", ".nxs")


#: the file ``segment`` keeps in an output while creating its stores (writer.CREATING)
_CREATING = ".xrayseg-creating"


def _replaceable_store(path: Path) -> bool:
    """Whether ``path`` is a zarr store (v2 or v3 metadata at its top), one cut off while made, or an empty folder."""
    if not path.is_dir():
        return False
    marks = ("zarr.json", ".zarray", ".zgroup", _CREATING)
    return any((path / m).exists() for m in marks) or all(map(os_litter, path.iterdir()))


def write_file(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    overwrite: bool = False,
    inputs: Iterable[Any] = (),
    what: str = "output",
    option: str = "--out",
) -> Path:
    """Write a file through a temporary name beside it, then move it in place.

    Without ``overwrite`` a file that appears meanwhile is never replaced; with it the old
    file stays until the new one is complete. A failed write leaves no partial file.

    Parameters
    ----------
    path : path-like
        The file.
    write : callable
        ``write(tmp_path)`` writes the content.
    overwrite : bool
        Replace an existing file.
    inputs, what, option
        As in :func:`claim`.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    OutputExistsError
        If ``path`` exists (or appears meanwhile) and ``overwrite`` is False.
    OutputWriteError
        Disk full, read-only or unwritable location.
    InputError
        If ``path`` is a folder or (inside) an input.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} {p} is a directory: give a file name")
    c = claim(p, overwrite=overwrite, inputs=inputs, what=what, option=option)
    p = c.final  # through a symlink: its target is written, the link stays
    c.take(folder=False)
    try:
        tmp = _new_temp(p)
        mode = os.stat(tmp).st_mode & 0o7777  # what open() gives a new file here (0o666 less the umask)
    except OSError as e:
        raise write_error(e, p, option=option) from e
    try:
        write(Path(tmp))
        if overwrite and p.is_file():  # a replaced file keeps its permissions
            mode = p.stat().st_mode & 0o7777
        os.chmod(tmp, mode)  # also where the writer made its own file (safetensors: 0o600)
        if overwrite:
            _clear_read_only(p)  # a read-only file is replaced as on POSIX, and stays read-only (its mode above)
            os.replace(tmp, p)
        else:
            _link_new(tmp, p, _exists(c))
    except OutputExistsError:
        raise
    except OSError as e:
        raise write_error(e, p, option=option) from e
    finally:
        with contextlib.suppress(OSError):  # never in place of the error that brought us here
            if os.path.exists(tmp):
                _unlink(tmp)
    _sweep_stale_temps(p)
    return p


#: A temporary file of an atomic write older than this was left by a killed process.
STALE_TEMP_S = 3600.0


def _sweep_stale_temps(p: Path) -> None:
    """Remove temporary files of earlier writes to ``p`` that a killed process left.

    ``kill -9`` mid-save leaves a full-size hidden ``.NAME.XXXX.tmp``; recent ones may be
    another writer's, and stay.
    """
    import time

    now = time.time()
    try:
        for f in p.parent.glob(f".{p.name}.*.tmp"):
            try:
                if now - f.stat().st_mtime > STALE_TEMP_S:
                    f.unlink()
            except OSError:
                pass
    except OSError:
        pass


def _new_temp(p: Path) -> str:
    """Create an empty, unique temporary file beside ``p`` and return its name.

    Created as :func:`open` creates files (mode 0o666 less the umask), not as
    :func:`tempfile.mkstemp` (or safetensors' writer) does (0o600): the file is moved in place
    as the user's output, which colleagues on a shared disk must be able to read as they can
    read the user's other files.
    """
    import secrets

    for _ in range(100):
        tmp = p.parent / f".{p.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return str(tmp)
    raise FileExistsError(f"no free temporary name beside {p}")


def write_text(
    path: str | os.PathLike, text: str, *, overwrite: bool = False, what: str = "output", option: str = "--out"
) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`write_file`: atomically, never replacing a file unasked."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return write_file(path, write, overwrite=overwrite, what=what, option=option)


def _link_new(tmp: str, path: Path, exists: str) -> None:
    """Move ``tmp`` to a *new* ``path``: a file that appeared meanwhile is never replaced."""
    try:
        os.link(tmp, path)  # fails if path exists: no check-then-replace race
    except FileExistsError as e:
        raise OutputExistsError(exists) from e
    except OSError:  # no hard links here (some network / FAT file systems): check, then rename
        if path.exists():
            raise OutputExistsError(exists) from None
        os.replace(tmp, path)
