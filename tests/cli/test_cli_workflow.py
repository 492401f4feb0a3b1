import json

import numpy as np
import pytest
import zarr

from napari_xrayseg.cli import main
from napari_xrayseg.core.models import load_model


def test_train_then_predict_then_evaluate(tmp_path, capsys):
    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "8", "64", "64", "--seed", "5"]) == 0
    truth = zarr.open_array(store=str(tmp_path / "s" / "truth.zarr"), mode="r")[...]
    ann = np.zeros_like(truth)
    ann[[2, 5]] = truth[[2, 5]]
    zarr.create_array(store=str(tmp_path / "ann.zarr"), shape=ann.shape, dtype="uint8")[...] = ann
    model = tmp_path / "m.safetensors"
    assert (
        main(
            [
                "train",
                "--image",
                str(tmp_path / "s" / "image.zarr"),
                "--labels",
                str(tmp_path / "ann.zarr"),
                "--out",
                str(model),
                "--size",
                "tiny",
                "--epochs",
                "2",
                "--steps",
                "4",
                "--batch",
                "2",
                "--patch",
                "32",
                "--device",
                "cpu",
                "--seed",
                "1",
                "--context",
                "5",
                "--dropout",
                "0.1",
                "--average",
                "0.5",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "wrote model to" in out and "(average of epochs 1-2)" in out
    m = load_model(model)
    assert m.info.classes == [1, 2, 3] and len(m.info.history) == 2 and m.info.context == 5
    assert m.info.params["dropout"] == 0.1 == m.info.train["dropout"]
    bad = ["train", "--image", str(tmp_path / "s" / "image.zarr"), "--labels", str(tmp_path / "ann.zarr")]
    assert main([*bad, "--out", str(tmp_path / "bad.safetensors"), "--dropout", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dropout 1.5" in err and "[0, 1)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad.safetensors").exists()
    assert main([*bad, "--out", str(tmp_path / "bad.safetensors"), "--average", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "average 2" in err and "[0, 1]" in err and len(err.splitlines()) == 1

    pred = tmp_path / "pred.zarr"
    assert (
        main(
            [
                "predict",
                "--image",
                str(tmp_path / "s" / "image.zarr"),
                "--model",
                str(model),
                "--out",
                str(pred),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    capsys.readouterr()
    rj, rc, figs = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "figs"
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(pred),
                "--truth",
                str(tmp_path / "s" / "truth.zarr"),
                "--json",
                str(rj),
                "--csv",
                str(rc),
                "--figures",
                str(figs),
                "--image",
                str(tmp_path / "s" / "image.zarr"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads(rj.read_text())
    assert 0 <= report["mean_dice"] <= 1 and set(report["per_class"]) == {"1", "2", "3"}
    for k in ("dice", "iou", "precision", "recall", "f1", "accuracy", "voxels_truth", "voxels_pred"):
        assert k in report["per_class"]["1"]
    assert f"{report['mean_dice']:.3f}"[:4] in out  # the table shows the same number
    assert rc.read_text().count("\n") >= 4
    assert {p.name for p in figs.iterdir()} >= {"collage.png", "slice_dice.png"}
    # the model trained on slices 2 and 5 of this image (predict recorded it): the others are scored apart
    assert report["trained_slices"] == [2, 5] and report["held_out"]["n_slices"] == 6
    assert "held out from training: mean Dice" in out and "slices 2, 5 along axis 0" in out
    ev = ["evaluate", "--pred", str(pred), "--truth", str(tmp_path / "s" / "truth.zarr")]
    assert main([*ev, "--trained-slices"]) == 0 and "held out" not in capsys.readouterr().out
    assert main([*ev, "--trained-slices", "0", "1"]) == 0
    assert "slices 0, 1 along axis 0" in capsys.readouterr().out
    # refuses to overwrite the report, one line, exit 2
    assert (
        main(["evaluate", "--pred", str(pred), "--truth", str(tmp_path / "s" / "truth.zarr"), "--json", str(rj)]) == 2
    )


def test_evaluate_bad_input(tmp_path, capsys):
    zarr.create_array(store=str(tmp_path / "a.zarr"), shape=(2, 8, 8), dtype="uint8")[...] = 1
    zarr.create_array(store=str(tmp_path / "b.zarr"), shape=(2, 8, 9), dtype="uint8")[...] = 1
    zarr.create_array(store=str(tmp_path / "z.zarr"), shape=(2, 8, 8), dtype="uint8")
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(tmp_path / "a.zarr"), "--truth", str(tmp_path / "b.zarr")]) == 2
    assert "does not match" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(tmp_path / "a.zarr"), "--truth", str(tmp_path / "z.zarr")]) == 2
    assert "no annotated voxels" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_main_job_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--shape",
                "10",
                "64",
                "64",
                "--minutes",
                "0.1",
                "--size",
                "tiny",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "Dice against the full ground truth" in text and "mean:" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sample"]["annotated_slices"] and 0 <= summary["mean_dice"] <= 1
    for name in ("image.zarr", "truth.zarr", "annotations.zarr", "model.safetensors", "labels.zarr", "report.json"):
        assert (out / name).exists()
    assert main(["demo", "--out", str(out), "--shape", "10", "64", "64"]) == 2  # not empty: refused


def test_hard_sample_train_with_minutes_and_epochs_then_self_train_a_second_scan(tmp_path, capsys):
    """--minutes and --epochs together (the first limit binds), then adapt to another scan without labels."""
    for name, preset, seed in (("a", "hard", "1"), ("b", "hard-transfer", "2")):
        assert (
            main(
                [
                    "sample",
                    "--out",
                    str(tmp_path / name),
                    "--shape",
                    "6",
                    "48",
                    "48",
                    "--seed",
                    seed,
                    "--preset",
                    preset,
                ]
            )
            == 0
        )
    attrs = zarr.open_array(store=str(tmp_path / "b" / "image.zarr"), mode="r").attrs["napari_xrayseg"]
    assert attrs["preset"] == "hard-transfer"
    truth = zarr.open_array(store=str(tmp_path / "a" / "truth.zarr"), mode="r")[...]
    ann = np.zeros_like(truth)
    ann[[1, 4]] = truth[[1, 4]]
    zarr.create_array(store=str(tmp_path / "ann.zarr"), shape=ann.shape, dtype="uint8")[...] = ann
    model, adapted = tmp_path / "m.safetensors", tmp_path / "m2.safetensors"
    assert (
        main(
            [
                "train",
                "--image",
                str(tmp_path / "a" / "image.zarr"),
                "--labels",
                str(tmp_path / "ann.zarr"),
                "--out",
                str(model),
                "--size",
                "tiny",
                "--minutes",
                "30",
                "--epochs",
                "1",
                "--steps",
                "2",
                "--batch",
                "2",
                "--patch",
                "32",
                "--device",
                "cpu",
                "--context",
                "1",
            ]
        )
        == 0
    )
    m = load_model(model)
    assert m.info.train["stopped"] == "epochs" and len(m.info.history) == 1
    assert m.info.normalization["low"] is None and len(m.info.normalization["training_bounds"]) == 2
    capsys.readouterr()
    truth_b = zarr.open_array(store=str(tmp_path / "b" / "truth.zarr"), mode="r")[...]
    ann_b = np.zeros_like(truth_b)
    ann_b[3, :8] = truth_b[3, :8]  # a few painted rows of the new scan: held out, they score the self-training
    zarr.create_array(store=str(tmp_path / "ann_b.zarr"), shape=ann_b.shape, dtype="uint8")[...] = ann_b
    assert (
        main(
            [
                "self-train",
                "--image",
                str(tmp_path / "b" / "image.zarr"),
                "--model",
                str(model),
                "--labels",
                str(tmp_path / "ann_b.zarr"),
                "--out",
                str(adapted),
                "--threshold",
                "0.34",
                "--slices",
                "2",
                "--epochs",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    cap = capsys.readouterr()  # (the warning that says so goes to the log)
    # this 1-epoch model is confident of no class-1 voxel: the painted rows teach it (and say so)
    assert "fine-tuned on" in cap.out and "agreement with those pseudo-labels" in cap.out
    st = load_model(adapted).info.train["self_training"]
    assert st["slices"] == 2 and st["user_labels"] and "label_blend_kept" not in st
    # never over an existing model file: one line, exit 2
    assert (
        main(
            [
                "self-train",
                "--image",
                str(tmp_path / "b" / "image.zarr"),
                "--model",
                str(model),
                "--out",
                str(adapted),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "exists" in capsys.readouterr().err


def _train_argv(tmp_path, seed, out):
    """`xrayseg train` on a 16-slice sample with 2 annotated slices, saved as .npy (deep enough for unet3d)."""
    from napari_xrayseg.core.sample import make_phantom

    image, truth = make_phantom((16, 48, 48), seed=seed)
    ann = np.zeros_like(truth)
    ann[[4, 11]] = truth[[4, 11]]
    np.save(tmp_path / "img.npy", image)
    np.save(tmp_path / "ann.npy", ann)
    return ["train", "--image", str(tmp_path / "img.npy"), "--labels", str(tmp_path / "ann.npy"), "--out", str(out)]


def test_cli_train_from_the_pretrained_start_with_a_precision(tmp_path, capsys, monkeypatch):
    from napari_xrayseg.core import training

    monkeypatch.setattr(training, "START_BLENDS", (0.5,))  # the share kept, whatever validation says
    monkeypatch.setattr(training, "ROUND_BLENDS", (0.5,))  # the same for a model of the user's
    out = tmp_path / "p.safetensors"
    argv = _train_argv(tmp_path, 3, out)
    argv += ["--init", "pretrained", "--precision", "fp32", "--steps", "1", "--batch", "1", "--patch", "32"]
    assert main(argv) == 0
    info = load_model(out).info
    assert info.arch == "unet3d" and info.train["init"] == "pretrained" and info.train["precision"] == "fp32"
    assert len(info.history) == 5  # the pretrained start's short fine-tuning when no --epochs is given
    assert info.train["start_blend_kept"] == 0.5  # and the start blended back in, as the summary line says
    assert ", 0.5 x it + 0.5 x the pretrained start)" in capsys.readouterr().out
    # --blend yes: a model file fine-tuned and blended back with it, as the annotation loop's rounds are
    out3 = tmp_path / "q.safetensors"
    assert main([*argv[:6], str(out3), "--init", str(out), *argv[9:], "--epochs", "1", "--blend", "yes"]) == 0
    assert load_model(out3).info.train["start_blend_kept"] == 0.5
    assert ", 0.5 x it + 0.5 x the model it started from)" in capsys.readouterr().out
    out4 = tmp_path / "n.safetensors"  # --blend no: the pretrained start's fine-tuning as it is
    assert main([*argv[:6], str(out4), *argv[7:], "--epochs", "1", "--blend", "no"]) == 0
    assert "start_blend_kept" not in load_model(out4).info.train


def test_cli_train_by_default_races_the_pretrained_start_and_says_which_it_kept(tmp_path, capsys):
    out = tmp_path / "a.safetensors"
    argv = _train_argv(tmp_path, 4, out)
    argv += ["--epochs", "1", "--steps", "1", "--batch", "1", "--patch", "32"]
    assert main(argv) == 0
    info = load_model(out).info
    assert info.arch == "unet3d" and info.train["init"] == "auto" and info.train["start"] in ("pretrained", "random")
    said = capsys.readouterr().out
    assert f"kept the {info.train['start']} start (validation Dice pretrained " in said and ", random " in said
    out2 = tmp_path / "r.safetensors"
    assert main([*argv[:6], str(out2), *argv[7:], "--init", "random"]) == 0
    assert load_model(out2).info.train["init"] is None and "kept the" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--size", "huge"], "unknown unet size 'huge'"),
        (["--minutes", "0"], "minutes 0.0 must be a positive number"),
        (["--minutes", "nan"], "minutes nan must be a positive number"),
        (["--slices", "0"], "slices 0 must be a positive whole number"),
    ],
)
def test_demo_refuses_its_settings_before_writing_anything(tmp_path, capsys, args, said):
    """QA: refused at step 3 of 5, the sample was left in --out and the same command then refused the folder."""
    assert main(["demo", "--out", str(tmp_path / "d"), *args]) == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
