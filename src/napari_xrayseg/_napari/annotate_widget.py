"""Annotate widget: the annotation loop after a first training.

Preview the shown slice with the current model, get the next slices to annotate
(where the model contradicts itself, spread out), copy a slice's prediction into the annotations to paint only
its mistakes, and continue training from the current model. Console equivalent::

    from napari_xrayseg import continue_training, load_model, predict_slice, suggest_slices
    image, labels = viewer.layers["image"].data, viewer.layers["labels"].data
    model = load_model("model.safetensors")
    preview = predict_slice(image, model, 12, axis=0)          # one slice, labels
    next_slices = suggest_slices(image, model, labels, count=5)  # best first
    model = continue_training(image, labels, model, out="model-r1.safetensors")
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, PushButton, SpinBox
from napari.utils.notifications import show_info

import napari

from ..core.annotation import (
    PAINTED_SHARE,
    SliceRanking,
    iter_continue_training,
    iter_rank_slices,
    painted_slices,
    predict_slice,
    slice_normalization,
)
from ..core.errors import Cancelled, InputError, XraysegError
from ..core.inference import recorded_nodata
from ..core.models import Model, load_model, save_or_rescue
from ..core.normalize import mark_missing, model_nodata
from ..core.progress import Progress
from ._jobs import JobRunner, JobWidget, LatestRunner, show_warning, text_label
from ._layers import (
    follow_new_annotations,
    label_features,
    labels_snapshot,
    layer_array,
    layer_choices,
    model_labels_warning,
    nodata_field,
    nodata_value,
    placement,
    slice_offset,
    unique_name,
)
from ._recent import offer_models, take_offer

# The whole slice within the memory budget, halo'd tiles beyond it: the segmentation's own result. As fast as one
# window per slice ("slice") at 512²; at 2048² 1.2x (CPU time) to 2x (wall) faster with 0.45 GB less peak memory
# (QA: a 2048² preview took a process to 6 GB; benchmarks/preview.py, benchmarks/preview_memory.py)
PREVIEW_TILE = "auto"

log = logging.getLogger(__name__)


def _preview(image: Any, model: Model, index: int, axis: int, norms: dict[Any, Any], norm_key: Any) -> np.ndarray:
    """The preview job (worker thread): the image's intensity bounds once per (model, image), then the slice."""
    from ..core.said import unseen

    with unseen():  # a preview's warnings reach no notification: a later job says them
        if norm_key not in norms:
            norms[norm_key] = slice_normalization(image, model)
        return predict_slice(image, model, index, axis=axis, tile=PREVIEW_TILE, normalization=norms[norm_key])


SCORE_AXIS = {"orthoplane": "disagreement (axes)", "flips": "disagreement (flips)"}  # y label per measure


def _gap_picks(ranking: SliceRanking) -> set[int]:
    """The suggested slices picked as the middle of a gap (no slice's score stood out)."""
    return {s for s, why in zip(ranking.suggested, ranking.reasons) if why == "gap"}


def _first(ranking: SliceRanking, gap: bool) -> int | None:
    """The first suggested slice picked by the gap rule (``gap``) or by its score: it carries the legend entry."""
    gaps = _gap_picks(ranking)
    return next((s for s in ranking.suggested if (s in gaps) == gap), None)


