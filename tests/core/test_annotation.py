"""The annotation loop in the core: one-slice preview, slice suggestions, continue training, the loop study."""

import json
import math
import re

import numpy as np
import pytest
import torch
import zarr
from tests.faults import NthCheck

from napari_xrayseg import continue_training, predict_slice, rank_slices, suggest_slices, train
from napari_xrayseg.core.annotation import annotated_slices, even_next, painted_slices, spread_pick
from napari_xrayseg.core.errors import Cancelled, InputError, OutputExistsError
from napari_xrayseg.core.inference import segment
from napari_xrayseg.core.models import init_model, load_model
from napari_xrayseg.core.progress import CancelToken
from napari_xrayseg.core.sample import make_phantom
from napari_xrayseg.core.study import loop_study
from napari_xrayseg.core.training import ROUND_BLENDS

TINY_TRAIN = {"size": "tiny", "epochs": 2, "steps_per_epoch": 2, "batch": 2, "patch": 32, "device": "cpu", "context": 3}


@pytest.fixture(scope="module")
def sample():
    return make_phantom((8, 64, 64), seed=3)


@pytest.fixture(scope="module")
def trained(sample):
    image, truth = sample
    ann = np.zeros_like(truth)
    ann[[1, 5]] = truth[[1, 5]]
    return train(image, ann, **TINY_TRAIN), ann


@pytest.fixture
def ctx_model():
    return init_model("unet", size="tiny", classes=3, tile=32, seed=1, context=3)


# --------------------------------------------------------------------------- preview


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_predict_slice_equals_the_slice_of_a_whole_segmentation(ctx_model, axis):
    rng = np.random.default_rng(0)
    image = rng.random((6, 40, 48), dtype=np.float32)
    # fp32 as predict_slice's default: precision="auto" is bf16 on CPUs with native bf16
    full = segment(image, ctx_model, axis=axis, device="cpu", precision="fp32")
    n = image.shape[axis]
    for i in (0, 2, n - 1, -1):  # the ends use edge-replicated context slices
        got = predict_slice(image, ctx_model, i, axis=axis, device="cpu")
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, np.take(full, i, axis=axis))
    # tile="slice": one window over the slice, as segment with that tile
    plane = [s for d, s in enumerate(image.shape) if d != axis]
    side = -(-max(plane) // ctx_model.info.stride) * ctx_model.info.stride
    whole = segment(image, ctx_model, axis=axis, tile=side, device="cpu", precision="fp32")
    np.testing.assert_array_equal(
        predict_slice(image, ctx_model, 1, axis=axis, tile="slice", device="cpu"), np.take(whole, 1, axis=axis)
    )


def test_predict_slice_probs_zarr_2d_and_bad_input(ctx_model, tmp_path):
    rng = np.random.default_rng(1)
    image = rng.random((5, 32, 32), dtype=np.float32)
    z = zarr.open_array(
        store=str(tmp_path / "i.zarr"), mode="w", shape=image.shape, chunks=(2, 32, 32), dtype="float32"
    )
    z[:] = image
    p = predict_slice(z, ctx_model, 3, probs=True, device="cpu")
    assert p.shape == (3, 32, 32) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=0), 1, atol=1e-5)
    np.testing.assert_array_equal(
        np.asarray(ctx_model.info.classes)[p.argmax(0)], predict_slice(image, ctx_model, 3, device="cpu")
    )
    flat = init_model("unet", size="tiny", classes=3, tile=32, seed=1)
    assert predict_slice(image[2], flat, 0, device="cpu").shape == (32, 32)
    with pytest.raises(InputError, match="out of range for 5 slices"):
        predict_slice(image, ctx_model, 5, device="cpu")
    with pytest.raises(InputError, match="'slice' or None"):
        predict_slice(image, ctx_model, 0, tile="whole")
    with pytest.raises(InputError, match="axis 3"):
        predict_slice(image, ctx_model, 0, axis=3, device="cpu")
    bad = image.copy()
    bad[3, 0, 0] = np.inf  # (NaN is no data: labelled 0, tests/core/test_nodata.py)
    with pytest.raises(InputError, match="inf values"):
        predict_slice(bad, ctx_model, 3, device="cpu")


# --------------------------------------------------------------------------- suggest


def test_spread_pick_ranks_by_score_and_spreads_out():
    assert spread_pick(np.array([0.1, 0.9, 0.3, 0.5]), [], 4, 1e-9) == [1, 3, 2, 0]  # plain ranking
    flat = np.ones(21)
    assert spread_pick(flat, [10], 2, 3.0) == [0, 20]  # farthest from the anchor, then from each other
    s = np.array([0.0, 0.0, 0.0, 0.95, 1.0, 0.0, 0.0, 0.0, 0.0, 0.8])
    assert spread_pick(s, [5], 1, 2.0) == [9]  # the best slice sits next to an annotated one: penalised
    assert spread_pick(s, [5], 1, 0.1) == [4]  # a tiny spread leaves the ranking alone
    assert spread_pick(np.array([np.nan, 0.2, np.nan]), [], 3, 1.0) == [1]  # NaN is never picked


