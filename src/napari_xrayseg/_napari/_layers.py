"""Layer <-> array helpers: snapshots of layer data and names that never clash."""

from __future__ import annotations

import contextlib
import logging
import re
import weakref
from pathlib import Path
from typing import Any

from ..core.errors import InputError, OutputExistsError

log = logging.getLogger(__name__)


def unique_name(viewer: Any, base: str) -> str:
    """``base``, or ``base [2]``, ``base [3]``... whichever is free in ``viewer.layers``."""
    names = {layer.name for layer in viewer.layers}
    if base not in names:
        return base
    i = 2
    while f"{base} [{i}]" in names:
        i += 1
    return f"{base} [{i}]"


def layer_array(layer: Any, what: str = "image", *, channels: bool = False) -> Any:
    """The full-resolution array behind a layer (numpy or dask; level 0 of a multiscale).

    An RGB layer is refused unless ``channels`` (the caller treats a channel axis), or unless its
    colour planes are identical: a grey image saved as RGB (napari opens such a PNG as an RGB layer)
    is its first plane, as ``xrayseg`` reads the file (QA: refused here, read as grey there).
    """
    if layer is None:
        raise InputError(f"no {what} layer selected: add or open one first")
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if getattr(layer, "rgb", False) and not channels:
        if (grey := _grey_planes(data)) is not None:
            return grey
        raise InputError(
            f"{what} layer {layer.name!r} is RGB: set 'Channel axis' to 'last' in Train to learn from its "
            "colours as channels, or convert it to a single-channel image"
        )
    return data


#: An RGB layer of at most this many values is checked for identical planes (a grey image saved as RGB).
_GREY_CHECK_MAX = 2**27


def _grey_planes(data: Any) -> Any:
    """The first colour plane of RGB(A) ``data`` whose R, G and B planes are identical, else None."""
    import numpy as np

    shape = tuple(getattr(data, "shape", ()))
    if len(shape) < 3 or shape[-1] not in (3, 4) or int(np.prod(shape)) > _GREY_CHECK_MAX:
        return None
    rgb = np.asarray(data[..., :3])
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
        return rgb[..., 0]
    return None


def channel_axis_of(layer: Any, choice: str, ndim: int) -> int | None:
    """The channel axis a widget's 'Channel axis' choice names for ``layer`` (``"none"``, ``"last"`` or a number)."""
    if choice == "none":
        return None
    axis = ndim - 1 if choice == "last" else int(choice)
    if not 0 <= axis < ndim or ndim < 3:
        raise InputError(
            f"layer {layer.name!r} has {ndim} dimensions: a channel axis {choice} leaves no 2D or 3D image; "
            "choose another 'Channel axis' or 'none'"
        )
    return axis


def spatial_placement(layer: Any, channel_axis: int | None) -> dict[str, Any]:
    """:func:`placement` of ``layer`` without its channel axis (an RGB layer's colours have no scale)."""
    where = placement(layer)
    if channel_axis is None or getattr(layer, "rgb", False):
        return where
    turned = [k for k in ("rotate", "shear", "affine") if where.pop(k, None) is not None]
    if turned:
        log.warning("%s: its %s is not carried to the output (a channel axis is dropped)", layer.name, turned)
    return {k: tuple(v for i, v in enumerate(vals) if i != channel_axis) for k, vals in where.items()}


def snapshot(data: Any) -> Any:
    """``data`` as a job may read it while the user paints: numpy arrays copied (dask/zarr are read as stored)."""
    import numpy as np

    return data.copy() if isinstance(data, np.ndarray) else data


def result_base(viewer: Any, layer: Any) -> tuple[str, str | None]:
    """The name to give a job's result for ``layer``, and a warning when that layer was removed meanwhile.

    A result added under a removed layer's name would lie over whatever layer now bears that name.
    """
    if layer in viewer.layers:
        return layer.name, None
    base = f"{layer.name} (removed)"
    return base, f"the image layer {layer.name!r} was removed while the job ran: its result is named {base!r}"


def labels_snapshot(labels_layer: Any, image: Any, what: str = "labels", *, shape: Any = None) -> Any:
    """The Labels layer's data, checked against ``image``'s shape (or ``shape``); numpy data copied.

    Painting while a job runs must not change what the worker reads.
    """
    lab = layer_array(labels_layer, "labels")
    want = tuple(image.shape) if shape is None else tuple(shape)
    if tuple(lab.shape) != want:
        raise InputError(
            f"{what} {labels_layer.name!r} shape {tuple(lab.shape)} does not match image shape "
            f"{want}: pick the Labels layer painted on this image"
        )
    return snapshot(lab)


