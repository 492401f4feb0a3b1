"""Segment widget: run a model over an Image layer, slice by slice, into a new Labels layer.

With *every selected image layer* ticked, it segments each Image layer selected in the
layer list, one Labels layer each, with one model load (``segment_many``).

Console equivalent::

    from napari_xrayseg import segment, segment_many
    labels = segment(viewer.layers["PXCT sample"].data, "model.safetensors", axis=0)
    viewer.add_labels(labels, name="PXCT sample labels")
    summary = segment_many({l.name: l.data for l in viewer.layers.selection}, "model.safetensors")
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, PushButton, SpinBox
from napari.utils.notifications import show_info

import napari

from ..core.batch import iter_segment_many
from ..core.config import SegmentConfig
from ..core.device import PRECISIONS, available_devices
from ..core.errors import XraysegError
from ..core.inference import iter_segment, trained_on
from ..core.models import read_model_info
from ._jobs import JobRunner, JobWidget, show_error, show_warning, text_label
from ._layers import (
    label_features,
    layer_array,
    layer_choices,
    layer_source,
    nodata_field,
    nodata_value,
    result_base,
    unique_name,
    voxel_size_warning,
)
from ._recent import offer_models, take_offer
from ._voxel import VoxelSizeFields, layer_voxel_size

if TYPE_CHECKING:
    from ..core.models import Model

_D = SegmentConfig()
#: Window sides the Tile box offers besides "auto" (multiples of every network's stride).
TILES = (32, 64, 128, 256, 512, 1024, 2048)


class SegmentWidget(JobWidget):
    """Dock widget: pick an Image layer and a model file, segment into a new Labels layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.model: Model | None = None  # set by code (e.g. after training) to skip the file
        self._image = ComboBox(label="Image", choices=layer_choices(viewer, napari.layers.Image), nullable=False)
        self._selected = CheckBox(text="every selected image layer", value=False)  # fits napari's default dock width
        self._selected.tooltip = (
            "segment each Image layer selected in the layer list, with one model load: one Labels layer each"
        )
        self._model_file = FileEdit(label="Model file", mode="r", filter="*.safetensors", value="")
        self._axis = ComboBox(
            label="Slice axis",
            choices=[("0 (Z: xy slices)", 0), ("1 (Y: xz slices)", 1), ("2 (X: yz slices)", 2)],
            value=_D.axis,
        )
        # 0: "auto", whole slices (or halo tiles for huge ones); a number: sliding windows of that side
        # (a choice, not a spin box: superqt's spin box never shows a special "auto" text)
        self._tile = ComboBox(label="Tile", value=0, choices=[("auto", 0), *((f"{t} px windows", t) for t in TILES)])
        self._tile.tooltip = (
            "auto: whole slices through the network (the fastest); windows of a fixed side use less memory "
            "(for a GPU that runs out of it) and blend where they overlap"
        )
        self._overlap = FloatSpinBox(label="Overlap", min=0.0, max=0.9, step=0.05, value=_D.overlap)
        self._batch = SpinBox(label="Batch", min=1, max=256, value=_D.batch)
        self._device = ComboBox(label="Device", choices=["auto", *available_devices()], value=_D.device)
        self._precision = ComboBox(label="Precision", choices=list(PRECISIONS), value=_D.precision)
        self._precision.tooltip = (
            "auto: fp16 on CUDA, bf16 on CPUs that compute it natively, else fp32; fp32 repeats a run made "
            "elsewhere bit for bit (xrayseg predict --precision)"
        )
        self._out = FileEdit(label="Save to zarr", mode="w", filter="*.zarr", value="")  # short: the dock's width
        self._out.tooltip = (
            "optional: a new .zarr for one image; a folder (one NAME.zarr per layer) for selected layers"
        )
        self._pyramid = CheckBox(text="multiscale pyramid", value=False)
        self._pyramid.tooltip = "with Save to zarr: an OME-Zarr of downsampled levels, smooth to browse for big volumes"
        self._axes = ComboBox(
            label="Axes", choices=[("slice axis only", ""), ("orthoplane: z, y, x averaged", "zyx")], value=""
        )
        self._confidence = ComboBox(
            label="Confidence", value="", choices=[("none", ""), ("max probability", "maxprob"), ("entropy", "entropy")]
        )
        self._tta = ComboBox(
            label="Test-time views",
            value=1,
            choices=[("1 (none)", 1), ("2 (2x the work)", 2), ("4 (4x)", 4), ("8 (8x)", 8), ("16 (16x)", 16)],
        )
        self._tta.tooltip = (
            "average the probabilities over flipped and transposed views of the slices: "
            "fewer errors on interfaces, N times the work (a 2D model has 8 views)"
        )
        self._overlap.tooltip = "share of each window that its neighbour repeats, blended (windows only)"
        self._batch.tooltip = "slices (or windows) per forward pass: fewer use less memory, more can be faster on a GPU"
        self._axes.tooltip = (
            "orthoplane: segment along z, y and x and average the three (about 3x the work; smoother in 3D)"
        )
        self._confidence.tooltip = (
            "also add a map of how sure the model is (entropy: bright = unsure), to see where to annotate next"
        )
        self._nodata = nodata_field()
        self._voxel = VoxelSizeFields()  # written into the outputs; follows the image layer's scale
        self._voxel.unit.tooltip = "voxel: none given (the model's training voxel size is recorded, if any)"
        self._info = text_label("")
        self._run = PushButton(text="Segment")
        self.runner = JobRunner(self._run, "Segment", status=self._info)
        self._run.changed.connect(self._on_run)
        self._model_file.changed.connect(self._on_model_file)
        self._image.changed.connect(lambda _=None: self._voxel.track(self._image.value))
        self._image.changed.connect(self._show_volume_fields)
        self._show_volume_fields(self._image.value)
        self.extend(
            [
                self._image,
                self._selected,
                self._model_file,
                self._axis,
                self._tile,
                self._overlap,
                self._batch,
                self._axes,
                self._confidence,
                self._tta,
                self._device,
                self._precision,
                self._nodata,
                *self._voxel.widgets,
                self._out,
                self._pyramid,
                self._info,
                self._run,
            ]
        )
        self.span(self._info)
        self.pin_status(self._info)  # the progress line and Segment / Cancel in view in a short window
        self.pin(self._run)
        self._follow_layers(viewer)
        offer_models(self._offer_model)  # the model the Train widget saved last
        self._voxel.track(self._image.value)

    def _offer_model(self, path: Path) -> None:
        """Take ``path`` (a model just trained) where no model was chosen yet, or the last one offered is shown."""
        take_offer(self, path)

    def _on_model_file(self, value: Any) -> None:
        path = Path(str(value))
        if not str(value) or not path.is_file():
            self._info.value = ""
            return
        try:
            info = read_model_info(path)
        except XraysegError as e:
            self._info.value = "invalid model file"
            show_error(str(e))
            return
        state = f"trained {len(info.history)} epochs" if info.trained else "UNTRAINED"
        self._info.value = f"{info.arch} {info.size or ''}, classes {info.classes}, {state}"

    def _on_run(self) -> None:
        if self._selected.value:
            self.runner.toggle(self._inputs_many, self._start_many)
        else:
            self.runner.toggle(self._inputs, self._start)

    def _start(self, kwargs: dict[str, Any]) -> None:
        layer = self._image.value
        warning = voxel_size_warning(kwargs["voxel_size"], kwargs["unit"], kwargs["model"])
        if warning:
            show_warning(warning)
        out = kwargs["out"]
        if kwargs.get("resume"):
            show_info(f"{out} holds an unfinished run: finishing it if it was made from this image with these settings")

        def cancelled(_exc: Any) -> None:
            from ..core.writer import SlabMarkers

            if out is not None and Path(out).exists():  # what was written stays: say where, and how to finish it
                show_info(
                    f"Segmenting {layer.name}: cancelled; the finished slabs are kept in {out}: Segment again to finish"
                    if SlabMarkers(out).any_done()
                    else f"Segmenting {layer.name}: cancelled before any slab was finished ({out}: Segment again to "
                    "start it)"
                )

        self.runner.start(
            _named_job(iter_segment, {id(kwargs["image"]): layer_source(layer)}),
            desc=f"Segmenting {layer.name}",
            total=kwargs["image"].shape[0],
            on_returned=lambda labels: self._add_result(labels, layer, kwargs),
            on_cancelled=cancelled,
            shown=(warning,) if warning else (),
            **kwargs,
        )

    def _model(self) -> Any:
        """The model set by code, else the chosen file (checked)."""
        from ..core.errors import InputError

        if self.model is not None:
            return self.model
        path = Path(str(self._model_file.value))
        if str(self._model_file.value) in ("", "."):
            raise InputError("no model file chosen: pick a .safetensors model (from training or `xrayseg init-model`)")
        read_model_info(path)  # a folder, a FIFO, a missing file: the core names what it is (QA: "no model chosen")
        return path

    def _show_volume_fields(self, layer: Any = None) -> None:
        """A 2D image layer has no slice axis nor other axes to fuse: their fields are hidden (QA, 2D workflows)."""
        volume = layer is None or getattr(layer, "ndim", 3) > 2
        self._axis.visible = self._axes.visible = volume

    def _settings(self, ndim: int) -> dict[str, Any]:
        """The options every input shares (a 2D image is one slice: axis 0)."""
        return {
            "axis": 0 if ndim == 2 else int(self._axis.value),
            "tile": int(self._tile.value) or "auto",
            "overlap": float(self._overlap.value),
            "batch": int(self._batch.value),
            "device": str(self._device.value),
            "precision": str(self._precision.value),
            "pyramid": bool(self._pyramid.value),
            "axes": self._axes.value or None,
            "confidence": self._confidence.value or None,
            "tta": int(self._tta.value),
            "nodata": nodata_value(self._nodata.value),
        }

    def _inputs(self) -> dict[str, Any]:
        """Validate and snapshot everything the job needs, on the main thread."""
        from ..core.errors import InputError

        layer = self._image.value
        model = self._model()
        info = model.info if hasattr(model, "info") else read_model_info(model)
        data = layer_array(layer, "image", channels=info.channels > 1)
        ch = _channel_axis(layer, data, info)
        ndim = data.ndim - (ch is not None)  # spatial dimensions
        out = str(self._out.value) if str(self._out.value) not in ("", ".") else None
        resume = False
        if out is not None and Path(out).exists():
            from ..core.writer import resume_hint

            # a run cancelled into this path: Segment again finishes it (segment checks it is the same
            # image, model and settings, and keeps the slabs done); anything else stays refused
            resume = bool(resume_hint(Path(out)))
            if not resume:
                raise InputError(f"{out} exists: choose a new zarr path (nothing is overwritten silently)")
        if self._pyramid.value and out is None:
            raise InputError("a multiscale pyramid is written to zarr: choose a path under 'Save to zarr'")
        voxel, unit = self._voxel.value(ndim)
        return {
            "image": data,
            "model": model,
            **self._settings(ndim),
            "out": out,
            **({"resume": True} if resume else {}),
            "voxel_size": voxel,
            "unit": None if voxel is None else unit,
            **({"channel_axis": ch} if ch is not None else {}),
            **({"origin": origin} if (origin := _origin(layer, ch)) is not None else {}),
        }

    def _inputs_many(self) -> dict[str, Any]:
        """Snapshot every selected Image layer (in layer-list order) and the shared options."""
        from ..core.errors import InputError

        layers = [la for la in self._viewer.layers if la in self._viewer.layers.selection]
        layers = [la for la in layers if isinstance(la, napari.layers.Image)]
        if not layers:
            raise InputError("no image layer selected: select Image layers in the layer list (Ctrl/Shift-click)")
        model = self._model()
        out = str(self._out.value) if str(self._out.value) not in ("", ".") else None
        if self._pyramid.value and out is None:
            raise InputError("a multiscale pyramid is written to zarr: choose a folder under 'Save to zarr'")
        names = [_file_name(la.name) for la in layers]
        info = model.info if hasattr(model, "info") else read_model_info(model)
        multi = info.channels > 1
        images = {n: layer_array(la, f"image {la.name!r}", channels=multi) for n, la in zip(names, layers)}
        own: dict[str, dict[str, Any]] = {}  # each output records its layer's voxel size and origin
        for n, la, arr in zip(names, layers, images.values()):  # each layer's channels first, as for one (review)
            ch = _channel_axis(la, arr, info)
            voxel = layer_voxel_size(la)
            own[n] = {"voxel_size": None if voxel is None else tuple(voxel[0][-3:]), "unit": voxel and voxel[1]}
            if (origin := _origin(la, ch)) is not None:
                own[n]["origin"] = origin
        settings = self._settings(max(a.ndim for a in images.values()))
        return {
            "inputs": images,
            "model": model,
            "out_dir": out,
            "fmt": "zarr",
            **settings,
            "per_input": own,
            "layers": dict(zip(names, layers)),
        }

    def _start_many(self, kwargs: dict[str, Any]) -> None:
        layers = kwargs.pop("layers")
        added: set[str] = set()

        def add(res: Any) -> None:
            if res is None or res.name in added or res.status not in ("done", "skipped"):
                return
            added.add(res.name)
            own = layer_voxel_size(layers[res.name])  # the layer's placement and units for its result
            opts = {**kwargs, "out": res.output, "voxel_size": own[0] if own else None, "unit": own[1] if own else None}
            opts["axis"] = 0 if len(res.shape or ()) == 2 else kwargs["axis"]
            self._add_result(res.labels, layers[res.name], opts)

        def returned(summary: Any) -> None:  # a late progress record may be dropped: add what is missing
            for res in summary.results:
                add(res)
            failed = [f"{layers[r.name].name}: {r.message}" for r in summary.failed]
            if failed:
                show_warning(f"{len(failed)} of {len(summary.results)} failed: " + "; ".join(failed))
            show_info(f"segmented {len(added)} of {len(summary.results)} image layers")

        def cancelled(exc: Any) -> None:  # layers of the inputs finished before the cancel stay
            for res in getattr(exc.result, "results", []):
                add(res)
            show_info(f"Segmenting: cancelled after {len(added)} of {len(layers)} image layers")

        named = {id(kwargs["inputs"][n]): layer_source(la) for n, la in layers.items()}
        self.runner.start(
            _named_job(iter_segment_many, named),
            desc=f"Segmenting {len(layers)} image layers",
            total=1000 * len(layers),
            on_yielded=lambda p: add(p.info.get("result")),  # a layer per input as soon as it is done
            on_returned=returned,
            on_cancelled=cancelled,
            **kwargs,
        )

    def _add_result(self, result: Any, layer: Any, kwargs: dict[str, Any]) -> None:
        labels, conf = result if kwargs["confidence"] else (result, None)
        multiscale = False
        if kwargs["out"] is not None:  # back the layer by the store (lazily), not a copy in RAM
            import dask.array as da

            from ..core.writer import output_levels

            levels = [da.from_zarr(a) for a in output_levels(kwargs["out"])]
            labels, multiscale = (levels, True) if len(levels) > 1 else (levels[0], False)
        base, removed = result_base(self._viewer, layer)
        if removed:
            show_warning(removed)
        name = unique_name(self._viewer, f"{base} labels")
        model = kwargs["model"]
        info = model.info if hasattr(model, "info") else read_model_info(model)
        from ..core.units import image_label_properties
        from ._layers import label_colormap

        features = label_features(dict(zip(info.classes, info.class_names)))
        ch = kwargs.get("channel_axis")
        if ch is None and info.channels > 1:  # every selected layer: the axis segment() read each one's channels on
            from ..core.channels import resolve_channel_axis

            ch = resolve_channel_axis(tuple(layer_array(layer, channels=True).shape), info.channels, info.channel_axis)
        where = _where(layer, kwargs["voxel_size"], kwargs["unit"], ch)
        colors = image_label_properties(info.classes, info.class_names)["colors"]  # as written to the files
        self._viewer.add_labels(
            labels,
            name=name,
            multiscale=multiscale,
            colormap=label_colormap(colors),
            **where,
            features=features,
            metadata={
                "napari_xrayseg": {
                    "source": base,
                    "axis": kwargs["axis"],
                    "axes": kwargs["axes"],
                    "tta": kwargs["tta"],
                    "model": str(kwargs["model"]),
                    "trained_on": _trained_on(info, kwargs.get("image"), layer),  # Evaluate scores the rest apart
                    "provenance": _provenance(layer, model),
                }
            },
        )
        if conf is not None:
            kind = kwargs["confidence"]
            cname = unique_name(self._viewer, f"{base} {kind}")
            # maxprob: bright = sure; entropy: bright = unsure (annotate there next)
            self._viewer.add_image(
                conf,
                name=cname,
                colormap="magma",
                contrast_limits=(0.0, 1.0),
                opacity=0.7,
                blending="translucent",
                **where,
                metadata={"napari_xrayseg": {"source": base, "confidence": kind}},
            )
        done = f"segmented {base} into {name!r}"
        self._info.value = done + (f", saved to {kwargs['out']}" if kwargs["out"] is not None else "")
        show_info(done)


