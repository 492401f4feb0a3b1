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
import unicodedata
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, XraysegError, not_intensities, write_error

__all__ = [
    "as_dask",
    "as_input",
    "check_chunks_present",
    "IMAGE_2D_SUFFIXES",
    "RGB_MODES",
    "create_zarr",
    "image_files",
    "is_image_folder",
    "open_image",
    "open_volume",
    "pair_image_folders",
    "read_image_2d",
    "read_block",
    "class_names_of",
    "read_class_names",
    "read_voxel_size",
    "volume_chunks",
    "voxel_size_of",
    "slice_files",
    "TiffStack",
    "write_volume",
]

log = logging.getLogger(__name__)

_TIFF = (".tif", ".tiff")
_HDF5 = (".h5", ".hdf5", ".hdf", ".nxs")
_PIL = (".png", ".jpg", ".jpeg")
#: File name endings of the 2D images :func:`read_image_2d` reads.
IMAGE_2D_SUFFIXES = (*_PIL, *_TIFF)
#: How :func:`read_image_2d` converts colour images: ``"luminance"`` (one grey channel,
#: ``0.299 R + 0.587 G + 0.114 B``, ITU-R BT.601 as in JPEG) or ``"channels"`` (R, G, B as
#: channels, first axis).
RGB_MODES = ("luminance", "channels")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


