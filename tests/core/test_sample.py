"""Tests of napari_xrayseg.core.sample: determinism, shapes, fractions, grey levels, errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.sample import PHASES, make_phantom

SHAPE = (8, 64, 64)
PORE, NI, YSZ = 1, 2, 3


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SHAPE, seed=3)


def _best_threshold_error(image, truth, low, high):
    """Smallest share of (low, high) voxels misclassified by one global threshold."""
    mask = (truth == low) | (truth == high)
    values, is_high = image[mask], truth[mask] == high
    thresholds = np.quantile(values, np.linspace(0.01, 0.99, 197))
    return min(float(np.mean((values > t) != is_high)) for t in thresholds)


def test_phases_constant():
    assert PHASES == {1: "pore", 2: "nickel", 3: "YSZ"}


def test_shapes_and_dtypes(phantom):
    image, truth = phantom
    assert image.shape == truth.shape == SHAPE
    assert image.dtype == np.float32
    assert truth.dtype == np.uint8
    assert np.all(np.isfinite(image))
    assert set(np.unique(truth).tolist()) == {1, 2, 3}
    # roughly in [0, 1], not clipped hard
    assert -0.5 < np.percentile(image, 1) < 0.3
    assert 0.7 < np.percentile(image, 99) < 1.5


@pytest.mark.parametrize("artefacts", [True, False])
def test_2d_shape(artefacts):
    image, truth = make_phantom((48, 40), seed=1, artefacts=artefacts)
    assert image.shape == truth.shape == (48, 40)
    assert image.dtype == np.float32 and truth.dtype == np.uint8
    assert set(np.unique(truth).tolist()) == {1, 2, 3}


@pytest.mark.parametrize("artefacts", [True, False])
def test_deterministic(artefacts):
    a_img, a_truth = make_phantom(SHAPE, seed=7, artefacts=artefacts)
    b_img, b_truth = make_phantom(SHAPE, seed=7, artefacts=artefacts)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_truth, b_truth)


def test_seed_changes_output(phantom):
    image, truth = phantom
    other_image, other_truth = make_phantom(SHAPE, seed=4)
    assert np.mean(truth != other_truth) > 0.2
    assert not np.allclose(image, other_image)


@pytest.mark.parametrize("fractions", [(0.3, 0.3, 0.4), (0.2, 0.5, 0.3), (0.45, 0.25, 0.3)])
def test_fractions(fractions):
    _, truth = make_phantom(SHAPE, seed=0, fractions=fractions, artefacts=False)
    measured = np.bincount(truth.ravel(), minlength=4)[1:] / truth.size
    np.testing.assert_allclose(measured, fractions, atol=0.1)


def test_zero_fraction_phase_is_absent():
    _, truth = make_phantom((4, 32, 32), fractions=(0.0, 0.5, 0.5))
    assert set(np.unique(truth).tolist()) == {2, 3}


def test_grey_levels_ordered(phantom):
    image, truth = phantom
    means = {k: float(image[truth == k].mean()) for k in (PORE, NI, YSZ)}
    assert means[PORE] < means[YSZ] < means[NI]
    assert means[NI] - means[YSZ] > 0.05


def test_thresholding_is_imperfect(phantom):
    image, truth = phantom
    # Ni vs YSZ overlap clearly: the best single threshold still misclassifies > 3 %
    err = _best_threshold_error(image, truth, YSZ, NI)
    assert 0.03 < err < 0.35
    # the phases are still distinguishable: the threshold beats guessing by far
    assert _best_threshold_error(image, truth, PORE, YSZ) < 0.2


def test_thresholding_is_imperfect_without_artefacts():
    image, truth = make_phantom(SHAPE, seed=3, artefacts=False)
    assert 0.03 < _best_threshold_error(image, truth, YSZ, NI) < 0.35


def test_noise_scales_residual():
    quiet, truth = make_phantom(SHAPE, seed=2, noise=0.0)
    loud, _ = make_phantom(SHAPE, seed=2, noise=2.0)
    inside = truth == YSZ
    assert loud[inside].std() > 1.2 * quiet[inside].std()


def test_artefacts_change_image():
    clean, truth = make_phantom(SHAPE, seed=5, artefacts=False, noise=0.0)
    tomo, truth2 = make_phantom(SHAPE, seed=5, artefacts=True, noise=0.0)
    np.testing.assert_array_equal(truth, truth2)
    diff = tomo - clean
    assert 0.005 < float(np.abs(diff).mean()) < 0.15
    # drift along Z: slice means differ by a few percent
    assert abs(float(tomo[0].mean() - tomo[-1].mean())) > 0.002


def test_few_angles_add_streaks():
    many, truth = make_phantom((2, 64, 64), seed=1, noise=0.0)
    few, _ = make_phantom((2, 64, 64), seed=1, noise=0.0, n_angles=12)
    clean, _ = make_phantom((2, 64, 64), seed=1, noise=0.0, artefacts=False)
    assert np.abs(few - clean).mean() > 1.5 * np.abs(many - clean).mean()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (0, 32, 32)}, r"shape must be positive, got \(0, 32, 32\)"),
        ({"shape": (8, -1, 32)}, r"shape must be positive"),
        ({"shape": (2, 3)}, r"slices of 2x3 pixels are too small for the sample: pass 4 or more a side"),  # QA s45
        ({"shape": (8, 32, 3)}, r"slices of 32x3 pixels are too small"),
        ({"shape": (32,)}, r"shape must have 2 or 3 dimensions, got 1"),
        ({"shape": (2, 2, 32, 32)}, r"shape must have 2 or 3 dimensions, got 4"),
        ({"shape": (8, 32.5, 32)}, r"shape must be a tuple of integers"),
        ({"shape": 32}, r"shape must be a tuple of integers, got 32"),
        ({"fractions": (0.5, 0.5, 0.5)}, r"fractions must sum to 1, got \(0.5, 0.5, 0.5\)"),
        ({"fractions": (0.5, 0.5)}, r"fractions must have 3 values, got 2"),
        ({"fractions": (-0.2, 0.6, 0.6)}, r"fractions must each be in \[0, 1\]"),
        ({"noise": -0.5}, r"noise must be >= 0, got -0.5"),
        ({"noise": float("nan")}, r"noise must be >= 0, got nan"),
        ({"feature_size": 0}, r"feature_size must be > 0, got 0"),
        ({"feature_size": -2.0}, r"feature_size must be > 0, got -2.0"),
        ({"n_angles": 0}, r"n_angles must be >= 1, got 0"),
        ({"n_angles": 1.5}, r"n_angles must be an integer"),
        ({"blur": -1}, r"blur must be >= 0, got -1"),
        ({"misalignment": float("inf")}, r"misalignment must be >= 0, got inf"),
        ({"offset": float("nan")}, r"offset must be a finite number, got nan"),
    ],
)
def test_bad_arguments(kwargs, match):
    kw = {"shape": (4, 16, 16), **kwargs}
    with pytest.raises(InputError, match=match) as info:
        make_phantom(kw.pop("shape"), **kw)
    message = str(info.value)
    assert "\n" not in message
    assert "pass " in message  # names the fix


def test_presets_are_named_settings_and_explicit_arguments_win():
    from napari_xrayseg.core.sample import PRESETS

    assert {"default", "hard", "hard-blur", "hard-transfer"} <= set(PRESETS)
    assert PRESETS["hard-blur"] == {**PRESETS["hard"], "noise": 0.5, "blur": 1.25}
    hard, truth = make_phantom((4, 48, 48), seed=2, preset="hard")
    same, _ = make_phantom(
        (4, 48, 48), seed=2, **{k: v for k, v in PRESETS["hard"].items() if k != "n_angles_fraction"}, n_angles=24
    )
    np.testing.assert_array_equal(hard, same)  # the preset is exactly its settings (24 = 48 x 0.5 angles)
    quieter, truth2 = make_phantom((4, 48, 48), seed=2, preset="hard", noise=0.0)
    np.testing.assert_array_equal(truth, truth2)
    assert np.abs(quieter - hard).mean() > 0.01
    with pytest.raises(InputError, match=r"unknown preset 'nope': choose one of"):
        make_phantom((4, 16, 16), preset="nope")


def test_hard_preset_is_harder_and_transfer_is_offset():
    default, truth = make_phantom((8, 64, 64), seed=5)
    hard, htruth = make_phantom((8, 64, 64), seed=5, preset="hard")
    other, otruth = make_phantom((8, 64, 64), seed=5, preset="hard-transfer")
    # smaller particles: more voxels touch an interface
    from napari_xrayseg.core.metrics import interface_errors

    def share(t):
        return interface_errors(t, t)["0"]["voxels"] / t.size

    assert share(htruth) > 1.2 * share(truth) and share(otruth) > share(htruth)
    # noisier and blurrier: one threshold separates pore from YSZ worse
    assert _best_threshold_error(hard, htruth, PORE, YSZ) > _best_threshold_error(default, truth, PORE, YSZ)
    # the second scan's calibration is offset
    assert float(other[otruth == PORE].mean()) > float(hard[htruth == PORE].mean()) + 0.03


def test_misalignment_blurs_and_default_volume_unchanged():
    a, _ = make_phantom((2, 48, 48), seed=1, noise=0.0)
    b, _ = make_phantom((2, 48, 48), seed=1, noise=0.0, misalignment=0.0, blur=0.9, offset=0.0)
    np.testing.assert_array_equal(a, b)  # the new options default to the old volume
    c, _ = make_phantom((2, 48, 48), seed=1, noise=0.0, misalignment=1.0)
    assert np.abs(c - a).mean() > 0.005


def test_hard_layered_preset_has_one_layer_where_the_seed_puts_it():
    """The layer: a fifth of the depth, coarser and nickel-rich, blended in over a feature size
    on each side (no abrupt face); the rest is the hard preset's volume."""
    shape = (40, 48, 48)
    starts = []
    for seed in (0, 3):
        img, truth = make_phantom(shape, seed=seed, preset="hard-layered")
        _, plain = make_phantom(shape, seed=seed, preset="hard")
        changed = np.flatnonzero((truth != plain).any(axis=(1, 2)))
        # 8 slices (0.2 x 40) plus a transition of about 2.8 slices (the feature size) each side
        assert changed.size and np.array_equal(changed, np.arange(changed[0], changed[0] + changed.size))
        assert 8 + 2 * 2 <= changed.size <= 8 + 2 * 4
        core = truth[changed[3] : changed[-1] - 2]
        outside = np.delete(truth, changed, axis=0)
        assert (core == 2).mean() > 0.45 > 0.35 > (outside == 2).mean()  # nickel-rich
        # particles run through the faces: no pair of neighbouring slices differs much more
        # than neighbouring slices elsewhere (an abrupt face changes about 60 % of the voxels)
        step = (truth[1:] != truth[:-1]).mean(axis=(1, 2))
        assert step.max() < 2 * np.median(step)
        assert img.shape == shape and img.dtype == np.float32
        starts.append(int(changed[0]))
    assert starts[0] != starts[1]


