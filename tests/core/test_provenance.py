"""Provenance: every result records when, by which software and command, from which files it was made."""

import hashlib
import json
from datetime import datetime

import h5py
import numpy as np
import pytest

from napari_xrayseg.core.errors import Cancelled, InputError
from napari_xrayseg.core.info import describe_file
from napari_xrayseg.core.io import open_volume, write_volume
from napari_xrayseg.core.metrics import Report, evaluate
from napari_xrayseg.core.microstructure import Microstructure, analyze
from napari_xrayseg.core.models import init_model, read_model_info, save_model
from napari_xrayseg.core.progress import CancelToken
from napari_xrayseg.core.provenance import command_line, describe_input, inputs_named, provenance
from napari_xrayseg.core.writer import read_output_meta

KW = {"tile": 32, "device": "cpu", "batch": 4, "slab": 2}


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_record(rec, command=None):
    assert datetime.fromisoformat(rec["created"]).tzinfo is not None  # a UTC time, not a local one
    assert {"napari-xrayseg", "torch", "monai", "numpy", "zarr", "python"} <= set(rec["software"])
    assert rec["command"] == command
    json.dumps(rec)  # a plain JSON record


def test_describe_input_names_files_by_absolute_path_and_arrays_by_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_volume("img.zarr", np.zeros((2, 8, 8), np.float32))
    with h5py.File("scan.h5", "w") as f:
        f.create_dataset("entry/data", data=np.zeros((2, 8, 8), np.float32))
    assert describe_input("img.zarr") == {"path": str(tmp_path / "img.zarr")}  # not relative to a folder
    assert describe_input(open_volume("img.zarr")) == {"path": str(tmp_path / "img.zarr")}
    assert describe_input(open_volume("scan.h5", dataset="entry/data")) == {
        "path": str(tmp_path / "scan.h5"),
        "dataset": "/entry/data",
    }
    arr = np.zeros((3, 4), np.uint16)
    assert describe_input(arr) == {"array": "numpy.ndarray", "shape": [3, 4], "dtype": "uint16"}
    assert describe_input([arr, "img.zarr"]) == [describe_input(arr), {"path": str(tmp_path / "img.zarr")}]
    assert describe_input({"a": arr}) == {"a": describe_input(arr)}
    assert describe_input({"layer": "x", "path": "/p"}) == {"layer": "x", "path": "/p"}  # a description is kept
    assert describe_input(None) is None


def test_provenance_records_the_command_only_inside_a_command_line():
    _check_record(provenance())
    with command_line(["xrayseg", "predict", "--out", "a b.zarr"]):
        rec = provenance({"image": np.zeros(2), "none": None})
    _check_record(rec, "xrayseg predict --out 'a b.zarr'")  # quoted: can be pasted into a shell
    assert set(rec["inputs"]) == {"image"}
    _check_record(provenance())  # and no longer after it
    import threading

    seen = []
    with command_line(["xrayseg", "predict"]):  # a CLI run in napari's console: a widget's job thread
        t = threading.Thread(target=lambda: seen.append(provenance()["command"]))
        t.start()
        t.join()
    assert seen == [None]  # is not stamped with it


def test_a_predict_output_records_its_image_model_and_software(tmp_path, tiny_model, monkeypatch):
    from napari_xrayseg.core.batch import segment_many
    from napari_xrayseg.core.inference import segment

    monkeypatch.chdir(tmp_path)
    write_volume("in.zarr", np.random.default_rng(0).random((4, 32, 32), dtype=np.float32))
    save_model(tiny_model, "m.safetensors")
    segment("in.zarr", "m.safetensors", out="out.zarr", **KW)
    rec = read_output_meta("out.zarr")["provenance"]
    _check_record(rec)
    assert rec["inputs"]["image"] == {"path": str(tmp_path / "in.zarr")}
    assert rec["inputs"]["model"] == {
        "path": str(tmp_path / "m.safetensors"),
        "sha256": _sha(tmp_path / "m.safetensors"),  # what sha256sum prints: the file can be checked
    }
    assert rec["cwd"] == str(tmp_path)
    # an array in memory and an unsaved model: named by kind, shape and dtype
    unsaved = init_model("unet", size="tiny", classes=3, tile=32, seed=1)
    segment(np.random.default_rng(5).random((4, 32, 32), dtype=np.float32), unsaved, out="mem.zarr", **KW)
    rec = read_output_meta("mem.zarr")["provenance"]
    assert rec["inputs"] == {"image": {"array": "numpy.ndarray", "shape": [4, 32, 32], "dtype": "float32"}}
    # an array the caller names (a widget: the layer and its file), also in a batch
    arr = np.random.default_rng(6).random((4, 32, 32), dtype=np.float32)
    with inputs_named({id(arr): {"layer": "scan", "path": "/data/scan.zarr"}}):
        segment(arr, unsaved, out="named.zarr", **KW)
        segment_many({"one": arr}, unsaved, out_dir="many", fmt="zarr", **KW)
    for out in ("named.zarr", "many/one.zarr"):
        assert read_output_meta(out)["provenance"]["inputs"]["image"] == {"layer": "scan", "path": "/data/scan.zarr"}
    assert describe_input(arr)["array"] == "numpy.ndarray"  # and no longer outside


