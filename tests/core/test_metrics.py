"""Tests of napari_xrayseg.core.metrics: hand-computed matrices, chunking, per-slice, export."""

from __future__ import annotations

import csv
import json
import math

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_xrayseg.core import metrics
from napari_xrayseg.core.errors import Cancelled, InputError, OutputExistsError
from napari_xrayseg.core.metrics import (
    Report,
    confusion_matrix,
    dice_per_class,
    evaluate,
)
from napari_xrayseg.core.progress import CancelToken

# (truth, pred) pairs: (0,0) (0,1) (1,1) (1,1) / (2,2) (2,0) (1,2) (0,0)
TRUTH = np.array([[0, 0, 1, 1], [2, 2, 1, 0]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [2, 0, 2, 0]], dtype=np.uint8)


# --------------------------------------------------------------------------- hand-computed


def _scores(result):
    """A result's numbers: its JSON form less the provenance (when and how it was made)."""
    return {k: v for k, v in result.to_dict().items() if k != "provenance"}


def test_dense_confusion_by_hand():
    cm = confusion_matrix(PRED, TRUTH, ignore_zero=False)
    assert cm.labels == (0, 1, 2)
    assert cm.classes == (0, 1, 2)
    # rows = truth 0, 1, 2; columns = pred 0, 1, 2
    expected = [
        [2, 1, 0],
        [0, 2, 1],
        [1, 0, 1],
    ]
    assert cm.matrix.tolist() == expected
    assert cm.n_voxels == 8

    r = evaluate(PRED, TRUTH, ignore_zero=False, per_slice=False)
    assert r.accuracy == pytest.approx(5 / 8)
    c0, c1, c2 = r.per_class[0], r.per_class[1], r.per_class[2]
    assert c0["dice"] == pytest.approx(2 / 3)
    assert c0["iou"] == pytest.approx(0.5)
    assert c0["accuracy"] == pytest.approx(6 / 8)  # TP 2, TN 4
    assert c1["dice"] == pytest.approx(2 / 3)
    assert c2["dice"] == pytest.approx(0.5)
    assert c2["iou"] == pytest.approx(1 / 3)
    assert c2["accuracy"] == pytest.approx(6 / 8)  # TP 1, FP 1, FN 1, TN 5
    assert r.mean_dice == pytest.approx((2 / 3 + 2 / 3 + 0.5) / 3)
    assert r.mean_iou == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)


def test_sparse_truth_ignores_zero_and_keeps_pred_zero_column():
    cm = confusion_matrix(PRED, TRUTH)  # ignore_zero=True
    # counted: (1,1) (1,1) (2,2) (2,0) (1,2); pred 0 on an annotated voxel -> column 0
    assert cm.labels == (0, 1, 2)
    assert cm.classes == (1, 2)
    expected = [
        [0, 0, 0],
        [0, 2, 1],
        [1, 0, 1],
    ]
    assert cm.matrix.tolist() == expected
    assert cm.class_matrix().tolist() == [[2, 1], [0, 1]]

    r = evaluate(PRED, TRUTH, per_slice=False)
    assert r.n_voxels == 5
    assert r.accuracy == pytest.approx(3 / 5)
    c1, c2 = r.per_class[1], r.per_class[2]
    assert c1["dice"] == pytest.approx(0.8)
    assert c1["f1"] == c1["dice"]
    assert c1["iou"] == pytest.approx(2 / 3)
    assert c1["precision"] == pytest.approx(1.0)
    assert c1["recall"] == pytest.approx(2 / 3)
    assert c1["accuracy"] == pytest.approx(4 / 5)  # TP 2, FN 1, TN 2
    assert c1["voxels_truth"] == 3 and c1["voxels_pred"] == 2
    assert c1["volume_fraction_truth"] == pytest.approx(3 / 5)
    assert c1["volume_fraction_pred"] == pytest.approx(2 / 5)
    assert c2["dice"] == pytest.approx(0.5)
    assert c2["precision"] == pytest.approx(0.5)
    assert c2["accuracy"] == pytest.approx(3 / 5)
    assert r.mean_dice == pytest.approx(0.65)