#: What tifffile, imageio, h5py, zarr and the codecs raise on a damaged or truncated file.
_DAMAGED = (OSError, ValueError, KeyError, TypeError, EOFError, IndexError, struct.error, zlib.error, RuntimeError)


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

    Notes
    -----
    A 2D file (PNG, JPEG, or a single-page TIFF) opens as a 2D (Y, X) array, which
    segmentation treats as one slice (its output is 2D too); PNG and JPEG are read into
    memory with :func:`read_image_2d` (colour ones need ``rgb`` there; here they are refused).
    """
    p, dataset = _split_dataset(path, dataset)
    if not p.exists():
        from .output import OLD, _sibling

        if _sibling(p, OLD).exists():  # QA: a kill between the two renames of a replacement
            raise InputError(
                f"input {p} does not exist: a run replacing it was cut short; the previous version lies beside it as "
                f"{_sibling(p, OLD).name} (the command that was replacing it, run again, restores or finishes it)"
            )
        raise InputError(f"input {p} does not exist: check the path")
    suffix = p.suffix.lower()
    if p.is_dir() and suffix in (*_TIFF, *_HDF5, ".npy"):
        raise InputError(f"input {p} is a directory, not a {suffix} file: check the path")
    if dataset not in (None, "", "/") and suffix in (*_TIFF, *_PIL, ".npy"):
        raise InputError(f"{p.name} holds one array, not named ones: it has no dataset {dataset!r}; drop --dataset")
    try:
        if p.is_dir() and suffix != ".zarr" and not _is_zarr_dir(p) and slice_files(p):
            return TiffStack(p)  # a reconstruction's folder of slices (recon_00000.tif, ...)
        if p.is_dir() and suffix != ".zarr" and not _is_zarr_dir(p):
            raise InputError(_not_a_volume_folder(p))
        if p.is_dir() or suffix == ".zarr":
            return _open_zarr(p, dataset)
        if suffix in _TIFF:
            return _open_tiff(p)
        if suffix in _PIL:
            return read_image_2d(p)
        if suffix in _HDF5:
            return _open_hdf5(p, dataset)
        if suffix == ".npy":
            return _open_npy(p)
    except InputError:
        raise
    except PermissionError as e:
        raise InputError(f"cannot read {p}: permission denied; check the file's permissions") from e
    except _DAMAGED as e:
        raise InputError(f"cannot read {p} as {suffix or 'zarr'}: {e}; is the file complete?") from e
    raise InputError(f"unknown volume format {p.name!r}: use zarr, TIFF, HDF5 (.h5), .npy, PNG or JPEG")


def _not_a_volume_folder(p: Path) -> str:
    """Why a folder that is neither a zarr store nor TIFF slices is not a volume, with what it holds."""
    from collections import Counter

    files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
    kinds = Counter(f.suffix.lower() or "(no suffix)" for f in files)
    held = ", ".join(f"{n} {k}" for k, n in kinds.most_common(4)) or "no files"
    return (
        f"folder {p} is not a volume: it is not a zarr store and holds no TIFF slices ({held}); a volume "
        "given as slices must be TIFF files (recon_0000.tif, ...); a folder of independent 2D images is "
        "segmented image by image with xrayseg predict --image FOLDER (segment_many)"
    )


def as_input(x: Any, name: str = "image") -> Any:
    """What scientists pass as an array, as one: the API's entry points call this first.

    A napari layer gives its ``data`` (a multiscale layer its full-resolution level), a torch
    tensor its values on the CPU, a path the volume it holds (:func:`open_volume`); a list of
    arrays of different shapes (a pyramid's levels) is an :class:`InputError` naming the fix.
    Arrays are returned as they are.
    """
    mod = type(x).__module__.split(".")[0]
    if mod == "napari" and hasattr(x, "data") and hasattr(x, "name"):  # a layer object, not its data
        x = x.data
        mod = type(x).__module__.split(".")[0]
    if mod == "napari" and type(x).__name__ == "MultiScaleData":  # a pyramid (OME-Zarr) layer's data
        log.info("%s is multiscale: using its full-resolution level", name)
        x = x[0]
    if mod == "torch" and hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if isinstance(x, (str, os.PathLike)):
        return open_volume(x)
    if isinstance(x, (list, tuple)) and x and all(hasattr(v, "shape") for v in x):
        shapes = {tuple(v.shape) for v in x}
        if len(shapes) > 1:
            shown = ", ".join("x".join(map(str, s)) for s in list(shapes)[:3])
            raise InputError(
                f"{name} is a list of arrays of {len(shapes)} shapes ({shown}; a pyramid's levels?): "
                "pass one array, e.g. the full resolution data[0]"
            )
    return x


def _plain(v: Any) -> Any:
    """A numpy scalar as a Python number (``0``, not ``np.uint16(0)``, in messages)."""
    return v.item() if isinstance(v, np.generic) else v


def _is_zarr_dir(p: Path) -> bool:
    return any((p / m).exists() for m in ("zarr.json", ".zarray", ".zgroup"))


def _natural(name: str) -> list[Any]:
    """Sort key that puts ``slice_2`` before ``slice_10``."""
    import re

    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def slice_files(folder: str | os.PathLike) -> list[Path]:
    """The TIFF files directly in ``folder`` (hidden ones left out), in natural order (``2`` before ``10``)."""
    d = Path(folder)
    return sorted(
        (f for f in d.iterdir() if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in _TIFF),
        key=lambda f: _natural(f.name),
    )


def _stack_order(files: list[Path], folder: Any) -> list[Path]:
    """The slice files of one volume in the order of their running number; a gap in the numbers is warned about.

    The files are ordered by every number that differs between the names, left to right (signed where
    some names have a minus before it: ``z-004`` .. ``z+003``); the gaps are those of the one number
    that differs in every name.

    Raises
    ------
    InputError
        If the names follow more than one pattern (QA: a ``recon_preview.tif`` beside ``recon_00000.tif`` ..
        became one more slice of the volume).
    """
    import re

    stems = [f.name for f in files]
    patterns: dict[str, list[str]] = {}
    for n in stems:
        patterns.setdefault(re.sub(r"[+-]?\d+", "#", n), []).append(n)
    if len(patterns) > 1 and any("#" in k for k in patterns):
        seen = "; ".join(f"{len(v)} like {v[0]}" for v in sorted(patterns.values(), key=len, reverse=True)[:4])
        raise InputError(
            f"folder {folder} holds TIFF files of {len(patterns)} name patterns ({seen}): the slices of a volume "
            "share one name with a running number; move the other files out of the folder"
        )
    parts = [re.split(r"(\d+)", n) for n in stems]  # text, digits, text, digits, ...
    varying = [i for i in range(1, len(parts[0]), 2) if len({p[i] for p in parts}) > 1]
    if not varying or len(files) < 2:
        return files
    # a number is signed where some names have a minus before it and others not (z-002, z000, z+001)
    signed = {i for i in varying if len({p[i - 1].endswith("-") for p in parts}) == 2}

    def number(p: list[str], i: int) -> int:
        return int(p[i]) * (-1 if i in signed and p[i - 1].endswith("-") else 1)

    # every varying number, left to right: natural order of the parts that differ (review: slice_0001_z0.5mm.tif
    # sorted by its last number interleaved the slices)
    order = sorted(range(len(files)), key=lambda k: tuple(number(parts[k], i) for i in varying))
    files = [files[k] for k in order]
    index = next((i for i in varying if len({p[i] for p in parts}) == len(parts)), None)  # the slice number
    if index is None:
        return files
    num = sorted(number(p, index) for p in parts)
    steps = np.diff(num)
    step = int(np.gcd.reduce(steps)) if steps.size else 1
    missing = sorted(set(range(num[0], num[-1] + 1, step)) - set(num)) if step else []
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
        log.warning(
            "folder %s: slice %s missing (the files run from %d to %d): the slices after a gap sit closer to "
            "those before it than in the sample; put the missing files back for true geometry",
            folder,
            f"number {shown} is" if len(missing) == 1 else f"numbers {shown} are",
            num[0],
            num[-1],
        )
    return files


class TiffStack:
    """A folder of 2D TIFF slices (one file per slice, as tomographic reconstructions write them) as a lazy volume.

    Axis 0 runs over the files in the order of their running number (``recon_2`` before ``recon_10``,
    ``z-004`` before ``z+003``); a read decodes only the files of the slices asked for. Every file
    must hold one 2D image of the same shape and type (checked from the headers when opened), and
    every name follow one pattern (``recon_#.tif``); a gap in the numbers is warned about.

    Parameters
    ----------
    folder : path-like
        The folder.

    Raises
    ------
    InputError
        If it holds no TIFF, or files of other shapes or types or name patterns, or a file that is
        not a 2D TIFF.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        import tifffile

        self.filename = Path(folder)  # where it is read from (output.source_path)
        self.files = slice_files(folder)
        if not self.files:
            raise InputError(f"folder {folder} holds no TIFF slices: check the path")
        self.files = _stack_order(self.files, folder)
        kinds: dict[tuple[tuple[int, ...], str], list[str]] = {}
        for f in self.files:
            try:
                with tifffile.TiffFile(str(f)) as tif:
                    s = tif.series[0]
                    kinds.setdefault((tuple(int(n) for n in s.shape), str(s.dtype)), []).append(f.name)
            except Exception as e:  # tifffile raises several types for a file it cannot parse
                raise InputError(f"cannot read {f} as a TIFF slice ({type(e).__name__}: {e}): is it complete?") from e
        if len(kinds) > 1:
            seen = "; ".join(f"{len(v)} of {'x'.join(map(str, k[0]))} {k[1]} (e.g. {v[0]})" for k, v in kinds.items())
            raise InputError(
                f"folder {folder} holds TIFF slices of {len(kinds)} shapes or types ({seen}): a volume's slices "
                "are all alike; move the others out, or give the files one by one"
            )
        (shape, dtype), _ = kinds.popitem()
        if len(shape) != 2:
            raise InputError(
                f"folder {folder} holds TIFF files of shape {shape}, not 2D slices: give each file as its own input"
            )
        self.shape = (len(self.files), *shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3
        self.chunks = (1, *shape)  # a file per slice: slabs read whole files

    def __repr__(self) -> str:
        return f"TiffStack({str(self.filename)!r}, shape={self.shape}, dtype={self.dtype})"

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[...]
        return a if dtype is None else a.astype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        import tifffile

        if not isinstance(index, tuple):
            index = (index,)
        if any(i is Ellipsis for i in index):
            k = index.index(Ellipsis)
            index = index[:k] + (slice(None),) * (3 - len(index) + 1) + index[k + 1 :]
        first, rest = (index[0] if index else slice(None)), index[1:]
        picks = np.arange(self.shape[0])[first]
        scalar = picks.ndim == 0
        out = np.stack([tifffile.imread(str(self.files[int(k)])) for k in np.atleast_1d(picks)])
        out = out[(slice(None), *rest)]
        return out[0] if scalar else out


def _split_dataset(path: str | os.PathLike, dataset: str | None) -> tuple[Path, str | None]:
    """``file.h5:/path`` -> (``file.h5``, ``/path``) when no ``dataset`` is given and the file exists."""
    spath = str(path)
    if dataset is None and ":" in spath and not Path(spath).exists():
        base, _, ds = spath.rpartition(":")
        if Path(base).exists() and ds:
            return Path(base), ds
    return Path(spath), dataset


def _open_zarr(p: Path, dataset: str | None) -> Any:
    import zarr

    from .ome import multiscale_levels, multiscale_paths, space_view

    try:
        node = zarr.open(store=str(p), mode="r")
    except Exception as e:  # zarr raises several unrelated types for "not a zarr store"
        raise InputError(f"{p} is not a readable zarr array or group ({type(e).__name__}: {e})") from e
    if isinstance(node, zarr.Array):
        if dataset not in (None, "", "/"):
            raise InputError(f"{p} is a zarr array, not a group: it holds no array {dataset!r}; drop --dataset")
        return _ome_level(p, node)
    if dataset is not None and "/" in dataset.strip("/"):  # a level of an image inside the group (bioformats2raw 0/1)
        head, _, leaf = dataset.strip("/").rpartition("/")
        if isinstance(node.get(head), zarr.Group):
            return _open_zarr(p / head, leaf)
    if dataset is not None:
        try:
            arr = node[dataset]
        except KeyError as e:
            raise InputError(f"zarr group {p} has no array {dataset!r}: it has {_zarr_names(node)}") from e
        if not isinstance(arr, zarr.Array):
            if multiscale_levels(arr):  # an OME-Zarr image inside the group (bioformats2raw's "0")
                return _open_zarr(p / dataset.strip("/"), None)
            raise InputError(f"{dataset!r} in {p} is a group, not an array: it has {_zarr_names(arr)}")
        if dataset.strip("/") in multiscale_paths(node):  # a level, as by its path: without the single t and c
            return space_view(node, arr)
        return arr
    levels = multiscale_levels(node)
    if levels:
        log.info("%s is OME-Zarr: using level %s", p, levels[0].path)
        return space_view(node, levels[0])  # a TCZYX file's single time point and channel: its ZYX volume
    names = _zarr_names(node)
    if len(names) == 1:
        return node[names[0]]
    if not names:
        inner = _image_subgroup(node)
        if inner is not None:
            log.info("%s holds one OME-Zarr image: using %s/%s", p, p, inner)
            return _open_zarr(p / inner, None)
        nested = sorted(k for k, v in node.members(max_depth=None) if isinstance(v, zarr.Array))
        if nested:
            shown = ", ".join(nested[:6]) + (f" and {len(nested) - 6} more" if len(nested) > 6 else "")
            raise InputError(
                f"zarr group {p} holds no array at its top level; inside it: {shown}: give one as the path "
                f"{p}/{nested[0]} (or --dataset {nested[0]})"
            )
        raise InputError(f"zarr group {p} holds no array")
    raise InputError(
        f"zarr group {p} holds several arrays {names}: choose one with the path {p}/NAME "
        "(in Python also open_volume(path, dataset=NAME))"
    )


def _ome_level(p: Path, arr: Any) -> Any:
    """``arr``, opened by its path ``p``; a level of an OME-Zarr group without its singleton t and c axes."""
    import zarr

    from .ome import multiscale_paths, space_view

    parent = p.parent
    if parent == p or not any((parent / m).exists() for m in ("zarr.json", ".zgroup")):
        return arr
    try:
        group = zarr.open_group(store=str(parent), mode="r")
    except Exception:  # not a group after all: the array as it is
        return arr
    return space_view(group, arr) if p.name in multiscale_paths(group) else arr


def _zarr_names(group: Any) -> list[str]:
    import zarr

    return sorted(k for k, v in group.members() if isinstance(v, zarr.Array))


def _image_subgroup(group: Any) -> str | None:
    """The one OME-Zarr image in a group without arrays of its own, or None.

    bioformats2raw writes its image to ``0/`` (``"bioformats2raw.layout"`` in the top group's
    attributes); a group holding a single multiscale group is read the same way.
    """
    import zarr

    from .ome import multiscale_levels

    inner = [k for k, v in group.members() if isinstance(v, zarr.Group) and multiscale_levels(v)]
    if "bioformats2raw.layout" in group.attrs and "0" in inner:
        return "0"
    return inner[0] if len(inner) == 1 else None


def _open_npy(p: Path) -> Any:
    with open(p, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise InputError(f"{p} is not a .npy file (no NumPy header): is it complete, or of another format?")
        fh.seek(0)
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(fh)  # the header only: no data read, nothing unpickled
    if dtype.hasobject:
        raise InputError(
            f"{p} holds Python objects (pickled data), which napari-xrayseg never loads: save a numeric array"
        )
    return np.load(p, mmap_mode="r", allow_pickle=False)


def _open_tiff(p: Path) -> Any:
    """A TIFF as a lazy array; a damaged one (tifffile logs an error) is an :class:`InputError`.

    tifffile reads what it can of a truncated file and logs the rest ("invalid page offset"):
    half a stack would be segmented as one 2D page, so its errors stop the read here.
    """
    import logging as _logging

    class Errors(_logging.Handler):
        def __init__(self) -> None:
            super().__init__(_logging.ERROR)
            self.messages: list[str] = []

        def emit(self, record: _logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    errors = Errors()
    tiff_log = _logging.getLogger("tifffile")
    tiff_log.addHandler(errors)
    propagate, tiff_log.propagate = tiff_log.propagate, False  # said once, in the error below
    try:
        arr = _open_tiff_pages(p)
    finally:
        tiff_log.removeHandler(errors)
        tiff_log.propagate = propagate
    damage = ("invalid page offset", "corrupted", "failed to reshape", "truncated", "incomplete")
    whys = [m.split("> ", 1)[-1] for m in errors.messages]  # tifffile prefixes the object's repr
    cut = [w for w in whys if any(d in w for d in damage)]
    if cut:
        raise InputError(f"cannot read {p} as .tif: {cut[0]}; is the file complete?")
    for w in whys:  # other complaints (a vendor's odd tag) do not stop a file that reads
        log.warning("%s: tifffile: %s", p, w)
    return arr


def _open_tiff_pages(p: Path) -> Any:
    """A TIFF as a lazy array.

    Memory-mapped when uncompressed and contiguous, else read through tifffile's zarr
    interface (compressed, tiled, BigTIFF, one page per slice), which decodes only the
    pages and tiles a slab needs, so memory does not grow with the depth.
    """
    import tifffile
    import zarr

    tif, by_page = _tiff_file(p)
    series = tif.series
    restacked = by_page or len(series) > 1
    if len(series) > 1 and all(
        len(s.shape) == 2 and s.shape == series[0].shape and s.dtype == series[0].dtype for s in series
    ):
        tif.close()  # pages written one by one (one series each): read them as one stack
        tif = tifffile.TiffFile(str(p), is_shaped=False)
        series = tif.series
    elif len(series) > 1:
        typed = len({s.dtype for s in series}) > 1  # pages of one size and other sample types
        shapes = ", ".join(
            "x".join(map(str, s.shape[-2:] if by_page else s.shape)) + (f" {s.dtype}" if typed else "")
            for s in series[:4]
        )
        shapes += ", ..." if len(series) > 4 else ""
        if by_page or all(len(s.shape) == 2 for s in series):  # 2D images of different sizes
            n = len(tif.pages) if by_page else len(series)
            tif.close()
            raise InputError(
                f"{p} holds {n} images of different sizes{' or types' if typed else ''} ({shapes}): save each as "
                "its own file "
                "and give the folder (independent 2D images are segmented and trained on one by one)"
            )
        log.warning("%s holds %d images (%s): reading the first, %s", p, len(series), shapes, series[0].shape)
    first = series[0]
    axes, shape = first.axes, tuple(first.shape)
    photometric = tif.pages[0].photometric
    colour = photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR, tifffile.PHOTOMETRIC.SEPARATED)
    if colour and "S" in axes and shape[axes.index("S")] > 1:
        tif.close()
        flat = len(shape) == 3  # one 2D colour image: read_image_2d converts it
        how = (
            ", or choose how: rgb='luminance' (grey = 0.299 R + 0.587 G + 0.114 B) or rgb='channels' "
            "(CLI: --rgb luminance|channels)"
            if flat
            else ""
        )
        raise InputError(
            f"TIFF {p} is a colour ({photometric.name}) image with {shape[axes.index('S')]} samples "
            f"per pixel (shape {shape}): convert it to a single-channel (grayscale) image first{how}"
        )
    if not restacked and first.dataoffset is not None:  # uncompressed and contiguous: map it
        tif.close()
        return tifffile.memmap(str(p), mode="r")
    store = first.aszarr(level=0)  # keeps the file open for as long as the array lives
    store.xrayseg_source = str(p)  # lets the output helper refuse writing into this input
    log.info("%s is compressed, tiled or paged: read lazily", p)
    return zarr.open_array(store=store, mode="r")


def _tiff_file(p: Path) -> tuple[Any, bool]:
    """``tifffile.TiffFile(p)``, and whether it is read as pages (see :func:`_one_series_per_page`)."""
    import tifffile

    tif = tifffile.TiffFile(str(p))
    if _one_series_per_page(tif):  # tifffile's shaped series take time quadratic in the pages
        tif.close()
        # not is_uniform: that samples 3 pages, and an odd page among them was read with page 0's layout
        return tifffile.TiffFile(str(p), is_shaped=False, is_uniform=False), True
    return tif, False


def _one_series_per_page(tif: Any) -> bool:
    """Whether the first two pages of a shaped TIFF each say they are a 2D image of the same size.

    Such files (pages written one by one, with tifffile's shape metadata on each) are one series
    per page; parsing them as series costs time quadratic in the pages (minutes for 50,000
    slices), whereas reading the pages as one uniform stack is linear.
    """
    try:
        descriptions = [tif.pages[i].shaped_description for i in (0, 1)]
        shapes = [json.loads(d)["shape"] for d in descriptions]
    except (IndexError, TypeError, ValueError, KeyError):  # one page, or not tifffile's shape metadata
        return False
    return len(shapes[0]) == 2 and shapes[0] == shapes[1]


def read_image_2d(path: str | os.PathLike, *, rgb: str | None = None) -> np.ndarray:
    """Read one 2D image file (PNG, JPEG or TIFF; 8 or 16 bit, or float TIFF) into memory.

    Parameters
    ----------
    path : path-like
        A ``.png``, ``.jpg``/``.jpeg`` or single-image ``.tif``/``.tiff`` file.
    rgb : {"luminance", "channels"}, optional
        How to convert a colour image (see :data:`RGB_MODES`): ``"luminance"`` gives one
        grey image ``0.299 R + 0.587 G + 0.114 B`` (float32, same range as the file),
        ``"channels"`` the three colour planes as a (3, Y, X) array. A colour image whose
        three planes are identical (grey saved as RGB) is read as grey without it (with
        ``"channels"``, as three planes: napari shows such a file as an RGB layer, and a
        model trained on its colours takes three). An alpha channel is dropped (and logged).
        An indexed-colour PNG with a coloured palette (a label mask) is read as its indices
        without it.

    Returns
    -------
    numpy.ndarray
        Shape (Y, X) in the file's dtype (grey), (Y, X) float32 (``"luminance"``) or
        (3, Y, X) (``"channels"``).

    Raises
    ------
    InputError
        If the file is missing, unreadable, not 2D (a stack: use :func:`open_volume`),
        a colour image and ``rgb`` is not given, or of another format.

    Examples
    --------
    >>> import tempfile, tifffile
    >>> f = Path(tempfile.mkdtemp()) / "a.tif"
    >>> tifffile.imwrite(f, np.zeros((4, 6), np.uint16))
    >>> read_image_2d(f).shape, read_image_2d(f).dtype
    ((4, 6), dtype('uint16'))
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in IMAGE_2D_SUFFIXES:
        raise InputError(f"{p.name!r} is not a 2D image file: use one of {', '.join(IMAGE_2D_SUFFIXES)}")
    if rgb is not None and rgb not in RGB_MODES:
        raise InputError(f"unknown rgb conversion {rgb!r}: choose one of {list(RGB_MODES)}")
    if not p.is_file():
        raise InputError(f"image {p} does not exist or is not a file: check the path")
    try:
        if suffix in _TIFF:
            import tifffile

            with tifffile.TiffFile(str(p)) as tif:
                photometric = tif.pages[0].photometric
                planar = tif.pages[0].planarconfig == tifffile.PLANARCONFIG.SEPARATE
                a = tif.asarray()
            colour = photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
            if colour and planar and a.ndim == 3 and a.shape[0] in (3, 4):  # colour planes first: as PNG's, last
                a = np.moveaxis(a, 0, -1)
        else:
            import imageio.v3 as iio
            from PIL import Image

            try:
                a = np.asarray(iio.imread(p))
            except Image.DecompressionBombError as e:  # Pillow's guard against a tiny file of a huge image
                raise InputError(f"{p} declares an image too large to decode safely ({e})") from None
            colour = a.ndim == 3
            if colour and rgb is None and (idx := _palette_indices(p)) is not None:
                a, colour = idx, False
    except InputError:
        raise
    except PermissionError as e:
        raise InputError(f"cannot read {p}: permission denied; check the file's permissions") from e
    except _DAMAGED as e:
        raise InputError(f"cannot read {p} as {suffix}: {e}; is the file complete?") from e
    if a.ndim == 3 and not colour and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and colour and a.shape[-1] in (2, 4):
        log.info("%s: alpha channel dropped", p)
        a = a[..., :-1]
    if a.ndim == 3 and colour and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and colour and a.shape[-1] == 3:
        if rgb != "channels" and (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all():
            log.info("%s: a grey image stored as RGB; read as grey", p)
            a = a[..., 0]
        elif rgb is None:
            raise InputError(
                f"{p} is a colour (RGB) image: choose how to convert it, rgb='luminance' (grey = "
                "0.299 R + 0.587 G + 0.114 B) or rgb='channels' (CLI: --rgb luminance|channels); a label file "
                "must hold one class number per pixel: save labels as a grey or indexed-colour PNG or TIFF"
            )
        elif rgb == "luminance":
            f = a.astype(np.float32)  # a weighted sum, not a matmul: BLAS rounded planar and contiguous RGB apart
            a = f[..., 0] * _LUMA[0] + f[..., 1] * _LUMA[1] + f[..., 2] * _LUMA[2]
        else:
            a = np.ascontiguousarray(np.moveaxis(a, -1, 0))
    if a.ndim != 2 and not (a.ndim == 3 and rgb == "channels" and colour):
        raise InputError(
            f"{p} holds an array of shape {a.shape}, not one 2D image: open a stack with open_volume "
            "(or the volume options), or save one image per file"
        )
    dt = a.dtype
    if dt == np.bool_:
        a = a.astype(np.uint8)
    elif not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating)):
        raise not_intensities(p, dt)
    return a


#: An indexed-colour PNG using more colours than this is a picture, not a label mask (VOC has 21 classes).
_PALETTE_CLASSES = 64


def _palette_indices(p: Path) -> np.ndarray | None:
    """An indexed-colour PNG's indices where its palette is coloured (a label mask), else None.

    Masks are often saved as indexed colour (PASCAL VOC, labelme, GIMP): the index is the class,
    the palette only colours it. Decoding expands the palette to RGB, which was then refused as a
    colour image (QA). A palette of greys is an image's grey scale and stays expanded.
    """
    from PIL import Image

    with Image.open(p) as im:
        if im.mode != "P":
            return None
        idx = np.asarray(im)
        pal = np.asarray(im.getpalette() or [], np.uint8).reshape(-1, 3)
    used = np.unique(idx)
    if len(used) > _PALETTE_CLASSES:  # a photograph in 256 colours, not a mask: refused as colour, as before
        return None
    if used.max() >= len(pal) or (pal[used, 0] == pal[used, 1]).all() and (pal[used, 0] == pal[used, 2]).all():
        return None
    log.info("%s: an indexed-colour image, read as its palette indices (a label mask); rgb= reads its colours", p)
    return idx


def open_image(path: str | os.PathLike, *, dataset: str | None = None, rgb: str | None = None) -> Any:
    """Open a 2D image file in memory, or a volume lazily.

    PNG, JPEG and single-image TIFF files come back as (Y, X) arrays from
    :func:`read_image_2d` (``rgb`` converts colour ones); anything else as
    :func:`open_volume` opens it. Training uses it so that 2D files are 2D images.

    Raises
    ------
    InputError
        As :func:`read_image_2d` and :func:`open_volume`.
    """
    p, dataset = _split_dataset(path, dataset)
    suffix = p.suffix.lower()
    if suffix in _PIL or (suffix in _TIFF and p.is_file() and _tiff_is_2d(p)):
        return read_image_2d(p, rgb=rgb)
    return open_volume(p, dataset=dataset)


def _tiff_is_2d(p: Path) -> bool:
    """Whether a TIFF holds one 2D image (grey, or colour samples); False when unreadable."""
    try:
        with _tiff_file(p)[0] as tif:
            s = tif.series[0]
            return len(tif.series) == 1 and sum(1 for ax, n in zip(s.axes, s.shape) if ax != "S" and n > 1) <= 2
    except Exception:  # open_volume reports a damaged file in its own words
        return False


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The 2D image files (:data:`IMAGE_2D_SUFFIXES`) directly inside ``folder``, sorted by name.

    Hidden files are left out, as ``predict`` leaves them out of a folder: macOS writes a
    ``._NAME.png`` beside each file it copies to another disk, which is no image.

    Raises
    ------
    InputError
        If ``folder`` is not a folder, or holds no such file.
    """
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"{d} is not a folder: give a folder of 2D image files")
    files = sorted(
        f for f in d.iterdir() if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_2D_SUFFIXES
    )
    if not files:
        raise InputError(f"folder {d} holds no 2D image files ({', '.join(IMAGE_2D_SUFFIXES)})")
    return files


def is_image_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder of 2D image files (not a zarr store)."""
    d = Path(path)
    if not d.is_dir() or any((d / m).exists() for m in ("zarr.json", ".zarray", ".zgroup")):
        return False
    return any(f.suffix.lower() in IMAGE_2D_SUFFIXES for f in d.iterdir() if f.is_file() and f.name[:1] != ".")


def _stem_key(f: Path) -> str:
    """A file's base name as names are compared: NFC (macOS apps write NFD names, a Linux server's copies NFC)."""
    return unicodedata.normalize("NFC", f.stem)


def pair_image_folders(images: str | os.PathLike, labels: str | os.PathLike) -> list[tuple[Path, Path | None]]:
    """Pair each image in folder ``images`` with the label file of the same base name in ``labels``.

    A label file has its image's base name with any of :data:`IMAGE_2D_SUFFIXES`
    (``a.jpg`` pairs with ``a.png``); an image without one is not annotated (``None``).

    Returns
    -------
    list of (Path, Path or None)
        One entry per image file, sorted by name.

    Raises
    ------
    InputError
        If a folder is missing or empty, an image has two label files, a label file has
        no image, or no image has a label file.
    """
    imgs = image_files(images)
    labs = image_files(labels)
    by_stem: dict[str, Path] = {}
    for f in labs:
        key = _stem_key(f)
        if key in by_stem:
            raise InputError(f"two label files for image {f.stem!r}: {by_stem[key].name} and {f.name}; keep one")
        by_stem[key] = f
    stems = {_stem_key(f): f for f in imgs}
    if len(stems) != len(imgs):
        raise InputError(f"folder {images} holds two images with the same base name: rename one")
    # a name spelled in another case (a case-insensitive disk, Windows, macOS) pairs where that is unambiguous
    folded: dict[str, list[str]] = {}
    for key in set(stems) - set(by_stem):
        folded.setdefault(key.lower(), []).append(key)
    for key in sorted(set(by_stem) - set(stems)):
        match = folded.get(key.lower(), [])
        if len(match) == 1:
            by_stem[match[0]] = by_stem.pop(key)
            match.clear()  # one label file per image: a second spelling stays unpaired (review)
    orphans = sorted(by_stem[k].stem for k in set(by_stem) - set(stems))
    if orphans:
        raise InputError(
            f"label files {orphans[:5]} in {labels} have no image of the same base name in {images}: "
            "rename or remove them"
        )
    pairs = [(f, by_stem.get(_stem_key(f))) for f in imgs]
    if not any(lab for _, lab in pairs):
        raise InputError(f"no image in {images} has a label file in {labels} (same base name): check the names")
    return pairs


#: Bytes of HDF5 chunk cache per open dataset (h5py's default: 1 MiB).
HDF5_CHUNK_CACHE = 64 << 20


def hdf5_datasets(f: Any, broken: list[str] | None = None) -> list[str]:
    """Names of an HDF5 file's datasets, those behind soft and external links included, each once.

    A NeXus master file keeps a detector's or a reconstruction's data in other files, linked in
    (``/entry/data/data_000001`` -> ``data_000001.h5``); h5py's ``visititems`` skips links.
    ``broken`` (a list) receives each external link whose target cannot be opened, as
    ``"name -> file:/path"``.
    """
    import h5py

    names: list[str] = []
    seen: set[Any] = set()  # object ids (hashable): equal for one dataset reached by two paths (a soft link)

    def visit(name: str, link: Any) -> None:
        try:
            obj = f.get(name)
        except (KeyError, OSError, RuntimeError):  # a broken link: its target file or object is gone
            obj = None
        if obj is None:
            if broken is not None and isinstance(link, h5py.ExternalLink):
                broken.append(f"{name} -> {link.filename}:{link.path}")
            return
        if isinstance(obj, h5py.Dataset) and obj.id not in seen:
            seen.add(obj.id)
            names.append(name)

    f.visititems_links(visit)
    return names


def _open_hdf5(p: Path, dataset: str | None) -> Any:
    try:
        import h5py
    except ImportError as e:
        raise InputError("reading HDF5 needs h5py: pip install h5py") from e
    # a chunk cache that holds a slice's chunks: h5py's 1 MiB default held none of a 256^2 x 16 float chunk,
    # so every slice read decoded its chunks again (a chunk layout across the slices: 5-10x slower)
    f = h5py.File(p, "r", rdcc_nbytes=HDF5_CHUNK_CACHE, rdcc_nslots=100_003)
    if dataset is None:
        broken: list[str] = []
        names = hdf5_datasets(f, broken)
        # the image: the one numeric dataset of 2 or more dimensions (NeXus files add 1D angles, strings, ...)
        images = [n for n in names if f[n].ndim >= 2 and f[n].dtype.kind in "biuf"]
        complex_ = [n for n in names if f[n].ndim >= 2 and f[n].dtype.kind == "c"]
        if not images and len(complex_) == 1:  # QA: was "none of them an image (2D or 3D)"
            dt = f[complex_[0]].dtype
            f.close()
            raise not_intensities(f"HDF5 dataset {p}:/{complex_[0]}", dt)
        if not images and broken:  # QA: a NeXus master file copied without its data file listed nothing
            f.close()
            raise InputError(
                f"HDF5 file {p} links to data it cannot open ({'; '.join(broken[:3])}): copy the linked file "
                f"beside {p.name}, or give that file itself"
            )
        if len(images) != 1:
            f.close()
            listed = images or names
            shown = ", ".join(listed[:10]) + (f", ... ({len(listed)} in all)" if len(listed) > 10 else "")
            what = "image datasets (2D or 3D, numeric)" if images else "datasets, none of them an image (2D or 3D)"
            raise InputError(
                f"HDF5 file {p} holds {len(listed)} {what}: {shown}; choose one with the path {p}:/NAME "
                "(in Python also open_volume(path, dataset=NAME))"
            )
        if len(names) > 1:
            log.info("%s: reading dataset %s (the one image among %d datasets)", p, images[0], len(names))
        dataset = images[0]
    if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
        f.close()
        raise InputError(f"HDF5 file {p} has no dataset {dataset!r}")
    return hdf5_dataset(f, p, dataset)


def hdf5_dataset(f: Any, p: Path, dataset: str) -> Any:
    """Dataset ``dataset`` of the open HDF5 file ``f`` (at ``p``); files it keeps voxels in are found beside ``p``.

    Raises
    ------
    InputError
        If such a file is missing (the file is closed then).
    """
    dset = f[dataset]
    external = [os.fsdecode(e[0]) for e in dset.external or ()]
    virtual = [s.file_name for s in dset.virtual_sources()] if dset.is_virtual else []
    if external:  # raw bytes of other files read as voxels (a file from a stranger could name any file)
        log.warning(
            "HDF5 dataset %s of %s keeps its data in other files (%s): reading them as its voxels",
            dataset,
            p,
            ", ".join(external[:3]),
        )
    if external or virtual:
        del dset  # closed: HDF5 opens a dataset with other file prefixes only when no handle to it is open
        return _beside_the_file(f, p, dataset, external or virtual, "external" if external else "virtual")
    return dset


def _beside_the_file(f: Any, p: Path, dataset: str, files: list[str], kind: str) -> Any:
    """``dataset`` opened so that the files it reads its voxels from are found beside ``p``, as they were written.

    HDF5 looks for relative external files from the working folder (QA: "truncated or damaged" when run from
    another folder), and fills what a virtual dataset's missing source would hold with the fill value, silently
    (QA: half a volume of zeros). A missing file is refused by name.
    """
    import h5py

    names = sorted({n for n in files if n != "."})  # "." : the file itself

    def present(n: str) -> bool:  # HDF5 finds a virtual source by its name beside the file too (review)
        return (p.parent / n).exists() or Path(n).exists() or (kind == "virtual" and (p.parent / Path(n).name).exists())

    missing = [n for n in names if not present(n)]
    if missing:
        f.close()
        raise InputError(
            f"HDF5 dataset {p}:/{dataset} reads its voxels from {', '.join(missing[:3])}, which "
            f"{'is' if len(missing) == 1 else 'are'} missing: copy {'it' if len(missing) == 1 else 'them'} beside "
            f"{p.name}"
        )
    if not names or all(Path(n).is_absolute() or not (p.parent / n).exists() for n in names):
        return f[dataset]
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    prefix = os.fsencode(str(p.parent.resolve()))
    (dapl.set_efile_prefix if kind == "external" else dapl.set_virtual_prefix)(prefix)
    return h5py.Dataset(h5py.h5d.open(f.id, dataset.encode(), dapl=dapl))


#: Arrays of more chunks than this are not checked for missing ones (counting lists every key).
MAX_CHUNKS_LISTED = 1_000_000


def check_chunks_present(arr: Any, *, what: str = "image") -> None:
    """Warn about a zarr array with chunks missing from its store (zarr reads them as its fill value).

    Only where zarr can tell (zarr arrays); others pass. zarr itself leaves out a chunk that
    holds only the fill value (``write_empty_chunks=False``, zarr 3's default): zero slabs at
    the ends of a scan, zeros outside a field of view. So a missing chunk is valid data as
    often as an incomplete copy, and the run goes on; the warning names both readings.
    """
    import zarr

    if not isinstance(arr, zarr.Array) or getattr(arr.store, "xrayseg_source", None):
        return
    if arr.nchunks > MAX_CHUNKS_LISTED:  # zarr would build every key: 1e9 of them hung predict
        return
    try:
        have, want = arr.nchunks_initialized, arr.nchunks
    except (NotImplementedError, TypeError, AttributeError, OSError):  # stores that cannot list their keys
        return
    if have < want:
        src = getattr(arr.store, "root", None) or arr.store
        fill = arr.fill_value
        log.warning(
            "%s %s stores %d of its %d chunks: zarr reads the other %d as its fill value %s (it leaves out chunks "
            "that hold only that); if the store was copied, check that the copy is complete%s",
            what,
            src,
            have,
            want,
            want - have,
            fill,
            f"; if they are voxels without data, pass nodata={_plain(fill)!r} (--nodata {fill})"
            if what == "image"
            else "",
        )


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


def _computed(x: Any) -> np.ndarray:
    """``x`` in memory; a dask array computed without dask's global callbacks.

    dask's schedulers swap the global ``Callback.active`` in and out around a compute, which
    is not thread-safe: napari slices a dask layer with its cache callback on the GUI thread
    while a widget's worker reads the same array, and napari raised ``KeyError`` from
    ``dask/cache.py`` (dask#10396). Explicit ``callbacks=()`` leave the global ones alone.
    """
    if type(x).__module__.split(".")[0] == "dask" and hasattr(x, "compute"):
        try:
            return np.asarray(x.compute(callbacks=()))
        except TypeError:  # a scheduler that takes no callbacks (a distributed client)
            pass
    return np.asarray(x)


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
        return _computed(arr[index])
    except XraysegError:
        raise
    except (OSError, RuntimeError, ValueError, EOFError, zlib.error) as e:
        # codecs raise RuntimeError/ValueError/zlib.error on damaged chunks, h5py/tifffile OSError
        raise InputError(f"cannot read {what} ({type(e).__name__}: {e}): the file may be truncated or damaged") from e


def create_zarr(
    path: str | os.PathLike,
    shape: tuple[int, ...],
    *,
    dtype: Any = "uint8",
    chunks: tuple[int, ...] | None = None,
    attrs: dict[str, Any] | None = None,
    inputs: Any = (),
) -> Any:
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
    try:
        return _create(c.take(), shape, dtype, chunks, attrs, c.final)
    finally:
        c.release()  # created whole: the caller writes into it (no commit to wait for)


def _create(p: Path, shape: tuple[int, ...], dtype: Any, chunks: Any, attrs: Any, final: Path) -> Any:
    import zarr

    try:
        arr = zarr.create_array(store=str(p), shape=shape, chunks=chunks or "auto", dtype=dtype, fill_value=0)
        if attrs:
            arr.attrs.update(json.loads(json.dumps(attrs)))
    except OSError as e:
        raise write_error(e, final) from e
    return arr


def write_volume(
    path: str | os.PathLike,
    data: Any,
    *,
    chunks: tuple[int, ...] | None = None,
    overwrite: bool = False,
    attrs: dict[str, Any] | None = None,
    inputs: Any = (),
) -> Any:
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

    from .output import claim, released_on_error

    data = np.asarray(data)
    c = claim(path, overwrite=overwrite, inputs=inputs)
    with released_on_error(c):
        arr = _create(c.take(), data.shape, data.dtype, chunks, attrs, c.final)
        try:
            arr[...] = data
        except OSError as e:
            raise write_error(e, c.final) from e
        return zarr.open_array(store=str(c.commit()), mode="r+")


# --------------------------------------------------------------------------- voxel size


def read_voxel_size(path: str | os.PathLike, *, dataset: str | None = None) -> tuple[tuple[float, ...], str] | None:
    """The voxel size a volume file records, or None when it records none.

    Parameters
    ----------
    path : path-like
        As for :func:`open_volume` (also ``file.h5:/path``).
    dataset : str, optional
        The array inside a zarr group or HDF5 file.

    Returns
    -------
    tuple or None
        ``((z, y, x), unit)`` (``(y, x)`` for 2D; the three spatial sizes of a 4D file with a
        channel axis), unit as a short symbol ("um", "nm", ... or "voxel"), from, in order of
        the format:

        - OME-Zarr: ``coordinateTransformations`` of the chosen (default: first) level,
          times the multiscale's own ones, and the ``unit`` of the axes; a plain zarr
          array: its ``voxel_size`` and ``unit`` attributes;
        - TIFF: OME-XML ``PhysicalSize*`` (each axis in its own unit, else x's); else the ImageJ
          ``spacing`` (1 when left out, as ImageJ reads it) and ``unit`` with the
          ``XResolution``/``YResolution`` tags (pixels per unit); centimetre or inch
          resolution units without ImageJ metadata are converted to um (z taken equal to
          x), except the dots per inch programs write by default (72, 96, 300, ...:
          :data:`PRINT_DPI`), which are ignored with a warning;
        - HDF5: the dataset's (or else the file's) ``element_size_um`` attribute (Fiji,
          ilastik), or ``voxel_size`` with an optional ``unit``.

        A size recorded without a unit is taken in um, with a warning (a scale of 1
        without a unit is voxel units).

    Raises
    ------
    InputError
        If the file cannot be opened (see :func:`open_volume`).
    """
    from .units import normalize_unit

    p, dataset = _split_dataset(path, dataset)
    arr = open_volume(p, dataset=dataset)  # validates the path and format
    ndim = len(arr.shape)
    suffix = p.suffix.lower()
    try:
        if isinstance(arr, TiffStack):  # a folder of slices records no voxel size (docs/segment.md)
            found = None
        elif p.is_dir() or suffix == ".zarr":
            found = _zarr_voxel_size(p, dataset)
        elif suffix in _TIFF:
            found = _tiff_voxel_size(p)
        elif suffix in _HDF5:
            found = _hdf5_voxel_size(arr)
        else:
            found = None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:  # malformed metadata: say so, go on
        log.warning("ignoring the voxel size metadata of %s (%s: %s)", p, type(e).__name__, e)
        return None
    if found is None:
        return None
    size, unit = found
    size = tuple(float(v) for v in size)[-ndim:]
    # a 4D file has a channel (or time) axis besides z, y, x: its three spatial sizes are the voxel size
    # (QA: every multi-channel file lost its voxel size, "not one positive number per axis")
    spatial = 3 if ndim == 4 and len(size) == 3 else ndim
    if len(size) < spatial or not all(v > 0 and np.isfinite(v) for v in size):
        log.warning("ignoring the voxel size %s of %s: not one positive number per axis", size, p)
        return None
    if (unit is None or (isinstance(unit, str) and not unit.strip())) and not all(v == 1 for v in size):
        # sizes without a unit: taken in um (the unit --voxel-size assumes), never applied to
        # numbers labelled in voxels
        log.warning(
            "%s records the voxel size %s without a unit: taken as um; if it is another, pass the voxel size "
            "and its unit (--voxel-size ... --unit nm)",
            p,
            " x ".join(f"{v:g}" for v in size),
        )
        unit = "um"
    try:
        return size, normalize_unit(unit)
    except InputError:
        log.warning("ignoring the voxel size of %s: unknown unit %r", p, unit)
        return None


def voxel_size_of(arr: Any) -> tuple[tuple[float, ...], str] | None:
    """The voxel size the file behind an opened array records (see :func:`read_voxel_size`), or None.

    Works for what :func:`open_volume` returns (zarr arrays, OME-Zarr levels, h5py
    datasets, TIFF files) and for zarr arrays opened directly; in-memory arrays (numpy,
    dask, a zarr array in memory) record nothing.

    Examples
    --------
    >>> voxel_size_of(np.zeros((2, 3, 4))) is None
    True
    """
    from .output import source_path

    if isinstance(arr, np.ndarray) and not isinstance(arr, np.memmap):
        return None
    if hasattr(arr, "channel_axis") and hasattr(arr, "source"):  # a ChannelStack: the file of its source
        found = voxel_size_of(arr.source)
        if found is not None and len(found[0]) == len(arr.source.shape):  # one size per axis: not the channels'
            found = (tuple(v for i, v in enumerate(found[0]) if i != arr.channel_axis), found[1])
        return found
    p = source_path(arr)
    if p is None or not p.exists():
        return None
    f = getattr(arr, "file", None)
    dataset = getattr(arr, "name", None) if f is not None and hasattr(f, "filename") else None  # h5py
    try:
        return read_voxel_size(p, dataset=dataset)
    except InputError:  # not a file we read (e.g. a .npy memmap of another layout): records nothing
        return None


def channel_axis_in_file(arr: Any) -> tuple[int, int] | None:
    """``(axis, count)`` of a channel axis of more than one entry that an opened file's metadata names, or None.

    An OME-Zarr ``c`` axis (``type: channel``); an OME or ImageJ TIFF's ``C`` (or samples ``S``)
    axis beside ``Z`` (a 3D TIFF's ``C`` is not trusted: tifffile writes every stack given
    without axes as ``CYX``); the axis is counted in the array as :func:`open_volume` gives it.
    A 2-channel 2D image (OME-Zarr) then is not taken for a 2-slice volume (QA).
    """
    from .output import source_path

    if (isinstance(arr, np.ndarray) and not isinstance(arr, np.memmap)) or not hasattr(arr, "shape"):
        return None
    p = source_path(arr)
    if p is None or not p.exists():
        return None
    shape = tuple(int(n) for n in arr.shape)
    try:
        if p.suffix.lower() in _TIFF and p.is_file():
            if len(shape) < 4:  # tifffile writes every 3D stack given without axes as "CYX" (ImageJ and OME alike)
                return None
            with _tiff_file(p)[0] as tif:
                if not (tif.is_ome or tif.is_imagej):  # a plain TIFF names no axes: its series not parsed for nothing
                    return None
                axes = str(tif.series[0].axes)
                full = tuple(int(n) for n in tif.series[0].shape)
            names = [a for a, n in zip(axes, full) if n > 1] if len(full) != len(shape) else list(axes)
        elif p.is_dir():
            import zarr

            from .ome import _multiscales

            node = zarr.open(store=str(p), mode="r")
            if isinstance(node, zarr.Array):
                parent = p.parent
                if not any((parent / m).exists() for m in ("zarr.json", ".zgroup")):
                    return None
                node = zarr.open(store=str(parent), mode="r")
            ms = _multiscales(node) if isinstance(node, zarr.Group) else None
            axes_meta = (ms or [{}])[0].get("axes") or []
            types = [ax.get("type") if isinstance(ax, dict) else None for ax in axes_meta]
            drop = set(getattr(arr, "drop", ()))  # a TCZYX file's axes of one entry, left out when opened
            names = ["C" if t == "channel" else "?" for i, t in enumerate(types) if i not in drop]
        else:
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if len(names) != len(shape):
        return None
    for i, name in enumerate(names):
        if name in ("C", "S") and shape[i] > 1:
            return i, shape[i]
    return None


def refuse_file_channels(image: Any, reader: str) -> None:
    """Refuse an image whose file names a channel axis of several entries, where one channel is expected."""
    from .output import source_path

    found = channel_axis_in_file(image)
    if found is not None:
        axis, n = found
        raise InputError(
            f"{source_path(image)} has {n} channels along axis {axis} (shape {tuple(image.shape)}; its metadata "
            f"names them), which {reader} would read as {n} slices: pick one channel, or train a multi-channel "
            f"model (--channel-axis {axis}, channel_axis={axis})"
        )


def read_origin(path: str | os.PathLike, *, dataset: str | None = None) -> tuple[tuple[float, ...], str] | None:
    """Where a volume file puts its first voxel's centre, ``((z, y, x), unit)``, or None where it says nothing.

    From a zarr store: the OME-Zarr ``translation`` of the chosen (default: first) level, with the
    multiscale's own transformations, on the space axes; or the ``origin`` attribute an output of
    :func:`~napari_xrayseg.segment` records (the image layer's or file's). In the unit of
    :func:`read_voxel_size` (``"voxel"`` without one). From a TIFF: what a label TIFF of ``xrayseg predict``
    records, else ImageJ's ``xorigin``, ``yorigin``, ``zorigin`` (pixels). Other formats record none here.
    """
    from .units import normalize_unit

    p, dataset = _split_dataset(path, dataset)
    if p.suffix.lower() in _TIFF and p.is_file():
        return _tiff_origin(p)
    if not (p.suffix.lower() == ".zarr" or (p.is_dir() and _is_zarr_dir(p))):  # a folder of TIFF slices: none (QA)
        return None
    try:
        found = _zarr_origin(p, dataset)
        if found is None:
            return None
        origin, unit = found
        origin = [float(v) for v in origin]
        if not origin or not all(np.isfinite(v) for v in origin):
            return None
        if unit is None or (isinstance(unit, str) and not unit.strip()):
            vox = read_voxel_size(p, dataset=dataset)
            unit = vox[1] if vox is not None else "voxel"
        return tuple(origin[-3:]), normalize_unit(unit)
    except (InputError, OSError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        log.warning("ignoring the origin metadata of %s (%s: %s)", p, type(e).__name__, e)
        return None


def _tiff_origin(p: Path) -> tuple[tuple[float, ...], str] | None:
    """A TIFF's origin: what our label TIFFs record, else ImageJ's ``xorigin`` ... (in pixels; Fiji's crops).

    QA: a segmentation saved as TIFF reopened away from its image (its origin was only in the JSON).
    """
    from .units import normalize_unit

    own = tiff_output_meta(p) or {}
    origin = own.get("origin")
    if isinstance(origin, list) and origin and all(isinstance(v, (int, float)) for v in origin):
        return tuple(float(v) for v in origin[-3:]), normalize_unit(own.get("unit") or "voxel")
    try:
        import tifffile

        with tifffile.TiffFile(str(p)) as tif:
            ij = tif.imagej_metadata or {}
            if not any(f"{a}origin" in ij for a in "zyx"):  # before any series is parsed (quadratic in pages)
                return None
            ndim = 3 if int(ij.get("images", 1)) > 1 else 2
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    axes = "zyx"[-ndim:]
    found = read_voxel_size(p)
    size, unit = (found[0][-len(axes) :], found[1]) if found else ([1.0] * len(axes), "voxel")
    try:
        return tuple(-float(ij.get(f"{a}origin", 0.0)) * float(v) for a, v in zip(axes, size)), normalize_unit(unit)
    except (TypeError, ValueError):
        return None


def origin_of(arr: Any) -> tuple[tuple[float, ...], str] | None:
    """:func:`read_origin` of the file behind an opened array (None for arrays in memory)."""
    from .output import source_path

    if isinstance(arr, np.ndarray) and not isinstance(arr, np.memmap):
        return None
    if hasattr(arr, "channel_axis") and hasattr(arr, "source"):  # a ChannelStack
        return origin_of(arr.source)
    p = source_path(arr)
    if p is None or not p.exists():
        return None
    try:
        return read_origin(p)
    except InputError:
        return None


def _zarr_origin(p: Path, dataset: str | None) -> tuple[list[float], str | None] | None:
    return _zarr_meta(p, dataset, _attrs_origin, _ome_origin)


def _ome_origin(m: dict[str, Any], d: dict[str, Any], node: Any) -> tuple[list[float], str | None] | None:
    """The space axes' translation of level ``d`` of multiscale ``m`` (the multiscale's own ones applied after)."""
    level = _ngff_translation(d.get("coordinateTransformations"))
    outer_scale = _ngff_scale(m.get("coordinateTransformations"))
    outer = _ngff_translation(m.get("coordinateTransformations"))
    if level is None and outer is None:
        return _attrs_origin(node.attrs)
    n = len((level or outer) or [])
    t = [float(v) for v in (level or [0.0] * n)]
    if outer_scale is not None:  # applied after the level's: x = s_o (s_l i + t_l) + t_o
        t = [a * b for a, b in zip(t, outer_scale)]
    if outer is not None:
        t = [a + b for a, b in zip(t, outer)]
    return _space_axes(m, t)


def _attrs_origin(a: Any) -> tuple[list[float], str | None] | None:
    """``origin`` (and ``unit``) attributes (top level, or in our ``napari_xrayseg`` block)."""
    return _attrs_values(a, "origin")


def _ngff_translation(transforms: Any) -> list[float] | None:
    return _ngff_transform(transforms, "translation")


def _zarr_voxel_size(p: Path, dataset: str | None) -> tuple[list[float], str | None] | None:
    return _zarr_meta(p, dataset, _attrs_voxel_size, _ome_voxel_size)


def _ome_voxel_size(m: dict[str, Any], d: dict[str, Any], node: Any) -> tuple[list[float], str | None] | None:
    """The space axes' scale of level ``d`` of multiscale ``m`` (times the multiscale's own)."""
    scale = _ngff_scale(d.get("coordinateTransformations"))
    if scale is None:
        return None
    outer = _ngff_scale(m.get("coordinateTransformations"))
    if outer is not None:
        scale = [a * b for a, b in zip(scale, outer)]
    return _space_axes(m, scale)


def _space_axes(m: dict[str, Any], values: list[float]) -> tuple[list[float], str | None]:
    """``values`` of a multiscale's space axes, in the x axis's unit (all of them where no axis is typed)."""
    axes = m.get("axes") or []
    space = [i for i, ax in enumerate(axes) if isinstance(ax, dict) and ax.get("type") == "space"]
    if not space:
        return values, None
    return _in_one_unit([values[i] for i in space], [axes[i].get("unit") for i in space])


def _zarr_meta(p: Path, dataset: str | None, from_attrs: Any, from_ome: Any) -> Any:
    """What a zarr store says of an image (its voxel size, its origin).

    ``from_ome(multiscale, level, group)`` for an OME-Zarr (its level ``dataset``, default the
    first), else ``from_attrs(attributes)`` of the array or its group. Follows a level opened by
    its path, a bioformats2raw layout (the image in ``0``), a group's image named by ``dataset``
    (``0/1``: a level of it).
    """
    import zarr

    node = zarr.open(store=str(p), mode="r")
    if isinstance(node, zarr.Array):
        found = from_attrs(node.attrs)
        parent = p.parent  # a level of an OME-Zarr group, opened by its path
        if found is None and dataset is None and any((parent / m).exists() for m in ("zarr.json", ".zgroup")):
            try:
                return _zarr_meta(parent, p.name, from_attrs, from_ome) if parent != p else None
            except (OSError, ValueError, KeyError):
                return None
        return found
    ms = (node.attrs.get("ome") or {}).get("multiscales") or node.attrs.get("multiscales")
    if dataset and "/" in dataset.strip("/"):  # a level of an image inside the group (bioformats2raw 0/1)
        head, _, leaf = dataset.strip("/").rpartition("/")
        if isinstance(node.get(head), zarr.Group):
            return _zarr_meta(p / head, leaf, from_attrs, from_ome) or (None if ms else from_attrs(node.attrs))
    if not ms:  # a plain group: the array's own attributes, else the group's
        inner = node.get(dataset) if dataset else None
        if isinstance(inner, zarr.Group):  # an OME-Zarr image inside it
            return _zarr_meta(p / dataset.strip("/"), None, from_attrs, from_ome)
        sub = _image_subgroup(node) if not dataset and not _zarr_names(node) else None
        if sub is not None:  # bioformats2raw's layout: the image is "0"
            return _zarr_meta(p / sub, None, from_attrs, from_ome)
        return (from_attrs(inner.attrs) if inner is not None else None) or from_attrs(node.attrs)
    m = ms[0]
    d = next((d for d in m["datasets"] if d["path"] == dataset), m["datasets"][0])
    return from_ome(m, d, node)


def _in_one_unit(sizes: list[float], units: list[str | None]) -> tuple[list[float], str | None]:
    """Per-axis sizes in per-axis units (z, y, x) -> the sizes in the last (x) axis's unit.

    An axis without a unit is in the unit of the last axis that has one (QA s44: a z axis without
    one beside y and x in nanometres made the whole size micrometres, 1000x off), as OME-TIFF's are.
    """
    from .units import normalize_unit, to_unit

    given = [u for u in units if u is not None]
    if not given:
        return sizes, None
    units = [u if u is not None else given[-1] for u in units]
    target = units[-1]
    if all(u == target for u in units):
        return sizes, target
    return [to_unit(v, u, target) for v, u in zip(sizes, units, strict=True)], normalize_unit(target)


def _attrs_voxel_size(a: Any) -> tuple[list[float], str | None] | None:
    """``voxel_size`` and ``unit`` attributes (top level, or in our ``napari_xrayseg`` block)."""
    return _attrs_values(a, "voxel_size")


def _attrs_values(a: Any, key: str) -> tuple[list[float], str | None] | None:
    """``(a[key], unit)`` of zarr attributes: top level, else in our ``napari_xrayseg`` block."""
    meta = a.get("napari_xrayseg") if isinstance(a.get("napari_xrayseg"), dict) else {}
    values = a.get(key, meta.get(key))
    return (list(values), a.get("unit", meta.get("unit"))) if values else None


def _ngff_scale(transforms: Any) -> list[float] | None:
    return _ngff_transform(transforms, "scale")


def _ngff_transform(transforms: Any, kind: str) -> list[float] | None:
    """The values of the first OME-NGFF coordinate transformation of type ``kind`` ("scale", "translation")."""
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == kind:
            return [float(v) for v in t[kind]]
    return None


#: Resolutions (dots per inch) that programs write by default: a print setting, not a voxel size.
PRINT_DPI = frozenset({1.0, 72.0, 96.0, 150.0, 300.0, 600.0, 1200.0})


def _tiff_voxel_size(p: Path) -> tuple[list[float], str | None] | None:
    own = tiff_output_meta(p) or {}  # our own label TIFFs record it exactly (a BigTIFF has no ImageJ spacing)
    vox, unit = own.get("voxel_size"), own.get("unit")
    if isinstance(vox, list) and len(vox) in (2, 3) and isinstance(unit, str) and unit != "voxel":
        return ([float(vox[1]), *map(float, vox)] if len(vox) == 2 else [float(v) for v in vox]), unit
    with _tiff_file(p)[0] as tif:
        if tif.ome_metadata:
            found = _ome_xml_size(tif.ome_metadata)
            if found is not None:
                return found
        page = tif.pages[0]
        tags = page.tags
        ij = tif.imagej_metadata or {}
        xr, yr = tags.get("XResolution"), tags.get("YResolution")
        if xr is None or yr is None:
            return None
        (xn, xd), (yn, yd) = xr.value, yr.value
        if not xn or not yn:
            return None
        sx, sy = xd / xn, yd / yn
        unit = ij.get("unit")
        if unit is None:
            res_unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 1
            factor = {2: 25400.0, 3: 10000.0}.get(res_unit)  # inch, centimetre -> um
            if factor is None:
                return None  # no unit: the tags only give a ratio
            if res_unit == 2 and xn / xd == yn / yd and xn / xd in PRINT_DPI:
                log.warning(
                    "ignoring the resolution of %s (%g dots per inch, a printing default, not a voxel size): "
                    "pass the voxel size (--voxel-size) for numbers in physical units",
                    p,
                    xn / xd,
                )
                return None
            sx, sy, unit = sx * factor, sy * factor, "um"
        if len(tif.series[0].shape) < 3:
            return [sx, sy, sx], unit
        # ImageJ leaves spacing out when it is 1 (its own reader's default); a TIFF without
        # ImageJ metadata records no z size at all: assumed equal to x
        sz = float(ij["spacing"]) if "spacing" in ij else 1.0 if ij else sx
        if not ij and len(tif.series[0].shape) >= 3 and tif.series[0].shape[0] > 1:  # as for an OME-TIFF (QA)
            log.warning(
                "%s records no z voxel size (plain resolution tags), only x %g %s: taking z = x; give the voxel "
                "size (--voxel-size Z Y X, voxel_size=) if the slices are spaced otherwise",
                p,
                sx,
                unit,
            )
        return [sz, sy, sx], unit


def _ome_xml_size(xml: str) -> tuple[list[float], str | None] | None:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    pix = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pix is None or "PhysicalSizeX" not in pix.attrib:
        return None
    a = pix.attrib
    sx = float(a["PhysicalSizeX"])
    ux = a.get("PhysicalSizeXUnit", "µm")  # the OME schema's default unit
    sizes = [float(a.get(f"PhysicalSize{k}", sx)) for k in "ZY"] + [sx]
    if "PhysicalSizeZ" not in a and int(a.get("SizeZ", 1)) > 1:
        log.warning(
            "the OME-TIFF records no z voxel size (PhysicalSizeZ), only x %g: taking z = x; give the voxel "
            "size (--voxel-size Z Y X, voxel_size=) if the slices are spaced otherwise",
            sx,
        )
    # an axis without a unit of its own is in x's: the schema says um, but writers that set only x's
    # unit (tifffile's users) mean it for all three, and um against nm would make y 1000x x
    units = [a.get(f"PhysicalSize{k}Unit", ux) for k in "ZY"] + [ux]
    return _in_one_unit(sizes, units)


def _hdf5_voxel_size(dset: Any) -> tuple[list[float], str | None] | None:
    for holder in (dset.attrs, dset.file.attrs):
        if "element_size_um" in holder:
            return [float(v) for v in np.atleast_1d(holder["element_size_um"])], "um"
        if "voxel_size" in holder:
            unit = holder.get("unit", holder.get("voxel_size_unit", holder.get("units")))  # "units": NeXus, CF
            if isinstance(unit, bytes):
                unit = unit.decode()
            vals = [float(v) for v in np.atleast_1d(holder["voxel_size"])]
            vals = vals * 3 if len(vals) == 1 else vals
            if unit is not None and not isinstance(unit, str):  # one unit per axis (review: the size was dropped)
                units = [u.decode() if isinstance(u, bytes) else str(u) for u in np.atleast_1d(unit)]
                if len(units) == len(vals):
                    return _in_one_unit(vals, units)
                unit = units[-1] if len(set(units)) == 1 else None
            return vals, unit
    return _nxdata_voxel_size(dset)


def _nxdata_voxel_size(dset: Any) -> tuple[list[float], str | None] | None:
    """The spacing of a NeXus NXdata group's axis coordinates (``axes`` on the group, ``units`` on each), or None.

    Beamline files (NeXus, as written by tomography pipelines) give each axis of the signal a 1D
    dataset of its coordinates rather than a voxel size (QA s44: unread). Each named axis must be a
    1D numeric dataset as long as its dimension with even spacing (to 0.1 %); an axis named "." or
    uneven, and the size is not read.
    """
    group = dset.parent
    axes = group.attrs.get("axes")
    if axes is None:
        return None
    if isinstance(axes, bytes):
        axes = axes.decode()
    names = axes.split(":") if isinstance(axes, str) else [a.decode() if isinstance(a, bytes) else str(a) for a in axes]
    if len(names) != dset.ndim:
        return None
    sizes, units = [], []
    for n, name in zip(dset.shape, names, strict=True):
        coord = group.get(name) if name != "." else None
        if coord is None or getattr(coord, "ndim", 0) != 1 or coord.shape[0] != n or n < 2:
            return None
        step = np.diff(np.asarray(coord[()], dtype=np.float64))
        if not np.all(np.isfinite(step)) or not np.all(np.abs(step - step.mean()) <= 1e-3 * abs(step.mean())):
            return None
        if step.mean() == 0:
            return None
        u = coord.attrs.get("units", coord.attrs.get("unit"))
        sizes.append(float(abs(step.mean())))
        units.append(u.decode() if isinstance(u, bytes) else (None if u is None else str(u)))
    sizes, unit = _in_one_unit(sizes, units)
    return [float(f"{v:.12g}") for v in sizes], unit  # a coordinate's step: 0.2 um, not 200.00000000000003 nm


def class_names_of(arr: Any) -> dict[int, str] | None:
    """Phase names the store behind an opened array records (see :func:`read_class_names`), or None.

    A level of a pyramid group (``labels.zarr/0``) finds the names on its group.
    """
    from .output import source_path

    if isinstance(arr, np.ndarray) and not isinstance(arr, np.memmap):
        return None
    if hasattr(arr, "channel_axis") and hasattr(arr, "source"):  # a ChannelStack: the file of its source
        found = voxel_size_of(arr.source)
        if found is not None and len(found[0]) == len(arr.source.shape):  # one size per axis: not the channels'
            found = (tuple(v for i, v in enumerate(found[0]) if i != arr.channel_axis), found[1])
        return found
    p = source_path(arr)
    if p is None or not p.exists():
        return None
    return read_class_names(p) or (read_class_names(p.parent) if p.name.isdigit() else None)


def read_class_names(path: str | os.PathLike, *, dataset: str | None = None) -> dict[int, str] | None:
    """Phase names a label store records, or None.

    Reads the ``napari_xrayseg`` attributes of an output of ``xrayseg predict`` (``classes``
    and ``class_names``, from the model) or the OME-NGFF ``image-label`` ``properties``
    (``label-value`` and ``name``), on the array or its group.

    Parameters
    ----------
    path : path-like
        A zarr array or group, or a TIFF written by ``xrayseg predict`` on many inputs (other
        files record no names: None).
    dataset : str, optional
        The array inside a zarr group.

    Returns
    -------
    dict or None
        ``{label: name}``.
    """
    import zarr

    p = Path(path)
    if p.suffix.lower() in (".tif", ".tiff") and p.is_file():  # a TIFF of predict on many inputs records them
        return _names_in(tiff_output_meta(p))
    if not (p.is_dir() or p.suffix.lower() == ".zarr") or not p.exists():
        return None
    try:
        node = zarr.open(store=str(p), mode="r")
    except Exception:  # not a zarr store: no names
        return None
    nodes = [node]
    if isinstance(node, zarr.Group) and dataset is not None and dataset in node:
        nodes.insert(0, node[dataset])
    for n in nodes:
        attrs = n.attrs
        names = _names_in(attrs.get("napari_xrayseg"))
        if names:
            return names
        il = attrs.get("image-label") or (attrs.get("ome") or {}).get("image-label") or {}
        props = il.get("properties") if isinstance(il, dict) else None
        if isinstance(props, list):
            names = {
                int(q["label-value"]): str(q["name"])
                for q in props
                if isinstance(q, dict) and "label-value" in q and "name" in q
            }
            if names:
                return names
    return None


#: The key of our metadata in a TIFF output's ImageJ ``Info`` (or shaped) JSON.
TIFF_META = "napari_xrayseg"


def tiff_output_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``napari_xrayseg`` metadata a TIFF written by ``xrayseg predict`` (many inputs) records, or None."""
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            ij = tif.imagej_metadata or {}
            # an ImageJ TIFF's Info, else the first page's description (a BigTIFF's JSON): never the shaped series,
            # which take time quadratic in the pages (50,000: minutes; CI caught it)
            raw = ij.get("Info") if ij else tif.pages.first.description
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    try:
        meta = json.loads(raw) if isinstance(raw, str) and raw.lstrip().startswith("{") else None
    except ValueError:
        return None
    meta = meta.get(TIFF_META) if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) else None


def _names_in(meta: Any) -> dict[int, str] | None:
    """``{class: name}`` of our ``napari_xrayseg`` metadata (``classes``, ``class_names``), or None."""
    if (
        isinstance(meta, dict)
        and isinstance(meta.get("classes"), list)
        and isinstance(meta.get("class_names"), list)
        and len(meta["classes"]) == len(meta["class_names"])
    ):
        return {int(c): str(name) for c, name in zip(meta["classes"], meta["class_names"])}
    phases = meta.get("phases") if isinstance(meta, dict) else None
    if isinstance(phases, dict) and phases and all(str(k).isdigit() for k in phases):  # samples before "classes"
        return {int(k): str(v) for k, v in phases.items()}
    return None