class UncertaintyPlot(Container):
    """Per-slice score of the model (disagreement or uncertainty), annotated slices and suggestions, in the dock."""

    def __init__(self) -> None:
        super().__init__(labels=False)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.2), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(170)
        self.ax = self.figure.add_subplot(111)
        self.native.layout().addWidget(self.canvas)
        self.draw(None)

    def draw(self, ranking: SliceRanking | None, current: int | None = None) -> None:
        """Show ``ranking`` (nothing yet: an empty plot with a hint); mark slice ``current``."""
        ax = self.ax
        ax.clear()
        ax.set_xlabel("slice")
        label = SCORE_AXIS.get(ranking.measure, "uncertainty") if ranking is not None else "score"
        if ranking is not None and ranking.novelty is not None:
            label = label.split(" (")[0] + " x novelty"  # short: the plot is small
        ax.set_ylabel(label)
        if ranking is None:
            ax.text(
                0.5, 0.5, "Suggest slices to rank them", ha="center", va="center", transform=ax.transAxes, color="gray"
            )
        else:
            u = ranking.score  # what the slices are ranked by
            x = np.arange(len(u))
            ax.plot(x, u, color="tab:blue", marker=".", markersize=3, linewidth=1, label="model score")
            for j, a in enumerate(ranking.annotated):
                ax.axvline(a, color="tab:green", alpha=0.6, linewidth=2, label="annotated" if j == 0 else None)
            if len(u) > 2 and ranking.spread > 0:  # the ends count as annotated for the spreading penalty
                w = min(ranking.spread, len(u) / 4)
                for lo, hi in ((-0.5, w - 0.5), (len(u) - w - 0.5, len(u) - 0.5)):
                    ax.axvspan(
                        lo,
                        hi,
                        color="0.5",
                        alpha=0.15,
                        lw=0,
                        label="volume ends (count as annotated)" if lo < 0 else None,
                    )
            gaps = _gap_picks(ranking)
            for rank, s in enumerate(ranking.suggested, 1):
                gap = s in gaps
                ax.plot(
                    [s],
                    [u[s]],
                    "o",
                    color="tab:red",
                    markerfacecolor="none" if gap else "tab:red",
                    markersize=6,
                    label=("suggested: middle of a gap" if gap else "suggested") if s == _first(ranking, gap) else None,
                )
                ax.annotate(
                    str(rank),
                    (s, u[s]),
                    textcoords="offset points",
                    xytext=(0, 5),
                    ha="center",
                    fontsize=7,
                    color="tab:red",
                )
            if current is not None:
                ax.axvline(current, color="black", linestyle=":", linewidth=1)
            ax.set_xlim(-0.5, len(u) - 0.5)
            finite = u[np.isfinite(u)]
            if finite.size:  # zoom on the spread of the scores: their differences rank the slices
                lo, hi = float(finite.min()), float(finite.max())
                pad = max(hi - lo, 1e-3) * 0.25
                ax.set_ylim(lo - pad, hi + 2 * pad)
            ax.legend(loc="best", fontsize="x-small")
        self.canvas.draw_idle()


def _data_ref(data: Any) -> Any:
    """A reference to a layer's data that does not keep it alive: a weak one, else its ``id`` (a multiscale list)."""
    try:
        return weakref.ref(data)
    except TypeError:
        return id(data)


def _is_data(ref: Any, data: Any) -> bool:
    """Whether :func:`_data_ref` ``ref`` refers to ``data``."""
    if isinstance(ref, weakref.ref):
        return ref() is data
    return ref is not None and ref == id(data)