def test_a_pick_must_stand_out_from_the_middle_of_the_widest_gap():
    rng = np.random.default_rng(0)
    for n in (8, 21, 48, 96):  # scores that single out no slice: the evenly spaced slices, one by one
        for _ in range(20):
            anchors = [int(a) for a in rng.choice(n, int(rng.integers(1, 4)), replace=False)]
            why: list[str] = []
            picks = spread_pick(1 + 0.2 * rng.random(n), anchors, 3, n / 8, ends=True, margin=0.5, why=why)
            taken = list(anchors)
            for p in picks:
                assert p == even_next(n, taken)
                taken.append(p)
            assert why == ["gap"] * 3
    s = np.full(21, 0.5)
    s[17] = 2.0  # 4x the middle of the widest gap (slice 4 beside the anchor 10): it stands out
    why = []
    assert spread_pick(s, [10], 3, 3.0, ends=True, margin=0.5, why=why) == [17, 4, 13]
    assert why == ["score", "gap", "gap"]
    # penalised scores: slice 17 (4 from the end) 0.589 x s[17], the middle 0.5 x 0.751 (5 from the anchor)
    s[17] = 0.924  # 1.45x the middle: not enough at margin 0.5; enough at 0.4, and always without the rule
    assert spread_pick(s, [10], 1, 3.0, ends=True, margin=0.5) == [4]
    assert spread_pick(s, [10], 1, 3.0, ends=True, margin=0.4) == [17]
    assert spread_pick(s, [10], 1, 3.0, ends=True) == [17]
    s[17] = 0.988  # 1.55x
    assert spread_pick(s, [10], 1, 3.0, ends=True, margin=0.5) == [17]
    s[17], s[4], s[5] = 0.5, np.nan, 0.45  # the middle is not scored (not sampled): the nearest scored slice
    assert spread_pick(s, [10], 1, 3.0, ends=True, margin=0.5) == [5]  # stands in (of 3 and 5, the one farther
    assert spread_pick(s, [10], 1, 3.0, ends=True) == [15]  # from the others), where the score alone takes 15
    assert spread_pick(np.full(5, 0.5), [], 2, 1.0, margin=0.5) == [0, 4]  # no anchors: no gap yet, then one


def test_rank_slices_scores_are_the_mean_entropy_and_the_best_comes_first(trained, sample):
    model, _ = trained
    image, _ = sample
    r = rank_slices(image, model, count=3, measure="entropy", device="cpu", spread=1e-6, margin=0)
    assert np.isfinite(r.uncertainty).all() and ((r.uncertainty >= 0) & (r.uncertainty <= 1)).all()
    for i in (0, 4, 7):
        p = predict_slice(image, model, i, probs=True, device="cpu")
        h = -(p * np.log(np.clip(p, 1e-12, None))).sum(0) / math.log(3)
        assert r.uncertainty[i] == pytest.approx(h.mean(), rel=1e-4)
    assert r.suggested == list(np.argsort(-r.uncertainty, kind="stable")[:3])
    m = rank_slices(image, model, count=1, measure="maxprob", spread=1e-6, margin=0, device="cpu")
    assert m.measure == "maxprob" and m.suggested[0] == int(np.argmax(m.uncertainty))
    # the default spread keeps the first suggestion off the volume ends even where they are most uncertain
    u = np.linspace(1.0, 0.5, 8)
    from napari_xrayseg.core.annotation import spread_pick

    assert spread_pick(u, [], 1, 2.0, ends=True) == [3] and spread_pick(u, [], 1, 2.0) == [0]


@pytest.mark.parametrize("axis", [0, 2])
def test_orthoplane_score_is_the_share_of_pixels_the_other_axes_class_differently(trained, sample, axis, monkeypatch):
    from napari_xrayseg.core import annotation

    model, ann = trained
    image, _ = sample
    monkeypatch.setattr(annotation, "ORTHO_LINES", 10**6)  # every line: the score covers the whole slice
    r = rank_slices(image, model, ann if axis == 0 else None, axis=axis, count=2, max_side=None, device="cpu")
    assert r.measure == "orthoplane"
    seg = [segment(image, model, axis=a, device="cpu", precision="fp32") for a in range(3)]
    others = [a for a in range(3) if a != axis]
    for i in range(image.shape[axis]):
        if axis == 0 and i in (1, 5):
            assert np.isnan(r.uncertainty[i])  # annotated: not scored
            continue
        own = np.take(seg[axis], i, axis=axis)
        want = np.mean([np.mean(np.take(seg[a], i, axis=axis) != own) for a in others])
        assert r.uncertainty[i] == pytest.approx(want, abs=1e-12)
    # the default is that score, with the first pick the best-scoring slice when spreading is off
    z = rank_slices(image, model, ann, count=1, spread=1e-6, margin=0, device="cpu")
    assert z.suggested == [int(np.nanargmax(z.score))]
    plain = rank_slices(image, model, ann, count=1, spread=1e-6, margin=0, device="cpu", novelty=False)
    assert plain.novelty is None and plain.suggested == [int(np.nanargmax(plain.uncertainty))]


