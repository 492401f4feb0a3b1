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
    # the early passes' probabilities are kept as float16 (in a store, and in memory as a store keeps them, so
    # that a run with an output and one without agree): 2^-11 relative at most per pass
    np.testing.assert_allclose(conf, mean.max(0), rtol=1e-3)
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
    # tta=True on a 2D network: the mean over the slice, it turned by 180 degrees, flipped
    # along its diagonal (transposed) and along its anti-diagonal, each mapped back
    ref = _probs_along(volume, tiny_model, 0)
    turned = np.flip(_probs_along(np.flip(volume, (1, 2)).copy(), tiny_model, 0), (2, 3))
    transposed = np.swapaxes(_probs_along(np.swapaxes(volume, 1, 2).copy(), tiny_model, 0), 2, 3)
    anti_in = np.flip(np.swapaxes(volume, 1, 2), (1, 2)).copy()
    anti = np.flip(np.swapaxes(_probs_along(anti_in, tiny_model, 0), 2, 3), (2, 3))
    mean = (ref + turned + transposed + anti) / 4
    lt, ct = segment(volume, tiny_model, confidence="maxprob", tta=True, **KW)
    np.testing.assert_allclose(ct, mean.max(0), rtol=1e-4, atol=1e-5)
    _assert_labels_match(lt, mean, tiny_model.info.classes)
    l2, c2 = segment(volume, tiny_model, confidence="maxprob", tta=2, **KW)  # the first two views
    np.testing.assert_allclose(c2, ((ref + anti) / 2).max(0), rtol=1e-4, atol=1e-5)


def _view_scores(self, slices):
    """An analytic 'network' that is not symmetric: class 0 = 3 x the centre slice's value, class 1 =
    the column / 10, class 2 = the row / 7 + 0.05 (in the coordinates of the slices it is given)."""
    centre = slices if slices.ndim == 3 else slices[:, slices.shape[1] // 2]
    n, h, w = centre.shape
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(n, h, w)
    cols = torch.arange(w, dtype=torch.float32)[None, :].expand(n, h, w)
    return torch.stack([3 * torch.from_numpy(np.array(centre, np.float32)), cols / 10, rows / 7 + 0.05], 1)


@pytest.mark.parametrize(
    "arch, context, views", [("unet", 1, 8), ("unet3d", 5, 2), ("unet3d", 5, 16), ("unet3d", 1, 16)]
)
def test_tta_maps_every_view_back(monkeypatch, arch, context, views):
    """Each view (slices reversed, transposed, flipped) is mapped back to the voxel it came from."""
    from napari_xrayseg.core.models import init_model
    from napari_xrayseg.core.normalize import apply_normalization
    from napari_xrayseg.core.plan import resolved_normalization
    from napari_xrayseg.core.predictor import tta_views

    m = init_model(arch, size="tiny", classes=3, context=context, seed=0)
    monkeypatch.setattr(SlicePredictor, "scores", _view_scores)
    vol = np.random.default_rng(3).random((7, 9, 11), dtype=np.float32)
    labels, conf = segment(vol, m, confidence="maxprob", tta=views, device="cpu")
    x = apply_normalization(vol, resolved_normalization(m.info.normalization, vol))
    h, w = vol.shape[1:]
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    total = 0
    used = tta_views(views, volumetric=arch == "unet3d" and context > 1)  # no slices to reverse without context
    assert len(used) == min(views, 16 if context > 1 else 8) and len(set(used)) == len(used)
    for view in used:
        r, c, hh, ww = (cc, rr, w, h) if "t" in view else (rr, cc, h, w)
        r = hh - 1 - r if "y" in view else r
        c = ww - 1 - c if "x" in view else c
        s = np.stack([3 * x, np.broadcast_to(c / 10, x.shape), np.broadcast_to(r / 7 + 0.05, x.shape)])
        e = np.exp(s - s.max(0))
        total = total + e / e.sum(0)
    mean = total / len(used)
    np.testing.assert_allclose(conf, mean.max(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(labels, mean.argmax(0) + 1)


def test_tta_views_and_bad_values(tiny_model):
    from napari_xrayseg.core.predictor import TTA_ORDER, check_tta, tta_meta, tta_views

    assert len(set(TTA_ORDER)) == 16 and TTA_ORDER[0] == ""
    assert tta_views(False) == tta_views(0) == tta_views(1) == ("",)
    assert len(tta_views(True)) == 4 and tta_views(16) == TTA_ORDER
    flat = tta_views(16, volumetric=False)  # a 2D network: the 8 turns and flips of a square
    assert len(flat) == 8 and not any("z" in v for v in flat)
    assert tta_meta(False) is False and tta_meta(1) is False and tta_meta(True) == 4 and tta_meta(8) == 8
    for bad in (17, -1, 2.5, "4"):
        with pytest.raises(InputError, match="number of views from 1 to 16"):
            check_tta(bad)
    with pytest.raises(InputError, match="tta 17"):
        segment(np.zeros((3, 32, 32), np.float32), tiny_model, tta=17, **KW)


def test_tta_views_are_recorded_and_resume_needs_the_same(tmp_path, tiny_model):
    vol = np.random.default_rng(2).random((4, 32, 32), dtype=np.float32)
    out = tmp_path / "o.zarr"
    segment(vol, tiny_model, tta=2, out=out, **KW)
    assert zarr.open_array(store=str(out)).attrs["napari_xrayseg"]["tta"] == 2
    with pytest.raises(InputError, match=r"different test-time views \(tta\)"):
        segment(vol, tiny_model, tta=True, out=out, resume=True, **KW)
    segment(vol, tiny_model, out=tmp_path / "plain.zarr", **KW)  # none recorded as before: false
    assert zarr.open_array(store=str(tmp_path / "plain.zarr")).attrs["napari_xrayseg"]["tta"] is False


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
    with pytest.raises(InputError, match="confidence_out and out are the same path"):  # it said "another run"
        segment(vol, tiny_model, confidence="maxprob", out="c.zarr", confidence_out="./c.zarr", **KW)


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
