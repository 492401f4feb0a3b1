from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_xrayseg._napari.evaluate_widget import EvaluateWidget  # noqa: E402

# truth: slice 0 all class 1 (left) / class 2 (right); slice 1 not annotated; slice 2 half painted
TRUTH = np.zeros((3, 8, 10), np.uint8)
TRUTH[0, :, :5], TRUTH[0, :, 5:] = 1, 2
TRUTH[2, :4, :5] = 1
PRED = TRUTH.copy()
PRED[0, :2, :5] = 2  # 10 wrong-class voxels
PRED[0, 6:, 5:] = 0  # 10 missed voxels
PRED[1] = 1  # unannotated slice: not scored
PRED[2, 4:] = 2  # unannotated voxels: not scored
# class 1: TP 30 + 20, FN 10 (-> 2) ; class 2: TP 30, FP 10, FN 10 (-> 0)
DICE_1 = 2 * 50 / (2 * 50 + 10)
DICE_2 = 2 * 30 / (2 * 30 + 10 + 10)


def _wait(qtbot, w):
    # Evaluating these tiny arrays can finish before a waitSignal would connect (the
    # worker emits ``finished`` from its own thread), so wait on the runner's state.
    assert w._job is not None
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)


def _cell(table, row, column):
    d = table.to_dict(orient="split")
    return d["data"][d["index"].index(row)][d["columns"].index(column)]


