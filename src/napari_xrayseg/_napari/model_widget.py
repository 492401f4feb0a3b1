"""Model widget: export a model as a bioimage.io package, import one back.

Console equivalent::

    from napari_xrayseg.core.bioimageio import export_bioimageio, import_bioimageio
    export_bioimageio("model.safetensors", "model.zip", image=viewer.layers["scan"].data, authors=["Me"])
    import_bioimageio("model.zip", "model2.safetensors")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, FileEdit, Label, LineEdit, PushButton
from napari.utils.notifications import show_info

import napari

from ..core.bioimageio import iter_export_bioimageio, iter_import_bioimageio
from ..core.errors import InputError
from ._jobs import JobRunner, JobWidget, text_label
from ._layers import layer_array, layer_choices


def _path(edit: FileEdit, what: str) -> Path:
    raw = str(edit.value)
    if raw in ("", "."):
        raise InputError(f"no {what} chosen: pick one first")
    return Path(raw)


class ModelWidget(JobWidget):
    """Dock widget: write a model file as a bioimage.io model package (zip), or read one back."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._model_file = FileEdit(label="Model file", mode="r", filter="*.safetensors", value="")
        self._image = ComboBox(
            label="Test image",
            choices=layer_choices(viewer, napari.layers.Image),
            nullable=True,
            tooltip="the package's test input is cropped from it (none: the synthetic sample)",
        )
        self._package = FileEdit(label="Package", mode="w", filter="*.zip", value="")
        self._authors = LineEdit(label="Authors", value="", tooltip="names, separated by commas")
        self._license = LineEdit(label="Licence", value="CC-BY-4.0", tooltip="SPDX identifier")
        self._info = text_label("")  # how the last job ended (its runner writes progress, failure, cancel)
        self._export = PushButton(text="Export to bioimage.io")
        self.export_runner = JobRunner(self._export, "Export to bioimage.io", status=self._info)
        self._export.changed.connect(lambda: self.export_runner.toggle(self._export_inputs, self._start_export))

        self._source = FileEdit(label="Import package", mode="r", filter="*.zip", value="")
        self._target = FileEdit(label="Save model as", mode="w", filter="*.safetensors", value="")
        self._import = PushButton(text="Import")
        self.runner = JobRunner(self._import, "Import", status=self._info)  # the "latest job" for tests
        self._import.changed.connect(lambda: self.runner.toggle(self._import_inputs, self._start_import))
        self.extend(
            [
                _heading("Export", "needs napari-xrayseg[bioimageio] (pip install 'napari-xrayseg[bioimageio]')"),
                self._model_file,
                self._image,
                self._package,
                self._authors,
                self._license,
                self._export,
                _heading("Import", "a bioimage.io package, e.g. from `xrayseg export` or this widget"),
                self._source,
                self._target,
                self._import,
                self._info,
            ]
        )
        self._follow_layers(viewer)

    def _export_inputs(self) -> dict[str, Any]:
        model = _path(self._model_file, "model file")
        out = _path(self._package, "package path")
        image = self._image.value
        return {
            "model": model,
            "out": out,
            "image": None if image is None else layer_array(image, "test image"),
            "authors": [a.strip() for a in str(self._authors.value).split(",") if a.strip()],
            "license": str(self._license.value).strip() or "CC-BY-4.0",
        }

    def _start_export(self, kwargs: dict[str, Any]) -> None:
        self.export_runner.start(
            iter_export_bioimageio, desc="Exporting to bioimage.io", total=6, on_returned=self._exported, **kwargs
        )

    def _exported(self, path: Path) -> None:
        self._info.value = f"wrote {path.name} ({path.stat().st_size / 1e6:.2f} MB)"
        show_info(f"wrote bioimage.io model package {path}")

    def _import_inputs(self) -> dict[str, Any]:
        return {"package": _path(self._source, "package"), "out": _path(self._target, "model file to write")}

    def _start_import(self, kwargs: dict[str, Any]) -> None:
        self.runner.start(iter_import_bioimageio, desc="Importing", total=1, on_returned=self._imported, **kwargs)

    def _imported(self, path: Path) -> None:
        self._info.value = f"wrote {path.name}"
        show_info(f"imported the model into {path}")


def _heading(text: str, tooltip: str) -> Label:
    """A section heading short enough for napari's default dock width (QA: clipped), its details in a tooltip."""
    label = Label(value=f"<b>{text}</b>")
    label.tooltip = tooltip
    return label
