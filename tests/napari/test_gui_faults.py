"""Widgets under load and faults: one job at a time, clean shutdown on close, nothing lost."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_xrayseg._napari.evaluate_widget import EvaluateWidget  # noqa: E402
from napari_xrayseg._napari.segment_widget import SegmentWidget  # noqa: E402
from napari_xrayseg._napari.train_widget import TrainWidget  # noqa: E402
from napari_xrayseg.core.inference import iter_segment, output_complete  # noqa: E402
from napari_xrayseg.core.sample import make_phantom  # noqa: E402


@pytest.fixture
def errors(monkeypatch):
    """Messages the widgets send to napari's error notifications."""
    shown: list[str] = []
    for mod in ("_jobs", "segment_widget", "evaluate_widget"):
        monkeypatch.setattr(f"napari_xrayseg._napari.{mod}.show_error", shown.append)
    return shown


def _segment_widget(viewer, model_file, shape=(256, 64, 64), out=None, name="big"):
    viewer.add_image(np.random.default_rng(0).random(shape, dtype=np.float32), name=name)
    w = SegmentWidget(viewer)
    w._model_file.value = model_file
    w._device.value = "cpu"
    w._batch.value = 1
    if out is not None:
        w._out.value = out
    return w


def _read_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("xrayseg-read")]


def _idle_pool() -> bool:
    from qtpy.QtCore import QThreadPool

    return QThreadPool.globalInstance().activeThreadCount() == 0


def test_a_second_job_in_the_same_widget_is_refused(make_napari_viewer, qtbot, model_file, errors):
    viewer = make_napari_viewer()
    w = _segment_widget(viewer, model_file)
    w._run.clicked.emit()
    first = w._job
    assert w.runner.running
    again = w.runner.start(iter_segment, desc="again", total=1, on_returned=lambda r: None, **w._inputs())
    assert again is None and w._job is first
    assert errors == ["a job is already running in this widget: wait for it or cancel it first"]
    w._run.clicked.emit()  # the button is Cancel while a job runs: it never starts a second one
    qtbot.waitUntil(lambda: not w.runner.running, timeout=30_000)
    assert w._job is first and not _read_threads()


def test_two_widgets_never_write_the_same_output(make_napari_viewer, qtbot, model_file, tmp_path, errors):
    viewer = make_napari_viewer()
    out = tmp_path / "seg.zarr"
    a = _segment_widget(viewer, model_file, shape=(6, 32, 32), out=out, name="v")
    b = SegmentWidget(viewer)
    b._model_file.value, b._device.value, b._out.value = model_file, "cpu", out
    a._run.clicked.emit()
    b._run.clicked.emit()
    qtbot.waitUntil(lambda: not a.runner.running and not b.runner.running, timeout=60_000)
    # refused up front, by the running one's lock or by the atomic claim
    assert len(errors) == 1 and ("exists" in errors[0] or "is being written by another run" in errors[0])
    assert output_complete(out)
    assert [ly.name for ly in viewer.layers].count("v labels") == 1


def test_closing_napari_during_a_job_cancels_it_cleanly(make_napari_viewer, qtbot, model_file, tmp_path):
    viewer = make_napari_viewer()
    out = tmp_path / "seg.zarr"
    w = _segment_widget(viewer, model_file, out=out)
    viewer.window.add_dock_widget(w, name="Segment")
    w._run.clicked.emit()
    worker = w._job
    qtbot.waitUntil(lambda: w._run.text == "Cancel" and out.exists(), timeout=30_000)  # running
    t0 = time.perf_counter()
    viewer.close()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=10_000)
    assert time.perf_counter() - t0 < 5
    assert worker.abort_requested is False  # stopped by the token, so the core cleaned up
    assert not output_complete(out)  # a readable partial output, marked incomplete
    qtbot.waitUntil(lambda: not _read_threads() and _idle_pool(), timeout=5_000)


def test_deleting_the_widget_during_a_job_cancels_it(make_napari_viewer, qtbot, model_file):
    viewer = make_napari_viewer()
    w = _segment_widget(viewer, model_file)
    w._run.clicked.emit()
    runner = w.runner
    t0 = time.perf_counter()
    w.native.deleteLater()
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)
    assert time.perf_counter() - t0 < 5 and runner.token.cancelled
    assert "big labels" not in viewer.layers
    qtbot.waitUntil(lambda: not _read_threads() and _idle_pool(), timeout=5_000)


def _training(viewer, tmp_path):
    image, truth = make_phantom((4, 64, 64), seed=1, artefacts=False)
    ann = np.zeros_like(truth)
    ann[[0, 2]] = truth[[0, 2]]
    viewer.add_image(image, name="img")
    viewer.add_labels(ann, name="painted")
    w = TrainWidget(viewer)
    w._size.value, w._epochs.value, w._batch.value, w._patch.value = "tiny", 10_000, 1, 16
    w._device.value, w._out.value = "cpu", tmp_path / "m.safetensors"
    return w