def test_absent_class_is_not_applicable_and_left_out_of_means():
    r = evaluate(PRED, TRUTH, classes=[1, 2, 3], per_slice=False)
    assert r.classes == (1, 2, 3)
    c3 = r.per_class[3]
    for k in ("dice", "iou", "precision", "recall", "f1", "accuracy"):
        assert c3[k] is None
    assert c3["voxels_truth"] == 0 and c3["voxels_pred"] == 0
    assert r.mean_dice == pytest.approx(0.65)
    assert r.to_dict()["per_class"]["3"]["dice"] is None
    assert 3 in r.confusion_labels
    assert r.confusion_matrix[r.confusion_labels.index(3)].sum() == 0


def test_default_classes_include_pred_values_outside_annotations():
    pred = PRED.copy()
    pred[0, 0] = 4  # truth is 0 (unannotated) there
    r = evaluate(pred, TRUTH, per_slice=False)
    assert r.classes == (1, 2, 4)
    assert r.per_class[4]["dice"] is None
    assert r.mean_dice == pytest.approx(0.65)


def test_class_in_one_array_only_scores_zero():
    truth = np.array([[1, 1, 2]])
    pred = np.array([[1, 1, 3]])
    r = evaluate(pred, truth, per_slice=False)
    assert r.classes == (1, 2, 3)
    assert r.per_class[2]["dice"] == 0.0
    assert r.per_class[2]["precision"] == 0.0  # never predicted
    assert r.per_class[3]["dice"] == 0.0
    assert r.per_class[3]["recall"] == 0.0  # never annotated
    assert r.per_class[3]["accuracy"] == pytest.approx(2 / 3)
    assert r.mean_dice == pytest.approx(1 / 3)


def test_dice_per_class():
    assert dice_per_class(PRED, TRUTH, [1, 2, 3]) == pytest.approx({1: 0.8, 2: 0.5, 3: None})
    assert dice_per_class(PRED, TRUTH, [0, 1, 2], ignore_zero=False) == pytest.approx({0: 2 / 3, 1: 2 / 3, 2: 0.5})
    # an unannotated validation patch does not raise
    assert dice_per_class(PRED, np.zeros_like(TRUTH), [1, 2]) == {1: None, 2: None}


# --------------------------------------------------------------------------- chunked


def _ref_volume(seed=0, shape=(7, 9, 10), n=4, sparse=0.4):
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, n, shape).astype(np.uint16)
    truth[rng.random(shape) < sparse] = 0
    truth[2] = 0  # one fully unannotated slice along axis 0
    pred = rng.integers(0, n, shape).astype(np.uint16)
    pred[truth > 0] = np.where(rng.random(int((truth > 0).sum())) < 0.6, truth[truth > 0], 0)
    return pred, truth


@pytest.mark.parametrize("ignore_zero", [True, False])
def test_zarr_and_dask_match_in_memory(tmp_path, ignore_zero):
    pred, truth = _ref_volume()
    ref = _scores(evaluate(pred, truth, ignore_zero=ignore_zero, axis=1))

    zp = zarr.open_array(tmp_path / "pred.zarr", mode="w", shape=pred.shape, chunks=(2, 4, 5), dtype=pred.dtype)
    zt = zarr.open_array(tmp_path / "truth.zarr", mode="w", shape=truth.shape, chunks=(3, 9, 10), dtype=truth.dtype)
    zp[...] = pred
    zt[...] = truth
    for bs in (None, 1, 2, 3, 100):
        got = metrics.evaluate(zp, zt, ignore_zero=ignore_zero, axis=1, block_slices=bs)
        assert _scores(got) == ref, bs

    dp = da.from_array(pred, chunks=(3, 5, 5))
    dt = da.from_array(truth, chunks=(2, 9, 4))
    assert _scores(evaluate(dp, dt, ignore_zero=ignore_zero, axis=1)) == ref
    cm_ref = confusion_matrix(pred, truth, ignore_zero=ignore_zero)
    cm = confusion_matrix(dp, dt, ignore_zero=ignore_zero, block_slices=1)
    assert cm.labels == cm_ref.labels
    np.testing.assert_array_equal(cm.matrix, cm_ref.matrix)


class _Recorder:
    """Array-like that records every slab read, to check memory stays bounded."""

    def __init__(self, a, chunks=None):
        self._a = a
        self.shape, self.dtype, self.ndim = a.shape, a.dtype, a.ndim
        if chunks is not None:
            self.chunks = chunks
        self.reads = []

    def __getitem__(self, sl):
        self.reads.append((sl.start, sl.stop))
        return self._a[sl]


