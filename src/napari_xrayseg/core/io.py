"""Open volumes lazily and create output stores.

Readers return *lazy* array-likes that support numpy slicing (``arr[a:b]``) and
have ``shape``/``dtype``/``ndim``: zarr arrays, h5py datasets, numpy memmaps.
Inference reads them a slab at a time, so a volume larger than RAM is fine.
Wrap with :func:`as_dask` when a dask array is wanted (e.g. for a napari layer).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, XraysegError, write_error

__all__ = ["as_dask", "check_chunks_present", "create_zarr", "open_volume", "read_block", "volume_chunks",
           "write_volume"]

log = logging.getLogger(__name__)

_TIFF = (".tif", ".tiff")
_HDF5 = (".h5", ".hdf5", ".hdf", ".nxs")


def open_volume(path: str | os.PathLike, *, dataset: str | None = None) -> Any:
    """Open a volume (2D or 3D) lazily.

    Parameters
    ----------
    path : path-like
        A zarr array or group (also OME-Zarr: level 0 is used), a TIFF file, an HDF5
        file (``dataset`` names the array, or ``file.h5:/path``), or a ``.npy`` file.
    dataset : str, optional
        The array inside a zarr group or HDF5 file; needed when there are several.

    Returns
    -------
    array-like
        A lazily read array (zarr array, h5py dataset or numpy memmap).

    Raises
    ------
    InputError
        If the path is missing, unreadable, truncated, of an unknown or wrong format
        (e.g. a ``.npy`` of Python objects, an RGB or multi-channel TIFF), or a group
        holds several arrays and no ``dataset`` was given.
    """
    spath = str(path)
    if dataset is None and ":" in spath and not Path(spath).exists():
        base, _, ds = spath.rpartition(":")
        if Path(base).exists() and ds:
            spath, dataset = base, ds
    p = Path(spath)
    if not p.exists():
        raise InputError(f"input {p} does not exist: check the path")
    suffix = p.suffix.lower()
    if p.is_dir() and suffix in (*_TIFF, *_HDF5, ".npy"):
        raise InputError(f"input {p} is a directory, not a {suffix} file: check the path")
    try:
        if p.is_dir() or suffix == ".zarr":
            return _open_zarr(p, dataset)
        if suffix in _TIFF:
            return _open_tiff(p)
        if suffix in _HDF5:
            return _open_hdf5(p, dataset)
        if suffix == ".npy":
            return _open_npy(p)
    except InputError:
        raise
    except PermissionError as e:
        raise InputError(f"cannot read {p}: permission denied; check the file's permissions") from e
    except (OSError, ValueError, KeyError, TypeError, EOFError, IndexError, struct.error, zlib.error,
            RuntimeError) as e:  # tifffile and codecs raise all of these on damaged files
        raise InputError(f"cannot read {p} as {suffix or 'zarr'}: {e}; is the file complete?") from e
    raise InputError(f"unknown volume format {p.name!r}: use zarr, TIFF, HDF5 (.h5) or .npy")


def _open_zarr(p: Path, dataset: str | None) -> Any:
    import zarr

    from .ome import multiscale_levels

    try:
        node = zarr.open(store=str(p), mode="r")
    except Exception as e:  # zarr raises several unrelated types for "not a zarr store"
        raise InputError(f"{p} is not a readable zarr array or group ({type(e).__name__}: {e})") from e
    if isinstance(node, zarr.Array):
        return node
    if dataset is not None:
        try:
            arr = node[dataset]
        except KeyError as e:
            raise InputError(f"zarr group {p} has no array {dataset!r}: it has {_zarr_names(node)}") from e
        if not isinstance(arr, zarr.Array):
            raise InputError(f"{dataset!r} in {p} is a group, not an array: it has {_zarr_names(arr)}")
        return arr
    levels = multiscale_levels(node)
    if levels:
        log.info("%s is OME-Zarr: using level %s", p, levels[0].path)
        return levels[0]
    names = _zarr_names(node)
    if len(names) == 1:
        return node[names[0]]
    if not names:
        raise InputError(f"zarr group {p} holds no array")
    raise InputError(f"zarr group {p} holds several arrays {names}: choose one with --dataset NAME")


def _zarr_names(group: Any) -> list[str]:
    import zarr

    return sorted(k for k, v in group.members() if isinstance(v, zarr.Array))


def _open_npy(p: Path) -> Any:
    with open(p, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise InputError(f"{p} is not a .npy file (no NumPy header): is it complete, or of another format?")
        fh.seek(0)
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(fh)  # the header only: no data read, nothing unpickled
    if dtype.hasobject:
        raise InputError(f"{p} holds Python objects (pickled data), which napari-xrayseg never loads: "
                         "save a numeric array")
    return np.load(p, mmap_mode="r", allow_pickle=False)


def _open_tiff(p: Path) -> Any:
    """A TIFF as a lazy array.

    Memory-mapped when uncompressed and contiguous, else read through tifffile's zarr
    interface (compressed, tiled, BigTIFF, one page per slice), which decodes only the
    pages and tiles a slab needs, so memory does not grow with the depth.
    """
    import tifffile
    import zarr

    tif = tifffile.TiffFile(str(p))
    series = tif.series
    restacked = len(series) > 1
    if len(series) > 1 and all(len(s.shape) == 2 and s.shape == series[0].shape and s.dtype == series[0].dtype
                               for s in series):
        tif.close()  # pages written one by one (one series each): read them as one stack
        tif = tifffile.TiffFile(str(p), is_shaped=False)
        series = tif.series
    first = series[0]
    axes, shape = first.axes, tuple(first.shape)
    photometric = tif.pages[0].photometric
    colour = photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR, tifffile.PHOTOMETRIC.SEPARATED)
    if colour and "S" in axes and shape[axes.index("S")] > 1:
        tif.close()
        raise InputError(f"TIFF {p} is a colour ({photometric.name}) image with {shape[axes.index('S')]} samples "
                         f"per pixel (shape {shape}): convert it to a single-channel (grayscale) image first")
    if not restacked and first.dataoffset is not None:  # uncompressed and contiguous: map it
        tif.close()
        return tifffile.memmap(str(p), mode="r")
    store = first.aszarr(level=0)  # keeps the file open for as long as the array lives
    store.xrayseg_source = str(p)  # lets the output helper refuse writing into this input
    log.info("%s is compressed, tiled or paged: read lazily", p)
    return zarr.open_array(store=store, mode="r")


def _open_hdf5(p: Path, dataset: str | None) -> Any:
    try:
        import h5py
    except ImportError as e:
        raise InputError("reading HDF5 needs h5py: pip install 'napari-xrayseg[hdf5]'") from e
    f = h5py.File(p, "r")
    if dataset is None:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        if len(names) != 1:
            f.close()
            raise InputError(f"HDF5 file {p} holds {len(names)} datasets {names[:10]}: "
                             "choose one with --dataset NAME")
        dataset = names[0]
    if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
        f.close()
        raise InputError(f"HDF5 file {p} has no dataset {dataset!r}")
    return f[dataset]


def check_chunks_present(arr: Any, *, what: str = "image") -> None:
    """Refuse a zarr array with chunks missing from its store (zarr would read them as zeros).

    Only where zarr can tell (zarr arrays); others pass. A store written by
    :func:`napari_xrayseg.segment` writes every chunk; a missing one means an incomplete
    copy or an interrupted writer.

    Raises
    ------
    InputError
        Naming the array, the number of chunks missing and the fix.
    """
    import zarr

    if not isinstance(arr, zarr.Array) or getattr(arr.store, "xrayseg_source", None):
        return
    try:
        have, want = arr.nchunks_initialized, arr.nchunks
    except (NotImplementedError, TypeError, AttributeError, OSError):  # stores that cannot list their keys
        return
    if have < want:
        src = getattr(arr.store, "root", None) or arr.store
        raise InputError(f"{what} {src} lacks {want - have} of its {want} chunks (zarr would read them as zeros): "
                         "the store was not completely written or copied; copy it again")


def volume_chunks(arr: Any) -> tuple[int, ...] | None:
    """Chunk shape of a zarr/dask/h5py array, or ``None`` for in-memory arrays."""
    chunks = getattr(arr, "chunks", None)
    if chunks is None:
        return None
    if chunks and isinstance(chunks[0], tuple):  # dask: tuple of tuples
        return tuple(int(c[0]) for c in chunks)
    return tuple(int(c) for c in chunks)


def as_dask(arr: Any) -> Any:
    """Wrap an array-like as a dask array, keeping its chunks where it has them."""
    import dask.array as da

    if isinstance(arr, da.Array):
        return arr
    chunks = volume_chunks(arr) or "auto"
    return da.from_array(arr, chunks=chunks, asarray=True)


def read_block(arr: Any, index: Any, *, what: str = "image") -> np.ndarray:
    """Read ``arr[index]`` into memory; a damaged store becomes an :class:`InputError`.

    Parameters
    ----------
    arr : array-like
        numpy, dask, zarr or h5py array.
    index : index expression
        What to read, e.g. ``(slice(0, 4),)``.
    what : str
        Names the data in the message, e.g. ``"labels (slices 0..3 along axis 0)"``.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    InputError
        If the storage cannot be read or decoded (a truncated chunk, an I/O error).

    Examples
    --------
    >>> read_block(np.arange(6).reshape(2, 3), (slice(1, 2),)).tolist()
    [[3, 4, 5]]
    """
    try:
        return np.asarray(arr[index])
    except XraysegError:
        raise
    except (OSError, RuntimeError, ValueError, EOFError, zlib.error) as e:
        # codecs raise RuntimeError/ValueError/zlib.error on damaged chunks, h5py/tifffile OSError
        raise InputError(f"cannot read {what} ({type(e).__name__}: {e}): the file may be truncated or "
                         "damaged") from e


def create_zarr(path: str | os.PathLike, shape: tuple[int, ...], *, dtype: Any = "uint8",
                chunks: tuple[int, ...] | None = None, attrs: dict[str, Any] | None = None,
                inputs: Any = ()) -> Any:
    """Create a new zarr array on disk; an existing path is refused.

    The path is claimed with an exclusive ``mkdir`` first, so of two writers racing for
    the same new output exactly one wins; the other gets :class:`OutputExistsError`.
    To replace an existing array, use :func:`write_volume` with ``overwrite=True``.

    Raises
    ------
    OutputExistsError
        If ``path`` exists (or another writer just created it).
    OutputWriteError
        If the location cannot be written (disk full, read-only, a file in the way).
    """
    from .output import claim

    c = claim(path, inputs=inputs)
    return _create(c.take(), shape, dtype, chunks, attrs, c.final)


def _create(p: Path, shape: tuple[int, ...], dtype: Any, chunks: Any, attrs: Any, final: Path) -> Any:
    import zarr

    try:
        arr = zarr.create_array(store=str(p), shape=shape, chunks=chunks or "auto", dtype=dtype, fill_value=0)
        if attrs:
            arr.attrs.update(json.loads(json.dumps(attrs)))
    except OSError as e:
        raise write_error(e, final) from e
    return arr


def write_volume(path: str | os.PathLike, data: Any, *, chunks: tuple[int, ...] | None = None,
                 overwrite: bool = False, attrs: dict[str, Any] | None = None, inputs: Any = ()) -> Any:
    """Write an in-memory array to a zarr array and return it.

    With ``overwrite``, an existing array is replaced only once the new one is written
    (see :mod:`napari_xrayseg.core.output`).

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    OutputWriteError
        If writing fails (disk full, read-only location); a partial new array is left
        (beside the old one, when overwriting).
    InputError
        If ``path`` is (inside) one of ``inputs``.
    """
    import zarr

    from .output import claim

    data = np.asarray(data)
    c = claim(path, overwrite=overwrite, inputs=inputs)
    arr = _create(c.take(), data.shape, data.dtype, chunks, attrs, c.final)
    try:
        arr[...] = data
    except OSError as e:
        raise write_error(e, c.final) from e
    return zarr.open_array(store=str(c.commit()), mode="r+")