def test_a_resumed_output_keeps_its_first_record_and_adds_each_resume(tmp_path, tiny_model):
    from napari_xrayseg.core.inference import segment

    vol = np.random.default_rng(1).random((8, 32, 32), dtype=np.float32)
    out = tmp_path / "out.zarr"
    token = CancelToken()
    with command_line(["xrayseg", "predict", "first"]), pytest.raises(Cancelled):
        segment(vol, tiny_model, out=out, cancel=token, progress=lambda p: p.step >= 2 and token.cancel(), **KW)
    first = read_output_meta(out)["provenance"]
    with command_line(["xrayseg", "predict", "second", "--resume"]):
        segment(vol, tiny_model, out=out, resume=True, **KW)
    rec = read_output_meta(out)["provenance"]
    assert rec["command"] == "xrayseg predict first" and rec["created"] == first["created"]
    assert len(rec["resumed"]) == 1
    assert rec["resumed"][0]["command"] == "xrayseg predict second --resume"
    _check_record(rec["resumed"][0], "xrayseg predict second --resume")
    # a finished output resumed again is left as it is: no "resumed" run that did nothing, no write (QA)
    attrs = (out / "zarr.json").read_bytes()
    with command_line(["xrayseg", "predict", "third", "--resume"]):
        segment(vol, tiny_model, out=out, resume=True, **KW)
    assert (out / "zarr.json").read_bytes() == attrs
    assert len(read_output_meta(out)["provenance"]["resumed"]) == 1


def test_evaluate_and_analyze_reports_record_their_files(tmp_path):
    rng = np.random.default_rng(2)
    pred = rng.integers(1, 4, (4, 16, 16)).astype(np.uint8)
    truth = pred.copy()
    truth[0, :4] = 1
    write_volume(tmp_path / "pred.zarr", pred)
    write_volume(tmp_path / "truth.zarr", truth)
    report = evaluate(str(tmp_path / "pred.zarr"), open_volume(tmp_path / "truth.zarr"))
    rec = report.to_dict()["provenance"]
    _check_record(rec)
    assert rec["inputs"] == {
        "prediction": {"path": str(tmp_path / "pred.zarr")},
        "truth": {"path": str(tmp_path / "truth.zarr")},
    }
    assert Report.from_dict(json.loads(json.dumps(report.to_dict()))).provenance == rec  # survives the JSON
    report.to_json(tmp_path / "ev.json")
    m = analyze(open_volume(tmp_path / "pred.zarr"), tortuosity=False)
    assert m.to_dict()["provenance"]["inputs"] == {"labels": {"path": str(tmp_path / "pred.zarr")}}
    assert Microstructure.from_dict(m.to_dict()).provenance == m.provenance
    m.to_json(tmp_path / "an.json")
    ev = describe_file(tmp_path / "ev.json")
    assert ev["kind"] == "evaluate report" and ev["provenance"] == rec and ev["mean_dice"] == report.mean_dice
    an = describe_file(tmp_path / "an.json")
    assert an["kind"] == "analyze result" and an["provenance"]["inputs"]["labels"]["path"].endswith("pred.zarr")