def placement(layer: Any) -> dict[str, Any]:
    """Keyword arguments that put a new layer exactly over ``layer``.

    Its scale, translation and units, and its rotation, shear and affine where it has them
    (outputs of a rotated image were drawn axis-aligned).
    """
    import numpy as np

    where: dict[str, Any] = {"scale": tuple(layer.scale), "translate": tuple(layer.translate)}
    n = len(where["scale"])
    rotate = np.asarray(getattr(layer, "rotate", np.eye(n)))
    shear = np.asarray(getattr(layer, "shear", np.zeros(0)))
    affine = getattr(getattr(layer, "affine", None), "affine_matrix", None)
    if rotate.shape == (n, n) and not np.allclose(rotate, np.eye(n)):
        where["rotate"] = rotate
    if shear.size and not np.allclose(shear, 0):
        where["shear"] = shear
    if affine is not None and not np.allclose(affine, np.eye(n + 1)):
        where["affine"] = np.asarray(affine)
    units = getattr(layer, "units", None)
    if units is not None and len(tuple(units)) == n:  # as the image's (napari warned "inconsistent units")
        where["units"] = tuple(str(u) for u in units)
    return where


def slice_offset(layer: Any, axis: int, index: int) -> tuple[float, ...]:
    """``layer``'s translation moved to its slice ``index`` along data ``axis`` (rotation and shear included).

    A one-slice layer with this translate and ``layer``'s other transforms lies on that slice.
    """
    import numpy as np
    from napari.utils.transforms import Affine

    n = layer.ndim
    lin = Affine(scale=layer.scale, rotate=layer.rotate, shear=layer.shear, ndim=n).linear_matrix
    step = np.zeros(n)
    step[axis] = index
    return tuple(float(v) for v in np.asarray(layer.translate) + lin @ step)


#: Kinds of layer this plugin adds that are never anyone's annotations (previews, error maps, masks).
NOT_ANNOTATIONS = ("errors", "envelope", "tpb")


def layer_source(layer: Any) -> dict[str, Any]:
    """A layer as a result's provenance names it: ``{"layer": name, "path": file}`` (path when opened from one)."""
    from ..core.provenance import absolute_path

    path = getattr(getattr(layer, "source", None), "path", None)
    return {"layer": layer.name, **({"path": absolute_path(path)} if path else {})}


def with_layers(record: dict[str, Any] | None, **layers: Any) -> dict[str, Any] | None:
    """``record`` (a result's provenance) with its inputs named as the layers they were read from."""
    if record is None:
        return None
    return {**record, "inputs": {k: layer_source(v) for k, v in layers.items()}}


def made_by_model(layer: Any) -> bool:
    """Whether a Labels layer is a model's segmentation (Segment, Train's chained run, a predict output)."""
    meta = getattr(layer, "metadata", {}).get("napari_xrayseg") or {}
    return isinstance(meta, dict) and bool(meta.get("model") or meta.get("model_sha256"))


def placement_mismatch(labels_layer: Any, image_layer: Any, channel_axis: int | None = None) -> str | None:
    """A warning when a labels layer is not drawn over its image (another scale or translation), else None.

    The arrays pair voxel for voxel whatever the layers show; painted at another scale, the
    annotations the user saw over one place of the image teach (or score) another. An image's
    channel axis (``channel_axis``) has no counterpart in the labels: napari lays them over the
    image's last axes, which holds only for channels first.
    """
    import numpy as np

    if channel_axis not in (None, 0) and not getattr(image_layer, "rgb", False):
        return (
            f"{image_layer.name!r} has its channels on axis {channel_axis}: napari lays {labels_layer.name!r} over "
            "the image's last axes, channels included, so they do not overlay where painted (the arrays are paired "
            "voxel for voxel); to paint over the image, put its channels first (np.moveaxis in napari's console)"
        )
    a, b = placement(labels_layer), spatial_placement(image_layer, channel_axis)
    n = min(len(a["scale"]), len(b["scale"]))
    same = all(np.allclose(a[k][-n:], b[k][-n:]) for k in ("scale", "translate"))
    if same:
        return None

    def show(v: Any) -> str:
        return "(" + ", ".join(f"{float(x):g}" for x in v) + ")"

    return (
        f"{labels_layer.name!r} is drawn at scale {show(a['scale'])}, translate {show(a['translate'])}, "
        f"{image_layer.name!r} at {show(b['scale'])}, {show(b['translate'])}: their arrays are paired voxel for "
        "voxel, not as they overlay; give the labels the image's scale and translate if that is not meant"
    )


