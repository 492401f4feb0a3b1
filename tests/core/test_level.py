"""normalize="slice": each slice along z levelled onto the volume's typical grey scale (core/level.py)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_xrayseg import InputError, ModelFileError, load_model, make_phantom, predict_slice, save_model, segment
from napari_xrayseg.core.level import LevelledView, level_hint, level_slices, slice_levels
from napari_xrayseg.core.models import LEVEL_FORMAT_VERSION, _validate_info
from napari_xrayseg.core.training import train

FAST = {"arch": "unet", "size": "tiny", "epochs": 1, "steps_per_epoch": 2, "patch": 32, "device": "cpu", "seed": 0}


@pytest.fixture(scope="module")
def stepped():
    """A hard phantom whose lower half was scanned with 0.8 times the gain and an offset (stitched heights)."""
    image, truth = make_phantom((16, 48, 48), seed=807, preset="hard")
    image = image.astype(np.float32)
    out = image.copy()
    out[8:] = image[8:] * 0.8 + 0.05
    return image, out, truth


def test_levels_undo_a_gain_and_offset_step(stepped):
    image, out, _ = stepped
    lv = slice_levels(out)
    levelled = out * lv[:, 0, None, None] + lv[:, 1, None, None]
    # each slice's 1st/99th percentiles are the typical ones: the two halves on one grey scale again
    q = np.percentile(levelled.reshape(16, -1), [1, 99], axis=1)
    assert np.ptp(q, axis=1) == pytest.approx([0, 0], abs=1e-4)
    # relative to the unstepped scan: the lower half's gain is 1/0.8 the upper half's
    ratio = np.median(lv[8:, 0]) / np.median(lv[:8, 0])
    assert ratio == pytest.approx(1 / 0.8, rel=0.05)
    honest = slice_levels(image)
    assert np.median(honest[:, 0]) == pytest.approx(1.0, abs=0.05)


def test_slices_without_a_full_range_take_the_nearest_sound_slices_levels(stepped):
    _, out, _ = stepped
    x = out.copy()
    x[0] = np.nan  # no data
    x[1] = 0.3  # constant
    x[15] = x[15] * 0.01 + 0.2  # mostly air above the sample: a narrow range, not stretched to the full one
    lv = slice_levels(x)
    assert np.array_equal(lv[0], lv[2]) and np.array_equal(lv[1], lv[2]) and np.array_equal(lv[15], lv[14])


def test_levelled_view_reads_like_the_levelled_array(stepped, tmp_path):
    _, out, _ = stepped
    z = zarr.open_array(str(tmp_path / "s.zarr"), mode="w", shape=out.shape, chunks=(4, 48, 48), dtype="f4")
    z[:] = out
    view = level_slices(z)
    assert isinstance(view, LevelledView) and view.shape == out.shape and view.dtype == np.float32
    lv = view.levels
    full = out * lv[:, 0, None, None].astype(np.float32) + lv[:, 1, None, None].astype(np.float32)
    for index in [
        5,
        (5,),
        (slice(2, 11), slice(3, 9)),
        (np.array([1, 9, 12]),),
        (Ellipsis,),
        (slice(None), 7),
        (slice(None), slice(None), 4),
    ]:
        np.testing.assert_allclose(view[index], full[index], rtol=1e-6, atol=1e-6, err_msg=str(index))
    assert level_slices(view) is view  # never levelled twice
    assert level_slices(z).levels is lv  # once per array: previews of one image do not read it again
    with pytest.raises(InputError, match="levels the slices of a volume along z"):
        slice_levels(out[0])


def test_a_model_trained_with_normalize_slice_levels_what_it_segments(stepped, tmp_path):
    _, out, truth = stepped
    ann = np.zeros_like(truth)
    ann[[3, 12]] = truth[[3, 12]]
    model = train(out, ann, normalize="slice", **FAST)
    assert model.info.normalization["level"] == "z" and model.info.format_version == LEVEL_FORMAT_VERSION
    assert model.info.train["normalize"] == "slice"
    path = save_model(model, tmp_path / "m.safetensors")
    back = load_model(path)
    assert back.info.normalization["level"] == "z"
    labels = segment(out, back, device="cpu")
    # the same labels as the volume levelled by hand, segmented by the model without its level record
    plain = copy.deepcopy(back)
    del plain.info.normalization["level"]
    assert np.array_equal(labels, segment(level_slices(out)[:], plain, device="cpu"))
    assert not np.array_equal(labels, segment(out, plain, device="cpu"))
    # previews level alike: the same as a preview of the volume levelled by hand
    np.testing.assert_array_equal(
        predict_slice(out, back, 10, device="cpu"), predict_slice(level_slices(out)[:], plain, 10, device="cpu")
    )
    # the annotation loop's ranking reads the volume levelled too: the same as ranking the levelled volume
    from napari_xrayseg import rank_slices

    ranked = rank_slices(out, back, ann, count=2, device="cpu")
    by_hand = rank_slices(level_slices(out)[:], plain, ann, count=2, device="cpu")
    assert ranked.suggested == by_hand.suggested
    np.testing.assert_allclose(ranked.uncertainty, by_hand.uncertainty, equal_nan=True)
    # fine-tuned with normalize="image", it levels no more
    again = train(
        out, ann, init=back, normalize="image", **{k: v for k, v in FAST.items() if k not in ("arch", "size")}
    )
    assert "level" not in again.info.normalization


def test_older_format_versions_and_other_levels_are_refused():
    from napari_xrayseg import init_model

    info = init_model("unet", size="tiny").info.to_dict()
    info["normalization"]["level"] = "z"
    with pytest.raises(ModelFileError, match="level='z': only 'z', from format_version 3"):
        _validate_info({**info, "format_version": 2}, Path("m.safetensors"))
    info["normalization"]["level"] = "y"
    with pytest.raises(ModelFileError, match="level='y'"):
        _validate_info({**info, "format_version": 3}, Path("m.safetensors"))
    info["normalization"]["level"] = "z"
    _validate_info({**info, "format_version": 3}, Path("m.safetensors"))


def test_normalize_slice_refuses_2d_and_channels():
    image = np.random.default_rng(0).random((8, 32, 32, 2)).astype(np.float32)
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[2, :16], labels[2, 16:] = 1, 2
    with pytest.raises(InputError, match="single-channel volumes"):
        train(image, labels, channel_axis=3, normalize="slice", **FAST)
    with pytest.raises(InputError, match="single-channel volumes"):
        train(image[..., 0], labels, two_d=True, normalize="slice", **FAST)


def test_training_says_when_slices_disagree_on_the_grey_scale(stepped, caplog):
    image, out, truth = stepped
    assert level_hint(image) is None
    hint = level_hint(out)
    assert hint is not None and "normalize='slice' (--normalize slice" in hint
    ann = np.zeros_like(truth)
    ann[[3, 12]] = truth[[3, 12]]
    fresh = out.copy()  # not an image trained on before: each image is looked at once (init="auto": not thrice)
    with caplog.at_level(logging.WARNING, logger="napari_xrayseg"):
        auto = {k: v for k, v in FAST.items() if k not in ("arch", "size")}
        train(fresh, ann, **auto, init="auto")
    assert caplog.text.count("the grey scale changes along z") == 1


def test_a_rare_phase_whose_amount_changes_along_z_is_no_grey_scale_change():
    """Its share moved the slices' 99th percentile alone (QA: a bright phase of 5.7 % of slice 0 and
    1.1 % of slice 17, the same grey everywhere, gave the hint); a gain step of the same volume still does."""
    rng = np.random.default_rng(3)
    z = np.arange(32)[:, None, None]
    phases = rng.integers(0, 3, (32, 64, 64)).repeat(2, 1).repeat(2, 2)[:, :96, :96]
    rare = rng.random((32, 96, 96)) < np.where(z < 16, 0.06, 0.003)  # a layer rich in it above one poor in it
    image = np.choose(phases, [0.1, 0.4, 0.6]).astype(np.float32)
    image[rare] = 0.95
    image += rng.normal(0, 0.03, image.shape).astype(np.float32)
    assert level_hint(image) is None
    assert level_hint(np.where(z >= 16, image * 0.8, image)) is not None


def test_a_volume_mostly_air_is_levelled_on_its_sample_slices_and_no_hint_is_given(stepped):
    """With most slices air above a sample, the air's range became 'typical': the sample was squashed onto it."""
    image = stepped[0]
    rng = np.random.default_rng(0)
    air = (0.02 * rng.standard_normal((20, *image.shape[1:])) + 0.05).astype(np.float32)
    vol = np.concatenate([image, air])  # 16 sample slices, 20 of air
    lv = slice_levels(vol)
    assert np.median(lv[:16, 0]) == pytest.approx(1.0, abs=0.1)  # the sample keeps its grey scale
    assert np.array_equal(lv[16:], np.repeat(lv[15:16], 20, axis=0))  # the air takes its nearest sample slice's
    assert level_hint(vol) is None


