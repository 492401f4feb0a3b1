"""`xrayseg predict` killed mid-run and finished with --resume (also on a local cluster); --pyramid."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_xrayseg.cli import main
from napari_xrayseg.core.inference import SlabMarkers, output_complete, output_levels
from napari_xrayseg.core.io import write_volume
from napari_xrayseg.core.models import init_model, save_model


@pytest.fixture
def inputs(tmp_path):
    img = np.random.default_rng(3).random((24, 96, 96), dtype=np.float32)
    write_volume(tmp_path / "in.zarr", img, chunks=(1, 96, 96))
    model = save_model(init_model("unet", size="tiny", classes=3, tile=64, seed=0), tmp_path / "m.safetensors")
    return tmp_path / "in.zarr", model


def _predict(inp, model, out, *extra):
    return [
        "predict",
        "--image",
        str(inp),
        "--model",
        str(model),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--slab",
        "1",
        *extra,
    ]


@pytest.mark.needs("distributed")
@pytest.mark.slow
def test_killed_predict_resumes_to_the_clean_result(tmp_path, inputs, capsys, caplog):
    inp, model = inputs
    assert main(_predict(inp, model, tmp_path / "clean.zarr")) == 0
    clean = zarr.open_array(store=str(tmp_path / "clean.zarr"), mode="r")[...]

    out = tmp_path / "out.zarr"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_xrayseg", *_predict(inp, model, out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(SlabMarkers(out).done()) < 2:
            assert proc.poll() is None, "predict ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # no clean-up of any kind
    finally:
        proc.wait(timeout=60)
    done = SlabMarkers(out).done()
    assert 2 <= len(done) < 24 and not output_complete(out)
    capsys.readouterr()
    # a plain re-run refuses and says how to continue
    assert main(_predict(inp, model, out)) == 2
    assert "--resume" in capsys.readouterr().err
    # finish it on a local cluster of two worker processes (its start and stop logged only with -v)
    import logging

    with caplog.at_level(logging.INFO):
        assert main(_predict(inp, model, out, "--resume", "--workers", "2", "--torch-threads", "1")) == 0
    assert not [r for r in caplog.records if r.name.startswith("distributed") and r.levelno < logging.WARNING]
    n = len(done)  # said at once, before the first slab: a resumed run was silent for its first slab (QA)
    assert capsys.readouterr().err.startswith(f"predict: resuming {out}: {n} slabs already done\n")
    np.testing.assert_array_equal(zarr.open_array(store=str(out), mode="r")[...], clean)
    assert output_complete(out)


def _kill_when(argv, out, stage=None, n=2):
    """Run ``xrayseg ARGV`` in its own process group; SIGKILL the whole group once ``n`` slabs of ``stage`` are done."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_xrayseg", *argv],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while len(SlabMarkers(out, stage).done()) < n:
            assert proc.poll() is None, "predict ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)  # the process and any workers it started, with no clean-up
    finally:
        proc.wait(timeout=60)


MODES = {
    # mode: (extra options, the stage whose markers are watched, a second output, resume on a local cluster)
    "orthoplane-confidence": (["--axes", "zyx", "--confidence", "maxprob"], "pass0", "o-maxprob.zarr", True),
    "tta-pyramid": (["--tta", "--pyramid"], None, None, False),
    "cluster": (["--workers", "1", "--torch-threads", "1"], None, None, False),
}


@pytest.mark.needs("distributed")
@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_killed_resumes_to_the_clean_result(tmp_path, inputs, capsys, mode):
    _, model = inputs
    extra, stage, second, on_cluster = MODES[mode]
    img = np.random.default_rng(6).random((8, 32, 40), dtype=np.float32)
    write_volume(tmp_path / "small.zarr", img, chunks=(1, 32, 40))
    inp = tmp_path / "small.zarr"
    local = [a for a in extra if a not in ("--workers", "1", "--torch-threads")]
    assert main(_predict(inp, model, tmp_path / "clean.zarr", *local)) == 0
    out = tmp_path / "o.zarr"
    _kill_when(_predict(inp, model, out, *extra), out, stage)
    assert not output_complete(out)
    capsys.readouterr()
    assert main(_predict(inp, model, out, *extra)) == 2  # refused before any cluster starts: names --resume
    assert "--resume" in capsys.readouterr().err
    more = ["--workers", "2", "--torch-threads", "1"] if on_cluster else []
    assert main(_predict(inp, model, out, *local, *more, "--resume")) == 0
    assert output_complete(out)
    for a, b in zip(output_levels(out), output_levels(tmp_path / "clean.zarr")):
        np.testing.assert_array_equal(a[...], b[...])
    if second:
        np.testing.assert_array_equal(
            zarr.open_array(store=str(tmp_path / second), mode="r")[...],
            zarr.open_array(store=str(tmp_path / "clean-maxprob.zarr"), mode="r")[...],
        )
    assert not (out / ".xrayseg-passes").exists()


