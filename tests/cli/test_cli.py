import json

import numpy as np
import pytest
import torch
import zarr

from napari_xrayseg.cli import build_parser, main
from napari_xrayseg.core.inference import output_complete


def test_sample_init_model_predict_round_trip(tmp_path, capsys):
    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "6", "48", "40", "--seed", "3"]) == 0
    img = zarr.open_array(store=str(tmp_path / "s" / "image.zarr"), mode="r")
    truth = zarr.open_array(store=str(tmp_path / "s" / "truth.zarr"), mode="r")
    assert img.shape == truth.shape == (6, 48, 40) and truth.dtype == np.uint8
    assert img.attrs["napari_xrayseg"]["seed"] == 3

    assert main(["init-model", "--out", str(tmp_path / "m"), "--size", "tiny", "--tile", "32"]) == 0
    assert (tmp_path / "m.safetensors").exists()
    capsys.readouterr()
    assert main(["model-info", str(tmp_path / "m.safetensors")]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == [1, 2, 3]

    out = tmp_path / "pred.zarr"
    assert (
        main(
            [
                "predict",
                "--image",
                str(tmp_path / "s" / "image.zarr"),
                "--model",
                str(tmp_path / "m.safetensors"),
                "--out",
                str(out),
                "--axis",
                "1",
                "--device",
                "cpu",
                "--tile",
                "32",
                "--batch",
                "2",
            ]
        )
        == 0
    )
    cap = capsys.readouterr()
    assert "wrote labels (6, 48, 40)" in cap.out and "predict:" in cap.err
    pred = zarr.open_array(store=str(out), mode="r")
    assert pred.shape == (6, 48, 40) and pred.dtype == np.uint8 and output_complete(out)
    assert set(np.unique(pred[...])) <= {1, 2, 3}


def test_predict_tiff_and_group_input(tmp_path):
    import tifffile

    vol = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    tifffile.imwrite(tmp_path / "v.tif", vol, photometric="minisblack")
    g = zarr.open_group(store=str(tmp_path / "g.zarr"), mode="w")
    g.create_array("raw", shape=vol.shape, dtype="float32")[...] = vol
    main(["init-model", "--out", str(tmp_path / "m.safetensors"), "--size", "tiny", "--tile", "32"])
    for src in ("v.tif", "g.zarr"):
        out = tmp_path / f"{src}.out.zarr"
        assert (
            main(
                [
                    "predict",
                    "--image",
                    str(tmp_path / src),
                    "--model",
                    str(tmp_path / "m.safetensors"),
                    "--out",
                    str(out),
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        assert zarr.open_array(store=str(out), mode="r").shape == vol.shape


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (
            ["predict", "--image", "{t}/missing.zarr", "--model", "{t}/m.safetensors", "--out", "{t}/o.zarr"],
            "does not exist",
        ),
        (
            ["predict", "--image", "{t}/img.npy", "--model", "{t}/nomodel.safetensors", "--out", "{t}/o.zarr"],
            "model file",
        ),
        (
            [
                "predict",
                "--image",
                "{t}/img.npy",
                "--model",
                "{t}/m.safetensors",
                "--out",
                "{t}/o.zarr",
                "--tile",
                "30",
            ],
            "stride",
        ),
        (
            ["predict", "--image", "{t}/two.zarr", "--model", "{t}/m.safetensors", "--out", "{t}/o.zarr"],
            "several arrays",
        ),
        (["predict", "--image", "{t}/img.npy", "--model", "{t}/m.safetensors", "--out", "{t}/exists.zarr"], "exists"),
        (
            ["predict", "--image", "{t}/img.txt", "--model", "{t}/m.safetensors", "--out", "{t}/o.zarr"],
            "names no existing input",  # a .txt is a list file of inputs; this one is not
        ),
        (
            ["predict", "--image", "{t}/img.bmp", "--model", "{t}/m.safetensors", "--out", "{t}/o.zarr"],
            "unknown volume format",
        ),
        (["init-model", "--out", "{t}/m.safetensors"], "exists"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, match):
    np.save(tmp_path / "img.npy", np.random.default_rng(0).random((2, 32, 32), dtype=np.float32))
    (tmp_path / "img.txt").write_text("hello")
    (tmp_path / "img.bmp").write_bytes(b"BM")
    (tmp_path / "exists.zarr").mkdir()
    g = zarr.open_group(store=str(tmp_path / "two.zarr"), mode="w")
    g.create_array("a", shape=(2, 8, 8), dtype="f4")
    g.create_array("b", shape=(2, 8, 8), dtype="f4")
    main(["init-model", "--out", str(tmp_path / "m.safetensors"), "--size", "tiny", "--tile", "32"])
    capsys.readouterr()
    code = main([a.format(t=tmp_path) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "error:" in err[0] and match in err[0]
    assert "Traceback" not in err[0]


def test_parser_lists_commands():
    text = build_parser().format_help()
    for cmd in ("sample", "init-model", "predict", "model-info"):
        assert cmd in text


def test_tta_takes_a_number_of_views_or_none():
    p = build_parser()
    base = ["predict", "--image", "in.zarr", "--model", "m.safetensors", "--out", "o.zarr"]
    assert p.parse_args(base).tta is False
    assert p.parse_args([*base, "--tta"]).tta is True
    assert p.parse_args([*base, "--tta", "8"]).tta == 8
    assert p.parse_args([*base, "--tta=16", "--pyramid"]).tta == 16
    first = ["predict", "--tta", "--image", "in.zarr", "--model", "m.safetensors", "--out", "o.zarr"]
    assert p.parse_args(first).tta is True


def test_nodata_outside_a_field_of_view_in_predict_train_and_suggest(tmp_path, capsys):
    """A uint16 reconstruction whose outside is 0 (tomopy's circ_mask): --nodata 0 everywhere the image is read."""
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :40]
    inside = (yy - 19.5) ** 2 + (xx - 19.5) ** 2 < 17**2
    vol = np.where(inside, rng.integers(1000, 3000, (12, 40, 40)), 0).astype(np.uint16)
    tifffile.imwrite(tmp_path / "recon.tif", vol, photometric="minisblack")
    lab = np.zeros(vol.shape, np.uint8)
    lab[[3, 8]] = np.where(vol[[3, 8]] > 2000, 2, 1)  # painted over the outside too: those voxels are ignored
    np.save(tmp_path / "lab.npy", lab)
    model = tmp_path / "m.safetensors"
    common = ["--device", "cpu", "--nodata", "0"]
    assert main(["train", "--image", str(tmp_path / "recon.tif"), "--labels", str(tmp_path / "lab.npy"),
                 "--out", str(model), "--arch", "unet", "--size", "tiny", "--init", "random", "--epochs", "1",
                 "--steps", "2", "--batch", "2", "--patch", "32", *common]) == 0  # fmt: skip
    out = tmp_path / "pred.zarr"
    assert main(["predict", "--image", str(tmp_path / "recon.tif"), "--model", str(model), "--out", str(out),
                 *common]) == 0  # fmt: skip
    pred = zarr.open_array(store=str(out), mode="r")[...]
    assert (pred[:, ~inside] == 0).all() and (pred[:, inside] > 0).all()
    capsys.readouterr()
    assert main(["suggest", "--image", str(tmp_path / "recon.tif"), "--model", str(model), "--labels",
                 str(tmp_path / "lab.npy"), "--count", "2", *common]) == 0  # fmt: skip
    picked = [int(v) for v in capsys.readouterr().out.split()]
    assert len(picked) == 2 and not {3, 8} & set(picked)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--image", "x", "--model", "m", "--out", "o", "--nodata", "zero"])


def test_a_closed_pipe_ends_quietly(tmp_path, monkeypatch, capsys):
    """`xrayseg model-info m | head -1`: the reader closing its end is no disk error (exit 141, nothing on stderr)."""
    import os

    assert main(["init-model", "--out", str(tmp_path / "m"), "--size", "tiny"]) == 0
    capsys.readouterr()
    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written
    with open(w, "w", buffering=1) as pipe:  # line-buffered, as a terminal or `python -u`
        monkeypatch.setattr("sys.stdout", pipe)
        assert main(["model-info", str(tmp_path / "m.safetensors")]) == 141
        monkeypatch.undo()
    assert capsys.readouterr().err == ""


def test_outputs_are_checked_before_the_work(tmp_path, capsys):
    """evaluate / analyze refuse a taken output before computing, and write none of the others."""
    truth = np.random.default_rng(0).integers(1, 4, (4, 16, 16)).astype(np.uint8)
    np.save(tmp_path / "t.npy", truth)
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "collage.png").write_bytes(b"kept")
    t = str(tmp_path / "t.npy")
    capsys.readouterr()
    argv = [
        "evaluate",
        "--pred",
        t,
        "--truth",
        t,
        "--json",
        str(tmp_path / "r.json"),
        "--figures",
        str(tmp_path / "figs"),
    ]
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "figs/collage.png: choose another folder or add --overwrite" in cap.err
    assert not (tmp_path / "r.json").exists() and (tmp_path / "figs" / "collage.png").read_bytes() == b"kept"
    (tmp_path / "a.csv").write_text("kept")
    argv = ["analyze", "--labels", t, "--json", str(tmp_path / "a.json"), "--csv", str(tmp_path / "a.csv")]
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "CSV output" in cap.err and not (tmp_path / "a.json").exists()
    assert main([*argv, "--overwrite", "--fractions-only"]) == 0
    assert (tmp_path / "a.json").exists() and (tmp_path / "a.csv").read_text() != "kept"
    # figures into the folder that holds the inputs: fine (only the PNGs are written)
    assert main(["evaluate", "--pred", t, "--truth", t, "--figures", str(tmp_path)]) == 0
    assert (tmp_path / "collage.png").exists() and (tmp_path / "t.npy").exists()


def test_sample_annotate_writes_the_slices_a_user_would_paint(tmp_path, capsys):
    """`sample --annotate 3`: annotations.zarr holds the truth of 3 z slices, 0 elsewhere; the truth names phases."""
    from napari_xrayseg.core.io import read_class_names

    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "9", "24", "24", "--annotate", "3"]) == 0
    assert "annotations.zarr" in capsys.readouterr().out
    truth = zarr.open_array(store=str(tmp_path / "s" / "truth.zarr"), mode="r")[...]
    ann = zarr.open_array(store=str(tmp_path / "s" / "annotations.zarr"), mode="r")[...]
    painted = [z for z in range(9) if ann[z].any()]
    assert painted == [2, 4, 6] and (ann[painted] == truth[painted]).all() and ann.sum() > 0
    assert read_class_names(tmp_path / "s" / "truth.zarr") == {1: "pore", 2: "nickel", 3: "YSZ"}
    assert main(["sample", "--out", str(tmp_path / "t"), "--shape", "24", "24", "--annotate", "3"]) == 2
    assert "--annotate 3: give a positive number of slices and a 3D --shape" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_during_train_saves_the_model_so_far(tmp_path, monkeypatch, capsys, sig):
    """The first Ctrl-C stops training at its next step and writes the model so far (exit 130), as Cancel does;
    SIGTERM (a batch scheduler's time limit) the same (exit 143): it threw the whole run away."""
    import os
    import signal

    from napari_xrayseg import cli
    from napari_xrayseg.core.models import load_model

    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "6", "32", "32", "--annotate", "2"]) == 0
    shown = cli._ProgressPrinter.__call__

    def ctrl_c_at_epoch_2(self, p):
        shown(self, p)
        if p.info.get("epoch") == 2 and "val_dice" in p.info:  # the end of epoch 2
            os.kill(os.getpid(), getattr(signal, sig))

    monkeypatch.setattr(cli._ProgressPrinter, "__call__", ctrl_c_at_epoch_2)
    out = tmp_path / "m.safetensors"
    s = tmp_path / "s"
    argv = ["train", "--image", f"{s}/image.zarr", "--labels", f"{s}/annotations.zarr", "--out", str(out)]
    argv += ["--arch", "unet", "--size", "tiny", "--epochs", "50", "--steps", "2", "--batch", "2", "--patch", "32"]
    capsys.readouterr()
    term = sig == "SIGTERM"
    assert main(argv) == (143 if term else 130)
    err = capsys.readouterr().err
    how = "terminated" if term else "interrupted"
    assert "the model so far goes to" in err and f"{how}, training cancelled after 2 epochs" in err
    assert len(load_model(out).info.history) == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_ctrl_c_before_the_first_epoch_says_nothing_was_saved(tmp_path, monkeypatch, capsys):
    """It said "the model so far goes to ..." and then a bare "interrupted", saving nothing (file QA, session 37)."""
    import os
    import signal

    from napari_xrayseg import cli

    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "6", "32", "32", "--annotate", "2"]) == 0
    shown = cli._ProgressPrinter.__call__

    def ctrl_c_at_the_first_step(self, p):
        shown(self, p)
        if p.info.get("epoch") == 1 and p.info.get("batch") == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(cli._ProgressPrinter, "__call__", ctrl_c_at_the_first_step)
    out, s = tmp_path / "m.safetensors", tmp_path / "s"
    argv = ["train", "--image", f"{s}/image.zarr", "--labels", f"{s}/annotations.zarr", "--out", str(out)]
    argv += ["--arch", "unet", "--size", "tiny", "--epochs", "5", "--steps", "4", "--batch", "2", "--patch", "32"]
    capsys.readouterr()
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first epoch finished; nothing was saved" in err
    assert "xrayseg train: interrupted\n" not in err and not out.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_of_a_finished_output_says_so(tmp_path, capsys):
    img = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    np.save(tmp_path / "v.npy", img)
    assert main(["init-model", "--out", str(tmp_path / "m"), "--size", "tiny", "--tile", "32"]) == 0
    argv = ["predict", "--image", str(tmp_path / "v.npy"), "--model", str(tmp_path / "m.safetensors")]
    argv += ["--out", str(tmp_path / "o.zarr"), "--device", "cpu"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert "was complete already" in capsys.readouterr().out
    assert main([*argv, "--resume", "--tile", "16"]) == 2  # a finished output is still checked against the run


def _full_disk_but_for_rescues(tmp_path, monkeypatch):
    """A sample to train on; every model write fails with ENOSPC except a rescue, into tmp_path/rescue."""
    import errno
    import tempfile

    import safetensors.torch

    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "6", "32", "32", "--annotate", "2"]) == 0
    real = safetensors.torch.save_file

    def full_disk_for_out(tensors, filename, metadata=None):
        if "rescued" not in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk_for_out)
    (tmp_path / "rescue").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "rescue"))


