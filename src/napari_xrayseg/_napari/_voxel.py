"""Voxel-size fields shared by the Segment and Analyze widgets: z, y, x and a unit, filled from a layer."""

from __future__ import annotations

import math
from typing import Any

from magicgui.widgets import ComboBox, LineEdit

from ..core.errors import InputError, XraysegError
from ..core.units import LENGTH_UNITS, normalize_unit, to_unit
from ._layers import typed_number

UNITS = ["voxel", *LENGTH_UNITS]


def layer_voxel_size(layer: Any) -> tuple[tuple[float, ...], str] | None:
    """``(scale, unit)`` of a layer whose ``units`` are a length (nm, um, mm, ...), else None.

    napari's default units (``pixel``) mean the scale is not a physical size.
    """
    units = getattr(layer, "units", None)
    if layer is None or not units:
        return None
    try:
        unit = normalize_unit(str(units[-1]))
    except XraysegError:  # a unit napari knows and we do not
        return None
    if unit == "voxel":
        return None
    # each axis in x's unit: napari keeps a unit per axis, and (2, 1000, 1000) in (um, nm, nm) was taken
    # as nm throughout, z 1000x too thin (QA s44); an axis that is no length (a channel axis in pixels)
    # keeps its scale
    return tuple(_in_unit(float(s), u, unit) for s, u in zip(layer.scale, units, strict=False)), unit


def _in_unit(size: float, unit: Any, target: str) -> float:
    """``size`` in ``unit`` (a napari axis unit) converted to ``target``; as it is where ``unit`` is no length."""
    try:
        u = normalize_unit(str(unit))
    except XraysegError:
        return size
    return size if u == "voxel" else to_unit(size, u, target)


class SizeField(LineEdit):
    """A text field holding one length, exactly as typed (``0.0125``, ``1.25e-2``).

    A spin box rounds to its decimals: 0.0125 um became 0.013 (S_V 4 % low, TPB 7 %, and the
    rounded size written into outputs). ``value`` is the number, NaN while the text is none.
    """

    @property
    def value(self) -> float:
        try:
            return typed_number(LineEdit.value.fget(self))  # type: ignore[attr-defined]
        except ValueError:
            return math.nan

    @value.setter
    def value(self, v: float) -> None:
        LineEdit.value.fset(self, f"{float(v):.12g}")  # type: ignore[attr-defined]


class VoxelSizeFields:
    """Four fields (voxel size z, y, x and unit) that a widget adds to its own list.

    ``unit == "voxel"`` means "no physical size": :meth:`value` then gives None.
    """

    def __init__(self) -> None:
        self.z, self.y, self.x = (SizeField(label=f"Voxel size {a}", value="1") for a in "zyx")
        self.unit = ComboBox(label="Unit", choices=UNITS, value="voxel")
        self.widgets = [self.z, self.y, self.x, self.unit]
        self._tracked: Any = None
        self._guess_um = False

    def track(self, layer: Any, *, guess_um: bool = False) -> None:
        """Fill the fields from ``layer`` now and whenever its scale or units change (until another is tracked)."""
        old, self._tracked, self._guess_um = self._tracked, layer, guess_um
        for name in ("scale", "units"):
            if old is not None and hasattr(old.events, name):
                getattr(old.events, name).disconnect(self._refresh)
            if layer is not None and hasattr(layer.events, name):
                getattr(layer.events, name).connect(self._refresh)
        self._refresh()

    def _refresh(self, _event: Any = None) -> None:
        self.set_from_layer(self._tracked, guess_um=self._guess_um)

    def set_from_layer(self, layer: Any, *, guess_um: bool = False) -> None:
        """Take the voxel size from ``layer``'s scale and the unit from its ``units``.

        napari's default units (pixel) give "voxel", or with ``guess_um`` "um" when the
        scale is not 1.
        """
        if layer is None:
            return
        found = layer_voxel_size(layer)  # each axis in x's unit
        scale = tuple(float(s) for s in (found[0] if found is not None else layer.scale))[-3:]
        self.z.value, self.y.value, self.x.value = (1.0,) * (3 - len(scale)) + scale
        self.z.visible = len(scale) > 2  # a 2D image has no z (QA: a "Voxel size z" asked of a radiograph)
        unit = found[1] if found is not None else ("um" if guess_um and any(s != 1 for s in scale) else "voxel")
        self.unit.value = unit

    def value(self, ndim: int = 3) -> tuple[tuple[float, ...] | None, str]:
        """``(voxel size of the last ndim axes, unit)``; the voxel size is None in voxel units."""
        unit = str(self.unit.value)
        size = (float(self.z.value), float(self.y.value), float(self.x.value))[-ndim:]
        if unit != "voxel":
            for axis, v in zip("zyx"[3 - ndim :], size, strict=True):
                if not (math.isfinite(v) and v > 0):
                    raise InputError(f"voxel size {axis} is not a positive number: type one (e.g. 0.05), or unit voxel")
        return (None if unit == "voxel" else size), unit