def _channel_axis(layer: Any, data: Any, info: Any) -> int | None:
    """The channel axis of a multi-channel model's image layer (None for a one-channel model).

    Refused off the first axis (an RGB layer's colours aside): napari lays a layer with fewer axes over
    the last ones of the image, so a Z,Y,X result of a Z,C,Y,X layer would lie over C,Y,X (QA: drawn
    nowhere, at the channel axis's scale).
    """
    from ..core.channels import resolve_channel_axis
    from ..core.errors import InputError

    if info.channels == 1:
        return None
    ch = resolve_channel_axis(tuple(data.shape), info.channels, info.channel_axis)
    if ch != 0 and not getattr(layer, "rgb", False) and data.shape[ch] == info.channels:
        raise InputError(
            f"layer {layer.name!r} (shape {tuple(data.shape)}) has its {info.channels} channels on axis {ch}: napari "
            "lays the result over the image's last axes, so put the channels first, in napari's console "
            f"viewer.add_image(np.moveaxis(viewer.layers[{layer.name!r}].data, {ch}, 0), name={layer.name + ' CZYX'!r})"
            " (give it the image's scale without the channel axis's)"
        )
    return ch


def _origin(layer: Any, channel_axis: int | None) -> tuple[float, ...] | None:
    """The image layer's translate (without a channel axis) as the saved output's origin; None at 0.

    Rotated or sheared layers record none: an origin alone would not place the output.
    """
    from ._layers import spatial_placement

    where = spatial_placement(layer, channel_axis)
    if any(k in where for k in ("rotate", "shear", "affine")):
        return None
    t = tuple(float(v) for v in where["translate"])[-3:]
    return t if any(t) else None


