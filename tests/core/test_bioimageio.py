"""bioimage.io model packages: export, validation and test by bioimageio.core, same predictions, import back."""

import functools
import json
import sys
import warnings
import zipfile

import numpy as np
import pytest
import torch

from napari_xrayseg import make_phantom, segment, train
from napari_xrayseg.core.bioimageio import PACKAGE_MODEL_FILE, export_bioimageio, import_bioimageio
from napari_xrayseg.core.errors import InputError, ModelFileError, OutputExistsError
from napari_xrayseg.core.models import init_model, load_model, read_model_info, reclass, save_model

pytestmark = pytest.mark.needs("bioimageio.core")  # the bioimageio extra


@functools.lru_cache(maxsize=4)
def _pipeline(package):
    from bioimageio.core import create_prediction_pipeline, load_description

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_prediction_pipeline(load_description(package), devices=["cpu"])


def _core_predict(package, x):
    """bioimageio.core's prediction (its preprocessing included) for a raw (1, k, Y, X) input."""
    from bioimageio.core import predict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = predict(model=_pipeline(str(package)), inputs={"input": x})
    return sample.members["probabilities"].data.values


def _rdf(package):
    import yaml

    return yaml.safe_load(zipfile.ZipFile(package).read("rdf.yaml"))


def _rewrite(src, dst, rdf, drop=()):
    """A copy of package ``src`` with another rdf.yaml and without the members in ``drop``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            if item.filename == "rdf.yaml":
                zout.writestr("rdf.yaml", json.dumps(rdf))
            elif item.filename not in drop:
                zout.writestr(item, zin.read(item.filename))
    return dst


@pytest.fixture(scope="module")
def volume():
    image, truth = make_phantom((5, 64, 80), seed=2)
    labels = np.zeros_like(truth)
    labels[1], labels[3] = truth[1], truth[3]
    return image, labels


@pytest.fixture(scope="module", params=["image", "fixed"])
def exported(request, volume, tmp_path_factory):
    """A trained tiny 2.5D model (per-image or fixed normalisation), its file and its package."""
    d = tmp_path_factory.mktemp(f"bio-{request.param}")
    image, labels = volume
    model = train(
        image, labels, arch="unet", size="tiny", context=3, epochs=2, steps_per_epoch=3, patch=32, batch=2,
        normalize=request.param, out=d / "m.safetensors",
    )  # fmt: skip
    package = export_bioimageio(
        d / "m.safetensors", d / "m.zip", image=image[:3], side=48, authors=["T. Ester"], test=False
    )
    return model, d / "m.safetensors", package


def test_package_is_valid_and_passes_bioimageio_core_test(exported):
    from bioimageio.core import test_model
    from bioimageio.spec import InvalidDescr, load_description

    model, _, package = exported
    names = set(zipfile.ZipFile(package).namelist())
    assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy"} <= names
    assert {"weights_torchscript.pt", PACKAGE_MODEL_FILE} <= names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        descr = load_description(package)
        summary = test_model(package, weight_format="torchscript", devices=["cpu"])
    assert not isinstance(descr, InvalidDescr)
    assert summary.status == "passed", summary.format()
    assert str(descr.format_version).startswith("0.5")
    assert descr.weights.torchscript is not None and descr.weights.pytorch_state_dict is None
    (inp,), (out,) = descr.inputs, descr.outputs
    assert [str(a.id) for a in inp.axes] == ["batch", "channel", "y", "x"]
    assert inp.axes[1].channel_names == ["slice-1", "slice", "slice+1"]
    assert out.axes[1].channel_names == model.info.class_names
    assert [c.text.split(":")[0] for c in descr.cite][-3:] == [
        "napari-xrayseg",
        "Cardoso et al. MONAI",
        "Ronneberger et al. U-Net",
    ]
    assert [a.name for a in descr.authors] == ["T. Ester"] and str(descr.license) == "CC-BY-4.0"
    cfg = _rdf(package)["config"]["napari_xrayseg"]
    assert cfg["model"]["history"] == model.info.history and cfg["classes"] == model.info.classes
    readme = zipfile.ZipFile(package).read("README.md").decode()
    assert "## Validation" in readme and f"{model.info.validation[0]:.4f}" in readme


def test_preprocessing_expresses_our_normalisation(exported):
    model, _, package = exported
    steps = _rdf(package)["inputs"][0]["preprocessing"]
    norm = model.info.normalization
    if norm["low"] is None:  # per image: the same percentiles of each input
        (scale,) = [s for s in steps if s["id"] == "scale_range"]
        assert [scale["kwargs"]["min_percentile"], scale["kwargs"]["max_percentile"]] == norm["percentiles"]
    else:  # fixed: the stored bounds, 0 and 1 at low and high
        (scale,) = [s for s in steps if s["id"] == "scale_linear"]
        gain, offset = scale["kwargs"]["gain"], scale["kwargs"]["offset"]
        assert gain * norm["low"] + offset == pytest.approx(0, abs=1e-9)
        assert gain * norm["high"] + offset == pytest.approx(1, abs=1e-9)


def test_bioimageio_core_predicts_what_we_segment(exported, volume):
    """bioimageio.core on the package's test input, and on a whole other slice, against `segment`."""
    model, _, package = exported
    image = volume[0]
    z = zipfile.ZipFile(package)
    x, expected = np.load(z.open("test_input.npy")), np.load(z.open("test_output.npy"))
    got = _core_predict(package, x)
    assert got.shape == expected.shape == (1, 3, 48, 48)
    assert np.abs(got - expected).max() < 1e-4
    # our tool on the 3 slices the test input came from (centre crop): the middle slice's labels.
    # In fp32 as the TorchScript weights: "auto" picks bf16 on CPUs with native bf16.
    lut = np.asarray(model.info.classes)
    ours = segment(image[:3, 8:56, 16:64], model, device="cpu", precision="fp32")[1]
    assert (lut[got[0].argmax(0)] == ours).mean() >= 0.999
    # a whole slice of another shape (64 x 80), as bioimageio.core's users would run it
    stack = np.ascontiguousarray(image[1:4][None])
    ours = segment(image[1:4], model, device="cpu", precision="fp32")[1]
    assert (lut[_core_predict(package, stack)[0].argmax(0)] == ours).mean() >= 0.999


