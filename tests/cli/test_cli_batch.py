"""`xrayseg predict` over many inputs: folder, list file, repeated --image -> a folder of label files."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import zarr

from napari_xrayseg.cli import main
from napari_xrayseg.core.inference import SlabMarkers
from napari_xrayseg.core.io import write_volume
from napari_xrayseg.core.models import init_model, save_model


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(3)
    d = tmp_path / "scans"
    d.mkdir()
    write_volume(d / "tomo.zarr", rng.random((4, 32, 32), dtype=np.float32), chunks=(2, 32, 32))
    tifffile.imwrite(d / "radiograph.tif", rng.random((40, 32), dtype=np.float32))
    model = save_model(init_model("unet", size="tiny", classes=3, tile=32), tmp_path / "m.safetensors")
    return d, model


def _predict(*args):
    return main(["predict", *map(str, args), "--device", "cpu", "--tile", "32"])


def test_folder_to_folder_with_summary_and_rerun(tmp_path, setup, capsys):
    d, model = setup
    out = tmp_path / "labels"
    assert _predict("--image", d, "--model", model, "--out", out, "--summary", out / "summary.json") == 0
    cap = capsys.readouterr()
    assert "file 1/2 radiograph" in cap.err and "file 2/2 tomo" in cap.err  # progress across files
    lines = cap.out.splitlines()
    assert lines[0].split() == ["file", "shape", "seconds", "Mvox/s", "status"]
    assert lines[1].split()[:2] == ["radiograph", "40x32"] and lines[1].split()[-1] == "done"
    assert lines[2].split()[:2] == ["tomo", "4x32x32"] and lines[2].split()[-1] == "done"
    assert tifffile.imread(out / "radiograph.tif").shape == (40, 32)
    assert tifffile.imread(out / "tomo.tif").shape == (4, 32, 32)
    j = json.loads((out / "summary.json").read_text())
    assert [f["status"] for f in j["files"]] == ["done", "done"] and j["files"][1]["mvox_per_s"] > 0
    # the same command again: finished outputs are skipped, the summary (ours) is replaced
    assert _predict("--image", d, "--model", model, "--out", out, "--summary", out / "summary.json") == 0
    j = json.loads((out / "summary.json").read_text())
    assert [f["status"] for f in j["files"]] == ["skipped", "skipped"]
    (tmp_path / "notes.csv").write_text("my own notes\n")  # a user's file is never replaced
    assert _predict("--image", d, "--model", model, "--out", out, "--summary", tmp_path / "notes.csv") == 2
    assert "summary" in capsys.readouterr().err and (tmp_path / "notes.csv").read_text() == "my own notes\n"


def test_bad_file_exit_code_list_file_and_repeated_image(tmp_path, setup, capsys):
    d, model = setup
    (d / "broken.tif").write_bytes(b"II*\x00 cut short")
    out = tmp_path / "labels"
    assert _predict("--image", d, "--model", model, "--out", out, "--summary", tmp_path / "s.csv") == 2
    cap = capsys.readouterr()
    assert "error: 1 of 3 inputs failed (broken)" in cap.err and "Traceback" not in cap.err
    assert "the others are written" in cap.err
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert [r.split(",")[3] for r in rows[1:]] == ["failed", "done", "done"]
    assert sorted(p.name for p in out.iterdir()) == ["radiograph.tif", "tomo.tif"]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.tif").write_bytes(b"II*\x00 cut short")
    assert _predict("--image", bad, "--model", model, "--out", tmp_path / "none") == 2
    assert "1 of 1 inputs failed (broken): see the table; no output was written" in capsys.readouterr().err
    # with --summary it said "wrote the summary to ..." and then "nothing was written"
    assert _predict("--image", bad, "--model", model, "--out", tmp_path / "none", "--summary", tmp_path / "b.csv") == 2
    cap = capsys.readouterr()
    assert "wrote the summary to" in cap.out and "no output was written (only the summary, which says why)" in cap.err

    lst = tmp_path / "todo.txt"
    lst.write_text("scans/tomo.zarr\n# later: scans/radiograph.tif\n")
    assert _predict("--image", lst, "--model", model, "--out", tmp_path / "z", "--format", "zarr") == 0
    assert [p.name for p in (tmp_path / "z").iterdir()] == ["tomo.zarr"]
    assert zarr.open_array(store=str(tmp_path / "z" / "tomo.zarr"), mode="r").shape == (4, 32, 32)

    args = ["--image", d / "tomo.zarr", "--image", d / "radiograph.tif", "--model", model, "--out", tmp_path / "r"]
    assert _predict(*args) == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["radiograph.tif", "tomo.tif"]
    capsys.readouterr()
    assert _predict(*args, "--workers", "2") == 2
    assert "--workers segments one volume" in capsys.readouterr().err
    assert _predict(*args, "--pyramid") == 2
    assert "--format zarr" in capsys.readouterr().err


def test_single_volume_predict_is_unchanged(tmp_path, setup, capsys):
    d, model = setup
    assert _predict("--image", d / "tomo.zarr", "--model", model, "--out", tmp_path / "one.zarr") == 0
    assert "wrote labels (4, 32, 32)" in capsys.readouterr().out
    assert zarr.open_array(store=str(tmp_path / "one.zarr"), mode="r").shape == (4, 32, 32)


@pytest.mark.slow
def test_killed_batch_reruns_to_the_clean_result(tmp_path, setup):
    d, model = setup
    vol2 = np.random.default_rng(4).random((160, 96, 96), dtype=np.float32)  # long enough to be caught mid-way
    write_volume(d / "vol2.zarr", vol2, chunks=(1, 96, 96))
    argv = ["predict", "--image", str(d), "--model", str(model), "--device", "cpu", "--slab", "1"]
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0
    out = tmp_path / "out"
    work = out / ".vol2.tif.xrayseg-work.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_xrayseg", *argv, "--out", str(out)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while len(SlabMarkers(work).done()) < 2:  # radiograph and tomo done, vol2 under way
            assert proc.poll() is None, "predict ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)  # no clean-up of any kind
    finally:
        proc.wait(timeout=60)
    assert not (out / "vol2.tif").exists() and (out / "tomo.tif").exists()
    done = len(SlabMarkers(work).done())
    assert 2 <= done < 160
    summary = tmp_path / "s.json"
    assert main([*argv, "--out", str(out), "--summary", str(summary)]) == 0  # the same command again
    rows = json.loads(summary.read_text())["files"]
    assert [(r["name"], r["status"]) for r in rows] == [
        ("radiograph", "skipped"),
        ("tomo", "skipped"),
        ("vol2", "done"),
    ]
    assert not work.exists()
    for name in ("radiograph", "tomo", "vol2"):
        np.testing.assert_array_equal(
            tifffile.imread(out / f"{name}.tif"), tifffile.imread(tmp_path / "clean" / f"{name}.tif")
        )


def test_ctrl_c_in_a_many_input_predict_prints_what_is_done_and_a_rerun_finishes(tmp_path, capsys, monkeypatch):
    """QA: Ctrl-C printed only "interrupted": no table, no --summary, no word that a rerun continues."""
    from napari_xrayseg import cli

    rng = np.random.default_rng(1012)
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        write_volume(tmp_path / "in" / f"{name}.zarr", rng.random((4, 32, 32), dtype=np.float32))
    assert main(["init-model", "--out", str(tmp_path / "m"), "--size", "tiny", "--tile", "32"]) == 0
    shown = cli._ProgressPrinter.__call__
    sent = []

    def ctrl_c_in_file_2(self, p):
        if "file 2/3" in p.message and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # handled at once, in this (the main) thread
        shown(self, p)

    monkeypatch.setattr(cli._ProgressPrinter, "__call__", ctrl_c_in_file_2)
    argv = ["predict", "--image", str(tmp_path / "in"), "--model", str(tmp_path / "m.safetensors")]
    argv += ["--out", str(tmp_path / "out"), "--summary", str(tmp_path / "s.csv"), "--tile", "32"]
    capsys.readouterr()
    assert main(argv) == 130
    out, err = capsys.readouterr()
    assert "a " in out and "done" in out and "cancelled" in out  # the table: what finished, what did not
    assert "the same command skips them and resumes" in err
    assert "cancelled" in (tmp_path / "s.csv").read_text()
    monkeypatch.setattr(cli._ProgressPrinter, "__call__", shown)
    assert main(argv[:-4] + ["--tile", "32"]) == 0  # the same command (no summary this time): skips a, does b, c
    out = capsys.readouterr().out
    assert "1 skipped" in out and "2 done" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.tif", "b.tif", "c.tif"]
