"""Analyze widget on a real viewer; reader scale, units and class names; sample truth names."""

import json

import numpy as np
import pytest
import zarr

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_xrayseg._napari.analyze_widget import AnalyzeWidget  # noqa: E402
from napari_xrayseg.core.units import image_label_properties, ngff_axes, ngff_scale_transforms  # noqa: E402


def _checkerboard(n=12, b=3):
    zz, yy, xx = np.indices((n, n, n)) // b
    return ((zz + yy + xx) % 3 + 1).astype(np.uint8)


def _wait(qtbot, w):
    assert w._job is not None
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)


def _cell(table, row, column):
    d = table.to_dict(orient="split")
    return d["data"][d["index"].index(row)][d["columns"].index(column)]


def test_analyze_widget_table_chart_tpb_layer_and_export(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    lab = _checkerboard()
    layer = viewer.add_labels(
        lab,
        name="phases",
        scale=(0.5, 0.25, 0.25),
        translate=(3, 0, 0),
        features={"index": [1, 2, 3], "name": ["pore", "nickel", "YSZ"]},
    )
    other = lab.copy()
    other[:, :, :3][other[:, :, :3] == 1] = 2
    viewer.add_labels(other, name="other axis", scale=(0.5, 0.25, 0.25))
    w = AnalyzeWidget(viewer)
    w._labels.value = layer
    assert (w._vz.value, w._vy.value, w._vx.value) == (0.5, 0.25, 0.25) and w._unit.value == "um"
    w._spread.value = viewer.layers["other axis"]
    w._tortuosity.value = False
    w._run.clicked.emit()
    assert w.runner.running
    _wait(qtbot, w)
    m = w.result
    assert m is not None and m.voxel_size == (0.5, 0.25, 0.25) and m.unit == "um"
    assert m.provenance["inputs"] == {"labels": {"layer": "phases"}}  # the layer, not "a numpy array"
    assert [p.name for p in m.phases.values()] == ["pore", "nickel", "YSZ"]
    assert _cell(w._table, "label 2", "name") == "nickel"
    assert float(_cell(w._table, "label 1", "vol. fraction")) == pytest.approx((lab == 1).mean(), abs=1e-3)
    assert "TPB density" in w._summary.value
    assert w.interval["2.volume_fraction"]["max"] == pytest.approx((other == 2).mean())
    ax = w._figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["pore", "nickel", "YSZ"]
    assert len(ax.patches) == 3  # one bar per phase, with min-max error bars
    from napari_xrayseg.core.units import label_color

    got = np.array([b.get_facecolor()[:3] for b in ax.patches])
    np.testing.assert_allclose(got, [label_color(c) for c in (1, 2, 3)], atol=1e-6)
    # the TPB network lands exactly over the labels, in 3D
    assert w._add_tpb.enabled
    w._add_tpb.clicked.emit()
    pts = viewer.layers["phases TPB"]
    assert isinstance(pts, napari.layers.Points) and len(pts.data) == m.tpb_edges
    assert tuple(pts.scale) == (0.5, 0.25, 0.25) and tuple(pts.translate) == (3, 0, 0)
    viewer.dims.ndisplay = 3
    # export: CSV + JSON, never overwriting
    w._export_path.value = str(tmp_path / "micro")
    w._export.clicked.emit()
    d = json.loads((tmp_path / "micro.json").read_text())
    assert d["phases"]["3"]["name"] == "YSZ" and d["unit"] == "um"
    profile = (tmp_path / "micro-profile-z.csv").read_text().splitlines()  # the plotted profile too
    assert profile[0].startswith("index,position_um,sample_voxels,fraction_1") and len(profile) == 1 + lab.shape[0]
    before = (tmp_path / "micro.csv").read_text()
    w._export.clicked.emit()  # refused: both exist
    assert (tmp_path / "micro.csv").read_text() == before


def test_analyze_widget_cancel_and_bad_input(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_labels(np.ones((2, 2, 4, 8), np.uint8), name="4d")
    w = AnalyzeWidget(viewer)
    w._labels.value = viewer.layers["4d"]
    w._run.clicked.emit()  # 4D: refused with a notification, nothing started
    assert w._job is None and not w.runner.running
    viewer.add_labels(_checkerboard(24, 4), name="cube")
    w._labels.value = viewer.layers["cube"]
    assert w._unit.value == "voxel"
    w._run.clicked.emit()
    w._run.clicked.emit()  # Cancel
    _wait(qtbot, w)
    assert w._run.text == "Analyze"


def test_reader_gives_scale_units_and_names(make_napari_viewer, tmp_path):
    p = tmp_path / "lab.zarr"
    g = zarr.open_group(str(p), mode="w")
    g.create_array("0", shape=(4, 8, 8), dtype="uint8")[...] = 2
    g.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": ngff_axes("um"),
                "datasets": [{"path": "0", "coordinateTransformations": ngff_scale_transforms((0.2, 0.1, 0.1), 1)[0]}],
            }
        ],
        "image-label": image_label_properties([1, 2], ["pore", "nickel"]),
    }
    g.attrs["napari_xrayseg"] = {"classes": [1, 2], "class_names": ["pore", "nickel"], "complete": True}
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(p), plugin="napari-xrayseg")
    assert isinstance(layer, napari.layers.Labels)
    assert tuple(layer.scale) == pytest.approx((0.2, 0.1, 0.1))
    assert str(layer.units[0]) == "micrometer"
    assert list(layer.features["name"]) == ["pore", "nickel"]