def test_hard_thin_layer_preset_is_half_as_deep():
    """``hard-thin-layer``: the same layer at a tenth of the depth, still nickel-rich at its centre
    and blended in (no abrupt face), elsewhere the hard preset's volume."""
    shape = (60, 40, 40)
    img, truth = make_phantom(shape, seed=2, preset="hard-thin-layer")
    _, plain = make_phantom(shape, seed=2, preset="hard")
    changed = np.flatnonzero((truth != plain).any(axis=(1, 2)))
    # 6 slices (0.1 x 60) plus a transition of about 2.8 slices each side
    assert np.array_equal(changed, np.arange(changed[0], changed[0] + changed.size))
    assert 6 + 2 * 2 <= changed.size <= 6 + 2 * 4
    nickel = (truth[changed] == 2).mean(axis=(1, 2))
    assert nickel.max() > 0.45 > 0.35 > (np.delete(truth, changed, axis=0) == 2).mean()
    step = (truth[1:] != truth[:-1]).mean(axis=(1, 2))
    assert step.max() < 2 * np.median(step)
    assert img.shape == shape and img.dtype == np.float32


def test_hard_infiltrated_preset_raises_the_pore_grey_in_a_band_only():
    """``hard-infiltrated``: the hard preset's phases everywhere; in a band of a tenth of the depth
    (blended in) the pores are filled (grey between empty pore and YSZ), elsewhere the same image."""
    shape = (60, 48, 48)
    img, truth = make_phantom(shape, seed=4, preset="hard-infiltrated")
    plain_img, plain = make_phantom(shape, seed=4, preset="hard")
    assert np.array_equal(truth, plain)  # the microstructure is the hard preset's
    changed = np.flatnonzero(np.abs(img - plain_img).mean(axis=(1, 2)) > 0.005)
    # the grey change spreads a slice or two by blur, but stays a band (elsewhere: the same to 0.005;
    # the simulated reconstruction's global scaling moves every slice a little)
    assert 6 <= changed.size <= 6 + 2 * 6 and np.array_equal(changed, np.arange(changed[0], changed[-1] + 1))
    mid = changed[changed.size // 2]
    pore = lambda im, z: float(im[z][truth[z] == 1].mean())  # noqa: E731
    ysz = lambda im, z: float(im[z][truth[z] == 3].mean())  # noqa: E731
    assert pore(plain_img, mid) + 0.1 < pore(img, mid) < ysz(img, mid)  # filled pores: brighter, still below YSZ
    assert abs(ysz(img, mid) - ysz(plain_img, mid)) < 0.03  # the solid phases barely move
    far = (mid + 30) % 60
    assert np.abs(img[far] - plain_img[far]).mean() < 0.002
