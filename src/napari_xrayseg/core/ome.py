"""OME-Zarr multiscale metadata, read and written in one place (NGFF 0.5, also 0.4 on read)."""

from __future__ import annotations

from typing import Any

__all__ = ["multiscale_levels", "write_multiscales"]


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


def write_multiscales(group: Any, paths: list[str], *, name: str, labels: bool) -> None:
    """Write OME-Zarr 0.5 ``multiscales`` for ``paths`` (each level 2x coarser on every axis)."""
    ndim = len(group[paths[0]].shape)
    axes = [{"name": n, "type": "space"} for n in ("zyx"[-ndim:])]
    datasets = [
        {"path": p, "coordinateTransformations": [{"type": "scale", "scale": [float(2**i)] * ndim}]}
        for i, p in enumerate(paths)
    ]
    ome: dict[str, Any] = {"version": "0.5", "multiscales": [{"name": name, "axes": axes, "datasets": datasets}]}
    if labels:
        ome["image-label"] = {"version": "0.5"}
    group.attrs["ome"] = ome
