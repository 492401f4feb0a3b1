import copy
import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from napari_xrayseg.core.errors import InputError, ModelFileError, OutputExistsError
from napari_xrayseg.core.models import architectures, init_model, load_model, read_model_info, save_model, with_context


def test_architectures_registry():
    assert "unet" in architectures() and "tiny" in architectures()["unet"]
    with pytest.raises(InputError, match="unknown architecture"):
        init_model("resnet-9000")


def test_round_trip(tmp_path, tiny_model):
    tiny_model.info.normalization = {"method": "percentile", "low": 0.1, "high": 0.9, "percentiles": [1, 99]}
    tiny_model.info.history = [{"epoch": 1, "loss": 0.5, "val_dice": 0.7}]
    p = save_model(tiny_model, tmp_path / "m")
    assert p.name == "m.safetensors" and p.exists()
    m = load_model(p)
    assert m.info.classes == [1, 2, 3] and m.info.class_names == ["class 1", "class 2", "class 3"]
    assert m.info.normalization["low"] == 0.1 and m.info.history == tiny_model.info.history
    for (k, a), (k2, b) in zip(tiny_model.network.state_dict().items(), m.network.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(1, 1, 32, 32)
    tiny_model.network.eval()
    with torch.no_grad():
        torch.testing.assert_close(tiny_model.network(x), m.network(x))
    assert read_model_info(p).arch == "unet"


def test_no_silent_overwrite_and_atomic(tmp_path, tiny_model):
    p = save_model(tiny_model, tmp_path / "m.safetensors")
    before = p.read_bytes()
    with pytest.raises(OutputExistsError, match="exists"):
        save_model(init_model("unet", size="tiny", seed=5), p)
    assert p.read_bytes() == before
    save_model(init_model("unet", size="tiny", seed=5), p, overwrite=True)
    assert p.read_bytes() != before
    assert [f.name for f in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_a_saved_model_is_as_readable_as_the_users_other_files(tmp_path, tiny_model):
    # an atomic write's temporary file must not leave the output at mkstemp's 0o600
    old = os.umask(0o022)
    try:
        p = save_model(tiny_model, tmp_path / "m.safetensors")
        assert p.stat().st_mode & 0o777 == 0o644
        p.chmod(0o640)  # a file the user restricted keeps its permissions when replaced
        save_model(tiny_model, p, overwrite=True)
        assert p.stat().st_mode & 0o777 == 0o640
        os.umask(0o077)
        assert save_model(tiny_model, tmp_path / "private.safetensors").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_pickle_is_never_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps(Evil(), protocol=4))
    with pytest.raises(ModelFileError, match="never unpickles"):
        load_model(p)
    torch.save({"w": torch.zeros(1)}, tmp_path / "ckpt.pt")
    with pytest.raises(ModelFileError, match="never unpickles"):
        load_model(tmp_path / "ckpt.pt")
    assert not marker.exists()


def test_a_zip_or_a_fifo_given_as_a_model_file_is_named(tmp_path):
    """A bioimage.io package passed as --model was called a pickled checkpoint; a FIFO hung the reader."""
    import zipfile

    pkg = tmp_path / "pkg.zip"
    with zipfile.ZipFile(pkg, "w") as z:
        z.writestr("rdf.yaml", "type: model")
        z.writestr("weights.pt", b"\x80\x04")
    with pytest.raises(ModelFileError, match=r"pkg.zip is a bioimage.io model package, not a model file: .*import"):
        load_model(pkg)
    other = tmp_path / "other.safetensors"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(ModelFileError, match="is a zip archive, not a safetensors model file"):
        load_model(other)
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ModelFileError, match="is not a regular file"):
        load_model(fifo)


def test_a_model_with_nan_weights_is_refused(tmp_path, tiny_model):
    """A model file with NaN weights segmented every voxel as one class without a word (file QA, session 37)."""
    bad = copy.deepcopy(tiny_model)
    next(iter(bad.network.parameters())).data[0] = float("nan")
    path = save_model(bad, tmp_path / "nan.safetensors")
    with pytest.raises(ModelFileError, match=r"holds NaN or infinite weights .*: the training that wrote it diverged"):
        load_model(path)
    var = copy.deepcopy(tiny_model)
    name, buf = next((n, b) for n, b in var.network.named_buffers() if n.endswith("running_var"))
    buf[0] = -1.0  # loaded silently: every output NaN
    path = save_model(var, tmp_path / "var.safetensors")
    with pytest.raises(ModelFileError, match=rf"negative batch-norm variance \({name}\): the file is damaged"):
        load_model(path)


