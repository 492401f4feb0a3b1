"""xrayseg suggest and xrayseg study --strategy, in-process."""

import json

import numpy as np
import pytest

from napari_xrayseg.cli import main
from napari_xrayseg.core.annotation import suggest_slices
from napari_xrayseg.core.models import save_model
from napari_xrayseg.core.sample import make_phantom
from napari_xrayseg.core.training import train


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("loop")
    image, truth = make_phantom((10, 48, 48), seed=2)
    ann = np.zeros_like(truth)
    ann[[2, 6]] = truth[[2, 6]]
    model = train(image, ann, size="tiny", epochs=1, steps_per_epoch=2, batch=2, patch=32, device="cpu")
    np.save(d / "image.npy", image)
    np.save(d / "ann.npy", ann)
    save_model(model, d / "m.safetensors")
    return d, image, ann, model


def test_suggest_prints_indices_best_first_never_annotated(files, capsys):
    d, image, ann, model = files
    argv = ["suggest", "--image", str(d / "image.npy"), "--model", str(d / "m.safetensors"), "--device", "cpu"]
    assert main([*argv, "--labels", str(d / "ann.npy"), "--count", "8"]) == 0
    lines = capsys.readouterr().out.split()
    got = [int(x) for x in lines]
    assert sorted(got) == [0, 1, 3, 4, 5, 7, 8, 9]  # every slice but the annotated 2 and 6
    assert got == suggest_slices(image, model, ann, count=8, device="cpu")  # the API's order
    assert main([*argv, "--labels", str(d / "ann.npy"), "--count", "8", "--no-novelty"]) == 0
    got = [int(x) for x in capsys.readouterr().out.split()]
    assert got == suggest_slices(image, model, ann, count=8, device="cpu", novelty=False)
    assert main([*argv, "--labels", str(d / "ann.npy"), "--count", "3", "--margin", "0"]) == 0
    got = [int(x) for x in capsys.readouterr().out.split()]
    assert got == suggest_slices(image, model, ann, count=3, device="cpu", margin=0)
    assert main([*argv, "--labels", str(d / "ann.npy"), "--count", "3", "--margin", "1e9"]) == 0
    cap = capsys.readouterr()
    assert [int(x) for x in cap.out.split()] == [4, 8, 0]  # the middles of the widest gaps, and said so
    assert "4, 8, 0: no slice's score stands out there, so the middle of the widest gap" in cap.err
    assert main([*argv, "--margin", "-1"]) == 2
    assert "margin -1.0 must be a number >= 0" in capsys.readouterr().err
    assert main([*argv, "--axis", "2", "--count", "3"]) == 0
    got = [int(x) for x in capsys.readouterr().out.split()]
    assert len(got) == 3 and all(0 <= i < 48 for i in got)
    assert main([*argv, "--count", "0"]) == 2
    assert "count 0 must be a positive integer" in capsys.readouterr().err
    assert main([*argv, "--labels", str(d / "image.npy"), "--axis", "5"]) == 2
    assert "axis 5" in capsys.readouterr().err