def _tiny_train_argv(tmp_path, *, epochs, steps):
    """``xrayseg train`` of a tiny 2.5D unet on the sample in ``tmp_path/s``, to ``tmp_path/m``."""
    s = tmp_path / "s"
    argv = ["train", "--image", f"{s}/image.zarr", "--labels", f"{s}/annotations.zarr", "--out", str(tmp_path / "m")]
    return argv + ["--arch", "unet", "--size", "tiny", "--epochs", str(epochs), "--steps", str(steps)] + [
        "--batch", "2", "--patch", "32"
    ]  # fmt: skip


def test_a_full_disk_after_training_rescues_the_model(tmp_path, monkeypatch, capsys):
    """Training done, its --out on a full disk: the model goes to the temporary folder and the error says where."""
    from napari_xrayseg.core.models import load_model

    _full_disk_but_for_rescues(tmp_path, monkeypatch)
    argv = _tiny_train_argv(tmp_path, epochs=1, steps=1)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress lines: the one error line
    assert err.startswith("xrayseg train: error: no space left on device") and "the trained model was saved to" in err
    (rescued,) = (tmp_path / "rescue").glob("m-rescued-*.safetensors")
    assert load_model(rescued).info.trained and not (tmp_path / "m.safetensors").exists()


def test_progress_lines_say_the_time_so_far_and_left(monkeypatch, capsys):
    """From the rate since the first record: a resumed run that starts at 50 % is not counted as fast."""
    from napari_xrayseg import cli
    from napari_xrayseg.core.progress import Progress

    now = [100.0]
    monkeypatch.setattr(cli.time, "monotonic", lambda: now[0])
    pr = cli._ProgressPrinter("predict", every=0)
    for t, step in ((0, 50), (30, 60), (300, 100)):  # resumed at 50 %: 10 % in 30 s
        now[0] = 100.0 + t
        pr(Progress(step, 100, f"slices {step}/100", {"voxels_per_s": 2e6}))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("slices 50/100")  # nothing to say yet
    assert lines[1].endswith("slices 60/100 (30 s, about 2 min left)")  # 40 % at 10 % per 30 s
    assert lines[2].endswith("slices 100/100 (5 min)") and pr.rate == 2e6
    assert cli._duration(3 * 3600) == "3.0 h"


