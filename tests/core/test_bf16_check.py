"""The check of CPU bf16 convolution gradients, and fp32 where it fails (docs/train.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_xrayseg.core import device
from napari_xrayseg.core.device import cpu_bf16_conv_faults, cpu_has_amx
from napari_xrayseg.core.models import init_model
from napari_xrayseg.core.sample import make_phantom
from napari_xrayseg.core.training import train


def _volume_net(size="tiny", context=15):
    return init_model("unet3d", size=size, context=context).network


def _faulty_first_conv(depth):
    """oneDNN's fault, stood in: the bf16 weight gradient of 1-channel convolutions fed ``depth`` slices is NaN."""
    real = device._conv_backward

    def backward(go, x, w, *args):
        out = real(go, x, w, *args)
        if x.dtype == torch.bfloat16 and x.shape[1] == 1 and x.shape[2] == depth:
            gw = out[1].clone()
            gw[-1] = float("nan")
            return out[0], gw, out[2]
        return out

    return backward


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(device, "_BF16_CHECKED", {})  # each test checks afresh


def test_the_check_names_the_convolutions_whose_gradient_is_wrong_and_leaves_the_net_as_it_was(fresh, monkeypatch):
    net = _volume_net().eval()
    x8 = torch.randn(2, 1, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    x16 = torch.zeros(2, 1, 16, 32, 32)
    # the real kernels: right at these shapes with AMX; on CPUs with AVX512-BF16 and no AMX (an AMD
    # EPYC, session 26) oneDNN's bf16 gradients of deeper convolutions can be wrong, which is why
    # precision="auto" is fp32 there (docs/train.md): the check names them
    real8 = cpu_bf16_conv_faults(lambda: net.forward_volume(x8), net)
    real16 = cpu_bf16_conv_faults(lambda: net.forward_volume(x16), net)
    if cpu_has_amx():
        assert real8 == [] and real16 == []
    assert all(f.startswith("net.model.") and ", input (2, " in f for f in real8 + real16)

    monkeypatch.setattr(device, "_BF16_CHECKED", {})
    monkeypatch.setattr(device, "_conv_backward", _faulty_first_conv(8))
    stats = [b.clone() for b in net.buffers()]
    rng = torch.get_rng_state()
    faults = cpu_bf16_conv_faults(lambda: net.forward_volume(x8), net)
    first = "net.model.0.conv ((4, 1, 3, 3, 3), input (2, 1, 8, 32, 32))"  # the 1-channel one
    assert faults[0] == first and faults[1:] == [f for f in real8 if f != first]
    assert cpu_bf16_conv_faults(lambda: net.forward_volume(x16), net) == real16
    assert all(torch.equal(a, b) for a, b in zip(stats, net.buffers()))  # batch norm's statistics put back
    assert torch.equal(rng, torch.get_rng_state())  # and the caller's random stream
    assert not net.training  # and its mode


def test_volume_net_trains_the_depths_that_failed_in_fp32_and_the_others_in_bf16():
    net = _volume_net()
    assert net.training_depths() == [8, 12, 16]  # 8-15 slices, padded to the z stride (4)
    assert _volume_net(context=7).training_depths() == [4, 8]
    assert _volume_net(context=1).training_depths() == [4]
    net.fp32_depths = frozenset({8})
    seen = []
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    first.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net.train()
        assert net.forward_volume(torch.randn(2, 1, 8, 16, 16)).dtype == torch.float32
        net.forward_volume(torch.randn(2, 1, 6, 16, 16))  # padded to 8
        net.forward_volume(torch.randn(2, 1, 16, 16, 16))
        net.eval()
        net.forward_volume(torch.randn(2, 1, 8, 16, 16))  # inference: never
    assert seen == [torch.float32, torch.float32, torch.bfloat16, torch.bfloat16]


def test_training_in_bf16_records_the_depths_that_ran_in_fp32(fresh, monkeypatch):
    monkeypatch.setattr(device, "_conv_backward", _faulty_first_conv(8))
    image, truth = make_phantom((12, 32, 32), seed=3)
    labels = np.zeros_like(truth)
    labels[[3, 8]] = truth[[3, 8]]
    kw = dict(size="tiny", epochs=1, steps_per_epoch=2, batch=2, patch=32, device="cpu", precision="bf16", seed=0)
    model = train(image, labels, arch="unet3d", **kw)
    t = model.info.train
    assert t["bf16_fp32_depths"] == [8] and t["precision"] == "bf16" and t["skipped_steps"] == 0
    assert model.network.fp32_depths == frozenset({8})
    again = train(image, labels, arch="unet3d", init=model, **kw)  # fine-tuned in the same process
    assert again.info.train["bf16_fp32_depths"] == [8] and again.network.fp32_depths == frozenset({8})

    # a network trained at one shape: a failed check makes the whole run fp32
    monkeypatch.setattr(device, "_conv_backward", _faulty_first_conv(32))  # (B, 1, 32, 32): a 2D net's slices
    model = train(image, labels, arch="unet", context=1, **kw)
    t = model.info.train
    assert t["precision"] == "fp32" and "failed a check" in t["precision_fallback"]
    assert "bf16_fp32_depths" not in t


@pytest.mark.skipif(not cpu_has_amx(), reason="the fault is oneDNN's on CPUs with AMX")
def test_a_medium_volume_net_gets_finite_bf16_gradients_on_eight_slices(fresh):
    # torch 2.13 on AMX: every depth-8 step of a medium unet3d had NaN weight gradients
    net = _volume_net("medium").train()
    x = torch.randn(8, 1, 8, 128, 128, generator=torch.Generator().manual_seed(0))
    if cpu_bf16_conv_faults(lambda: net.forward_volume(x), net):
        net.fp32_depths = frozenset({8})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net.forward_volume(x).float().square().mean().backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in net.parameters() if p.grad is not None)
