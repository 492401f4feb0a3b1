"""Orthoplane ensembles, confidence maps and flip TTA."""

import numpy as np
import pytest
import torch
import zarr

from napari_xrayseg.core.errors import Cancelled, InputError
from napari_xrayseg.core.inference import SlicePredictor, output_complete, segment
from napari_xrayseg.core.io import write_volume
from napari_xrayseg.core.merger import confidence_from_probs
from napari_xrayseg.core.plan import parse_axes
from napari_xrayseg.core.progress import CancelToken

KW = {"tile": 32, "device": "cpu", "batch": 4}


def _column_scores(self, slices):
    """An analytic 'network': class 0 score 0, class 1 score = the pixel's column / 10, class 2 = row / 7 + 0.05."""
    n, _, h, w = (slices.shape[0], 1, *slices.shape[-2:])
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    s = torch.stack([torch.zeros(h, w), cols / 10, rows / 7 + 0.05])
    return s[None].expand(n, 3, h, w).clone()


def test_orthoplane_matches_the_analytic_average(monkeypatch, tiny_model):
    monkeypatch.setattr(SlicePredictor, "scores", _column_scores)
    z, y, x = 6, 9, 11
    vol = np.random.default_rng(0).random((z, y, x), dtype=np.float32)
    kw = {"device": "cpu", "batch": 4}  # the model's own tile (32) adapts to the 9x11 slices
    labels, conf = segment(vol, tiny_model, axes="zyx", confidence="maxprob", slab=4, **kw)

    # slices along z are (y, x): class1 = x/10, class2 = y/10; along y: (z, x); along x: (z, y)
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")

    def probs(c1, c2):
        s = np.stack([np.zeros_like(c1, dtype=float), c1 / 10, c2 / 7 + 0.05])
        e = np.exp(s - s.max(0))
        return e / e.sum(0)

    mean = (probs(xx, yy) + probs(xx, zz) + probs(yy, zz)) / 3
    np.testing.assert_array_equal(labels, np.asarray(tiny_model.info.classes)[mean.argmax(0)])
    np.testing.assert_allclose(conf, mean.max(0), rtol=1e-5)
    # along one axis only, the answer is that axis's probabilities
    lz = segment(vol, tiny_model, axes="z", **kw)
    np.testing.assert_array_equal(lz, np.asarray(tiny_model.info.classes)[probs(xx, yy).argmax(0)])


def _assert_labels_match(labels, probs, classes, margin=1e-4):
    """Labels equal argmax(probs) wherever the top two classes are not a near-tie (float rounding)."""
    srt = np.sort(probs, axis=0)
    clear = srt[-1] - srt[-2] > margin
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(labels[clear], np.asarray(classes)[probs.argmax(0)][clear])


@pytest.mark.slow
def test_orthoplane_out_of_core_equals_in_memory_and_real_net_reference(tmp_path, volume, tiny_model):
    ref = sum(_probs_along(volume, tiny_model, a) for a in range(3)) / 3
    mem, conf = segment(volume, tiny_model, axes=(0, 1, 2), confidence="entropy", **KW)
    _assert_labels_match(mem, ref, tiny_model.info.classes)
    np.testing.assert_allclose(conf, confidence_from_probs(ref, "entropy"), atol=2e-3)  # float16 sums on disk
    write_volume(tmp_path / "in.zarr", volume, chunks=(3, 45, 61))
    src = zarr.open_array(store=str(tmp_path / "in.zarr"), mode="r")
    out, cout = segment(src, tiny_model, axes="zyx", confidence="entropy", out=tmp_path / "o.zarr", slab=2, **KW)
    _assert_labels_match(out[...], ref, tiny_model.info.classes, margin=2e-3)  # float16 running sum on disk
    np.testing.assert_allclose(cout[...], conf, atol=2e-3)
    assert (tmp_path / "o-entropy.zarr").exists() and not (tmp_path / "o.tmp-probs.zarr").exists()
    assert output_complete(tmp_path / "o.zarr")
    meta = zarr.open_array(store=str(tmp_path / "o.zarr")).attrs["napari_xrayseg"]
    assert meta["axes"] == [0, 1, 2] and meta["confidence"] == "entropy"


