"""Fault injection: crashes, full disks and races never lose what was there before.

A full disk is simulated by making zarr's or safetensors' writer raise
``OSError(ENOSPC)``: the tests run as root, which ignores read-only permissions, so
``chmod`` cannot simulate an unwritable store.
"""

from __future__ import annotations

import errno
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr

from faults import no_space_for_chunks, no_space_for_models
from napari_xrayseg.cli import main
from napari_xrayseg.core.errors import (
    Cancelled,
    OutputExistsError,
    OutputWriteError,
    XraysegError,
    write_error,
)
from napari_xrayseg.core.inference import output_complete, segment
from napari_xrayseg.core.io import create_zarr, write_volume
from napari_xrayseg.core.metrics import evaluate
from napari_xrayseg.core.models import init_model, load_model, save_model
from napari_xrayseg.core.predictor import activation_bytes_per_pixel
from napari_xrayseg.core.progress import CancelToken
from napari_xrayseg.core.training import train

TRAIN = {"size": "tiny", "epochs": 1, "steps_per_epoch": 2, "batch": 1, "patch": 16, "device": "cpu"}


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    img = rng.random((4, 32, 32), dtype=np.float32)
    lab = np.zeros((4, 32, 32), np.uint8)
    lab[0, :10], lab[0, 10:20], lab[0, 20:] = 1, 2, 3
    lab[2, :, :10], lab[2, :, 10:20], lab[2, :, 20:] = 1, 2, 3
    return img, lab


def _crash_forward_after(monkeypatch, n: int) -> dict:
    """The U-Net's forward raises on its call number ``n + 1`` (a bug or a GPU fault mid-run)."""
    from napari_xrayseg.core.unet import UNet

    real = UNet.forward
    calls = {"n": 0}

    def forward(self, x):
        calls["n"] += 1
        if calls["n"] > n:
            raise RuntimeError("injected fault in forward")
        return real(self, x)

    monkeypatch.setattr(UNet, "forward", forward)
    return calls


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- prediction


def test_crash_mid_prediction_leaves_a_readable_partial_output_marked_incomplete(tmp_path, data, monkeypatch):
    img, _ = data
    (tmp_path / "other.txt").write_text("keep me")
    model = init_model("unet", size="tiny", classes=3, tile=32)
    activation_bytes_per_pixel(model)  # the predictor probes the architecture once (a forward): not counted
    _crash_forward_after(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="injected fault"):
        segment(img, model, device="cpu", out=tmp_path / "o.zarr", slab=1, batch=1)
    out = zarr.open_array(store=str(tmp_path / "o.zarr"), mode="r")
    assert out.shape == img.shape and not output_complete(tmp_path / "o.zarr")
    assert np.isin(out[:2], [1, 2, 3]).all()  # the two finished slabs were kept
    assert not out[3].any()  # the rest is still the fill value
    assert (tmp_path / "other.txt").read_text() == "keep me"


def test_disk_full_mid_prediction_gives_a_clear_error_and_keeps_finished_slabs(tmp_path, data, monkeypatch):
    img, _ = data
    model = init_model("unet", size="tiny", classes=3, tile=32)
    no_space_for_chunks(monkeypatch, allow=2)
    with pytest.raises(XraysegError, match=r"no space left on device (while )?writing .*o.zarr: free space"):
        segment(img, model, device="cpu", out=tmp_path / "o.zarr", slab=1)
    monkeypatch.undo()
    out = zarr.open_array(store=str(tmp_path / "o.zarr"), mode="r")
    assert not output_complete(tmp_path / "o.zarr")
    assert np.isin(out[:2], [1, 2, 3]).all()


