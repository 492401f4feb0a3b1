"""Evaluate widget: score a prediction Labels layer against a (sparse) ground-truth Labels layer.

Shows per-class Dice, IoU, precision, recall, F1, accuracy and volume fractions, the
confusion matrix and a per-slice Dice plot (click a slice to go there); adds an
error layer and exports the report as CSV and JSON.  The user's layers are never
modified.

Console equivalent::

    from napari_xrayseg import evaluate
    from napari_xrayseg.core.figures import error_map
    report = evaluate(viewer.layers["sample labels"].data, viewer.layers["truth"].data, axis=0)
    print(report)
    report.to_csv("report.csv"); report.to_json("report.json")
    viewer.add_labels(error_map(viewer.layers["sample labels"].data,
                                viewer.layers["truth"].data), name="errors")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton, Table
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Labels
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_info

from napari_xrayseg.core.errors import InputError, XraysegError
from napari_xrayseg.core.figures import ERROR_CODES, OVERLAY_COLORS, error_map, slice_dice_plot
from napari_xrayseg.core.metrics import Report, iter_evaluate

from ._jobs import JobRunner, JobWidget, show_error, show_warning, text_label
from ._layers import (
    export_csv_json,
    fit_table,
    layer_array,
    layer_class_names,
    looks_like_truth,
    made_by_model,
    never_annotations,
    placement,
    placement_mismatch,
    snapshot,
    unique_name,
    with_layers,
)
from ._voxel import voxel_size_or_guess

if TYPE_CHECKING:
    import napari

_SCORE_COLUMNS = (
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("accuracy", "acc 1-vs-rest"),  # as the CLI's table: the mean row is no share of voxels right (QA s45)
    ("voxels_truth", "voxels truth"),
    ("voxels_pred", "voxels pred"),
    ("volume_fraction_truth", "vol. frac. truth"),
    ("volume_fraction_pred", "vol. frac. pred"),
)

_ERROR_TOOLTIP = (
    "Add a Labels layer of the errors of the last evaluation, placed over the truth layer: "
    + "; ".join(f"{v} = {k}" for k, v in ERROR_CODES.items())
    + ". 0 = correct or not annotated. The encoding is also in the layer's metadata."
)

_TRUTH_WORDS = ("truth", "annot", "ground", "gt", "manual", "paint")


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"  # thousands separators; also keeps Qt from showing 5.3e+05
    return str(v)


class EvaluateWidget(JobWidget):
    """Dock widget: compare a prediction Labels layer with a ground-truth Labels layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.report: Report | None = None  # the last report, also for console use
        self._context: dict[str, Any] | None = None  # inputs of the last report
        self._pred = ComboBox(label="Prediction", choices=self._labels_choices, nullable=False)
        self._truth = ComboBox(label="Ground truth", choices=self._labels_choices, nullable=False)
        self._axis = ComboBox(
            label="Slice axis",
            choices=[("0 (Z: xy slices)", 0), ("1 (Y: xz slices)", 1), ("2 (X: yz slices)", 2)],
            value=0,
        )
        self._zero = CheckBox(text="Treat 0 as a class", value=False)
        self._zero.tooltip = (
            "Unchecked: truth 0 means 'not annotated' and only painted voxels are scored. "
            "Checked: every voxel is scored and 0 is a class."
        )
        self._physics = CheckBox(text="Microstructure error (fractions, surfaces, TPB)", value=False)
        self._physics.tooltip = (
            "also analyse prediction and truth on the box around the annotations (it must be fully "
            "annotated) and report each number's error in %; voxel size from the prediction layer's scale"
        )
        from napari_xrayseg.core.microstructure import tortuosity_available

        have_tau = tortuosity_available()
        self._tortuosity = CheckBox(text="with tortuosity (TauFactor; slow)", value=False, enabled=have_tau)
        self._tortuosity.tooltip = (
            "also each phase's tortuosity factor along z, y, x in prediction and truth (evaluate(microstructure=True) "
            "and xrayseg evaluate --physics compute it by default)"
            if have_tau
            else "needs TauFactor: pip install 'napari-xrayseg[physics]', then restart napari"
        )
        self._tortuosity.visible = False  # with the microstructure error only
        self._physics.changed.connect(lambda v: setattr(self._tortuosity, "visible", bool(v)))
        self._run = PushButton(text="Evaluate")
        self._summary = text_label("")
        self.runner = JobRunner(self._run, "Evaluate", status=self._summary)
        self._table = Table(label="Per class")
        self._table.read_only = True
        self._confusion = Table(label="Confusion")
        self._confusion.read_only = True
        self._confusion.tooltip = "rows = truth, columns = prediction (voxel counts)"
        self._figure = Figure(figsize=(4.0, 2.4), layout="constrained")
        self._canvas = FigureCanvasQTAgg(self._figure)
        self._canvas.setMinimumHeight(200)
        self._canvas.setToolTip("per-slice Dice: click a slice to show it in the viewer")
        self._canvas.mpl_connect("button_press_event", self._on_plot_click)
        self._plot_box = Container(labels=False)
        self._plot_box.native.layout().addWidget(self._canvas)
        self._marker: Any = None
        self._add_errors = PushButton(text="Add error layer")
        self._add_errors.tooltip = _ERROR_TOOLTIP
        self._export_path = FileEdit(label="Export to", mode="w", filter="*.csv *.json", value="")
        self._export_path.tooltip = "base path: writes <base>.csv and <base>.json, never overwrites"
        self._export = PushButton(text="Export CSV + JSON")
        self._run.changed.connect(self._on_run)
        self._add_errors.changed.connect(self._on_add_errors)
        self._export.changed.connect(self._on_export)
        self.extend(
            [
                self._pred,
                self._truth,
                self._axis,
                self._zero,
                self._physics,
                self._tortuosity,
                self._run,
                self._summary,
                self._table,
                self._confusion,
                self._plot_box,
                self._add_errors,
                self._export_path,
                self._export,
            ]
        )
        self.span(self._plot_box, self._summary)  # the whole width: a readable plot and summary
        self._set_result_enabled(False)
        self._plot_box.visible = False  # shown with a report that has per-slice scores
        # the user's pick of Prediction is kept when a segmentation is added (QA h5: it switched to the new layer
        # and the next Evaluate scored a layer the user had not chosen); the widget's own guesses are not picks
        self._pred_picked, self._guessing = False, False
        self._pred.changed.connect(self._on_pred_changed)
        self._follow_layers(viewer, self._on_layers_changed)

    # ---- layer choices

    def _on_pred_changed(self, *_: Any) -> None:
        if not self._guessing:
            self._pred_picked = True

    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(ly.name, ly) for ly in self._viewer.layers if isinstance(ly, Labels)]

    def _candidates(self) -> list[Any]:
        """Layers to guess between: not this plugin's previews and error maps (one slice, or not labels to score)."""
        return [ly for _, ly in self._labels_choices() if not never_annotations(ly)]

    def _on_layers_changed(self, event: Any = None) -> None:
        self._guessing = True
        try:
            self._choose_layers(event)
        finally:
            self._guessing = False

    def _choose_layers(self, event: Any) -> None:
        self.reset_choices()
        layers = self._candidates()
        if len(layers) < 2:
            return
        new = getattr(event, "value", None) if getattr(event, "type", None) == "inserted" else None
        picked = self._pred_picked and self._pred.value in layers
        if new is not None and made_by_model(new) and not made_by_model(self._pred.value) and not picked:
            # a model's segmentation just made (Segment, Train's run): that is what to score (QA: the
            # painted annotations stayed the Prediction, and scored 0.12 against the truth)
            self._pred.value = new
            if self._truth.value is new:
                self._truth.value = self._guess(layers)[1]
            return
        if event is None or self._pred.value is self._truth.value:  # the first look, or both the same layer
            self._pred.value, self._truth.value = self._guess(layers)

    @staticmethod
    def _guess(layers: list[Any]) -> tuple[Any, Any]:
        """(prediction, truth): the latest model's segmentation, and a layer named as a reference or painting."""
        models = [ly for ly in layers if made_by_model(ly)]
        named = [ly for ly in layers if ly not in models and any(w in ly.name.lower() for w in _TRUTH_WORDS)]
        named.sort(key=lambda ly: not looks_like_truth(ly))  # "truth", "gt" before "annotations", "painted"
        truth = named[0] if named else next((ly for ly in layers if ly not in models), layers[0])
        pred = models[-1] if models else next(ly for ly in reversed(layers) if ly is not truth)
        return pred, truth

    # ---- run

    def _on_run(self) -> None:
        if self.runner.running:
            self.runner.cancel()
            return
        self._pred_picked = True  # scored once: the user's choice from now on
        try:
            kwargs, context = self._inputs()
        except XraysegError as e:
            show_error(str(e))
            return
        self.runner.start(
            iter_evaluate,
            desc=f"Evaluating {context['pred_name']}",
            total=int(kwargs["pred"].shape[0]),
            on_returned=lambda report: self._show(report, context),
            **kwargs,
        )

    def _inputs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Validate and snapshot everything the job needs, on the main thread."""
        pred_layer, truth_layer = self._pred.value, self._truth.value
        pred = snapshot(layer_array(pred_layer, "prediction"))  # the report and its error layer: the same arrays
        truth = snapshot(layer_array(truth_layer, "ground-truth"))
        if pred_layer is truth_layer:
            raise InputError(
                f"prediction and ground truth are the same layer {pred_layer.name!r}: "
                "pick the painted labels as ground truth"
            )
        if tuple(pred.shape) != tuple(truth.shape):
            raise InputError(
                f"prediction {pred_layer.name!r} has shape {tuple(pred.shape)} but ground "
                f"truth {truth_layer.name!r} has shape {tuple(truth.shape)}: pick layers of "
                "the same image"
            )
        if (warning := placement_mismatch(truth_layer, pred_layer)) is not None:
            show_warning(warning)
        axis = int(self._axis.value) if pred.ndim == 3 else 0
        ignore_zero = not bool(self._zero.value)
        names = layer_class_names(pred_layer) or layer_class_names(truth_layer)
        kwargs = {"pred": pred, "truth": truth, "axis": axis, "ignore_zero": ignore_zero, "class_names": names}
        found = (getattr(pred_layer, "metadata", {}).get("napari_xrayseg") or {}).get("trained_on")
        if pred.ndim == 3 and isinstance(found, dict) and found.get("axis") == axis:
            kwargs["trained_slices"] = list(found.get("slices") or [])  # the Segment/Train widgets' record
        guessed_scale = None
        if self._physics.value:
            if pred.ndim != 3:
                raise InputError("the microstructure error needs 3D labels: uncheck it for 2D layers")
            size, unit, guessed = voxel_size_or_guess(pred_layer)  # as the Analyze widget reads it
            kwargs["microstructure"] = {"tortuosity": bool(self._tortuosity.value), "class_names": names}
            if unit != "voxel":
                kwargs["microstructure"].update(voxel_size=size[-3:], unit=unit)
            guessed_scale = size[-3:] if guessed else None
        context = {
            "pred": pred,
            "truth": truth,
            "axis": axis,
            "ignore_zero": ignore_zero,
            "pred_name": pred_layer.name,
            "truth_name": truth_layer.name,
            "layers": {"prediction": pred_layer, "truth": truth_layer},  # for the report's provenance
            "ndim": pred.ndim,
            "placement": placement(truth_layer),
            "scale_as_um": guessed_scale,
        }
        return kwargs, context

    # ---- results

    def _set_result_enabled(self, enabled: bool) -> None:
        self._add_errors.enabled = enabled
        self._export.enabled = enabled

    def _show(self, report: Report, context: dict[str, Any]) -> None:
        report.provenance = with_layers(report.provenance, **context.pop("layers"))  # kept: no layer references
        self.report, self._context = report, context
        guessed = context.get("scale_as_um")
        self._summary.value = (
            f"{context['pred_name']!r} against {context['truth_name']!r}\n"
            + self._summary_text(report)
            + (
                f"\nvoxel size {' x '.join(f'{v:g}' for v in guessed)} um: the prediction layer's scale (its units "
                "are pixel; give the layer units for another length)"
                if guessed is not None
                else ""
            )
        )
        rows = report.rows()
        self._table.value = {
            "data": [
                ["" if r[k] is None and r["class"] == "mean" else _fmt(r[k]) for k, _ in _SCORE_COLUMNS] for r in rows
            ],
            "index": [self._row_name(report, r["class"]) for r in rows],
            "columns": [title for _, title in _SCORE_COLUMNS],
        }
        labels = [int(v) for v in report.confusion_labels]
        self._confusion.value = {
            "data": [[f"{x:,}" for x in row] for row in report.confusion_matrix.astype(int).tolist()],
            "index": [f"truth {v}" for v in labels],
            "columns": [f"pred {v}" for v in labels],
        }
        fit_table(self._table)
        fit_table(self._confusion)
        self._draw_plot(report)
        self._set_result_enabled(True)
        show_info(
            f"evaluated {context['pred_name']!r} against {context['truth_name']!r}: mean Dice {_fmt(report.mean_dice)}"
        )

    @staticmethod
    def _row_name(report: Report, c: str) -> str:
        if c == "mean":
            return "mean"
        name = (report.class_names or {}).get(int(c))
        return f"class {c} ({name})" if name else f"class {c}"

    @staticmethod
    def _summary_text(report: Report) -> str:
        lines = [
            f"accuracy {_fmt(report.accuracy)} on {report.n_voxels:,} voxels"
            + ("" if report.ignore_zero else " (0 scored as a class)"),
            f"mean Dice {_fmt(report.mean_dice)}, mean IoU {_fmt(report.mean_iou)}",
        ]
        held = report.held_out_text()
        if held:
            lines.append(held)
        if report.axis is not None:
            if report.mean_slice_dice is None:
                lines.append("per-slice Dice: n/a")
            else:
                lines.append(
                    f"per-slice Dice {report.mean_slice_dice:.4f} ± {report.std_slice_dice:.4f} "
                    f"over {report.n_annotated_slices} annotated slices (axis {report.axis})"
                )
                low = report.outlier_text()
                if low:
                    lines.append(low)
        bands = report.by_interface_distance
        if bands:
            names = {"0": "on an interface", "1": "1 voxel away", "2+": "farther"}
            lines.append(
                "error rate "
                + ", ".join(f"{names[k]} {_fmt(v['error_rate'])} ({v['voxels']:,} voxels)" for k, v in bands.items())
            )
        if report.microstructure:
            ms = report.microstructure
            box = ",".join(f"{a}:{b}" for a, b in ms["region"])
            errs = [
                f"{k} {v['error_percent']:+.1f} %"
                for k, v in ms["errors"].items()
                if v["error_percent"] is not None
                and (k.endswith(("volume_fraction", "specific_surface_area", "tpb_density")) or ".tortuosity_" in k)
            ]
            lines.append(f"microstructure error on {box} ({ms['unit']}): " + ", ".join(errs))
        na = [str(c) for c in report.classes if report.per_class[c].get("dice") is None]
        if na:
            lines.append(f"not applicable (absent from both): class {', '.join(na)}")
        return "\n".join(lines)

    def _draw_plot(self, report: Report) -> None:
        self._marker = None
        if report.axis is None or report.slice_dice is None or len(report.shape) != 3:
            self._figure.clear()
            self._canvas.draw_idle()
            self._plot_box.visible = False
            return
        self._plot_box.visible = True
        slice_dice_plot(report, figure=self._figure)
        ax = self._figure.axes[0]
        ax.title.set_fontsize(8)
        ax.tick_params(labelsize=7)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
        if ax.get_legend() is not None:  # which line is which phase, small enough for the dock
            ax.legend(fontsize=6, loc="lower right", ncols=2, framealpha=0.7)
        self._canvas.draw_idle()

    # ---- plot -> viewer

    def _on_plot_click(self, event: Any) -> None:
        """Show the clicked slice (``event.xdata`` rounded) in the viewer."""
        if self.report is None or self._context is None or self._context["ndim"] != 3:
            return
        if event.inaxes is None or event.xdata is None or not self._figure.axes:
            return
        n = len(self.report.slice_dice or [])
        if n == 0:
            return
        k = min(max(int(round(event.xdata)), 0), n - 1)
        self.go_to_slice(k)

    def go_to_slice(self, k: int) -> None:
        """Move the viewer to slice ``k`` along the axis of the last evaluation.

        Parameters
        ----------
        k : int
            Slice index in the data of the evaluated layers.
        """
        if self._context is None:
            return
        axis = int(self._context["axis"])
        place = self._context["placement"]
        dims = self._viewer.dims
        world_axis = dims.ndim - self._context["ndim"] + axis
        if world_axis < 0:
            return
        coord = place["translate"][axis] + k * place["scale"][axis]
        if dims.ndisplay == 2 and world_axis in dims.displayed:
            # show slices across the evaluated axis: make it the slider axis
            dims.order = (world_axis, *(a for a in dims.order if a != world_axis))
        dims.set_point(world_axis, coord)
        if self._figure.axes:
            ax = self._figure.axes[0]
            if self._marker is not None and self._marker in ax.lines:
                self._marker.remove()
            self._marker = ax.axvline(k, color="tab:red", lw=1)
            self._canvas.draw_idle()

    # ---- error layer

    def _on_add_errors(self) -> None:
        if self.report is None or self._context is None:
            show_error("no evaluation yet: press Evaluate first")
            return
        ctx = self._context
        try:
            errors = error_map(ctx["pred"], ctx["truth"], ignore_zero=ctx["ignore_zero"])
        except XraysegError as e:
            show_error(str(e))
            return
        colors: dict[Any, Any] = {None: "transparent", 0: "transparent"}
        for name, value in ERROR_CODES.items():
            colors[value] = (*OVERLAY_COLORS[name], 1.0)
        name = unique_name(self._viewer, f"{ctx['pred_name']} errors")
        self._viewer.add_labels(
            errors,
            name=name,
            colormap=DirectLabelColormap(color_dict=colors),
            opacity=0.8,
            **ctx["placement"],
            metadata={
                "napari_xrayseg": {
                    "kind": "errors",
                    "encoding": {
                        "0": "correct or not annotated",
                        **{str(v): k for k, v in ERROR_CODES.items()},
                    },
                    "prediction": ctx["pred_name"],
                    "truth": ctx["truth_name"],
                    "ignore_zero": ctx["ignore_zero"],
                }
            },
        )
        show_info(f"added {name!r}: red = wrong class, blue = missed (prediction 0)")

    # ---- export

    def _on_export(self) -> None:
        export_csv_json(
            self.report,
            str(self._export_path.value),
            missing="no evaluation yet: press Evaluate first",
            show_error=show_error,
            show_info=show_info,
        )