def test_a_trained_model_records_its_command_and_files(tmp_path):
    from napari_xrayseg.core.training import train

    rng = np.random.default_rng(3)
    image = rng.random((3, 32, 32), dtype=np.float32)
    labels = np.zeros((3, 32, 32), np.uint8)
    labels[1] = rng.integers(1, 3, (32, 32))
    write_volume(tmp_path / "img.zarr", image)
    with command_line(["xrayseg", "train", "x"]):
        model = train(
            open_volume(tmp_path / "img.zarr"), labels, arch="unet", size="tiny", epochs=1, steps_per_epoch=1,
            patch=32, batch=2, val_fraction=0, init="random", device="cpu",
        )  # fmt: skip
    rec = model.info.train["provenance"]
    assert rec["command"] == "xrayseg train x"
    assert rec["inputs"] == {
        "image": {"path": str(tmp_path / "img.zarr")},
        "labels": {"array": "numpy.ndarray", "shape": [3, 32, 32], "dtype": "uint8"},
    }
    path = save_model(model, tmp_path / "m.safetensors")
    info = read_model_info(path)
    assert info.train["provenance"] == rec and {"torch", "numpy", "napari-xrayseg"} <= set(info.software)
    d = describe_file(path)
    assert d["kind"] == "model" and d["sha256"] == _sha(path) and d["train"]["provenance"] == rec


def test_describe_file_tells_outputs_from_other_files_and_refuses_what_is_not_ours(tmp_path, tiny_model):
    from napari_xrayseg.core.inference import segment

    vol = np.random.default_rng(6).random((4, 32, 32), dtype=np.float32)
    token = CancelToken()
    with pytest.raises(Cancelled):
        segment(vol, tiny_model, out=tmp_path / "cut.zarr", cancel=token, progress=lambda p: token.cancel(), **KW)
    d = describe_file(tmp_path / "cut.zarr")
    assert d["kind"] == "predict output" and d["complete"] is False and "--resume" in d["note"]
    write_volume(tmp_path / "plain.zarr", vol)
    (tmp_path / "other.json").write_text("[1, 2]")
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "x.txt").write_text("x")
    for name, match in (
        ("missing.zarr", "does not exist"),
        ("plain.zarr", "not a file xrayseg writes"),
        ("other.json", "not a report xrayseg wrote"),
        ("bad.json", "not readable JSON"),
        ("x.txt", "not a file xrayseg writes"),
    ):
        with pytest.raises(InputError, match=match):
            describe_file(tmp_path / name)
    (tmp_path / "old.json").write_text(json.dumps({"per_class": {}, "mean_dice": 0.5}))
    assert "no provenance" in describe_file(tmp_path / "old.json")["note"]


def test_a_deleted_working_folder_and_an_hdf5_dataset_path(tmp_path, tiny_model, monkeypatch):
    """Review: a deleted working folder crashed segment/evaluate (os.getcwd); "f.h5:/ds" lost its dataset."""
    from napari_xrayseg.core.inference import segment

    vol = np.random.default_rng(1013).random((4, 32, 32), dtype=np.float32)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["entry/flat"] = vol
    assert describe_input(f"{tmp_path / 'scan.h5'}:/entry/flat") == {
        "path": str(tmp_path / "scan.h5"),
        "dataset": "/entry/flat",
    }
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    segment(vol, tiny_model, out=tmp_path / "out.zarr", **KW)
    assert read_output_meta(tmp_path / "out.zarr")["provenance"]["cwd"] is None
    assert evaluate(str(tmp_path / "out.zarr"), np.ones(vol.shape, np.uint8)).provenance["cwd"] is None


def test_a_files_sha256_is_read_again_when_the_file_changes(tmp_path):
    from napari_xrayseg.core.provenance import file_sha256

    p = tmp_path / "m.safetensors"
    p.write_bytes(b"one")
    assert file_sha256(p) == hashlib.sha256(b"one").hexdigest() == file_sha256(p)  # the second from the cache
    p.write_bytes(b"three")
    assert file_sha256(p) == hashlib.sha256(b"three").hexdigest()
    assert file_sha256(tmp_path / "missing") is None


def test_a_run_from_a_git_checkout_records_its_commit():
    """Every development version reported napari-xrayseg 0.1.0: records of two behaviours could not be told apart
    (QA h5, session 41). From a checkout (as the tests run) the commit is recorded beside the version."""
    import re
    from pathlib import Path

    import napari_xrayseg
    from napari_xrayseg.core.provenance import software

    root = Path(napari_xrayseg.__file__).resolve().parents[2]
    got = software().get("napari-xrayseg source")
    if (root / ".git").exists():
        assert got is not None and re.fullmatch(r"git [0-9a-f]{12}(-dirty)?", got)
    else:  # an installed wheel: the version alone
        assert got is None
