"""A long napari session: closed panels, finished jobs and removed layers leave nothing behind (QA s44 h2).

napari 0.9 keeps every worker a plugin starts (its task list holds ``worker.quit``) and holds a plain
function connected to a layer-list event strongly. Through them a closed Train or Annotate panel lived on
(+7 MB a close, and 22 notifications for one new layer after 11 closes), each Train run kept its copy of
the annotations, and an image layer removed while the Annotate panel was open was never freed.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from magicgui.widgets import PushButton  # noqa: E402

from napari_xrayseg._napari._jobs import JobRunner, LatestRunner  # noqa: E402
from napari_xrayseg._napari.annotate_widget import AnnotateWidget  # noqa: E402
from napari_xrayseg.core.progress import Progress  # noqa: E402
from napari_xrayseg.core.sample import make_phantom  # noqa: E402
from napari_xrayseg.core.training import train  # noqa: E402


def _collected(qtbot, ref: weakref.ref) -> bool:
    for _ in range(20):
        qtbot.wait(20)  # Qt's deferred deletions, queued signals
        gc.collect()
        if ref() is None:
            return True
    return False


@pytest.mark.parametrize("name", ["Train", "Annotate"])
def test_a_closed_panel_is_freed_and_no_longer_answers_new_layers(make_napari_viewer, qtbot, monkeypatch, name):
    import napari.utils.notifications as notifications

    viewer = make_napari_viewer()
    image, truth = make_phantom((4, 32, 32), seed=1741)
    viewer.add_image(image, name="img")
    viewer.add_labels(truth, name="PXCT truth")  # a reference: a new layer to paint on replaces it in the box
    said: list[str] = []
    monkeypatch.setattr(notifications, "show_info", lambda msg, *a, **k: said.append(msg))
    dock, w = viewer.window.add_plugin_dock_widget("napari-xrayseg", name)
    viewer.add_labels(np.zeros_like(truth), name="my paint")
    assert said == [f"{w._labels.label}: 'my paint' (added) instead of 'PXCT truth'"]  # open: it follows
    ref = weakref.ref(w)
    viewer.window.remove_dock_widget(dock)  # the dock's "x"
    del w, dock
    assert _collected(qtbot, ref), f"the closed {name} panel is still alive"
    said.clear()
    viewer.add_labels(np.zeros_like(truth), name="more paint")
    assert said == []  # nobody left to answer


def test_a_finished_job_lets_go_of_its_inputs(make_napari_viewer, qtbot):
    make_napari_viewer()  # napari registers the workers with the current viewer's task list

    def count(data, cancel=None):
        yield Progress(0, 1, "counting")
        return int(data.sum())

    def job_of(arr):  # a widget's closure over its inputs
        return lambda cancel, **kw: count(arr, cancel)

    big = np.ones(1_000_000, np.uint8)
    ref = weakref.ref(big)
    got: list[int] = []
    runner = JobRunner(PushButton(text="Run"), "Run")
    runner.start(job_of(big), desc="count", total=1, on_returned=lambda r: got.append(r), data=big)
    qtbot.waitUntil(lambda: not runner.running, timeout=30_000)
    assert got == [1_000_000]
    del big
    assert _collected(qtbot, ref), "a finished job's input is still held (napari keeps its worker)"

    latest = LatestRunner("preview")
    image = np.ones(1_000_000, np.uint8)
    ref = weakref.ref(image)
    shown: list[int] = []
    latest.request("k", lambda image: int(image.sum()), lambda key, r: shown.append(r), image=image)
    qtbot.waitUntil(lambda: not latest.busy and bool(shown), timeout=30_000)
    assert shown == [1_000_000]
    del image
    assert _collected(qtbot, ref), "a finished preview's image is still held"


def test_an_image_removed_while_the_annotate_panel_is_open_is_freed(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, truth = make_phantom((6, 32, 32), seed=1742)
    ann = np.zeros_like(truth)
    ann[[1, 4]] = truth[[1, 4]]
    model = train(image, ann, size="tiny", epochs=1, steps_per_epoch=1, batch=2, patch=32, device="cpu", init=None)
    keep = viewer.add_image(image, name="kept")
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.set_model(model)
    data = image.copy() + 1
    layer = viewer.add_image(data, name="scan 2")
    w._image.value = layer
    assert w._key() is not None  # the preview's key: the panel noted this layer's data
    qtbot.waitUntil(lambda: not w.preview_runner.busy, timeout=60_000)
    ref = weakref.ref(data)
    viewer.layers.remove(layer)
    del layer, data
    w._image.value = keep
    w._key()
    assert _collected(qtbot, ref), "the removed image's data is still held"
    assert set(w._data_of) == {id(keep)}