def test_import_restores_the_model_bit_for_bit(exported, tmp_path):
    _, path, package = exported
    out = import_bioimageio(package, tmp_path / "back")
    assert out == tmp_path / "back.safetensors"
    assert out.read_bytes() == path.read_bytes()
    a, b = load_model(path), load_model(out)
    assert a.info == b.info
    for (ka, ta), (kb, tb) in zip(a.network.state_dict().items(), b.network.state_dict().items()):
        assert ka == kb and torch.equal(ta, tb)
    with pytest.raises(Exception, match="exists"):
        import_bioimageio(package, out)
    # an unpacked package (a folder) imports alike
    zipfile.ZipFile(package).extractall(tmp_path / "unpacked")
    assert import_bioimageio(tmp_path / "unpacked", tmp_path / "b2").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("grouped", [False, True])
def test_3d_model_is_packaged_as_a_volume_model(tmp_path, grouped):
    """unet3d (a Model object, not a file) becomes a z, y, x model that runs volumes as segment does.

    Also one whose classes are groups of its scores (a pretrained start matched to fewer classes).
    """
    from bioimageio.core import test_model

    model = init_model("unet3d", size="tiny", context=5, classes=[0, 4], class_names=["matrix", "crack"])
    if grouped:
        base = init_model("unet3d", size="tiny", context=5, classes=[1, 2, 3], seed=3)
        base.info.train["class_grey"] = [0.1, 0.8, 0.5]
        model = reclass(base, [0, 4], [0.1, 0.7])
        assert model.info.params["groups"] == [[0], [1, 2]]
    package = export_bioimageio(model, tmp_path / "m3", side=32, test=False)
    assert package == tmp_path / "m3.zip" and model.path is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert test_model(package, weight_format="torchscript", devices=["cpu"]).status == "passed"
    rdf = _rdf(package)
    assert [a.get("id", a["type"]) for a in rdf["inputs"][0]["axes"]] == ["batch", "channel", "z", "y", "x"]
    assert rdf["inputs"][0]["axes"][2]["size"] == {"min": 4, "step": 4}  # depth + 2 x 2 context: z stride 4
    x = np.load(zipfile.ZipFile(package).open("test_input.npy"))
    assert x.shape == (1, 1, 8, 32, 32)
    # a volume of another size, against segment() on the same volume
    volume = make_phantom((12, 40, 48), seed=5)[0]
    got = _core_predict(package, np.ascontiguousarray(volume[None, None]))
    ours = segment(volume, model, device="cpu", precision="fp32")
    assert (np.asarray([0, 4])[got[0].argmax(0)] == ours).mean() >= 0.999
    back = load_model(import_bioimageio(package, tmp_path / "m3.safetensors"))
    assert back.info.classes == [0, 4] and back.info.arch == "unet3d"
    assert back.info.params.get("groups") == model.info.params.get("groups")
    for ta, tb in zip(model.network.state_dict().values(), back.network.state_dict().values()):
        assert torch.equal(ta, tb)


