"""The command line where users run it: consoles that cannot print every character, full disks behind a redirect,
closed streams, Windows list files and folder names (QA h2, session 42)."""

import io
import json
import sys

import numpy as np
import pytest
import tifffile

from napari_xrayseg.cli import main


class _FullDisk(io.StringIO):
    """A stdout redirected to a full disk (a cluster job's log over quota)."""

    def write(self, text):
        raise OSError(28, "No space left on device")


@pytest.fixture
def pair(tmp_path):
    truth = np.ones((4, 24, 24), np.uint8)
    truth[:, :, 8:16] = 2
    truth[:, :, 16:] = 3
    pred = truth.copy()
    pred[1, :2] = 1
    tifffile.imwrite(tmp_path / "pred.tif", pred, photometric="minisblack")
    tifffile.imwrite(tmp_path / "truth.tif", truth, photometric="minisblack")
    return ["evaluate", "--pred", str(tmp_path / "pred.tif"), "--truth", str(tmp_path / "truth.tif")]


def test_a_console_that_cannot_print_a_character_costs_no_output(pair, tmp_path, monkeypatch, capsys):
    """An ASCII or cp1252 stdout raised UnicodeEncodeError at the report's ± (or a class name like Al₂O₃, a path
    in another script) before evaluate wrote its --json and --csv: a traceback, and no files."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii", errors="strict"))
    args = [*pair, "--names", "pore", "Al₂O₃", "YSZ", "--json", str(tmp_path / "日本.json")]
    assert main([*args, "--csv", str(tmp_path / "e.csv")]) == 0
    sys.stdout.flush()
    said = raw.getvalue().decode("ascii")
    assert "\\xb1" in said and "Al\\u2082O\\u2083" in said and "\\u65e5\\u672c.json" in said  # escaped, not lost
    assert json.loads((tmp_path / "日本.json").read_text(encoding="utf-8"))["class_names"]["2"] == "Al₂O₃"
    assert (tmp_path / "e.csv").exists()


def test_stdout_on_a_full_disk_is_not_blamed_on_the_outputs(pair, tmp_path, monkeypatch, capsys):
    """A failed write to stdout was reported as "no space left on device writing the output: choose another
    --out" (evaluate has none), rc 2, and the --json after the report was never written."""
    monkeypatch.setattr(sys, "stdout", _FullDisk())
    assert main([*pair, "--json", str(tmp_path / "e.json")]) == 0
    err = capsys.readouterr().err
    assert "standard output could not be written (No space left on device)" in err and "--out" not in err
    assert json.loads((tmp_path / "e.json").read_text())["mean_dice"] > 0.9


def test_closed_stderr_and_braces_in_a_path(tmp_path, monkeypatch):
    """With stderr closed (`cmd 2>&-`, Windows pythonw) every command with progress died before it started;
    `train --out "{run1}/m"` crashed after saving the model (the path became part of a .format template)."""
    monkeypatch.setattr(sys, "stderr", None)
    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "4", "32", "32", "--seed", "1340"]) == 0
    out = tmp_path / "{run1} 100% {0}" / "m.safetensors"
    out.parent.mkdir()
    s = tmp_path / "s"
    args = ["train", "--image", str(s / "image.zarr"), "--labels", str(s / "truth.zarr"), "--out", str(out)]
    assert main([*args, "--size", "tiny", "--epochs", "1", "--steps", "1", "--patch", "32", "--arch", "unet"]) == 0
    assert out.exists()


