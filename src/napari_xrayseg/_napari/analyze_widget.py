"""Analyze widget: the microstructure numbers of a Labels layer in physical units.

Per phase the volume fraction, specific surface area, largest-cluster fraction,
percolation, tortuosity and mean chord size, and for three phases the TPB density, as a
table and a bar chart (with min-max bars over other segmentations of the same volume,
when some are chosen); adds the TPB network as a Points layer and exports CSV + JSON.
The voxel size comes from the layer's scale (editable). The user's layers are never
modified.

Console equivalent::

    from napari_xrayseg.core.microstructure import analyze, tpb_points
    layer = viewer.layers["PXCT truth"]
    m = analyze(layer.data, voxel_size=layer.scale, unit="um", class_names={1: "pore", 2: "nickel", 3: "YSZ"},
                outside=0)  # label 0: outside the sample (the widget's default), not a phase
    print(m)
    m.to_json("micro.json"); m.to_csv("micro.csv")
    viewer.add_points(tpb_points(layer.data, outside=0), scale=layer.scale, size=1, name="TPB")
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, LineEdit, PushButton, SpinBox, Table
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Labels
from napari.utils.notifications import show_info

from ..core.errors import InputError, XraysegError
from ..core.microstructure import (
    Microstructure,
    iter_analyze,
    microstructure_interval,
    sample_envelope_lazy,
    tortuosity_available,
    tpb_points,
)
from ..core.progress import CancelToken, Progress
from ..core.units import label_color
from ._jobs import JobRunner, JobWidget, show_error, text_label
from ._layers import (
    export_csv_json,
    fit_table,
    layer_array,
    layer_class_names,
    layer_source,
    placement,
    snapshot,
    unique_name,
)
from ._voxel import VoxelSizeFields

if TYPE_CHECKING:
    import napari

_COLUMNS = (
    ("name", "name"),
    ("volume_fraction", "vol. fraction"),
    ("specific_surface_area", "S_V"),
    ("largest_cluster_fraction", "largest cluster"),
    ("percolates", "percolates z/y/x"),
    ("tortuosity", "tau z/y/x"),
    ("mean_size", "mean size"),
    ("d50", "d50"),
)


def _cell(p: Any, key: str) -> Any:
    """A phase's value for a table column (``d50`` from its size distribution, when computed)."""
    if key == "d50":
        return None if p.size_distribution is None else p.size_distribution["d50"]
    return p.to_dict()[key]