@pytest.mark.parametrize("axis", [0, 2])
def test_orthoplane_score_in_a_centred_window_of_big_slices(trained, sample, axis, monkeypatch):
    import copy

    from napari_xrayseg.core import annotation

    model, _ = trained
    image, _ = sample
    model = copy.deepcopy(model)
    model.info.normalization = annotation.slice_normalization(image, model)  # the same bounds for the window
    # the lines inside the window: their context rows are the window's own, as for a cut-out volume
    monkeypatch.setattr(annotation, "_line_positions", lambda size, lines: np.arange(1, size - 1))
    r = rank_slices(image, model, axis=axis, max_side=40, max_slices=None, device="cpu", precision="fp32")
    cut = [slice(None)] * 3
    for d in range(3):
        if d != axis:
            w = min(40, image.shape[d])
            a = (image.shape[d] - w) // 2
            cut[d] = slice(a, a + w)
    sub = image[tuple(cut)]
    seg = [np.moveaxis(segment(sub, model, axis=a, device="cpu", precision="fp32"), axis, 0) for a in range(3)]
    first, second = [a for a in range(3) if a != axis]
    n = image.shape[axis]
    differ = (seg[first] != seg[axis])[:, 1:-1].reshape(n, -1).sum(1)
    differ += (seg[second] != seg[axis])[:, :, 1:-1].reshape(n, -1).sum(1)
    h, w = seg[axis].shape[1:]
    np.testing.assert_allclose(r.uncertainty, differ / ((h - 2) * w + h * (w - 2)), atol=1e-12)


def test_flips_score_and_the_2d_fallback(trained, sample):
    model, _ = trained
    image, _ = sample
    r = rank_slices(image, model, measure="flips", max_side=None, device="cpu")
    plain = segment(image, model, device="cpu", precision="fp32")
    fx = segment(np.ascontiguousarray(image[:, :, ::-1]), model, device="cpu", precision="fp32")[:, :, ::-1]
    fy = segment(np.ascontiguousarray(image[:, ::-1]), model, device="cpu", precision="fp32")[:, ::-1]
    for i in (0, 3, 7):
        want = (np.mean(fx[i] != plain[i]) + np.mean(fy[i] != plain[i])) / 2
        assert r.uncertainty[i] == pytest.approx(want, abs=1e-12)
    flat = rank_slices(image[3], model, device="cpu")  # a 2D image has no other axes: flips
    one = rank_slices(image[3:4], model, measure="flips", device="cpu")  # the same slice, no context around it
    assert flat.measure == "flips" and flat.uncertainty[0] == one.uncertainty[0]


def test_novelty_boosts_slices_whose_grey_levels_no_annotated_slice_shows(trained, sample):
    from napari_xrayseg.core.annotation import NOVELTY_FLOOR, hull_distance, novelty_boost

    model, ann = trained  # slices 1 and 5 annotated
    image, _ = sample
    img = image.copy()
    dark = np.percentile(image[3], 30)  # resin fills the pores of slice 3: the darkest phase turns grey
    img[3] = np.where(image[3] < dark, image[3] + 0.8 * (float(np.median(image)) - dark), image[3])
    r = rank_slices(img, model, ann, count=1, max_side=None, device="cpu")
    free = [0, 2, 3, 4, 6, 7]
    assert np.isnan(r.novelty[[1, 5]]).all() and np.isfinite(r.novelty[free]).all()
    assert np.median(r.novelty[free]) == pytest.approx(1.0)  # relative to the median scored slice
    assert r.novelty[3] > 3 * max(r.novelty[[0, 2, 4, 6, 7]])  # the new grey levels stand out
    u = r.uncertainty[free]
    g = np.clip(u / np.median(u), 0, 1) ** 2  # the boost fades where the model is surer than the median slice
    np.testing.assert_allclose(r.score[free], u * np.maximum(1, r.novelty[free] / NOVELTY_FLOOR) ** g)
    assert r.suggested == [3]
    plain = rank_slices(img, model, ann, count=1, max_side=None, device="cpu", novelty=False)
    assert plain.novelty is None and np.array_equal(plain.score, plain.uncertainty, equal_nan=True)
    np.testing.assert_array_equal(plain.uncertainty, r.uncertainty)  # the model's score is unchanged
    assert rank_slices(img, model, None, device="cpu").novelty is None  # nothing annotated: nothing to compare
    # a slice only brighter and of higher contrast (drift, beam decay) is not new: each slice's own range counts
    drift = img.copy()
    drift[6] = 1.15 * img[6] + 0.1 * float(np.ptp(image))
    d = rank_slices(drift, model, ann, count=1, max_side=None, device="cpu")
    assert d.novelty[6] == pytest.approx(r.novelty[6], rel=0.05)
    # a mix of annotated slices' grey levels is not new: the distance is to their convex hull
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(hull_distance(np.stack([(a + b) / 2, a]), np.stack([a, b])), 0, atol=1e-9)
    assert hull_distance(np.array([[0.0, 1.0, 0.0]]), np.stack([a, b]))[0] == pytest.approx(np.sqrt(1.5), rel=1e-5)
    np.testing.assert_array_equal(novelty_boost(np.array([0.2, 3.0])), [1.0, 2.0])
    np.testing.assert_allclose(novelty_boost(np.array([3.0, 3.0, 3.0]), np.array([0.05, 0.1, 0.2])), [2**0.25, 2, 2])


