"""Render the documentation screenshots from a real napari window.

Drives the plugin the way a user does: the synthetic PXCT sample, the ground truth of
3 slices as the painted annotation, then the Train, Segment and Evaluate widgets (opened
through the plugin manifest, run with their own buttons and background workers), and
grabs the whole napari window with the docked widget after each step; then the Annotate
widget previews, suggests the next slice and copies its prediction into the annotations. Writes into
docs/images/:

    overview.png   napari with the segmented volume (3D) and the widgets docked (README)
    train.png      the Train widget after training, with its loss / validation Dice plot
    segment.png    the Segment widget and the new Labels layer over the image
    evaluate.png   the Evaluate widget's report and the error layer
    annotate.png   the Annotate widget: live preview of the best suggested slice, ranking plot
    annotate-correct.png  that slice's prediction copied into the annotations, ready to correct

Needs a display: on a headless machine run it under Xvfb (not QT_QPA_PLATFORM=offscreen,
which gives napari no OpenGL context)::

    QT_API=pyqt6 xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshots.py

By default it trains a ``small`` U-Net for 6 epochs (5 minutes at most) on the napari
sample (48x192x192), so the pictures show a real segmentation: 1-3 minutes on 2 CPU cores,
depending on the load. Epochs rather than a time budget bound it, so a busy machine gives
the same pictures, only later. ``--quick`` trains a ``tiny`` U-Net for 2 short epochs on a
32x128x128 volume in seconds (the test suite uses it; that segmentation is poor).
"""

# A GUI script by nature: the layering rule (no Qt/napari outside _napari/) is for the package.
# ruff: noqa: TID251

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "images"
WINDOW_SIZE = (1800, 1000)
DOCK_WIDTH = 560
_QWIDGETSIZE_MAX = (1 << 24) - 1
PLUGIN = "napari-xrayseg"
MODEL_FILE = "model.safetensors"


@dataclass
class Shot:
    """One screenshot: where it went and where the featured dock widget is in it."""

    path: Path
    widget: str | None  # display name of the featured widget (None: several)
    dock_visible: bool
    dock_rect: tuple[int, int, int, int] | None  # x, y, width, height in image pixels
    canvas_rect: tuple[int, int, int, int]  # the napari canvas (OpenGL), in image pixels


@dataclass(frozen=True)
class _Settings:
    shape: tuple[int, int, int]
    size: str
    minutes: float
    epochs: int
    patch: int
    batch: int
    augment: bool


QUICK = _Settings(shape=(32, 128, 128), size="tiny", minutes=0.5, epochs=2, patch=32, batch=2, augment=False)
FULL = _Settings(shape=(48, 192, 192), size="small", minutes=5.0, epochs=6, patch=128, batch=8, augment=True)


def _process(seconds: float = 0.0) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + seconds
    while True:
        app.processEvents()
        if time.monotonic() >= end:
            return
        time.sleep(0.01)


def _wait(done: Callable[[], bool], timeout: float, what: str) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + timeout
    while not done():
        app.processEvents()
        if time.monotonic() > end:
            raise TimeoutError(f"{what} did not finish within {timeout:.0f} s")
        time.sleep(0.02)
    _process(0.5)  # let the returned/finished callbacks add layers and redraw plots


def _close_notifications(viewer: Any) -> None:
    """Close the 'done' toasts so they do not cover the canvas."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    _process(0.2)


def _show_only(viewer: Any, names: set[str]) -> None:
    for layer in viewer.layers:
        layer.visible = layer.name in names


def _grab(
    viewer: Any, path: Path, docks: dict[str, Any], name: str | None, camera: Callable[[Any], None] | None = None
) -> Shot:
    """Screenshot the whole window with dock ``name`` in front; ``camera`` adjusts the view first."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtWidgets import QAbstractSpinBox, QApplication, QLineEdit

    window = viewer.window._qt_window
    front = docks[name] if name is not None else next(iter(docks.values()))
    front.raise_()  # its tab in front
    # As if the user dragged the splitter to the narrowest width every tab fits in
    # (resizeDocks alone does not shrink a dock that grew).
    width = max([DOCK_WIDTH] + [d.minimumSizeHint().width() for d in docks.values()])
    for dock in docks.values():
        dock.setMaximumWidth(width)
    _process(0.2)
    window.resizeDocks([front], [width], Qt.Orientation.Horizontal)
    focused = QApplication.focusWidget()
    if focused is not None:  # no text cursor or selected number in the picture
        focused.clearFocus()
    for box in window.findChildren(QAbstractSpinBox):
        for edit in box.findChildren(QLineEdit):
            edit.deselect()
    _close_notifications(viewer)
    _process(0.3)
    viewer.reset_view()  # fit the data to the canvas as it is now
    if camera is not None:
        camera(viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera)  # napari >= 0.9: scene.camera
    _process(0.3)
    img = viewer.screenshot(str(path), canvas_only=False, flash=False)
    for dock in docks.values():
        dock.setMaximumWidth(_QWIDGETSIZE_MAX)
    scale = img.shape[1] / max(window.width(), 1)

    def rect_of(widget: Any) -> tuple[int, int, int, int]:
        top_left = widget.mapTo(window, QPoint(0, 0))
        return (
            int(top_left.x() * scale),
            int(top_left.y() * scale),
            int(widget.width() * scale),
            int(widget.height() * scale),
        )

    rect = None
    visible = False
    if name is not None:
        dock = docks[name]
        visible = dock.isVisible() and not dock.visibleRegion().isEmpty()
        rect = rect_of(dock)
    canvas = rect_of(viewer.window._qt_viewer.canvas.native)
    return Shot(path=path, widget=name, dock_visible=visible, dock_rect=rect, canvas_rect=canvas)


