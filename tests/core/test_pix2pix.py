"""Pix2Pix (conditional GAN) training mode: same loop, same model file, same inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faults import NthCheck
from napari_xrayseg.cli import main
from napari_xrayseg.core.errors import Cancelled, InputError
from napari_xrayseg.core.inference import segment
from napari_xrayseg.core.models import init_model, load_model, read_model_info, save_model
from napari_xrayseg.core.sample import make_phantom
from napari_xrayseg.core.training import (
    MODES,
    _discriminator_layers,
    _Pix2PixStep,
    iter_train,
    make_loss,
    train,
)

FAST = dict(size="tiny", epochs=2, steps_per_epoch=2, batch=2, patch=32, device="cpu", mode="pix2pix")


@pytest.fixture(scope="module")
def phantom():
    image, truth = make_phantom((6, 48, 48), seed=11, artefacts=False)
    sparse = np.zeros_like(truth)
    sparse[[1, 4]] = truth[[1, 4]]
    return image, sparse


def test_pix2pix_trains_and_predicts_through_segment(phantom, tmp_path):
    image, sparse = phantom
    m = train(image, sparse, context=3, out=tmp_path / "g.safetensors", **FAST)
    t = m.info.train
    assert t["mode"] == "pix2pix" and t["pixel_weight"] == 100.0 and t["adversarial"] == "lsgan"
    assert t["discriminator"]["layers"] == 2  # 32-pixel patches: a smaller PatchGAN
    assert len(m.info.history) == 2 and t["best_epoch"] in (1, 2)
    for rec in m.info.history:
        assert {"loss", "loss_adv", "loss_d", "val_dice"} <= set(rec)
        assert all(np.isfinite(rec[k]) for k in ("loss", "loss_adv", "loss_d"))
    # only the generator is saved: an ordinary model of the chosen architecture
    loaded = load_model(tmp_path / "g.safetensors")
    assert loaded.info.train["mode"] == "pix2pix" and loaded.info.arch == "unet" and loaded.info.context == 3
    assert set(loaded.network.state_dict()) == set(init_model("unet", size="tiny", context=3).network.state_dict())
    a, b = segment(image, m, device="cpu"), segment(image, loaded, device="cpu")
    np.testing.assert_array_equal(a, b)
    assert a.shape == image.shape and set(np.unique(a)) <= {1, 2, 3}


def test_pix2pix_with_another_arch_and_deterministic(phantom):
    image, sparse = phantom
    kw = dict(FAST, arch="segresnet", epochs=1, context=1)
    a, b = train(image, sparse, **kw), train(image, sparse, **kw)
    assert a.info.arch == "segresnet" and a.info.train["mode"] == "pix2pix"
    assert a.info.history[0]["loss"] == b.info.history[0]["loss"]
    assert a.info.history[0]["loss_d"] == b.info.history[0]["loss_d"]


def test_unannotated_pixels_get_no_gradient_from_either_loss():
    # a "generator" whose output is a free parameter: after one pix2pix step its gradient
    # is zero wherever the target is not annotated, from the adversarial loss too
    class Free(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.logits = torch.nn.Parameter(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))

        def forward(self, x):
            return self.logits + 0 * x.sum()

    net = Free()
    y = torch.full((2, 32, 32), -1, dtype=torch.int64)
    y[:, 4:20, 6:22] = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    for weight in (10.0, 1e-9):  # 1e-9: (almost) only the adversarial loss
        step = _Pix2PixStep(
            net,
            make_loss("dicece"),
            1e-3,
            torch.device("cpu"),
            in_channels=1,
            n_classes=3,
            patch=32,
            pixel_weight=weight,
            seed=0,
        )
        step.train()
        out = step(torch.rand(2, 1, 32, 32), y)
        assert set(out) == {"loss", "loss_adv", "loss_d"}
        g = net.logits.grad  # the generator's gradient of its last step (D's step sees it detached)
        outside = (y == -1)[:, None].expand_as(g)
        assert torch.all(g[outside] == 0)
        assert torch.any(g[~outside] != 0)


def test_discriminator_layers_fit_the_patch():
    assert [_discriminator_layers(p) for p in (8, 16, 32, 64, 128)] == [1, 2, 2, 3, 3]
    from napari_xrayseg.core.training import _patch_discriminator

    for p in (8, 16, 32, 64):
        d = _patch_discriminator(4, p).eval()
        with torch.inference_mode():
            assert min(d(torch.rand(1, 4, p, p))[-1].shape[-2:]) >= 1


def test_pix2pix_cancel_budget_and_out_as_in_supervised(phantom, tmp_path):
    image, sparse = phantom
    out = tmp_path / "old.safetensors"
    save_model(init_model("unet", size="tiny", classes=[1, 2, 3]), out)
    before = out.read_bytes()
    # checks: 1 label slab + 2 image slices, then per epoch 2 steps + 1 validation batch
    with pytest.raises(Cancelled) as info:
        train(image, sparse, out=out, overwrite=True, cancel=NthCheck(3 + 3 + 2), context=1, **dict(FAST, epochs=5))
    assert "after 1 epoch" in str(info.value)
    assert info.value.result is not None and info.value.result.info.train["mode"] == "pix2pix"
    assert out.read_bytes() == before  # `out` is written only on completion
    m = train(image, sparse, context=1, **dict(FAST, epochs=1000, minutes=1e-4))
    assert m.info.train["stopped"] == "time" and m.info.train["epochs_run"] == 1
    gen = iter_train(image, sparse, context=1, **FAST)
    assert next(gen).info == {"epoch": 1, "batch": 1}
    gen.close()


def test_mode_validation(phantom):
    image, sparse = phantom
    assert MODES == ("supervised", "pix2pix")
    with pytest.raises(InputError, match="unknown training mode 'gan'"):
        train(image, sparse, **dict(FAST, mode="gan"))
    with pytest.raises(InputError, match="pixel_weight"):
        train(image, sparse, pixel_weight=0, **FAST)


def test_cli_train_mode_pix2pix(phantom, tmp_path, capsys):
    image, sparse = phantom
    np.save(tmp_path / "img.npy", image)
    np.save(tmp_path / "lab.npy", sparse)
    code = main(
        [
            "train",
            "--image",
            str(tmp_path / "img.npy"),
            "--labels",
            str(tmp_path / "lab.npy"),
            "--out",
            str(tmp_path / "p2p"),
            "--mode",
            "pix2pix",
            "--pixel-weight",
            "20",
            "--arch",
            "attentionunet",
            "--size",
            "tiny",
            "--epochs",
            "1",
            "--steps",
            "2",
            "--batch",
            "2",
            "--patch",
            "32",
            "--context",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "attentionunet (tiny, pix2pix)" in capsys.readouterr().out
    info = read_model_info(tmp_path / "p2p.safetensors")
    assert info.arch == "attentionunet" and info.train["mode"] == "pix2pix" and info.train["pixel_weight"] == 20.0


def test_pix2pix_under_mixed_precision(phantom):
    # autocast's path ran the discriminator's list of feature maps through .float(): an AttributeError at the
    # first step, on every GPU with the default precision="auto" (bf16 or fp16 there)
    image, sparse = phantom
    m = train(image, sparse, **dict(FAST, arch="unet", epochs=1, precision="bf16"))
    assert np.isfinite(m.info.history[0]["loss_d"]) and np.isfinite(m.info.history[0]["loss"])
    if "precision_fallback" not in m.info.train:  # this CPU's bf16 gradients passed the check
        assert m.info.train["precision"] == "bf16"