def test_the_loop_runs_with_the_3d_network_that_train_picks_for_volumes(sample):
    """unet3d (the default for volumes): preview, ranking with novelty along two axes, continue training."""
    image, truth = sample
    vol = np.concatenate([image, image[::-1], image])  # 24 slices: deeper than the 5-slice context
    lab = np.concatenate([truth, truth[::-1], truth])
    ann = np.zeros_like(lab)
    ann[[4, 18]] = lab[[4, 18]]
    model = train(vol, ann, **{**TINY_TRAIN, "arch": "unet3d", "context": 5, "epochs": 1})
    assert model.info.arch == "unet3d"
    whole = segment(vol, model, device="cpu", precision="fp32")
    # the preview is the slice with its context (what training sees); segment() runs whole slabs,
    # whose 3D convolutions see farther along the axis: the two agree nearly everywhere (a 1-epoch
    # model's many near-ties move the share by a percent between CPUs), and far better than with
    # the neighbouring slices, so the preview is of the right slice at the right depth
    preview = predict_slice(vol, model, 9, device="cpu")
    agree = [np.mean(preview == whole[z]) for z in (8, 9, 10)]
    assert agree[1] > 0.95 and agree[1] > max(agree[0], agree[2]) + 0.02
    for axis in (0, 2):
        r = rank_slices(vol, model, ann if axis == 0 else None, axis=axis, count=2, max_side=None, device="cpu")
        assert len(r.suggested) == 2 and np.isfinite(r.uncertainty[r.suggested]).all()
        assert (r.novelty is None) == (axis == 2)  # nothing annotated along X: no novelty
    r = rank_slices(vol, model, ann, count=2, max_side=None, device="cpu")
    assert not {4, 18} & set(r.suggested) and np.isfinite(r.novelty[[0, 10, 23]]).all()
    more = continue_training(vol, ann, model, epochs=1, device="cpu", minutes=None)
    assert more.info.arch == "unet3d" and len(more.info.train["rounds"]) >= 1


def test_suggest_never_returns_annotated_slices_along_any_axis(trained, sample):
    model, ann = trained
    image, truth = sample
    picks = suggest_slices(image, model, ann, count=20, device="cpu")
    assert sorted(picks) == [0, 2, 3, 4, 6, 7]  # every free slice, once, annotated ones never
    assert len(picks) == len(set(picks))
    lab = np.zeros_like(truth)
    lab[:, :, [3, 40]] = truth[:, :, [3, 40]]
    lab[2, 10, 7] = 1  # one painted pixel does not make slice 7 along X done (QA: it was "annotated")
    lab[:, :, 50][:8, :8] = 1  # 64 of 4096 pixels painted: 1.6 %, annotated
    r = rank_slices(image, model, lab, axis=2, count=5, device="cpu")
    assert r.annotated == [3, 40, 50] and r.axis == 2 and len(r.uncertainty) == 64
    assert not {3, 40, 50} & set(r.suggested) and all(0 <= s < 64 for s in r.suggested)
    assert np.isnan(r.uncertainty[[3, 40, 50]]).all() and np.isfinite(r.uncertainty[7])
    # spread: with the default penalty no two suggestions are neighbours, none touches an annotated slice
    assert min(abs(a - b) for a in r.suggested for b in [*r.suggested, 3, 40, 50] if a != b) > 1
    # each pick says why; a margin no score clears gives the evenly spaced slices
    assert len(r.reasons) == 5 and set(r.reasons) <= {"score", "gap"} and r.margin == 0.5
    even = rank_slices(image, model, lab, axis=2, count=4, margin=1e9, device="cpu")
    taken = [3, 40, 50]
    for p in even.suggested:
        assert p == even_next(64, taken)
        taken.append(p)
    assert even.reasons == ["gap"] * 4
    for bad in (-0.1, True, "0.5"):
        with pytest.raises(InputError, match="margin"):
            rank_slices(image, model, lab, margin=bad, device="cpu")


