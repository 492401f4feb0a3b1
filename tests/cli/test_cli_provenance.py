"""`xrayseg info` and the command lines recorded in what the CLI writes."""

import json

import numpy as np
import pytest

from napari_xrayseg.cli import main
from napari_xrayseg.core.io import write_volume
from napari_xrayseg.core.writer import read_output_meta


def test_predict_evaluate_analyze_record_the_command_and_info_prints_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--out", "s", "--shape", "6", "48", "40", "--seed", "3"]) == 0
    assert main(["init-model", "--out", "m", "--size", "tiny", "--tile", "32"]) == 0
    predict = ["predict", "--image", "s/image.zarr", "--model", "m.safetensors", "--out", "my labels.zarr"]
    assert main(predict) == 0
    rec = read_output_meta(tmp_path / "my labels.zarr")["provenance"]
    assert rec["command"] == "xrayseg predict --image s/image.zarr --model m.safetensors --out 'my labels.zarr'"
    assert rec["cwd"] == str(tmp_path)  # the relative paths above are relative to it
    assert rec["inputs"]["image"] == {"path": str(tmp_path / "s" / "image.zarr")}
    evaluate = ["evaluate", "--pred", "my labels.zarr", "--truth", "s/truth.zarr", "--json", "ev.json"]
    assert main(evaluate) == 0
    analyze = ["analyze", "--labels", "my labels.zarr", "--truth", "s/truth.zarr", "--no-tortuosity"]
    assert main([*analyze, "--json", "an.json"]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())["provenance"]
    assert ev["command"] == "xrayseg " + " ".join(evaluate).replace("my labels.zarr", "'my labels.zarr'")
    assert ev["inputs"]["truth"] == {"path": str(tmp_path / "s" / "truth.zarr")}
    an = json.loads((tmp_path / "an.json").read_text())["provenance"]
    assert an["inputs"] == {
        "labels": {"path": str(tmp_path / "my labels.zarr")},
        "truth": {"path": str(tmp_path / "s" / "truth.zarr")},
    }
    capsys.readouterr()
    for path, kind in (
        ("my labels.zarr", "predict output"),
        ("ev.json", "evaluate report"),
        ("an.json", "analyze result"),
        ("m.safetensors", "model"),
        ("s/truth.zarr", "synthetic sample"),
    ):
        assert main(["info", path]) == 0
        out = json.loads(capsys.readouterr().out)  # JSON only on stdout: a script can parse it
        assert out["kind"] == kind and out["path"] == str(tmp_path / path)
    assert main(["info", "nothing.zarr"]) == 2
    assert "nothing.zarr does not exist" in capsys.readouterr().err


def test_info_of_a_batch_tiff_output(tmp_path, capsys):
    import tifffile

    rng = np.random.default_rng(4)
    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / "in" / f"{name}.tif", rng.random((40, 48), dtype=np.float32))
    write_volume(tmp_path / "v.zarr", rng.random((4, 40, 48), dtype=np.float32))
    assert main(["init-model", "--out", str(tmp_path / "m"), "--size", "tiny", "--tile", "32"]) == 0
    model = str(tmp_path / "m.safetensors")
    assert main(["predict", "--image", str(tmp_path / "in"), "--model", model, "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "out" / "a.tif")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "predict output (TIFF)"
    assert out["provenance"]["command"].startswith("xrayseg predict --image")
    assert out["batch"]["input"] == str(tmp_path / "in" / "a.tif")


def test_options_are_spelt_out_and_special_files_are_never_replaced(tmp_path, capsys):
    """QA: --out 1 was taken for --outside 1 (other numbers, exit 0); --overwrite made a named pipe a plain file."""
    import os

    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "4", "32", "32"]) == 0
    truth = str(tmp_path / "s" / "truth.zarr")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["analyze", "--labels", truth, "--out", "1"])
    assert e.value.code == 2 and "unrecognized arguments: --out 1" in capsys.readouterr().err
    os.mkfifo(tmp_path / "pipe.json")
    rc = main(["evaluate", "--pred", truth, "--truth", truth, "--json", str(tmp_path / "pipe.json"), "--overwrite"])
    assert rc == 2 and "is not a regular file" in capsys.readouterr().err
    assert (tmp_path / "pipe.json").is_fifo()
    assert main(["model-info", "-v", str(tmp_path / "nothing.safetensors")]) == 2  # -v after the command too


def test_evaluate_refuses_a_figures_image_of_another_shape_before_scoring(tmp_path, capsys):
    """QA: the wrong --image failed only after the whole report was printed, the figures folder made anyway."""
    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "4", "32", "32"]) == 0
    assert main(["sample", "--out", str(tmp_path / "o"), "--shape", "5", "32", "32"]) == 0
    truth = str(tmp_path / "s" / "truth.zarr")
    capsys.readouterr()
    argv = ["evaluate", "--pred", truth, "--truth", truth, "--figures", str(tmp_path / "fig")]
    assert main([*argv, "--image", str(tmp_path / "o" / "image.zarr")]) == 2
    out, err = capsys.readouterr()
    assert "has shape (5, 32, 32), the prediction (4, 32, 32)" in err and "mean Dice" not in out
    assert not (tmp_path / "fig").exists()
