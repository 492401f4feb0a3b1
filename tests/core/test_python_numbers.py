"""NumPy scalars as options (``np.argmin(img.shape)``, ``truth.max()``): taken as the numbers they hold."""

from __future__ import annotations

import inspect

import numpy as np

from napari_xrayseg import evaluate, init_model, iter_segment, iter_train, make_phantom, predict_slice, segment, train


def test_numpy_scalars_are_taken_as_numbers():
    image, truth = make_phantom((np.int64(6), 48, 48), seed=np.int64(3))
    model = init_model("unet", size="tiny", classes=truth.max(), context=np.int64(3), tile=np.int64(32))
    assert model.info.classes == [1, 2, 3] and model.info.context == 3
    ref = segment(image, model, axis=1, tile=32, batch=4, overlap=0.25, device="cpu")
    got = segment(
        image, model, axis=np.int64(1), tile=np.int64(32), batch=np.int32(4), overlap=np.float32(0.25), device="cpu"
    )
    np.testing.assert_array_equal(got, ref)  # before: "axis 1 is out of range for a 3D volume: use 0..2"
    r = evaluate(got, truth, axis=np.int64(2), classes=[np.uint8(1), np.uint8(2), np.uint8(3)])
    assert r.axis == 2 and r.classes == (1, 2, 3)
    assert predict_slice(image, model, axis=0, index=np.int64(2), device="cpu").shape == (48, 48)
    ann = np.zeros_like(truth)
    ann[[1, 4]] = truth[[1, 4]]
    n = {"epochs": np.int64(1), "steps_per_epoch": np.int64(2), "batch": np.int64(2), "patch": np.int64(32)}
    m = train(image, ann, arch="unet", size="tiny", minutes=np.float64(1.0), seed=np.int64(0), device="cpu", **n)
    assert m.info.train["epochs"] == 1 and type(m.info.train["seed"]) is int


def test_the_generator_forms_stay_generator_functions():
    # napari's workers run a generator function as a GeneratorWorker (progress, cancel), anything else blocking
    assert inspect.isgeneratorfunction(iter_segment) and inspect.isgeneratorfunction(iter_train)
    assert "axis" in inspect.signature(train).parameters  # help() and tab completion still see the options


def test_axis_letters_and_a_bare_network_as_the_model():
    import pytest

    from napari_xrayseg.core.errors import InputError

    image, truth = make_phantom((6, 40, 40), seed=3)
    model = init_model("unet", size="tiny", classes=3, tile=32)
    # "axis 'y' is out of range for a 3D volume: use 0..2" before, though axes="zyx" took letters
    np.testing.assert_array_equal(
        segment(image, model, axis="y", device="cpu"), segment(image, model, axis=1, device="cpu")
    )
    assert evaluate(truth, truth, axis="x").axis == 2
    with pytest.raises(InputError) as e:
        segment(image, model.network, device="cpu")  # its repr was the whole network, 44 lines
    assert "bare torch network (UNet" in str(e.value) and len(str(e.value).splitlines()) == 1
