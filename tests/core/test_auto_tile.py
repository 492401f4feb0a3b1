"""tile="auto": whole slices padded to the stride, or halo tiles that reproduce them (no seams)."""

import numpy as np
import pytest
import torch
import zarr

from napari_xrayseg.core.device import CPU_MEMORY_BUDGET, memory_budget, resolve_device
from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.inference import segment
from napari_xrayseg.core.models import init_model
from napari_xrayseg.core.predictor import SlicePredictor, activation_bytes_per_pixel, receptive_field
from napari_xrayseg.core.tiling import auto_tile, halo_tiles, pad_to_stride


@pytest.fixture(scope="module")
def small3():
    """A unet/small with 3 context slices: stride 8, a receptive field of a few dozen pixels."""
    return init_model("unet", size="small", classes=3, context=3, seed=3)


def test_halo_tiles_cores_partition_the_line_with_a_full_halo():
    rng = np.random.default_rng(0)
    for _ in range(300):
        stride = int(rng.choice([4, 8, 16]))
        halo = stride * int(rng.integers(1, 6))
        tile = 2 * halo + stride * int(rng.integers(1, 20))
        length = stride * int(rng.integers(1, 200))
        tiles = halo_tiles(length, tile, halo)
        cores = [(c0, c1) for _, _, c0, c1 in tiles]
        assert cores[0][0] == 0 and cores[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))  # a partition, no gaps
        for t0, t1, c0, c1 in tiles:
            assert t1 - t0 == min(tile, length) and t0 % stride == 0  # same size, on the stride grid
            assert c0 - t0 >= halo or t0 == 0  # a halo on each side, except at the slice's ends
            assert t1 - c1 >= halo or t1 == length
        # tiles overlap only where they meet: by 2 * halo (more only for the last, kept inside the slice)
        assert all(a[1] - b[0] == 2 * halo for a, b in zip(tiles[:-2], tiles[1:-1]))


def test_auto_tile_whole_slices_when_they_fit_tiles_when_not():
    # a 501x501 slice padded to 512x512 at 1 kB/pixel: 268 MB per slice
    assert auto_tile((501, 501), stride=16, halo=96, bytes_per_pixel=1000, budget=2**30) == (4, 0)
    assert auto_tile((501, 501), stride=16, halo=96, bytes_per_pixel=1000, budget=600e6) == (2, 0)
    per, side = auto_tile((501, 501), stride=16, halo=96, bytes_per_pixel=1000, budget=100e6)
    assert per == 1 and side % 16 == 0 and side * side * 1000 <= 100e6 < (side + 16) ** 2 * 1000
    per, side = auto_tile((8000, 8000), stride=16, halo=96, bytes_per_pixel=642, budget=CPU_MEMORY_BUDGET)
    assert per == 1 and side > 2 * 96 and side**2 * 642 <= CPU_MEMORY_BUDGET
    with pytest.raises(InputError, match="does not fit one tile with its 96-pixel halo"):
        auto_tile((8000, 8000), stride=16, halo=96, bytes_per_pixel=1000, budget=30e6)


