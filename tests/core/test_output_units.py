"""Voxel size, units and class names travel into every output of segment() (labels, confidence,
pyramid levels) and into the model file of train(): from the options, else the input file, else
the model; read back from the files with io.read_voxel_size / read_class_names."""

import logging

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from faults import NthCheck
from napari_xrayseg import segment, train
from napari_xrayseg.core.errors import Cancelled, InputError
from napari_xrayseg.core.io import open_volume, read_class_names, read_voxel_size, voxel_size_of
from napari_xrayseg.core.models import init_model
from napari_xrayseg.core.units import ngff_axes, ngff_scale_transforms
from napari_xrayseg.core.writer import OUTPUT_ATTR, output_complete, write_pyramid

NAMES = ["pore", "nickel", "YSZ"]
KW = {"device": "cpu", "tile": 32}


@pytest.fixture
def model():
    return init_model("unet", size="tiny", classes=3, tile=32, class_names=NAMES)


def _image(shape=(4, 40, 40)):
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def _ome_image(path, img, voxel, unit):
    """An OME-Zarr image (one level) as a microscope or beamline would write it."""
    g = zarr.open_group(str(path), mode="w")
    g.create_array("0", shape=img.shape, dtype=img.dtype, chunks=(2, *img.shape[1:]))[...] = img
    g.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": ngff_axes(unit),
                "datasets": [{"path": "0", "coordinateTransformations": ngff_scale_transforms(voxel, 1)[0]}],
            }
        ],
    }
    return path


def test_pyramid_and_confidence_carry_units_scales_and_names(tmp_path, model):
    out = tmp_path / "seg.zarr"
    labels, conf = segment(
        _image((2, 264, 264)),
        model,
        out=out,
        pyramid=True,
        confidence="maxprob",
        voxel_size=(0.2, 0.1, 0.1),
        unit="micron",
        device="cpu",
        tile=64,
    )
    ome = zarr.open_group(str(out), mode="r").attrs["ome"]
    ms = ome["multiscales"][0]
    assert [a["unit"] for a in ms["axes"]] == ["micrometer"] * 3
    assert [d["path"] for d in ms["datasets"]] == ["0", "1"]
    assert ms["datasets"][1]["coordinateTransformations"] == [{"type": "scale", "scale": [0.4, 0.2, 0.2]}]
    assert [p["name"] for p in ome["image-label"]["properties"]] == NAMES
    assert [c["label-value"] for c in ome["image-label"]["colors"]] == [1, 2, 3]
    assert all(len(c["rgba"]) == 4 for c in ome["image-label"]["colors"])
    # read back by the same readers that read users' files
    assert read_voxel_size(out) == ((0.2, 0.1, 0.1), "um")
    assert read_voxel_size(out, dataset="1") == ((0.4, 0.2, 0.2), "um")
    assert read_class_names(out) == {1: "pore", 2: "nickel", 3: "YSZ"}
    assert read_voxel_size(tmp_path / "seg-maxprob.zarr") == ((0.2, 0.1, 0.1), "um")
    assert voxel_size_of(open_volume(out)) == ((0.2, 0.1, 0.1), "um")  # level 0, opened as an array
    assert labels.shape == conf.shape == (2, 264, 264)


def test_voxel_size_from_the_input_file_converted_to_a_unit(tmp_path, model):
    img = _image()
    src = _ome_image(tmp_path / "img.zarr", img, (50.0, 25.0, 25.0), "nm")
    segment(open_volume(src), model, out=tmp_path / "a.zarr", **KW)
    assert read_voxel_size(tmp_path / "a.zarr") == ((50.0, 25.0, 25.0), "nm")
    assert zarr.open_array(str(tmp_path / "a.zarr"), mode="r").attrs[OUTPUT_ATTR]["class_names"] == NAMES
    segment(open_volume(src), model, out=tmp_path / "b.zarr", unit="um", **KW)
    assert read_voxel_size(tmp_path / "b.zarr") == ((0.05, 0.025, 0.025), "um")
    # an ImageJ TIFF (compressed: read through tifffile's zarr interface)
    tif = tmp_path / "img.tif"
    tifffile.imwrite(
        tif, img, imagej=True, resolution=(4.0, 4.0), metadata={"spacing": 0.5, "unit": "um"}, compression="zlib"
    )
    segment(open_volume(tif), model, out=tmp_path / "c.zarr", **KW)
    assert read_voxel_size(tmp_path / "c.zarr") == ((0.5, 0.25, 0.25), "um")
    # the option wins over the file
    segment(open_volume(tif), model, out=tmp_path / "d.zarr", voxel_size=2, unit="nm", **KW)
    assert read_voxel_size(tmp_path / "d.zarr") == ((2.0, 2.0, 2.0), "nm")