def _probs_along(volume, model, axis):
    from napari_xrayseg.core.normalize import apply_normalization
    from napari_xrayseg.core.plan import resolved_normalization

    norm = resolved_normalization(model.info.normalization, volume)
    pred = SlicePredictor(model, device="cpu", tile=32, batch=4)
    moved = np.moveaxis(apply_normalization(volume, norm), axis, 0)
    p = np.stack([pred.probs(s[None])[0] for s in moved], axis=1)  # (C, n, ...)
    return np.moveaxis(p, 1, 1 + axis)


def test_single_axis_confidence_and_flip_tta(volume, tiny_model):
    plain = segment(volume, tiny_model, **KW)
    labels, conf = segment(volume, tiny_model, confidence="maxprob", **KW)
    np.testing.assert_array_equal(labels, plain)  # argmax of softmax = best raw score
    assert conf.dtype == np.float32 and conf.shape == volume.shape
    assert conf.min() >= 1 / 3 - 1e-6 and conf.max() <= 1 + 1e-6
    # TTA is the mean over identity and the two in-plane flips
    ref = _probs_along(volume, tiny_model, 0)
    flipx = np.flip(_probs_along(np.flip(volume, 2).copy(), tiny_model, 0), 3)
    flipy = np.flip(_probs_along(np.flip(volume, 1).copy(), tiny_model, 0), 2)
    mean = (ref + flipx + flipy) / 3
    lt, ct = segment(volume, tiny_model, confidence="maxprob", tta=True, **KW)
    np.testing.assert_allclose(ct, mean.max(0), rtol=1e-4, atol=1e-5)
    _assert_labels_match(lt, mean, tiny_model.info.classes)


def test_confidence_on_2d_and_bad_options(tiny_model):
    img = np.random.default_rng(1).random((40, 40), dtype=np.float32)
    labels, conf = segment(img, tiny_model, confidence="entropy", **KW)
    assert labels.shape == conf.shape == (40, 40) and 0 <= conf.min() and conf.max() <= 1
    with pytest.raises(InputError, match="2D image has one slicing direction"):
        segment(img, tiny_model, axes="zyx", **KW)
    vol = np.zeros((3, 32, 32), np.float32) + np.arange(32)
    with pytest.raises(InputError, match="must be one of"):
        segment(vol, tiny_model, confidence="variance", **KW)
    with pytest.raises(InputError, match="repeats an axis"):
        segment(vol, tiny_model, axes="zz", **KW)
    with pytest.raises(InputError, match="not understood"):
        segment(vol, tiny_model, axes="q", **KW)
    with pytest.raises(InputError, match="need an output store"):
        segment(vol, tiny_model, axes="zyx", resume=True, **KW)
    with pytest.raises(InputError, match="confidence_out needs out"):
        segment(vol, tiny_model, confidence="maxprob", confidence_out="c.zarr", **KW)


def test_parse_axes():
    assert parse_axes("zyx", 3) == [0, 1, 2] and parse_axes("XZ", 3) == [2, 0] and parse_axes("12", 3) == [1, 2]
    assert parse_axes(-1, 3) == [2] and parse_axes(None, 3, default=2) == [2]


def test_orthoplane_cancel_resumes_to_the_clean_result_and_leaves_no_temp(tmp_path, volume, tiny_model):
    token = CancelToken()
    seen = []

    def cancel_in_second_pass(p):
        seen.append(p.step)
        if p.step > volume.shape[0]:
            token.cancel()

    with pytest.raises(Cancelled):
        segment(
            volume,
            tiny_model,
            axes="zyx",
            out=tmp_path / "o.zarr",
            cancel=token,
            progress=cancel_in_second_pass,
            slab=2,
            **KW,
        )
    out = tmp_path / "o.zarr"
    assert not output_complete(out)
    assert (out / ".xrayseg-passes" / "p0").is_dir()  # the first pass's probabilities, kept for resume
    steps = []
    res = segment(
        volume, tiny_model, axes="zyx", out=out, resume=True, progress=lambda p: steps.append(p.step), slab=2, **KW
    )
    assert steps[0] > volume.shape[0]  # the first pass was not run again
    clean = segment(volume, tiny_model, axes="zyx", slab=2, out=tmp_path / "clean.zarr", **KW)
    np.testing.assert_array_equal(res, clean)
    assert output_complete(out) and not (out / ".xrayseg-passes").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.zarr", "o.zarr"]