def test_previews_of_a_dask_image_with_nodata_level_it_once(stepped, monkeypatch):
    """Each preview wraps the layer's dask data in a new nodata view: every one re-read the whole volume."""
    import dask.array as da

    from napari_xrayseg.core import level
    from napari_xrayseg.core.normalize import mark_missing

    calls = []
    real = level._levels
    monkeypatch.setattr(level, "_levels", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = da.from_array(stepped[1], chunks=(4, 48, 48))
    first = level_slices(mark_missing(data, 0.0))
    for _ in range(3):
        assert np.array_equal(level_slices(mark_missing(data, 0.0)).levels, first.levels)
    assert len(calls) == 1


def test_train_takes_a_torch_tensor_or_a_path_with_either_normalize(stepped, tmp_path):
    """The grey-scale hint ran on the raw input: train(torch_tensor, labels) crashed with the defaults."""
    import torch

    from napari_xrayseg.core.io import write_volume

    _, out, truth = stepped
    ann = np.zeros_like(truth)
    ann[[3, 12]] = truth[[3, 12]]
    assert train(torch.from_numpy(out), ann, **FAST).info.classes == [1, 2, 3]
    assert train(torch.from_numpy(out), ann, normalize="slice", **FAST).info.normalization["level"] == "z"
    write_volume(tmp_path / "v.zarr", out)
    assert train(str(tmp_path / "v.zarr"), ann, normalize="slice", **FAST).info.normalization["level"] == "z"


def test_a_round_of_the_annotation_loop_keeps_the_levelling(stepped):
    """The Annotate widget's rounds continue the first training's settings: normalize='slice' among them."""
    from napari_xrayseg import continue_training

    _, out, truth = stepped
    ann = np.zeros_like(truth)
    ann[[3, 12]] = truth[[3, 12]]
    first = train(out, ann, normalize="slice", **FAST)
    ann[7] = truth[7]
    again = continue_training(out, ann, first, epochs=1, device="cpu")
    assert again.info.normalization["level"] == "z" and again.info.train["normalize"] == "slice"
