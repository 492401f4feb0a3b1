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


def voxel_size_or_guess(layer: Any) -> tuple[tuple[float, ...], str, bool]:
    """``(size, unit, guessed)``: :func:`layer_voxel_size`, else a scale that is not 1 taken as um (guessed).

    napari's default units (pixel) with a scale of (2, 1, 1): a size the user gave in the console
    or a reader without units. Both the Analyze and the Evaluate widget read it so (QA s45: the
    Evaluate widget measured the same layer on cubic voxels); 1 everywhere: voxel units.
    """
    found = layer_voxel_size(layer)
    if found is not None:
        return found[0], found[1], False
    scale = tuple(float(s) for s in layer.scale)
    return (scale, "um", True) if any(s != 1 for s in scale) else (scale, "voxel", False)


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
        size, unit, guessed = voxel_size_or_guess(layer)  # each axis in x's unit
        scale = size[-3:]
        self.z.value, self.y.value, self.x.value = (1.0,) * (3 - len(scale)) + scale
        self.z.visible = len(scale) > 2  # a 2D image has no z (QA: a "Voxel size z" asked of a radiograph)
        self.unit.value = "voxel" if guessed and not guess_um else unit

    def value(self, ndim: int = 3) -> tuple[tuple[float, ...] | None, str]:
        """``(voxel size of the last ndim axes, unit)``; the voxel size is None in voxel units."""
        unit = str(self.unit.value)
        size = (float(self.z.value), float(self.y.value), float(self.x.value))[-ndim:]
        if unit != "voxel":
            for axis, v in zip("zyx"[3 - ndim :], size, strict=True):
                if not (math.isfinite(v) and v > 0):
                    raise InputError(f"voxel size {axis} is not a positive number: type one (e.g. 0.05), or unit voxel")
        return (None if unit == "voxel" else size), unit