def model_labels_warning(layer: Any) -> str | None:
    """A warning when the labels to learn from are a model's segmentation or a reference, not painted ones."""
    if looks_like_truth(layer) and not made_by_model(layer):
        return (
            f"training on {layer.name!r}, named as a reference segmentation: scores against it afterwards "
            "measure the training data; paint a labels layer of your own to learn from if that is not meant"
        )
    if not made_by_model(layer):
        return None
    return (
        f"training on {layer.name!r}, a model's segmentation: the network learns that model's mistakes "
        "too; paint (or correct) a labels layer of your own to learn from"
    )


def never_annotations(layer: Any) -> bool:
    """Whether a layer is this plugin's preview or error map: never annotations, a prediction or a truth."""
    meta = getattr(layer, "metadata", {}).get("napari_xrayseg") or {}
    return isinstance(meta, dict) and ("preview_of" in meta or meta.get("kind") in NOT_ANNOTATIONS)


_TRUTH_NAME = re.compile(r"truth|ground[ _-]?truth|(^|[^a-z])gt([^a-z]|$)")  # not "background", "foreground"


def looks_like_truth(layer: Any) -> bool:
    """Whether a layer's name says it holds a reference segmentation ("truth", "ground truth", "gt")."""
    return bool(_TRUTH_NAME.search(str(getattr(layer, "name", "")).lower()))


def layer_choices(viewer: Any, kind: type, *, annotations: bool = False) -> Any:
    """A magicgui ``choices`` callable listing ``viewer``'s layers of type ``kind`` as (name, layer).

    With ``annotations`` (a widget's labels to learn from), this plugin's previews and error
    maps are left out, and models' segmentations and layers named as a reference ("truth",
    "gt") come last: the box's first choice, and its fall-back when the chosen layer is
    removed, is the user's own painting, not a prediction, nor the sample's truth kept to
    score against (which the Train and Annotate widgets took for the annotations).
    """

    def choices(_widget: Any = None) -> list[tuple[str, Any]]:
        found = [layer for layer in viewer.layers if isinstance(layer, kind)]
        if annotations:
            found = sorted(
                (ly for ly in found if not never_annotations(ly)),
                key=lambda ly: (made_by_model(ly), looks_like_truth(ly)),
            )
        return [(layer.name, layer) for layer in found]

    return choices


def _second_choice(layer: Any) -> bool:
    """A labels layer to learn from only when chosen: a preview, a model's output, a reference ("truth")."""
    return never_annotations(layer) or made_by_model(layer) or looks_like_truth(layer)


def follow_new_annotations(viewer: Any, combo: Any, widget: Any) -> None:
    """Choose a Labels layer the user adds (to paint on) where ``combo`` holds a reference or a model's output.

    A widget docked before the user added a layer to paint on kept "PXCT truth" chosen (magicgui
    keeps the value and puts new choices last): Train learned from the whole truth and Annotate
    found every slice annotated (QA, a newcomer following the quickstart). The hook is taken off
    the viewer when ``widget`` (a :class:`~._jobs.JobWidget`) closes: napari holds a plain function
    strongly, and through it the widget, so a closed panel lived on and still answered every new
    layer (QA s44: 11 closed panels, 22 notifications for one layer, +7 MB a close).
    """
    from napari.layers import Labels
    from napari.utils.notifications import show_info

    picked: list[Any] = [None]  # the layer the user chose in the box (a click), which a new layer never replaces

    def activated(*_: Any) -> None:
        picked[0] = weakref.ref(combo.value) if combo.value is not None else None

    combo.native.activated.connect(activated)  # Qt's "activated": the user's choice, not the code's

    def inserted(event: Any) -> None:
        try:
            choose(getattr(event, "value", None))
        except RuntimeError:  # the widget is gone (its Qt side deleted): nothing to choose in
            viewer.layers.events.inserted.disconnect(inserted)

    def choose(layer: Any) -> None:
        current = combo.value
        if not isinstance(layer, Labels) or _second_choice(layer) or current is layer:
            return
        if picked[0] is not None and picked[0]() is current:  # review: a reference chosen on purpose was replaced
            return
        if current is not None and not _second_choice(current):
            return
        combo.reset_choices()  # the new layer among the choices, whichever handler ran first
        if layer in [v for v in combo.choices]:
            combo.value = layer
            if current is not None:
                show_info(f"{combo.label}: {layer.name!r} (added) instead of {current.name!r}")

    viewer.layers.events.inserted.connect(inserted)

    def let_go() -> None:
        with contextlib.suppress(Exception):  # already taken off (the viewer closed first)
            viewer.layers.events.inserted.disconnect(inserted)

    widget.on_close(let_go)


