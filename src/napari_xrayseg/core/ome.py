"""OME-Zarr multiscale metadata, read in one place (NGFF 0.5, also 0.4).

Written by :func:`napari_xrayseg.core.units.ngff_label_attrs` (axes with units, a scale per
level, image-label names and colours).
"""

from __future__ import annotations

from typing import Any

__all__ = ["multiscale_levels"]


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
