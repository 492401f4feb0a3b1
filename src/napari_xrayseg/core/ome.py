"""OME-Zarr multiscale metadata, read in one place (NGFF 0.5, also 0.4).

Written by :func:`napari_xrayseg.core.units.ngff_label_attrs` (axes with units, a scale per
level, image-label names and colours).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SpaceAxes", "multiscale_levels", "multiscale_paths", "space_view"]


def _multiscales(node: Any) -> list[dict[str, Any]] | None:
    attrs = getattr(node, "attrs", None)
    if attrs is None or not hasattr(node, "members"):  # an array, not a group
        return None
    return (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales") or None


def multiscale_levels(node: Any) -> list[Any] | None:
    """The arrays of an OME-Zarr group's first multiscale, finest first; None if it is not one.

    Dataset paths are read from the metadata (ome-zarr writes ``s0..sN``, we write ``0..N``).
    """
    ms = _multiscales(node)
    if not ms:
        return None
    return [node[d["path"]] for d in ms[0]["datasets"]]


def multiscale_paths(node: Any) -> list[str]:
    """The level paths of an OME-Zarr group's first multiscale (none if it is not one)."""
    ms = _multiscales(node)
    return [str(d["path"]) for d in ms[0]["datasets"]] if ms else []


def space_view(node: Any, level: Any) -> Any:
    """``level`` of OME-Zarr group ``node`` without its axes of size 1 that are not space (``t``, ``c``).

    bioformats2raw and the NGFF converters write every image as TCZYX; a single time point of
    one channel is then a 3D volume. Returns ``level`` itself when there is nothing to drop.
    """
    ms = _multiscales(node) or [{}]
    axes = ms[0].get("axes") or []
    shape = tuple(int(n) for n in level.shape)
    if len(axes) != len(shape):
        return level
    drop = tuple(i for i, ax in enumerate(axes) if isinstance(ax, dict) and ax.get("type") != "space" and shape[i] == 1)
    return SpaceAxes(level, drop) if drop else level


class SpaceAxes:
    """A zarr array read without some of its axes of size 1 (lazily; each read indexes them at 0)."""

    def __init__(self, arr: Any, drop: tuple[int, ...]) -> None:
        self.array, self.drop = arr, drop
        keep = [i for i in range(len(arr.shape)) if i not in drop]
        self.shape = tuple(int(arr.shape[i]) for i in keep)
        self.chunks = tuple(int(arr.chunks[i]) for i in keep)
        self.dtype, self.ndim = arr.dtype, len(keep)
        self.store, self.path, self.attrs = arr.store, arr.path, arr.attrs  # where it is read from

    def __repr__(self) -> str:
        return f"SpaceAxes({self.array!r}, without axes {self.drop})"

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        import numpy as np

        a = np.asarray(self[...])
        return a if dtype is None else a.astype(dtype)

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, tuple):
            index = (index,)
        if any(i is Ellipsis for i in index):
            k = index.index(Ellipsis)
            index = index[:k] + (slice(None),) * (self.ndim - len(index) + 1) + index[k + 1 :]
        index = index + (slice(None),) * (self.ndim - len(index))
        full, it = [], iter(index)
        for i in range(self.ndim + len(self.drop)):
            full.append(0 if i in self.drop else next(it))
        return self.array[tuple(full)]