def test_slabs_bounded_and_chunk_aligned(monkeypatch):
    pred, truth = _ref_volume(shape=(12, 4, 5))
    ref = _scores(evaluate(pred, truth))
    monkeypatch.setattr(metrics, "_SLAB_VOXELS", 4 * 4 * 5)  # budget: 4 slices
    rp, rt = _Recorder(pred), _Recorder(truth, chunks=(2, 4, 5))
    assert _scores(evaluate(rp, rt, interfaces=False)) == {**ref, "by_interface_distance": None}
    assert rt.reads == [(0, 4), (4, 8), (8, 12)]  # multiple of chunk depth 2 within budget
    assert rp.reads == rt.reads

    rp, rt = _Recorder(pred), _Recorder(truth, chunks=(6, 4, 5))  # chunk deeper than budget
    assert _scores(evaluate(rp, rt, interfaces=False)) == {**ref, "by_interface_distance": None}
    # each chunk read (decoded) once, in whole (QA: 2048² slices in 64-deep chunks decoded each chunk 64 times);
    # the work still goes in slabs within the budget
    assert rt.reads == [(0, 6), (6, 12)] and rp.reads == [(0, 4), (4, 8), (8, 12)]
    monkeypatch.setattr(metrics, "_CHUNK_READ_BYTES", 5 * 4 * 5)  # a chunk-deep block too big to keep
    rp, rt = _Recorder(pred), _Recorder(truth, chunks=(6, 4, 5))
    assert _scores(evaluate(rp, rt, interfaces=False)) == {**ref, "by_interface_distance": None}
    assert max(b - a for a, b in rt.reads) <= 4

    # the interface pass reads the same slabs plus a halo of two slices of the truth
    rp, rt = _Recorder(pred), _Recorder(truth, chunks=(2, 4, 5))
    assert _scores(evaluate(rp, rt)) == ref
    assert rt.reads[3:] == [(0, 6), (2, 10), (6, 12)] and rp.reads == [(0, 4), (4, 8), (8, 12)] * 2


def test_cancel_checked_per_slab():
    pred, truth = _ref_volume()

    class CancelAfter:
        def __init__(self, n):
            self.n, self.calls = n, 0

        def check(self):
            self.calls += 1
            if self.calls > self.n:
                raise Cancelled("cancelled by the user")

    token = CancelAfter(3)
    with pytest.raises(Cancelled):
        evaluate(pred, truth, block_slices=1, cancel=token, interfaces=False)
    assert token.calls == 4
    t = CancelToken()
    t.cancel()
    with pytest.raises(Cancelled):
        confusion_matrix(pred, truth, cancel=t)
    ok = CancelAfter(100)
    evaluate(pred, truth, block_slices=2, cancel=ok, interfaces=False)
    assert ok.calls == 4  # ceil(7 / 2) slabs
    ok = CancelAfter(100)
    evaluate(pred, truth, block_slices=2, cancel=ok)
    assert ok.calls == 8  # and as many again for the interface pass


# --------------------------------------------------------------------------- per slice


def _direct_slice_dice(pred, truth, axis, classes, ignore_zero=True):
    means, per_class = [], {c: [] for c in classes}
    for i in range(truth.shape[axis]):
        t = np.take(truth, i, axis=axis)
        p = np.take(pred, i, axis=axis)
        m = t != 0 if ignore_zero else np.ones(t.shape, bool)
        scores = []
        for c in classes:
            tc, pc = (t == c) & m, (p == c) & m
            den = tc.sum() + pc.sum()
            d = None if den == 0 else 2 * (tc & pc).sum() / den
            per_class[c].append(d)
            if d is not None:
                scores.append(d)
        means.append(float(np.mean(scores)) if m.any() and scores else None)
    return means, per_class


