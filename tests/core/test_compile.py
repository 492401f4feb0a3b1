"""torch.compile of the inference network: when it is chosen, that it gives the eager answer, and the fallback."""

import logging

import numpy as np
import pytest
import torch

from napari_xrayseg import init_model, segment
from napari_xrayseg.core import predictor as P
from napari_xrayseg.core.config import SegmentConfig
from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.inference import build_job


@pytest.fixture(scope="module")
def tiny():
    return init_model("unet", size="tiny", classes=3, context=3, seed=2)


def test_flops_per_pixel_and_the_decision():
    medium = init_model("unet", size="medium", classes=3, context=3)
    f = P.flops_per_pixel(medium)
    assert 23_000 < f < 24_500  # 23,746 by the benchmarks' count (docs/performance.md)
    # 10 minutes at the assumed CPU rate: compile from there on, never for a preview or on MPS
    edge = P.COMPILE_RATE["cpu"] * P.COMPILE_MIN_SECONDS / f
    assert not P.worth_compiling(medium, 0.9 * edge, "cpu") and P.worth_compiling(medium, 1.1 * edge, "cpu")
    assert not P.worth_compiling(medium, 10 * 512 * 512, "cpu")
    assert not P.worth_compiling(medium, 100 * edge, "mps")
    assert not P.worth_compiling(medium, 1.1 * edge, "cuda")  # a GPU is ~300x faster: pays much later
    assert P.worth_compiling(medium, 1.1 * edge * 333.4, "cuda")
    u3 = init_model("unet3d", size="tiny", classes=3)
    assert not P.worth_compiling(u3, 1e15, "cpu")  # 3D windows of several shapes: never


def test_build_job_resolves_compile(tiny, tmp_path):
    vol = np.random.default_rng(0).random((4, 32, 32), dtype=np.float32)
    job = build_job(vol, tiny, SegmentConfig(device="cpu"))
    assert job.predictor.compiled is None  # auto: a tiny job
    job = build_job(vol, tiny, SegmentConfig(device="cpu", compile=True))
    assert job.predictor.compiled is not None and job.predictor.settings[-1] is True
    job = build_job(vol, tiny, SegmentConfig(device="cpu", compile=True, tile=32))
    assert job.predictor.compiled is None  # sliding windows: never
    out = tmp_path / "o.zarr"
    with pytest.raises(InputError, match="compile 'yes' must be 'auto', True or False"):
        build_job(vol, tiny, SegmentConfig(device="cpu", compile="yes", out=out))
    assert not out.exists()  # refused before the output was claimed


def test_a_failing_compile_falls_back_to_eager(tiny, monkeypatch, caplog):
    def broken(*a, **k):
        raise RuntimeError("no C++ compiler found\nmore lines")

    monkeypatch.setattr(torch, "compile", broken)
    x = np.random.default_rng(1).random((3, 3, 32, 48), dtype=np.float32)
    eager = P.SlicePredictor(tiny, device="cpu", precision="fp32").scores(x)
    pred = P.SlicePredictor(tiny, device="cpu", precision="fp32", compile=True)
    with caplog.at_level(logging.WARNING, logger="napari_xrayseg.core.predictor"):
        got = pred.scores(x)
    torch.testing.assert_close(got, eager)
    assert pred.compiled.failed == "RuntimeError: no C++ compiler found"
    assert "torch.compile failed (RuntimeError: no C++ compiler found)" in caplog.text
    torch.testing.assert_close(pred.scores(x), eager)  # and stays eager without trying again


@pytest.mark.slow
def test_compiled_network_gives_the_eager_labels(tiny):
    """A real torch.compile (inductor) of a tiny net; a batch shorter than the first is padded to its shape."""
    vol = np.random.default_rng(3).random((5, 40, 56), dtype=np.float32)
    ref = segment(vol, tiny, device="cpu", precision="fp32", compile=False)
    memory = 2.5 * P.activation_bytes_per_pixel(tiny) * 48 * 64
    pred = P.SlicePredictor(tiny, device="cpu", precision="fp32", compile=True, memory=memory)
    per = pred.layout((40, 56))[0]
    assert 2 <= per < 5
    x = np.random.default_rng(4).random((per + 1, 3, 40, 56), dtype=np.float32)  # the last batch padded
    eager = P.SlicePredictor(tiny, device="cpu", precision="fp32", memory=memory).scores(x)
    torch.testing.assert_close(pred.scores(x), eager, atol=1e-4, rtol=1e-4)
    assert pred._batch == (per, 3, 40, 56)
    torch.testing.assert_close(pred.scores(x[:1]), eager[:1], atol=1e-4, rtol=1e-4)  # padded to the same shape
    if pred.compiled.failed is None:  # with a working compiler: the compiled graph ran
        assert pred.compiled.compiled is not None
    got = segment(vol, tiny, device="cpu", precision="fp32", compile=True)
    assert (got != ref).mean() < 1e-3