def test_foreign_and_damaged_packages_are_refused(exported, tmp_path):
    _, _, package = exported
    rdf = _rdf(package)
    foreign = {**rdf, "config": {}}
    with pytest.raises(InputError, match="not written by napari-xrayseg .weights: torchscript") as e:
        import_bioimageio(_rewrite(package, tmp_path / "f.zip", foreign, drop=[PACKAGE_MODEL_FILE]), tmp_path / "o")
    assert "\n" not in str(e.value)
    pickled = {**foreign, "weights": {"pytorch_state_dict": {"source": "weights.pt"}}}
    with pytest.raises(InputError, match="only pickled weights .pytorch_state_dict.: napari-xrayseg never unpickles"):
        import_bioimageio(_rewrite(package, tmp_path / "p.zip", pickled, drop=[PACKAGE_MODEL_FILE]), tmp_path / "o")
    tampered = json.loads(json.dumps(rdf))
    tampered["config"]["napari_xrayseg"]["model_sha256"] = "0" * 64
    with pytest.raises(ModelFileError, match="does not match its recorded SHA-256"):
        import_bioimageio(_rewrite(package, tmp_path / "t.zip", tampered), tmp_path / "o")
    # a member whose recorded SHA-256 matches but which is no model: named by the package, not a temporary copy
    import hashlib

    good = zipfile.ZipFile(package).read(PACKAGE_MODEL_FILE)
    bad = good[: len(good) // 2]
    swapped = json.loads(json.dumps(rdf))
    swapped["config"]["napari_xrayseg"]["model_sha256"] = hashlib.sha256(bad).hexdigest()
    cut = _rewrite(package, tmp_path / "c.zip", swapped, drop=[PACKAGE_MODEL_FILE])
    with zipfile.ZipFile(cut, "a") as z:
        z.writestr(PACKAGE_MODEL_FILE, bad)
    with pytest.raises(ModelFileError) as e:
        import_bioimageio(cut, tmp_path / "o")
    assert f"c.zip ({PACKAGE_MODEL_FILE})" in str(e.value) and "xrayseg-import-" not in str(e.value)
    with pytest.raises(InputError, match="not a zip file"):
        import_bioimageio(exported[1], tmp_path / "o")
    with pytest.raises(InputError, match="does not exist"):
        import_bioimageio(tmp_path / "missing.zip", tmp_path / "o")
    assert not list(tmp_path.glob("o*"))


def test_hostile_packages_are_refused_in_one_line(exported, tmp_path):
    """A member with a bad CRC (a traceback before), a folder package whose attachment is a link (to
    /proc/self/pagemap: an endless copy into the temporary folder), a sparse 3 GB rdf.yaml (read whole)."""
    import os
    import shutil

    _, _, package = exported
    crc = tmp_path / "crc.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(crc, "w", zipfile.ZIP_STORED) as dst:
        for n in src.namelist():
            dst.writestr(n, src.read(n))
    raw = bytearray(crc.read_bytes())
    at = raw.find(b"type: model")
    raw[at : at + 4] = b"TYPE"  # the stored bytes change, the recorded CRC does not
    crc.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="cannot read rdf.yaml .*Bad CRC.*damaged"):
        import_bioimageio(crc, tmp_path / "o")
    folder = tmp_path / "pkg"
    with zipfile.ZipFile(package) as z:
        z.extractall(folder)
    shutil.move(folder / PACKAGE_MODEL_FILE, tmp_path / "elsewhere.safetensors")
    os.symlink(tmp_path / "elsewhere.safetensors", folder / PACKAGE_MODEL_FILE)
    with pytest.raises(ModelFileError, match="is a link, not a file of the package"):
        import_bioimageio(folder, tmp_path / "o")
    with open(folder / "rdf.yaml", "r+b") as fh:
        fh.truncate(3 << 30)  # sparse: 3 GB on paper
    with pytest.raises(InputError, match="larger than 4194304 bytes: not a model description"):
        import_bioimageio(folder, tmp_path / "o")
    assert not list(tmp_path.glob("o*"))
    # a zip bomb: 256 MiB of zeros as the model file (a few hundred kB zipped) was copied whole before its hash
    # refused it (4 GiB in the QA run); refused at its first bytes now, nothing copied
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for n in src.namelist():
            if n != PACKAGE_MODEL_FILE:
                dst.writestr(n, src.read(n))
        with dst.open(PACKAGE_MODEL_FILE, "w", force_zip64=True) as f:
            zeros = bytes(1 << 20)
            for _ in range(256):
                f.write(zeros)
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(ModelFileError, match="does not start like a safetensors model file: the package is damaged"):
        import_bioimageio(bomb, tmp_path / "o")
    assert not list(tmp_path.glob("o*"))


