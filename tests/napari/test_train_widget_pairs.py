"""Train widget: several (image, labels) layer pairs and independent 2D images (issue #18)."""

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_xrayseg._napari.train_widget import TrainWidget  # noqa: E402
from napari_xrayseg.core.models import load_model  # noqa: E402
from napari_xrayseg.core.radiographs import make_radiographs  # noqa: E402


def test_train_widget_on_several_2d_layer_pairs(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer = make_napari_viewer(show=True)
    images, masks = make_radiographs(3, side=64, seed=4)
    layers = []
    for i in range(3):
        img = viewer.add_image(images[i], name=f"cxr{i}")
        lab = viewer.add_labels(masks[i], name=f"lungs{i}")
        layers.append((img, lab))
    before = masks.copy()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train")
    for img, lab in layers[:2]:  # add two pairs to the training set
        w._image.value, w._labels.value = img, lab
        w._add_pair.clicked.emit()
    w._add_pair.clicked.emit()  # adding the same pair again changes nothing
    assert "cxr0 + lungs0, cxr1 + lungs1" in w._pairs_label.value
    w._image.value, w._labels.value = layers[2]  # the selected pair is trained on too
    w._two_d.value = True
    w._size.value = "tiny"
    w._epochs.value = 1
    w._batch.value = 2
    w._patch.value = 32
    w._context.value = 1
    w._device.value = "cpu"
    w._out.value = tmp_path / "m.safetensors"
    w._run.clicked.emit()
    # the layer is added before the job has finished: a click before then would cancel, not run
    qtbot.waitUntil(lambda: "cxr2 labels" in viewer.layers and not w.runner.running, timeout=120_000)
    m = load_model(tmp_path / "m.safetensors")
    assert m.info.two_d and m.info.train["inputs"] == [[64, 64]] * 3
    assert viewer.layers["cxr2 labels"].data.shape == (64, 64)
    np.testing.assert_array_equal(np.stack([lab.data for _, lab in layers]), before)  # labels untouched
    # a pair whose layer was removed is refused in one line; clearing the set fixes it
    viewer.layers.remove(layers[0][1])
    errors = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.show_error", errors.append)
    w._out.value = tmp_path / "n.safetensors"
    w._run.clicked.emit()
    assert errors and "was removed: clear the training set" in errors[0] and not w.runner.running
    w._clear_pairs.clicked.emit()
    assert w._pairs == [] and w._pairs_label.value == "training set: the pair above"


def test_channel_axis_in_train_and_segment_widgets(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """A two-channel volume layer (C, Z, Y, X): train with 'Channel axis' 0, segment with the model."""
    from napari_xrayseg._napari.segment_widget import SegmentWidget
    from napari_xrayseg.core.sample import make_phantom

    viewer = make_napari_viewer(show=True)
    vol, truth = make_phantom((6, 48, 48), seed=2)
    two = np.stack([vol, -vol + np.float32(0.1) * np.random.default_rng(0).normal(size=vol.shape)])
    img = viewer.add_image(two.astype(np.float32), name="phase+abs")
    ann = np.zeros_like(truth)
    ann[3] = truth[3]
    lab = viewer.add_labels(ann, name="ann")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train")
    w._image.value, w._labels.value = img, lab
    errors = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.show_error", errors.append)
    w._out.value = tmp_path / "m.safetensors"
    w._run.clicked.emit()  # without a channel axis the 4D image does not fit the 3D labels
    assert errors and "does not match image shape" in errors[0] and not w.runner.running
    w._channel_axis.value = "0"
    w._size.value = "tiny"
    w._epochs.value = 1
    w._batch.value = 2
    w._patch.value = 32
    w._device.value = "cpu"
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: "phase+abs labels" in viewer.layers, timeout=120_000)
    m = load_model(tmp_path / "m.safetensors")
    assert m.info.channels == 2 and m.info.channel_axis == 0
    assert m.info.params["in_channels"] == 2 * m.info.context
    assert viewer.layers["phase+abs labels"].data.shape == truth.shape
    assert len(viewer.layers["phase+abs labels"].scale) == 3
    # the Segment widget reads the channels along the model's axis and adds a 3D result
    s = SegmentWidget(viewer)
    viewer.window.add_dock_widget(s, name="Segment")
    s._image.value = img
    s._model_file.value = tmp_path / "m.safetensors"
    s._device.value = "cpu"
    s._run.clicked.emit()
    qtbot.waitUntil(lambda: "phase+abs labels [2]" in viewer.layers and not s.runner.running, timeout=60_000)
    out = viewer.layers["phase+abs labels [2]"].data
    assert out.shape == truth.shape and set(np.unique(out)) <= {1, 2, 3}
    # a one-channel layer is refused by the two-channel model in one line
    one = viewer.add_image(vol, name="phase only")
    s._image.value = one
    s._run.clicked.emit()
    # the refusal comes from the worker: wait for the message itself, not for the runner to stop
    # (its "finished" can be seen before the error reaches the main thread: CI failed that way once)
    qtbot.waitUntil(lambda: any("channel" in str(e) for e in errors[1:]), timeout=60_000)
    qtbot.waitUntil(lambda: not s.runner.running, timeout=60_000)
    # channels on axis 1 (Z, C, Y, X): napari would lay the 3D result over C, Y, X: refused, saying how to fix it
    from qtpy.QtWidgets import QApplication

    zcyx = viewer.add_image(np.ascontiguousarray(two.transpose(1, 0, 2, 3)), name="zcyx", scale=(0.5, 1, 0.1, 0.1))
    s._image.value = zcyx
    n = len(errors)
    qtbot.wait(QApplication.doubleClickInterval() + 100)
    s._run.clicked.emit()
    qtbot.waitUntil(lambda: len(errors) > n, timeout=60_000)
    assert "channels on axis 1" in str(errors[-1]) and "np.moveaxis" in str(errors[-1]) and not s.runner.running
    # channels first with a voxel size and an origin: the result lies over the image's z, y, x (QA)
    czyx = viewer.add_image(two.astype(np.float32), name="czyx", scale=(1, 0.5, 0.1, 0.1), translate=(0, 10, 5, 2))
    s._image.value = czyx
    assert (s._voxel.z.value, s._voxel.y.value, s._voxel.x.value) == (0.5, 0.1, 0.1)
    qtbot.wait(QApplication.doubleClickInterval() + 100)
    s._run.clicked.emit()
    qtbot.waitUntil(lambda: "czyx labels" in viewer.layers and not s.runner.running, timeout=60_000)
    res = viewer.layers["czyx labels"]
    assert tuple(res.scale) == (0.5, 0.1, 0.1) and tuple(res.translate) == (10, 5, 2)
    np.testing.assert_array_equal(np.asarray(res.data), out)  # the same channels read on their axis
    # training on the Z, C, Y, X layer warns that painted labels cannot lie over it
    w._image.value = zcyx
    w._channel_axis.value = "1"
    w._out.value = tmp_path / "m2.safetensors"
    warned = []
    monkeypatch.setattr("napari_xrayseg._napari.train_widget.show_warning", warned.append)
    w._inputs()
    assert any("channels on axis 1" in str(m) and "channels first" in str(m) for m in warned)