def test_memory_budget_from_free_gpu_memory_and_cpu_default():
    gib = 2**30
    assert memory_budget(torch.device("cuda"), free=40 * gib, total=80 * gib) == 20 * gib
    assert memory_budget(torch.device("cuda"), free=0, total=80 * gib) == CPU_MEMORY_BUDGET / 4  # a floor
    assert memory_budget(torch.device("cpu")) == CPU_MEMORY_BUDGET
    # batch of whole slices from free memory: 1024x1024 slices of the default model on an 80 GB card
    model = init_model("unet", size="medium", classes=3, context=3)
    bpp = activation_bytes_per_pixel(model)
    budget = memory_budget(torch.device("cuda"), free=70 * gib, total=80 * gib)
    per, side = auto_tile((1024, 1024), stride=16, halo=96, bytes_per_pixel=bpp, budget=budget)
    assert side == 0 and per == int(35 * gib // (bpp * 1024 * 1024)) and per > 8


def test_receptive_field_is_what_the_network_sees():
    model = init_model("unet", size="tiny", classes=3, seed=1)
    rf = receptive_field(model)
    r = rf // 2
    net = model.network.eval()
    x = torch.randn(1, 1, 128, 128)
    with torch.no_grad():
        y = net(x)
        near, far = x.clone(), x.clone()
        near[..., 64 + r - 2, 64] += 10  # inside the receptive field of output pixel (64, 64)
        far[..., 64 + r + 4, 64] += 10  # outside it
        assert not torch.equal(net(near)[..., 64, 64], y[..., 64, 64])
        assert torch.equal(net(far)[..., 64, 64], y[..., 64, 64])
    sizes = [receptive_field(init_model("unet", size=s, classes=3)) for s in ("tiny", "small", "medium")]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # deeper nets see further


def test_seam_halo_tiles_equal_the_whole_slice(small3):
    x = np.random.default_rng(0).normal(size=(2, 3, 501, 501)).astype(np.float32)
    whole = SlicePredictor(small3, device="cpu", precision="fp32")
    assert whole.layout((501, 501)) == (whole.layout((501, 501))[0], 0)  # fits: whole slices
    ref = whole.scores(x)
    tiled = SlicePredictor(
        small3, device="cpu", precision="fp32", memory=activation_bytes_per_pixel(small3) * 200 * 200
    )
    per, side = tiled.layout((501, 501))
    assert per == 1 and 2 * tiled.halo < side < 501  # tiles that meet inside the slice
    calls = []
    fwd = tiled._forward
    tiled._forward = lambda t: (calls.append(t.shape[-2:]), fwd(t))[1]
    out = tiled.scores(x)
    assert len(calls) > 2 * 4  # several tiles per slice
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.9999
    # the same tiles without a receptive-field halo leave seams where they meet: the test can see them
    tiled._halo = small3.info.stride
    seamy = tiled.scores(x)
    assert (seamy - ref).abs().max() > 1e-2


def test_auto_pads_odd_slices_to_the_stride(small3):
    x = np.random.default_rng(1).normal(size=(1, 3, 501, 499)).astype(np.float32)
    pred = SlicePredictor(small3, device="cpu", precision="fp32")
    out = pred.scores(x)
    assert out.shape == (1, 3, 501, 499)
    s = small3.info.stride
    padded = np.pad(x, ((0, 0), (0, 0), (0, pad_to_stride(501, s) - 501), (0, pad_to_stride(499, s) - 499)), "edge")
    with torch.no_grad():
        ref = pred.net(torch.from_numpy(padded).contiguous(memory_format=torch.channels_last))[..., :501, :499]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert pred.labels(x).shape == (1, 501, 499)


def test_segment_auto_is_the_default_and_streams_from_zarr(tmp_path, small3):
    vol = np.random.default_rng(2).random((5, 161, 145), dtype=np.float32)
    src = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=vol.shape, chunks=(2, 161, 145), dtype="float32")
    src[...] = vol
    auto = segment(vol, small3, device="cpu", precision="fp32")
    assert auto.shape == vol.shape and auto.dtype == np.uint8
    np.testing.assert_array_equal(
        segment(src, small3, device="cpu", precision="fp32", out=tmp_path / "o.zarr")[...], auto
    )
    # a tight budget forces halo tiles: the same labels
    from napari_xrayseg.core import device

    old = device.CPU_MEMORY_BUDGET
    try:
        device.CPU_MEMORY_BUDGET = int(activation_bytes_per_pixel(small3) * 100 * 100)
        assert SlicePredictor(small3, device="cpu", precision="fp32").layout((161, 145))[1] > 0
        np.testing.assert_array_equal(segment(vol, small3, device="cpu", precision="fp32"), auto)
    finally:
        device.CPU_MEMORY_BUDGET = old


def test_bad_tile_words_are_refused(small3):
    with pytest.raises(InputError, match="must be 'auto' or a multiple"):
        segment(np.zeros((2, 32, 32), np.float32) + np.arange(32), small3, device="cpu", tile="whole")


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_device_auto_picks_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto").type == expected


def test_release_memory_empties_the_cuda_cache_only_where_cuda_was_used(monkeypatch):
    import gc

    from napari_xrayseg.core.device import release_memory

    emptied, collected = [], []
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(1))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    release_memory()
    assert emptied == []  # CUDA never used in this process: nothing to give back
    assert collected == []  # nor a full garbage collection (1-2 s in a napari session) for nothing
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    release_memory("cpu")
    assert emptied == []
    release_memory()
    release_memory("cuda:0")
    assert emptied == [1, 1] and collected == [1, 1]


