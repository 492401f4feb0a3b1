"""Physical units in napari: outputs of `xrayseg predict` open with their scale, units and class names;
the Segment widget's voxel size follows the image layer and goes into the outputs and the result
layer; the Train widget records the layer's voxel size in the model."""

import numpy as np
import pytest
import tifffile
import zarr

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_xrayseg._napari.segment_widget import SegmentWidget  # noqa: E402
from napari_xrayseg._napari.train_widget import TrainWidget  # noqa: E402
from napari_xrayseg.cli import main  # noqa: E402
from napari_xrayseg.core.errors import InputError  # noqa: E402
from napari_xrayseg.core.io import read_class_names, read_voxel_size  # noqa: E402
from napari_xrayseg.core.models import init_model, load_model, save_model  # noqa: E402
from napari_xrayseg.core.sample import make_phantom  # noqa: E402

NAMES = ["pore", "nickel", "YSZ"]


@pytest.fixture
def model_file(tmp_path):
    m = init_model("unet", size="tiny", classes=3, tile=32, class_names=NAMES)
    return save_model(m, tmp_path / "tiny.safetensors")


def test_predict_outputs_open_in_napari_with_scale_units_and_names(make_napari_viewer, tmp_path, model_file):
    img = np.random.default_rng(0).random((4, 300, 64), dtype=np.float32)
    tif = tmp_path / "scan.tif"
    tifffile.imwrite(tif, img, imagej=True, resolution=(20.0, 20.0), metadata={"spacing": 0.1, "unit": "um"})
    out = tmp_path / "seg.zarr"
    argv = ["predict", "--image", str(tif), "--model", str(model_file), "--device", "cpu", "--tile", "64", "--out"]
    assert main([*argv, str(out), "--pyramid", "--confidence", "maxprob"]) == 0
    assert read_voxel_size(out) == ((0.1, 0.05, 0.05), "um")  # from the TIFF's ImageJ tags
    assert read_voxel_size(out, dataset="1") == ((0.2, 0.1, 0.1), "um")
    assert read_class_names(out) == {1: "pore", 2: "nickel", 3: "YSZ"}
    viewer = make_napari_viewer()
    (labels,) = viewer.open(str(out), plugin="napari-xrayseg")
    assert isinstance(labels, napari.layers.Labels) and labels.multiscale and len(labels.data) == 2
    assert tuple(labels.scale) == pytest.approx((0.1, 0.05, 0.05))
    assert [str(u) for u in labels.units] == ["micrometer"] * 3
    assert list(labels.features["name"]) == NAMES
    ome_colors = zarr.open_group(str(out), mode="r").attrs["ome"]["image-label"]["colors"]
    shown = labels.colormap.map(np.array([0, 1, 2, 3]))
    assert shown[0][3] == 0  # background transparent; each class in the colour the file names
    for c in ome_colors:
        np.testing.assert_allclose(shown[c["label-value"]], np.array(c["rgba"]) / 255, atol=1e-6)
    (conf,) = viewer.open(str(tmp_path / "seg-maxprob.zarr"), plugin="napari-xrayseg")
    assert isinstance(conf, napari.layers.Image) and tuple(conf.scale) == pytest.approx((0.1, 0.05, 0.05))
    # --voxel-size overrides the file; --unit converts
    assert main([*argv, str(tmp_path / "o.zarr"), "--voxel-size", "20"]) == 0
    assert read_voxel_size(tmp_path / "o.zarr") == ((20.0, 20.0, 20.0), "um")
    assert main([*argv, str(tmp_path / "n.zarr"), "--unit", "nm"]) == 0
    size, unit = read_voxel_size(tmp_path / "n.zarr")
    assert size == pytest.approx((100.0, 50.0, 50.0)) and unit == "nm"
    (plain,) = viewer.open(str(tmp_path / "n.zarr"), plugin="napari-xrayseg")
    assert tuple(plain.scale) == pytest.approx((100.0, 50.0, 50.0)) and str(plain.units[0]) == "nanometer"