def test_painted_slices_leave_out_strokes_and_planes_along_other_axes(tmp_path):
    lab = np.zeros((10, 40, 30), np.uint8)
    lab[:, 7, :] = 2  # an xz plane: a line in every z slice
    lab[:, :, 20] = 3  # a yz plane
    lab[4] = 1  # a z slice
    lab[8, :5, :5] = 1  # 25 of 1200 pixels: 2 %, annotated
    lab[2, 0, 0] = 1  # a stroke
    z = zarr.create_array(str(tmp_path / "l.zarr"), shape=lab.shape, chunks=(3, 40, 30), dtype="uint8")
    z[:] = lab
    for labels in (lab, z):  # in memory, and read a chunk at a time (block edges inside the z range)
        assert painted_slices(labels) == [4, 8]
        assert painted_slices(labels, axis=1) == [0, 1, 2, 3, 4, 7]  # the corner patch is 5 of 300 pixels of each
        assert painted_slices(labels, axis=2) == [0, 1, 2, 3, 4, 20]
    assert annotated_slices(lab) == list(range(10))
    full = np.ones((6, 8, 8), np.uint8)  # every slice along every axis painted: all annotated
    assert painted_slices(full) == list(range(6)) and painted_slices(full, axis=2) == list(range(8))
    most = np.zeros((32, 40, 40), np.uint8)
    most[:20] = 1  # 20 of 32 z slices painted make every y and x slice 62 % painted: not planes along y, x
    most[25, :12] = 2  # a slice 30 % painted still counts (review: it was suggested again)
    assert painted_slices(most) == [*range(20), 25]


def test_suggest_subsamples_long_axes_crops_big_slices_and_cancels(trained, sample, tmp_path):
    model, ann = trained
    image, _ = sample
    r = rank_slices(image, model, axis=1, count=2, max_slices=10, max_side=32, device="cpu")
    # Z slices painted cross every Y slice in a line: the Y slices are still to annotate (QA: none was suggested)
    along_y = rank_slices(image, model, ann, axis=1, count=2, device="cpu")
    assert along_y.annotated == [] and len(along_y.suggested) == 2
    assert np.isfinite(r.uncertainty).sum() == 10
    z = zarr.open_array(store=str(tmp_path / "a.zarr"), mode="w", shape=ann.shape, chunks=(3, 64, 64), dtype="uint8")
    z[:] = ann
    assert annotated_slices(z) == [1, 5] == annotated_slices(ann)
    assert suggest_slices(image, model, z, count=2, device="cpu") == suggest_slices(
        image, model, ann, count=2, device="cpu"
    )
    with pytest.raises(Cancelled):
        suggest_slices(image, model, ann, device="cpu", cancel=NthCheck(2))
    with pytest.raises(InputError, match="count"):
        suggest_slices(image, model, count=0)
    with pytest.raises(InputError, match="measure"):
        suggest_slices(image, model, measure="margin")
    with pytest.raises(InputError, match="does not match"):
        suggest_slices(image, model, ann[:4])
    # the messages of odd labels (QA s44 h1): one pair of parentheses, train's wording for a boolean mask
    bad = ann.astype(np.float64)
    bad[2, 0, 0] = np.nan
    with pytest.raises(InputError, match=r"\(e\.g\. nan\) \(slices 0\.\.7 along axis 0\) in a float64 array"):
        suggest_slices(image, model, bad, device="cpu")
    with pytest.raises(InputError, match=r"^labels are boolean: give integer class labels"):
        suggest_slices(image, model, ann > 0, device="cpu")


def test_float16_labels_are_scored_without_numpy_warnings():
    import warnings

    from napari_xrayseg.core.metrics import evaluate

    truth = make_phantom((4, 32, 32), seed=3)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # float16's max against int64's: an overflow warning
        assert evaluate(truth.astype(np.float16), truth).mean_dice == 1.0


# --------------------------------------------------------------------------- continue training


