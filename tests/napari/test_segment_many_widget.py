"""The Segment widget over every selected Image layer: one Labels layer each, in a real worker thread."""

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_xrayseg._napari.segment_widget import SegmentWidget  # noqa: E402
from napari_xrayseg.core.inference import segment  # noqa: E402
from napari_xrayseg.core.writer import read_output_meta  # noqa: E402


def _viewer_with_layers(make_napari_viewer, **kw):
    viewer = make_napari_viewer(**kw)
    rng = np.random.default_rng(0)
    vol = viewer.add_image(rng.random((5, 40, 48), dtype=np.float32), name="vol", scale=(2, 1, 1))
    rad = viewer.add_image(rng.random((48, 40), dtype=np.float32), name="radio/graph")
    viewer.add_image(rng.random((3, 32, 32), dtype=np.float32), name="not selected")
    ann = viewer.add_labels(np.zeros((5, 40, 48), np.uint8), name="annotations")
    viewer.layers.selection = {vol, rad, ann}  # a Labels layer in the selection is ignored
    return viewer, vol, rad


def test_every_selected_image_layer_gets_its_labels(make_napari_viewer, qtbot, model_file):
    viewer, vol, rad = _viewer_with_layers(make_napari_viewer, show=True)
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Segment")
    w._selected.value = True
    w._model_file.value = model_file
    w._device.value = "cpu"
    w._axis.value = 1  # volumes along y; the 2D image is one slice whatever the axis
    w._run.clicked.emit()
    assert w.runner.running and w._run.text == "Cancel"
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    names = [la.name for la in viewer.layers]
    assert "vol labels" in names and "radio/graph labels" in names and "not selected labels" not in names
    got = viewer.layers["vol labels"]
    assert isinstance(got, napari.layers.Labels) and tuple(got.scale) == (2, 1, 1)
    np.testing.assert_array_equal(np.asarray(got.data), segment(vol.data, model_file, axis=1, device="cpu"))
    np.testing.assert_array_equal(
        np.asarray(viewer.layers["radio/graph labels"].data), segment(rad.data, model_file, device="cpu")
    )
    assert not np.any(viewer.layers["annotations"].data)
    shot = viewer.screenshot(canvas_only=False)
    assert shot.ndim == 3 and shot[..., :3].std() > 1


def test_selected_layers_to_a_folder_of_zarr_backed_layers(make_napari_viewer, qtbot, model_file, tmp_path, segment_to):
    import dask.array as da

    viewer, _, _ = _viewer_with_layers(make_napari_viewer)
    segment_to(viewer, tmp_path / "labels", selected=True)
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["radio_graph.zarr", "vol.zarr"]
    for name, shape in (("vol labels", (5, 40, 48)), ("radio/graph labels", (48, 40))):
        layer = viewer.layers[name]
        assert isinstance(layer.data, da.Array) and layer.data.shape == shape
    # each store names the layer it was made from (QA: "numpy.ndarray" of a shape)
    for store, layer in (("vol.zarr", "vol"), ("radio_graph.zarr", "radio/graph")):
        rec = read_output_meta(tmp_path / "labels" / store)["provenance"]
        assert rec["inputs"]["image"] == {"layer": layer}, rec["inputs"]


def test_cancel_keeps_the_finished_layers(make_napari_viewer, qtbot, model_file):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(1)
    small = viewer.add_image(rng.random((2, 32, 32), dtype=np.float32), name="small")
    big = viewer.add_image(rng.random((400, 64, 64), dtype=np.float32), name="big")
    viewer.layers.selection = {small, big}
    w = SegmentWidget(viewer)
    w._selected.value = True
    w._model_file.value = model_file
    w._device.value = "cpu"
    w._batch.value = 1
    w._tile.value = 32  # sliding windows, one per forward pass: "big" takes a while
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: "small labels" in viewer.layers, timeout=60_000)
    assert w.runner.running
    w._run.clicked.emit()  # Cancel
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert "small labels" in viewer.layers and "big labels" not in viewer.layers
    assert w._run.text == "Segment"