def test_segment_widget_voxel_size_follows_the_layer_into_outputs(
    make_napari_viewer, qtbot, tmp_path, model_file, monkeypatch
):
    viewer = make_napari_viewer()
    layer = viewer.add_image(
        np.random.default_rng(1).random((3, 32, 32), dtype=np.float32),
        name="scan",
        scale=(0.5, 0.25, 0.25),
        translate=(7, 0, 0),
        units=("um",) * 3,
    )
    w = SegmentWidget(viewer)
    assert (w._voxel.z.value, w._voxel.y.value, w._voxel.x.value, w._voxel.unit.value) == (0.5, 0.25, 0.25, "um")
    layer.scale = (0.0125, 0.0125, 0.0125)  # kept exactly (a spin box showed and used 0.013)
    assert w._voxel.value() == ((0.0125, 0.0125, 0.0125), "um")
    w._voxel.x.native.setText("a lot")
    with pytest.raises(InputError, match="voxel size x is not a positive number"):
        w._voxel.value()
    layer.scale = (0.4, 0.2, 0.2)  # the fields follow the layer
    assert (w._voxel.z.value, w._voxel.x.value) == (0.4, 0.2)
    w._model_file.value = model_file
    w._device.value = "cpu"
    w._out.value = tmp_path / "w.zarr"
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert read_voxel_size(tmp_path / "w.zarr") == ((0.4, 0.2, 0.2), "um")
    new = viewer.layers["scan labels"]
    assert tuple(new.scale) == pytest.approx((0.4, 0.2, 0.2)) and tuple(new.translate) == (7, 0, 0)
    assert str(new.units[0]) == "micrometer" and list(new.features["name"]) == NAMES
    reopened = viewer.open(str(tmp_path / "w.zarr"), plugin="napari-xrayseg")[0]  # the same picture from the file
    np.testing.assert_allclose(new.colormap.map(np.arange(4)), reopened.colormap.map(np.arange(4)))
    assert tuple(reopened.scale) == pytest.approx(tuple(new.scale))
    # a voxel size typed in the widget wins, and says the layers are drawn at different sizes
    warnings = []
    monkeypatch.setattr("napari_xrayseg._napari.segment_widget.show_warning", warnings.append)
    w._voxel.unit.value = "nm"
    w._voxel.z.value = w._voxel.y.value = w._voxel.x.value = 100.0
    w._out.value = tmp_path / "nm.zarr"
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert read_voxel_size(tmp_path / "nm.zarr") == ((100.0, 100.0, 100.0), "nm")
    assert tuple(viewer.layers["scan labels [2]"].scale) == (100.0, 100.0, 100.0)
    assert any("drawn at different sizes" in m for m in warnings)


def test_pixel_layers_give_no_physical_size(make_napari_viewer, qtbot, tmp_path, model_file):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).random((2, 32, 32), dtype=np.float32), name="px", scale=(3, 1, 1))
    w = SegmentWidget(viewer)
    assert w._voxel.unit.value == "voxel"  # napari's pixel units: no guess written into files
    w._model_file.value = model_file
    w._device.value = "cpu"
    w._out.value = tmp_path / "px.zarr"
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert read_voxel_size(tmp_path / "px.zarr") is None
    assert tuple(viewer.layers["px labels"].scale) == (3, 1, 1)  # still drawn over the image


def test_a_layer_with_a_unit_per_axis_gives_each_axis_in_xs_unit(make_napari_viewer):
    """QA (s44 h5): scale (2, 1000, 1000) in (um, nm, nm) was taken as nm throughout: z 1000x too thin."""
    from napari_xrayseg._napari._voxel import layer_voxel_size

    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((2, 8, 8), np.float32), scale=(2, 1000, 1000), units=("um", "nm", "nm"))
    assert layer_voxel_size(layer) == ((2000.0, 1000.0, 1000.0), "nm")
    w = SegmentWidget(viewer)
    assert w._voxel.value() == ((2000.0, 1000.0, 1000.0), "nm")
    channels = viewer.add_image(
        np.zeros((2, 2, 8, 8), np.float32), scale=(1, 2, 1, 1), units=("pixel", "um", "um", "um")
    )
    assert layer_voxel_size(channels) == (
        (1.0, 2.0, 1.0, 1.0),
        "um",
    )  # a channel axis in pixels keeps its scale (review)
    pixels = viewer.add_labels(np.zeros((2, 8, 8), np.uint8), scale=(3, 1, 1))
    assert layer_voxel_size(pixels) is None  # napari's pixels: no physical size guessed


def test_train_widget_records_the_layers_voxel_size(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    image, truth = make_phantom((4, 64, 64), seed=3, artefacts=False)
    ann = np.zeros_like(truth)
    ann[[1, 2]] = truth[[1, 2]]
    viewer.add_image(image, name="img", scale=(0.1, 0.05, 0.05), units=("um",) * 3)
    viewer.add_labels(ann, name="painted", scale=(0.1, 0.05, 0.05))
    w = TrainWidget(viewer)
    w._size.value = "tiny"
    w._epochs.value = 1
    w._batch.value = 2
    w._patch.value = 32
    w._device.value = "cpu"
    w._out.value = tmp_path / "m.safetensors"
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: "img labels" in viewer.layers, timeout=120_000)
    info = load_model(tmp_path / "m.safetensors").info
    assert (info.voxel_size, info.unit) == ([0.1, 0.05, 0.05], "um")


