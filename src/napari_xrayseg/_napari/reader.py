"""Reader contribution: zarr volumes, xrayseg outputs, OME-Zarr pyramids and HDF5, opened lazily.

``viewer.open("labels.zarr", plugin="napari-xrayseg")`` gives a Labels layer for an
output of ``xrayseg predict`` / :func:`napari_xrayseg.segment` (all pyramid levels
as one multiscale layer when it was written with ``--pyramid``), and an Image layer
for any other zarr array or (OME-)Zarr group. Nothing is read until napari draws it.
Layers get the voxel size the store records as their ``scale`` (and ``units``); labels
get the class names as ``features`` and the OME-NGFF ``image-label`` colours. An HDF5
file (``.h5``, ``.hdf5``, ``.hdf``, ``.nxs``: beamline and ilastik files) gives an Image
layer per 2D, 3D or 4D (with channels) numeric dataset in it, read chunk by chunk. A TIFF (a stack of pages, an
ImageJ hyperstack of one channel, OME-TIFF) gives an Image layer read page by page, at the
voxel size its tags record (napari's own TIFF reader reads the whole file and sets none).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.errors import XraysegError

_MARKERS = ("zarr.json", ".zarray", ".zgroup")
_HDF5 = (".h5", ".hdf5", ".hdf", ".nxs")
_TIFF = (".tif", ".tiff")


def get_reader(path: str | list[str]) -> Any:
    """Return a reader for a zarr store, an HDF5 file or a TIFF, or None if ``path`` is not one we can open.

    Where the file is of a kind we read but this one cannot be read (several arrays in a group, an
    RGB TIFF, a damaged file), napari's "refused the file" comes after our one-line reason, as a
    warning.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in _HDF5 and p.is_file():
        read: Any = read_hdf5
    elif suffix in _TIFF and p.is_file():
        read = read_tiff
    elif p.is_dir() and any((p / m).exists() for m in _MARKERS):
        read = read_zarr
    else:
        return None
    try:
        layers = read(p)  # lazy: only metadata is read here
    except (XraysegError, OSError, ValueError, KeyError, ImportError) as e:  # not ours after all, or unreadable
        _refused(p, e)
        return None
    if not layers:
        _refused(p, XraysegError("it holds no 2D, 3D or 4D numeric dataset"))
        return None
    return lambda _path: layers


def _refused(path: Path, error: BaseException) -> None:
    """Say why the file is refused (napari itself says only that it was)."""
    from napari.utils.notifications import show_warning

    reason = str(error) if isinstance(error, XraysegError) else f"{type(error).__name__}: {error}"
    show_warning(f"napari-xrayseg cannot open {path.name}: {reason}")


def read_tiff(path: str | os.PathLike) -> list[tuple[Any, dict[str, Any], str]]:
    """Layer data for a TIFF (a volume of pages, or one 2D image), read page by page as napari draws.

    The voxel size its tags record (ImageJ, OME-XML, resolution) becomes the layer's scale; a
    TIFF written by ``xrayseg predict`` (many inputs) opens as Labels with its class names.
    """
    import dask.array as da

    from ..core.io import open_volume, read_class_names, read_voxel_size
    from ..core.io import tiff_output_meta as _tiff_meta
    from ..core.units import image_label_properties
    from ._layers import label_colormap, label_features

    p = Path(path)
    arr = open_volume(p)  # a memory map or pages read on demand: nothing read yet
    # not the memory map itself: dask copies a numpy array's chunks when it builds the graph (the whole file)
    data = da.from_array(_Pages(arr), chunks=(1, *arr.shape[1:]) if arr.ndim == 3 else arr.shape)
    found = read_voxel_size(p)
    kw: dict[str, Any] = {"name": p.stem, **_placed(p, arr.shape, found)}  # with its origin (QA: labels moved)
    meta = _tiff_meta(p)
    if not (isinstance(meta, dict) and isinstance(meta.get("classes"), list)):
        return [(data, kw, "image")]
    kw["metadata"] = {"napari_xrayseg": meta}
    features = label_features(read_class_names(p))
    if features:
        kw["features"] = features
    colormap = label_colormap(image_label_properties(meta["classes"])["colors"])
    if colormap:
        kw["colormap"] = colormap
    return [(data, kw, "labels")]