@pytest.mark.slow
def test_killed_overwrite_keeps_the_old_output_and_resumes_beside_it(tmp_path, inputs, capsys):
    inp, model = inputs
    out = tmp_path / "o.zarr"
    assert main(_predict(inp, model, out, "--axis", "1")) == 0  # the old result, along another axis
    old = zarr.open_array(store=str(out), mode="r")[...]
    new = tmp_path / ".o.zarr.xrayseg-new"
    _kill_when(_predict(inp, model, out, "--overwrite"), new)
    np.testing.assert_array_equal(zarr.open_array(store=str(out), mode="r")[...], old)  # untouched
    assert output_complete(out) and new.is_dir() and not output_complete(new)
    assert main(_predict(inp, model, out, "--overwrite", "--resume")) == 0
    assert main(_predict(inp, model, tmp_path / "clean.zarr")) == 0
    np.testing.assert_array_equal(
        zarr.open_array(store=str(out), mode="r")[...],
        zarr.open_array(store=str(tmp_path / "clean.zarr"), mode="r")[...],
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_predict_pyramid(tmp_path, inputs, capsys):
    inp, model = inputs
    img = np.random.default_rng(4).random((6, 600, 280), dtype=np.float32)
    write_volume(tmp_path / "big.zarr", img, chunks=(2, 600, 280))
    assert main(_predict(tmp_path / "big.zarr", model, tmp_path / "p.zarr", "--pyramid")) == 0
    assert "OME-Zarr pyramid" in capsys.readouterr().out
    shapes = [lv.shape for lv in output_levels(tmp_path / "p.zarr")]
    assert shapes == [(6, 600, 280), (3, 300, 140), (2, 150, 70)]


@pytest.mark.needs("distributed")
def test_predict_orthoplane_with_confidence(tmp_path, inputs, capsys):
    inp, model = inputs
    img = np.random.default_rng(5).random((8, 40, 48), dtype=np.float32)
    write_volume(tmp_path / "small.zarr", img, chunks=(4, 40, 48))
    argv = [
        "predict",
        "--image",
        str(tmp_path / "small.zarr"),
        "--model",
        str(model),
        "--out",
        str(tmp_path / "o.zarr"),
        "--device",
        "cpu",
        "--axes",
        "zyx",
        "--confidence",
        "maxprob",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "maxprob confidence" in out and str(tmp_path / "o-maxprob.zarr") in out
    conf = zarr.open_array(store=str(tmp_path / "o-maxprob.zarr"), mode="r")[...]
    assert conf.shape == (8, 40, 48) and conf.dtype == np.float32 and 1 / 3 - 1e-6 <= conf.min() <= conf.max() <= 1
    # the same job on a local cluster gives the same labels and confidence (replacing the first result)
    assert main([*argv, "--workers", "2", "--torch-threads", "1", "--overwrite"]) == 0
    np.testing.assert_array_equal(zarr.open_array(store=str(tmp_path / "o-maxprob.zarr"), mode="r")[...], conf)
    assert not (tmp_path / ".o.zarr.xrayseg-new").exists()


@pytest.mark.needs("distributed")
def test_workers_without_distributed_is_one_line(tmp_path, inputs, capsys, monkeypatch):
    """A plugin-manager install has no dask.distributed: one line naming the extra, exit 2, no traceback."""
    inp, model = inputs
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main(_predict(inp, model, tmp_path / "w.zarr", "--workers", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'napari-xrayseg[distributed]'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w.zarr").exists()
    monkeypatch.delitem(sys.modules, "distributed")
    assert main(_predict(inp, model, tmp_path / "w.zarr", "--workers", "0")) == 2  # not one process, silently
    assert "workers 0 must be a positive number" in capsys.readouterr().err


def test_disk_full_mid_orthoplane_run_is_one_line_on_stderr(tmp_path, inputs):
    """zarr's cut-short asyncio writes used to log ~2000 lines ("Task was destroyed", "Future exception was
    never retrieved", tracebacks) after the one-line error, as they were collected at exit: a real process."""
    inp, model = inputs
    code = (
        "import sys, pytest\n"
        f"sys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
        "from faults import no_space_for_chunks\n"
        "no_space_for_chunks(pytest.MonkeyPatch(), allow=6)\n"
        "from napari_xrayseg.cli import main\n"
        f"sys.argv = ['xrayseg', *{[str(a) for a in _predict(inp, model, tmp_path / 'o.zarr', '--axes', 'zyx')]!r}]\n"
        "sys.exit(main())\n"  # as the console script runs it
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    warned = [line for line in lines if line.startswith("WARNING ")]  # slab 1 with several axes: its cost
    assert all("with several axes" in line for line in warned), r.stderr[-2000:]
    lines = [line for line in lines if line not in warned and not line.startswith("predict: [")]  # progress
    assert len(lines) == 1 and "no space left on device" in lines[0], r.stderr[-2000:]