def test_no_image_layer_selected_is_one_message(make_napari_viewer, monkeypatch, model_file):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 32, 32), np.float32), name="v")
    viewer.layers.selection = set()
    w = SegmentWidget(viewer)
    w._selected.value = True
    w._model_file.value = model_file
    errors = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.show_error", errors.append)
    w._run.clicked.emit()
    assert errors == ["no image layer selected: select Image layers in the layer list (Ctrl/Shift-click)"]
    assert not w.runner.running


def test_selected_layers_keep_their_voxel_size_in_the_outputs(
    make_napari_viewer, qtbot, model_file, tmp_path, segment_to
):
    """QA: every output of "every selected image layer" recorded no voxel size (reopened at scale 1); then
    layers of different voxel sizes recorded none and no layer's origin was recorded (crops of one scan
    reopened at 0)."""
    from napari_xrayseg.core.io import read_origin, read_voxel_size

    viewer = make_napari_viewer()
    rng = np.random.default_rng(1014)
    kw = {"scale": (0.1, 0.05, 0.05), "units": ("um", "um", "um")}
    a = viewer.add_image(rng.random((4, 32, 32), dtype=np.float32), name="a", **kw)
    b = viewer.add_image(rng.random((4, 32, 32), dtype=np.float32), name="b", **kw)
    c = viewer.add_image(
        rng.random((4, 32, 32), dtype=np.float32), name="c", scale=(0.2, 0.1, 0.1), units="um", translate=(8, 0, 2)
    )
    viewer.layers.selection = {a, b, c}
    segment_to(viewer, tmp_path / "labels", selected=True)
    for name in ("a", "b"):
        assert read_voxel_size(tmp_path / "labels" / f"{name}.zarr") == ((0.1, 0.05, 0.05), "um")
        assert tuple(viewer.layers[f"{name} labels"].scale) == pytest.approx((0.1, 0.05, 0.05))
        assert read_origin(tmp_path / "labels" / f"{name}.zarr") is None
    assert read_voxel_size(tmp_path / "labels" / "c.zarr") == ((0.2, 0.1, 0.1), "um")
    origin, unit = read_origin(tmp_path / "labels" / "c.zarr")
    assert origin == pytest.approx((8, 0, 2)) and unit == "um"
    assert tuple(viewer.layers["c labels"].translate) == pytest.approx((8, 0, 2))


def test_layer_names_that_windows_keeps_for_devices_make_files_it_can_write():
    """QA (Windows): a layer named 'aux' gave the batch output aux.tif, the AUX device there."""
    from napari_xrayseg._napari.segment_widget import _file_name

    assert [_file_name(n) for n in ("aux", "Con.scan", "com1", "nul ", "a/b: c", "auxiliary", "", "lpt0")] == [
        "aux_",
        "Con_.scan",
        "com1_",
        "nul_",
        "a_b_ c",
        "auxiliary",
        "image",
        "lpt0",
    ]


def test_the_segment_widget_passes_its_precision_as_predict_does(make_napari_viewer, qtbot, model_file, tmp_path):
    """QA (three doors): the Segment widget had no precision (xrayseg predict --precision): a run made elsewhere in
    fp32 could not be repeated in napari on a CPU or GPU whose 'auto' is bf16 or fp16."""
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(1527).random((3, 32, 32), dtype=np.float32), name="v")
    w = SegmentWidget(viewer)
    w._model_file.value = model_file
    assert w._precision.value == "auto"
    w._precision.value = "bf16"  # not what "auto" picks on a CPU without native bf16 (nor on a GPU: fp16)
    w._out.value = tmp_path / "o.zarr"
    w._device.value = "cpu"
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert read_output_meta(tmp_path / "o.zarr")["precision"] == "bf16"