def _microstructure_in_the_evaluate_widget(make_napari_viewer, qtbot, **layer_kw):
    """A 9^3 three-phase truth and a prediction with one wrong block, evaluated with the microstructure error."""
    from napari_xrayseg._napari.evaluate_widget import EvaluateWidget

    zz, yy, xx = np.indices((9, 9, 9)) // 3
    truth = ((zz + yy + xx) % 3 + 1).astype(np.uint8)
    pred = truth.copy()
    pred[4, 2:5, 2:5] = 1
    viewer = make_napari_viewer()
    p = viewer.add_labels(pred, name="pred", **layer_kw)
    t = viewer.add_labels(truth, name="truth", **layer_kw)
    w = EvaluateWidget(viewer)
    w._pred.value, w._truth.value = p, t
    w._physics.value = True
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    return viewer, w, pred, truth


def test_evaluate_widget_reports_the_microstructure_error(make_napari_viewer, qtbot):
    kw = {"scale": (0.1, 0.1, 0.1), "units": ("um",) * 3}
    _, w, _, _ = _microstructure_in_the_evaluate_widget(make_napari_viewer, qtbot, **kw)
    ms = w.report.microstructure
    assert ms["region"] == [[0, 9]] * 3 and ms["voxel_size"] == [0.1, 0.1, 0.1] and ms["unit"] == "um"
    assert "microstructure error on 0:9,0:9,0:9 (um)" in w._summary.value and "tpb_density" in w._summary.value
    assert all(v["error_percent"] is None for k, v in ms["errors"].items() if ".tortuosity_" in k)  # not asked
    assert not w._tortuosity.value and not w._tortuosity.native.isHidden()


def test_evaluate_and_analyze_widgets_read_a_pixel_unit_scale_alike(make_napari_viewer, qtbot):
    """QA s45: a layer with scale (2, 1, 1) in napari's pixel units was analysed on cubic voxels by the Evaluate
    widget, as 2 x 1 x 1 um by the Analyze widget (mean size error -7.5 % against -6.9 %)."""
    from napari_xrayseg._napari.analyze_widget import AnalyzeWidget
    from napari_xrayseg.core.metrics import evaluate

    viewer, w, pred, truth = _microstructure_in_the_evaluate_widget(make_napari_viewer, qtbot, scale=(2, 1, 1))
    p, t = viewer.layers["pred"], viewer.layers["truth"]
    ms = w.report.microstructure
    assert ms["voxel_size"] == [2.0, 1.0, 1.0] and ms["unit"] == "um"
    want = evaluate(pred, truth, microstructure={"tortuosity": False, "voxel_size": (2, 1, 1), "unit": "um"})
    assert ms["errors"] == want.microstructure["errors"]
    assert "voxel size 2 x 1 x 1 um: the prediction layer's scale (its units are pixel" in w._summary.value
    a = AnalyzeWidget(viewer)
    a._labels.value = p
    assert a._voxel.value() == ((2.0, 1.0, 1.0), "um")
    p.scale = t.scale = (1, 1, 1)  # no scale: voxel units, and nothing guessed
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.report.microstructure["unit"] == "voxel" and "pixel" not in w._summary.value


@pytest.mark.needs("taufactor")
def test_evaluate_widget_computes_tortuosity_when_ticked_as_the_cli_does(make_napari_viewer, qtbot):
    """QA (three doors): the widget's microstructure error never held tortuosity; --physics computes it."""
    from napari_xrayseg._napari.evaluate_widget import EvaluateWidget
    from napari_xrayseg.core.metrics import evaluate

    truth = np.ones((12, 12, 12), np.uint8)
    truth[:, :, 6:] = 2  # two slabs: tortuosity 1 along z and y
    pred = truth.copy()
    pred[5:7, 3:9, 4:8] = 1  # a bump into phase 2
    viewer = make_napari_viewer()
    p, t = viewer.add_labels(pred, name="pred"), viewer.add_labels(truth, name="truth")
    w = EvaluateWidget(viewer)
    assert w._tortuosity.native.isHidden()
    w._pred.value, w._truth.value = p, t
    w._physics.value = True
    w._tortuosity.value = True
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    got = w.report.microstructure["errors"]
    want = evaluate(pred, truth, ignore_zero=True, microstructure={"tortuosity": True}).microstructure["errors"]
    assert got["1.tortuosity_z"] == want["1.tortuosity_z"] and got["1.tortuosity_z"]["error_percent"] is not None
    assert "1.tortuosity_z" in w._summary.value