@contextlib.contextmanager
def _workdir(path: str | os.PathLike | None) -> Iterator[Path]:
    """The folder the model file is written to: ``path``, or a temporary one removed afterwards."""
    with contextlib.ExitStack() as stack:
        if path is None:
            path = stack.enter_context(tempfile.TemporaryDirectory(prefix="xrayseg-"))
        work = Path(path).resolve()
        work.mkdir(parents=True, exist_ok=True)
        yield work


def _add_sample(viewer: Any, settings: _Settings, quick: bool) -> tuple[Any, Any]:
    """The sample's Image and truth Labels layers, as *File > Open Sample* gives them."""
    if not quick:
        viewer.open_sample(PLUGIN, "pxct")
    else:
        from napari_xrayseg import make_phantom

        image, truth = make_phantom(settings.shape, seed=0)
        viewer.add_image(image, name="PXCT sample", colormap="gray")
        viewer.add_labels(truth, name="PXCT truth", opacity=0.5)
    return viewer.layers["PXCT sample"], viewer.layers["PXCT truth"]


def render(
    out_dir: str | os.PathLike = OUT_DIR,
    *,
    quick: bool = False,
    viewer: Any = None,
    workdir: str | os.PathLike | None = None,
    log: Callable[[str], Any] = print,
) -> list[Shot]:
    """Render the screenshots into ``out_dir``; return what was written.

    Parameters
    ----------
    out_dir : path-like
        Folder for the PNG files (created if missing; files in it are replaced).
    quick : bool
        Tiny model, 2 short epochs, 32x128x128 volume: seconds instead of minutes.
    viewer : napari.Viewer, optional
        A shown viewer to use (tests pass ``make_napari_viewer(show=True)``); by default
        one is created and closed at the end.
    workdir : path-like, optional
        Where the trained model file is written (it must not exist there yet); by
        default a temporary folder that is removed afterwards.
    log : callable
        Receives one line per step.

    Returns
    -------
    list of Shot
        One record per PNG file.
    """
    import numpy as np

    import napari
    from napari_xrayseg.core.demo import annotate_slices

    settings = QUICK if quick else FULL
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    own_viewer = viewer is None
    if own_viewer:
        viewer = napari.Viewer(title="napari", show=True)
    window = viewer.window._qt_window
    window.showNormal()
    window.resize(*WINDOW_SIZE)
    shots: list[Shot] = []
    docks: dict[str, Any] = {}
    try:
        with _workdir(workdir) as work:
            model_file = work / MODEL_FILE
            image_layer, truth_layer = _add_sample(viewer, settings, quick)
            annotation, slices = annotate_slices(np.asarray(truth_layer.data), 3)
            viewer.add_labels(annotation, name="annotations", opacity=0.5)
            viewer.dims.set_point(0, slices[1])

            # ---- Train: the sample image and its 3 painted slices
            log(f"training a {settings.size} U-Net ({settings.minutes} min budget, at most {settings.epochs} epochs)")
            dock, train_w = viewer.window.add_plugin_dock_widget(PLUGIN, "Train", tabify=True)
            docks["Train"] = dock
            train_w._image.value = image_layer
            train_w._labels.value = viewer.layers["annotations"]
            train_w._size.value = settings.size
            train_w._minutes.value = settings.minutes
            train_w._epochs.value = settings.epochs
            train_w._patch.value = settings.patch
            train_w._batch.value = settings.batch
            train_w._augment.value = settings.augment
            train_w._device.value = "cpu"
            train_w._out.value = model_file
            train_w._segment_after.value = False
            train_w._run.clicked.emit()
            _wait(lambda: not train_w.runner.running, 120 + 60 * settings.minutes, "training")
            if train_w.model is None:
                raise RuntimeError(f"training failed: {train_w._status.value}")
            _show_only(viewer, {"PXCT sample", "annotations"})
            bar = train_w.scroll.verticalScrollBar()  # the widget scrolls: show its end (status and curves)
            bar.setValue(bar.maximum())
            shots.append(_grab(viewer, out / "train.png", docks, "Train"))

            # ---- Segment: the whole volume with the trained model
            log("segmenting with the Segment widget")
            dock, seg_w = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment", tabify=True)
            docks["Segment"] = dock
            seg_w._image.value = image_layer
            seg_w._model_file.value = model_file
            seg_w._device.value = "cpu"  # Tile stays "auto": whole slices
            seg_w._run.clicked.emit()
            _wait(lambda: not seg_w.runner.running, 120, "segmentation")
            labels_name = "PXCT sample labels"
            if labels_name not in viewer.layers:
                raise RuntimeError("the Segment widget added no labels layer")
            _show_only(viewer, {"PXCT sample", labels_name})
            viewer.layers[labels_name].opacity = 0.5
            viewer.layers.selection.active = viewer.layers[labels_name]
            shots.append(_grab(viewer, out / "segment.png", docks, "Segment"))

            # ---- Evaluate: against the full ground truth, with the error layer
            log("evaluating against the full ground truth")
            dock, eval_w = viewer.window.add_plugin_dock_widget(PLUGIN, "Evaluate", tabify=True)
            docks["Evaluate"] = dock
            eval_w._pred.value = viewer.layers[labels_name]
            eval_w._truth.value = truth_layer
            eval_w._run.clicked.emit()
            _wait(lambda: not eval_w.runner.running, 120, "evaluation")
            if eval_w.report is None:
                raise RuntimeError("the Evaluate widget produced no report")
            log(f"mean Dice {eval_w.report.mean_dice:.3f} (against the full ground truth)")
            eval_w._add_errors.clicked.emit()
            _process(0.5)
            _show_only(viewer, {"PXCT sample", f"{labels_name} errors"})
            shots.append(_grab(viewer, out / "evaluate.png", docks, "Evaluate"))

            # ---- Annotate: preview the shown slice, suggest the next slices, copy a prediction
            log("the annotation loop: preview, suggestions, copy a slice's prediction into the annotations")
            dock, ann_w = viewer.window.add_plugin_dock_widget(PLUGIN, "Annotate", tabify=True)
            docks["Annotate"] = dock
            ann_w._image.value = image_layer
            ann_w._labels.value = viewer.layers["annotations"]
            ann_w._model_file.value = model_file
            ann_w._suggest.clicked.emit()
            _wait(lambda: ann_w.ranking is not None and not ann_w.suggest_runner.running, 120, "suggestions")
            ann_w._go.clicked.emit()  # the viewer moves to the best suggestion; its preview follows

            def previewed() -> bool:
                p = ann_w.preview_layer
                return (
                    p is not None
                    and not ann_w.preview_runner.busy
                    and p.metadata["napari_xrayseg"]["index"] == ann_w.current_slice()[1]
                )

            _wait(previewed, 60, "preview")
            preview_name = ann_w.preview_layer.name
            _show_only(viewer, {"PXCT sample", "annotations", preview_name})
            shots.append(_grab(viewer, out / "annotate.png", docks, "Annotate"))
            ann_w._copy.clicked.emit()  # the suggested slice's prediction becomes annotations to correct
            _wait(lambda: viewer.layers["annotations"].data[ann_w.current_slice()[1]].any(), 60, "copy")
            _show_only(viewer, {"PXCT sample", "annotations"})
            viewer.layers.selection.active = viewer.layers["annotations"]
            viewer.layers["annotations"].mode = "paint"
            shots.append(_grab(viewer, out / "annotate-correct.png", docks, "Annotate"))
            viewer.layers["annotations"].mode = "pan_zoom"

            # ---- Overview (README): the segmented volume in 3D, the Segment tab in front
            log("overview")
            _show_only(viewer, {labels_name})
            viewer.layers[labels_name].opacity = 1.0
            viewer.layers.selection.active = viewer.layers[labels_name]
            viewer.dims.ndisplay = 3

            def tilt(camera: Any) -> None:
                camera.angles = (15, -35, 130)
                camera.zoom = camera.zoom * 0.9

            shots.append(_grab(viewer, out / "overview.png", docks, "Segment", camera=tilt))
            viewer.dims.ndisplay = 2
    finally:
        # let background jobs (a preview the last camera move asked for) finish first: a worker
        # still running when its widget and the interpreter go away aborts the process on exit
        from qtpy.QtCore import QThreadPool

        _wait(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, 120, "background jobs")
        for dock in docks.values():  # leave a passed-in viewer as it was given
            viewer.window.remove_dock_widget(dock)
        if own_viewer:
            viewer.close()
    for shot in shots:
        log(f"wrote {shot.path}")
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Render the documentation screenshots (needs a display or Xvfb).")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: docs/images)")
    ap.add_argument("--quick", action="store_true", help="tiny model, 2 epochs, small volume (seconds)")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_API", "pyqt6")
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        print("QT_QPA_PLATFORM=offscreen gives napari no OpenGL context: unset it and use xvfb-run", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    render(args.out, quick=args.quick)
    print(f"done in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
