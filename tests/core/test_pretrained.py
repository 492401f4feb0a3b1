"""The pretrained start shipped with the package, matching classes by grey level, and training precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_xrayseg.core.device import cpu_has_bf16
from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.models import PRETRAINED, init_model, load_model, pretrained_path, reclass
from napari_xrayseg.core.sample import GREY_LEVELS, make_phantom
from napari_xrayseg.core.training import PRETRAINED_EPOCHS, train

TINY = dict(epochs=1, steps_per_epoch=2, batch=2, patch=32, device="cpu")


@pytest.fixture(scope="module")
def volume():
    image, truth = make_phantom((18, 48, 48), seed=5)
    ann = np.zeros_like(truth)
    ann[[5, 12]] = truth[[5, 12]]
    return image, truth, ann


def test_the_shipped_start_loads_and_records_its_class_grey_levels():
    m = load_model(pretrained_path())
    assert (m.info.arch, m.info.context, m.info.channels, m.info.classes) == ("unet3d", 15, 1, [1, 2, 3])
    assert m.info.trained  # a history: it was trained, not initialised
    grey = m.info.train["class_grey"]
    # pore < YSZ < nickel, as the sample's phases are
    assert np.argsort(grey).tolist() == np.argsort([GREY_LEVELS[c] for c in (1, 2, 3)]).tolist()


def test_reclass_reorders_the_outputs_by_grey_rank():
    m = init_model("unet3d", classes=[1, 2, 3], context=3, seed=1)
    m.info.train["class_grey"] = [0.1, 0.8, 0.5]
    # the user's class 4 is the brightest (the model's 2), 7 the darkest (1), 9 between (3)
    r = reclass(m, [4, 7, 9], [0.9, 0.2, 0.6])
    assert r.info.classes == [4, 7, 9] and r.info.history == [] and r.info.train == {}
    m.network.eval()
    r.network.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = m.network(x), r.network(x)
    torch.testing.assert_close(b, a[:, [1, 0, 2]])
    assert m.info.classes == [1, 2, 3]  # the model given is not modified


def test_reclass_with_another_class_count_keeps_all_but_the_last_block():
    m = init_model("unet", size="tiny", classes=[1, 2, 3], seed=1)
    m.info.train["class_grey"] = [0.1, 0.8, 0.5]
    r = reclass(m, [1, 2], [0.3, 0.7])
    assert r.info.classes == [1, 2] and r.info.params["out_channels"] == 2
    old, new = m.network.state_dict(), r.network.state_dict()
    kept = [k for k in old if old[k].shape == new[k].shape and torch.equal(old[k], new[k])]
    assert len(kept) > 0.8 * len(old)  # everything but the head
    assert any(old[k].shape != new[k].shape for k in old)


def test_reclass_needs_the_models_grey_levels():
    m = init_model("unet", size="tiny", classes=[1, 2, 3])
    with pytest.raises(InputError, match="class_grey"):
        reclass(m, [1, 2, 3], [0.1, 0.2, 0.3])


def test_training_from_the_pretrained_start_matches_classes_by_grey(volume):
    image, truth, ann = volume
    # relabel: the user's 1 is nickel, 2 pore, 3 YSZ -- other values than the sample's, other order
    user = np.zeros_like(ann)
    user[ann == 2], user[ann == 1], user[ann == 3] = 1, 2, 3
    m = train(image, user, init=PRETRAINED, **TINY)
    assert m.info.arch == "unet3d" and m.info.classes == [1, 2, 3] and m.info.train["init"] == "pretrained"
    # even before learning much, the start segments the user's classes by their own values
    m0 = train(image, user, init=PRETRAINED, epochs=1, steps_per_epoch=1, batch=1, patch=32, lr=1e-9, device="cpu")
    from napari_xrayseg.core.inference import segment
    from napari_xrayseg.core.metrics import evaluate

    truth_user = np.zeros_like(truth)
    truth_user[truth == 2], truth_user[truth == 1], truth_user[truth == 3] = 1, 2, 3
    assert evaluate(segment(image, m0, device="cpu"), truth_user).mean_dice > 0.8


def test_pretrained_start_with_two_classes_and_clear_refusals(volume):
    image, _, ann = volume
    two = np.where(ann == 3, 2, ann)
    assert train(image, two, init=PRETRAINED, **TINY).info.params["out_channels"] == 2
    with pytest.raises(InputError, match="context"):
        train(image, ann, init=PRETRAINED, context=3, **TINY)
    with pytest.raises(InputError, match="single-channel"):
        train(np.stack([image, image], -1), ann, init=PRETRAINED, channel_axis=-1, **TINY)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_precision_is_recorded_and_the_weights_stay_fp32(volume, precision):
    image, _, ann = volume
    m = train(image, ann, arch="unet", size="tiny", precision=precision, **TINY)
    assert m.info.train["precision"] == precision
    assert all(p.dtype == torch.float32 for p in m.network.parameters())


def test_training_precision_auto_and_refusals(volume):
    image, _, ann = volume
    m = train(image, ann, arch="unet", size="tiny", **TINY)
    assert m.info.train["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    gan = train(image, ann, arch="unet", size="tiny", mode="pix2pix", **TINY)
    assert gan.info.train["precision"] == "fp32"  # pix2pix stays fp32 on CPU
    with pytest.raises(InputError, match="fp16"):
        train(image, ann, arch="unet", size="tiny", precision="fp16", **TINY)
    with pytest.raises(InputError, match="precision"):
        train(image, ann, arch="unet", size="tiny", precision="half", **TINY)


def test_the_pretrained_start_fine_tunes_for_a_few_epochs_unless_told(volume):
    image, _, ann = volume
    short = dict(steps_per_epoch=1, batch=1, patch=32, device="cpu")
    assert len(train(image, ann, init=PRETRAINED, **short).info.history) == PRETRAINED_EPOCHS
    assert len(train(image, ann, init=PRETRAINED, minutes=30, **short).info.history) == PRETRAINED_EPOCHS
    assert len(train(image, ann, init=PRETRAINED, epochs=2, **short).info.history) == 2
