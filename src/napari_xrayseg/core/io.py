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
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, OutputExistsError

__all__ = ["as_dask", "create_zarr", "open_volume", "volume_chunks", "write_volume"]

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
        If the path is missing, unreadable, of an unknown format, or a group holds
        several arrays and no ``dataset`` was given.
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
    try:
        if p.is_dir() or suffix == ".zarr":
            return _open_zarr(p, dataset)
        if suffix in _TIFF:
            return _open_tiff(p)
        if suffix in _HDF5:
            return _open_hdf5(p, dataset)
        if suffix == ".npy":
            return np.load(p, mmap_mode="r", allow_pickle=False)
    except InputError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"cannot read {p} as {suffix or 'zarr'}: {e}; is the file complete?") from e
    raise InputError(f"unknown volume format {p.name!r}: use zarr, TIFF, HDF5 (.h5) or .npy")


def _open_zarr(p: Path, dataset: str | None) -> Any:
    import zarr

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
    ms = node.attrs.get("multiscales") or (node.attrs.get("ome") or {}).get("multiscales")
    if ms:
        level0 = ms[0]["datasets"][0]["path"]
        log.info("%s is OME-Zarr: using level %s", p, level0)
        return node[level0]
    names = _zarr_names(node)
    if len(names) == 1:
        return node[names[0]]
    if not names:
        raise InputError(f"zarr group {p} holds no array")
    raise InputError(f"zarr group {p} holds several arrays {names}: choose one with --dataset NAME")


def _zarr_names(group: Any) -> list[str]:
    import zarr

    return sorted(k for k, v in group.members() if isinstance(v, zarr.Array))


def _open_tiff(p: Path) -> Any:
    import tifffile

    try:
        return tifffile.memmap(str(p), mode="r")
    except (ValueError, OSError):  # compressed or tiled TIFF: cannot be memory-mapped
        log.info("%s cannot be memory-mapped; reading it into memory", p)
        return tifffile.imread(str(p))


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


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def create_zarr(path: str | os.PathLike, shape: tuple[int, ...], *, dtype: Any = "uint8",
                chunks: tuple[int, ...] | None = None, overwrite: bool = False,
                attrs: dict[str, Any] | None = None) -> Any:
    """Create a zarr array on disk, refusing to replace an existing path silently.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    import zarr

    p = Path(path)
    if p.exists():
        if not overwrite:
            raise OutputExistsError(f"output {p} exists: choose another path or pass overwrite=True (--overwrite)")
        _remove(p)
    try:
        arr = zarr.create_array(store=str(p), shape=shape, chunks=chunks or "auto", dtype=dtype,
                                fill_value=0)
    except OSError as e:
        raise InputError(f"cannot create output {p}: {e.strerror or e}") from e
    if attrs:
        arr.attrs.update(json.loads(json.dumps(attrs)))
    return arr


def write_volume(path: str | os.PathLike, data: Any, *, chunks: tuple[int, ...] | None = None,
                 overwrite: bool = False, attrs: dict[str, Any] | None = None) -> Any:
    """Write an in-memory array to a new zarr array and return it."""
    data = np.asarray(data)
    arr = create_zarr(path, data.shape, dtype=data.dtype, chunks=chunks, overwrite=overwrite, attrs=attrs)
    arr[...] = data
    return arr