def test_disk_full_mid_prediction_on_the_cli(tmp_path, data, monkeypatch, capsys):
    img, _ = data
    np.save(tmp_path / "img.npy", img)
    save_model(init_model("unet", size="tiny", classes=3, tile=32), tmp_path / "m.safetensors")
    before = _files(tmp_path)
    no_space_for_chunks(monkeypatch, allow=1)
    capsys.readouterr()
    code = main(
        [
            "predict",
            "--image",
            str(tmp_path / "img.npy"),
            "--model",
            str(tmp_path / "m.safetensors"),
            "--out",
            str(tmp_path / "o.zarr"),
            "--device",
            "cpu",
            "--slab",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no space left on device" in err.splitlines()[-1] and "o.zarr" in err.splitlines()[-1]
    monkeypatch.undo()
    after = _files(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("o.zarr")} == before  # inputs untouched
    assert not output_complete(tmp_path / "o.zarr")


def test_cli_turns_a_bare_disk_full_oserror_into_one_line(tmp_path, monkeypatch, capsys):
    """Any writer without its own wrapping: the CLI still prints one line, exit 2."""
    import napari_xrayseg.core.sample as sample

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sample, "make_phantom", boom)
    code = main(["sample", "--out", str(tmp_path / "s"), "--shape", "2", "16", "16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        f"xrayseg sample: error: no space left on device writing {tmp_path / 's'}: free space or choose another --out"
    ]


@pytest.mark.parametrize(
    ("code", "text", "exit_code", "match"),
    [
        (errno.EIO, "Input/output error", 4, r"input/output error \(Input/output error\): check the disk"),
        (errno.ENOMEM, "Cannot allocate memory", 3, r"out of memory running sample \(RAM\): .*a smaller --shape"),
    ],
)
def test_cli_turns_system_oserrors_into_one_line(tmp_path, monkeypatch, capsys, code, text, exit_code, match):
    """A failing disk or exhausted memory is not the user's typo, but still one line (exit 4 or 3), no traceback."""
    import napari_xrayseg.core.sample as sample

    def boom(*a, **k):
        raise OSError(code, text)

    monkeypatch.setattr(sample, "make_phantom", boom)
    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "2", "16", "16"]) == exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]), err


def test_cli_ctrl_c_while_importing_torch_is_one_line(monkeypatch, capsys):
    """Ctrl-C during the parser's imports (torch takes seconds) exits 130 without a traceback."""
    import napari_xrayseg.cli as cli

    def interrupted_import():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted_import)
    assert cli.main(["predict", "--help"]) == 130
    assert capsys.readouterr().err.strip() == "xrayseg: interrupted"


def test_cli_real_ctrl_c_during_import_in_a_subprocess(tmp_path):
    """SIGINT sent while `python -m napari_xrayseg` is still starting: exit 130, one line."""
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, napari_xrayseg.cli as c\n"
        "print('ready', flush=True)\n"
        "sys.exit(c.main(['model-info', 'x']))\n"
    )  # main starts by importing torch (seconds)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 2:  # torch was imported before the signal came: the command ran to its own error
        assert "does not exist" in err
        return
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().endswith("interrupted"), err


# --------------------------------------------------------------------------- training


@pytest.fixture
def precious_model(tmp_path) -> tuple[Path, bytes]:
    p = save_model(init_model("unet", size="tiny", classes=3, tile=32, context=3, seed=9), tmp_path / "m.safetensors")
    return p, p.read_bytes()


def test_crash_mid_training_leaves_the_existing_model_untouched(tmp_path, data, monkeypatch, precious_model):
    img, lab = data
    path, before = precious_model
    _crash_forward_after(monkeypatch, 1)
    with pytest.raises(RuntimeError, match="injected fault"):
        train(img, lab, out=path, overwrite=True, **TRAIN)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temporary files


def test_cancelled_training_leaves_the_existing_model_untouched(tmp_path, data, precious_model):
    img, lab = data
    path, before = precious_model
    token = CancelToken()
    calls = {"n": 0}

    def progress(p):
        calls["n"] += 1
        if calls["n"] == 1:
            token.cancel()

    with pytest.raises(Cancelled):
        train(img, lab, out=path, overwrite=True, cancel=token, progress=progress, **{**TRAIN, "epochs": 3})
    assert path.read_bytes() == before


def test_disk_full_saving_the_trained_model(tmp_path, data, monkeypatch, precious_model):
    img, lab = data
    path, before = precious_model
    no_space_for_models(monkeypatch)
    with pytest.raises(OutputWriteError, match=r"no space left on device writing .*m.safetensors") as info:
        train(img, lab, out=path, overwrite=True, **TRAIN)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert path.read_bytes() == before  # the old model is intact...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # ...and no half-written file left
    trained = info.value.result  # ...and the trained model is not lost: save it elsewhere
    monkeypatch.undo()
    assert load_model(save_model(trained, tmp_path / "elsewhere")).info.trained