def _rewrite_meta(src, dst, edit):
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    info = json.loads(header["__metadata__"]["napari_xrayseg"])
    edit(info, header)
    header["__metadata__"]["napari_xrayseg"] = json.dumps(info)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    dst.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + n :])


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda i, h: i.update(arch="evilnet"), "unknown architecture"),
        (lambda i, h: i["params"].update(channels=[4, 8, 99999]), "channels"),
        (lambda i, h: i["params"].update(channels=[8, 16, 32]), "shape"),
        (lambda i, h: i.update(classes=[1, 2]), "classes"),
        (lambda i, h: i.update(format_version=99), "format_version"),
        (lambda i, h: i["normalization"].update(low="NaN"), "normalization"),
        (lambda i, h: i.update(context=3), "context 3 does not match in_channels 1"),
        (lambda i, h: i.update(context=2), "context 2 is not an odd integer"),
        (lambda i, h: i.update(context=65), "context 65 is not an odd integer"),
    ],
)
def test_lying_sidecar_is_refused(tmp_path, tiny_model, edit, match):
    good = save_model(tiny_model, tmp_path / "good.safetensors")
    bad = tmp_path / "bad.safetensors"
    _rewrite_meta(good, bad, edit)
    with pytest.raises(ModelFileError, match=match):
        load_model(bad)


def test_truncated_and_foreign_files(tmp_path, tiny_model):
    good = save_model(tiny_model, tmp_path / "good.safetensors")
    raw = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="truncated|cannot read"):
        load_model(tmp_path / "trunc.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "empty.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelFileError, match="without a napari-xrayseg model description"):
        load_model(tmp_path / "plain.safetensors")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")


def test_init_model_validation():
    with pytest.raises(InputError, match="classes"):
        init_model("unet", size="tiny", classes=1)
    with pytest.raises(InputError, match="size"):
        init_model("unet", size="huge")
    m = init_model("unet", size="tiny", classes=[0, 7])
    assert m.info.classes == [0, 7] and m.info.stride == 4
    assert "untrained" in repr(m)
    assert np.isfinite(sum(float(p.detach().sum()) for p in m.network.parameters()))


def test_context_model_round_trip_and_old_files(tmp_path):
    m = init_model("unet", size="tiny", classes=3, context=3)
    assert m.info.context == 3 and m.info.in_channels == 3
    loaded = load_model(save_model(m, tmp_path / "c3.safetensors"))
    assert loaded.info.context == 3 and loaded.info.in_channels == 3
    # a file written before context existed (no key) reads as context 1
    good = save_model(init_model("unet", size="tiny", classes=3), tmp_path / "c1.safetensors")
    old = tmp_path / "old.safetensors"
    _rewrite_meta(good, old, lambda i, h: i.pop("context"))
    assert load_model(old).info.context == 1
    # a lying context on a 3-channel net is refused too
    bad = tmp_path / "bad.safetensors"
    _rewrite_meta(tmp_path / "c3.safetensors", bad, lambda i, h: i.update(context=1))
    with pytest.raises(ModelFileError, match="context 1 does not match in_channels 3"):
        load_model(bad)
    for k in (0, 2, 65):
        with pytest.raises(InputError, match="odd"):
            init_model("unet", size="tiny", context=k)


def test_header_length_starting_with_pickle_byte_loads(tmp_path, tiny_model):
    # a safetensors header of length 128 mod 256 starts the file with byte 0x80, like a pickle
    good = save_model(tiny_model, tmp_path / "good.safetensors")
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    hb = raw[8 : 8 + n].rstrip(b" ")
    hb += b" " * ((128 - len(hb)) % 256)
    odd = tmp_path / "odd.safetensors"
    odd.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + n :])
    assert odd.read_bytes()[:1] == b"\x80"
    loaded = load_model(odd)
    assert loaded.info.classes == tiny_model.info.classes