def test_closing_napari_before_the_first_epoch_writes_nothing(make_napari_viewer, qtbot, tmp_path):
    """A widget never docked (made in the console): napari before 0.6.5 did not cancel its job on close (QA h4)."""
    viewer = make_napari_viewer()
    w = _training(viewer, tmp_path)
    w._run.clicked.emit()
    assert w.runner.running
    try:
        viewer.close()
        qtbot.waitUntil(lambda: not w.runner.running, timeout=10_000)
        assert not (tmp_path / "m.safetensors").exists()
        qtbot.waitUntil(_idle_pool, timeout=5_000)
    finally:  # failed, its 10,000 epochs ran on into every later test (QA h4)
        w.runner.shutdown()


@pytest.mark.parametrize("how", ["dock x", "napari closed"])
def test_closing_the_dock_or_napari_mid_training_keeps_the_model_so_far(
    make_napari_viewer, qtbot, tmp_path, how, monkeypatch
):
    """The dock's "x" only takes the widget out of its dock: the job is cancelled all the same (it ran on,
    out of reach, before), and what Cancel would save is saved."""
    from napari_xrayseg._napari import train_widget
    from napari_xrayseg.core.models import load_model

    said = []
    monkeypatch.setattr(train_widget, "show_info", said.append)
    viewer = make_napari_viewer(show=True)
    w = _training(viewer, tmp_path)
    dock = viewer.window.add_dock_widget(w, name="Train")
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: len(w.plot.epochs) >= 1, timeout=60_000)  # an epoch done: something to keep
    runner = w.runner
    if how == "dock x":
        dock.title.close_button.click()
    else:
        viewer.close()
    # the close waited for the job's thread: exiting Python right away aborted napari (QA), and the save ran on
    assert runner._done.is_set() and (tmp_path / "m.safetensors").exists()
    qtbot.waitUntil(lambda: not runner.running, timeout=20_000)
    assert runner.token.cancelled
    m = load_model(tmp_path / "m.safetensors")  # saved, complete, loadable
    assert len(m.info.history) >= 1
    assert any("training stopped as its panel closed; the model so far" in t for t in said)  # QA h5: said
    if how == "dock x":
        qtbot.wait(200)
        assert "img labels" not in viewer.layers  # no chained segmentation from a closed widget
    qtbot.waitUntil(_idle_pool, timeout=5_000)


def test_disk_full_in_the_segment_widget_is_a_notification(
    make_napari_viewer, qtbot, model_file, tmp_path, errors, monkeypatch
):
    import zarr.storage._local as local

    real = local._put

    def put(path, value, exclusive=False):
        if "c" in Path(path).parts:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", put)
    viewer = make_napari_viewer()
    w = _segment_widget(viewer, model_file, shape=(3, 32, 32), out=tmp_path / "o.zarr", name="v")
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=30_000)
    assert len(errors) == 1 and "no space left on device" in errors[0] and "o.zarr" in errors[0]
    assert [ly.name for ly in viewer.layers] == ["v"]  # no layer from a failed job


def test_existing_layers_are_never_replaced(make_napari_viewer, qtbot, model_file):
    viewer = make_napari_viewer()
    w = _segment_widget(viewer, model_file, shape=(2, 32, 32), name="v")
    mine = viewer.add_labels(np.full((2, 32, 32), 7, np.uint8), name="v labels")
    for _ in range(2):
        w._run.clicked.emit()
        qtbot.waitUntil(lambda: not w.runner.running, timeout=30_000)
    assert [ly.name for ly in viewer.layers] == ["v", "v labels", "v labels [2]", "v labels [3]"]
    assert viewer.layers["v labels"] is mine and (mine.data == 7).all()


def test_user_labels_are_bit_identical_after_training_and_evaluation(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    image, truth = make_phantom((4, 64, 64), seed=2, artefacts=False)
    ann = np.zeros_like(truth)
    ann[[0, 2]] = truth[[0, 2]]
    viewer.add_image(image, name="img")
    painted = viewer.add_labels(ann, name="painted")
    snap = painted.data.copy()
    w = TrainWidget(viewer)
    w._size.value, w._epochs.value, w._batch.value, w._patch.value = "tiny", 1, 1, 16
    w._device.value, w._out.value = "cpu", tmp_path / "m.safetensors"
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: "img labels" in viewer.layers and not w.runner.running, timeout=120_000)
    assert painted.data.tobytes() == snap.tobytes() and painted.data.dtype == snap.dtype

    ev = EvaluateWidget(viewer)
    ev._pred.value, ev._truth.value = viewer.layers["img labels"], painted
    ev._run.clicked.emit()
    qtbot.waitUntil(lambda: not ev.runner.running, timeout=60_000)
    assert ev.report is not None
    ev._add_errors.clicked.emit()
    assert painted.data.tobytes() == snap.tobytes()
    assert painted is viewer.layers["painted"]


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.full((2, 32, 32), 3.0, np.float32), "image is constant"),
        (np.where(np.eye(32, dtype=bool), np.inf, 1.0).astype(np.float32)[None].repeat(2, 0), "inf values"),
    ],
)
def test_bad_image_in_the_segment_widget_is_a_notification(make_napari_viewer, qtbot, model_file, errors, image, match):
    viewer = make_napari_viewer()
    viewer.add_image(image, name="bad")
    w = SegmentWidget(viewer)
    w._model_file.value, w._device.value = model_file, "cpu"
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=30_000)
    assert len(errors) == 1 and match in errors[0] and errors[0].startswith("Segmenting bad: ")
    assert [ly.name for ly in viewer.layers] == ["bad"]


