"""What users do while a job runs: remove the layer it reads, paint into its input, double-click Run.

Each action happens on the GUI thread right after Run is pressed, before the job can hand back a
result (results are delivered on this thread): no test here depends on how fast the job is.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_xrayseg._napari.analyze_widget import AnalyzeWidget  # noqa: E402
from napari_xrayseg._napari.evaluate_widget import EvaluateWidget  # noqa: E402
from napari_xrayseg._napari.segment_widget import SegmentWidget  # noqa: E402
from napari_xrayseg._napari.train_widget import TrainWidget  # noqa: E402
from napari_xrayseg.core.figures import error_map  # noqa: E402
from napari_xrayseg.core.microstructure import analyze  # noqa: E402
from napari_xrayseg.core.sample import make_phantom  # noqa: E402


@pytest.fixture
def warnings(monkeypatch):
    shown: list[str] = []
    for mod in ("segment_widget", "train_widget"):
        monkeypatch.setattr(f"napari_xrayseg._napari.{mod}.show_warning", shown.append)
    return shown


def _wait(qtbot, w):
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)


def test_a_segmentation_of_a_removed_image_layer_is_not_named_after_its_successor(
    make_napari_viewer, qtbot, model_file, warnings
):
    """It was added as 'img labels' over the new layer of that name, its metadata naming that layer."""
    viewer = make_napari_viewer()
    img = viewer.add_image(np.random.default_rng(0).random((4, 32, 32), dtype=np.float32), name="img")
    w = SegmentWidget(viewer)
    w._model_file.value, w._device.value = model_file, "cpu"
    w._image.value = img
    w._run.clicked.emit()
    viewer.layers.remove(img)
    viewer.add_image(np.zeros((4, 32, 32), np.float32), name="img")  # other data under the same name
    _wait(qtbot, w)
    assert "img labels" not in viewer.layers
    result = viewer.layers["img (removed) labels"]
    assert result.metadata["napari_xrayseg"]["source"] == "img (removed)"
    assert any("'img' was removed while the job ran" in m for m in warnings)


def test_training_does_not_segment_an_image_layer_removed_meanwhile(make_napari_viewer, qtbot, tmp_path, warnings):
    viewer = make_napari_viewer()
    image, truth = make_phantom((6, 32, 32), seed=11, artefacts=False)
    ann = np.zeros_like(truth)
    ann[[1, 4]] = truth[[1, 4]]
    viewer.add_image(np.zeros_like(image), name="other")  # an image stays in the viewer
    img = viewer.add_image(image, name="img")
    viewer.add_labels(ann, name="painted")
    w = TrainWidget(viewer)
    w._image.value = img
    w._arch.value, w._size.value, w._context.value = "unet", "tiny", 1
    w._epochs.value, w._batch.value, w._patch.value, w._device.value = 1, 2, 32, "cpu"
    w._out.value = tmp_path / "m.safetensors"
    assert w._segment_after.value
    w._run.clicked.emit()
    viewer.layers.remove(img)
    _wait(qtbot, w)
    assert (tmp_path / "m.safetensors").is_file()
    assert not [la.name for la in viewer.layers if "labels" in la.name]
    assert any("'img' was removed during training: not segmented" in m for m in warnings)


def _checkerboard(n=12, b=3):
    zz, yy, xx = np.indices((n, n, n)) // b
    return ((zz + yy + xx) % 3 + 1).astype(np.uint8)


def test_analyze_reads_the_labels_as_they_were_when_run_was_pressed(make_napari_viewer, qtbot):
    """Its table came from one state and its TPB points from the repainted one."""
    viewer = make_napari_viewer()
    lab = _checkerboard()
    layer = viewer.add_labels(lab.copy(), name="phases")
    w = AnalyzeWidget(viewer)
    w._labels.value = layer
    w._tortuosity.value = False
    w._run.clicked.emit()
    layer.data[:, :, :6] = 1  # the user paints
    _wait(qtbot, w)
    expected = analyze(lab, outside=0 if w._outside.value else None)
    assert w.result.tpb_edges == expected.tpb_edges > 0
    w._add_tpb.clicked.emit()
    assert len(viewer.layers["phases TPB"].data) == expected.tpb_edges


def test_evaluate_and_its_error_layer_use_the_layers_as_they_were_when_run_was_pressed(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    truth = _checkerboard()
    pred = truth.copy()
    pred[:, :2] = 1
    pred_layer = viewer.add_labels(pred.copy(), name="pred")
    truth_layer = viewer.add_labels(truth.copy(), name="truth")
    w = EvaluateWidget(viewer)
    w._pred.value, w._truth.value = pred_layer, truth_layer
    w._run.clicked.emit()
    truth_layer.data[:] = pred  # the user edits the truth
    _wait(qtbot, w)
    w._add_errors.clicked.emit()
    errors = viewer.layers["pred errors"].data
    np.testing.assert_array_equal(errors, error_map(pred, truth, ignore_zero=not w._zero.value))
    assert (errors > 0).any()


def test_a_double_click_on_run_does_not_cancel_the_job_it_starts(make_napari_viewer, qtbot, model_file):
    """The button becomes Cancel as the job starts: the second click cancelled it, leaving nothing."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).random((16, 32, 32), dtype=np.float32), name="img")
    w = SegmentWidget(viewer)
    w._model_file.value, w._device.value = model_file, "cpu"
    w._run.clicked.emit()
    assert not w._run.native.isEnabled()
    qtbot.mouseClick(w._run.native, Qt.MouseButton.LeftButton)  # the double click's second click
    assert not w.runner.token.cancelled
    qtbot.waitUntil(w._run.native.isEnabled, timeout=10_000)  # Cancel works after the interval
    _wait(qtbot, w)
    assert "img labels" in viewer.layers


def test_the_progress_line_and_the_run_button_stay_in_view_in_a_short_window(make_napari_viewer):
    viewer = make_napari_viewer()
    for w, status in ((t := TrainWidget(viewer), t._status), (s := SegmentWidget(viewer), s._info)):
        assert not w.scroll.isAncestorOf(status.native) and not w.scroll.isAncestorOf(w._run.native)
        assert w.native.isAncestorOf(status.native) and w.native.isAncestorOf(w._run.native)
