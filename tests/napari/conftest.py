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