def test_a_removed_labels_layer_falls_back_to_painted_ones_not_predictions(make_napari_viewer, monkeypatch):
    """Previews and error maps are never offered as labels to learn from; a model's segmentation comes last,
    and training on one is warned about."""
    from napari_xrayseg._napari import train_widget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 16, 16), np.float32), name="img")
    z = np.zeros((4, 16, 16), np.uint8)
    viewer.add_labels(z, name="pred", metadata={"napari_xrayseg": {"model": "m.safetensors", "axis": 0}})
    viewer.add_labels(z, name="img preview", metadata={"napari_xrayseg": {"preview_of": "img", "index": 0}})
    viewer.add_labels(z, name="errs", metadata={"napari_xrayseg": {"kind": "errors"}})
    viewer.add_labels(z, name="painted")
    viewer.add_labels(z, name="painted 2")
    w = TrainWidget(viewer)
    assert [c for c in w._labels.choices] == [viewer.layers[n] for n in ("painted", "painted 2", "pred")]
    w._labels.value = viewer.layers["painted 2"]
    viewer.layers.remove("painted 2")
    assert w._labels.value is viewer.layers["painted"]  # the user's own, not the prediction
    warned: list[str] = []
    monkeypatch.setattr(train_widget, "show_warning", warned.append)
    w._labels.value = viewer.layers["pred"]
    w._out.value = "m.safetensors"
    try:
        w._inputs()
    except Exception:  # noqa: BLE001 - only the warning matters here (the labels are empty)
        pass
    assert warned and "'pred', a model's segmentation" in warned[0]


def test_a_jobs_warnings_are_its_own_threads_only():
    """Two windows segmenting at once: one job's end showed the other's no-data hint (the handler took every
    thread's warnings)."""
    import logging
    import threading

    from napari_xrayseg._napari._jobs import _Warnings

    h = _Warnings()
    h.threads.add(threading.get_ident())
    log = logging.getLogger("napari_xrayseg.test")
    log.addHandler(h)
    try:
        log.warning("mine")
        other = threading.Thread(target=lambda: log.warning("another job's"))
        helper = threading.Thread(target=lambda: log.warning("my read-ahead's"), name="xrayseg-read_0")
        for t in (other, helper):
            t.start()
            t.join()
    finally:
        log.removeHandler(h)
    assert h.messages == ["mine", "my read-ahead's"]


def test_a_runtime_error_in_a_job_ends_it_with_a_message(make_napari_viewer, qtbot, model_file, errors):
    """superqt takes a RuntimeError from a job for a deleted worker and emits neither errored nor finished: a
    CUDA out-of-memory error in training (torch.OutOfMemoryError is a RuntimeError) left the widget 'running'
    with no message, a second run refused (QA, GPU paths)."""
    import torch

    viewer = make_napari_viewer()
    w = _segment_widget(viewer, model_file)

    def job(fault, cancel=None):
        yield from ()
        raise fault

    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 7.79 GiB total)")
    w.runner.start(job, desc="Training", total=1, on_returned=lambda r: None, fault=oom)
    qtbot.waitUntil(lambda: not w.runner.running, timeout=30_000)
    assert len(errors) == 1 and errors[0].startswith("Training: out of memory training (GPU: CUDA out of memory")
    assert w._run.text != "Cancel"
    with qtbot.capture_exceptions() as raised:  # a bug goes to napari's error report, and the widget is free
        w.runner.start(job, desc="Segmenting", total=1, on_returned=lambda r: None, fault=RuntimeError("boom"))
        qtbot.waitUntil(lambda: not w.runner.running, timeout=30_000)
    assert [type(e[1]).__name__ for e in raised] == ["JobBug"] and str(raised[0][1]) == "RuntimeError: boom"
    from napari_xrayseg._napari._jobs import JobBug

    assert issubclass(JobBug, Exception) and not issubclass(JobBug, RuntimeError)


def test_making_a_widget_warns_of_no_private_napari_access(make_napari_viewer):
    """QA h6: every widget made printed napari 0.9's FutureWarning about ``Window._qt_window`` (the close hook's
    guarded access), which a user reads as a fault of the plugin."""
    import warnings

    viewer = make_napari_viewer()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        viewer.window.add_plugin_dock_widget("napari-xrayseg", "Segment")
    assert not [w for w in seen if "_qt_window" in str(w.message)]