def _assert_close_lists(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if w is not None:
            assert g == pytest.approx(w)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("ignore_zero", [True, False])
def test_per_slice_against_direct(axis, ignore_zero):
    pred, truth = _ref_volume(seed=axis + 3)
    r = evaluate(pred, truth, axis=axis, ignore_zero=ignore_zero, block_slices=3)
    means, per_class = _direct_slice_dice(pred, truth, axis, r.classes, ignore_zero)
    assert r.axis == axis
    _assert_close_lists(r.slice_dice, means)
    for c in r.classes:
        _assert_close_lists(r.slice_class_dice[c], per_class[c])
    vals = [m for m in means if m is not None]
    assert r.n_annotated_slices == len(vals)
    assert r.mean_slice_dice == pytest.approx(np.mean(vals))
    assert r.std_slice_dice == pytest.approx(np.std(vals))
    if axis == 0 and ignore_zero:
        assert r.slice_dice[2] is None  # unannotated slice
    d = r.to_dict()["per_slice"]
    assert d["axis"] == axis and len(d["dice"]) == truth.shape[axis]


def test_per_slice_2d_and_off():
    r = evaluate(PRED, TRUTH, axis=1)
    # columns: truth (0,2) (0,2) (1,1) (1,0); pred (0,2) (1,0) (1,2) (1,0)
    assert r.slice_class_dice[2] == [1.0, 0.0, 0.0, None]
    assert r.slice_class_dice[1] == [None, None, pytest.approx(2 / 3), 1.0]
    assert r.slice_dice == [1.0, 0.0, pytest.approx(1 / 3), 1.0]
    off = evaluate(PRED, TRUTH, per_slice=False)
    assert off.slice_dice is None and off.mean_slice_dice is None
    assert off.to_dict()["per_slice"] is None


# --------------------------------------------------------------------------- export


def _assert_plain(obj):
    t = type(obj)
    if t is dict:
        for k, v in obj.items():
            assert type(k) is str
            _assert_plain(v)
    elif t is list:
        for v in obj:
            _assert_plain(v)
    else:
        assert t in (str, int, float, bool, type(None)), (obj, t)
        if t is float:
            assert math.isfinite(obj)


def test_to_dict_json_round_trip(tmp_path):
    pred, truth = _ref_volume()
    r = evaluate(pred, truth, classes=[1, 2, 3, 7])
    d = r.to_dict()
    _assert_plain(d)
    for k in ("mean_dice", "per_class", "confusion_matrix", "classes", "per_slice"):
        assert k in d
    assert set(d["per_class"]["1"]) >= {
        "dice",
        "iou",
        "precision",
        "recall",
        "f1",
        "accuracy",
        "voxels_truth",
        "voxels_pred",
    }
    assert d["per_class"]["7"]["dice"] is None
    assert json.loads(json.dumps(d)) == d
    assert Report.from_dict(json.loads(json.dumps(d))).to_dict() == d

    out = r.to_json(tmp_path / "m.json")
    assert json.loads(out.read_text()) == d
    assert "null" in out.read_text()


@pytest.mark.needs("pandas")
def test_csv_and_dataframe(tmp_path):
    r = evaluate(PRED, TRUTH, classes=[1, 2, 3])
    path = r.to_csv(tmp_path / "m.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["class"] for row in rows] == ["1", "2", "3", "mean", "all"]
    assert float(rows[4]["accuracy"]) == r.accuracy and rows[4]["dice"] == ""  # the share of voxels right (QA h4)
    assert float(rows[0]["dice"]) == r.per_class[1]["dice"]
    assert rows[2]["dice"] == ""  # not applicable
    assert float(rows[3]["dice"]) == pytest.approx(r.mean_dice)
    assert int(rows[0]["voxels_truth"]) == 3

    df = r.to_dataframe()
    assert list(df.index) == ["1", "2", "3", "mean"]
    assert df.loc["1", "dice"] == pytest.approx(0.8)
    assert math.isnan(df.loc["3", "dice"])

    text = repr(r)
    assert "dice" in text and "mean" in text and "n/a" in text
    assert "per-slice dice (axis 0)" in text


@pytest.mark.parametrize("method", ["to_json", "to_csv"])
def test_refuses_to_overwrite(tmp_path, method):
    r = evaluate(PRED, TRUTH)
    path = tmp_path / "out.txt"
    path.write_text("keep me")
    with pytest.raises(OutputExistsError, match=r"exists.*overwrite=True"):
        getattr(r, method)(path)
    assert path.read_text() == "keep me"
    getattr(r, method)(path, overwrite=True)
    assert path.read_text() != "keep me"


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("pred", "truth", "kwargs", "match"),
    [
        (np.zeros((2, 3), int), np.ones((2, 4), int), {}, r"pred shape \(2, 3\) does not match"),
        (np.array([[-1, 1]]), np.array([[1, 1]]), {}, r"pred holds negative values \(min -1\)"),
        (np.array([[1, 1]]), np.array([[1, -2]]), {}, r"truth holds negative values"),
        (np.array([[0.5, 1.0]]), np.array([[1, 1]]), {}, r"non-integer values \(e.g. 0.5\)"),
        (np.array([[np.nan, 1.0]]), np.array([[1, 1]]), {}, r"non-finite"),
        (np.array([[True, False]]), np.array([[1, 1]]), {}, r"pred has boolean dtype"),
        (np.array([[1, 1]]), np.array([["a", "b"]]), {}, r"truth has dtype <U1"),
        (np.ones(4, int), np.ones(4, int), {}, r"pred has 1 dimensions"),
        (np.ones((1, 1, 1, 2), int), np.ones((1, 1, 1, 2), int), {}, r"4 dimensions"),
        (np.ones((0, 3), int), np.ones((0, 3), int), {}, r"empty"),
        (PRED, np.zeros_like(TRUTH), {}, r"^truth has no annotated voxels \(all 0\); paint"),
        (PRED, TRUTH, {"classes": [0, 1]}, r"contains 0 but ignore_zero=True"),
        (PRED, TRUTH, {"classes": []}, r"empty"),
        (PRED, TRUTH, {"classes": [1, 1]}, r"duplicates"),
        (PRED, TRUTH, {"classes": [1, -3]}, r"holds -3"),
        (PRED, TRUTH, {"axis": 2}, r"axis 2 is not valid for a 2D array"),
        (PRED, TRUTH, {"block_slices": 0}, r"block_slices=0 is not a positive integer"),
    ],
)
def test_bad_inputs(pred, truth, kwargs, match):
    with pytest.raises(InputError, match=match) as info:
        if "block_slices" in kwargs:
            confusion_matrix(pred, truth, **kwargs)
        else:
            evaluate(pred, truth, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_value_in_a_later_slab_of_zarr(tmp_path):
    z = zarr.open_array(tmp_path / "p.zarr", mode="w", shape=(4, 3, 3), chunks=(1, 3, 3), dtype="i4")
    z[...] = 1
    z[3, 1, 1] = -5
    with pytest.raises(InputError, match=r"pred holds negative values \(min -5\)"):
        evaluate(z, np.ones((4, 3, 3), np.uint8))


def test_integer_valued_floats_and_signed_ints_accepted():
    ref = _scores(evaluate(PRED, TRUTH))
    assert _scores(evaluate(PRED.astype(np.float32), TRUTH.astype(np.int64))) == ref
    assert _scores(evaluate(PRED.tolist(), TRUTH.tolist())) == ref


# --------------------------------------------------------------------------- property


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    shape=st.one_of(
        st.tuples(st.integers(1, 5), st.integers(1, 5)),
        st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),
    ),
    n=st.integers(1, 5),
    block=st.integers(1, 6),
    ignore_zero=st.booleans(),
)
def test_chunked_equals_in_memory(data, shape, n, block, ignore_zero):
    size = int(np.prod(shape))
    elems = st.lists(st.integers(0, n), min_size=size, max_size=size)
    truth = np.array(data.draw(elems), dtype=np.uint8).reshape(shape)
    pred = np.array(data.draw(elems), dtype=np.int16).reshape(shape)
    truth.flat[0] = max(1, int(truth.flat[0]))  # at least one annotated voxel
    axis = data.draw(st.integers(0, len(shape) - 1))

    ref = evaluate(pred, truth, ignore_zero=ignore_zero, axis=axis)
    chunks = (block,) + shape[1:]
    got = evaluate(
        da.from_array(pred, chunks=chunks),
        da.from_array(truth, chunks=chunks),
        ignore_zero=ignore_zero,
        axis=axis,
        block_slices=block,
    )
    assert _scores(got) == _scores(ref)
    np.testing.assert_array_equal(
        confusion_matrix(pred, truth, ignore_zero=ignore_zero, block_slices=block).matrix,
        ref.confusion_matrix,
    )
    for scores in ref.per_class.values():
        for k in ("dice", "iou", "precision", "recall", "accuracy"):
            assert scores[k] is None or 0.0 <= scores[k] <= 1.0
    assert 0.0 <= ref.accuracy <= 1.0
    assert ref.mean_dice is None or 0.0 <= ref.mean_dice <= 1.0
    assert all(d is None or 0.0 <= d <= 1.0 for d in ref.slice_dice)
    assert ref.n_voxels == (int((truth != 0).sum()) if ignore_zero else size)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    shape=st.one_of(
        st.tuples(st.integers(1, 6), st.integers(1, 6)),
        st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
    ),
    values=st.lists(st.integers(0, 255), min_size=1, max_size=5, unique=True),
    ignore_zero=st.booleans(),
)
def test_scores_match_brute_force_on_random_shapes_and_classes(data, shape, values, ignore_zero):
    """Dice, IoU, precision and recall from sets of voxels, for arbitrary label values."""
    size = int(np.prod(shape))
    pick = st.lists(st.sampled_from([0, *values]), min_size=size, max_size=size)
    truth = np.array(data.draw(pick), dtype=np.uint8).reshape(shape)
    pred = np.array(data.draw(pick), dtype=np.uint8).reshape(shape)
    truth.flat[0] = max(values)  # at least one counted voxel (max(values) may be 0 only with ignore_zero off)
    if ignore_zero and not truth.any():
        truth.flat[0] = 1
    counted = truth != 0 if ignore_zero else np.ones(shape, bool)
    report = evaluate(pred, truth, ignore_zero=ignore_zero, axis=0)
    for c, s in report.per_class.items():
        t, p = (truth == c) & counted, (pred == c) & counted
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        if tp + fp + fn == 0:  # absent from both: not applicable
            assert s["dice"] is s["iou"] is s["precision"] is s["recall"] is None
            continue

        def ratio(a, b):
            return a / b if b else 0.0  # present in one array only: 0, never NaN

        assert s["dice"] == pytest.approx(ratio(2 * tp, 2 * tp + fp + fn))
        assert s["iou"] == pytest.approx(ratio(tp, tp + fp + fn))
        assert s["precision"] == pytest.approx(ratio(tp, tp + fp))
        assert s["recall"] == pytest.approx(ratio(tp, tp + fn))
    assert report.accuracy == pytest.approx(float((pred[counted] == truth[counted]).mean()))
    assert report.n_voxels == int(counted.sum())
    # a perfect prediction scores 1 on every class present, whatever the labels
    perfect = evaluate(truth, truth, ignore_zero=ignore_zero)
    assert all(s["dice"] in (None, 1.0) for s in perfect.per_class.values())


