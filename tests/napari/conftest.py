import os

# The napari tests skip (importorskip) on a core-only install without Qt. In CI the test
# extra installs napari + PyQt6, so a failed import there is a broken install: fail loudly.
if os.environ.get("CI"):
    import qtpy  # noqa: F401

    import napari  # noqa: F401