class _Pages:
    """An array read on demand that dask does not take for a numpy array (a memory map it copied whole)."""

    def __init__(self, arr: Any) -> None:
        self.arr, self.shape, self.dtype, self.ndim = arr, tuple(arr.shape), arr.dtype, len(arr.shape)

    def __getitem__(self, index: Any) -> Any:
        import numpy as np

        return np.array(self.arr[index])  # a copy of the part asked for, not a view of the mapping


def read_hdf5(path: str | os.PathLike) -> list[tuple[Any, dict[str, Any], str]]:
    """Layer data for each 2D, 3D or 4D (with channels) numeric dataset of an HDF5 file (see the module docstring)."""
    import dask.array as da
    import h5py

    from ..core.io import hdf5_dataset, hdf5_datasets, read_voxel_size
    from ._layers import physical_placement

    p = Path(path)
    f = h5py.File(p, "r")  # kept open: napari reads the datasets lazily as it draws
    found: list[str] = []

    layers = []
    try:
        for name in hdf5_datasets(f):  # through links too (NeXus master files)
            obj = f[name]
            # 4D: channels (e.g. phase and absorption), which train and predict read with --channel-axis (QA)
            if obj.ndim in (2, 3, 4) and obj.dtype.kind in "uifb" and min(obj.shape) > (obj.ndim < 4):
                found.append(name)
        for name in found:
            dset = hdf5_dataset(f, p, name)  # external and virtual data found beside the file (QA)
            arr = da.from_array(dset, chunks=dset.chunks or "auto")
            vox = read_voxel_size(p, dataset=name)
            label = p.stem if len(found) == 1 else f"{p.stem} {name}"
            layers.append((arr, {"name": label, **physical_placement(*(vox or (None, None)), arr.shape)}, "image"))
    except BaseException:
        f.close()
        raise
    if not layers:
        f.close()
    return layers


def _old_sample_labels(p: Path, meta: dict[str, Any]) -> bool:
    """A sample's truth or annotations written before samples recorded ``classes``: integer, with ``phases``.

    Such a ``truth.zarr`` opened as an Image layer, which no widget offers as labels (QA, upgrading).
    """
    import numpy as np
    import zarr

    if not isinstance(meta.get("phases"), dict):
        return False
    try:
        node = zarr.open(store=str(p), mode="r")
    except Exception:  # noqa: BLE001 - not an array store: not labels
        return False
    return isinstance(node, zarr.Array) and np.dtype(node.dtype).kind in "ui"