#: Names Windows keeps for devices, whatever the extension (``aux.tif`` is the AUX device there).
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"{d}{i}" for d in ("COM", "LPT") for i in "123456789¹²³")}


def _file_name(name: str) -> str:
    """A layer name as a file name: path separators and other awkward characters become ``_``.

    A Windows device name (``aux``, ``con``, ``COM1``) gets a ``_`` too: a batch output ``aux.tif``
    could not be written there (QA).

    >>> _file_name("a/b: c"), _file_name("aux"), _file_name("Con.scan"), _file_name("auxiliary")
    ('a_b_ c', 'aux_', 'Con_.scan', 'auxiliary')
    """
    import re

    safe = re.sub(r"[^\w.\-\[\] ]", "_", name).strip(" .") or "image"
    stem, dot, rest = safe.partition(".")
    return f"{stem}_{dot}{rest}" if stem.strip().upper() in _WINDOWS_DEVICES else safe  # "aux .scan" is AUX too


def _where(layer: Any, voxel_size: Any, unit: str | None, channel_axis: int | None = None) -> dict[str, Any]:
    """Scale, units and translate of a result: the voxel size given (as written to the outputs), else the image's.

    The image layer's channel axis (a multi-channel model's) has no counterpart in the result.
    """
    from ._layers import physical_placement, spatial_placement

    where = spatial_placement(layer, channel_axis)
    if voxel_size is not None:
        own = tuple(where["scale"])
        where.update(physical_placement(voxel_size, unit, len(voxel_size)))
        if tuple(where["scale"]) != tuple(float(s) for s in own):
            show_warning(
                f"the result uses voxel size {tuple(voxel_size)} {unit}, the image layer {tuple(layer.scale)}: "
                "they are drawn at different sizes; set the image layer's scale to match"
            )
    return where