def test_sample_truth_names_its_phases(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-xrayseg", "pxct")
    truth = [ly for ly in layers if isinstance(ly, napari.layers.Labels)][0]
    assert list(truth.features["name"]) == ["pore", "nickel", "YSZ"]


def test_segment_warns_at_a_very_different_voxel_size_and_names_the_output(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    from dataclasses import replace

    from napari_xrayseg._napari.segment_widget import SegmentWidget
    from napari_xrayseg.core.models import init_model, save_model

    m = init_model("unet", size="tiny", classes=3, tile=32, class_names=["pore", "nickel", "YSZ"])
    m.info = replace(m.info, voxel_size=[0.05, 0.05, 0.05], unit="um")
    path = save_model(m, tmp_path / "m.safetensors")
    warnings = []
    monkeypatch.setattr("napari_xrayseg._napari.segment_widget.show_warning", warnings.append)
    viewer = make_napari_viewer()
    viewer.add_image(
        np.random.default_rng(0).random((2, 32, 32), dtype=np.float32),
        name="img",
        scale=(0.2, 0.2, 0.2),
        units=("um",) * 3,
    )
    w = SegmentWidget(viewer)
    w._model_file.value = path
    w._device.value = "cpu"
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert len(warnings) == 1 and "trained at" in warnings[0] and "x4" in warnings[0]
    out = viewer.layers["img labels"]
    assert list(out.features["name"]) == ["pore", "nickel", "YSZ"]
    warnings.clear()
    viewer.layers["img"].scale = (0.05, 0.05, 0.05)
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert warnings == []


def test_analyze_widget_leaves_label_0_out_as_outside_the_sample(make_napari_viewer, qtbot):
    """A segmentation with 0 outside its field of view: the sample's numbers by default, 0 a phase when unticked."""
    viewer = make_napari_viewer()
    lab = np.zeros((12, 18, 18), np.uint8)
    lab[:, 3:15, 3:15] = _checkerboard()
    viewer.add_labels(lab, name="seg")
    w = AnalyzeWidget(viewer)
    w._tortuosity.value = False
    assert w._outside.value
    w._run.clicked.emit()
    _wait(qtbot, w)
    assert sorted(w.result.phases) == [1, 2, 3]
    assert float(_cell(w._table, "label 1", "vol. fraction")) == pytest.approx((_checkerboard() == 1).mean(), abs=1e-3)
    w._outside.value = False
    w._run.clicked.emit()
    _wait(qtbot, w)
    assert sorted(w.result.phases) == [0, 1, 2, 3]


def test_analyze_widget_takes_a_pillars_envelope(make_napari_viewer, qtbot, monkeypatch):
    """A pillar in air segmented as pore: a hint names *Surrounded by label* 1, which gives the pillar's numbers."""
    from napari_xrayseg.core.microstructure import analyze, sample_envelope
    from napari_xrayseg.core.sample import make_phantom

    truth = make_phantom((8, 64, 64), seed=2, pillar=0.6)[1]
    viewer = make_napari_viewer(show=True)
    viewer.add_labels(truth, name="pillar")
    w = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Analyze")
    w._tortuosity.value = False
    w._size_distribution.value = True
    warnings = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.show_warning", warnings.append)
    w._run.clicked.emit()
    _wait(qtbot, w)
    assert any("label 1 holds 100 % of the region's sides" in m for m in warnings), warnings
    assert w.result.phases[1].volume_fraction > 0.5  # the box: mostly air
    warnings.clear()
    w._envelope.value = 1
    w._run.clicked.emit()
    _wait(qtbot, w)
    assert not warnings
    ref = analyze(truth, envelope=1, connectivity=False, mean_size=False, tortuosity=False)
    assert w.result.phases[1].volume_fraction == pytest.approx(ref.phases[1].volume_fraction)
    assert w.result.phases[1].volume_fraction < 0.5 < (truth == 1).mean()  # the box would be mostly air
    assert f"sample {ref.sample_volume:.4g} voxel³" in w._summary.value
    assert _cell(w._table, "label 2", "d50 (voxel)") == f"{w.result.phases[2].size_distribution['d50']:.4g}"
    lines = w._profile_figure.axes[0].get_lines()  # the fractions slice by slice along z, in the phases' colours
    assert len(lines) == 3 and len(lines[0].get_xdata()) == 8
    from napari_xrayseg.core.units import label_color

    np.testing.assert_allclose([ln.get_color()[:3] for ln in lines], [label_color(c) for c in (1, 2, 3)], atol=1e-6)
    assert len(w._profile_figure.axes) == 2 and len(w._profile_figure.axes[1].get_lines()) == 1  # and the TPB
    w._profile_axis.value = "x"
    assert len(w._profile_figure.axes[0].get_lines()[0].get_xdata()) == 64
    w._add_tpb.clicked.emit()
    assert len(viewer.layers[-1].data) == ref.tpb_edges
    assert w._add_envelope.enabled
    w._add_envelope.clicked.emit()
    env = viewer.layers["pillar envelope"]
    np.testing.assert_array_equal(np.asarray(env.data[3]), sample_envelope(truth[3:4], 1)[0])
    assert env.data.shape == truth.shape and 0.2 < np.asarray(env.data).mean() < 0.4  # the pillar: 0.6² x pi / 4
    shot = viewer.screenshot(canvas_only=False)
    assert shot.ndim == 3 and shot[..., :3].std() > 1


def test_analyze_widget_says_the_tortuosity_time_before_it_starts(make_napari_viewer, qtbot, monkeypatch):
    """QA h5: "takes long" came as a notification when the job ended, after the minutes it warned of."""
    import napari_xrayseg.core.microstructure as ms

    said = []
    monkeypatch.setattr("napari_xrayseg._napari.analyze_widget.show_info", said.append)
    monkeypatch.setattr(ms, "_CPU_TAU_S", 1e-3)  # as if the solves took minutes
    viewer = make_napari_viewer()
    viewer.add_labels(_checkerboard(24, 4), name="cube")
    w = AnalyzeWidget(viewer)
    w._labels.value = viewer.layers["cube"]
    w._tortuosity.value = True
    w._run.clicked.emit()
    assert any(str(m).startswith("tortuosity on the CPU: about") for m in said)  # before the job's end
    w._run.clicked.emit()  # Cancel
    _wait(qtbot, w)


def test_analyze_widget_on_a_2d_section(make_napari_viewer, qtbot, tmp_path):
    """A 2D labels layer (an SEM image's segmentation) was refused with a console line (QA h1): it is analysed as a
    section, its triple points go to a 2D Points layer over it, and its profile runs along y."""
    viewer = make_napari_viewer(show=True)
    lab = np.ones((48, 48), np.uint8)
    lab[:24, 24:] = 2
    lab[24:] = 3
    layer = viewer.add_labels(lab, name="section", scale=(0.5, 0.5))
    w = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Analyze")
    w._labels.value = layer
    assert w._vz.native.isHidden() and (w._vy.value, w._vx.value) == (0.5, 0.5)
    w._run.clicked.emit()
    _wait(qtbot, w)
    m = w.result
    assert m is not None and m.shape == (48, 48) and m.section["triple_points"] == 1
    assert "1 triple points" in w._summary.value and "2D section" in w._summary.value
    assert str(w._profile_axis.value) == "y"
    w._add_tpb.clicked.emit()
    points = viewer.layers["section TPB"]
    assert points.ndim == 2 and len(points.data) == 1 and tuple(points.scale) == (0.5, 0.5)
    np.testing.assert_allclose(points.data[0], (23.5, 23.5), atol=0.51)  # the corner where the three meet
    shot = viewer.screenshot(canvas_only=True)
    assert shot.ndim == 3 and shot[..., :3].std() > 0  # the section and its point are drawn


def test_analyze_widget_envelope_of_a_2d_section(make_napari_viewer, qtbot):
    """Review: with *Surrounded by label* set on a 2D section, Add envelope layer raised (2D rows reached the
    envelope of 3D slices)."""
    viewer = make_napari_viewer()
    lab = np.ones((64, 64), np.uint8)  # a disk of phases 2 and 3 in air (1)
    yy, xx = np.mgrid[:64, :64]
    disk = (yy - 32) ** 2 + (xx - 32) ** 2 < 24**2
    lab[disk] = np.where(xx[disk] < 32, 2, 3)
    viewer.add_labels(lab, name="pillar")
    w = AnalyzeWidget(viewer)
    w._labels.value = viewer.layers["pillar"]
    w._envelope.value = 1
    w._run.clicked.emit()
    _wait(qtbot, w)
    assert w.result is not None and w.result.sample_voxels == pytest.approx(disk.sum(), rel=0.05)
    w._add_envelope.clicked.emit()
    env = [ly for ly in viewer.layers if ly is not viewer.layers["pillar"]]
    assert len(env) == 1 and env[0].data.shape == (64, 64)


def test_analyze_widget_measures_the_tpb_of_three_named_phases_of_four(make_napari_viewer, qtbot, monkeypatch):
    """QA (h4): with four phases the widget said to pass --tpb-phases, which it had no field for: a battery
    cathode's TPB was out of reach in napari. The 'TPB phases' field gives the CLI's density."""
    from napari_xrayseg.core.microstructure import analyze

    lab = _checkerboard()
    lab[:4, :4, :4] = 4  # a fourth phase
    viewer = make_napari_viewer()
    viewer.add_labels(lab, name="seg")
    w = AnalyzeWidget(viewer)
    w._tortuosity.value = False
    w._outside.value = False
    warned = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.notifications.show_warning", warned.append)
    w._run.clicked.emit()
    _wait(qtbot, w)
    assert w.result.tpb_density is None and any("in the 'TPB phases' field, e.g. 1 2 3" in m for m in warned)
    assert not any("--tpb-phases" in m for m in warned)
    w._tpb_phases.value = "1, 2 3"
    w._run.clicked.emit()
    _wait(qtbot, w)
    want = analyze(lab, tpb_phases=(1, 2, 3), tortuosity=False).tpb_density
    assert w.result.tpb_phases == (1, 2, 3) and w.result.tpb_density == pytest.approx(want) and want > 0
    w._tpb_phases.value = "1 2"
    errors = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.notifications.show_error", errors.append)
    w._run.clicked.emit()
    assert errors and "give three labels" in errors[0]


def test_unticking_clusters_and_sizes_analyses_a_volume_of_any_size_slab_by_slab(make_napari_viewer, qtbot):
    """QA s45: above 512³ the widget refused with the command line's --fractions-only as the only way out."""
    from napari_xrayseg.core.microstructure import analyze

    viewer = make_napari_viewer()
    layer = viewer.add_labels(_checkerboard(24, 4), name="cube")
    w = AnalyzeWidget(viewer)
    w._labels.value = layer
    w._whole.value = False
    w._tortuosity.value = False
    w._run.clicked.emit()
    _wait(qtbot, w)
    p = w.result.phases[1]
    assert p.largest_cluster_fraction is None and p.mean_size is None and p.tortuosity is None
    want = analyze(layer.data, connectivity=False, mean_size=False, tortuosity=False, outside=0, max_voxels=10)
    assert p.volume_fraction == want.phases[1].volume_fraction and w.result.tpb_density == want.tpb_density
    w._whole.value = True
    w._run.clicked.emit()
    _wait(qtbot, w)
    assert w.result.phases[1].largest_cluster_fraction is not None


def test_a_failed_run_leaves_no_table_of_the_layer_before(make_napari_viewer, qtbot):
    """QA s45: after a refusal the table still showed the previous layer's numbers under the new layer's name."""
    viewer = make_napari_viewer()
    ones = viewer.add_labels(_checkerboard(12, 3), name="ones")
    zeros = viewer.add_labels(np.zeros((12, 12, 12), np.uint8), name="zeros")
    w = AnalyzeWidget(viewer)
    w._labels.value = ones
    w._tortuosity.value = False
    w._run.clicked.emit()
    _wait(qtbot, w)
    assert w._table.shape[0] > 0
    w._labels.value = zeros  # every voxel outside the sample: refused
    w._run.clicked.emit()
    _wait(qtbot, w)
    assert w._table.shape[0] == 0 and not w._export.enabled