@pytest.mark.parametrize("arch", ["unet", "unet3d", "basicunet", "attentionunet", "segresnet"])
def test_inference_copy_folds_batch_norm_and_leaves_the_model_alone(arch):
    model = init_model(arch, size="tiny", classes=3, context=3, seed=4)
    net = model.network.eval()
    for m in net.modules():  # batch-norm statistics that matter
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pred = SlicePredictor(model, device="cpu", precision="fp32")
    x = np.random.default_rng(5).normal(size=(2, 3, 48, 80)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x))
    torch.testing.assert_close(pred.scores(x), ref, atol=1e-4, rtol=1e-4)
    norms = (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
    n_bn = sum(isinstance(m, norms) for m in net.modules())
    left = sum(isinstance(m, norms) for m in pred.net.modules())
    assert left < n_bn or n_bn == 0  # folded where a conv precedes it (segresnet has group norm only)
    prelus = sum(isinstance(m, torch.nn.PReLU) for m in net.modules())
    inplace = sum(isinstance(m, torch.nn.LeakyReLU) and m.inplace for m in pred.net.modules())
    if arch in ("unet", "unet3d"):  # every activation after a conv's norm now runs in place
        assert prelus > 0 and inplace == prelus and not any(isinstance(m, torch.nn.PReLU) for m in pred.net.modules())
    assert pred.net is not net and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert next(net.parameters()).is_contiguous()  # the model's own layout is untouched


def test_inference_copy_runs_onednn_for_every_3d_convolution(monkeypatch):
    # torch's own rule sends a one-item 3D input with batch x channels x depth x height <= 20480
    # to its native convolution (5-11x slower on the CPU); the inference copy calls oneDNN's
    from napari_xrayseg.core import predictor

    model = init_model("unet3d", size="tiny", classes=3, seed=4)
    net = model.network.eval()
    fast = predictor._inference_copy(net)
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(type(m) is predictor._OneDnnConv3d for m in convs)
    assert all(type(m) is torch.nn.Conv3d for m in net.modules() if isinstance(m, torch.nn.Conv3d))  # the model's own
    calls = []
    real = torch.ops.aten.mkldnn_convolution
    monkeypatch.setattr(torch.ops.aten, "mkldnn_convolution", lambda *a: calls.append(a[0].shape) or real(*a))
    x = torch.from_numpy(np.random.default_rng(6).random((1, 15, 24, 24), dtype=np.float32))
    with torch.inference_mode():
        ref, out = net(x), fast(x)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert len(calls) == len(convs)  # every one, the smallest inputs too (1 x 1 x 16 x 24: torch's native)
    calls.clear()
    with torch.inference_mode():  # float64 (and bf16 autocast, fp16) keep torch's own routine
        torch.testing.assert_close(fast.double()(x.double()), net.double()(x.double()))
    assert calls == []


def test_inplace_activation_only_where_nothing_else_reads_its_input():
    from napari_xrayseg.core.predictor import _inference_copy

    def block(*adn, cin=4):
        return torch.nn.Sequential(torch.nn.Conv2d(cin, 4, 3, padding=1), torch.nn.Sequential(*adn))

    net = torch.nn.Sequential(
        block(torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.1), torch.nn.PReLU(), cin=2),  # MONAI's ADN: in place
        block(torch.nn.PReLU(num_parameters=4)),  # one slope per channel is not a leaky ReLU: kept
        block(torch.nn.Conv2d(4, 4, 1), torch.nn.PReLU()),  # its input is not the first conv's output: kept
    )
    for m in net.modules():
        if isinstance(m, torch.nn.PReLU):
            torch.nn.init.uniform_(m.weight, 0.05, 0.5)
    net.eval()
    fast = _inference_copy(net)
    assert isinstance(fast[0][1][2], torch.nn.LeakyReLU) and fast[0][1][2].inplace
    assert fast[0][1][2].negative_slope == pytest.approx(float(net[0][1][2].weight))
    assert isinstance(fast[1][1][0], torch.nn.PReLU) and isinstance(fast[2][1][1], torch.nn.PReLU)
    x = torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)), net(x), atol=1e-5, rtol=1e-5)


def test_cli_predict_tile_auto_and_a_bad_word(tmp_path, small3, capsys):
    from napari_xrayseg.cli import main
    from napari_xrayseg.core.models import save_model

    vol = np.random.default_rng(6).random((3, 40, 56), dtype=np.float32)
    np.save(tmp_path / "in.npy", vol)
    path = save_model(small3, tmp_path / "m.safetensors")
    args = ["predict", "--image", str(tmp_path / "in.npy"), "--model", str(path), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "a.zarr"), "--tile", "auto", "--precision", "fp32"]) == 0
    assert main([*args, "--out", str(tmp_path / "d.zarr"), "--precision", "fp32"]) == 0  # auto is the default
    a, d = zarr.open_array(str(tmp_path / "a.zarr"), mode="r"), zarr.open_array(str(tmp_path / "d.zarr"), mode="r")
    np.testing.assert_array_equal(a[...], segment(vol, small3, device="cpu", precision="fp32"))
    np.testing.assert_array_equal(d[...], a[...])
    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(tmp_path / "b.zarr"), "--tile", "whole"])
    assert e.value.code == 2 and "'whole' is not 'auto' or a whole number of pixels" in capsys.readouterr().err