class AnnotateWidget(JobWidget):
    """Dock widget: preview, suggest the next slice, correct, continue training."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.model: Model | None = None
        self.ranking: SliceRanking | None = None
        self.preview_layer: Any = None
        self._previewed: Any = lambda: None  # (a weak reference to) the image layer the preview is of
        self._last: tuple[Any, np.ndarray] | None = None  # (key, labels) of the latest preview computed
        self._next = 0  # position in ranking.suggested of the next "go to"
        self._round_said: str | None = None  # the summary of the round the suggestions being ranked follow
        self._norms: dict[Any, Any] = {}  # (model id, (image layer id, data id), no-data) -> bounds, by previews
        # image layer id -> the data those bounds and the preview were made from (a weak reference: a removed
        # image's volume is not held)
        self._data_of: dict[int, Any] = {}
        self._image = ComboBox(label="Image", choices=layer_choices(viewer, napari.layers.Image), nullable=False)
        self._labels = ComboBox(
            label="Annotations", choices=layer_choices(viewer, napari.layers.Labels, annotations=True), nullable=False
        )
        self._model_file = FileEdit(
            label="Model",
            mode="r",
            filter="*.safetensors",
            value="",
            tooltip="a trained model (e.g. saved by Train); rounds are saved beside it",
        )
        self._live = CheckBox(label="Live preview of the shown slice", value=True)
        self._nodata = nodata_field()
        self._nodata.changed.connect(self._on_nodata)
        self._count = SpinBox(label="Suggestions", min=1, max=100, value=5)
        self._count.tooltip = "how many slices 'Suggest slices' lists for you to annotate next"
        self._suggest = PushButton(text="Suggest slices")
        self._go = PushButton(text="Go to next suggestion")
        self._copy = PushButton(text="Copy prediction into annotations")
        self._copy.tooltip = (
            "copy the preview of this slice into the annotations where they are empty (0); "
            "undo with Ctrl+Z on the annotations layer"
        )
        self._fraction = FloatSpinBox(label="Round budget", min=0.05, max=2.0, step=0.05, value=0.25)
        self._fraction.tooltip = (
            "times the first training: 'Continue training' runs for this share of the first training's time "
            "(0.25: a quarter of it)"
        )
        self._train = PushButton(text="Continue training")
        self._status = text_label("choose a trained model")
        self.plot = UncertaintyPlot()
        self.runner = JobRunner(self._train, "Continue training", status=self._status)  # and how it ended
        self.suggest_runner = JobRunner(self._suggest, "Suggest slices", status=self._status)
        self.preview_runner = LatestRunner("Preview")
        self._model_file.changed.connect(self._on_model_file)
        self._live.changed.connect(lambda _v: self.refresh_preview())
        self._suggest.changed.connect(lambda: self.suggest_runner.toggle(self._suggest_inputs, self._start_suggest))
        self._go.changed.connect(self.go_to_next)
        self._copy.changed.connect(self.copy_prediction)
        self._train.changed.connect(lambda: self.runner.toggle(self._train_inputs, self._start_train))
        self._image.changed.connect(self._on_image)
        dims_events = (viewer.dims.events.current_step, viewer.dims.events.order, viewer.dims.events.ndisplay)
        for event in dims_events:
            event.connect(self._on_view)

        preview, on_view = self.preview_runner, self._on_view  # not through self: it may be half gone by then

        hooked = [True]

        def unhook(*_: Any) -> None:  # the dock closed: no more previews for a widget that is gone
            try:
                runner = preview
            except NameError:  # the garbage collector cleared this closure with its widget: nothing left to stop
                return
            runner.shutdown()
            if hooked:
                hooked.clear()
                for event in dims_events:
                    event.disconnect(on_view)

        self._train.native.destroyed.connect(unhook)
        self.on_close(unhook)
        self.extend(
            [
                self._image,
                self._labels,
                self._model_file,
                self._nodata,
                self._live,
                self._count,
                self._suggest,
                self.plot,
                self._go,
                self._copy,
                self._fraction,
                self._train,
                self._status,
            ]
        )
        self.span(self.plot, self._status)  # the whole width: a readable plot, the suggestions in fewer lines
        self._follow_layers(viewer)
        offer_models(self._offer_model)  # the model the Train widget saved last
        follow_new_annotations(viewer, self._labels, self)  # the layer a user adds to paint on

    # ------------------------------------------------------------------ model
    def set_model(self, model: Model) -> None:
        """Use ``model`` from now on (also for the console: ``widget.set_model(train(...))``)."""
        if not model.info.trained:
            raise InputError("the model was never trained: train it first (Train widget), then annotate with it")
        self.model = model
        self._last = None
        recorded = model.info.train.get("nodata")
        if recorded is not None and not str(self._nodata.value).strip():  # the model's no-data value: the
            self._nodata.value = np.format_float_positional(float(recorded), trim="-")  # every digit: it must match
        rounds = len(model.info.train.get("rounds") or [None]) - 1  # round 0 is the first training
        after = "first training" if rounds == 0 else f"first training + {rounds} round{'s' * (rounds > 1)}"
        self._status.value = f"model: {Path(model.path).name if model.path else 'in memory'} ({after})"
        self.refresh_preview()

    def _offer_model(self, path: Path) -> None:
        """Take ``path`` (a model just trained) where no model was chosen yet, or the last one offered is shown."""
        take_offer(self, path)

    def _on_model_file(self, value: Any) -> None:
        path = str(value)
        if path in ("", "."):
            return
        try:
            self.set_model(load_model(path))
        except XraysegError as e:
            show_warning(str(e))

    # ------------------------------------------------------------------ where the viewer is
    def current_slice(self) -> tuple[int, int] | None:
        """(axis, index) of the slice the viewer shows of the image, or None (3D view, no image)."""
        layer = self._image.value
        if layer is None or self._viewer.dims.ndisplay != 2:
            return None
        if layer.ndim == 2:
            return (0, 0)
        if layer.ndim != 3:
            return None
        hidden = list(self._viewer.dims.not_displayed)[-layer.ndim :]
        world_axis = hidden[-1] if hidden else None
        if world_axis is None:
            return None
        axis = world_axis - (self._viewer.dims.ndim - layer.ndim)
        if not 0 <= axis < 3:
            return None
        pos = layer.world_to_data(self._viewer.dims.point)
        index = int(np.clip(round(float(pos[axis])), 0, layer.data.shape[axis] - 1))
        return axis, index

    def _key(self) -> tuple[Any, ...] | None:
        where = self.current_slice()
        if where is None or self.model is None:
            return None
        layer = self._image.value
        live = {id(lay) for lay in self._viewer.layers}
        if not live.issuperset(self._data_of):  # layers removed: their entries go (QA s44: each held its volume)
            self._data_of = {k: v for k, v in self._data_of.items() if k in live}
            self._norms = {k: v for k, v in self._norms.items() if k[1][0] in live}
        if not _is_data(self._data_of.get(id(layer)), layer.data):  # new data in the layer (layer.data = ...): its
            # bounds and preview go; they were the old data's, and "Copy prediction" pasted the old preview
            self._data_of[id(layer)] = _data_ref(layer.data)
            self._norms = {k: v for k, v in self._norms.items() if k[1][0] != id(layer)}
            self._last = None
        # the data's identity too: a preview of the old data finishing late is then stale, not shown
        return (id(self.model), (id(layer), id(layer.data)), *where)

    def _image_data(self, *, strict: bool = True) -> Any:
        """The image layer's data, its voxels equal to the *No-data value* marked as without data (NaN).

        ``strict=False`` (previews, while the value is being typed): an unreadable value is none.
        """
        data = layer_array(self._image.value, "image")
        if data.ndim > 3 or (self.model is not None and self.model.info.channels > 1):
            # QA: a 4D layer got no preview and no reason, and Suggest a shape mismatch
            raise InputError(
                f"image {self._image.value.name!r} (shape {tuple(data.shape)}) has channels, which the annotation "
                "loop does not read yet: paint on one channel's layer, train and segment the channels in the Train "
                "and Segment widgets"
            )
        try:  # empty: the model's value, as its rounds and the Segment widget take it (review s45)
            recorded = recorded_nodata(self.model) if self.model is not None else None  # a number or None
            return mark_missing(data, model_nodata(nodata_value(self._nodata.value), recorded))
        except InputError:
            if strict:
                raise
            return data

    def _on_nodata(self, *_: Any) -> None:
        self._last = None  # the preview and its intensity bounds change with it
        self._norms.clear()
        self.refresh_preview()

    # ------------------------------------------------------------------ preview
    def _on_view(self, *_: Any) -> None:
        self.refresh_preview()

    def _on_image(self, _value: Any = None) -> None:
        """Another image chosen, or the previewed one removed: its preview goes with it, then preview anew.

        The preview layer is the widget's own (never the user's): left behind it showed one slice of an image
        that was no longer there, named after it (QA).
        """
        p = self.preview_layer
        if p is not None and self._previewed() is not self._image.value:
            self.preview_layer = None
            if p in self._viewer.layers:
                self._viewer.layers.remove(p)
        self.refresh_preview()

    def refresh_preview(self) -> None:
        """Ask for the preview of the shown slice (returns at once; the result comes from a worker)."""
        if not self._live.value:
            return
        self._request(None)

    def _request(self, then: Any) -> None:
        key = self._key()
        layer = self._image.value
        if key is None and layer is not None and layer.ndim == 4 and self.model is not None:
            try:  # a 4D layer has no slice to preview: say why (the model may take channels too)
                self._image_data(strict=False)
            except XraysegError as e:
                self._status.value = f"no preview: {e}"
        if key is None:
            return
        if self._last is not None and self._last[0] == key:  # already computed: no work
            self._show(key, self._last[1])
            if then is not None:
                then(key, self._last[1])
            return

        def done(k: Any, lab: np.ndarray) -> None:
            self._last = (k, lab)
            if k == self._key():  # a stale result (the user moved on) is not shown
                if self._live.value:
                    self._show(k, lab)
            if then is not None:  # but what the user asked of it is done: a copy into the slice clicked
                then(k, lab)

        try:
            image = self._image_data(strict=False)
        except XraysegError as e:  # an RGB or 4D layer: said in the status line, not raised at every slider move
            self._status.value = f"no preview: {e}"
            return
        norm_key = (*key[:2], str(self._nodata.value).strip())  # bounds per model, image and no-data value
        self.preview_runner.request(
            key,
            _preview,
            done,
            image=image,
            model=self.model,
            index=key[3],
            axis=key[2],
            norms=self._norms,
            norm_key=norm_key,
            keep=then is not None,  # a copy is not dropped for the next slider move
        )

    def _show(self, key: tuple[Any, ...], lab: np.ndarray) -> None:
        layer = self._image.value
        axis, index = key[2], key[3]
        data = lab if layer.ndim == 2 else np.expand_dims(lab, axis)
        where = placement(layer)  # rotated, sheared images too: the slice lies where the image's does
        translate = slice_offset(layer, axis, index) if layer.ndim == 3 else tuple(layer.translate)
        p = self.preview_layer
        if p is None or p not in self._viewer.layers or p.ndim != data.ndim:
            name = unique_name(self._viewer, f"{layer.name} preview")
            info = self.model.info if self.model is not None else None
            self.preview_layer = self._viewer.add_labels(
                data,
                name=name,
                **{**where, "translate": translate},
                opacity=0.45,
                features=label_features(dict(zip(info.classes, info.class_names))) if info is not None else None,
                # marked as it is added: the layer lists refresh at once (QA: it became the "Annotations" choice)
                metadata={"napari_xrayseg": {"preview_of": layer.name, "axis": axis, "index": index}},
            )
            self._viewer.layers.selection.active = self._labels.value or self.preview_layer
        else:
            p.translate = tuple(translate)
            p.data = data
        self.preview_layer.metadata["napari_xrayseg"] = {"preview_of": layer.name, "axis": axis, "index": index}
        self._previewed = weakref.ref(layer)  # not the layer itself: a removed image's data is not held

    # ------------------------------------------------------------------ correct
    def copy_prediction(self) -> None:
        """Copy the shown slice's prediction into the annotations where they are 0 (one undo step)."""
        try:
            labels = self._writable_labels()
        except XraysegError as e:
            show_warning(str(e))
            return
        if self._key() is None:
            show_warning("show a slice of the image in 2D with a model chosen, then copy its prediction")
            return
        self._request(lambda key, lab: self._paste(labels, key, lab))

    def _writable_labels(self) -> Any:
        labels, image = self._labels.value, self._image.value
        if labels is None or image is None:
            raise InputError("choose the image and its annotations (a Labels layer) first")
        if tuple(labels.data.shape) != tuple(image.data.shape):
            raise InputError(
                f"annotations shape {tuple(labels.data.shape)} does not match image shape "
                f"{tuple(image.data.shape)}: pick the Labels layer painted on this image"
            )
        if not isinstance(labels.data, np.ndarray):
            raise InputError(
                f"annotations layer {labels.name!r} is read from its file, not held in memory (what is painted "
                "on it is not saved to the file): make an editable copy, in napari's console "
                f"viewer.add_labels(np.asarray(viewer.layers[{labels.name!r}].data), name={labels.name + ' edit'!r}), "
                "choose it as the annotations and save it when done"
            )
        return labels

    def _paste(self, labels: Any, key: tuple[Any, ...], lab: np.ndarray) -> None:
        axis, index = key[2], key[3]
        current = np.take(labels.data, index, axis=axis) if labels.ndim == 3 else labels.data
        mask = (current == 0) & (lab != 0)
        idx = list(np.nonzero(mask))
        if labels.ndim == 3:
            idx.insert(axis, np.full(len(idx[0]), index, dtype=np.intp))
        if len(idx[0]) == 0:
            show_info("nothing to copy: this slice is already annotated wherever the model predicts")
            return
        with labels.block_history():  # one undo step for the whole slice
            labels.data_setitem(tuple(idx), lab[mask])
        self._status.value = f"copied {int(mask.sum())} pixels of slice {index} (axis {axis}); Ctrl+Z undoes"
        self._refresh_ranking(labels, axis, index)

    def _refresh_ranking(self, labels: Any, axis: int, current: int) -> None:
        """Redraw the ranking with the slices annotated now (a copied slice turns green, leaves the suggestions)."""
        r = self.ranking
        if r is None or labels is None or axis != r.axis:
            return
        sl = np.take(labels.data, current, axis=r.axis) if labels.ndim == 3 else labels.data
        if np.count_nonzero(sl) < PAINTED_SHARE * sl.size:  # this slice only: the volume is not read again
            return
        keep = [k for k, s in enumerate(r.suggested) if s != current]
        self.ranking = dataclasses.replace(
            r,
            annotated=sorted({*r.annotated, int(current)}),
            suggested=[r.suggested[k] for k in keep],
            reasons=[r.reasons[k] for k in keep] if len(r.reasons) == len(r.suggested) else r.reasons,
        )
        self.plot.draw(self.ranking, current)

    # ------------------------------------------------------------------ suggest
    def _suggest_inputs(self) -> dict[str, Any]:
        if self.model is None:
            raise InputError("choose a trained model first")
        image = self._image_data()
        labels = self._labels.value
        lab = None
        if labels is not None:
            lab = labels_snapshot(labels, image, "annotations")
        where = self.current_slice()
        axis = where[0] if where is not None else int(self.model.info.train.get("axis", 0))
        return {"image": image, "model": self.model, "labels": lab, "axis": axis, "count": int(self._count.value)}

    def _start_suggest(self, kwargs: dict[str, Any]) -> None:
        self._round_said = None  # a round's summary goes with the suggestions ranked right after it
        self._status.value = "ranking slices..."
        self.suggest_runner.start(
            iter_rank_slices, desc="Suggesting slices", total=1, on_returned=self._ranked, **kwargs
        )

    def _ranked(self, ranking: SliceRanking) -> None:
        self.ranking = ranking
        self._next = 0
        where = self.current_slice()
        self.plot.draw(ranking, where[1] if where is not None else None)
        gaps = _gap_picks(ranking)
        note = ""
        if gaps:
            note = f" ({', '.join(map(str, sorted(gaps)))}: no slice stands out, so the middle of the widest gap)"
        n, w = len(ranking.score), max(1, int(round(ranking.spread)))
        ends = [i for i in [*range(min(w, n)), *range(max(n - w, 0), n)] if np.isfinite(ranking.score[i])]
        inner = ranking.score[w : n - w] if n > 2 * w else ranking.score
        high = [i for i in ends if ranking.score[i] > np.nanmax(inner)] if np.isfinite(inner).any() else []
        if high and not set(high) & set(ranking.suggested):  # ends outscore the rest, none suggested: say why
            note += (
                "; the end slices score highest, but an end is seen from one side and teaches the model "
                "least about the rest, so ends are suggested only when they stand out much more"
            )
        front = f"{self._round_said}; " if self._round_said else ""
        if not ranking.suggested:  # as the command line says it
            self._status.value = front + (
                f"nothing to suggest: every slice along axis {ranking.axis} is annotated (1 % or more of it painted, "
                "planes painted along the other axes left out); annotate along another axis, or continue training"
            )
            return
        best = ", ".join(map(str, ranking.suggested))
        self._status.value = f"{front}next slices to annotate (axis {ranking.axis}), best first: {best}{note}"

    def go_to_next(self) -> None:
        """Move the viewer to the next suggested slice that is still unannotated."""
        r = self.ranking
        if r is None or not r.suggested:
            show_info("no suggestions yet: press 'Suggest slices'")
            return
        labels = self._labels.value
        done: set[int] | None = None  # read only when a suggested slice holds paint (the volume, once)
        for _ in range(len(r.suggested)):
            s = r.suggested[self._next % len(r.suggested)]
            self._next += 1
            if labels is None or not np.take(labels.data, s, axis=r.axis).any():
                break
            if done is None:  # a stroke, or a plane along another axis crossing it, does not make it done
                done = set(painted_slices(labels.data, axis=r.axis))
            if s not in done:
                break
        else:
            show_info("every suggested slice is annotated now: continue training (its model suggests the next)")
            return
        self.show_slice(r.axis, s)
        self.plot.draw(r, s)

    def show_slice(self, axis: int, index: int) -> None:
        """Show slice ``index`` along ``axis`` of the image (in 2D, sliced along ``axis``)."""
        layer = self._image.value
        dims = self._viewer.dims
        world_axis = axis + dims.ndim - layer.ndim
        if dims.ndisplay != 2:
            dims.ndisplay = 2
        if world_axis not in dims.not_displayed:
            others = [d for d in dims.order if d != world_axis]
            dims.order = (*others[:-2], world_axis, *others[-2:])
        dims.set_point(world_axis, layer.translate[axis] + index * layer.scale[axis])

    # ------------------------------------------------------------------ continue training
    def _train_inputs(self) -> dict[str, Any]:
        if self.model is None:
            raise InputError("choose a trained model first")
        labels = self._writable_labels()
        image = self._image_data()
        if (warning := model_labels_warning(labels)) is not None:
            show_warning(warning)
        from ._voxel import layer_voxel_size

        voxel = layer_voxel_size(self._image.value)  # the image's, as the Train widget records it (not the start's)
        return {
            "image": image,
            "labels": labels.data.copy(),
            "model": self.model,
            "fraction": float(self._fraction.value),
            # the field's (already NaN in the image); empty: the model's, which continue_training keeps
            # "none": no value at all, not the first training's either
            **({"nodata": nodata_value(v, training=True)} if (v := self._nodata.value.strip()) else {}),
            **({"voxel_size": voxel[0][-image.ndim :], "unit": voxel[1]} if voxel else {}),
        }

    def _start_train(self, kwargs: dict[str, Any]) -> None:
        self._status.value = "training..."
        before = self.model
        model_file = str(self._model_file.value)

        def salvage(e: Cancelled) -> None:  # the dock or napari closed mid-round: keep the round as Cancel does
            model = getattr(e, "result", None)
            if model is not None and model is not before:
                path, why = save_or_rescue(model, self._round_path(model, model_file))
                said = f"continued training stopped as its window closed; saved to {path}"
                log.info("%s", said + (f" ({why})" if why else ""))

        self.runner.start(
            iter_continue_training,
            desc="Continue training",
            total=1,
            on_returned=lambda m: self._trained(m, before, model_file, cancelled=False),
            on_yielded=self._on_progress,
            on_cancelled=lambda e: self._trained(getattr(e, "result", None), before, model_file, cancelled=True),
            salvage=salvage,
            **kwargs,
        )

    def _on_progress(self, p: Progress) -> None:
        if "loss" in p.info:
            self._status.value = p.message

    def _round_path(self, model: Model, model_file: str | None = None) -> Path:
        """A new file beside the model's (models are never overwritten): NAME-rK.safetensors."""
        src = Path(str(self._model_file.value) if model_file is None else model_file)
        if str(src) in ("", "."):
            src = Path.cwd() / "model.safetensors"
        base, _, num = src.stem.rpartition("-r")
        stem = base if base and num.isdigit() else src.stem  # model-r1 -> model-r2, not model-r1-r2
        k = len(model.info.train.get("rounds") or [None]) - 1
        path = src.with_name(f"{stem}-r{k}.safetensors")
        n = 2
        while path.exists():
            path = src.with_name(f"{stem}-r{k} [{n}].safetensors")
            n += 1
        return path

    def _trained(self, model: Model | None, before: Model | None, model_file: str, *, cancelled: bool) -> None:
        """A round ended: save it beside the model it started from (``model_file``) and use it.

        A model chosen while the round ran is the user's choice: the round is saved (named after
        its own start) and said where, and the chosen model stays.
        """
        if model is None or model is before:
            msg = "training cancelled; keeping the model from before the round" if cancelled else "no change"
            self._status.value = msg
            show_info(msg)
            return
        try:  # a folder that refuses it (napari started from an app: the working folder is /): a rescue file
            path, why = save_or_rescue(model, self._round_path(model, model_file))
        except XraysegError as e:
            show_warning(f"could not save the new model: {e}")
            path = None
        else:
            if why is not None:
                show_warning(why)
        if self.model is not before:  # another model was chosen meanwhile: it stays
            msg = (
                f"the round on {Path(model_file).name} ended{' (cancelled)' if cancelled else ''}: saved to {path}; "
                f"the model chosen meanwhile, {Path(str(self._model_file.value)).name}, stays in use"
            )
            self._status.value = msg
            show_info(msg)
            return
        self.model = model
        self._last = None
        ranked = self.ranking is not None
        if ranked:  # the scores were the old model's
            self.ranking = None
            self.plot.draw(None)
        if path is not None:
            self._model_file.changed.disconnect(self._on_model_file)
            try:
                self._model_file.value = str(path)
            finally:
                self._model_file.changed.connect(self._on_model_file)
        rnd = model.info.train["rounds"][-1]
        val, which = model.info.validation
        msg = (
            f"round {rnd['round']}{' (cancelled)' if cancelled else ''}: {rnd.get('epochs_run')} epochs, "
            f"validation Dice {'n/a' if val is None else f'{val:.3f}'} ({which}); saved to {path}"
        )
        self._status.value = msg
        show_info(msg)
        self.refresh_preview()
        if ranked and not self.suggest_runner.running:  # the loop goes on: the new model's suggestions (QA s44)
            self._rank_after_round(msg)

    def _rank_after_round(self, said: str) -> None:
        """Rank the slices with the round's model, as 'Suggest slices' does, the round's summary kept in front."""
        try:
            kwargs = self._suggest_inputs()
        except XraysegError as e:  # e.g. the annotations layer was removed meanwhile: the user suggests later
            self._status.value = f"{said}; suggest slices again ({e})"
            return
        self._start_suggest(kwargs)
        self._round_said = said
        self._status.value = f"{said}; ranking slices with the new model..."


__all__ = ["AnnotateWidget", "UncertaintyPlot"]
