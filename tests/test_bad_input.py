"""Every bad input, fed to the API and to the CLI: a clear message, never a traceback.

One table: each row names the input, how the API is called with it, the equivalent
``xrayseg`` command line, the exception type the API documents and the start of the
message. The API must raise that type; the CLI must print exactly one line on stderr
(``xrayseg CMD: error: ...``) holding the same message and exit with code 2.

Paths in the table use ``{d}`` for the shared folder of input files (written once per
module) and ``{o}`` for a fresh folder for outputs (one per test).
"""

from __future__ import annotations

import errno
import json
import pickle
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from faults import chunk_writes_fail, no_space_for_chunks, no_space_for_models
from napari_xrayseg.cli import main
from napari_xrayseg.core.errors import (
    InputError,
    ModelFileError,
    OutputExistsError,
    OutputWriteError,
    XraysegError,
)
from napari_xrayseg.core.inference import segment
from napari_xrayseg.core.io import open_volume
from napari_xrayseg.core.metrics import evaluate
from napari_xrayseg.core.models import init_model, load_model, read_model_info, save_model
from napari_xrayseg.core.training import train

SHAPE = (4, 32, 32)
TRAIN = {"size": "tiny", "epochs": 1, "steps_per_epoch": 1, "batch": 1, "patch": 16, "device": "cpu"}
TRAIN_CLI = ["--size", "tiny", "--epochs", "1", "--steps", "1", "--batch", "1", "--patch", "16", "--device", "cpu"]
MARKER = "pwned-marker"