def test_class_names_in_tables_json_and_csv(tmp_path):
    r = evaluate(PRED, TRUTH, ignore_zero=False, class_names={0: "pore", 1: "nickel", 2: "YSZ"})
    assert r.class_names == {0: "pore", 1: "nickel", 2: "YSZ"}
    assert "1 nickel" in repr(r)
    d = r.to_dict()
    assert d["class_names"] == {"0": "pore", "1": "nickel", "2": "YSZ"}
    assert Report.from_dict(json.loads(json.dumps(d))).class_names == r.class_names
    with open(r.to_csv(tmp_path / "n.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["name"] for row in rows] == ["pore", "nickel", "YSZ", "", ""]
    listed = evaluate(PRED, TRUTH, class_names=["nickel", "YSZ"])  # a model's names of labels 1, 2
    assert listed.class_names == {1: "nickel", 2: "YSZ"}
    assert evaluate(PRED, TRUTH).to_dict()["class_names"] is None
    # a model trained without names records "class 1", ...: not shown again beside the number ("1 class 1")
    placeholders = evaluate(PRED, TRUTH, class_names=["class 1", "YSZ"])
    assert placeholders.class_names == {2: "YSZ"} and "class 1" not in repr(placeholders)
    assert evaluate(PRED, TRUTH, class_names=["class 1", "class 2"]).class_names is None


def test_interface_errors_by_distance_hand_computed():
    from napari_xrayseg.core.metrics import interface_errors

    truth = np.array([[[1, 1, 1, 1, 2, 2, 2, 2]]])  # one interface, between x=3 and x=4
    pred = np.array([[[1, 1, 2, 1, 2, 2, 2, 1]]])  # wrong at x=2 (band 1) and x=7 (band 2+)
    b = interface_errors(pred, truth)
    assert b == {
        "0": {"voxels": 2, "errors": 0, "error_rate": 0.0},
        "1": {"voxels": 2, "errors": 1, "error_rate": 0.5},
        "2+": {"voxels": 4, "errors": 1, "error_rate": 0.25},
    }
    # unannotated voxels (0) neither count nor make an interface
    sparse = truth.copy()
    sparse[..., 3] = 0
    b = interface_errors(pred, sparse)
    assert b["0"]["voxels"] == 0 and sum(v["voxels"] for v in b.values()) == 7
    # with 0 a class (ignore_zero=False), 0 is a phase like the others, in the report too
    b = interface_errors(pred, sparse, ignore_zero=False)
    assert b["0"] == {"voxels": 3, "errors": 2, "error_rate": 2 / 3} and sum(v["voxels"] for v in b.values()) == 8
    assert evaluate(pred, sparse, ignore_zero=False).by_interface_distance == b


def test_interface_errors_slab_by_slab_equals_whole_and_reach_the_report(tmp_path):
    import zarr

    from napari_xrayseg.core.metrics import Report, interface_errors

    rng = np.random.default_rng(4)
    truth = (rng.random((12, 20, 20)) > 0.5).astype(np.uint8) + 1
    truth[:, :10] = 3
    pred = np.where(rng.random(truth.shape) < 0.1, 1, truth).astype(np.uint8)
    z = zarr.create_array(store=str(tmp_path / "t.zarr"), shape=truth.shape, dtype="uint8", chunks=(3, 20, 20))
    z[:] = truth
    whole = interface_errors(pred, truth)
    assert interface_errors(pred, z, block_slices=2) == whole
    r = evaluate(pred, z)
    assert r.by_interface_distance == whole
    d = r.to_dict()["by_interface_distance"]
    assert set(d) == {"0", "1", "2+"} and d["0"]["voxels"] + d["1"]["voxels"] + d["2+"]["voxels"] == truth.size
    assert Report.from_dict(r.to_dict()).by_interface_distance == whole
    assert "distance to a truth interface" in repr(r)
    assert evaluate(pred, truth, interfaces=False).by_interface_distance is None


def test_evaluate_opens_label_files_itself(tmp_path):
    from napari_xrayseg.core.io import write_volume
    from napari_xrayseg.core.metrics import evaluate as ev

    t = np.random.default_rng(0).integers(1, 4, (4, 16, 16)).astype(np.uint8)
    p = t.copy()
    p[0] = 1
    write_volume(tmp_path / "p.zarr", p)
    np.save(tmp_path / "t.npy", t)
    got = ev(str(tmp_path / "p.zarr"), tmp_path / "t.npy")
    assert got.mean_dice == ev(p, t).mean_dice


def test_slices_far_below_the_others_are_named():
    # "per-slice dice 0.7102 ± 0.2688" hid which slices were lost (corrupt ones, at 0.17-0.25, in a QA run)
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 4, (12, 16, 16), dtype=np.uint8)
    pred = truth.copy()
    flip = rng.random(truth.shape) < 0.05
    pred[flip] = 1 + pred[flip] % 3  # 5 % wrong everywhere
    pred[7] = 1  # a lost slice
    r = evaluate(pred, truth)
    assert r.outlier_slices()[0][0] == 7 and len(r.outlier_slices()) == 1
    assert "1 slice far below the others: 7 (" in repr(r)
    assert evaluate(truth, truth).outlier_slices() == [] and "far below" not in repr(evaluate(truth, truth))


def test_a_truth_class_the_prediction_lacks_and_too_few_names_are_said(tmp_path, caplog, tiny_model):
    """QA: truth label 7 scored Dice 0 and lowered the mean without a word; two names for three classes were half
    applied."""
    from napari_xrayseg.core.inference import segment

    vol = np.random.default_rng(1010).random((4, 32, 32), dtype=np.float32)
    pred = segment(vol, tiny_model, out=tmp_path / "p.zarr", tile=32, device="cpu")
    truth = np.asarray(pred).copy()
    truth[0, :4, :4] = 7
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        evaluate(str(tmp_path / "p.zarr"), truth)
    assert "no voxel of class 7, which the truth holds: Dice 0, counted in the mean Dice" in caplog.text
    assert "7 is no class of the model that made the prediction (classes [1, 2, 3])" in caplog.text
    with pytest.raises(InputError, match=r"2 class names for the 4 classes scored \[1, 2, 3, 7\]"):
        evaluate(str(tmp_path / "p.zarr"), truth, class_names=["a", "b"])


def test_a_predicted_class_the_truth_lacks_is_said_and_the_cli_scores_only_the_classes_asked(tmp_path, caplog, capsys):
    """QA s45: 3 stray voxels of a class the truth lacks took the mean Dice from 0.9994 to 0.6663 without a word."""
    from napari_xrayseg.cli import main

    truth = np.ones((4, 20, 30), np.uint8)
    truth[:, :, 15:] = 2
    pred = truth.copy()
    pred[0, 0, :3] = 3
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        r = evaluate(pred, truth)
    assert r.per_class[3]["dice"] == 0.0 and r.mean_dice < 0.7
    assert (
        "the truth has no voxel of class 3, which the prediction holds (3 of the scored voxels): Dice 0, counted in "
        "the mean Dice; pass classes=[1, 2] (--classes 1 2) to score only the truth's classes" in caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        assert evaluate(truth, truth).mean_dice == 1.0
    assert "no voxel" not in caplog.text
    np.save(tmp_path / "p.npy", pred)
    np.save(tmp_path / "t.npy", truth)
    args = ["--pred", str(tmp_path / "p.npy"), "--truth", str(tmp_path / "t.npy"), "--classes", "1", "2"]
    assert main(["evaluate", *args, "--json", str(tmp_path / "r.json")]) == 0
    got = json.loads((tmp_path / "r.json").read_text())
    assert got["classes"] == [1, 2] and got["mean_dice"] == pytest.approx(
        evaluate(pred, truth, classes=[1, 2]).mean_dice
    )
    assert got["mean_dice"] > 0.99


def test_evaluate_reports_progress_through_both_passes():
    """The CLI printed nothing for 15 minutes on a 384 x 2048² pair (QA): evaluate took no progress callback, and
    the interface pass, half the work, ran after a single 100 % record."""
    pred, truth = _ref_volume(shape=(12, 4, 5))
    seen = []
    evaluate(pred, truth, block_slices=2, progress=seen.append)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("interfaces: slices" in p.message and 0.5 < p.fraction < 1 for p in seen)
    assert sum(f <= 0.5 for f in fractions) >= 6  # the first pass: a record per slab, in the first half


def test_unrelated_2d_images_and_one_2d_image_are_scored_as_images():
    """QA (2D workflows): a stack of unrelated 2D images counted a pixel whose neighbouring *image* had another class
    as on an interface (85 % of pixels in band 0, not 24 %); one 2D image reported its rows as slices, the edge
    rows "a corrupt or missing slice"."""
    rng = np.random.default_rng(1204)
    truth = (rng.random((6, 24, 24)) < 0.5).astype(np.uint8) + 1
    truth = np.repeat(np.repeat(truth[:, ::4, ::4], 4, axis=1), 4, axis=2)  # blobs of 4x4 pixels, unrelated images
    pred = truth.copy()
    pred[rng.random(pred.shape) < 0.05] = 3
    interface_errors = metrics.interface_errors
    alone = [interface_errors(pred[i], truth[i]) for i in range(6)]
    stack = interface_errors(pred, truth, two_d=True)
    for band in ("0", "1", "2+"):
        assert stack[band]["voxels"] == sum(a[band]["voxels"] for a in alone)
        assert stack[band]["errors"] == sum(a[band]["errors"] for a in alone)
    assert interface_errors(pred, truth)["0"]["voxels"] > stack["0"]["voxels"]  # as a volume: across images
    assert evaluate(pred, truth, two_d=True).by_interface_distance == stack
    assert evaluate(pred, truth, two_d=True).n_annotated_slices == 6  # the per-slice scores: per image
    assert evaluate(pred[0], truth[0]).outlier_text() is None  # one image: its rows are no "corrupt slices"


def test_a_truth_whose_0_is_a_phase_is_said_to_be_scored_without_it(caplog):
    """QA: against an ImageJ 0/255 pore/solid mask a prediction of solid everywhere scored Dice 1.0, and a
    0-based export's pore phase (30 %) went unscored, without a word. Painted slices and a round field of view
    (0 outside it, in every slice) say nothing."""
    from napari_xrayseg.core.sample import make_phantom

    _, truth = make_phantom((16, 64, 64), seed=1525)
    mask = np.where(truth == 1, 0, 255).astype(np.uint8)
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        assert evaluate(np.full_like(mask, 255), mask).mean_dice == 1.0
    assert "only class 255 is scored: if 0 is a phase of the truth" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        evaluate(truth, (truth - 1).astype(np.uint8))  # 0-based: 0, 1, 2
    assert "in every slice) is left out as not annotated, and only classes 1, 2 are scored" in caplog.text
    assert "ignore_zero=False" in caplog.text
    caplog.clear()
    painted = np.zeros_like(truth)
    painted[[3, 8]] = truth[[3, 8]]
    yy, xx = np.indices(truth.shape[1:])
    fov = np.where(((yy - 32) ** 2 + (xx - 32) ** 2 > 30**2)[None], 0, truth)
    scribbled = np.where(np.random.default_rng(1526).random(truth.shape) < 0.26, truth, 0)  # every slice, 74 % 0
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        evaluate(truth, painted)
        evaluate(truth, fov)
        evaluate(truth, scribbled)
        evaluate(mask, mask, ignore_zero=False)
    assert "left out as not annotated" not in caplog.text