def test_list_files_from_notepad_and_outputs_that_cannot_be_written_where_asked(pair, tmp_path, capsys):
    (tmp_path / "img.npy").write_bytes(b"")  # a name to list
    (tmp_path / "unicode.txt").write_bytes("img.npy\r\n".encode("utf-16"))  # Notepad's "Unicode": with a BOM
    (tmp_path / "ansi.txt").write_bytes("caf\xe9.npy\r\n".encode("cp1252"))  # Notepad's "ANSI"
    base = ["predict", "--model", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "o")]
    assert main(["init-model", "--out", str(tmp_path / "m"), "--size", "tiny"]) == 0
    assert main([*base, "--image", str(tmp_path / "ansi.txt")]) == 2
    assert "ansi.txt is not UTF-8 text (byte 0xe9 on line 1): save it as UTF-8" in capsys.readouterr().err
    assert main([*base, "--image", str(tmp_path / "unicode.txt")]) == 2  # read: the listed .npy is empty
    assert "UnicodeDecodeError" not in capsys.readouterr().err

    (tmp_path / "models").mkdir()
    assert main(["init-model", "--out", str(tmp_path / "models") + "/", "--size", "tiny"]) == 2
    assert "is a folder: give a file name, e.g." in capsys.readouterr().err
    assert not (tmp_path / "models.safetensors").exists()

    url = ["predict", "--image", pair[2], "--model", str(tmp_path / "m.safetensors"), "--out", "s3://bucket/x.zarr"]
    assert main(url) == 2
    assert "is a URL: outputs are written to local or mounted folders" in capsys.readouterr().err
    assert not (tmp_path / "s3:").exists()


def test_a_sample_cut_short_leaves_no_half_sample_and_a_failed_report_set_keeps_the_old(pair, tmp_path, monkeypatch):
    """QA h1 (a full disk): `sample` left half an image.zarr in the final folder, which read as a finished sample
    (its missing chunks as zeros); `evaluate --overwrite` replaced the JSON and CSV, then failed on the figures."""
    import napari_xrayseg.core.figures as figures
    import napari_xrayseg.core.io as io_

    real = io_.write_volume

    def full_at_truth(path, *args, **kw):
        if "truth" in str(path):
            raise OSError(28, "No space left on device", str(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(io_, "write_volume", full_at_truth)
    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "4", "32", "32", "--seed", "1341"]) == 2
    assert not (tmp_path / "s").exists()  # nothing that looks like a sample
    monkeypatch.setattr(io_, "write_volume", real)
    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "4", "32", "32", "--seed", "1341"]) == 0

    out = ["--json", str(tmp_path / "r.json"), "--figures", str(tmp_path / "figs")]
    assert main([*pair, *out]) == 0
    before = (tmp_path / "r.json").read_bytes()

    def full(*args, **kw):
        raise OSError(28, "No space left on device", str(tmp_path / "figs" / "collage.png"))

    monkeypatch.setattr(figures, "save_figures", full)
    assert main([*pair, *out, "--overwrite", "--names", "a", "b", "c"]) == 2
    assert (tmp_path / "r.json").read_bytes() == before  # the set stays the old one


def test_a_command_whose_result_is_its_printout_fails_when_stdout_cannot_be_written(tmp_path, monkeypatch, capsys):
    """Review: `xrayseg model-info m > info.json` on a full disk exited 0 with an empty file once stdout failures
    became warnings; commands whose product is their printout (model-info, info, suggest) fail."""
    assert main(["init-model", "--out", str(tmp_path / "m"), "--size", "tiny"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", _FullDisk())
    assert main(["model-info", str(tmp_path / "m.safetensors")]) == 2
    assert "cannot write standard output (No space left on device): its result is lost" in capsys.readouterr().err


def test_typed_numbers_take_a_decimal_comma_but_not_a_thousands_group():
    from napari_xrayseg._napari._layers import nodata_value, typed_number
    from napari_xrayseg.core.errors import InputError

    assert (typed_number("0,02"), typed_number("0,025"), typed_number(" 12,5 ")) == (0.02, 0.025, 12.5)
    for ambiguous in ("1,000", "-1,000", "65,535"):  # review: -1,000 was read as -1
        with pytest.raises(ValueError, match="ambiguous"):
            typed_number(ambiguous)
    with pytest.raises(InputError, match="No-data value"):
        nodata_value("-1,000")