def test_training_refuses_an_unwritable_out_before_training(tmp_path, data, monkeypatch):
    img, lab = data
    (tmp_path / "a_file").write_text("x")
    calls = _crash_forward_after(monkeypatch, 10**9)
    with pytest.raises(XraysegError, match="is a file, not a folder"):
        train(img, lab, out=tmp_path / "a_file" / "sub" / "m.safetensors", **TRAIN)
    assert calls["n"] == 0  # refused up front: no training time wasted


@pytest.mark.parametrize("ndim", [2, 3])
def test_labels_are_bit_identical_after_training_and_evaluation(data, ndim):
    img, lab = data
    if ndim == 2:
        img, lab = img[0], lab[0]
    snap, flags = lab.copy(), (lab.flags.writeable, lab.dtype)
    model = train(img, lab, **{**TRAIN, "context": 1})
    assert lab.tobytes() == snap.tobytes() and (lab.flags.writeable, lab.dtype) == flags
    pred = segment(img, model, device="cpu")
    evaluate(pred, lab)
    assert lab.tobytes() == snap.tobytes()


# --------------------------------------------------------------------------- writers


def test_save_model_disk_full_keeps_the_old_file(tmp_path, monkeypatch, precious_model):
    path, before = precious_model
    no_space_for_models(monkeypatch)
    with pytest.raises(OutputWriteError, match="no space left on device"):
        save_model(init_model("unet", size="tiny"), path, overwrite=True)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_save_model_never_replaces_a_file_that_appeared_meanwhile(tmp_path, monkeypatch):
    """The no-overwrite check and the final move are one atomic step (a hard link)."""
    import safetensors.torch

    target = tmp_path / "m.safetensors"
    real = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        target.write_bytes(b"another job's model")  # written while ours was being saved

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    with pytest.raises(OutputExistsError, match="exists"):
        save_model(init_model("unet", size="tiny"), target)
    assert target.read_bytes() == b"another job's model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_two_writers_racing_for_one_zarr_output(tmp_path):
    results: list[object] = []
    barrier = threading.Barrier(4)

    def create():
        barrier.wait()
        try:
            results.append(create_zarr(tmp_path / "o.zarr", (2, 8, 8)))
        except OutputExistsError as e:
            results.append(e)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(not isinstance(r, OutputExistsError) for r in results) == 1


def test_write_volume_disk_full_and_unwritable_location(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputWriteError, match=r"cannot write .*a_file/v.zarr"):
        write_volume(tmp_path / "a_file" / "v.zarr", np.zeros((2, 4, 4)))
    no_space_for_chunks(monkeypatch, allow=0)
    with pytest.raises(OutputWriteError, match=r"no space left on device writing .*v.zarr"):
        write_volume(tmp_path / "v.zarr", np.ones((2, 4, 4)))


def test_report_disk_full_leaves_no_half_written_file(tmp_path, data, monkeypatch):
    _, lab = data
    report = evaluate(lab, lab)
    real_open = open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def write(self, text):
            self.fh.write(text[:5])
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return Full(fh) if "x" in mode or "w" in mode else fh

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(OutputWriteError, match=r"no space left on device writing .*r.json: .*--json"):
        report.to_json(tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_write_error_messages():
    assert (
        str(write_error(OSError(errno.ENOSPC, "x"), "o.zarr"))
        == "no space left on device writing o.zarr: free space or choose another --out"
    )
    assert (
        str(write_error(PermissionError(errno.EACCES, "x"), "o.zarr"))
        == "cannot write o.zarr (permission denied): choose a writable location with --out"
    )
    assert (
        str(write_error(OSError(errno.EROFS, "x"), "o.zarr", option="--json"))
        == "cannot write o.zarr (read-only file system): choose a writable location with --json"
    )
    e = write_error(OSError(errno.ENOSPC, "x", "o.zarr/c/0"), None)
    assert e.errno == errno.ENOSPC and "o.zarr/c/0" in str(e) and isinstance(e, XraysegError)
