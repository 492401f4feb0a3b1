"""Voxel sizes, length units and the OME-NGFF metadata that carries them.

Small pure functions shared by the readers (:func:`~napari_xrayseg.core.io.read_voxel_size`),
``analyze``, the model file (the voxel size a model was trained at) and the writers of
label outputs:

- :func:`normalize_unit` maps the many spellings of a length unit ("micron", "µm",
  "um", "micrometer") to one short symbol (``"um"``); :func:`ngff_unit` gives the
  OME-NGFF (UDUNITS-2) name (``"micrometer"``).
- :func:`parse_voxel_size` turns one number (isotropic) or three (z, y, x) into a
  ``(z, y, x)`` tuple of positive floats.
- :func:`ngff_axes`, :func:`ngff_scale_transforms` and :func:`image_label_properties`
  build the ``axes``, per-level ``coordinateTransformations`` and ``image-label``
  blocks of an OME-Zarr (NGFF 0.4/0.5) multiscales group.
- :func:`pick_voxel_size` chooses between a voxel size given by the user and those the
  files record (the input's, the model's), converting to a requested unit.
- :func:`voxel_size_mismatch` words the warning shown when a model is applied at a
  voxel size very different from the one it was trained at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .errors import InputError

__all__ = [
    "LABEL_COLORS",
    "label_color",
    "LENGTH_UNITS",
    "image_label_properties",
    "ngff_axes",
    "ngff_label_attrs",
    "ngff_scale_transforms",
    "ngff_unit",
    "normalize_unit",
    "parse_voxel_size",
    "pick_voxel_size",
    "to_unit",
    "voxel_size_mismatch",
]

#: Short symbol -> (OME-NGFF / UDUNITS-2 name, power of ten of its size in metres).
LENGTH_UNITS: dict[str, tuple[str, int]] = {
    "pm": ("picometer", -12),
    "A": ("angstrom", -10),
    "nm": ("nanometer", -9),
    "um": ("micrometer", -6),
    "mm": ("millimeter", -3),
    "cm": ("centimeter", -2),
    "m": ("meter", 0),
}

_ALIASES = {
    "voxel": "voxel",
    "voxels": "voxel",
    "pixel": "voxel",
    "pixels": "voxel",
    "px": "voxel",
    "": "voxel",
    "pm": "pm",
    "picometer": "pm",
    "picometre": "pm",
    "a": "A",
    "å": "A",
    "angstrom": "A",
    "ångström": "A",
    "nm": "nm",
    "nanometer": "nm",
    "nanometre": "nm",
    "um": "um",
    "µm": "um",
    "μm": "um",
    "micron": "um",
    "microns": "um",
    "micrometer": "um",
    "micrometre": "um",
    "\\u00b5m": "um",
    "mm": "mm",
    "millimeter": "mm",
    "millimetre": "mm",
    "cm": "cm",
    "centimeter": "cm",
    "centimetre": "cm",
    "m": "m",
    "meter": "m",
    "metre": "m",
}


def normalize_unit(unit: str | None) -> str:
    """One short symbol for a length unit: ``"nm"``, ``"um"``, ``"mm"``, ... or ``"voxel"``.

    Parameters
    ----------
    unit : str or None
        Any common spelling ("micron", "µm", "micrometer", "um", "nanometre", ...);
        ``None``, "" and "pixel" mean voxel units (no physical size).

    Returns
    -------
    str

    Raises
    ------
    InputError
        For a string that is not a length unit.

    Examples
    --------
    >>> normalize_unit("micron"), normalize_unit("µm"), normalize_unit("nanometer"), normalize_unit(None)
    ('um', 'um', 'nm', 'voxel')
    """
    if unit is None:
        return "voxel"
    key = str(unit).strip()
    out = _ALIASES.get(key) or _ALIASES.get(key.lower())
    if out is None:
        raise InputError(f"unknown length unit {unit!r}: use one of nm, um, mm, m (or voxel)")
    return out


def ngff_unit(unit: str | None) -> str | None:
    """The OME-NGFF (UDUNITS-2) name of a length unit, or None for voxel units.

    Examples
    --------
    >>> ngff_unit("um"), ngff_unit("voxel")
    ('micrometer', None)
    """
    u = normalize_unit(unit)
    return None if u == "voxel" else LENGTH_UNITS[u][0]


def to_unit(value: float, unit: str, target: str) -> float:
    """Convert a length from ``unit`` to ``target`` (both physical).

    Examples
    --------
    >>> to_unit(0.05, "um", "nm")
    50.0
    """
    a, b = normalize_unit(unit), normalize_unit(target)
    if "voxel" in (a, b):
        if a == b:
            return float(value)
        raise InputError(f"cannot convert between voxel units and {b if a == 'voxel' else a}: give a voxel size")
    e = LENGTH_UNITS[a][1] - LENGTH_UNITS[b][1]
    return float(value) * 10**e if e >= 0 else float(value) / 10**-e


def parse_voxel_size(voxel_size: float | Sequence[float] | None, ndim: int = 3) -> tuple[float, ...]:
    """A voxel size as a tuple of ``ndim`` positive floats (one number means isotropic).

    Parameters
    ----------
    voxel_size : float, sequence of float, or None
        One number (isotropic), or one per axis in array order (z, y, x); None means 1.
    ndim : int
        Number of axes.

    Returns
    -------
    tuple of float

    Raises
    ------
    InputError
        For a wrong count, a non-number, zero, a negative or a non-finite size.

    Examples
    --------
    >>> parse_voxel_size(0.5)
    (0.5, 0.5, 0.5)
    >>> parse_voxel_size([2, 1, 1])
    (2.0, 1.0, 1.0)
    """
    if voxel_size is None:
        return (1.0,) * ndim
    vals = [voxel_size] if isinstance(voxel_size, (int, float)) else list(voxel_size)
    if len(vals) == 1:
        vals = vals * ndim
    if len(vals) != ndim:
        raise InputError(
            f"voxel size {voxel_size!r} has {len(vals)} values for a {ndim}D volume: give one "
            f"(isotropic) or {ndim} (z y x)"
        )
    try:
        out = tuple(float(v) for v in vals)
    except (TypeError, ValueError) as e:
        raise InputError(f"voxel size {voxel_size!r} is not a number or list of numbers") from e
    if not all(math.isfinite(v) and v > 0 for v in out):
        raise InputError(f"voxel size {voxel_size!r} must be positive finite numbers")
    return out


def pick_voxel_size(
    voxel_size: float | Sequence[float] | None,
    unit: str | None,
    *recorded: tuple[Sequence[float], str | None] | None,
    ndim: int = 3,
) -> tuple[tuple[float, ...], str] | None:
    """The voxel size to use: the one given, else the first one a file records.

    Parameters
    ----------
    voxel_size : float, sequence of float, or None
        Given by the user: one number (isotropic) or one per axis (z, y, x).
    unit : str or None
        Unit of ``voxel_size`` (default ``"um"``); without ``voxel_size``, the unit to
        convert a recorded voxel size to.
    *recorded : (sizes, unit) or None
        Voxel sizes the files record, in order of preference (e.g. the input's, then the
        model's); None, and those with fewer than ``ndim`` values, are skipped.
    ndim : int
        Number of axes of the volume (the last ``ndim`` recorded values are used).

    Returns
    -------
    ((float, ...), str) or None
        Voxel size and short unit symbol, or None when nothing is given or recorded.

    Raises
    ------
    InputError
        For a malformed ``voxel_size`` or an unknown ``unit``.

    Examples
    --------
    >>> pick_voxel_size(0.5, None)
    ((0.5, 0.5, 0.5), 'um')
    >>> pick_voxel_size(None, "nm", None, ([0.1, 0.05, 0.05], "micrometer"))
    ((100.0, 50.0, 50.0), 'nm')
    >>> pick_voxel_size(None, None, None) is None
    True
    >>> pick_voxel_size(None, "voxel", ([2.0, 1.0, 1.0], "um")) is None  # lengths in voxels: the file's size unused
    True
    """
    want = normalize_unit(unit) if unit else None
    if want == "voxel":  # lengths in voxels: no physical size, whatever a file records (as analyze(unit="voxel"))
        if voxel_size is not None and any(v != 1 for v in parse_voxel_size(voxel_size, ndim)):
            raise InputError(
                f"voxel size {voxel_size} in voxel units: a voxel is 1 a side; give its unit (--unit um) "
                "or leave the voxel size out"
            )
        return None
    if voxel_size is not None:
        return parse_voxel_size(voxel_size, ndim), want or "um"
    for rec in recorded:
        if rec is None or rec[0] is None or len(rec[0]) < ndim:
            continue
        size = tuple(float(v) for v in rec[0])[-ndim:]
        have = normalize_unit(rec[1])
        if want and want != have and "voxel" not in (want, have):
            size, have = tuple(to_unit(v, have, want) for v in size), want
        return size, have
    return None


def ngff_axes(unit: str | None, ndim: int = 3) -> list[dict[str, str]]:
    """The ``axes`` list of an OME-NGFF multiscales block, with the length unit on each space axis.

    Parameters
    ----------
    unit : str or None
        Length unit of the voxel size; voxel units (None) write no ``unit`` key.
    ndim : int
        2 (y, x) or 3 (z, y, x).

    Returns
    -------
    list of dict

    Examples
    --------
    >>> ngff_axes("um")[0]
    {'name': 'z', 'type': 'space', 'unit': 'micrometer'}
    """
    name = ngff_unit(unit)
    axes = [{"name": a, "type": "space"} for a in "zyx"[3 - ndim :]]
    if name is not None:
        for a in axes:
            a["unit"] = name
    return axes


def ngff_scale_transforms(
    voxel_size: float | Sequence[float] | None,
    levels: int,
    *,
    ndim: int = 3,
    factor: int | Sequence[int] = 2,
    centered: bool = True,
) -> list[list[dict[str, Any]]]:
    """The ``coordinateTransformations`` of each pyramid level, in physical units.

    Level ``i`` has voxels ``factor**i`` times larger along each downsampled axis. With
    ``centered`` (blocks averaged or voted: voxel ``j`` of level ``i`` covers level-0 voxels
    ``j f**i .. (j+1) f**i - 1``) it also gets a translation of ``(f**i - 1) / 2`` level-0
    voxels, so that the voxel centres of all levels line up; without it (every ``f``-th voxel
    taken, ``a[::2, ::2, ::2]``: voxel ``j`` *is* level-0 voxel ``j f**i``) none is needed.

    Parameters
    ----------
    voxel_size : float or sequence of float or None
        Level-0 voxel size (z, y, x); None means 1 (voxel units).
    levels : int
        Number of pyramid levels (1 = no pyramid).
    ndim : int
        Number of axes.
    factor : int or sequence of int
        Downsampling factor per level, one for all axes or one per axis (1 = that axis is kept).
    centered : bool
        Levels made by block reduction (True) or by taking every ``factor``-th voxel (False).

    Returns
    -------
    list
        One list of transformations per level, to put in ``datasets[i]["coordinateTransformations"]``.

    Examples
    --------
    >>> ngff_scale_transforms((2.0, 1.0, 1.0), 2)[1]
    [{'type': 'scale', 'scale': [4.0, 2.0, 2.0]}, {'type': 'translation', 'translation': [1.0, 0.5, 0.5]}]
    """
    vs = parse_voxel_size(voxel_size, ndim)
    fac = [int(factor)] * ndim if isinstance(factor, int) else [int(f) for f in factor]
    if len(fac) != ndim or any(f < 1 for f in fac):
        raise InputError(f"pyramid factor {factor!r} must be one positive integer or one per axis")
    out = []
    for i in range(int(levels)):
        scale = [float(v * f**i) for v, f in zip(vs, fac)]
        tr: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if i and centered:
            tr.append({"type": "translation", "translation": [float(v * (f**i - 1) / 2) for v, f in zip(vs, fac)]})
        out.append(tr)
    return out


#: Colours of label values 1, 2, 3, ... (cycling every 49): napari's default Labels colours, so that
#: the files (OME-NGFF ``image-label``), the figures and the viewer show each phase in the colour the
#: user paints it with (tests/napari checks them against napari's for values 1-120).
LABEL_COLORS = (
    (0.471, 0.145, 0.024),
    (0.357, 0.835, 0.973),
    (0.573, 0.537, 0.910),
    (0.424, 0.008, 0.757),
    (0.278, 0.227, 0.624),
    (0.671, 0.925, 0.541),
    (0.561, 0.678, 0.698),
    (0.525, 0.565, 0.604),
    (0.996, 0.969, 0.110),
    (0.969, 0.267, 0.231),
    (0.012, 0.306, 0.224),
    (0.443, 0.698, 0.376),
    (0.412, 0.584, 0.290),
    (0.235, 0.106, 0.529),
    (0.180, 0.278, 0.063),
    (0.361, 0.718, 0.871),
    (0.278, 0.616, 0.463),
    (0.278, 0.259, 0.345),
    (0.937, 0.337, 0.396),
    (0.722, 0.314, 0.482),
    (0.651, 0.165, 0.392),
    (0.945, 0.706, 0.925),
    (0.294, 0.118, 0.125),
    (0.706, 0.773, 0.243),
    (0.612, 0.376, 0.184),
    (0.541, 0.263, 0.106),
    (0.847, 0.745, 0.604),
    (0.706, 0.490, 0.741),
    (0.651, 0.369, 0.643),
    (0.376, 0.478, 0.204),
    (0.757, 0.890, 0.341),
    (0.843, 0.584, 0.333),
    (0.620, 0.529, 0.435),
    (0.000, 0.173, 0.922),
    (0.792, 0.902, 0.878),
    (0.882, 0.545, 0.118),
    (0.471, 0.941, 0.004),
    (0.482, 0.557, 0.059),
    (0.898, 0.867, 0.698),
    (0.671, 0.925, 0.541),
    (0.259, 0.847, 0.651),
    (0.275, 0.729, 0.557),
    (0.996, 0.969, 0.110),
    (0.969, 0.267, 0.231),
    (0.686, 0.294, 0.949),
    (0.690, 0.047, 0.247),
    (0.412, 0.584, 0.290),
    (0.965, 0.529, 0.655),
    (0.796, 0.196, 0.780),
)


def label_color(value: int) -> tuple[float, float, float]:
    """The RGB colour of label ``value`` (:data:`LABEL_COLORS`, cycling; 0 black).

    >>> label_color(1) == LABEL_COLORS[0], label_color(0)
    (True, (0.0, 0.0, 0.0))
    """
    if value <= 0:
        return (0.0, 0.0, 0.0)
    return LABEL_COLORS[(int(value) - 1) % len(LABEL_COLORS)]


def image_label_properties(
    classes: Sequence[int], class_names: Sequence[str] | None = None, colors: Sequence[Sequence[float]] | None = None
) -> dict[str, Any]:
    """The OME-NGFF ``image-label`` block: a colour and a name for each label value.

    Parameters
    ----------
    classes : sequence of int
        Label values.
    class_names : sequence of str, optional
        One name per class (default: ``"class N"``).
    colors : sequence of RGB or RGBA, optional
        Colours as floats in [0, 1] (default: :data:`LABEL_COLORS`, by label value).

    Returns
    -------
    dict
        ``{"colors": [{"label-value", "rgba"}], "properties": [{"label-value", "name"}]}``,
        with ``rgba`` as integers 0..255 (NGFF).

    Examples
    --------
    >>> block = image_label_properties([1, 2], ["pore", "nickel"])
    >>> block["properties"][1]
    {'label-value': 2, 'name': 'nickel'}
    """
    classes = [int(c) for c in classes]
    names = list(class_names) if class_names is not None else [f"class {c}" for c in classes]
    if len(names) != len(classes):
        raise InputError(f"{len(names)} class names for {len(classes)} classes: give one name per class")
    cols = list(colors) if colors is not None else [LABEL_COLORS[(c - 1) % len(LABEL_COLORS)] for c in classes]
    if len(cols) != len(classes):
        raise InputError(f"{len(cols)} colours for {len(classes)} classes: give one colour per class")
    rgba = []
    for c, col in zip(classes, cols):
        vals = [float(v) for v in col] + ([1.0] if len(col) == 3 else [])
        rgba.append({"label-value": c, "rgba": [int(round(255 * min(max(v, 0.0), 1.0))) for v in vals[:4]]})
    return {"colors": rgba, "properties": [{"label-value": c, "name": str(n)} for c, n in zip(classes, names)]}


def ngff_label_attrs(
    levels: int,
    voxel_size: float | Sequence[float] | None = None,
    unit: str | None = None,
    *,
    ndim: int = 3,
    classes: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    colors: Sequence[Sequence[float]] | None = None,
    name: str = "labels",
    centered: bool = False,
    origin: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The whole ``ome`` attribute of an OME-Zarr 0.5 label group: multiscales with units and scales, and names.

    Parameters
    ----------
    levels : int
        Number of pyramid levels (arrays ``"0"``, ``"1"``, ... of the group).
    voxel_size, unit : optional
        Level-0 voxel size (z, y, x) and its unit (None: voxel units, no ``unit`` on the axes).
    ndim : int
        2 or 3.
    classes, class_names, colors : optional
        Label values, their names and colours for the ``image-label`` block (see
        :func:`image_label_properties`); without ``classes`` only the version is written.
    name : str
        Name of the multiscale.
    centered : bool
        See :func:`ngff_scale_transforms` (False for ``a[::2, ::2, ::2]`` pyramids).
    origin : sequence of float, optional
        Where the first voxel's centre lies (z, y, x, in ``unit``): a ``translation`` of every
        level (the image's placement, e.g. a crop of a larger scan).

    Returns
    -------
    dict
        To store as ``group.attrs["ome"]``.

    Examples
    --------
    >>> a = ngff_label_attrs(2, (0.1, 0.05, 0.05), "um", classes=[1, 2], class_names=["pore", "YSZ"])
    >>> a["multiscales"][0]["datasets"][1]["coordinateTransformations"]
    [{'type': 'scale', 'scale': [0.2, 0.1, 0.1]}]
    >>> a["image-label"]["properties"][1]["name"]
    'YSZ'
    """
    tr = ngff_scale_transforms(voxel_size, levels, ndim=ndim, centered=centered)
    if origin is not None and any(float(v) for v in origin):
        shift = [float(v) for v in origin][-ndim:]
        for level in tr:
            own = next((t for t in level if t["type"] == "translation"), None)
            if own is None:
                level.append({"type": "translation", "translation": shift})
            else:
                own["translation"] = [a + b for a, b in zip(own["translation"], shift)]
    label: dict[str, Any] = {"version": "0.5"}
    if classes is not None:
        label.update(image_label_properties(classes, class_names, colors))
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": ngff_axes(unit, ndim),
                "datasets": [{"path": str(i), "coordinateTransformations": tr[i]} for i in range(levels)],
            }
        ],
        "image-label": label,
    }