def test_continue_training_keeps_the_rounds_in_the_history(trained, sample, tmp_path):
    model, ann = trained
    image, truth = sample
    before = (len(model.info.history), dict(model.info.train))
    ann2 = ann.copy()
    ann2[3] = truth[3]
    r1 = continue_training(image, ann2, model, out=tmp_path / "r1.safetensors", device="cpu")
    assert (len(model.info.history), model.info.train) == before  # the input model is untouched
    rounds = r1.info.train["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[0]["annotated_slices"] == [1, 5] and rounds[1]["annotated_slices"] == [1, 3, 5]
    assert rounds[1]["epochs"] == 1 == math.ceil(0.25 * rounds[0]["epochs_run"])  # a quarter of the first
    assert rounds[1]["lr"] == pytest.approx(rounds[0]["lr"] / 2)
    assert [h["round"] for h in r1.info.history] == [0, 0, 1]
    assert r1.info.train["patch"] == 32 and r1.info.context == 3  # the first training's settings
    loaded = load_model(tmp_path / "r1.safetensors")  # the rounds live in the sidecar
    assert [r["round"] for r in loaded.info.train["rounds"]] == [0, 1]
    r2 = continue_training(image, ann2, loaded, epochs=2, device="cpu")
    assert [r["round"] for r in r2.info.train["rounds"]] == [0, 1, 2]
    assert r2.info.train["average"] == loaded.info.train["average"] == 0.5  # kept from the first training
    assert r2.info.train["rounds"][2]["kept"] == "average" and r2.info.train["averaged_epochs"] == [1, 2]
    r3 = continue_training(image, ann2, r1, epochs=2, device="cpu", average=0)  # or as asked
    assert r3.info.train["rounds"][2]["kept"] == "best" and r3.info.train["average"] == 0
    assert [h["round"] for h in r2.info.history] == [0, 0, 1, 2, 2]
    with pytest.raises(OutputExistsError):
        continue_training(image, ann2, model, out=tmp_path / "r1.safetensors", device="cpu")
    with pytest.raises(InputError, match="never been trained"):
        continue_training(image, ann2, init_model("unet", size="tiny", classes=3))
    with pytest.raises(InputError, match="fraction"):
        continue_training(image, ann2, model, fraction=0)


def test_a_round_keeps_the_no_data_value_locks_its_file_and_never_loses_its_model(sample, tmp_path, monkeypatch):
    """A round dropped the first training's no-data value (normalised with the field of view's outside), wrote
    to a model file another run was writing, and lost its model when the save failed (the API had no rescue)."""
    from napari_xrayseg.core import training
    from napari_xrayseg.core.annotation import iter_continue_training
    from napari_xrayseg.core.errors import OutputWriteError
    from napari_xrayseg.core.models import Model, save_model

    image, truth = sample
    image = image.copy()
    image[:, :, :6] = 0  # outside the field of view
    ann = np.zeros_like(truth)
    ann[[1, 5]] = truth[[1, 5]]
    first = train(image, ann, nodata=0, **TINY_TRAIN)
    ann[3] = truth[3]
    assert first.info.train["nodata"] == 0
    assert continue_training(image, ann, first, epochs=1, device="cpu").info.train["nodata"] == 0  # kept
    assert continue_training(image, ann, first, epochs=1, device="cpu", nodata=None).info.train["nodata"] is None
    start = save_model(first, tmp_path / "m.safetensors")
    before = start.read_bytes()
    with pytest.raises(InputError, match="is the input"):  # a round never replaces the model it starts from
        continue_training(image, ann, start, epochs=1, device="cpu", out=start, overwrite=True)
    assert start.read_bytes() == before
    out = tmp_path / "r1.safetensors"
    running = iter_continue_training(image, ann, first, epochs=1, device="cpu", out=out, overwrite=True)
    next(running)  # training now
    with pytest.raises(OutputExistsError, match="is being written by another run right now"):
        continue_training(image, ann, first, epochs=1, device="cpu", out=out, overwrite=True)
    with pytest.raises(OutputExistsError, match="is being written by another run right now"):
        train(image, ann, out=out, overwrite=True, **TINY_TRAIN)
    with pytest.raises(StopIteration) as done:
        while True:
            next(running)
    assert [r["round"] for r in load_model(out).info.train["rounds"]] == [0, 1]
    assert load_model(out).info.history == done.value.value.info.history
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "r1.safetensors"]  # no lock left

    def full(*a, **k):
        raise OutputWriteError("no space left on the device")

    monkeypatch.setattr(training, "save_model", full)
    with pytest.raises(OutputWriteError) as e:
        continue_training(image, ann, first, epochs=1, device="cpu", out=tmp_path / "r2.safetensors")
    assert isinstance(e.value.result, Model) and [r["round"] for r in e.value.result.info.train["rounds"]] == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "r1.safetensors"]


def test_a_round_is_blended_back_with_the_model_it_continued(trained, sample):
    model, ann = trained
    image, truth = sample
    ann2 = ann.copy()
    ann2[3] = truth[3]
    own = continue_training(image, ann2, model, device="cpu", blend=False)
    assert "start_blend_kept" not in own.info.train and own.info.train["rounds"][1]["blend_kept"] is None
    r = continue_training(image, ann2, model, device="cpu")  # the same round (same seed), blended
    a = r.info.train["start_blend_kept"]
    assert a in ROUND_BLENDS and r.info.train["rounds"][1]["blend_kept"] == a
    assert set(r.info.train["start_blend"]) == {"0.3", "0.5", "0.7", "1"}  # no 0.15: the round's labels count
    best = max(v for v in r.info.train["start_blend"].values() if v is not None)
    assert r.info.train["val_dice"] == pytest.approx(best, abs=1e-5)
    base, tuned = model.network.state_dict(), own.network.state_dict()
    for k, v in r.network.state_dict().items():
        if v.is_floating_point():  # a * round + (1 - a) * the model it continued
            torch.testing.assert_close(v, torch.lerp(base[k].to(v.dtype), tuned[k], a), rtol=1e-5, atol=1e-6)
    if a < 1:
        assert r.info.validation[1].endswith(f"{a:g} x it + {1 - a:g} x the model it started from")
    with pytest.raises(InputError, match="blend=True blends"):
        train(image, ann, blend=True, init=None, **TINY_TRAIN)
    with pytest.raises(InputError, match="blend 'yes' must be"):
        train(image, ann, blend="yes", **TINY_TRAIN)