def test_export_refuses_bad_arguments_in_one_line(tiny_model, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="name 'a/b' must be 5-128 letters"):
        export_bioimageio(tiny_model, tmp_path / "m.zip", name="a/b", test=False)
    with pytest.raises(InputError, match="needs a 'text' and a 'doi' or 'url'"):
        export_bioimageio(tiny_model, tmp_path / "m.zip", cite=[{"text": "x"}], test=False)
    with pytest.raises(InputError, match="smallest input is 4x4"):
        export_bioimageio(tiny_model, tmp_path / "m.zip", image=np.zeros((2, 2, 9), np.float32), test=False)
    from napari_xrayseg import init_model

    two = init_model("unet", size="tiny", classes=3, channels=2)  # QA: exported as 6 "slices" normalised together
    with pytest.raises(InputError, match="takes 2 image channels, which this export does not describe"):
        export_bioimageio(two, tmp_path / "m.zip", test=False)
    monkeypatch.setitem(sys.modules, "bioimageio.core", None)  # the extra not installed
    with pytest.raises(InputError, match=r'pip install "napari-xrayseg\[bioimageio\]"'):
        export_bioimageio(tiny_model, tmp_path / "m.zip")
    assert not list(tmp_path.iterdir())


def test_saved_model_file_is_the_attachment(tiny_model, tmp_path):
    """Exported from a file: the attachment is that very file (its metadata and weights as they were)."""
    tiny_model.info.voxel_size, tiny_model.info.unit = [2.0, 0.5, 0.25], "um"
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    package = export_bioimageio(path, tmp_path / "m.zip", side=16, test=False)
    assert zipfile.ZipFile(package).read(PACKAGE_MODEL_FILE) == path.read_bytes()
    y, x = _rdf(package)["inputs"][0]["axes"][2:]  # the training voxel size, in bioimage.io's unit names
    assert (y["unit"], y["scale"], x["unit"], x["scale"]) == ("micrometer", 0.5, "micrometer", 0.25)
    with pytest.raises(OutputExistsError, match="model package .* exists: choose another path"):
        export_bioimageio(path, tmp_path / "m.zip", test=False)  # refused before any work


def test_fixed_bounds_reproduce_segment_on_the_whole_volume(exported, volume, tmp_path):
    """Per-image models: freezing the volume's bounds makes every slice's prediction equal segment()'s."""
    from napari_xrayseg.core.normalize import compute_normalization
    from napari_xrayseg.core.tiling import stack_context

    model, path, _ = exported
    image = volume[0]
    if model.info.normalization["low"] is not None:
        with pytest.raises(InputError, match="give the image"):
            export_bioimageio(path, tmp_path / "f.zip", fixed_bounds=True, test=False)
        return
    package = export_bioimageio(path, tmp_path / "f.zip", image=image, fixed_bounds=True, side=32, test=False)
    (scale,) = [s for s in _rdf(package)["inputs"][0]["preprocessing"] if s["id"] == "scale_linear"]
    norm = compute_normalization(image)
    assert scale["kwargs"]["gain"] == pytest.approx(1 / (norm["high"] - norm["low"]))
    assert _rdf(package)["config"]["napari_xrayseg"]["model"]["normalization"]["low"] is None  # the model's own
    lut = np.asarray(model.info.classes)
    stacks = stack_context(image, 3)
    got = np.stack([lut[_core_predict(package, np.ascontiguousarray(s[None]))[0].argmax(0)] for s in stacks])
    assert (got == segment(image, model, device="cpu", precision="fp32")).mean() >= 0.999
    # from a Model object too, the attached model keeps normalising each image itself
    package = export_bioimageio(model, tmp_path / "g.zip", image=image, fixed_bounds=True, side=16, test=False)
    (tmp_path / "a.safetensors").write_bytes(zipfile.ZipFile(package).read(PACKAGE_MODEL_FILE))
    assert read_model_info(tmp_path / "a.safetensors").normalization["low"] is None


def test_a_3d_model_with_its_default_context_passes_its_own_package_test_on_an_image(tmp_path):
    """Context 15 makes the test input 18 slices deep: the expected output's bounds sampled 16 of them, the
    package's scale_range all 18, and export --image refused the default model (2 % of outputs off)."""
    from napari_xrayseg.core.models import pretrained_path

    model = load_model(pretrained_path())  # the start of every default training: trained weights
    assert model.info.in_channels == 15 and model.info.normalization.get("low") is None  # bounds from each image
    volume = make_phantom((24, 64, 64), seed=7, preset="hard")[0]
    package = export_bioimageio(model, tmp_path / "m15", image=volume, side=64, test=True)
    assert np.load(zipfile.ZipFile(package).open("test_input.npy")).shape[2] == 18