def voxel_size_mismatch(
    trained: Sequence[float] | None,
    trained_unit: str | None,
    image: Sequence[float] | None,
    image_unit: str | None,
    *,
    tolerance: float = 1.5,
) -> str | None:
    """A warning when an image's voxel size is very different from a model's training voxel size.

    Parameters
    ----------
    trained, image : sequence of float or None
        Voxel sizes (z, y, x) of the training data (from the model file) and of the image.
    trained_unit, image_unit : str or None
        Their units.
    tolerance : float
        Ratio (either way) beyond which the sizes count as very different, per axis.

    Returns
    -------
    str or None
        The warning, or None when the sizes agree, or either is unknown / in voxel units.

    Examples
    --------
    >>> voxel_size_mismatch([0.05] * 3, "um", [0.2] * 3, "um") is not None
    True
    >>> voxel_size_mismatch([50.0] * 3, "nm", [0.05] * 3, "um") is None
    True
    """
    if trained is None or image is None:
        return None
    tu, iu = normalize_unit(trained_unit), normalize_unit(image_unit)
    if "voxel" in (tu, iu):
        return None
    t = [to_unit(v, tu, iu) for v in trained]
    ratios = [i / s for i, s in zip(image, t)]
    if all(1 / tolerance <= r <= tolerance for r in ratios):
        return None
    fmt = ", ".join(f"{v:g}" for v in image)
    tfmt = ", ".join(f"{v:g}" for v in t)
    return (
        f"the image's voxel size ({fmt}) {iu} differs from the {tfmt} {iu} the model was trained at "
        f"(x{max(ratios, key=lambda r: abs(math.log(r))):.2g}): features will look "
        "larger or smaller than in training; resample the image or fine-tune the model at this voxel size"
    )