def test_ctrl_c_in_predict_names_resume(tmp_path, monkeypatch, capsys):
    import napari_xrayseg.core.inference as inference

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((3, 32, 32), dtype=np.float32))
    assert main(["init-model", "--out", str(tmp_path / "m"), "--size", "tiny", "--tile", "32"]) == 0
    monkeypatch.setattr(inference, "segment", interrupted)
    argv = ["predict", "--image", str(tmp_path / "v.npy"), "--model", str(tmp_path / "m.safetensors")]
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "o.zarr")]) == 130
    assert capsys.readouterr().err.strip() == (
        "xrayseg predict: interrupted (finished slabs are kept: the same command with --resume continues)"
    )


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_during_predict_stops_after_the_slab_and_says_how_to_resume(tmp_path, monkeypatch, capsys, sig):
    """QA: SIGTERM (a batch system's time limit) ended a one-volume predict with exit 143 and not a word."""
    import os
    import signal

    from napari_xrayseg import cli
    from napari_xrayseg.core.writer import output_complete

    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((8, 32, 32), dtype=np.float32))
    assert main(["init-model", "--out", str(tmp_path / "m"), "--size", "tiny", "--tile", "32"]) == 0
    shown = cli._ProgressPrinter.__call__

    def signal_at_the_first_slab(self, p):
        shown(self, p)
        if p.step >= 1:
            os.kill(os.getpid(), getattr(signal, sig))

    monkeypatch.setattr(cli._ProgressPrinter, "__call__", signal_at_the_first_slab)
    out = tmp_path / "o.zarr"
    argv = ["predict", "--image", str(tmp_path / "v.npy"), "--model", str(tmp_path / "m.safetensors")]
    argv += ["--out", str(out), "--slab", "2"]
    capsys.readouterr()
    term = sig == "SIGTERM"
    assert main(argv) == (143 if term else 130)
    err = capsys.readouterr().err
    how = "terminated" if term else "interrupted"
    assert f"xrayseg predict: {how}: the finished slabs are kept in {out}, the same command with --resume" in err
    assert out.exists() and not output_complete(out)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    monkeypatch.setattr(cli._ProgressPrinter, "__call__", shown)
    assert main([*argv, "--resume"]) == 0 and output_complete(out)