@pytest.fixture
def evaluated(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    truth = viewer.add_labels(TRUTH.copy(), name="truth", scale=(2, 1, 1), translate=(10, 0, 0))
    pred = viewer.add_labels(PRED.copy(), name="prediction", scale=(2, 1, 1), translate=(10, 0, 0))
    w = EvaluateWidget(viewer)
    assert w._pred.value is pred and w._truth.value is truth  # guessed from the names
    w._run.clicked.emit()
    assert w.runner.running
    _wait(qtbot, w)
    assert w._run.text == "Evaluate"
    return viewer, w


def test_report_is_shown(evaluated):
    viewer, w = evaluated
    r = w.report
    assert r is not None and r.n_voxels == 100
    assert r.provenance["inputs"] == {"prediction": {"layer": "prediction"}, "truth": {"layer": "truth"}}
    assert r.per_class[1]["dice"] == pytest.approx(DICE_1)
    assert float(_cell(w._table, "class 1", "Dice")) == pytest.approx(DICE_1, abs=1e-4)
    assert float(_cell(w._table, "class 2", "Dice")) == pytest.approx(DICE_2, abs=1e-4)
    assert float(_cell(w._table, "mean", "Dice")) == pytest.approx((DICE_1 + DICE_2) / 2, abs=1e-4)
    assert int(_cell(w._table, "class 2", "voxels pred")) == 40
    assert int(_cell(w._confusion, "truth 1", "pred 2").replace(",", "")) == 10
    assert int(_cell(w._confusion, "truth 2", "pred 0").replace(",", "")) == 10
    assert "accuracy 0.8000 on 100 voxels" in w._summary.value
    assert "over 2 annotated slices (axis 0)" in w._summary.value
    assert len(w._figure.axes) == 1
    # user layers unchanged
    np.testing.assert_array_equal(viewer.layers["truth"].data, TRUTH)
    np.testing.assert_array_equal(viewer.layers["prediction"].data, PRED)
    assert len(viewer.layers) == 2


def test_error_layer(evaluated):
    viewer, w = evaluated
    w._add_errors.clicked.emit()
    layer = viewer.layers["prediction errors"]
    assert isinstance(layer, napari.layers.Labels)
    data = np.asarray(layer.data)
    assert np.count_nonzero(data) == 20 == w.report.n_voxels - np.trace(w.report.confusion_matrix)
    assert np.count_nonzero(data == 1) == 10 and np.count_nonzero(data == 2) == 10
    assert not data[1].any()  # the unannotated slice has no errors
    assert tuple(layer.scale) == (2, 1, 1) and tuple(layer.translate) == (10, 0, 0)
    assert layer.metadata["napari_xrayseg"]["encoding"]["2"] == "missed"
    w._add_errors.clicked.emit()
    assert "prediction errors [2]" in viewer.layers  # never replaces a layer
    np.testing.assert_array_equal(viewer.layers["truth"].data, TRUTH)


def test_error_layer_is_lazy_for_dask(make_napari_viewer, qtbot):
    import dask.array as da

    viewer = make_napari_viewer()
    viewer.add_labels(da.from_array(TRUTH, chunks=(1, 8, 10)), name="truth")
    viewer.add_labels(da.from_array(PRED, chunks=(1, 8, 10)), name="pred")
    w = EvaluateWidget(viewer)
    w._zero.value = True  # 0 is a class: every voxel scored
    w._run.clicked.emit()
    _wait(qtbot, w)
    assert w.report.n_voxels == TRUTH.size and 0 in w.report.classes
    w._add_errors.clicked.emit()
    data = viewer.layers["pred errors"].data
    assert isinstance(data, da.Array)
    expected = w.report.n_voxels - np.trace(w.report.confusion_matrix)
    assert int(np.count_nonzero(data.compute())) == expected


def test_export_writes_and_refuses_overwrite(evaluated, tmp_path, monkeypatch):
    _, w = evaluated
    errors = []
    monkeypatch.setattr("napari_xrayseg._napari.evaluate_widget.show_error", errors.append)
    w._export_path.value = tmp_path / "run1.csv"
    w._export.clicked.emit()
    assert not errors
    assert (tmp_path / "run1.csv").read_text().startswith("class,dice")
    assert '"mean_dice"' in (tmp_path / "run1.json").read_text()
    before = (tmp_path / "run1.json").read_text()
    w._export_path.value = tmp_path / "run1"
    w._export.clicked.emit()
    assert errors and "exist" in errors[0]
    assert (tmp_path / "run1.json").read_text() == before


def test_plot_click_moves_the_viewer(evaluated):
    viewer, w = evaluated
    ax = w._figure.axes[0]
    w._on_plot_click(SimpleNamespace(inaxes=ax, xdata=2.2, ydata=0.5))
    assert viewer.dims.point[0] == pytest.approx(10 + 2 * 2)
    assert viewer.dims.current_step[0] == 2
    w._on_plot_click(SimpleNamespace(inaxes=None, xdata=None, ydata=None))  # outside: ignored
    assert viewer.dims.current_step[0] == 2
    # through matplotlib's own callback machinery
    from matplotlib.backend_bases import MouseButton, MouseEvent

    w._canvas.draw()
    x, y = ax.transData.transform((0, sum(ax.get_ylim()) / 2))
    MouseEvent("button_press_event", w._canvas, x, y, MouseButton.LEFT)._process()
    assert viewer.dims.current_step[0] == 0


def test_bad_input_is_reported(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_labels(TRUTH, name="truth")
    errors = []
    monkeypatch.setattr("napari_xrayseg._napari.evaluate_widget.show_error", errors.append)
    w = EvaluateWidget(viewer)
    w._run.clicked.emit()  # one layer only: same layer twice
    assert errors and "same layer" in errors[0]
    viewer.add_labels(TRUTH[:, :4], name="small")
    w._pred.value = viewer.layers["small"]
    w._truth.value = viewer.layers["truth"]
    w._run.clicked.emit()
    assert "shape" in errors[-1] and not w.runner.running
    w._export.clicked.emit()  # disabled before any evaluation; the handler also guards
    assert w.report is None


def test_the_slices_a_model_trained_on_are_scored_apart(make_napari_viewer, qtbot):
    # the Segment and Train widgets record them in the prediction layer's metadata
    viewer = make_napari_viewer()
    viewer.add_labels(TRUTH.copy(), name="truth")
    meta = {"napari_xrayseg": {"model": "m.safetensors", "trained_on": {"axis": 0, "slices": [0]}}}
    viewer.add_labels(PRED.copy(), name="prediction", metadata=meta)
    w = EvaluateWidget(viewer)
    w._run.clicked.emit()
    _wait(qtbot, w)
    r = w.report
    assert r.trained_slices == [0] and r.held_out["n_slices"] == 1 and r.held_out["mean_dice"] == 1.0
    assert "held out from training: mean Dice 1.0000" in w._summary.value and "slice 0 along axis 0" in w._summary.value
    assert "held out from training" in w._figure.axes[0].get_title()
    w._axis.value = 1  # slices of another axis: not those it trained on
    w._run.clicked.emit()
    _wait(qtbot, w)
    assert w.report.held_out is None and "held out" not in w._summary.value


def test_layers_drawn_at_another_scale_are_warned_about(make_napari_viewer, qtbot, monkeypatch):
    """Labels painted over an image at scale (2, 1, 1) were scored voxel for voxel against one at (1, 1, 1)."""
    import napari_xrayseg._napari.evaluate_widget as ev

    said = []
    monkeypatch.setattr(ev, "show_warning", said.append)
    viewer = make_napari_viewer()
    viewer.add_labels(TRUTH.copy(), name="truth", scale=(2, 1, 1))
    viewer.add_labels(PRED.copy(), name="prediction")
    w = EvaluateWidget(viewer)
    w._run.clicked.emit()
    _wait(qtbot, w)
    assert (
        len(said) == 1
        and "'truth' is drawn at scale (2, 1, 1), translate (0, 0, 0), 'prediction' at (1, 1, 1)" in (said[0])
    )


def test_the_users_pick_of_prediction_stays_when_a_segmentation_is_added(make_napari_viewer):
    """QA h5: the user picked 'otsu' as Prediction; Segment then added 'img labels' and the box switched to it, so
    the next Evaluate scored a layer the user had not chosen. The summary now names both layers too."""
    from napari_xrayseg._napari.evaluate_widget import EvaluateWidget

    viewer = make_napari_viewer()
    truth = np.ones((2, 8, 8), np.uint8)
    viewer.add_labels(truth, name="truth")
    otsu = viewer.add_labels(truth.copy(), name="otsu")
    viewer.add_labels(truth.copy(), name="other")
    w, fresh = EvaluateWidget(viewer), EvaluateWidget(viewer)
    assert w._pred.value is not otsu
    w._pred.value = otsu  # the user's pick; fresh has none
    made = viewer.add_labels(truth.copy(), name="img labels", metadata={"napari_xrayseg": {"model": {"arch": "unet"}}})
    assert w._pred.value is otsu and fresh._pred.value is made  # unpicked: the new segmentation is what to score