def _iter_job(
    labels: Any, *, spread: list[Any], tpb: bool, cancel: CancelToken | None = None, **kwargs: Any
) -> Generator[Progress, None, dict[str, Any]]:
    """Analyze ``labels`` (and each ``spread`` volume), then find the TPB edges for the Points layer."""
    m = yield from iter_analyze(labels, cancel=cancel, **kwargs)
    others = []
    for i, other in enumerate(spread):
        yield Progress(i, len(spread) + 1, f"segmentation {i + 2} of {len(spread) + 1}")
        others.append((yield from iter_analyze(other, cancel=cancel, **kwargs)))
    interval = microstructure_interval([m, *others]) if others else None
    points = None
    if tpb and m.tpb_phases is not None:
        yield Progress(0, 1, "TPB network")
        keys = ("region", "outside", "envelope")
        kw = {k: kwargs.get(k) for k in keys}
        if labels.ndim == 2:  # a section's triple points: the corners of a one-slice volume's z edges
            kw["region"] = None if kw["region"] is None else f"0:1,{kw['region']}"
            points = tpb_points(labels[None], phases=m.tpb_phases, cancel=cancel, **kw)[:, 1:]
        else:
            points = tpb_points(labels, phases=m.tpb_phases, cancel=cancel, **kw)
    envelope = None
    if kwargs.get("envelope") is not None:  # lazy: computed slice by slice as napari shows it
        outside = kwargs.get("outside")
        whole = labels[None] if labels.ndim == 2 else labels  # a section: its one slice (review: it raised)
        envelope = sample_envelope_lazy(whole, kwargs["envelope"], outside=0 if outside is None else outside)
        envelope = envelope[0] if labels.ndim == 2 else envelope
    return {"result": m, "interval": interval, "points": points, "envelope": envelope}


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, dict):
        return "/".join(("yes" if x else "no") if isinstance(x, bool) else _fmt(x) for x in v.values())
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class AnalyzeWidget(JobWidget):
    """Dock widget: microstructure numbers of a Labels layer (see the module docstring)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.result: Microstructure | None = None  # the last result, also for console use
        self.interval: dict[str, Any] | None = None
        self._context: dict[str, Any] | None = None
        self._labels = ComboBox(label="Labels", choices=self._labels_choices, nullable=False)
        self._voxel = VoxelSizeFields()
        self._vz, self._vy, self._vx, self._unit = self._voxel.widgets
        self._region = LineEdit(label="Region", value="")
        self._region.tooltip = "sub-volume z0:z1,y0:y1,x0:x1 (empty: the whole volume)"
        self._whole = CheckBox(text="Clusters and sizes (the region in memory, up to 512³)", value=True)
        self._whole.tooltip = (
            "largest cluster, percolation and mean chord of each phase; untick this, Tortuosity and Size "
            "distribution for fractions, surfaces and TPB of a volume of any size, read slab by slab"
        )
        have_tau = tortuosity_available()
        self._tortuosity = CheckBox(text="Tortuosity (the slow part)", value=have_tau, enabled=have_tau)
        if not have_tau:
            self._tortuosity.tooltip = "needs TauFactor: pip install 'napari-xrayseg[physics]', then restart napari"
        self._size_distribution = CheckBox(text="Size distribution (d50; a minute per 256³ region)", value=False)
        self._size_distribution.tooltip = (
            "each phase's continuous size distribution (inscribed balls) and its median diameter d50"
        )
        self._outside = CheckBox(text="label 0 is outside the sample (not a phase)", value=True)
        self._outside.tooltip = (
            "napari draws label 0 as background, and Segment writes 0 where it met no data (outside a "
            "field of view): fractions, surfaces and TPB are then per volume of the sample"
        )
        self._envelope = SpinBox(label="Surrounded by label", value=0, min=0, max=65535)
        self._envelope.tooltip = (
            "0: nothing, the sample fills the volume. A pillar standing in air segmented as pore: that label "
            "(e.g. 1); per z slice, what lies beyond the convex hull of the other phases is then outside the "
            "sample, so the porosity is the pillar's"
        )
        self._tpb_phases = LineEdit(label="TPB phases", value="")
        self._tpb_phases.tooltip = (
            "the three labels whose triple-phase boundary is measured, e.g. '1 2 3' (empty: the labels, when there "
            "are three; with four or more phases, name three here)"
        )
        self._spread = ComboBox(label="Spread over", choices=self._labels_choices, nullable=True, value=None)
        self._spread.tooltip = (
            "optional: another segmentation of the same volume (e.g. another axis or model); "
            "the bar chart then shows the range of both"
        )
        self._run = PushButton(text="Analyze")
        self._summary = text_label("")
        self.runner = JobRunner(self._run, "Analyze", status=self._summary)
        self._table = Table(label="Per phase")
        self._table.read_only = True
        self._figure = Figure(figsize=(4.0, 2.4), layout="constrained")
        self._canvas = FigureCanvasQTAgg(self._figure)
        self._canvas.setMinimumHeight(200)
        self._plot_box = Container(labels=False)
        self._plot_box.native.layout().addWidget(self._canvas)
        self._profile_axis = ComboBox(label="Profile along", choices=["z", "y", "x"], value="z")
        self._profile_axis.tooltip = "the phase fractions slice by slice along this axis (a layer, a gradient, a drift)"
        self._profile_figure = Figure(figsize=(4.0, 2.4), layout="constrained")
        self._profile_canvas = FigureCanvasQTAgg(self._profile_figure)
        self._profile_canvas.setMinimumHeight(200)
        self._profile_box = Container(labels=False)
        self._profile_box.native.layout().addWidget(self._profile_canvas)
        self._profile_axis.changed.connect(lambda *_: self._draw_profile())
        self._add_tpb = PushButton(text="Add TPB network layer")
        self._add_envelope = PushButton(text="Add envelope layer")
        self._add_envelope.tooltip = "what the analysis counted as the sample (1) when surrounded by a label"
        self._export_path = FileEdit(label="Export to", mode="w", filter="*.csv *.json", value="")
        self._export_path.tooltip = "base path: writes <base>.csv and <base>.json, never overwrites"
        self._export = PushButton(text="Export CSV + JSON")
        self._run.changed.connect(self._on_run)
        self._labels.changed.connect(self._on_layer_chosen)
        self._add_tpb.changed.connect(self._on_add_tpb)
        self._add_envelope.changed.connect(self._on_add_envelope)
        self._export.changed.connect(self._on_export)
        self.extend(
            [
                self._labels,
                *self._voxel.widgets,
                self._region,
                self._whole,
                self._tortuosity,
                self._size_distribution,
                self._outside,
                self._envelope,
                self._tpb_phases,
                self._spread,
                self._run,
                self._summary,
                self._table,
                self._plot_box,
                self._profile_axis,
                self._profile_box,
                self._add_tpb,
                self._add_envelope,
                self._export_path,
                self._export,
            ]
        )
        self._set_result_enabled(False)
        self._plot_box.visible = self._profile_box.visible = False  # no empty white plots before a result
        self.span(self._plot_box, self._profile_box, self._summary)  # the whole width: readable plots
        self._follow_layers(viewer)
        self._on_layer_chosen()

    # ---- inputs

    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(ly.name, ly) for ly in self._viewer.layers if isinstance(ly, Labels)]

    def _on_layer_chosen(self, _event: Any = None) -> None:
        """Take the voxel size (and unit, where napari knows it) from the chosen layer's scale."""
        self._voxel.track(self._labels.value, guess_um=True)

    def _inputs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Validate and snapshot everything the job needs, on the main thread."""
        layer = self._labels.value
        labels = snapshot(layer_array(layer, "labels"))  # painting meanwhile changes neither table nor TPB points
        if labels.ndim not in (2, 3):
            raise InputError(
                f"labels layer {layer.name!r} is {labels.ndim}D: analyze needs a 3D volume or a 2D section"
            )
        spread = []
        other = self._spread.value
        if other is not None and other is not layer:
            data = layer_array(other, "labels")
            if tuple(data.shape) != tuple(labels.shape):
                raise InputError(
                    f"{other.name!r} has shape {tuple(data.shape)}, {layer.name!r} "
                    f"{tuple(labels.shape)}: spread needs segmentations of the same volume"
                )
            spread.append(snapshot(data))
        voxel, unit = self._voxel.value()
        kwargs = {
            "labels": labels,
            "spread": spread,
            "tpb": True,
            "voxel_size": voxel,
            "unit": unit,
            "class_names": layer_class_names(layer),
            "region": str(self._region.value).strip() or None,
            "connectivity": bool(self._whole.value),  # unticked with the two below: any size (QA s45: > 512³ refused
            "mean_size": bool(self._whole.value),  # with the command line's --fractions-only as the only way out)
            "tortuosity": bool(self._tortuosity.value),
            "size_distribution": bool(self._size_distribution.value),
            "outside": 0 if self._outside.value else None,
            "envelope": int(self._envelope.value) or None,
            "tpb_phases": _tpb_phases(str(self._tpb_phases.value)),
        }
        return kwargs, {"name": layer.name, "placement": placement(layer), "provenance": layer_source(layer)}

    def _on_run(self) -> None:
        if self.runner.running:
            self.runner.cancel()
            return
        try:
            kwargs, context = self._inputs()
        except XraysegError as e:
            show_error(str(e))
            return
        if kwargs["tortuosity"]:  # said before, not after the minutes (QA h5: the core's warning came at the end)
            _say_tortuosity_time(kwargs["labels"].shape)
        # the last layer's numbers are not left under another layer's name if this run fails (QA s45)
        self._table.clear()
        self._set_result_enabled(False)
        self.runner.start(
            _iter_job,
            desc=f"Analyzing {context['name']}",
            total=1,
            on_returned=lambda out: self._show(out, context),
            **kwargs,
        )

    # ---- results

    def _set_result_enabled(self, enabled: bool) -> None:
        self._add_tpb.enabled = enabled and self._context is not None and self._context.get("points") is not None
        self._add_envelope.enabled = enabled and self._context is not None and self._context.get("envelope") is not None
        self._export.enabled = enabled

    def _show(self, out: dict[str, Any], context: dict[str, Any]) -> None:
        m: Microstructure = out["result"]
        if m.provenance is not None:  # the layer analysed, not "a numpy array"
            m.provenance = {**m.provenance, "inputs": {"labels": context["provenance"]}}
        self.result, self.interval = m, out["interval"]
        self._plot_box.visible = self._profile_box.visible = True
        self._context = {**context, "points": out["points"], "envelope": out["envelope"]}
        u = m.unit
        titles = [
            t if k not in ("specific_surface_area", "mean_size", "d50") else f"{t} ({'1/' + u if k[0] == 's' else u})"
            for k, t in _COLUMNS
        ]
        self._table.value = {
            "data": [[_fmt(_cell(p, k)) for k, _ in _COLUMNS] for p in m.phases.values()],
            "index": [f"label {k}" for k in m.phases],
            "columns": titles,
        }
        fit_table(self._table)
        lines = [m.extent()]
        if m.sample_voxels is not None:
            what = ("²", "pixels") if m.section is not None else ("³", "voxels")
            lines.append(f"sample {m.sample_volume:.4g} {u}{what[0]} ({m.sample_voxels:,} {what[1]})")
        if m.tpb_density is not None and m.section is None:
            lines.append(f"TPB density {m.tpb_density:.4g} {u}/{u}³ ({m.tpb_edges:,} voxel edges)")
        elif m.section is not None:  # a 2D section: its own measures, then the 3D estimates
            lines.insert(1, "a 2D section: S_V, size and TPB density are stereological estimates (isotropic structure)")
            per = ", ".join(f"{k}: {v:.4g}" for k, v in m.section["boundary_length_per_area"].items())
            lines.append(f"boundary length per area (1/{u}) {per}")
            if m.tpb_density is not None:
                lines.append(
                    f"{m.section['triple_points']:,} triple points, {m.section['triple_points_per_area']:.4g} per "
                    f"{u}²; TPB density {m.tpb_density:.4g} {u}/{u}³ (2 per triple point per area)"
                )
            if str(self._profile_axis.value) not in m.profiles:
                self._profile_axis.value = "y"
        self._summary.value = "\n".join(lines)
        self._draw(m, out["interval"])
        self._draw_profile()
        self._set_result_enabled(True)
        show_info(f"analysed {context['name']!r}")

    def _draw(self, m: Microstructure, interval: dict[str, Any] | None) -> None:
        """Bar chart of the volume fractions (min-max bars when there is an interval)."""
        self._figure.clear()
        ax = self._figure.add_subplot()
        keys = list(m.phases)
        vals = [m.phases[k].volume_fraction for k in keys]
        err = None
        if interval is not None:
            lo = [vals[i] - interval[f"{k}.volume_fraction"]["min"] for i, k in enumerate(keys)]
            hi = [interval[f"{k}.volume_fraction"]["max"] - vals[i] for i, k in enumerate(keys)]
            err = np.array([lo, hi])
        colours = [label_color(k) for k in keys]  # each phase in the colour napari paints it
        ax.bar([m.phases[k].name for k in keys], vals, yerr=err, capsize=4, color=colours, edgecolor="0.3")
        ax.set_ylabel("volume fraction", fontsize=8)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        self._canvas.draw_idle()

    def _draw_profile(self) -> None:
        """Line plot of each phase's fraction slice by slice along the chosen axis."""
        self._profile_figure.clear()
        m = self.result
        axis = str(self._profile_axis.value)
        if m is None or axis not in m.profiles:
            self._profile_canvas.draw_idle()
            return
        p = m.profiles[axis]
        ax = self._profile_figure.add_subplot()
        for k, f in p["fractions"].items():
            name = m.phases[k].name if k in m.phases else str(k)
            ax.plot(
                p["position"], [np.nan if v is None else v for v in f], label=name, lw=1.2, color=label_color(int(k))
            )
        ax.set_xlabel(f"{axis} ({m.unit})", fontsize=8)
        ax.set_ylabel("volume fraction", fontsize=8)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left")
        if "tpb_density" in p:  # its own scale, on the right
            tpb = ax.twinx()
            tpb.plot(p["position"], [np.nan if v is None else v for v in p["tpb_density"]], "k--", lw=1, label="TPB")
            tpb.set_ylabel(f"TPB density ({m.unit}/{m.unit}³)", fontsize=8)
            tpb.set_ylim(bottom=0)
            tpb.tick_params(labelsize=7)
            tpb.legend(fontsize=7, loc="upper right")
        self._profile_canvas.draw_idle()

    def _on_add_envelope(self) -> None:
        if self._context is None or self._context.get("envelope") is None:
            show_error("no envelope: analyse with 'Surrounded by label' set first")
            return
        name = unique_name(self._viewer, f"{self._context['name']} envelope")
        self._viewer.add_labels(
            self._context["envelope"].astype(np.uint8),
            name=name,
            opacity=0.3,
            **self._context["placement"],
            metadata={"napari_xrayseg": {"kind": "envelope", "source": self._context["name"]}},
        )
        show_info(f"added {name!r}: 1 where the analysis counted the sample")

    def _on_add_tpb(self) -> None:
        if self._context is None or self._context.get("points") is None:
            show_error("no TPB network: analyse a three-phase labels layer first")
            return
        pts = self._context["points"]
        name = unique_name(self._viewer, f"{self._context['name']} TPB")
        self._viewer.add_points(
            pts,
            name=name,
            size=1.0,
            face_color="yellow",
            border_width=0,
            **self._context["placement"],
            metadata={
                "napari_xrayseg": {
                    "kind": "tpb",
                    "source": self._context["name"],
                    "phases": list(self.result.tpb_phases or ()),
                }
            },
        )
        show_info(f"added {name!r}: {len(pts):,} TPB edge midpoints (switch to 3D to see the network)")

    def _on_export(self) -> None:
        """CSV + JSON, and the profile along the plotted axis as ``<base>-profile-<axis>.csv``."""
        csv_path = export_csv_json(
            self.result,
            str(self._export_path.value),
            missing="no result yet: press Analyze first",
            show_error=show_error,
            show_info=show_info,
        )
        axis = str(self._profile_axis.value)
        if csv_path is None or self.result is None or axis not in self.result.profiles:
            return
        try:
            path = self.result.to_profile_csv(csv_path.with_name(f"{csv_path.stem}-profile-{axis}.csv"), axis=axis)
        except XraysegError as e:
            show_error(str(e))
            return
        show_info(f"wrote {path}")


__all__ = ["AnalyzeWidget"]


def _tpb_phases(text: str) -> tuple[int, ...] | None:
    """The 'TPB phases' field: three labels (spaces or commas between them), or None when empty.

    >>> _tpb_phases("1 2 3"), _tpb_phases(" 2, 4,6 "), _tpb_phases("")
    ((1, 2, 3), (2, 4, 6), None)
    """
    words = text.replace(",", " ").split()
    if not words:
        return None
    if len(words) != 3 or not all(w.isascii() and w.isdigit() for w in words):  # not "³"
        raise InputError(f"TPB phases {text.strip()!r}: give three labels, e.g. 1 2 3 (or leave it empty)")
    return tuple(int(w) for w in words)


def _say_tortuosity_time(shape: tuple[int, ...]) -> None:
    """On a CPU, say up front about how long the tortuosity solves of three phases will take (from 30 s)."""
    from ..core.device import resolve_device
    from ..core.microstructure import tortuosity_cpu_seconds

    if len(shape) != 3 or resolve_device("auto").type != "cpu":
        return
    s = tortuosity_cpu_seconds(shape)
    if s >= 30:
        took = f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s"
        show_info(f"tortuosity on the CPU: about {took} for 3 phases (untick Tortuosity for the rest in seconds)")