def label_features(names: dict[int, str] | None) -> dict[str, list[Any]] | None:
    """Labels-layer ``features`` naming each label value (napari shows the name under the cursor)."""
    if not names:
        return None
    keys = sorted(int(k) for k in names)
    return {"index": keys, "name": [str(names[k]) for k in keys]}


def label_colormap(colors: Any) -> dict[Any, tuple[float, ...]] | None:
    """A Labels-layer ``colormap`` from OME-NGFF ``image-label`` ``colors`` (``label-value``, ``rgba`` 0..255).

    Label 0 (not annotated / background) stays transparent, values without a colour grey.
    """
    if not isinstance(colors, list):
        return None
    out: dict[Any, tuple[float, ...]] = {}
    for c in colors:
        if isinstance(c, dict) and "label-value" in c and isinstance(c.get("rgba"), list) and len(c["rgba"]) == 4:
            out[int(c["label-value"])] = tuple(min(max(float(v) / 255.0, 0.0), 1.0) for v in c["rgba"])
    if not out:
        return None
    return {None: (0.5, 0.5, 0.5, 1.0), 0: (0.0, 0.0, 0.0, 0.0), **out}


def layer_class_names(layer: Any) -> dict[int, str] | None:
    """``{label: name}`` from a Labels layer's ``features`` (columns ``index`` and ``name``), if any."""
    feats = getattr(layer, "features", None)
    if feats is None or "name" not in getattr(feats, "columns", ()) or len(feats) == 0:
        return None
    index = feats["index"] if "index" in feats.columns else range(len(feats))
    return {int(i): str(n) for i, n in zip(index, feats["name"])}


def physical_placement(
    voxel_size: Any, unit: str | None, shape: int | tuple[int, ...], channel_axis: int | None = None
) -> dict[str, Any]:
    """``scale`` (and ``units`` where napari has them) for a layer of a volume with this voxel size.

    ``shape`` is the layer's shape (or its number of axes). A 4D layer with three sizes (a file's
    channel axis has none) gets scale 1 on its channel axis: ``channel_axis`` (the file's metadata),
    else the axis with the fewest entries.
    """
    import inspect

    import numpy as np
    from napari.layers import Layer

    from ..core.units import ngff_unit

    if voxel_size is None:
        return {}
    ndim = shape if isinstance(shape, int) else len(shape)
    scale = [float(v) for v in voxel_size][-ndim:]
    if len(scale) == ndim - 1:  # QA: a multi-channel file's three sizes became a 4D layer's scale of three
        scale.insert(
            channel_axis if channel_axis is not None else 0 if isinstance(shape, int) else int(np.argmin(shape)), 1.0
        )
    out: dict[str, Any] = {"scale": tuple(scale)}
    name = ngff_unit(unit)
    if name is not None and "units" in inspect.signature(Layer.__init__).parameters:
        out["units"] = (name,) * ndim
    return out


def export_csv_json(result: Any, raw: str, *, missing: str, show_error: Any, show_info: Any) -> Path | None:
    """A widget's Export button: write ``result.to_csv`` and ``.to_json`` to ``<raw>.csv/.json``.

    Never overwrites; every problem (no result yet, no path, a file that exists, a full
    disk) goes to ``show_error``, success to ``show_info`` (the widget's notifications).
    Returns the CSV's path, or None when nothing was written.
    """
    from ..core.errors import XraysegError

    if result is None:
        show_error(missing)
        return None
    try:
        csv_path, json_path = export_pair(raw)
        result.to_csv(csv_path)
        result.to_json(json_path)
    except XraysegError as e:
        show_error(str(e))
        return None
    show_info(f"wrote {csv_path} and {json_path}")
    return csv_path