def test_cancelled_round_keeps_the_better_model(trained, sample):
    model, ann = trained
    image, truth = sample
    ann2 = ann.copy()
    ann2[[3, 7]] = truth[[3, 7]]
    with pytest.raises(Cancelled) as e:  # before the first epoch ends: the model from before the round
        continue_training(image, ann2, model, device="cpu", cancel=NthCheck(2))
    assert e.value.result is model and "before the round" in str(e.value)
    token = CancelToken()

    def cancel_after_first_epoch(p):
        if "loss" in p.info:
            token.cancel()

    with pytest.raises(Cancelled) as e:
        continue_training(
            image,
            ann2,
            model,
            epochs=3,
            val_fraction=0.3,
            device="cpu",
            cancel=token,
            progress=cancel_after_first_epoch,
        )
    kept = e.value.result
    assert "keeping" in str(e.value)
    if kept is not model:  # the round's model won on the held-out slices: it carries the round
        assert [r["round"] for r in kept.info.train["rounds"]] == [0, 1]


# --------------------------------------------------------------------------- the loop study


def test_even_next_fills_the_widest_gap():
    assert even_next(48, []) == 23
    seq: list[int] = []
    for _ in range(3):
        seq.append(even_next(9, seq))
    assert seq == [4, 1, 6]
    with pytest.raises(InputError, match="no slice left"):
        even_next(2, [0, 1])


def test_loop_study_tiny_runs_every_strategy_and_writes_table_json_plot(tmp_path):
    steps = []
    res = loop_study(
        shape=(8, 32, 32),
        rounds=3,
        repeats=1,
        size="tiny",
        context=1,
        epochs=1,
        steps_per_epoch=1,
        patch=32,
        batch=2,
        device="cpu",
        phantom={"noise": 2.0, "feature_size": 3.0},
        out=tmp_path / "s",
        progress=lambda p: steps.append(p.step),
    )
    assert steps == [1, 2, 3, 4, 5, 6, 7]  # the shared first model, then 2 rounds x 3 strategies
    by = {(r["strategy"], r["slices"]): r for r in res.runs}
    assert set(by) == {(s, n) for s in ("even", "suggest", "random") for n in (1, 2, 3)}
    assert [by[("even", n)]["added"] for n in (1, 2, 3)] == [4, 1, 6]
    for s in ("suggest", "random"):
        ann = by[(s, 3)]["annotated"]
        assert ann[0] == 4 and len(set(ann)) == 3
    # why each slice was added: the start, the strategy, or for suggest the rule that picked it
    assert by[("even", 1)]["why"] == "start" and by[("even", 2)]["why"] == "even"
    assert by[("random", 3)]["why"] == "random"
    for n in (2, 3):
        r = by[("suggest", n)]
        assert r["why"] in ("score", "gap")
        if r["why"] == "gap":
            assert r["added"] == even_next(8, r["annotated"][:-1])
    assert by[("even", 1)]["mean_dice"] == by[("suggest", 1)]["mean_dice"]  # one shared first model
    # scored on the slices no strategy annotated (QA: the whole volume counted each run's trained slices)
    union = {k for r in res.runs for k in r["annotated"]}
    free = [i for i in range(8) if i not in union]
    for r in res.runs:
        assert "pred" not in r and r["held_out_slices"] == len(free) > 0 and 0 <= r["held_out_dice"] <= 1

    summary = {(x["strategy"], x["slices"]): x for x in res.summary}
    even3 = [r for r in res.runs if (r["strategy"], r["slices"]) == ("even", 3)]
    assert summary[("even", 3)]["mean"] == pytest.approx(even3[0]["held_out_dice"])
    assert summary[("even", 3)]["mean_all"] == pytest.approx(even3[0]["mean_dice"])
    assert summary[("even", 3)]["scored"] == "held-out"
    table = (tmp_path / "s" / "study.md").read_text()
    assert "on the slices no strategy annotated" in table
    assert "| suggest |" in table and "slices to reach even's 3-slice Dice" in table
    assert json.loads((tmp_path / "s" / "study.json").read_text())["settings"]["phantom"]["noise"] == 2.0
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "s" / "study.png"))
    assert png.shape[0] > 200 and png[..., :3].std() > 10
    assert res.slices_to_reach("even", res.mean("even", 3)) <= 3
    with pytest.raises(InputError, match="strategy"):
        loop_study(shape=(8, 32, 32), strategies=("smart",))


