"""Voxel sizes read from OME-Zarr, TIFF (ImageJ, resolution tags, OME-XML) and HDF5; unit helpers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.io import read_voxel_size
from napari_xrayseg.core.units import (
    image_label_properties,
    ngff_axes,
    ngff_scale_transforms,
    normalize_unit,
    parse_voxel_size,
    to_unit,
    voxel_size_mismatch,
)


def _ome_group(path, levels=2, unit="micrometer", voxel=(0.2, 0.05, 0.05)):
    g = zarr.open_group(str(path), mode="w")
    for i in range(levels):
        g.create_array(str(i), shape=(4 // 2**i or 1, 8 // 2**i, 8 // 2**i), dtype="uint8")
    tr = ngff_scale_transforms(voxel, levels)
    g.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [{"name": a, "type": "space", "unit": unit} for a in "zyx"],
                "datasets": [{"path": str(i), "coordinateTransformations": tr[i]} for i in range(levels)],
            }
        ],
    }
    return path


def test_ome_zarr_levels_and_their_arrays(tmp_path):
    p = _ome_group(tmp_path / "img.zarr")
    assert read_voxel_size(p) == ((0.2, 0.05, 0.05), "um")
    assert read_voxel_size(p, dataset="1") == ((0.4, 0.1, 0.1), "um")
    assert read_voxel_size(p / "1") == ((0.4, 0.1, 0.1), "um")


def test_plain_zarr_attrs_and_nothing(tmp_path):
    a = zarr.create_array(store=str(tmp_path / "a.zarr"), shape=(2, 4, 4), dtype="uint8")
    assert read_voxel_size(tmp_path / "a.zarr") is None
    a.attrs.update({"voxel_size": [3, 1, 1], "unit": "nanometer"})
    assert read_voxel_size(tmp_path / "a.zarr") == ((3.0, 1.0, 1.0), "nm")


def test_tiff_imagej_resolution_and_ome(tmp_path):
    data = np.zeros((3, 8, 8), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.5),
        metadata={"spacing": 2.0, "unit": "micron"},
    )
    assert read_voxel_size(tmp_path / "ij.tif") == ((2.0, 0.5, 0.25), "um")
    tifffile.imwrite(
        tmp_path / "cm.tif", data, photometric="minisblack", resolution=(10000.0, 10000.0), resolutionunit="CENTIMETER"
    )
    size, unit = read_voxel_size(tmp_path / "cm.tif")
    assert unit == "um" and size == pytest.approx((1.0, 1.0, 1.0))
    tifffile.imwrite(
        tmp_path / "ome.ome.tif",
        data,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 0.1,
            "PhysicalSizeY": 0.1,
            "PhysicalSizeZ": 0.3,
            "PhysicalSizeXUnit": "nm",
        },
    )
    assert read_voxel_size(tmp_path / "ome.ome.tif") == ((0.3, 0.1, 0.1), "nm")  # only x's unit: all in it
    tifffile.imwrite(tmp_path / "plain.tif", data, photometric="minisblack")
    assert read_voxel_size(tmp_path / "plain.tif") is None


def test_tiff_sizes_read_as_imagej_and_bio_formats_read_them(tmp_path, caplog):
    data = np.zeros((3, 8, 8), dtype=np.uint8)
    # ImageJ writes no spacing when z is 1 (its unit): z is not x's 0.05
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(20, 20), metadata={"unit": "micron"})
    assert read_voxel_size(tmp_path / "ij.tif") == ((1.0, 0.05, 0.05), "um")
    # each OME axis in its own unit
    meta = {"axes": "ZYX", "PhysicalSizeX": 50, "PhysicalSizeY": 50, "PhysicalSizeZ": 0.1}
    meta |= {"PhysicalSizeXUnit": "nm", "PhysicalSizeYUnit": "nm", "PhysicalSizeZUnit": "µm"}
    tifffile.imwrite(tmp_path / "ome.ome.tif", data, ome=True, metadata=meta)
    size, unit = read_voxel_size(tmp_path / "ome.ome.tif")
    assert unit == "nm" and size == pytest.approx((100.0, 50.0, 50.0))
    # 72 dots per inch is a program's default, not 352.8 um voxels
    for dpi, expected in ((72, None), (1, None), (25400 / 5, (5.0, 5.0, 5.0))):
        caplog.clear()
        res = {"resolution": (dpi, dpi), "resolutionunit": "INCH"}
        tifffile.imwrite(tmp_path / "d.tif", data, photometric="minisblack", **res)
        found = read_voxel_size(tmp_path / "d.tif")
        if expected is None:
            assert found is None and "dots per inch" in caplog.text
        else:
            assert found[1] == "um" and found[0] == pytest.approx(expected)


def test_a_size_without_a_unit_is_um_and_said(tmp_path, caplog):
    a = zarr.create_array(store=str(tmp_path / "a.zarr"), shape=(2, 4, 4), dtype="uint8")
    a.attrs["voxel_size"] = [0.1, 0.05, 0.05]
    assert read_voxel_size(tmp_path / "a.zarr") == ((0.1, 0.05, 0.05), "um")
    assert "without a unit: taken as um" in caplog.text
    a.attrs["voxel_size"] = [1, 1, 1]  # a scale of 1 without a unit: voxel units
    assert read_voxel_size(tmp_path / "a.zarr") == ((1.0, 1.0, 1.0), "voxel")
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("vol", data=np.zeros((2, 4, 4), dtype=np.uint8)).attrs["voxel_size"] = [0.1, 0.05, 0.05]
    assert read_voxel_size(tmp_path / "v.h5", dataset="vol") == ((0.1, 0.05, 0.05), "um")
    g = _ome_group(tmp_path / "mixed.zarr", levels=1, voxel=(0.1, 50, 50))
    axes = [{"name": "z", "type": "space", "unit": "micrometer"}] + [
        {"name": a, "type": "space", "unit": "nanometer"} for a in "yx"
    ]
    attrs = zarr.open_group(str(g)).attrs
    ome = dict(attrs["ome"])
    ome["multiscales"][0]["axes"] = axes
    attrs["ome"] = ome
    assert read_voxel_size(g) == ((100.0, 50.0, 50.0), "nm")
    axes[0].pop("unit")  # z without a unit beside y and x in nm: in nm too (it was all um, 1000x off; QA s44)
    ome["multiscales"][0]["axes"] = axes
    attrs["ome"] = ome
    assert read_voxel_size(g) == ((0.1, 50.0, 50.0), "nm")


def test_hdf5_attributes_and_npy(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as f:
        d = f.create_dataset("vol", data=np.zeros((2, 4, 4), dtype=np.uint8))
        d.attrs["element_size_um"] = [0.5, 0.1, 0.1]
        e = f.create_dataset("other", data=np.zeros((2, 4, 4), dtype=np.uint8))
        e.attrs["voxel_size"] = 20.0
        e.attrs["unit"] = "nm"
        f.create_dataset("bare", data=np.zeros((2, 4, 4), dtype=np.uint8))
        n = f.create_dataset("nexus", data=np.zeros((2, 4, 4), dtype=np.uint8))
        n.attrs["voxel_size"], n.attrs["units"] = [50.0, 50.0, 50.0], "nm"  # NeXus/CF spell it "units" (QA s44)
    assert read_voxel_size(tmp_path / "v.h5", dataset="vol") == ((0.5, 0.1, 0.1), "um")
    assert read_voxel_size(f"{tmp_path / 'v.h5'}:other") == ((20.0, 20.0, 20.0), "nm")
    assert read_voxel_size(tmp_path / "v.h5", dataset="bare") is None
    assert read_voxel_size(tmp_path / "v.h5", dataset="nexus") == ((50.0, 50.0, 50.0), "nm")
    with h5py.File(tmp_path / "v.h5", "a") as f:  # a unit per axis (review)
        f["nexus"].attrs["units"] = ["um", "nm", "nm"]
    assert read_voxel_size(tmp_path / "v.h5", dataset="nexus") == ((50000.0, 50.0, 50.0), "nm")
    np.save(tmp_path / "v.npy", np.zeros((2, 2, 2)))
    assert read_voxel_size(tmp_path / "v.npy") is None
    with pytest.raises(InputError, match="does not exist"):
        read_voxel_size(tmp_path / "missing.tif")


def test_nexus_nxdata_axis_coordinates_give_the_voxel_size(tmp_path):
    """QA s44 h5: a NeXus NXdata group gives each axis a dataset of coordinates, not a voxel size: unread."""
    path = tmp_path / "scan.nxs.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/data")
        g.attrs["NX_class"], g.attrs["signal"], g.attrs["axes"] = "NXdata", "data", ["z", "y", "x"]
        g["data"] = np.zeros((4, 5, 6), np.float32)
        g["z"] = np.arange(4) * 0.2
        g["z"].attrs["units"] = "um"
        g["y"] = 10 + np.arange(5)[::-1] * 50.0  # descending, offset: the spacing counts
        g["x"] = np.arange(6) * 50.0
        for a in "yx":
            g[a].attrs["units"] = b"nm"
    assert read_voxel_size(path, dataset="entry/data/data") == ((200.0, 50.0, 50.0), "nm")
    with h5py.File(path, "a") as f:
        f["entry/data"].attrs["axes"] = "z:y:x"  # NeXus's older spelling
    assert read_voxel_size(path, dataset="entry/data/data") == ((200.0, 50.0, 50.0), "nm")
    with h5py.File(path, "a") as f:  # an uneven axis, or one named ".": no size rather than a wrong one
        f["entry/data"].attrs["axes"] = [".", "y", "x"]
    assert read_voxel_size(path, dataset="entry/data/data") is None
    with h5py.File(path, "a") as f:
        f["entry/data"].attrs["axes"] = ["z", "y", "x"]
        f["entry/data/x"][3] = 170.0
    assert read_voxel_size(path, dataset="entry/data/data") is None


def test_unit_helpers():
    assert normalize_unit("µm") == normalize_unit("micrometre") == "um"
    assert to_unit(1.5, "mm", "um") == pytest.approx(1500.0)
    assert parse_voxel_size(2) == (2.0, 2.0, 2.0)
    with pytest.raises(InputError, match="positive"):
        parse_voxel_size([1, 0, 1])
    assert ngff_axes(None) == [{"name": a, "type": "space"} for a in "zyx"]
    assert ngff_axes("nm", ndim=2)[1] == {"name": "x", "type": "space", "unit": "nanometer"}
    tr = ngff_scale_transforms(0.5, 3, factor=(1, 2, 2))
    assert tr[2][0]["scale"] == [0.5, 2.0, 2.0] and tr[2][1]["translation"] == [0.0, 0.75, 0.75]
    block = image_label_properties([1, 2, 3], ["pore", "nickel", "YSZ"])
    assert block["properties"][2] == {"label-value": 3, "name": "YSZ"}
    assert all(len(c["rgba"]) == 4 and max(c["rgba"]) <= 255 for c in block["colors"])
    with pytest.raises(InputError, match="one name per class"):
        image_label_properties([1, 2], ["a"])
    msg = voxel_size_mismatch([0.05] * 3, "um", [200.0] * 3, "nm")
    assert msg is not None and "x4" in msg
    assert voxel_size_mismatch([0.05] * 3, "um", [60.0] * 3, "nm") is None
    assert voxel_size_mismatch(None, None, [1.0] * 3, "um") is None


def test_ngff_label_attrs_round_trip_through_the_readers(tmp_path):
    from napari_xrayseg.core.io import read_class_names
    from napari_xrayseg.core.units import ngff_label_attrs

    g = zarr.open_group(str(tmp_path / "out.zarr"), mode="w")
    for i in range(3):
        g.create_array(str(i), shape=(8 // 2**i, 16 // 2**i, 16 // 2**i), dtype="uint8")
    g.attrs["ome"] = ngff_label_attrs(
        3, (0.1, 0.05, 0.05), "um", classes=[1, 2, 3], class_names=["pore", "nickel", "YSZ"]
    )
    assert read_voxel_size(tmp_path / "out.zarr") == ((0.1, 0.05, 0.05), "um")
    assert read_voxel_size(tmp_path / "out.zarr", dataset="2") == ((0.4, 0.2, 0.2), "um")
    assert read_class_names(tmp_path / "out.zarr") == {1: "pore", 2: "nickel", 3: "YSZ"}
    ms = g.attrs["ome"]["multiscales"][0]
    assert [a["unit"] for a in ms["axes"]] == ["micrometer"] * 3
    assert ngff_scale_transforms(1.0, 2, centered=False)[1] == [{"type": "scale", "scale": [2.0, 2.0, 2.0]}]


def test_evaluate_warns_when_prediction_and_truth_record_other_voxel_sizes(tmp_path, caplog):
    """QA: a prediction at 0.5 x 0.1 x 0.1 um scored against a truth at half that was not worth a word."""
    from napari_xrayseg.core.io import open_volume, write_volume
    from napari_xrayseg.core.metrics import evaluate

    lab = np.random.default_rng(0).integers(1, 3, (4, 16, 16)).astype(np.uint8)
    write_volume(tmp_path / "p.zarr", lab, attrs={"voxel_size": [0.5, 0.1, 0.1], "unit": "um"})
    write_volume(tmp_path / "same.zarr", lab, attrs={"voxel_size": [500, 100, 100], "unit": "nm"})
    write_volume(tmp_path / "half.zarr", lab, attrs={"voxel_size": [0.25, 0.05, 0.05], "unit": "um"})
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        evaluate(open_volume(tmp_path / "p.zarr"), open_volume(tmp_path / "same.zarr"))
    assert "scored voxel for voxel" not in caplog.text  # the same size in other units
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        r = evaluate(open_volume(tmp_path / "p.zarr"), open_volume(tmp_path / "half.zarr"))
    assert r.mean_dice == 1.0 and "0.5 x 0.1 x 0.1 um, the truth's 0.25 x 0.05 x 0.05 um" in caplog.text
    assert caplog.text.count("scored voxel for voxel") == 1  # once (review: twice, the interfaces checked again)


def test_training_says_when_the_labels_file_records_another_voxel_size(tmp_path, caplog):
    """QA (s44 h5): labels painted on a resampled copy trained without a word; evaluate says it of a truth."""
    from napari_xrayseg.core.sample import make_phantom
    from napari_xrayseg.core.training import train

    image, truth = make_phantom((6, 32, 32), seed=1907)
    ann = np.zeros_like(truth)
    ann[[1, 4]] = truth[[1, 4]]
    arrays = {}
    for name, data, size in (
        ("img", image, [2.0, 1.0, 1.0]),
        ("lab", ann, [1.0, 1.0, 1.0]),
        ("same", ann, [2000.0, 1000.0, 1000.0]),
    ):
        z = zarr.open_array(str(tmp_path / f"{name}.zarr"), mode="w", shape=data.shape, dtype=data.dtype)
        z[:] = data
        z.attrs["voxel_size"], z.attrs["unit"] = size, ("nm" if name == "same" else "um")
        arrays[name] = zarr.open_array(str(tmp_path / f"{name}.zarr"), mode="r")
    kw = dict(size="tiny", epochs=1, steps_per_epoch=1, batch=2, patch=32, device="cpu", init=None)
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        train(arrays["img"], arrays["lab"], **kw)
    assert "the image's file records voxel size 2 x 1 x 1 um, the labels' 1 x 1 x 1 um: they are paired" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        train(arrays["img"], arrays["same"], **kw)  # the same size in nm
    assert "voxel for voxel" not in caplog.text