def test_continue_training_is_the_apis_round(files, tmp_path, capsys):
    """The annotation loop's round from the command line (it had no command: QA, session 43)."""
    import torch

    from napari_xrayseg.core.annotation import continue_training
    from napari_xrayseg.core.models import load_model

    d, image, ann, model = files
    _, truth = make_phantom((10, 48, 48), seed=2)
    ann2 = ann.copy()
    ann2[4] = truth[4]
    np.save(tmp_path / "ann2.npy", ann2)
    out = tmp_path / "r1.safetensors"
    argv = ["continue-training", "--image", str(d / "image.npy"), "--labels", str(tmp_path / "ann2.npy")]
    argv += ["--model", str(d / "m.safetensors"), "--device", "cpu"]
    assert main([*argv, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"wrote model to {out}: round 1, 1 epoch on 3 annotated slices" in said and "validation Dice" in said
    got = load_model(out)
    api = continue_training(image, ann2, load_model(d / "m.safetensors"), device="cpu")
    assert [r["round"] for r in got.info.train["rounds"]] == [0, 1] and got.info.train["rounds"][1]["lr"] == (
        model.info.train["lr"] / 2
    )
    ours, theirs = got.network.state_dict(), api.network.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)  # bit for bit
    assert main([*argv, "--out", str(out)]) == 2
    assert "r1.safetensors exists: choose another path or add --overwrite" in capsys.readouterr().err
    assert main([*argv, "--out", str(d / "m.safetensors"), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err
    r2 = tmp_path / "r2.safetensors"
    assert (
        main([*argv[:-4], "--model", str(out), "--device", "cpu", "--out", str(r2), "--epochs", "2", "--blend", "no"])
        == 0
    )
    assert "round 2, 2 epochs" in capsys.readouterr().out
    assert [r["round"] for r in load_model(r2).info.train["rounds"]] == [0, 1, 2]
    assert load_model(r2).info.train["rounds"][2]["blend_kept"] is None  # the round's own weights


def test_continue_training_stopped_before_its_first_epoch_writes_nothing(files, tmp_path, capsys, monkeypatch):
    """Review (s44): Ctrl-C before the round's first epoch wrote an unchanged copy of --model to --out and said
    'wrote the model so far' (train writes nothing then): a script would take the round as done."""
    from napari_xrayseg.core import progress

    class AtOnce(progress.CancelToken):  # Ctrl-C at once
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.cancel()

    monkeypatch.setattr(progress, "CancelToken", AtOnce)
    d, image, ann, model = files
    out = tmp_path / "r1.safetensors"
    argv = ["continue-training", "--image", str(d / "image.npy"), "--labels", str(d / "ann.npy")]
    assert main([*argv, "--model", str(d / "m.safetensors"), "--device", "cpu", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "keeping the model from before the round (no epoch finished)); nothing was saved" in err, err
    assert not out.exists()


def test_study_strategy_runs_the_loop_study(tmp_path, capsys):
    argv = [
        "study",
        "--out",
        str(tmp_path / "s"),
        "--strategy",
        "even",
        "suggest",
        "--shape",
        "6",
        "32",
        "32",
        "--rounds",
        "2",
        "--repeats",
        "1",
        "--size",
        "tiny",
        "--context",
        "1",
        "--epochs",
        "1",
        "--round-epochs",
        "1",
        "--patch",
        "32",
        "--device",
        "cpu",
        "--preset",
        "hard",
        "--noise",
        "2",
        "--feature-size",
        "3",
        "--n-angles",
        "32",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| even |" in out and "| suggest |" in out and "study.png" in out
    settings = json.loads((tmp_path / "s" / "study.json").read_text())["settings"]
    assert settings["phantom"] == {"preset": "hard", "noise": 2.0, "feature_size": 3.0, "n_angles": 32}
    assert settings["strategies"] == ["even", "suggest"] and settings["rounds"] == 2
    assert main(argv) == 2  # never written into a non-empty folder silently
    assert "not empty" in capsys.readouterr().err
    assert main([*argv[:3], "--rounds", "3"]) == 2
    assert "--rounds belongs to the annotation-loop study" in capsys.readouterr().err
    assert main([*argv[:3], "--init", "pretrained"]) == 2
    assert "--init belongs to the annotation-loop study" in capsys.readouterr().err
    assert main([*argv, "--minutes", "1", "--overwrite"]) == 2
    assert "--epochs" in capsys.readouterr().err


def test_suggest_says_when_nothing_or_less_is_left(files, capsys):
    d, image, ann, model = files
    argv = ["suggest", "--image", str(d / "image.npy"), "--model", str(d / "m.safetensors"), "--device", "cpu"]
    # every x slice crosses z slices 2 and 6 in a line: still to annotate (QA: it counted as annotated)
    assert main([*argv, "--labels", str(d / "ann.npy"), "--axis", "2", "--count", "3"]) == 0
    assert len(capsys.readouterr().out.split()) == 3
    np.save(d / "full.npy", np.ones_like(ann))
    assert main([*argv, "--labels", str(d / "full.npy"), "--axis", "2"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "" and "every slice along axis 2 is annotated" in cap.err
    assert main([*argv, "--labels", str(d / "ann.npy"), "--count", "20"]) == 0
    cap = capsys.readouterr()
    assert len(cap.out.split()) == 8 and "(only 8 without annotations)" in cap.err
