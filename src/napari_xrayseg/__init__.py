"""napari-xrayseg: deep-learning segmentation of X-ray tomograms.

The public API is re-exported lazily so ``import napari_xrayseg`` stays cheap
(torch and MONAI load on first use) and never imports Qt or napari::

    from napari_xrayseg import init_model, segment, make_phantom
    image, truth = make_phantom((16, 128, 128), seed=1)
    labels = segment(image, init_model("unet", size="tiny"))
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("napari-xrayseg")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "unknown"

_EXPORTS = {
    "segment": "core.inference",
    "iter_segment": "core.inference",
    "segment_many": "core.batch",
    "iter_segment_many": "core.batch",
    "output_complete": "core.inference",
    "init_model": "core.models",
    "load_model": "core.models",
    "save_model": "core.models",
    "read_model_info": "core.models",
    "architectures": "core.models",
    "Model": "core.models",
    "open_volume": "core.io",
    "read_image_2d": "core.io",
    "make_phantom": "core.sample",
    "make_radiographs": "core.radiographs",
    "evaluate": "core.metrics",
    "iter_evaluate": "core.metrics",
    "export_bioimageio": "core.bioimageio",
    "import_bioimageio": "core.bioimageio",
    "analyze": "core.microstructure",
    "iter_analyze": "core.microstructure",
    "compare_microstructure": "core.microstructure",
    "microstructure_interval": "core.microstructure",
    "tpb_points": "core.microstructure",
    "read_voxel_size": "core.io",
    "train": "core.training",
    "iter_train": "core.training",
    "self_train": "core.selftrain",
    "iter_self_train": "core.selftrain",
    "suggest_slices": "core.annotation",
    "rank_slices": "core.annotation",
    "predict_slice": "core.annotation",
    "continue_training": "core.annotation",
    "CancelToken": "core.progress",
    "Progress": "core.progress",
    "SegmentConfig": "core.config",
    "TrainConfig": "core.config",
    "XraysegError": "core.errors",
    "InputError": "core.errors",
    "ModelFileError": "core.errors",
    "OutputExistsError": "core.errors",
    "OutputWriteError": "core.errors",
    "Cancelled": "core.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        mod = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
