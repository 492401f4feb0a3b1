"""Scores of the slices a model did not train on (``Report.held_out``), found from what predict records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from matplotlib.colors import to_rgba

from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.figures import save_figures, slice_dice_plot
from napari_xrayseg.core.inference import segment, trained_on
from napari_xrayseg.core.metrics import Report, evaluate
from napari_xrayseg.core.sample import make_phantom
from napari_xrayseg.core.training import train
from napari_xrayseg.core.writer import input_digest, read_output_meta

FAST = dict(size="tiny", epochs=1, steps_per_epoch=2, batch=2, patch=32, device="cpu", seed=0)


def test_held_out_pools_the_other_slices_as_the_report_pools_all():
    t = np.ones((4, 5, 5), np.uint8)
    t[:, :2] = 2
    p = t.copy()
    p[0] = 1  # slice 0: class 2 all wrong
    r = evaluate(p, t, trained_slices=[1, 2])
    h = r.held_out
    assert r.trained_slices == [1, 2] and h["n_slices"] == 2 and h["n_voxels"] == 50
    # class 1: truth 30, pred 40, 30 right; class 2: truth 20, pred 10, 10 right
    assert h["per_class_dice"] == {"1": pytest.approx(60 / 70), "2": pytest.approx(20 / 30)}
    assert h["mean_dice"] == pytest.approx((60 / 70 + 20 / 30) / 2) and h["accuracy"] == pytest.approx(0.8)
    assert h["mean_slice_dice"] == pytest.approx(np.mean([r.slice_dice[0], r.slice_dice[3]]))
    # every other number is as without the trained slices: they still count in them
    plain = evaluate(p, t)
    assert r.mean_dice == plain.mean_dice and r.slice_dice == plain.slice_dice and plain.held_out is None
    assert "held out from training: mean Dice 0.7619" in repr(r) and "slices 1, 2 along axis 0" in repr(r)
    # round trip through JSON
    back = Report.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.trained_slices == [1, 2] and back.held_out == h
    # () = none; out-of-range slices are refused (a slice counted from 1 was scored as held out); no per-slice
    # scores = nothing to hold out
    assert evaluate(p, t, trained_slices=()).held_out is None
    for bad in ([1, 2, 99], [-1]):
        with pytest.raises(InputError, match=r"outside the 4 slices along axis 0: give slice indices from 0 to 3"):
            evaluate(p, t, trained_slices=bad)
    assert evaluate(p, t, trained_slices=[1], per_slice=False).held_out is None


def test_held_out_without_any_other_slice_with_truth_says_so():
    t = np.zeros((3, 4, 4), np.uint8)
    t[1, :2], t[1, 2:] = 1, 2
    r = evaluate(t, t, trained_slices=[1])
    assert r.held_out["n_slices"] == 0 and r.held_out["mean_dice"] is None
    assert "no slice with truth" in r.held_out_text()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    image, truth = make_phantom((12, 48, 48), seed=5)
    ann = np.zeros_like(truth)
    ann[[3, 8]] = truth[[3, 8]]
    model = train(image, ann, arch="unet", **FAST)
    return image, truth, model, tmp_path_factory.mktemp("held")


def test_the_model_records_its_image_and_predict_its_trained_slices(trained):
    image, truth, model, tmp = trained
    assert model.info.train["input_digest"] == input_digest(image)
    assert trained_on(model.info, image) == {"axis": 0, "slices": [3, 8]}
    other = image.copy()
    other[6] += 1.0  # another image of the same shape: its slices are not the ones trained on
    assert trained_on(model.info, other) is None
    assert trained_on(model.info, image[:, :40]) is None

    segment(image, model, out=tmp / "labels.zarr", device="cpu")
    assert read_output_meta(tmp / "labels.zarr")["trained_on"] == {"axis": 0, "slices": [3, 8]}
    segment(other, model, out=tmp / "other.zarr", device="cpu")
    assert read_output_meta(tmp / "other.zarr")["trained_on"] is None

    # evaluate finds it in the prediction's store, on the axis it trained along
    labels = zarr.open_array(store=str(tmp / "labels.zarr"), mode="r")
    r = evaluate(labels, truth)
    assert r.trained_slices == [3, 8] and r.held_out["n_slices"] == 10
    assert evaluate(tmp / "labels.zarr", truth).trained_slices == [3, 8]  # a path too
    assert evaluate(labels, truth, axis=1).held_out is None  # another axis: slices of another kind
    assert evaluate(labels, truth, trained_slices=()).held_out is None
    assert evaluate(np.asarray(labels), truth).held_out is None  # a bare array records nothing
    assert evaluate(tmp / "other.zarr", truth).held_out is None


def test_the_figures_shade_the_trained_slices_and_the_collage_shows_others(trained, tmp_path, monkeypatch):
    image, truth, _, tmp = trained
    labels = zarr.open_array(store=str(tmp / "labels.zarr"), mode="r")
    r = evaluate(labels, truth)
    fig = slice_dice_plot(r)
    ax = fig.axes[0]
    assert "held out from training" in ax.get_title()
    orange = to_rgba("tab:orange", 0.3)
    spans = [p for p in ax.patches if np.allclose(p.get_facecolor(), orange)]
    assert sorted(round(p.get_x() + p.get_width() / 2) for p in spans) == [3, 8]  # a band on each trained slice
    assert "trained on" in [t.get_text() for t in ax.get_legend().get_texts()]
    from napari_xrayseg.core import figures

    shown, real = [], figures.collage
    monkeypatch.setattr(figures, "collage", lambda *a, **k: shown.append(k["slices"]) or real(*a, **k))
    save_figures(r, image, labels, truth, tmp_path / "figs")
    assert (tmp_path / "figs" / "slice_dice.png").stat().st_size > 0
    assert len(shown[0]) == 4 and not {3, 8} & set(shown[0])  # the collage's rows: slices not trained on


def test_a_fine_tuning_keeps_the_slices_its_start_learned_from(trained):
    """train(init=model) on other slices of the same image (self-training, another round): the start's slices
    were reported as held out, though the model had learned from them."""
    image, truth, model, _ = trained
    more = np.zeros_like(truth)
    more[5] = truth[5]
    tuned = train(image, more, init=model, **{**FAST, "seed": 1})
    assert tuned.info.train["annotated_slices"] == [5] and tuned.info.train["inherited_slices"] == [3, 8]
    assert trained_on(tuned.info, image) == {"axis": 0, "slices": [3, 5, 8]}
    other = image[::-1].copy()  # another image: its start's slices are not this one's
    assert train(other, more, init=model, **FAST).info.train["inherited_slices"] == []
