"""scripts/screenshots.py still renders the documentation screenshots, and they show something.

Runs the script's quick mode (tiny model, 2 short epochs, 32x128x128 sample) in a real
napari window: Train, Segment and Evaluate are opened through the manifest and run with
their own buttons. Each PNG must be a real picture (not black, not one flat colour), the
featured dock widget must be visible in it, and the OpenGL canvas must have drawn the data
(the failure mode of QT_QPA_PLATFORM=offscreen: a black canvas).
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

ROOT = Path(__file__).resolve().parents[2]


def _screenshots_module():
    spec = importlib.util.spec_from_file_location("_scripts_screenshots", ROOT / "scripts" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _colours(rgb: np.ndarray) -> int:
    return len(np.unique(rgb.reshape(-1, 3), axis=0))


@pytest.mark.slow
def test_screenshots_regenerate_and_are_not_blank(make_napari_viewer, tmp_path):
    import imageio.v3 as iio

    screenshots = _screenshots_module()
    viewer = make_napari_viewer(show=True)
    shots = screenshots.render(
        tmp_path / "images", quick=True, viewer=viewer, workdir=tmp_path / "work", log=lambda line: None
    )

    assert sorted(s.path.name for s in shots) == [
        "annotate-correct.png",
        "annotate.png",
        "evaluate.png",
        "overview.png",
        "segment.png",
        "train.png",
    ]
    assert {s.widget for s in shots} == {"Train", "Segment", "Evaluate", "Annotate"}
    for shot in shots:
        img = iio.imread(shot.path)
        assert img.ndim == 3 and img.shape[0] >= 600 and img.shape[1] >= 1000, (shot.path.name, img.shape)
        rgb = img[..., :3]
        assert rgb.std() > 20, f"{shot.path.name} is (nearly) one flat colour"
        assert _colours(rgb) > 500, f"{shot.path.name} has only {_colours(rgb)} colours"

        # the featured dock widget is on screen, in the picture, and has content
        assert shot.dock_visible, f"{shot.widget} dock not visible in {shot.path.name}"
        x, y, w, h = shot.dock_rect
        assert w >= 300 and h >= 300 and x + w <= img.shape[1] + 1 and y + h <= img.shape[0] + 1
        dock = rgb[y : y + h, x : x + w]
        assert dock.std() > 10 and _colours(dock) > 50, f"{shot.widget} dock looks empty in {shot.path.name}"

        # the canvas drew the layers (OpenGL works): not black, many colours
        x, y, w, h = shot.canvas_rect
        canvas = rgb[y : y + h, x : x + w]
        assert w >= 200 and h >= 200
        assert (canvas.max(axis=-1) > 30).mean() > 0.1, f"canvas is black in {shot.path.name}"
        assert _colours(canvas) > 50, f"canvas shows no data in {shot.path.name}"

    # the jobs ran for real: a trained model, a segmentation, a report and the error layer
    names = [layer.name for layer in viewer.layers]
    assert "PXCT sample labels" in names and "PXCT sample labels errors" in names
    assert (tmp_path / "work" / screenshots.MODEL_FILE).is_file()