class _Evil:
    """Unpickling this runs ``touch <marker>``: it must never happen."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _labels(shape=SHAPE, dtype=np.uint8) -> np.ndarray:
    lab = np.zeros(shape, dtype)
    lab[0, :10], lab[0, 10:20], lab[0, 20:] = 1, 2, 3
    lab[2, :, :10], lab[2, :, 10:20], lab[2, :, 20:] = 1, 2, 3
    return lab


def _rewrite_meta(src: Path, dst: Path, edit: Callable[[dict], None]) -> None:
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    info = json.loads(header["__metadata__"]["napari_xrayseg"])
    edit(info)
    header["__metadata__"]["napari_xrayseg"] = json.dumps(info)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    dst.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + n :])


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    """All input files of the table, written once."""
    import h5py
    import tifffile
    import zarr

    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    img = rng.random(SHAPE, dtype=np.float32)
    lab = _labels()
    arrays: dict[str, Any] = {
        "img": img,
        "lab": lab,
        "img4d": img[None],
        "lab4d": lab[None],
        "img1d": img[0, 0],
        "bool": img > 0.5,
        "str": np.full(SHAPE, "a"),
        "complex": img.astype(np.complex64),
        "nan": np.where(lab > 0, np.nan, img).astype(np.float32),
        "allnan": np.full(SHAPE, np.nan, np.float32),
        "inf": np.where(np.arange(32) == 3, np.inf, img).astype(np.float32),
        "empty": np.zeros((0, 32, 32), np.float32),
        "const": np.full(SHAPE, 7.0, np.float32),
        "lab_small": lab[:, :31],
        "lab_none": np.zeros(SHAPE, np.uint8),
        "lab_one": np.where(lab > 0, 1, 0).astype(np.uint8),
        "lab_bool": lab > 0,
        "lab_new": np.where(lab == 3, 5, lab).astype(np.uint8),
        "lab_neg": np.where(lab == 3, -1, lab.astype(np.int16)),
        "lab_frac": np.where(lab == 3, 2.5, lab).astype(np.float32),
        "lab_big": np.where(lab == 3, 300, lab.astype(np.uint16)),
        "rgb": rng.random((32, 32, 3), dtype=np.float32),
        "lab_rgb": _labels((32, 32, 3)),
    }
    for name, a in arrays.items():
        np.save(d / f"{name}.npy", a)
    raw = (d / "img.npy").read_bytes()
    (d / "trunc.npy").write_bytes(raw[: len(raw) // 2])
    (d / "junk.npy").write_bytes(b"hello, I am not an array")
    np.save(d / "objects.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    (d / "img.txt").write_text("hello")
    (d / "folder.npy").mkdir()
    tifffile.imwrite(d / "img.tif", img, photometric="minisblack")
    raw = (d / "img.tif").read_bytes()
    (d / "trunc.tif").write_bytes(raw[: len(raw) // 2])
    for name, kw in (("zlib", {"compression": "zlib"}), ("imagej", {"imagej": True})):  # a stack of pages, cut
        tifffile.imwrite(d / f"pages-{name}.tif", (rng.random((8, 32, 32)) * 999).astype(np.uint16), **kw)
        raw = (d / f"pages-{name}.tif").read_bytes()
        (d / f"trunc-{name}.tif").write_bytes(raw[: len(raw) // 2])
    (d / "junk.tif").write_bytes(b"hello")
    tifffile.imwrite(d / "rgb.tif", (rng.random((32, 32, 3)) * 255).astype(np.uint8), photometric="rgb")
    with h5py.File(d / "two.h5", "w") as f:
        f["a"], f["b"] = img, img
    with h5py.File(d / "img.h5", "w") as f:
        f["x"] = img
    raw = (d / "img.h5").read_bytes()
    (d / "trunc.h5").write_bytes(raw[: len(raw) // 2])
    g = zarr.open_group(store=str(d / "two.zarr"), mode="w")
    g.create_array("a", shape=SHAPE, dtype="f4")[...] = img
    g.create_array("b", shape=SHAPE, dtype="f4")[...] = img
    for name, a in (("img", img), ("lab", lab)):  # one chunk per slice, the first one cut short
        z = zarr.create_array(store=str(d / f"damaged_{name}.zarr"), shape=SHAPE, chunks=(1, 32, 32), dtype=a.dtype)
        z[...] = a
        chunk = d / f"damaged_{name}.zarr" / "c" / "0" / "0" / "0"
        chunk.write_bytes(chunk.read_bytes()[:10])
    (d / "corrupt.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)  # a TIFF header, then garbage
    tifffile.imwrite(d / "zlib.tif", img, compression="zlib", tile=(16, 16), photometric="minisblack")
    with tifffile.TiffFile(d / "zlib.tif") as tif:
        offset = tif.pages[0].dataoffsets[0]
    with open(d / "zlib.tif", "r+b") as fh:  # the first tile's compressed bytes become garbage
        fh.seek(offset)
        fh.write(b"\xff" * 16)
    z = zarr.create_array(store=str(d / "holey.zarr"), shape=SHAPE, chunks=(1, 32, 32), dtype="f4")
    z[...] = img
    (d / "holey.zarr" / "c" / "2" / "0" / "0").unlink()  # a copy that lost one chunk
    zarr.create_array(store=str(d / "good.zarr"), shape=SHAPE, chunks=(2, 32, 32), dtype="f4")[...] = img
    (d / "exists.zarr").mkdir()
    (d / "exists.json").write_text("{}")
    (d / "sample_out").mkdir()
    (d / "sample_out" / "keep.txt").write_text("precious")
    (d / "a_file").write_text("not a folder")
    m = init_model("unet", size="tiny", classes=3, tile=32)
    good = save_model(m, d / "m.safetensors")
    save_model(init_model("unet", size="tiny", classes=3, tile=32, context=3), d / "m3.safetensors")
    _rewrite_meta(good, d / "evilnet.safetensors", lambda i: i.update(arch="evilnet"))
    _rewrite_meta(good, d / "bigger.safetensors", lambda i: i["params"].update(channels=[8, 16, 32]))
    _rewrite_meta(good, d / "huge.safetensors", lambda i: i["params"].update(channels=[4, 8, 99999]))
    raw = good.read_bytes()
    (d / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    (d / "evil.safetensors").write_bytes(pickle.dumps(_Evil(d / MARKER), protocol=4))
    import torch

    torch.save({"state_dict": _Evil(d / MARKER)}, d / "evil.pt")  # a zip checkpoint holding the same pickle
    (d / "existing.safetensors").write_bytes(b"precious model")
    return d


# --------------------------------------------------------------------------- fault helpers


def _no_permission(monkeypatch) -> None:
    import numpy

    def load(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(a[0]))

    monkeypatch.setattr(numpy, "load", load)


def _is_out(p) -> bool:
    """Whether ``p`` is the test's own output folder (``{o}``: pytest's ``tmp_path``, named after the test)."""
    return Path(p).name.startswith("test_")


def _read_only_out(monkeypatch) -> None:
    """The output folder (``{o}``, pytest's tmp_path) is read-only: os.access says so (root passes chmod)."""
    import os as _os

    real = _os.access
    monkeypatch.setattr(
        "napari_xrayseg.core.output.os.access",
        lambda p, mode, **k: False if mode == _os.W_OK and _is_out(p) else real(p, mode),
    )


def _acl_refused_out(monkeypatch) -> None:
    """As Windows' ACLs refuse a folder: ``os.access`` says writable (it always does there), creating fails."""
    import errno
    import tempfile

    real = tempfile.TemporaryFile

    def refused(*a, dir=None, **k):  # noqa: A002 - tempfile's own keyword
        if dir is not None and _is_out(dir):
            raise PermissionError(errno.EACCES, "Access is denied", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)


# --------------------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    api: Callable[[Path, Path], Any] | None
    cli: list[str] | None
    exc: type[BaseException]
    match: str
    patch: Callable[[Any], None] | None = None
    xfail: str | None = None  # reason, for checks that live in a module owned elsewhere
    code: int = 2  # the CLI's exit code (documented in docs/cli.md)


def _seg(name: str, **kw: Any) -> Callable[[Path, Path], Any]:
    return lambda d, o: segment(np.load(d / f"{name}.npy"), d / "m.safetensors", device="cpu", **kw)


def _tr(image: str, labels: str, **kw: Any) -> Callable[[Path, Path], Any]:
    return lambda d, o: train(np.load(d / f"{image}.npy"), np.load(d / f"{labels}.npy"), **{**TRAIN, **kw})


def _raise_in_network(exc: BaseException) -> Callable[[Any], None]:
    """The network fails with ``exc`` (e.g. out of memory) on its first forward pass."""

    def patch(monkeypatch) -> None:
        from napari_xrayseg.core.predictor import SlicePredictor

        def scores(self, slices):
            raise exc

        monkeypatch.setattr(SlicePredictor, "scores", scores)

    return patch


def _chunk_write_fails(code: int, text: str) -> Callable[[Any], None]:
    return lambda monkeypatch: chunk_writes_fail(monkeypatch, code, text)


def _ev(pred: str, truth: str) -> Callable[[Path, Path], Any]:
    return lambda d, o: evaluate(np.load(d / f"{pred}.npy"), np.load(d / f"{truth}.npy"))


def _predict(image: str, *extra: str, model: str = "m.safetensors") -> list[str]:
    return [
        "predict",
        "--image",
        f"{{d}}/{image}",
        "--model",
        f"{{d}}/{model}",
        "--out",
        "{o}/out.zarr",
        "--device",
        "cpu",
        *extra,
    ]


def _train(image: str, labels: str, *extra: str) -> list[str]:
    return [
        "train",
        "--image",
        f"{{d}}/{image}",
        "--labels",
        f"{{d}}/{labels}",
        "--out",
        "{o}/new.safetensors",
        *TRAIN_CLI,
        *extra,
    ]


def _evaluate(pred: str, truth: str, *extra: str) -> list[str]:
    return ["evaluate", "--pred", f"{{d}}/{pred}", "--truth", f"{{d}}/{truth}", *extra]


CASES = [
    # ---- wrong number of dimensions
    Case("image-4d", _seg("img4d"), _predict("img4d.npy"), InputError, r"image has 4 dimensions .*pick one channel"),
    Case("image-1d", _seg("img1d"), _predict("img1d.npy"), InputError, r"image has 1 dimensions"),
    Case("train-4d", _tr("img4d", "lab4d"), _train("img4d.npy", "lab4d.npy"), InputError, r"has 4 dimensions"),
    Case(
        "evaluate-4d", _ev("lab4d", "lab4d"), _evaluate("lab4d.npy", "lab4d.npy"), InputError, r"pred has 4 dimensions"
    ),
    # ---- non-numeric or boolean dtype
    Case("image-bool", _seg("bool"), _predict("bool.npy"), InputError, r"image has dtype bool"),
    Case("image-str", _seg("str"), _predict("str.npy"), InputError, r"image has dtype <U1"),
    Case("image-complex", _seg("complex"), _predict("complex.npy"), InputError, r"image has dtype complex64"),
    Case("train-image-bool", _tr("bool", "lab"), _train("bool.npy", "lab.npy"), InputError, r"image has dtype bool"),
    Case("labels-bool", _tr("img", "lab_bool"), _train("img.npy", "lab_bool.npy"), InputError, r"labels are boolean"),
    Case(
        "evaluate-bool",
        _ev("lab_bool", "lab"),
        _evaluate("lab_bool.npy", "lab.npy"),
        InputError,
        r"pred has boolean dtype",
    ),
    # ---- NaN / inf
    # (NaN marks voxels without data: only an image with none at all is refused)
    Case("image-nan", _seg("allnan"), _predict("allnan.npy"), InputError, r"image holds no data: every value"),
    Case("image-inf", _seg("inf"), _predict("inf.npy"), InputError, r"image holds inf values"),
    Case("train-nan", _tr("nan", "lab"), _train("nan.npy", "lab.npy"), InputError, r"every annotated voxel is without"),
    # ---- empty or constant
    Case("image-empty", _seg("empty"), _predict("empty.npy"), InputError, r"image is empty"),
    Case("image-constant", _seg("const"), _predict("const.npy"), InputError, r"image is constant"),
    Case("train-constant", _tr("const", "lab"), _train("const.npy", "lab.npy"), InputError, r"image is constant"),
    Case(
        "evaluate-empty",
        _ev("empty", "empty"),
        _evaluate("empty.npy", "empty.npy"),
        InputError,
        r"pred and truth are empty",
    ),
    # ---- image and labels of different shapes
    Case(
        "train-shapes",
        _tr("img", "lab_small"),
        _train("img.npy", "lab_small.npy"),
        InputError,
        r"labels shape \(4, 31, 32\) does not match image shape \(4, 32, 32\)",
    ),
    Case(
        "evaluate-shapes",
        _ev("lab", "lab_small"),
        _evaluate("lab.npy", "lab_small.npy"),
        InputError,
        r"pred shape \(4, 32, 32\) does not match truth shape \(4, 31, 32\)",
    ),
    # ---- labels with no annotations, one class, unknown classes
    Case(
        "train-no-annotations",
        _tr("img", "lab_none"),
        _train("img.npy", "lab_none.npy"),
        InputError,
        r"labels hold no annotations",
    ),
    Case(
        "evaluate-no-annotations",
        _ev("lab", "lab_none"),
        _evaluate("lab.npy", "lab_none.npy"),
        InputError,
        r"truth has no annotated voxels",
    ),
    Case(
        "train-one-class",
        _tr("img", "lab_one"),
        _train("img.npy", "lab_one.npy"),
        InputError,
        r"labels annotate only class 1",
    ),
    Case(
        "train-unknown-classes",
        lambda d, o: train(np.load(d / "img.npy"), np.load(d / "lab_new.npy"), init=d / "m.safetensors", **TRAIN),
        _train("img.npy", "lab_new.npy", "--init", "{d}/m.safetensors"),
        InputError,
        r"init model has classes \[1, 2, 3\] but the labels annotate classes \[1, 2, 5\]",
    ),
    # ---- negative, fractional, too large labels
    Case(
        "train-negative",
        _tr("img", "lab_neg"),
        _train("img.npy", "lab_neg.npy"),
        InputError,
        r"labels hold negative values",
    ),
    Case(
        "segment-model-none",
        lambda d, o: segment(np.load(d / "img.npy"), None, device="cpu"),
        None,
        InputError,
        r"model None is neither a Model nor a file path",
    ),
    Case(
        "save-model-none",
        lambda d, o: save_model(None, o / "m.safetensors"),
        None,
        InputError,
        r"save_model needs a Model .* not NoneType",
    ),
    Case(
        "suggest-negative",
        lambda d, o: __import__("napari_xrayseg").suggest_slices(
            np.load(d / "img.npy"), d / "m.safetensors", np.load(d / "lab_neg.npy"), device="cpu"
        ),
        ["suggest", "--image", "{d}/img.npy", "--model", "{d}/m.safetensors", "--labels", "{d}/lab_neg.npy"],
        InputError,
        r"labels hold negative values",
    ),
    Case(
        "evaluate-negative",
        _ev("lab", "lab_neg"),
        _evaluate("lab.npy", "lab_neg.npy"),
        InputError,
        r"truth holds negative values",
    ),
    Case(
        "train-float",
        _tr("img", "lab_frac"),
        _train("img.npy", "lab_frac.npy"),
        InputError,
        r"labels hold non-integer values \(e.g. 2.5",
    ),
    Case(
        "evaluate-float",
        _ev("lab_frac", "lab"),
        _evaluate("lab_frac.npy", "lab.npy"),
        InputError,
        r"pred holds non-integer values \(e.g. 2.5",
    ),
    Case(
        "train-label-300", _tr("img", "lab_big"), _train("img.npy", "lab_big.npy"), InputError, r"labels hold value 300"
    ),
    # ---- tiles (policy: an explicit tile larger than the slice is refused; the default adapts)
    Case(
        "tile-larger-than-slice",
        _seg("img", tile=64),
        _predict("img.npy", "--tile", "64"),
        InputError,
        r"tile 64 is larger than the 32x32 slice: use --tile 32 or less",
    ),
    Case(
        "tile-below-stride", _seg("img", tile=2), _predict("img.npy", "--tile", "2"), InputError, r"tile 2\b.*stride 4"
    ),
    Case(
        "tile-not-multiple",
        _seg("img", tile=30),
        _predict("img.npy", "--tile", "30"),
        InputError,
        r"tile 30\b.*stride 4",
    ),
    # ---- channels: the model takes one grey channel (or K context slices)
    Case(
        "rgb-tiff",
        lambda d, o: open_volume(d / "rgb.tif"),
        _predict("rgb.tif"),
        InputError,
        r"rgb.tif is a colour \(RGB\) image with 3 samples per pixel",
    ),
    Case(
        "train-rgb-array",
        _tr("rgb", "lab_rgb"),
        _train("rgb.npy", "lab_rgb.npy"),
        InputError,
        r"slices along axis 0 are 32x3 pixels, smaller than the network's minimum 4",
    ),
    Case(
        "segment-rgb-array",
        _seg("rgb"),
        _predict("rgb.npy"),
        InputError,
        r"slices along axis 0 are 32x3 pixels, smaller than the network's minimum 4",
    ),
    Case(
        "train-context-vs-init",
        lambda d, o: train(
            np.load(d / "img.npy"), np.load(d / "lab.npy"), init=d / "m3.safetensors", context=1, **TRAIN
        ),
        _train("img.npy", "lab.npy", "--init", "{d}/m3.safetensors", "--context", "1"),
        InputError,
        r"init model takes 3 context slice\(s\) per slice but training was asked for context=1",
    ),
    # ---- input paths: missing, unreadable, truncated, wrong format, ambiguous
    Case(
        "missing-image",
        lambda d, o: open_volume(d / "missing.zarr"),
        _predict("missing.zarr"),
        InputError,
        r"missing.zarr does not exist",
    ),
    Case(
        "missing-model",
        lambda d, o: load_model(d / "missing.safetensors"),
        _predict("img.npy", model="missing.safetensors"),
        ModelFileError,
        r"missing.safetensors does not exist",
    ),
    Case(
        "unreadable-image",
        lambda d, o: open_volume(d / "img.npy"),
        _predict("img.npy"),
        InputError,
        r"cannot read .*img.npy: permission denied",
        patch=_no_permission,
    ),
    Case(
        "folder-as-file",
        lambda d, o: open_volume(d / "folder.npy"),
        _predict("folder.npy"),
        InputError,
        r"folder.npy is a directory, not a .npy file",
    ),
    Case(
        "truncated-npy",
        lambda d, o: open_volume(d / "trunc.npy"),
        _predict("trunc.npy"),
        InputError,
        r"cannot read .*trunc.npy as .npy: .*is the file complete",
    ),
    *(
        Case(
            f"truncated-tiff-stack-{name}",
            lambda d, o, name=name: open_volume(d / f"trunc-{name}.tif"),
            _predict(f"trunc-{name}.tif"),
            InputError,
            rf"cannot read .*trunc-{name}.tif as .tif: .*; is the file complete\?",
        )
        for name in ("zlib", "imagej")
    ),
    Case(
        "truncated-tiff",
        lambda d, o: open_volume(d / "trunc.tif"),
        _predict("trunc.tif"),
        InputError,
        r"cannot read .*trunc.tif as .tif",
    ),
    Case(
        "truncated-hdf5",
        lambda d, o: open_volume(d / "trunc.h5"),
        _predict("trunc.h5"),
        InputError,
        r"cannot read .*trunc.h5 as .h5: .*truncated",
    ),
    Case(
        "damaged-zarr-chunk-train",
        lambda d, o: train(open_volume(d / "damaged_img.zarr"), open_volume(d / "damaged_lab.zarr"), **TRAIN),
        _train("damaged_img.zarr", "damaged_lab.zarr"),
        InputError,
        r"cannot read labels \(slices .* along axis 0\) .*truncated or damaged",
    ),
    Case(
        "damaged-zarr-chunk-evaluate",
        lambda d, o: evaluate(np.load(d / "lab.npy"), open_volume(d / "damaged_lab.zarr")),
        _evaluate("lab.npy", "damaged_lab.zarr"),
        InputError,
        r"cannot read truth .*truncated or damaged",
    ),
    Case(
        "damaged-zarr-chunk-predict",
        lambda d, o: segment(open_volume(d / "damaged_img.zarr"), d / "m.safetensors", device="cpu"),
        _predict("damaged_img.zarr"),
        InputError,
        r"cannot read image \(slices .* along axis 0\) .*truncated or damaged",
    ),
    Case(
        "wrong-format-txt",
        lambda d, o: open_volume(d / "img.txt"),
        _predict("img.txt"),
        InputError,
        r"unknown volume format 'img.txt'|list file .*img.txt names no existing input",  # CLI: .txt lists inputs
    ),
    Case(
        "wrong-format-npy",
        lambda d, o: open_volume(d / "junk.npy"),
        _predict("junk.npy"),
        InputError,
        r"junk.npy is not a .npy file",
    ),
    Case(
        "pickled-npy",
        lambda d, o: open_volume(d / "objects.npy"),
        _predict("objects.npy"),
        InputError,
        r"objects.npy holds Python objects .*never loads",
    ),
    Case(
        "wrong-format-tiff",
        lambda d, o: open_volume(d / "junk.tif"),
        _predict("junk.tif"),
        InputError,
        r"cannot read .*junk.tif as .tif: not a TIFF file",
    ),
    Case(
        "zarr-several-arrays",
        lambda d, o: open_volume(d / "two.zarr"),
        _predict("two.zarr"),
        InputError,
        r"holds several arrays \['a', 'b'\]: choose one with the path .*two.zarr/NAME",
    ),
    Case(
        "zarr-wrong-dataset",
        lambda d, o: open_volume(d / "two.zarr", dataset="c"),
        _predict("two.zarr", "--dataset", "c"),
        InputError,
        r"has no array 'c': it has \['a', 'b'\]",
    ),
    Case(
        "zarr-array-with-dataset",
        lambda d, o: open_volume(d / "good.zarr", dataset="nope"),
        _predict("good.zarr", "--dataset", "nope"),
        InputError,
        r"good.zarr is a zarr array, not a group: it holds no array 'nope'; drop --dataset",
    ),
    Case(
        "npy-with-dataset",
        lambda d, o: open_volume(d / "img.npy", dataset="nope"),
        _predict("img.npy", "--dataset", "nope"),
        InputError,
        r"img.npy holds one array, not named ones: it has no dataset 'nope'; drop --dataset",
    ),
    Case(
        "hdf5-several-datasets",
        lambda d, o: open_volume(d / "two.h5"),
        _predict("two.h5"),
        InputError,
        r"holds 2 image datasets \(2D or 3D, numeric\): a, b; choose one with the path .*two.h5:/NAME",
    ),
    # ---- untrusted model files
    Case(
        "model-pickle",
        lambda d, o: load_model(d / "evil.safetensors"),
        _predict("img.npy", model="evil.safetensors"),
        ModelFileError,
        r"never unpickles",
    ),
    Case(
        "model-torch-checkpoint",
        lambda d, o: load_model(d / "evil.pt"),
        _predict("img.npy", model="evil.pt"),
        ModelFileError,
        r"looks like a pickled PyTorch checkpoint",
    ),
    Case(
        "model-info-pickle",
        lambda d, o: read_model_info(d / "evil.safetensors"),
        ["model-info", "{d}/evil.safetensors"],
        ModelFileError,
        r"never unpickles",
    ),
    Case(
        "train-init-pickle",
        lambda d, o: train(np.load(d / "img.npy"), np.load(d / "lab.npy"), init=d / "evil.pt", **TRAIN),
        _train("img.npy", "lab.npy", "--init", "{d}/evil.pt"),
        ModelFileError,
        r"never unpickles",
    ),
    Case(
        "model-truncated",
        lambda d, o: load_model(d / "trunc.safetensors"),
        _predict("img.npy", model="trunc.safetensors"),
        ModelFileError,
        r"truncated",
    ),
    Case(
        "model-unknown-arch",
        lambda d, o: load_model(d / "evilnet.safetensors"),
        _predict("img.npy", model="evilnet.safetensors"),
        ModelFileError,
        r"unknown architecture 'evilnet'",
    ),
    Case(
        "model-info-unknown-arch",
        lambda d, o: read_model_info(d / "evilnet.safetensors"),
        ["model-info", "{d}/evilnet.safetensors"],
        ModelFileError,
        r"unknown architecture 'evilnet'",
    ),
    Case(
        "model-lying-shapes",
        lambda d, o: load_model(d / "bigger.safetensors"),
        _predict("img.npy", model="bigger.safetensors"),
        ModelFileError,
        r"tensor .* has shape",
    ),
    Case(
        "model-unbounded-size",
        lambda d, o: load_model(d / "huge.safetensors"),
        _predict("img.npy", model="huge.safetensors"),
        ModelFileError,
        r"channels=\[4, 8, 99999\]",
    ),
    Case(
        "model-image-as-model",
        lambda d, o: load_model(d / "img.npy"),
        _predict("img.npy", model="img.npy"),
        ModelFileError,
        r"img.npy",
    ),
    # ---- outputs that exist: refused unless --overwrite
    Case(
        "segment-out-exists",
        lambda d, o: segment(np.load(d / "img.npy"), d / "m.safetensors", device="cpu", out=d / "exists.zarr"),
        ["predict", "--image", "{d}/img.npy", "--model", "{d}/m.safetensors", "--out", "{d}/exists.zarr"],
        OutputExistsError,
        r"exists.zarr exists: choose another path or pass overwrite=True \(--overwrite\)",
    ),
    Case(
        "train-out-exists",
        lambda d, o: train(np.load(d / "img.npy"), np.load(d / "lab.npy"), out=d / "existing.safetensors", **TRAIN),
        ["train", "--image", "{d}/img.npy", "--labels", "{d}/lab.npy", "--out", "{d}/existing.safetensors", *TRAIN_CLI],
        OutputExistsError,
        r"model file .*existing.safetensors exists",
    ),
    Case(
        "init-model-tile-out-of-range",
        lambda d, o: init_model("unet", size="tiny", tile=0),
        ["init-model", "--out", "{o}/m.safetensors", "--size", "tiny", "--tile", "0"],
        InputError,
        r"tile 0 must be an integer in \[8, 8192\]",
    ),
    Case(
        "init-model-out-exists",
        lambda d, o: save_model(init_model("unet", size="tiny"), d / "existing.safetensors"),
        ["init-model", "--out", "{d}/existing.safetensors", "--size", "tiny"],
        OutputExistsError,
        r"existing.safetensors exists",
    ),
    Case(
        "evaluate-json-exists",
        lambda d, o: evaluate(np.load(d / "lab.npy"), np.load(d / "lab.npy")).to_json(d / "exists.json"),
        _evaluate("lab.npy", "lab.npy", "--json", "{d}/exists.json"),
        OutputExistsError,
        r"JSON output .*exists.json exists",
    ),
    Case(
        "sample-too-large",
        None,
        ["sample", "--out", "{o}/s", "--shape", "100000", "100000", "100000"],
        MemoryError,
        r"out of memory running sample \(RAM\): the synthetic volume is made in memory: give a smaller --shape",
        code=3,
    ),
    Case(
        "sample-negative-seed",
        lambda d, o: __import__("napari_xrayseg").make_phantom((2, 16, 16), seed=-1),
        ["sample", "--out", "{o}/s", "--shape", "2", "16", "16", "--seed", "-1"],
        InputError,
        r"seed -1 must be a whole number >= 0",
    ),
    Case(
        "sample-overwrite-keeps-foreign-files",
        None,
        ["sample", "--out", "{d}/sample_out", "--shape", "2", "16", "16", "--overwrite"],
        OutputExistsError,
        r"sample_out holds files it does not write \(keep.txt\), which --out with --overwrite would delete",
    ),
    Case(
        "study-overwrite-keeps-foreign-files",
        None,
        ["study", "--out", "{d}/sample_out", "--overwrite"],
        OutputExistsError,
        r"study output .*sample_out holds files it does not write \(keep.txt\)",
    ),
    Case(
        "demo-overwrite-keeps-foreign-files",
        lambda d, o: __import__("napari_xrayseg.core.demo").core.demo.run_demo(d / "sample_out", overwrite=True),
        ["demo", "--out", "{d}/sample_out", "--overwrite"],
        OutputExistsError,
        r"output folder .*sample_out holds files it does not write \(keep.txt\)",
    ),
    Case(
        "sample-overwrite-keeps-a-file",  # the file was deleted and a folder made in its place (QA, session 37)
        None,
        ["sample", "--out", "{d}/a_file", "--shape", "2", "16", "16", "--overwrite"],
        OutputExistsError,
        r"a_file is a file, and --out writes a folder there: --overwrite replaces only such a folder",
    ),
    Case(
        "demo-overwrite-keeps-a-file",
        lambda d, o: __import__("napari_xrayseg.core.demo").core.demo.run_demo(d / "a_file", overwrite=True),
        ["demo", "--out", "{d}/a_file", "--overwrite"],
        OutputExistsError,
        r"output folder .*a_file is a file, and --out writes a folder there",
    ),
    Case(
        "sample-out-exists",
        None,
        ["sample", "--out", "{d}/sample_out", "--shape", "2", "16", "16"],
        OutputExistsError,
        r"sample_out exists",
    ),
    # ---- unwritable output location, full disk during a run
    Case(
        "segment-out-under-a-file",
        lambda d, o: segment(np.load(d / "img.npy"), d / "m.safetensors", device="cpu", out=d / "a_file" / "o.zarr"),
        [
            "predict",
            "--image",
            "{d}/img.npy",
            "--model",
            "{d}/m.safetensors",
            "--out",
            "{d}/a_file/o.zarr",
            "--device",
            "cpu",
        ],
        XraysegError,
        r"a_file/o.zarr",
    ),
    Case(
        "train-out-under-a-file",
        lambda d, o: train(np.load(d / "img.npy"), np.load(d / "lab.npy"), out=d / "a_file" / "m.safetensors", **TRAIN),
        ["train", "--image", "{d}/img.npy", "--labels", "{d}/lab.npy", "--out", "{d}/a_file/m.safetensors", *TRAIN_CLI],
        InputError,
        r"cannot write model file .*a_file is a file, not a folder",
    ),
    Case(
        "segment-disk-full",
        lambda d, o: segment(np.load(d / "img.npy"), d / "m.safetensors", device="cpu", out=o / "out.zarr", slab=1),
        _predict("img.npy", "--slab", "1"),
        XraysegError,
        r"no space left on device (while )?writing .*out.zarr: free space or choose another",
        patch=no_space_for_chunks,
    ),
    Case(
        "train-disk-full",
        lambda d, o: train(np.load(d / "img.npy"), np.load(d / "lab.npy"), out=o / "new.safetensors", **TRAIN),
        _train("img.npy", "lab.npy"),
        OutputWriteError,
        r"no space left on device writing .*new.safetensors: free space or choose another --out",
        patch=no_space_for_models,
    ),
    Case(
        "evaluate-json-under-a-file",
        lambda d, o: evaluate(np.load(d / "lab.npy"), np.load(d / "lab.npy")).to_json(d / "a_file" / "r.json"),
        _evaluate("lab.npy", "lab.npy", "--json", "{d}/a_file/r.json"),
        OutputWriteError,
        r"cannot write .*a_file/r.json",
    ),
    # ---- damaged TIFF and zarr inputs (TIFFs are read lazily, so a bad tile shows when it is read)
    Case(
        "corrupt-tiff",
        lambda d, o: open_volume(d / "corrupt.tif"),
        _predict("corrupt.tif"),
        InputError,
        r"cannot read .*corrupt.tif as .tif: .*is the file complete",
    ),
    Case(
        "tiff-codec-error",
        lambda d, o: segment(open_volume(d / "zlib.tif"), d / "m.safetensors", device="cpu"),
        _predict("zlib.tif"),
        InputError,
        r"cannot read image \(slices .* along axis 0\) .*truncated or damaged",
    ),
    # ---- outputs that are (inside) an input
    Case(
        "out-is-the-input",
        lambda d, o: segment(
            open_volume(d / "good.zarr"), d / "m.safetensors", device="cpu", out=d / "good.zarr", overwrite=True
        ),
        [
            "predict",
            "--image",
            "{d}/good.zarr",
            "--model",
            "{d}/m.safetensors",
            "--out",
            "{d}/good.zarr",
            "--overwrite",
            "--device",
            "cpu",
        ],
        InputError,
        r"--out .*good.zarr is the input .*: writing there would destroy it",
    ),
    Case(
        "out-inside-the-input",
        lambda d, o: segment(
            open_volume(d / "good.zarr"), d / "m.safetensors", device="cpu", out=d / "good.zarr" / "o.zarr"
        ),
        [
            "predict",
            "--image",
            "{d}/good.zarr",
            "--model",
            "{d}/m.safetensors",
            "--out",
            "{d}/good.zarr/o.zarr",
            "--device",
            "cpu",
        ],
        InputError,
        r"lies inside the input .*good.zarr",
    ),
    Case(
        "out-is-the-npy-input",
        lambda d, o: segment(
            open_volume(d / "img.npy"), d / "m.safetensors", device="cpu", out=d / "img.npy", overwrite=True
        ),
        _predict("img.npy", "--out", "{d}/img.npy", "--overwrite"),
        InputError,
        r"--out .*img.npy is the input .*: writing there would destroy it",
    ),
    Case(
        "evaluate-json-is-the-truth",
        None,
        _evaluate("lab.npy", "lab.npy", "--json", "{d}/lab.npy", "--overwrite"),
        InputError,
        r"--json .*lab.npy is the input .*: writing there would destroy it",
    ),
    Case(
        "analyze-truth-of-another-shape",
        lambda d, o: __import__("napari_xrayseg.core.microstructure").core.microstructure.compare_microstructure(
            np.load(d / "lab.npy"), np.load(d / "lab_small.npy")
        ),
        ["analyze", "--labels", "{d}/lab.npy", "--truth", "{d}/lab_small.npy"],
        InputError,
        r"--truth shape \(.*\) does not match --labels shape|truth shape \(.*\) does not match prediction shape",
    ),
    Case(
        "analyze-json-is-the-hdf5-input",
        None,
        ["analyze", "--labels", "{d}/two.h5:/a", "--json", "{d}/two.h5", "--overwrite", "--fractions-only"],
        InputError,
        r"--json .*two.h5 is the input .*two.h5: writing there would destroy it",
    ),
    Case(
        "evaluate-json-and-csv-one-path",
        None,
        _evaluate("lab.npy", "lab.npy", "--json", "{o}/r.txt", "--csv", "{o}/r.txt"),
        InputError,
        r"two outputs share a path .*r.txt.*: give each its own",
    ),
    Case(
        "train-out-inside-the-image",  # the model was written into the input's zarr store (QA, session 37)
        lambda d, o: train(open_volume(d / "good.zarr"), np.load(d / "lab.npy"), out=d / "good.zarr" / "m", **TRAIN),
        _train("good.zarr", "lab.npy", "--out", "{d}/good.zarr/m.safetensors"),
        InputError,
        r"--out .*good.zarr/m(.safetensors)? lies inside the input .*good.zarr",
    ),
    Case(
        "analyze-json-in-a-read-only-folder",  # the whole analysis ran, then failed to write (QA, session 37)
        None,
        ["analyze", "--labels", "{d}/lab.npy", "--json", "{o}/a.json", "--fractions-only"],
        InputError,
        r"cannot write JSON output .*a.json: folder .* is not writable; choose another --json",
        patch=_read_only_out,
    ),
    Case(
        "train-out-in-a-folder-the-acls-refuse",  # Windows: the whole training ran, then the save failed (QA, s43)
        lambda d, o: train(open_volume(d / "good.zarr"), np.load(d / "lab.npy"), out=o / "m", **TRAIN),
        _train("good.zarr", "lab.npy", "--out", "{o}/m.safetensors"),
        InputError,
        r"cannot write model file .*m.safetensors: folder .* is not writable; choose another --out",
        patch=_acl_refused_out,
    ),
    Case(
        "analyze-json-inside-the-labels",
        None,
        ["analyze", "--labels", "{d}/good.zarr", "--json", "{d}/good.zarr/zarr.json", "--overwrite"],
        InputError,
        r"--json .*good.zarr/zarr.json lies inside the input .*good.zarr",
    ),
    Case(
        "evaluate-figures-inside-the-pred",
        None,
        _evaluate("good.zarr", "good.zarr", "--figures", "{d}/good.zarr/figs"),
        InputError,
        r"--figures .*good.zarr/figs/collage.png lies inside the input .*good.zarr",
    ),
    Case(
        "out-is-the-model",
        lambda d, o: segment(
            np.load(d / "img.npy"), d / "m.safetensors", device="cpu", out=d / "m.safetensors", overwrite=True
        ),
        [
            "predict",
            "--image",
            "{d}/img.npy",
            "--model",
            "{d}/m.safetensors",
            "--out",
            "{d}/m.safetensors",
            "--overwrite",
            "--device",
            "cpu",
        ],
        InputError,
        r"is the input .*m.safetensors",
    ),
    # ---- out of memory (RAM, CPU torch, CUDA) and system I/O errors
    Case(
        "oom-memoryerror",
        _seg("img"),
        _predict("img.npy"),
        XraysegError,
        r"out of memory segmenting \(RAM\): .*--tile.*--batch.*--slab.*--device cpu",
        patch=_raise_in_network(MemoryError()),
        code=3,
    ),
    Case(
        "oom-torch-cpu",
        _seg("img"),
        _predict("img.npy"),
        MemoryError,
        r"out of memory segmenting \(RAM: DefaultCPUAllocator: not enough memory.*\): .*--tile",
        patch=_raise_in_network(RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 9 GB.")),
        code=3,
    ),
    Case(
        "oom-torch-cuda",
        _seg("img"),
        _predict("img.npy"),
        MemoryError,
        r"out of memory segmenting \(GPU: CUDA out of memory.*\): .*--batch.*--device cpu",
        patch=_raise_in_network(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")),
        code=3,
    ),
    Case(
        "oom-enomem-write",
        lambda d, o: segment(np.load(d / "img.npy"), d / "m.safetensors", device="cpu", out=o / "out.zarr"),
        _predict("img.npy"),
        XraysegError,
        r"out of memory segmenting \(RAM\)",
        patch=_chunk_write_fails(errno.ENOMEM, "Cannot allocate memory"),
        code=3,
    ),
    Case(
        "eio-writing-output",
        lambda d, o: segment(np.load(d / "img.npy"), d / "m.safetensors", device="cpu", out=o / "out.zarr"),
        _predict("img.npy"),
        OutputWriteError,
        r"cannot write .*out.zarr \(Input/output error\): .*--resume",
        patch=_chunk_write_fails(errno.EIO, "Input/output error"),
    ),
]


def _params(kind: str):
    out = []
    for c in CASES:
        if getattr(c, kind) is None:
            continue
        marks = [pytest.mark.xfail(reason=c.xfail, strict=False)] if c.xfail else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


def test_table_covers_the_issue():
    """Every category of the issue has a row, and ids are unique."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    for word in (
        "4d",
        "bool",
        "str",
        "nan",
        "inf",
        "empty",
        "constant",
        "shapes",
        "no-annotations",
        "unknown-classes",
        "negative",
        "float",
        "tile-larger",
        "tile-below",
        "rgb",
        "context",
        "missing",
        "unreadable",
        "truncated",
        "wrong-format",
        "several",
        "exists",
        "disk-full",
        "under-a-file",
        "pickle",
        "arch",
        "corrupt-tiff",
        "codec",
        "is-the-input",
        "inside-the-input",
        "oom",
        "eio",
    ):
        assert any(word in i for i in ids), word


@pytest.mark.parametrize("case", _params("api"))
def test_api_raises_the_documented_error(case: Case, d: Path, tmp_path: Path, monkeypatch):
    if case.patch is not None:
        case.patch(monkeypatch)
    with pytest.raises(case.exc, match=case.match):
        case.api(d, tmp_path)
    assert not (d / MARKER).exists()


@pytest.mark.parametrize("case", _params("cli"))
def test_cli_prints_one_line_and_the_documented_exit_code(case: Case, d: Path, tmp_path: Path, monkeypatch, capsys):
    if case.patch is not None:
        case.patch(monkeypatch)
    capsys.readouterr()
    code = main([a.format(d=d, o=tmp_path) for a in case.cli])
    cap = capsys.readouterr()
    # progress lines ("train: [ 50.0%] ...") may come first when the fault hits mid-run
    lines = [line for line in cap.err.splitlines() if line.strip() and not re.match(r"[\w-]+: \[", line)]
    assert "Traceback" not in cap.err
    assert code == case.code, cap.err
    assert len(lines) == 1, cap.err
    assert re.match(rf"xrayseg {case.cli[0]}: error: ", lines[0]), lines[0]
    # the CLI names its options, not the API's arguments (errors.for_cli)
    assert re.search(case.match.replace(r"pass overwrite=True \(--overwrite\)", "add --overwrite"), lines[0]), lines[0]
    assert "overwrite=True" not in lines[0] and "ignore_zero" not in lines[0], lines[0]
    assert not (d / MARKER).exists()


def test_existing_inputs_were_never_modified(d: Path):
    """Refusals leave what was there: the refused outputs and the 'precious' files."""
    assert (d / "existing.safetensors").read_bytes() == b"precious model"
    assert (d / "sample_out" / "keep.txt").read_text() == "precious"
    assert (d / "exists.json").read_text() == "{}"
    assert (d / "a_file").read_text() == "not a folder"  # sample/demo --overwrite made a folder in its place
    np.testing.assert_array_equal(open_volume(d / "good.zarr")[...], np.load(d / "img.npy"))
    assert sorted(p.name for p in (d / "good.zarr").iterdir()) == ["c", "zarr.json"]
    assert list((d / "exists.zarr").iterdir()) == []
    assert not (d / MARKER).exists()


def test_default_tile_still_adapts_to_small_slices(d: Path):
    """Policy: the model's own tile (tile=None) shrinks silently; only an explicit one is refused."""
    model = init_model("unet", size="tiny", classes=3, tile=256)
    labels = segment(np.load(d / "img.npy"), model, device="cpu")
    assert labels.shape == SHAPE and labels.dtype == np.uint8


def test_overwrite_is_the_only_way_past_an_existing_output(d: Path, tmp_path: Path, capsys):
    out = tmp_path / "o.zarr"
    args = ["predict", "--image", f"{d}/img.npy", "--model", f"{d}/m.safetensors", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_chunks_zarr_left_out_are_read_as_its_fill_value_and_said(d: Path, tmp_path: Path, caplog):
    """zarr 3 does not store a chunk that holds only the fill value (a zero slab, zeros outside a field
    of view): such a scan is valid and is segmented; a lost chunk of a copy reads the same, so both are said."""
    import zarr

    img = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    img[:1] = 0  # a zero slab at the top of the scan
    z = zarr.create_array(store=str(tmp_path / "zero.zarr"), shape=SHAPE, chunks=(1, 32, 32), dtype="f4")
    z[...] = img
    assert z.nchunks_initialized < z.nchunks  # zarr left it out itself
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        labels = segment(open_volume(tmp_path / "zero.zarr"), d / "m.safetensors", device="cpu")
    assert labels.shape == SHAPE
    assert "stores 3 of its 4 chunks: zarr reads the other 1 as its fill value 0.0" in caplog.text
    assert "--nodata 0.0" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        segment(open_volume(d / "holey.zarr"), d / "m.safetensors", device="cpu")  # a copy that lost one
    assert "check that the copy is complete" in caplog.text


def test_a_tiff_of_2d_images_of_different_sizes_is_refused(tmp_path: Path):
    """Such a file (PIL's save_all, TiffWriter one page at a time) was read as its first image alone, exit 0."""
    import tifffile

    with tifffile.TiffWriter(tmp_path / "pages.tif") as w:
        w.write(np.zeros((64, 80), np.uint8))
        w.write(np.zeros((32, 40), np.uint8))
    with pytest.raises(InputError, match=r"holds 2 images of different sizes \(64x80, 32x40\): save each"):
        open_volume(tmp_path / "pages.tif")


def test_a_tiff_of_pages_written_one_by_one_is_read_as_pages_not_as_series(tmp_path: Path, monkeypatch):
    """tifffile's shaped series of such a file take time quadratic in its pages (4000 pages: 2.6 s, 16,000:
    50 s, 50,000: about 8 min); its pages are read in linear time, every page checked."""
    import tifffile

    from napari_xrayseg.core.io import open_image, read_origin, read_voxel_size

    volume = np.arange(6 * 8 * 9, dtype=np.uint16).reshape(6, 8, 9)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as w:
        for page in volume:
            w.write(page, resolution=(2.0, 2.0), resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as w:
        for shape in [(8, 9), (8, 9), (7, 9)]:
            w.write(np.zeros(shape, np.uint8))

    def never(self):
        raise AssertionError("the shaped series were parsed")

    monkeypatch.setattr(tifffile.TiffFile, "_series_shaped", never)
    for read in (open_volume, open_image):
        np.testing.assert_array_equal(read(tmp_path / "pages.tif"), volume)
    assert read_voxel_size(tmp_path / "pages.tif") == ((5000.0, 5000.0, 5000.0), "um")
    assert read_origin(tmp_path / "pages.tif") is None  # no series parsed for the origin either
    with pytest.raises(InputError, match=r"holds 3 images of different sizes \(8x9, 7x9\): save each"):
        open_volume(tmp_path / "mixed.tif")
    # one odd page among ten (tifffile's uniform check samples three pages): it was read with page 0's layout
    for name, odd in (("height", np.zeros((6, 9), np.uint16)), ("type", np.zeros((8, 9), np.float32))):
        with tifffile.TiffWriter(tmp_path / f"{name}.tif") as w:
            for i in range(10):
                w.write(odd if i == 4 else np.zeros((8, 9), np.uint16))
        with pytest.raises(InputError, match=r"holds 10 images of different sizes.*: save each"):
            open_volume(tmp_path / f"{name}.tif")


def test_a_decompression_bomb_and_a_store_of_a_billion_chunks_are_no_hang_nor_traceback(tmp_path: Path, monkeypatch):
    """A PNG declaring 30000x30000 pixels raised Pillow's DecompressionBombError as a traceback; counting the
    chunks of a zarr declaring 1e9 of them (none stored) hung predict before it started."""
    import time

    import imageio.v3 as iio
    import zarr
    from PIL import Image

    from napari_xrayseg.core import io as xio
    from napari_xrayseg.core.io import check_chunks_present, read_image_2d

    iio.imwrite(tmp_path / "b.png", np.zeros((100, 100), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # so this small image counts as a bomb
    with pytest.raises(InputError, match=r"b.png declares an image too large to decode safely"):
        read_image_2d(tmp_path / "b.png")
    z = zarr.create_array(
        store=str(tmp_path / "huge.zarr"), shape=(10**5, 10**5, 10**5), chunks=(1, 1000, 1000), dtype="f4"
    )
    t0 = time.perf_counter()
    check_chunks_present(z)  # 1e9 chunks: not counted
    assert time.perf_counter() - t0 < 5 and z.nchunks > xio.MAX_CHUNKS_LISTED


def test_hdf5_data_kept_in_other_files_is_said(tmp_path: Path, caplog):
    """External raw storage reads any file's bytes as voxels (/etc/passwd in a QA run): said, by name."""
    import h5py

    (tmp_path / "raw.bin").write_bytes(bytes(range(256)) * 4)
    with h5py.File(tmp_path / "ext.h5", "w") as f:
        f.create_dataset("vol", shape=(1, 4, 256), dtype="u1", external=[(str(tmp_path / "raw.bin"), 0, 1024)])
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        assert open_volume(tmp_path / "ext.h5").shape == (1, 4, 256)
    assert "keeps its data in other files" in caplog.text and "raw.bin" in caplog.text


def test_model_info_on_a_truncated_model_file_says_so(tmp_path: Path, capsys):
    """It printed the description and exited 0: the weights' part was not looked at."""
    from napari_xrayseg.cli import main
    from napari_xrayseg.core.models import init_model, save_model

    p = save_model(init_model("unet", size="tiny", classes=3), tmp_path / "m.safetensors")
    data = p.read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["model-info", str(tmp_path / "m.safetensors")]) == 0
    capsys.readouterr()
    assert main(["model-info", str(tmp_path / "t.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "the file holds" in err and "truncated" in err