def test_overwrite_never_replaces_a_png_input_or_a_folder_that_is_no_zarr_store(tmp_path, capsys):
    """`predict --out myproject --overwrite` replaced the user's folder (thesis and all) with a zarr array,
    and an in-memory PNG input was not recognised: `--out scan.png --overwrite` replaced the image."""
    import imageio.v3 as iio

    assert main(["init-model", "--out", str(tmp_path / "m"), "--size", "tiny", "--tile", "32"]) == 0
    (tmp_path / "r").mkdir()
    iio.imwrite(tmp_path / "r" / "scan.png", (np.random.default_rng(0).random((40, 48)) * 255).astype(np.uint8))
    png = (tmp_path / "r" / "scan.png").read_bytes()
    (tmp_path / "myproject" / "docs").mkdir(parents=True)
    (tmp_path / "myproject" / "docs" / "thesis.txt").write_text("years of work")
    base = ["predict", "--image", str(tmp_path / "r" / "scan.png"), "--model", str(tmp_path / "m.safetensors")]
    capsys.readouterr()
    for out, says in (
        (tmp_path / "r" / "scan.png", "is the input"),
        (tmp_path / "r", "lies around the input"),
        (tmp_path / "myproject", "is a folder, not a zarr store (it holds docs"),
    ):
        assert main([*base, "--out", str(out), "--overwrite"]) == 2
        assert says in capsys.readouterr().err
    assert (tmp_path / "r" / "scan.png").read_bytes() == png
    assert (tmp_path / "myproject" / "docs" / "thesis.txt").read_text() == "years of work"
    # a zarr output is replaced as before
    assert main([*base, "--out", str(tmp_path / "o.zarr")]) == 0
    assert main([*base, "--out", str(tmp_path / "o.zarr"), "--overwrite"]) == 0


