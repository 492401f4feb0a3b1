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
    qtbot.waitUntil(lambda: "cxr2 labels" in viewer.layers, timeout=120_000)
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
