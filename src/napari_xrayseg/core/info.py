"""What a file napari-xrayseg wrote records about itself (``xrayseg info PATH``)."""

from __future__ import annotations

import os
from typing import Any

from .provenance import absolute_path, file_sha256

__all__ = ["describe_file"]


def describe_file(path: str | os.PathLike) -> dict[str, Any]:
    """What a file written by napari-xrayseg records about itself: ``xrayseg info PATH``.

    A model file: its description (as ``xrayseg model-info``) and the SHA-256 of its bytes; a
    predict output (zarr, or a TIFF of ``predict`` on many inputs): its ``napari_xrayseg``
    attributes (settings, model, ``provenance``); a JSON report of ``evaluate`` or
    ``analyze``: its ``provenance`` and headline numbers.

    Raises
    ------
    InputError
        If ``path`` does not exist or is none of these.
    """
    import json
    from pathlib import Path

    from .errors import InputError

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist: check the path")
    where = {"path": absolute_path(p)}
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from .models import read_model_info

        info = read_model_info(p).to_dict()
        return {"kind": "model", **where, "sha256": file_sha256(p), **info}
    if suffix == ".json":
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise InputError(f"{p} is not readable JSON ({type(e).__name__}): give a report xrayseg wrote") from e
        if not isinstance(d, dict):
            raise InputError(f"{p} is not a report xrayseg wrote (evaluate --json, analyze --json)")
        kind = "evaluate report" if "per_class" in d else "analyze result" if "phases" in d else "report"
        head = {k: d[k] for k in ("mean_dice", "accuracy", "shape", "voxel_size", "unit", "tpb_density") if k in d}
        rec = d.get("provenance")
        note = {} if rec else {"note": "no provenance recorded (written by an older napari-xrayseg)"}
        return {"kind": kind, **where, **head, "provenance": rec, **note}
    if suffix in (".tif", ".tiff"):
        from .io import tiff_output_meta as _tiff_meta

        meta = _tiff_meta(p)
        if meta is None:
            raise InputError(f"{p} is not a label file xrayseg predict wrote (it records no napari_xrayseg metadata)")
        return {"kind": "predict output (TIFF)", **where, **meta}
    from .writer import read_output_meta

    meta = read_output_meta(p)
    if meta is None:
        raise InputError(
            f"{p} is not a file xrayseg writes: give a model (.safetensors), a predict output (zarr, TIFF) or "
            "a JSON report of evaluate / analyze"
        )
    if "model_sha256" not in meta:  # the synthetic sample's stores, annotations written by the tool
        return {"kind": "synthetic sample" if "sample" in meta else "zarr store", **where, **meta}
    state = {} if meta.get("complete") else {"note": "unfinished: the same predict command with --resume finishes it"}
    return {"kind": "predict output", **where, **meta, **state}