def test_a_single_output_named_as_an_image_file_is_refused(tmp_path, capsys):
    """`--out pred.tif` wrote a zarr folder named pred.tif that no image reader (nor evaluate) opened."""
    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((3, 32, 32), dtype=np.float32))
    assert main(["init-model", "--out", str(tmp_path / "m"), "--size", "tiny", "--tile", "32"]) == 0
    argv = ["predict", "--image", str(tmp_path / "v.npy"), "--model", str(tmp_path / "m.safetensors")]
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "pred.tif")]) == 2
    assert "name it " + str(tmp_path / "pred.zarr") in capsys.readouterr().err
    assert not (tmp_path / "pred.tif").exists()


def test_a_tilde_the_shell_left_means_home(tmp_path, monkeypatch, capsys):
    """`--out=~/x.zarr` (or a quoted path): the shell does not expand it; a folder named `~` appeared."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "home" / "v.npy", np.random.default_rng(0).random((3, 32, 32), dtype=np.float32))
    assert main(["init-model", "--out=~/m", "--size", "tiny", "--tile", "32"]) == 0
    assert main(["predict", "--image", "~/v.npy", "--model", "~/m.safetensors", "--out=~/o.zarr"]) == 0
    assert (tmp_path / "home" / "o.zarr").is_dir() and not (tmp_path / "~").exists()


def test_a_full_disk_when_the_time_limit_strikes_rescues_the_model_so_far(tmp_path, monkeypatch, capsys):
    """SIGTERM at epoch 2, and --out's disk is full: the model so far goes to the temporary folder."""
    import os
    import signal

    from napari_xrayseg import cli

    shown = cli._ProgressPrinter.__call__

    def term_at_epoch_2(self, p):
        shown(self, p)
        if p.info.get("epoch") == 2 and "val_dice" in p.info:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(cli._ProgressPrinter, "__call__", term_at_epoch_2)
    _full_disk_but_for_rescues(tmp_path, monkeypatch)
    argv = _tiny_train_argv(tmp_path, epochs=50, steps=2)
    capsys.readouterr()
    assert main(argv) == 2
    assert "the trained model was saved to" in capsys.readouterr().err
    assert list((tmp_path / "rescue").glob("m-rescued-*.safetensors"))


