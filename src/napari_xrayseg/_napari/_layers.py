"""Layer <-> array helpers: snapshots of layer data and names that never clash."""

from __future__ import annotations

from typing import Any

from ..core.errors import InputError


def unique_name(viewer: Any, base: str) -> str:
    """``base``, or ``base [2]``, ``base [3]``... whichever is free in ``viewer.layers``."""
    names = {layer.name for layer in viewer.layers}
    if base not in names:
        return base
    i = 2
    while f"{base} [{i}]" in names:
        i += 1
    return f"{base} [{i}]"


def layer_array(layer: Any, what: str = "image") -> Any:
    """The full-resolution array behind a layer (numpy or dask; level 0 of a multiscale)."""
    if layer is None:
        raise InputError(f"no {what} layer selected: add or open one first")
    if getattr(layer, "rgb", False):
        raise InputError(f"{what} layer {layer.name!r} is RGB: convert it to a single-channel image")
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def placement(layer: Any) -> dict[str, Any]:
    """Keyword arguments that put a new layer exactly over ``layer``."""
    return {"scale": tuple(layer.scale), "translate": tuple(layer.translate)}


def layer_choices(viewer: Any, kind: type) -> Any:
    """A magicgui ``choices`` callable listing ``viewer``'s layers of type ``kind`` as (name, layer)."""

    def choices(_widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]

    return choices