def read_zarr(path: str | list[str]) -> list[tuple[Any, dict[str, Any], str]]:
    """Layer data for one zarr store (see the module docstring)."""
    import dask.array as da
    import numpy as np
    import zarr

    from ..core.errors import not_intensities
    from ..core.io import as_dask, open_volume, read_class_names, read_voxel_size
    from ..core.ome import multiscale_levels, space_view
    from ..core.units import image_label_properties
    from ..core.writer import output_levels, read_output_meta
    from ._layers import label_colormap, label_features

    path = path[0] if isinstance(path, list) else path
    p = Path(path)
    name = p.name.removesuffix(".zarr")
    found = read_voxel_size(p)  # OME-Zarr coordinateTransformations, or voxel_size attributes
    meta = read_output_meta(p)
    if meta is not None and ("classes" in meta or _old_sample_labels(p, meta)):  # written by segment(): labels
        levels = [da.from_zarr(a) for a in output_levels(p)]
        data: Any = levels if len(levels) > 1 else levels[0]
        state = " (incomplete)" if meta.get("complete") is False else ""  # a cut-short predict; samples say nothing
        kw: dict[str, Any] = {"name": name + state, "multiscale": len(levels) > 1, "metadata": {"napari_xrayseg": meta}}
        kw.update(_placed(p, levels[0].shape, found))
        features = label_features(read_class_names(p))
        if features:
            kw["features"] = features
        colors = ((zarr.open(store=str(p), mode="r").attrs.get("ome") or {}).get("image-label") or {}).get("colors")
        if colors is None and isinstance(meta.get("classes"), list):  # a plain array: the palette pyramids name
            colors = image_label_properties(meta["classes"])["colors"]
        colormap = label_colormap(colors)
        if colormap:  # the colours the file names (OME-NGFF image-label), as other viewers show them
            kw["colormap"] = colormap
        return [(data, kw, "labels")]
    group = zarr.open(store=str(p), mode="r")
    arrays = multiscale_levels(group)
    if arrays:
        levels = [da.from_zarr(a) for a in arrays]
        drop = getattr(space_view(group, arrays[0]), "drop", ())  # a TCZYX file's single t and c: a ZYX layer
        levels = [v[tuple(0 if i in drop else slice(None) for i in range(v.ndim))] for v in levels]
        return [
            (
                levels if len(levels) > 1 else levels[0],  # one level: an array (a list of one crashed napari)
                {
                    "name": name,
                    "multiscale": len(levels) > 1,
                    **_placed(p, levels[0].shape, found),
                },
                "image",
            )
        ]
    vol = open_volume(p)  # an array, or a view of one (a bioformats2raw group's image without its t and c axes)
    if np.dtype(vol.dtype).kind not in "biuf":  # napari raised an empty NotImplementedError on complex (QA)
        raise not_intensities(name, vol.dtype)
    arr = da.from_zarr(vol) if isinstance(vol, zarr.Array) else as_dask(vol)  # the view crashed from_zarr (QA)
    _say_deep_chunks(name, arr)
    return [(arr, {"name": name, **_placed(p, arr.shape, found)}, "image")]


#: A row of chunks (all the chunks one slice touches) larger than this makes browsing slow: said on opening.
DEEP_ROW_BYTES = 256 * 2**20


def _say_deep_chunks(name: str, arr: Any) -> None:
    """Say that each slice shown decodes a large row of chunks.

    QA: 11 s and 2.7 GB to open 192 x 2048² float32 in 64-deep chunks; 5.4 s and 0.74 GB rechunked.
    """
    import numpy as np

    if arr.ndim != 3 or arr.chunksize[0] <= 1:
        return
    row = arr.chunksize[0] * arr.shape[1] * arr.shape[2] * np.dtype(arr.dtype).itemsize
    if row > DEEP_ROW_BYTES:
        from napari.utils.notifications import show_info

        show_info(
            f"{name} is stored in chunks {arr.chunksize[0]} slices deep: each slice shown decodes "
            f"{row / 2**30:.2g} GiB, so moving between rows of chunks takes seconds; a copy rechunked for viewing "
            "browses fast (docs/troubleshooting.md: A big zarr is slow to browse in napari)"
        )


def _placed(p: Path, shape: tuple[int, ...], found: Any) -> dict[str, Any]:
    """Scale, units and translate of a layer of the zarr store or TIFF ``p``: its voxel size and origin.

    QA: a saved segmentation of a translated image reopened at 0, away from its image; an OME-Zarr
    translation was ignored.
    """
    import numpy as np

    from ..core.io import channel_axis_in_file, open_volume, read_origin
    from ._layers import physical_placement

    ch = None
    if len(shape) == 4:  # the axis the metadata names channels (review: the fewest entries were z in a C,Z,Y,X)
        try:
            named = channel_axis_in_file(open_volume(p))
        except XraysegError:
            named = None
        ch = named[0] if named is not None else int(np.argmin(shape))
    kw = physical_placement(*(found or (None, None)), shape, ch)
    origin = read_origin(p)
    if origin is not None and origin[1] == (found[1] if found else "voxel"):
        t = [float(v) for v in origin[0]][-len(shape) :]
        if len(t) == len(shape) - 1 and ch is not None:  # the channel axis has no origin
            t.insert(ch, 0.0)
        if len(t) == len(shape):
            kw["translate"] = tuple(t)
    return kw