def export_pair(raw: str) -> tuple[Path, Path]:
    """``<base>.csv`` and ``<base>.json`` for an export base path; refuses existing files.

    Raises
    ------
    InputError
        If no path was chosen.
    OutputExistsError
        If either file exists (nothing is ever overwritten from a widget).
    """
    if raw in ("", "."):
        raise InputError("no export path chosen: pick a base file name, e.g. results/run1")
    base = Path(raw)
    if base.suffix.lower() in (".csv", ".json"):
        base = base.with_suffix("")
    pair = base.with_name(base.name + ".csv"), base.with_name(base.name + ".json")
    taken = [str(p) for p in pair if p.exists()]
    if taken:
        raise OutputExistsError(
            f"{' and '.join(taken)} exist{'s' if len(taken) == 1 else ''}: "
            "choose another base name (nothing is overwritten)"
        )
    return pair


def voxel_size_warning(voxel_size: Any, unit: str | None, model: Any) -> str | None:
    """A warning when ``voxel_size`` (in ``unit``) is far from the model's training voxel size, else None."""
    from ..core.models import read_model_info
    from ..core.units import voxel_size_mismatch

    info = model.info if hasattr(model, "info") else read_model_info(model)
    if info.voxel_size is None or voxel_size is None or len(info.voxel_size) < len(voxel_size):
        return None
    return voxel_size_mismatch(info.voxel_size[-len(voxel_size) :], info.unit, tuple(voxel_size), unit)


NODATA_TOOLTIP = (
    "grey value of voxels without data, e.g. 0 outside a reconstruction's circular field of view "
    "(NaN always is): left out of the normalisation, filled from the nearest voxel with data, labelled 0. "
    "Empty: the value the model was trained with, if any (training: none); none: no value"
)


def nodata_field() -> Any:
    """The "No-data value" field of the Segment, Train and Annotate widgets (empty: the model's)."""
    from magicgui.widgets import LineEdit

    w = LineEdit(label="No-data value", value="")
    w.tooltip = NODATA_TOOLTIP
    return w


def typed_number(text: str) -> float:
    """A number typed into a field, a decimal comma taken as the point.

    QA: "0,02" was refused in a German locale, where the spin boxes beside the field show "0,25".

    >>> typed_number(" 0,02 "), typed_number("1e-3"), typed_number("1.5"), typed_number("0,025")
    (0.02, 0.001, 1.5, 0.025)

    Raises
    ------
    ValueError
        If the text is no number (``"1,000.5"`` is none), or a comma before three digits (``"1,000"``:
        a thousand, or one?).
    """
    import re

    text = str(text).strip()
    if re.fullmatch(r"[-+]?[1-9]\d{0,2},\d{3}", text):  # 1,000: a thousand or one? (review: -1,000 became -1)
        raise ValueError(f"{text!r} is ambiguous: write 1000 or 1.0")
    if text.count(",") == 1 and "." not in text:
        text = text.replace(",", ".")
    return float(text)


def nodata_value(text: str, *, training: bool = False) -> float | str | None:
    """The number in a "No-data value" field, None when empty; a clear error otherwise.

    "none" asks for no value, not even the model's (:data:`~napari_xrayseg.core.normalize.NO_NODATA`);
    for a training (``training=True``) that is None.

    Examples
    --------
    >>> nodata_value(""), nodata_value(" 0 "), nodata_value("-1e3"), nodata_value("None")
    (None, 0.0, -1000.0, 'none')
    """
    from napari_xrayseg.core.normalize import NO_NODATA, is_no_nodata

    text = str(text).strip()
    if not text:
        return None
    if is_no_nodata(text):
        return None if training else NO_NODATA
    try:
        v = typed_number(text)
    except ValueError:
        v = float("nan")
    if v != v or v in (float("inf"), float("-inf")):
        raise InputError(f"No-data value {text!r} must be a number (e.g. 0), none, or empty")
    return v


def fit_table(table: Any, max_rows: int = 8) -> None:
    """Size a table to its contents: all rows up to ``max_rows``, then it scrolls."""
    q = table.native
    q.resizeColumnsToContents()
    rows = min(q.rowCount(), max_rows)
    height = (
        q.horizontalHeader().sizeHint().height()
        + sum(q.rowHeight(i) for i in range(rows))
        + q.horizontalScrollBar().sizeHint().height()
        + 2 * q.frameWidth()
        + 2
    )
    q.setMinimumHeight(height)
    q.setMaximumHeight(height if q.rowCount() <= max_rows else 16777215)