def test_hostile_headers_and_normalisations_are_one_line_errors(tmp_path, tiny_model):
    """A header nested 100000 deep (RecursionError), equal or crossed normalisation bounds (a division by
    zero in predict, inverted grey levels), and a truncated file whose length starts with 0x80."""
    good = save_model(tiny_model, tmp_path / "good.safetensors")
    raw = good.read_bytes()
    deep = b"[" * 100_000
    (tmp_path / "deep.safetensors").write_bytes(struct.pack("<Q", len(deep)) + deep)
    with pytest.raises(ModelFileError, match="header is not JSON"):
        load_model(tmp_path / "deep.safetensors")
    nested = tmp_path / "nested.safetensors"
    _rewrite_meta(good, nested, lambda i, h: i.update(train={"x": json.loads("[" * 50 + "]" * 50)}))
    load_model(nested)  # nesting as such is fine
    for low, high in ((0.5, 0.5), (0.7, 0.2), (None, 0.3)):
        bad = tmp_path / f"norm{low}{high}.safetensors"
        _rewrite_meta(good, bad, lambda i, h, lo=low, hi=high: i["normalization"].update(low=lo, high=hi))
        with pytest.raises(ModelFileError, match="high above low"):
            load_model(bad)
    trunc = tmp_path / "t.safetensors"  # header length 90,000,000 (first byte 0x80) in a 100-byte file
    trunc.write_bytes(struct.pack("<Q", 90_000_000) + raw[8:100])
    assert trunc.read_bytes()[:1] == b"\x80"
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(trunc)


def test_a_killed_save_leaves_no_temporary_file_for_long(tmp_path, tiny_model):
    import time

    from napari_xrayseg.core.output import STALE_TEMP_S

    old = tmp_path / ".m.safetensors.dead.tmp"  # what kill -9 mid-save left an hour ago
    old.write_bytes(b"x" * 100)
    fresh = tmp_path / ".m.safetensors.beef.tmp"  # another writer's, now
    fresh.write_bytes(b"y")
    t = time.time() - STALE_TEMP_S - 10
    os.utime(old, (t, t))
    save_model(tiny_model, tmp_path / "m.safetensors")
    assert not old.exists() and fresh.exists()


def test_voxel_size_round_trip_old_files_and_lies(tmp_path, tiny_model):
    from dataclasses import replace

    m = init_model("unet", size="tiny", classes=3)
    assert m.info.voxel_size is None and m.info.unit is None
    m.info = replace(m.info, voxel_size=[0.1, 0.05, 0.05], unit="um")
    p = save_model(m, tmp_path / "vs.safetensors")
    assert load_model(p).info.voxel_size == [0.1, 0.05, 0.05] and load_model(p).info.unit == "um"
    old = tmp_path / "old.safetensors"  # written before the keys existed
    _rewrite_meta(p, old, lambda i, h: (i.pop("voxel_size"), i.pop("unit")))
    assert load_model(old).info.voxel_size is None
    bad = tmp_path / "bad.safetensors"
    _rewrite_meta(p, bad, lambda i, h: i.update(voxel_size=[0.1, -1, 0.1]))
    with pytest.raises(ModelFileError, match="voxel_size"):
        load_model(bad)


def test_with_context_gives_a_3d_net_another_depth_and_keeps_its_weights(tmp_path):
    m = init_model("unet3d", size="tiny", classes=3, context=5, seed=0)
    deeper = with_context(m, 9)
    assert (deeper.info.context, deeper.info.params["in_channels"], m.info.context) == (9, 9, 5)
    x = torch.rand(1, 1, 8, 32, 32)
    m.network.eval()
    deeper.network.eval()
    with torch.no_grad():
        assert torch.equal(m.network.forward_volume(x), deeper.network.forward_volume(x))
    assert load_model(save_model(deeper, tmp_path / "d.safetensors")).info.context == 9
    with pytest.raises(InputError, match="input channels"):
        with_context(init_model("unet", size="tiny", classes=3, context=3), 5)
    with pytest.raises(InputError, match="odd number"):
        with_context(m, 4)


def test_a_tiny_file_declaring_a_huge_network_is_refused_without_building_it(tmp_path, tiny_model, monkeypatch):
    """A 1 kB file whose description declared channels [1024] * 8 made load_model build the network (6.3 GB)
    before it found the tensors missing: the shapes are compared on the meta device now."""
    good = save_model(tiny_model, tmp_path / "good.safetensors")
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["napari_xrayseg"])
    meta["params"].update(channels=[1024] * 8, strides=[2] * 7, num_res_units=4)
    header = {
        "__metadata__": {"napari_xrayseg": json.dumps(meta)},
        "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
    }
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    (tmp_path / "big.safetensors").write_bytes(struct.pack("<Q", len(hb)) + hb + b"\0" * 4)
    from napari_xrayseg.core import models

    built_on = []
    real = models.build_network
    monkeypatch.setattr(
        models, "build_network", lambda *a, **k: (built_on.append(torch.empty(0).device.type), real(*a, **k))[1]
    )
    with pytest.raises(ModelFileError, match="tensors do not match"):
        load_model(tmp_path / "big.safetensors")
    assert built_on == ["meta"]  # shapes only: no memory for the declared network
    assert load_model(good).info.classes == tiny_model.info.classes and built_on == ["meta", "meta", "cpu"]


