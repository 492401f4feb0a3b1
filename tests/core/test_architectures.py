"""Every registered architecture: training, model-file round trip, context, strides, loader checks."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from napari_xrayseg.cli import build_parser, main
from napari_xrayseg.core.errors import InputError, ModelFileError
from napari_xrayseg.core.inference import segment
from napari_xrayseg.core.models import (
    architectures,
    default_size,
    describe_architecture,
    init_model,
    load_model,
    read_model_info,
    save_model,
)
from napari_xrayseg.core.sample import make_phantom
from napari_xrayseg.core.training import train

ARCHS = ("unet", "unet3d", "basicunet", "attentionunet", "segresnet")
# stride of every preset: the tile / patch multiple that inference and training rely on
STRIDES = {
    "unet": {"tiny": 4, "small": 8, "medium": 16, "large": 16},
    "unet3d": {"tiny": 4, "small": 8, "medium": 8, "large": 8},
    "basicunet": {"tiny": 16, "small": 16, "medium": 16, "large": 16},
    "attentionunet": {"tiny": 4, "small": 8, "medium": 16, "large": 16},
    "segresnet": {"tiny": 4, "small": 8, "medium": 8, "large": 8},
}


@pytest.fixture(scope="module")
def phantom():
    image, truth = make_phantom((6, 32, 32), seed=11, artefacts=False)
    sparse = np.zeros_like(truth)
    sparse[[1, 4]] = truth[[1, 4]]
    return image, sparse


def _rewrite_meta(src, dst, edit):
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    info = json.loads(header["__metadata__"]["napari_xrayseg"])
    edit(info)
    header["__metadata__"]["napari_xrayseg"] = json.dumps(info)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    dst.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + n :])


def test_registry_names_sizes_and_strides():
    archs = architectures()
    assert set(ARCHS) <= set(archs)
    for arch in ARCHS:
        assert archs[arch] == ("tiny", "small", "medium", "large")
        assert default_size(arch) in archs[arch] and describe_architecture(arch).startswith("MONAI")
        for size, stride in STRIDES[arch].items():
            m = init_model(arch, size=size, classes=2, tile=256)
            assert m.info.stride == stride, (arch, size)
            assert m.info.params["in_channels"] == 1 and m.info.params["out_channels"] == 2
    with pytest.raises(InputError, match="unknown segresnet size 'huge'"):
        init_model("segresnet", size="huge")
    with pytest.raises(InputError, match="unknown architecture"):
        default_size("vit")


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_trains_with_context_and_round_trips(phantom, tmp_path, arch):
    image, sparse = phantom
    m = train(
        image,
        sparse,
        arch=arch,
        size="tiny",
        epochs=1,
        steps_per_epoch=2,
        batch=2,
        patch=32,
        context=3,
        device="cpu",
        out=tmp_path / "m.safetensors",
    )
    assert m.info.arch == arch and m.info.context == 3 and m.info.in_channels == 3
    assert m.info.train["arch"] == arch and m.info.train["mode"] == "supervised"
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.info.arch == arch and loaded.info.params == m.info.params and loaded.info.context == 3
    for (k, a), (k2, b) in zip(m.network.state_dict().items(), loaded.network.state_dict().items()):
        assert k == k2 and torch.equal(a.cpu(), b)
    np.testing.assert_array_equal(segment(image, loaded, device="cpu"), segment(image, m, device="cpu"))


@pytest.mark.parametrize("arch", ARCHS)
def test_tile_of_exactly_the_stride_and_non_multiples(arch):
    m = init_model(arch, size="tiny", classes=3, context=3, tile=64, seed=1)
    s = m.info.stride
    # the network maps an (N, k, s, s) input to (N, classes, s, s) and (2s, 2s) likewise
    with torch.inference_mode():
        assert tuple(m.network(torch.rand(2, 3, s, s)).shape) == (2, 3, s, s)
        assert tuple(m.network(torch.rand(1, 3, 2 * s, 2 * s)).shape) == (1, 3, 2 * s, 2 * s)
    # a tile of exactly the stride segments slices of any shape (edges padded to the stride)
    image = np.random.default_rng(0).random((3, s + 3, 2 * s - 1), dtype=np.float32)
    out = segment(image, m, tile=s, device="cpu")
    assert out.shape == image.shape and set(np.unique(out)) <= {1, 2, 3}
    # tiles and patches that are not multiples of the stride are refused, naming the stride
    with pytest.raises(InputError, match=f"stride {s}"):
        segment(image, m, tile=s + 2, device="cpu")
    with pytest.raises(InputError, match=f"stride {s}"):
        init_model(arch, size="tiny", tile=3 * s + 2)


def test_patch_not_a_multiple_of_the_stride_is_refused(phantom):
    image, sparse = phantom
    with pytest.raises(InputError, match="patch 40 is not a multiple of the network's stride 16"):
        train(
            image, sparse, arch="basicunet", size="tiny", epochs=1, steps_per_epoch=1, batch=2, patch=40, device="cpu"
        )


def test_instance_norm_doubles_the_stride(tmp_path):
    # instance norm cannot normalise a single pixel: the deepest level must stay >= 2x2
    for arch, base in (("unet", 4), ("basicunet", 16)):
        m = init_model(arch, size="tiny", classes=3)
        m.info.params["norm"] = "instance"
        assert m.info.stride == 2 * base
        from napari_xrayseg.core.models import build_network

        net = build_network(arch, m.info.params).eval()
        with torch.inference_mode():
            assert tuple(net(torch.rand(1, 1, 2 * base, 2 * base)).shape) == (1, 3, 2 * base, 2 * base)


@pytest.mark.parametrize("arch", ARCHS)
def test_context_sets_the_input_channels(arch):
    m = init_model(arch, size="tiny", classes=4, context=5)
    assert m.info.in_channels == 5 and m.info.context == 5
    s = m.info.stride
    with torch.inference_mode():
        assert tuple(m.network(torch.rand(1, 5, 2 * s, 2 * s)).shape) == (1, 4, 2 * s, 2 * s)


@pytest.mark.parametrize(
    ("arch", "edit", "match"),
    [
        # another architecture's valid parameters: the tensors in the file do not fit it
        (
            "basicunet",
            lambda i: i.update(
                arch="segresnet",
                size="tiny",
                params={
                    "in_channels": 1,
                    "out_channels": 3,
                    "dropout": 0.0,
                    "upsample": "nontrainable",
                    "init_filters": 8,
                    "num_groups": 4,
                    "blocks_down": [1, 1, 1],
                    "blocks_up": [1, 1],
                },
            ),
            "do not match the declared segresnet",
        ),
        (
            "segresnet",
            lambda i: i.update(
                arch="attentionunet",
                params={"in_channels": 1, "out_channels": 3, "dropout": 0.0, "channels": [4, 8, 16], "strides": [2, 2]},
            ),
            "do not match the declared attentionunet",
        ),
        # same architecture, other sizes: shapes differ
        ("basicunet", lambda i: i["params"].update(features=[8, 8, 16, 32, 64, 16]), "shape"),
        ("attentionunet", lambda i: i["params"].update(channels=[4, 8, 32]), "shape"),
        ("segresnet", lambda i: i["params"].update(init_filters=12), "shape"),
        ("segresnet", lambda i: i["params"].update(blocks_down=[1, 2, 1]), "missing"),
        # out-of-bounds or inconsistent parameters never reach the network builder
        ("basicunet", lambda i: i["params"].update(features=[8, 8, 16, 32, 64]), "features"),
        ("basicunet", lambda i: i["params"].update(features=[8, 8, 16, 32, 64, 100000]), "features"),
        ("basicunet", lambda i: i["params"].update(norm="layer"), "norm"),
        ("attentionunet", lambda i: i["params"].update(strides=[2, 2, 2]), "strides"),
        ("attentionunet", lambda i: i["params"].update(dropout=1.5), "dropout"),
        ("segresnet", lambda i: i["params"].update(num_groups=3), "not a multiple of num_groups"),
        ("segresnet", lambda i: i["params"].update(blocks_up=[1]), "blocks_up"),
        ("segresnet", lambda i: i["params"].update(blocks_down=[1, 1, 1, 1, 1, 1, 1]), "blocks_down"),
        ("segresnet", lambda i: i["params"].update(upsample="magic"), "upsample"),
        ("segresnet", lambda i: i["params"].update(init_filters=True), "init_filters"),
    ],
)
def test_loader_refuses_tensors_that_do_not_fit_the_declared_arch(tmp_path, arch, edit, match):
    good = save_model(init_model(arch, size="tiny", classes=3, seed=2), tmp_path / "good.safetensors")
    assert load_model(good).info.arch == arch
    bad = tmp_path / "bad.safetensors"
    _rewrite_meta(good, bad, edit)
    with pytest.raises(ModelFileError, match=match):
        load_model(bad)


def test_cli_init_model_arch_and_context(tmp_path, capsys):
    assert (
        main(
            [
                "init-model",
                "--out",
                str(tmp_path / "b"),
                "--arch",
                "basicunet",
                "--size",
                "tiny",
                "--context",
                "3",
                "--tile",
                "64",
            ]
        )
        == 0
    )
    assert "context 3, stride 16" in capsys.readouterr().out
    info = read_model_info(tmp_path / "b.safetensors")
    assert info.arch == "basicunet" and info.context == 3 and info.params["in_channels"] == 3
    image = np.random.default_rng(0).random((5, 40, 40), dtype=np.float32)
    assert segment(image, tmp_path / "b.safetensors", device="cpu").shape == image.shape
    # a tile that the arch cannot take is one line, exit 2
    assert main(["init-model", "--out", str(tmp_path / "c"), "--arch", "basicunet", "--tile", "40"]) == 2
    assert "stride 16" in capsys.readouterr().err
    for cmd, extra in (("init-model", set()), ("train", {"auto"})):  # train chooses from the data by default
        action = next(a for a in build_parser()._subparsers._group_actions[0].choices[cmd]._actions if a.dest == "arch")
        assert set(action.choices) == set(architectures()) | extra


def test_unet3d_computes_each_run_of_consecutive_slices_as_one_volume():
    """A 3D network sees the slices as a volume: a run of consecutive slices goes through it once."""
    from napari_xrayseg.core.predictor import SlicePredictor
    from napari_xrayseg.core.tiling import stack_context

    m = init_model("unet3d", size="tiny", classes=3, context=5, tile=32, seed=2)
    net = m.network.eval()
    image = np.random.default_rng(3).random((12, 32, 32), dtype=np.float32)
    pred = SlicePredictor(m, device="cpu", tile=32, overlap=0.0, precision="fp32")
    x = stack_context(image, 5)  # the slices with 2 neighbours on each side (edges replicated)
    padded = np.concatenate([image[:1], image[:1], image, image[-1:], image[-1:]])

    def volume(lo, hi):  # scores of slices lo..hi-1 from one pass over them and their context
        with torch.inference_mode():
            v = torch.from_numpy(np.ascontiguousarray(padded[lo : hi + 4]))[None, None]
            return net.forward_volume(v)[0, :, 2 : 2 + hi - lo].transpose(0, 1)

    torch.testing.assert_close(pred.scores(x), volume(0, 12), atol=1e-5, rtol=1e-5)
    # slices that are not consecutive are separate runs, each its own volume
    got = pred.scores(np.ascontiguousarray(x[[0, 1, 2, 7, 8]]))
    torch.testing.assert_close(got[:3], volume(0, 3), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[3:], volume(7, 9), atol=1e-5, rtol=1e-5)
    # one slice alone is the network's slice-with-context forward (what training sees)
    with torch.inference_mode():
        one = net(torch.from_numpy(x[5:6].copy()))
    torch.testing.assert_close(pred.scores(np.ascontiguousarray(x[5:6])), one, atol=1e-5, rtol=1e-5)
    # segment() reads whole slabs, so the volume pass is what it writes
    m.info.normalization.update(low=0.0, high=1.0)
    labels = segment(image, m, device="cpu", tile=32, overlap=0.0, precision="fp32", slab=12)
    np.testing.assert_array_equal(labels, np.asarray(m.info.classes)[volume(0, 12).argmax(1).numpy()])


def test_unet3d_trains_its_middle_slice_at_every_depth():
    """In training the middle slice is scored inside a random sub-volume, so the network cannot
    learn the middle's position from the padding (and then fail on whole runs of slices)."""
    from napari_xrayseg.core.models import default_context

    assert default_context("unet3d") == 15 and default_context("unet") == 3
    net = init_model("unet3d", size="tiny", classes=3, context=7, seed=4).network.train()
    x = torch.rand(2, 7, 16, 16)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out = net(x)
        torch.manual_seed(seed)
        depth = int(torch.randint(4, 8, ()).item())
        lo = int(torch.randint(max(0, 3 - depth + 1), min(3, 7 - depth) + 1, ()).item())
        assert 4 <= depth <= 7 and lo <= 3 < lo + depth  # the middle slice is inside the sub-volume
        torch.testing.assert_close(out, net.forward_volume(x[:, None, lo : lo + depth])[:, :, 3 - lo])
        seen.add(3 - lo)
    assert len(seen) >= 3  # scored at several depths
    image, truth = make_phantom((20, 32, 32), seed=1, artefacts=False)
    sparse = np.zeros_like(truth)
    sparse[[5, 14]] = truth[[5, 14]]
    m = train(image, sparse, arch="unet3d", size="tiny", epochs=1, steps_per_epoch=2, batch=2, patch=32, device="cpu")
    assert m.info.context == 15 and m.info.train["context"] == 15
    # the sub-volumes come from a generator the training seed sets: the same seed, the same model
    torch.manual_seed(123)  # whatever the global generator holds
    m2 = train(image, sparse, arch="unet3d", size="tiny", epochs=1, steps_per_epoch=2, batch=2, patch=32, device="cpu")
    a, b = m.network.state_dict(), m2.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unet3d_trains_with_its_own_default_batch_also_when_fine_tuned(tmp_path):
    """No batch given: 4 sub-volumes per step for unet3d (8 patches for the 2D nets), and a
    fine-tuning run takes the default of the architecture it continues, not of ``arch=``."""
    from napari_xrayseg.core.models import default_batch

    assert default_batch("unet3d") == 4 and default_batch("unet") == 8
    image, truth = make_phantom((20, 32, 32), seed=1, artefacts=False)
    sparse = np.zeros_like(truth)
    sparse[[5, 14]] = truth[[5, 14]]
    kw = dict(size="tiny", epochs=1, steps_per_epoch=1, patch=32, device="cpu", context=3)
    m3 = train(image, sparse, arch="unet3d", **kw)
    assert m3.info.train["batch"] == 4
    save_model(m3, tmp_path / "m3.safetensors")
    for init in (m3, tmp_path / "m3.safetensors"):
        assert train(image, sparse, init=init, **kw).info.train["batch"] == 4
    assert train(image, sparse, **kw).info.train["batch"] == 8
    assert train(image, sparse, arch="unet3d", batch=2, **kw).info.train["batch"] == 2
    with pytest.raises(InputError, match="batch"):
        train(image, sparse, arch="unet3d", batch=0, **kw)