def test_3d_net_runs_whole_slices_within_the_budget_and_parts_along_the_run_beyond_it():
    """unet3d: tile="auto" picks the layout with the fewest voxels through the net that fits the budget."""
    from napari_xrayseg.core.device import CPU_VOLUME_BUDGET
    from napari_xrayseg.core.predictor import volume_bytes_per_voxel
    from napari_xrayseg.core.tiling import stack_context

    m = init_model("unet3d", size="tiny", classes=3, context=5, seed=2)
    bpv = volume_bytes_per_voxel(m)
    assert 8 < bpv < 1000  # bytes per voxel: fp32 feature maps and their overhead
    cpu = SlicePredictor(m, device="cpu", precision="fp32")
    assert cpu.memory == CPU_VOLUME_BUDGET  # 3D nets on CPU: larger windows pay
    # 512² slices in runs of 32 + 4 context fit 1.5 GiB whole: one pass, no overlap
    assert cpu.volume_layout(36, (512, 512)) == (32, (512, 512))
    # a slice too large for the budget: windows of the model's tile (or twice it), the whole run deep
    per, roi = cpu.volume_layout(36, (4096, 4096))
    assert per == 32 and roi in ((m.info.tile, m.info.tile), (2 * m.info.tile, 2 * m.info.tile))
    # a budget for 10 slices of 64² per pass: parts of 10 - 4 kept slices along the run
    x = np.random.default_rng(0).normal(size=(15, 64, 64)).astype(np.float32)
    stacks = stack_context(x, 5)
    tight = SlicePredictor(m, device="cpu", precision="fp32", memory=bpv * 10 * 64 * 64 + 1)
    assert tight.volume_layout(19, (64, 64)) == (6, (64, 64))
    net = tight.net
    with torch.inference_mode():
        padded = torch.from_numpy(np.concatenate([x[:1], x[:1], x, x[-1:], x[-1:]]))[None, None]
        whole = net.forward_volume(padded)[0, :, 2:-2].transpose(0, 1)
        # each part: the slices it keeps with 2 slices of context either side, nothing else
        parts = [net.forward_volume(padded[:, :, c : c + min(6, 15 - c) + 4])[0, :, 2:-2] for c in (0, 6, 12)]
        parts = torch.cat(parts, 1)
    calls = []
    fwd = tight._forward_volume
    tight._forward_volume = lambda t: (calls.append(tuple(t.shape[2:])), fwd(t))[1]
    out = tight.scores(stacks)
    assert calls == [(10, 64, 64), (10, 64, 64), (7, 64, 64)]
    torch.testing.assert_close(out, parts.transpose(0, 1), atol=1e-5, rtol=1e-5)
    # with room for the whole run: one pass, the same as the network over the whole volume
    roomy = SlicePredictor(m, device="cpu", precision="fp32", memory=bpv * 19 * 64 * 64 + 1)
    roomy.net = net
    torch.testing.assert_close(roomy.scores(stacks), whole, atol=1e-5, rtol=1e-5)


def test_the_receptive_field_is_measured_inside_a_prediction_too():
    """First asked inside inference_mode (predict_slice of a slice too big to run whole, in a fresh process: the
    Annotate preview of a 2048² scan), the probe's backward() failed: "element 0 of tensors does not require grad"
    (QA, big volumes)."""
    import torch

    from napari_xrayseg.core import predictor

    m = init_model("unet", size="tiny", classes=3)
    predictor._receptive_field.cache_clear()
    with torch.inference_mode():
        inside = predictor.receptive_field(m)
    predictor._receptive_field.cache_clear()
    assert inside == predictor.receptive_field(m) > 1


def test_running_out_of_memory_in_the_compiled_network_is_not_a_compile_failure(monkeypatch):
    """A CUDA out-of-memory on a compiled batch was logged as "torch.compile failed", compiling switched off for good
    and the batch retried eager, which needs more memory (QA, GPU paths): it is raised as it is now."""
    from napari_xrayseg.core import predictor

    def compiled_that_runs_out(net, dynamic=False):
        def run(x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        return run

    monkeypatch.setattr(torch, "compile", compiled_that_runs_out)
    c = predictor._Compiled(torch.nn.Identity())
    with pytest.raises(torch.OutOfMemoryError):
        c(torch.zeros(1))
    assert c.failed is None

    def compiler_missing(net, dynamic=False):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", compiler_missing)
    c = predictor._Compiled(torch.nn.Identity())
    assert c(torch.ones(1)).item() == 1 and c.failed == "RuntimeError: no C++ compiler"  # eager, as before