def test_a_folder_holding_only_finder_litter_counts_as_empty(tmp_path, capsys):
    """A folder made in Finder (only .DS_Store in it) was 'exists', and with --overwrite 'holds files it does not
    write (.DS_Store)'; a re-run over an output browsed in Finder the same."""
    out = tmp_path / "s"
    out.mkdir()
    (out / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    assert main(["sample", "--out", str(out), "--shape", "4", "32", "32"]) == 0
    (out / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (out / "Thumbs.db").write_bytes(b"\0")
    assert main(["sample", "--out", str(out), "--shape", "4", "32", "32", "--overwrite"]) == 0
    assert (out / "image.zarr").exists()
    (out / "notes.txt").write_text("mine")  # a user's file is still never deleted
    assert main(["sample", "--out", str(out), "--shape", "4", "32", "32", "--overwrite"]) == 2
    assert "notes.txt" in capsys.readouterr().err


def test_axis_letters_on_the_command_line(tmp_path, capsys):
    # the API and --axes took z, y, x; --axis was "invalid int value: 'y'"
    import json

    truth = np.random.default_rng(0).integers(1, 4, (4, 6, 8), dtype=np.uint8)
    np.save(tmp_path / "t.npy", truth)
    run = ["evaluate", "--pred", str(tmp_path / "t.npy"), "--truth", str(tmp_path / "t.npy")]
    assert main([*run, "--axis", "y", "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["per_slice"]["axis"] == 1
    with pytest.raises(SystemExit):
        main([*run, "--axis", "w"])
    assert "'w' is not an axis: give 0, 1, 2 or z, y, x" in capsys.readouterr().err


def test_train_names_the_classes_as_the_labels_store_or_names_does(tmp_path):
    """The sample's annotations name their phases, and the model keeps them; --names gives others; a plain
    .npy names none: 'class N' (every 3-class model was 'pore / nickel / YSZ')."""
    from napari_xrayseg.core.models import load_model

    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "6", "32", "32", "--annotate", "2"]) == 0
    ann = tmp_path / "s" / "annotations.zarr"
    base = ["train", "--image", str(tmp_path / "s" / "image.zarr"), "--epochs", "1", "--steps", "1"]
    base += ["--size", "tiny", "--arch", "unet", "--init", "random", "--patch", "32", "--device", "cpu"]
    assert main([*base, "--labels", str(ann), "--out", str(tmp_path / "a.safetensors")]) == 0
    assert load_model(tmp_path / "a.safetensors").info.class_names == ["pore", "nickel", "YSZ"]
    names = ["--names", "air", "paste", "rock"]
    assert main([*base, "--labels", str(ann), *names, "--out", str(tmp_path / "b.safetensors")]) == 0
    assert load_model(tmp_path / "b.safetensors").info.class_names == ["air", "paste", "rock"]
    np.save(tmp_path / "ann.npy", zarr.open_array(store=str(ann), mode="r")[...])
    assert main([*base, "--labels", str(tmp_path / "ann.npy"), "--out", str(tmp_path / "c.safetensors")]) == 0
    assert load_model(tmp_path / "c.safetensors").info.class_names == ["class 1", "class 2", "class 3"]


def test_train_takes_the_schedule_and_validation_share_the_widget_and_api_take(tmp_path):
    """QA (three doors): a model trained in the widget with schedule 'step' could not be repeated from the CLI
    (no --schedule), and val_fraction was the API's alone. The CLI's model equals the API's, bit for bit."""
    from napari_xrayseg import open_volume, train
    from napari_xrayseg.core.models import load_model

    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "6", "32", "32", "--annotate", "3"]) == 0
    image, ann = (str(tmp_path / "s" / n) for n in ("image.zarr", "annotations.zarr"))
    opts = {"epochs": 2, "steps_per_epoch": 2, "size": "tiny", "arch": "unet", "init": "random", "patch": 32}
    cli = ["train", "--image", image, "--labels", ann, "--epochs", "2", "--steps", "2", "--size", "tiny"]
    cli += ["--arch", "unet", "--init", "random", "--patch", "32", "--device", "cpu"]
    cli += ["--schedule", "step", "--val-fraction", "0", "--out", str(tmp_path / "m.safetensors")]
    assert main(cli) == 0
    m = load_model(tmp_path / "m.safetensors")
    assert m.info.train["schedule"] == "step" and m.info.train["val_fraction"] == 0
    api = train(open_volume(image), open_volume(ann), schedule="step", val_fraction=0, device="cpu", **opts)
    for k, v in api.network.state_dict().items():
        assert torch.equal(v, m.network.state_dict()[k]), k


def test_a_signal_before_the_first_slab_says_nothing_was_finished(tmp_path, monkeypatch, capsys):
    """QA s45 h4: a cancel before any slab finished still said "the finished slabs are kept"."""
    import os
    import signal

    from napari_xrayseg import cli

    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((8, 32, 32), dtype=np.float32))
    assert main(["init-model", "--out", str(tmp_path / "m"), "--size", "tiny", "--tile", "32"]) == 0
    monkeypatch.setattr(cli._ProgressPrinter, "__call__", lambda self, p: os.kill(os.getpid(), signal.SIGINT))
    out = tmp_path / "o.zarr"
    argv = ["predict", "--image", str(tmp_path / "v.npy"), "--model", str(tmp_path / "m.safetensors")]
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--slab", "2"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted: no slab was finished; the same command with --resume (or --overwrite) starts {out}" in err