def test_loop_study_from_the_pretrained_start_measures_the_default_3d_model(tmp_path):
    """``init="pretrained"``: the first model is the shipped 3D start fine-tuned, and the rounds continue it."""
    res = loop_study(
        shape=(16, 48, 48),
        strategies=("even", "suggest"),
        rounds=2,
        repeats=1,
        init="pretrained",
        epochs=1,
        round_epochs=1,
        steps_per_epoch=1,
        patch=32,
        batch=2,
        device="cpu",
        out=tmp_path / "s",
    )
    assert res.settings["init"] == "pretrained"
    first = [r for r in res.runs if r["slices"] == 1]
    # one step from random weights scores about a third; the start knows the sample's phases
    assert first[0]["mean_dice"] > 0.85, first
    assert {r["strategy"] for r in res.runs if r["slices"] == 2} == {"even", "suggest"}
    assert all(r["mean_dice"] > 0.85 for r in res.runs)
    assert json.loads((tmp_path / "s" / "study.json").read_text())["settings"]["init"] == "pretrained"
    with pytest.raises(InputError, match="study init 'imagenet'"):
        loop_study(shape=(8, 32, 32), init="imagenet")


def _cancelled_after_one_epoch(result):
    """An ``iter_train`` stand-in: cancelled after one epoch with ``result`` as the model so far."""

    def cancelled(*_a, **_k):
        err = Cancelled("training cancelled after 1 epoch")
        err.result = result
        raise err
        yield  # a generator, as iter_train

    return cancelled


def test_a_cancelled_round_on_few_slices_is_compared_with_the_model_before_it(trained, sample, monkeypatch):
    """QA: under 5 annotated slices no slice is held out, so a cancelled round's partial model was always kept
    (0.45 held-out Dice against 0.86 before the round, at a harmful learning rate)."""
    import copy

    from napari_xrayseg.core import training
    from napari_xrayseg.core.annotation import iter_continue_training
    from napari_xrayseg.core.progress import drain

    model, ann = trained
    image, _ = sample
    bad = copy.deepcopy(model)
    with torch.no_grad():
        for p in bad.network.parameters():
            p.mul_(-1.0)  # a diverged round: it answers the wrong classes
    bad.info.train = {**model.info.train, "val_slices": [], "annotated_slices": [1, 5]}

    monkeypatch.setattr(training, "iter_train", _cancelled_after_one_epoch(bad))
    with pytest.raises(Cancelled, match=r"keeping the model from before the round \(annotated-slice Dice") as e:
        drain(iter_continue_training(image, ann, model, epochs=2, device="cpu"))
    assert e.value.result is model


def test_a_stopped_round_is_scored_on_the_image_as_it_trained_on_it(sample, monkeypatch):
    """QA (s44 h4): on Cancel the round and the model before it were scored on the raw image, its no-data voxels
    as data (Dice 0.33 / 0.58 for 0.36 / 0.63), with 16-digit numbers in the message."""
    from napari_xrayseg.core import annotation, training
    from napari_xrayseg.core.progress import drain

    image, truth = sample
    image = image.copy()
    image[:, :, :6] = 0
    ann = np.zeros_like(truth)
    ann[[1, 5]] = truth[[1, 5]]
    model = train(image, ann, nodata=0, **TINY_TRAIN)
    partial = train(image, ann, nodata=0, **TINY_TRAIN)
    partial.info.train = {**partial.info.train, "val_slices": [], "annotated_slices": [1, 5]}
    seen = []
    real = annotation._held_out_dice
    monkeypatch.setattr(
        annotation,
        "_held_out_dice",
        lambda m, img, *a: seen.append(bool(np.isnan(np.asarray(img[:], np.float32)).any())) or real(m, img, *a),
    )

    monkeypatch.setattr(training, "iter_train", _cancelled_after_one_epoch(partial))
    with pytest.raises(Cancelled) as e:
        drain(annotation.iter_continue_training(image, ann, model, epochs=2, device="cpu"))
    assert seen == [True, True]  # both scored without the field of view's outside
    assert re.search(r"annotated-slice Dice \d\.\d{4} (vs|for)", str(e.value)) and "e-" not in str(e.value)


def test_a_round_given_epochs_runs_them_without_a_share_of_the_first_trainings_time(sample):
    """QA (s44 h4): after a first training with minutes, --epochs 400 ran 1 epoch: a quarter of its time capped it."""
    image, truth = sample
    ann = np.zeros_like(truth)
    ann[[1, 5]] = truth[[1, 5]]
    first = train(image, ann, **dict(TINY_TRAIN, minutes=5))
    r = continue_training(image, ann, first, epochs=3, device="cpu")
    assert (r.info.train["rounds"][1]["minutes"], r.info.train["rounds"][1]["epochs_run"]) == (None, 3)
    shared = continue_training(image, ann, first, device="cpu")  # no epochs asked: a share of both
    assert shared.info.train["rounds"][1]["minutes"] == pytest.approx(0.25 * 5)
