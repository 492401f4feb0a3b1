import os

# The napari tests skip (importorskip) on a core-only install without Qt. In CI the test
# extra installs napari + PyQt6, so a failed import there is a broken install: fail loudly.
if os.environ.get("CI"):
    import qtpy  # noqa: F401

    import napari  # noqa: F401

import pytest


@pytest.fixture
def model_file(tmp_path):
    """A tiny untrained 3-class 2D model file (the widgets' tests only need one to run)."""
    from napari_xrayseg.core.models import init_model, save_model

    return save_model(init_model("unet", size="tiny", classes=3, tile=32), tmp_path / "tiny.safetensors")


@pytest.fixture
def segment_to(qtbot, model_file):
    """``segment_to(viewer, out, selected=False)``: Segment the chosen image layer (or every selected one) into
    the zarr ``out`` (a folder for several) with the Segment widget, as a user does, and wait; the widget."""
    from napari_xrayseg._napari.segment_widget import SegmentWidget

    def run(viewer, out, *, selected=False):
        w = SegmentWidget(viewer)
        w._selected.value = selected
        w._model_file.value = model_file
        w._device.value = "cpu"
        w._out.value = out
        w._run.clicked.emit()
        qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
        return w

    return run


@pytest.fixture(autouse=True)
def _no_model_from_another_test():
    """The model file the Train widget saved last is offered to Segment and Annotate: per test, not per session."""
    try:
        from napari_xrayseg._napari import _recent
    except ImportError:  # a core-only install
        yield
        return
    _recent._last.clear()
    _recent._listeners.clear()
    yield
    _recent._last.clear()
    _recent._listeners.clear()