def test_loading_a_model_leaves_the_callers_random_draws_alone(tmp_path):
    """load_model built the network with random initial weights from torch's global generator."""
    import torch

    path = save_model(init_model("unet", size="tiny", classes=3), tmp_path / "m.safetensors")
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    load_model(path)
    assert torch.equal(torch.rand(3), want)


def test_descriptions_that_crashed_later_are_refused_when_read(tmp_path, tiny_model):
    """QA (files from strangers): each loaded, then crashed segmenting, exporting or printing."""
    good = save_model(tiny_model, tmp_path / "good.safetensors")
    cases = {
        "arch": (lambda i: i.update(arch=["unet"]), r"unknown architecture \['unet'\]"),  # a TypeError before
        "pct": (lambda i: i["normalization"].update(percentiles=[-50, 500]), "percentiles .* 0 <= low < high"),
        "pct_str": (lambda i: i["normalization"].update(percentiles="abc"), "percentiles 'abc'"),
        "pct_rev": (lambda i: i["normalization"].update(percentiles=[99.5, 0.5]), "percentiles"),
        "names": (lambda i: i.update(class_names=["a", "line\nbreak", "\x1b[2Jb"]), "without control characters"),
        "unit": (lambda i: i.update(unit="\x1b[31mum"), "unit"),
        "avg": (lambda i: i["train"].update(kept="average", averaged_epochs=[3]), "averaged_epochs"),
        "blend": (lambda i: i["train"].update(start_blend_kept="x"), "start_blend_kept 'x' is not a number"),
        "self": (lambda i: i["train"].update(self_training="x"), "self_training 'x' is not an object"),
        "groups": (lambda i: i.update(format_version=2) or i["params"].update(groups=[[0], [1, 2]]), "only a unet3d"),
    }
    fine = tmp_path / "null.safetensors"  # null percentiles: the default, as every reader takes them (review)
    _rewrite_meta(good, fine, lambda i, h: i["normalization"].update(percentiles=None))
    load_model(fine)
    for name, (change, message) in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        _rewrite_meta(good, bad, lambda i, h, change=change: change(i))
        with pytest.raises(ModelFileError, match=message):
            read_model_info(bad)
        with pytest.raises(ModelFileError, match="invalid model description"):
            load_model(bad)


def test_old_pickles_and_appended_bytes_are_named_as_such(tmp_path, tiny_model):
    """A protocol 0/1 pickle (legacy torch.save) was called "truncated or of another format"; a model with bytes
    appended passed model-info and failed to load as "may be truncated" (QA, files from strangers)."""
    import pickle

    marker = tmp_path / "ran"
    for proto in (0, 1):
        f = tmp_path / f"p{proto}.pt"
        f.write_bytes(pickle.dumps({"weights": [1.0, 2.0], "x": ("a", 3)}, protocol=proto))
        with pytest.raises(ModelFileError, match="looks like a pickled PyTorch checkpoint"):
            read_model_info(f)
    assert not marker.exists()
    good = save_model(tiny_model, tmp_path / "good.safetensors")
    cut = tmp_path / "cut.safetensors"  # QA s45: a header length of 0x1880 cut to 4 bytes starts 0x80
    cut.write_bytes(b"\x80\x18\x00\x00")
    with pytest.raises(ModelFileError, match=r"is not a safetensors model file \(only 4 bytes\)"):
        read_model_info(cut)
    extra = tmp_path / "extra.safetensors"
    extra.write_bytes(good.read_bytes() + b"\x00" * 1000)
    for read in (read_model_info, load_model):
        with pytest.raises(ModelFileError, match="1,000 bytes follow the weights: not a file save_model wrote"):
            read(extra)


def test_a_model_whose_scores_overflow_is_an_error_not_class_0_everywhere(tmp_path, tiny_model):
    """A weight of 3e38 (finite: loading takes it) made every score NaN and every voxel class 0, without a word
    (QA, files from strangers)."""
    from napari_xrayseg import segment
    from napari_xrayseg.core.errors import InputError

    image = np.random.default_rng(1250).random((3, 32, 32), dtype=np.float32)
    segment(image, tiny_model, device="cpu")
    with torch.no_grad():
        next(iter(tiny_model.network.parameters())).fill_(3e38)  # finite, but a sum of them is not
    m = load_model(save_model(tiny_model, tmp_path / "big.safetensors"))
    with pytest.raises(InputError, match=r"non-finite scores \(NaN or inf\): the model's weights may be damaged"):
        segment(image, m, device="cpu")
