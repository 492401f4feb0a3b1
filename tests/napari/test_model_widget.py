import zipfile

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_xrayseg._napari.model_widget import ModelWidget  # noqa: E402
from napari_xrayseg.core.models import init_model, save_model  # noqa: E402


def test_export_and_import_through_the_widget(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from bioimageio.spec import InvalidDescr, load_description

    model = save_model(init_model("unet", size="tiny", classes=3, context=3, tile=32), tmp_path / "m.safetensors")
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).random((5, 40, 44), dtype=np.float32)
    layer = viewer.add_image(image, name="scan")
    w = ModelWidget(viewer)
    viewer.window.add_dock_widget(w, name="Model exchange")
    assert w._image.value is None  # the synthetic sample unless a layer is picked
    w._image.value = layer
    w._model_file.value = model
    w._package.value = tmp_path / "pkg.zip"
    w._authors.value = "A. Person, B. Person"
    w._export.clicked.emit()
    assert w.export_runner.running and w._export.text == "Cancel"
    qtbot.waitUntil(lambda: not w.export_runner.running, timeout=120_000)
    assert w._export.text == "Export to bioimage.io" and "wrote pkg.zip" in w._info.value
    descr = load_description(tmp_path / "pkg.zip")
    assert not isinstance(descr, InvalidDescr)
    assert [a.name for a in descr.authors] == ["A. Person", "B. Person"]
    x = np.load(zipfile.ZipFile(tmp_path / "pkg.zip").open("test_input.npy"))
    assert np.array_equal(x[0], image[1:4, :, 2:42])  # the middle slices of the chosen layer, centre crop

    w._source.value = tmp_path / "pkg.zip"
    w._target.value = tmp_path / "back.safetensors"
    w._import.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert (tmp_path / "back.safetensors").read_bytes() == model.read_bytes()
    assert "wrote back.safetensors" in w._info.value

    # a second import onto the same file is refused with a notification, the file kept
    errors: list[str] = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.notifications.show_error", errors.append)
    w._import.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert len(errors) == 1 and "exists: choose another path" in errors[0]
    assert "overwrite" not in errors[0]  # the widget has no overwrite: it does not offer one
    assert (tmp_path / "back.safetensors").read_bytes() == model.read_bytes()
    assert w._info.value.startswith("Importing failed:")  # it said "wrote back.safetensors" still


def test_missing_inputs_are_notified_and_start_nothing(make_napari_viewer, monkeypatch, tmp_path):
    errors: list[str] = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.show_error", errors.append)
    w = ModelWidget(make_napari_viewer())
    w._export.clicked.emit()
    w._import.clicked.emit()
    assert errors == ["no model file chosen: pick one first", "no package chosen: pick one first"]
    assert w.export_runner.job is None and w.runner.job is None


def test_export_cancel_writes_nothing(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    infos: list[str] = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.show_info", infos.append)
    model = save_model(init_model("unet", size="tiny", classes=3), tmp_path / "m.safetensors")
    w = ModelWidget(make_napari_viewer())
    w._model_file.value = model
    w._package.value = tmp_path / "pkg.zip"
    w._export.clicked.emit()
    w._export.clicked.emit()  # Cancel: the job stops at its next step
    assert w._export.text == "Cancelling..."
    qtbot.waitUntil(lambda: not w.export_runner.running, timeout=120_000)
    assert infos == ["Exporting to bioimage.io: cancelled"]
    assert not (tmp_path / "pkg.zip").exists() and w._export.text == "Export to bioimage.io"