def test_without_one_the_models_voxel_size_else_none(tmp_path, model):
    img = _image()
    segment(img, model, out=tmp_path / "none.zarr", pyramid=True, **KW)
    assert read_voxel_size(tmp_path / "none.zarr") == ((1.0, 1.0, 1.0), "voxel")  # voxel units: no physical size
    ms = zarr.open_group(str(tmp_path / "none.zarr"), mode="r").attrs["ome"]["multiscales"][0]
    assert all("unit" not in a for a in ms["axes"])
    segment(img, model, out=tmp_path / "plain.zarr", **KW)
    assert read_voxel_size(tmp_path / "plain.zarr") is None
    model.info.voxel_size, model.info.unit = [0.1, 0.05, 0.05], "um"
    segment(img, model, out=tmp_path / "m.zarr", **KW)
    assert read_voxel_size(tmp_path / "m.zarr") == ((0.1, 0.05, 0.05), "um")
    segment(img[0], model, out=tmp_path / "m2d.zarr", **KW)  # a 2D image takes the model's (y, x)
    assert read_voxel_size(tmp_path / "m2d.zarr") == ((0.05, 0.05), "um")


def test_a_very_different_voxel_size_warns_and_a_close_one_does_not(tmp_path, model, caplog):
    model.info.voxel_size, model.info.unit = [0.05, 0.05, 0.05], "um"
    src = _ome_image(tmp_path / "img.zarr", _image(), (200.0, 200.0, 200.0), "nm")
    with caplog.at_level(logging.WARNING, logger="napari_xrayseg"):
        segment(open_volume(src), model, **KW)  # in memory too
    (rec,) = [r for r in caplog.records if "trained at" in r.getMessage()]
    assert "x4" in rec.getMessage() and "resample" in rec.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="napari_xrayseg"):
        segment(open_volume(src), model, voxel_size=60, unit="nm", **KW)
    assert not [r for r in caplog.records if "trained at" in r.getMessage()]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"voxel_size": (1.0, 2.0)}, "2 values for a 3D volume"),
        ({"voxel_size": -1}, "positive"),
        ({"voxel_size": 1, "unit": "furlong"}, "unknown length unit"),
    ],
)
def test_bad_voxel_size_fails_before_writing(tmp_path, model, options, match):
    with pytest.raises(InputError, match=match):
        segment(_image(), model, out=tmp_path / "x.zarr", **options, **KW)
    assert not (tmp_path / "x.zarr").exists()


def test_write_pyramid_scales_every_level(tmp_path):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("0", shape=(20, 33, 40), dtype="uint8")[...] = 1
    meta = {"voxel_size": [2.0, 1.0, 1.0], "unit": "nm", "classes": [1, 2], "class_names": ["a", "b"]}
    levels = write_pyramid(g, min_side=8, meta=meta)
    assert len(levels) == 4
    for i in range(4):
        assert read_voxel_size(tmp_path / "g.zarr", dataset=str(i)) == ((2.0 * 2**i, 2.0**i, 2.0**i), "nm")
    assert read_class_names(tmp_path / "g.zarr") == {1: "a", 2: "b"}


def test_train_records_the_voxel_size_given_read_or_inherited(tmp_path):
    img = _image((4, 32, 32))
    ann = np.zeros(img.shape, np.uint8)
    ann[1] = 1 + (img[1] > 0.5)
    kw = {"size": "tiny", "epochs": 1, "steps_per_epoch": 1, "batch": 1, "patch": 32, "device": "cpu"}
    src = _ome_image(tmp_path / "img.zarr", img, (0.3, 0.1, 0.1), "um")
    read = train(open_volume(src), ann, **kw)
    assert (read.info.voxel_size, read.info.unit) == ([0.3, 0.1, 0.1], "um")
    inherited = train(img, ann, init=read, context=read.info.context, **kw)  # fine-tuning keeps it
    assert (inherited.info.voxel_size, inherited.info.unit) == ([0.3, 0.1, 0.1], "um")
    given = train(open_volume(src), ann, voxel_size=40, unit="nm", out=tmp_path / "m.safetensors", **kw)
    assert (given.info.voxel_size, given.info.unit) == ([40.0, 40.0, 40.0], "nm")
    from napari_xrayseg.core.models import read_model_info

    assert read_model_info(tmp_path / "m.safetensors").voxel_size == [40.0, 40.0, 40.0]  # in the file
    assert train(img, ann, **kw).info.voxel_size is None
    with pytest.raises(InputError, match="2 values"):
        train(img, ann, voxel_size=(1, 2), **kw)