def _named_job(job: Any, named: dict[int, dict[str, Any]]) -> Any:
    """``job`` (a generator function) run with its input arrays named as the layers they are read from.

    The saved store's provenance then names the layer and its file, not a ``dask.Array`` (QA).
    """
    from ..core.provenance import inputs_named

    def run(**kwargs: Any) -> Any:
        with inputs_named(named):  # set in the worker thread, where the job runs
            return (yield from job(**kwargs))

    return run


def _provenance(layer: Any, model: Any) -> dict[str, Any]:
    """When and by which software the layer's labels were made, from which image layer and model file."""
    import os

    from ..core.provenance import absolute_path, file_sha256, provenance

    path = model if isinstance(model, (str, os.PathLike)) else getattr(model, "path", None)
    # as the saved store names it: the file and the SHA-256 of its bytes (kept per path, size and time)
    described = {"path": absolute_path(path), "sha256": file_sha256(path)} if path else None
    return provenance({"image": layer_source(layer), "model": described})


def _trained_on(info: Any, image: Any, layer: Any) -> dict[str, Any] | None:
    """:func:`~napari_xrayseg.core.inference.trained_on` of the image segmented (one of several layers: its data)."""
    from ..core.io import as_input

    try:
        return trained_on(info, as_input(layer if image is None else image))
    except XraysegError:  # an image the digest cannot read as a volume: nothing recorded
        return None