def test_train_auto_chooses_unet3d_for_volumes_and_unet_for_the_rest(tmp_path, capsys):
    """``arch="auto"`` (the default): unet3d with its defaults for a single-channel volume at least
    15 slices deep, trained along one axis; the 2.5D unet for thin volumes, 2D images, channels,
    several axes, a context below 15 and pix2pix; a fine-tuned model keeps its own."""
    from napari_xrayseg.cli import main
    from napari_xrayseg.core.models import choose_arch
    from napari_xrayseg.core.training import TrainConfig

    assert TrainConfig().arch == "auto"
    assert choose_arch([(15, 64, 64)]) == "unet3d" and choose_arch([(14, 64, 64)]) == "unet"
    assert choose_arch([(64, 15, 64)], axis=1) == "unet3d" and choose_arch([(64, 14, 64)], axis=1) == "unet"
    assert choose_arch([(20, 64, 64), (10, 64, 64)]) == "unet"  # every image must be deep enough
    assert choose_arch([(20, 64, 64)], channel_axis=3) == "unet"
    assert choose_arch([(20, 64, 64)], two_d=True) == "unet" and choose_arch([(20, 64, 64)], mode="pix2pix") == "unet"
    assert choose_arch([(20, 64, 64)], context=15) == "unet3d" and choose_arch([]) == "unet"
    # a short time budget: the 2.5D net's 3x faster epochs win (epochs alone, or 5 minutes and more: unet3d)
    assert choose_arch([(20, 64, 64)], minutes=4.9) == "unet" and choose_arch([(20, 64, 64)], minutes=5) == "unet3d"
    image, truth = make_phantom((16, 32, 32), seed=2, artefacts=False)
    sparse = np.zeros_like(truth)
    sparse[[4, 11]] = truth[[4, 11]]
    kw = dict(epochs=1, steps_per_epoch=1, patch=32, device="cpu")
    m = train(image, sparse, size="tiny", **kw)
    assert (m.info.arch, m.info.context, m.info.train["batch"]) == ("unet3d", 15, 4)
    assert train(image, sparse, size="tiny", batch=2, **kw).info.arch == "unet3d"
    m2 = train(image[:, 0], sparse[:, 0], size="tiny", **kw)  # a 2D image
    assert (m2.info.arch, m2.info.context) == ("unet", 3)
    thin = train(image[:8], sparse[:8], size="tiny", **kw)
    assert (thin.info.arch, thin.info.context, thin.info.train["batch"]) == ("unet", 3, 8)
    assert train(image, sparse, size="tiny", context=3, **kw).info.arch == "unet"
    assert train(image, sparse, size="tiny", minutes=1, **kw).info.arch == "unet"  # epochs and a short budget
    assert train(image, sparse, init=thin, **kw).info.arch == "unet"  # fine-tuning keeps the model's
    # no size: each architecture's default (medium for unet, small for unet3d); init="auto" fine-tunes
    # the pretrained start at its size (medium) against random weights of the default size
    assert train(image[:8], sparse[:8], batch=1, **kw).info.size == "medium"
    assert train(image, sparse, batch=1, init="random", **kw).info.size == "small"
    auto = train(image, sparse, batch=1, **kw)
    assert auto.info.size == {"pretrained": "medium", "random": "small"}[auto.info.train["start"]]
    # the CLI's default is the same choice
    np.save(tmp_path / "img.npy", image)
    np.save(tmp_path / "lab.npy", sparse)
    args = ["train", "--image", str(tmp_path / "img.npy"), "--labels", str(tmp_path / "lab.npy"), "--size", "tiny"]
    args += ["--epochs", "1", "--steps", "1", "--patch", "32", "--device", "cpu", "--out", str(tmp_path / "m")]
    assert main(args) == 0
    from napari_xrayseg.core.models import read_model_info

    assert read_model_info(tmp_path / "m.safetensors").arch == "unet3d"