def test_voxel_size_of_arrays_from_files_and_memory(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("a/vol", data=np.zeros((2, 4, 4), np.float32)).attrs["element_size_um"] = [1.0, 0.5, 0.5]
    assert voxel_size_of(open_volume(tmp_path / "v.h5")) == ((1.0, 0.5, 0.5), "um")
    np.save(tmp_path / "v.npy", np.zeros((2, 4, 4), np.float32))
    assert voxel_size_of(open_volume(tmp_path / "v.npy")) is None
    import dask.array as da

    assert voxel_size_of(da.zeros((2, 4, 4))) is None and voxel_size_of(np.zeros((2, 4, 4))) is None


def test_analyze_reads_the_voxel_size_of_a_segment_output(tmp_path, model):
    from napari_xrayseg.core.microstructure import analyze

    segment(_image(), model, out=tmp_path / "s.zarr", pyramid=True, voxel_size=(0.2, 0.1, 0.1), **KW)
    m = analyze(open_volume(tmp_path / "s.zarr"), tortuosity=False)
    assert m.voxel_size == (0.2, 0.1, 0.1) and m.unit == "um"
    assert analyze(open_volume(tmp_path / "s.zarr"), unit="nm", tortuosity=False).voxel_size == (200.0, 100.0, 100.0)
    assert analyze(open_volume(tmp_path / "s.zarr"), unit="voxel", tortuosity=False).voxel_size == (1.0, 1.0, 1.0)


def test_resume_records_the_voxel_size_of_the_run_that_finishes(tmp_path, model):
    img, out = _image((6, 40, 40)), tmp_path / "r.zarr"
    opts = {"out": out, "pyramid": True, "confidence": "entropy", "slab": 2, **KW}
    with pytest.raises(Cancelled):
        segment(img, model, voxel_size=1.0, unit="nm", cancel=NthCheck(3), **opts)
    assert read_voxel_size(out) == ((1.0, 1.0, 1.0), "nm") and not output_complete(out)
    segment(img, model, voxel_size=(0.3, 0.2, 0.2), unit="um", resume=True, **opts)
    assert output_complete(out)
    assert read_voxel_size(out) == ((0.3, 0.2, 0.2), "um")
    assert read_voxel_size(tmp_path / "r-entropy.zarr") == ((0.3, 0.2, 0.2), "um")
    # resuming a finished output only updates its metadata (every level keeps its scale)
    big, out2 = _image((2, 264, 40)), tmp_path / "p.zarr"
    segment(big, model, out=out2, pyramid=True, voxel_size=1, **KW)
    segment(big, model, out=out2, pyramid=True, voxel_size=2, resume=True, **KW)
    assert read_voxel_size(out2, dataset="1") == ((4.0, 4.0, 4.0), "um")


def test_a_plain_zarr_group_with_one_array_records_nothing_or_its_attributes(tmp_path, model):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("vol", shape=(4, 40, 40), dtype="float32")[...] = _image()
    assert voxel_size_of(open_volume(tmp_path / "g.zarr")) is None  # neither the array nor the group says
    segment(open_volume(tmp_path / "g.zarr"), model, out=tmp_path / "a.zarr", **KW)
    assert read_voxel_size(tmp_path / "a.zarr") is None
    g.attrs["voxel_size"], g.attrs["unit"] = [3.0, 2.0, 2.0], "nm"
    assert read_voxel_size(tmp_path / "g.zarr", dataset="vol") == ((3.0, 2.0, 2.0), "nm")
    g["vol"].attrs["voxel_size"] = [5.0, 4.0, 4.0]
    # the array's own, without a unit: taken as um (said), never applied to numbers labelled in voxels
    assert voxel_size_of(open_volume(tmp_path / "g.zarr")) == ((5.0, 4.0, 4.0), "um")


def test_api_reads_names_and_takes_paths_as_the_cli_does(tmp_path, model):
    """evaluate(path) names the phases a predict output records (it said class 1, 2, 3 where the CLI named
    them); analyze takes a path (it failed with "got shape ()")."""
    from napari_xrayseg.core.io import open_volume
    from napari_xrayseg.core.metrics import evaluate
    from napari_xrayseg.core.microstructure import analyze

    img = _image()
    out = tmp_path / "seg.zarr"
    segment(img, model, out=out, voxel_size=0.05, unit="um", **KW)
    truth = np.asarray(open_volume(out))
    names = dict(zip(model.info.classes, model.info.class_names))
    assert evaluate(out, truth).class_names == names
    assert evaluate(open_volume(out), truth).class_names == names
    segment(img, model, out=tmp_path / "p.zarr", pyramid=True, **KW)
    assert evaluate(open_volume(tmp_path / "p.zarr"), truth).class_names == names  # a pyramid level: its group's
    m = analyze(out, tortuosity=False)
    assert m.unit == "um" and m.voxel_size == (0.05, 0.05, 0.05)
    assert m.phases and all(p.name == names[k] for k, p in m.phases.items())


def test_the_origin_travels_into_the_outputs_and_back(tmp_path, model):
    """QA: a segmentation of a translated image (a crop of a larger scan) reopened at 0, away from its image."""
    from napari_xrayseg.core.io import origin_of, read_origin

    img = _image((8, 40, 40))
    vs = {"voxel_size": (0.5, 0.1, 0.1), "unit": "um"}
    segment(img, model, out=tmp_path / "o.zarr", origin=(10, 5, 2.5), **vs, **KW)
    assert read_origin(tmp_path / "o.zarr") == ((10.0, 5.0, 2.5), "um")
    # a pyramid: every level translated (OME-Zarr readers place it), read back through the OME path too
    segment(img, model, out=tmp_path / "p.zarr", origin=(10, 5, 2.5), pyramid=True, **vs, **KW)
    g = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    for level in g.attrs["ome"]["multiscales"][0]["datasets"]:
        assert {"type": "translation", "translation": [10.0, 5.0, 2.5]} in level["coordinateTransformations"]
    assert read_origin(tmp_path / "p.zarr") == ((10.0, 5.0, 2.5), "um")  # a group: from its OME transformations
    # an input OME-Zarr's translation, in its unit, written in the output's (nm here)
    _ome_image(tmp_path / "in.zarr", img, (0.5, 0.1, 0.1), "micrometer")
    root = zarr.open_group(str(tmp_path / "in.zarr"), mode="r+")
    ome = root.attrs["ome"]
    ome["multiscales"][0]["datasets"][0]["coordinateTransformations"].append(
        {"type": "translation", "translation": [1.0, 2.0, 3.0]}
    )
    root.attrs["ome"] = ome
    assert origin_of(open_volume(tmp_path / "in.zarr")) == ((1.0, 2.0, 3.0), "um")
    segment(open_volume(tmp_path / "in.zarr"), model, out=tmp_path / "nm.zarr", unit="nm", **KW)
    assert read_origin(tmp_path / "nm.zarr") == ((1000.0, 2000.0, 3000.0), "nm")
    # none given, none in the file: none recorded; a bad one refused before anything is written
    segment(img, model, out=tmp_path / "none.zarr", **KW)
    assert read_origin(tmp_path / "none.zarr") is None
    with pytest.raises(InputError, match=r"origin .* must be 3 finite numbers"):
        segment(img, model, out=tmp_path / "bad.zarr", origin=(1, 2), **KW)
    assert not (tmp_path / "bad.zarr").exists()


def test_a_resumed_output_keeps_the_origin_of_the_run_that_finishes(tmp_path, model):
    from napari_xrayseg.core.io import read_origin

    img = _image((8, 40, 40))
    with pytest.raises(Cancelled):
        segment(img, model, out=tmp_path / "r.zarr", slab=2, cancel=NthCheck(3), origin=(1, 2, 3), **KW)
    segment(img, model, out=tmp_path / "r.zarr", slab=2, resume=True, origin=(4, 5, 6), **KW)
    assert output_complete(tmp_path / "r.zarr") and read_origin(tmp_path / "r.zarr") == ((4.0, 5.0, 6.0), "voxel")


def test_a_batch_records_each_inputs_own_voxel_size_and_origin(tmp_path, model):
    """segment_many(per_input=): crops of one scan at different places and voxel sizes (napari layers in the
    Segment widget's every-selected mode) each keep theirs; the batch-wide options apply to the rest."""
    from napari_xrayseg.core.batch import segment_many
    from napari_xrayseg.core.io import read_origin, read_voxel_size

    img = _image((4, 32, 32))
    own = {"b": {"voxel_size": (0.2, 0.1, 0.1), "unit": "um", "origin": (8, 0, 2)}}
    s = segment_many(
        {"a": img, "b": img}, model, out_dir=tmp_path, fmt="zarr", voxel_size=(1, 1, 1), unit="um", per_input=own, **KW
    )
    assert s.ok
    assert read_voxel_size(tmp_path / "a.zarr") == ((1.0, 1.0, 1.0), "um") and read_origin(tmp_path / "a.zarr") is None
    assert read_voxel_size(tmp_path / "b.zarr") == ((0.2, 0.1, 0.1), "um")
    assert read_origin(tmp_path / "b.zarr") == ((8.0, 0.0, 2.0), "um")
    with pytest.raises(InputError, match=r"per_input names \['c'\], which are not inputs"):
        segment_many({"a": img}, model, per_input={"c": {"origin": (1, 2, 3)}}, **KW)
    with pytest.raises(InputError, match=r"per_input\['a'\] sets \['tile'\]: only"):
        segment_many({"a": img}, model, per_input={"a": {"tile": 32}}, **KW)
    with pytest.raises(InputError, match=r"per_input\['a'\] is None: give a dict"):
        segment_many({"a": img}, model, per_input={"a": None}, **KW)


@pytest.mark.parametrize("big", [False, True], ids=["imagej", "bigtiff"])
def test_label_tiffs_keep_voxel_size_and_origin_for_any_reader(tmp_path, monkeypatch, big):
    """QA h4 (outputs in other tools): label TIFFs over 4 GB (BigTIFF) wrote their resolution without a unit, so
    readers took 0.25 um voxels for 6350 um (inches) and lost z; TIFFs of a translated image dropped the origin
    (it was only in the JSON), so the labels reopened away from their image, in Fiji too."""
    import tifffile

    from napari_xrayseg.core import batch
    from napari_xrayseg.core.io import read_origin, read_voxel_size

    if big:
        monkeypatch.setattr(batch, "BIGTIFF_VOXELS", 10)
    from napari_xrayseg.core.units import label_color

    meta = {"voxel_size": [0.5, 0.25, 0.25], "unit": "um", "origin": [10.0, 20.0, 30.0], "classes": [1, 2, 3]}
    labels = np.ones((3, 8, 8), np.uint8)
    path = batch._write_tiff(tmp_path / "l.tif", labels, meta, overwrite=False, inputs=[])
    assert read_voxel_size(path) == ((0.5, 0.25, 0.25), "um")
    assert read_origin(path) == ((10.0, 20.0, 30.0), "um")
    with tifffile.TiffFile(str(path)) as tif:  # what other readers see
        assert tif.is_bigtiff == big
        page = tif.pages[0]
        if big:  # pixels per centimetre: 0.25 um = 40000 px/cm
            assert page.tags["ResolutionUnit"].value == 3
            x = page.tags["XResolution"].value
            assert x[0] / x[1] == pytest.approx(40000)
        else:  # Fiji's calibration and origin (pixels: position = (i - origin) x size)
            ij = tif.imagej_metadata
            assert ij["unit"] == "um" and ij["spacing"] == 0.5 and ij["Ranges"] == (0.0, 255.0)
            assert tuple(np.asarray(ij["LUTs"]).reshape(-1, 3, 256)[0][:, 1]) == tuple(
                round(255 * c) for c in label_color(1)
            )
            assert (ij["zorigin"], ij["yorigin"], ij["xorigin"]) == (-20.0, -80.0, -120.0)


def test_imagej_origin_and_a_plain_tiff_without_z(tmp_path, caplog):
    """A crop Fiji saved records its origin as ImageJ xorigin/yorigin/zorigin; a plain TIFF (resolution tags alone)
    has no z size: taken equal to x, now with a warning as for an OME-TIFF (QA h4: TPB 47 % high, silently)."""
    import tifffile

    from napari_xrayseg.core.io import read_origin, read_voxel_size

    vol = np.zeros((4, 8, 8), np.uint8)
    tifffile.imwrite(
        tmp_path / "fiji.tif",
        vol,
        imagej=True,
        resolution=(4.0, 4.0),
        metadata={"unit": "um", "spacing": 0.5, "xorigin": -8.0, "yorigin": -4.0, "zorigin": -2.0},
    )
    assert read_origin(tmp_path / "fiji.tif") == ((1.0, 1.0, 2.0), "um")
    tifffile.imwrite(
        tmp_path / "plain.tif",
        vol,
        resolution=(40000.0, 40000.0),
        resolutionunit="CENTIMETER",
        photometric="minisblack",
    )
    with caplog.at_level("WARNING"):
        assert read_voxel_size(tmp_path / "plain.tif") == ((0.25, 0.25, 0.25), "um")
    assert "records no z voxel size (plain resolution tags)" in caplog.text
