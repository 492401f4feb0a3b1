"""Files users bring: OME-Zarr layouts, NeXus links, TIFF metadata, folders that are not volumes."""

import json
import logging

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.io import open_volume, read_class_names, read_voxel_size, write_volume

VOL = np.random.default_rng(1030).integers(0, 60000, (6, 24, 24)).astype(np.uint16)
TCZYX = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
    {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"
]


def _ngff_04(group, scales):
    """An NGFF 0.4 TCZYX image of VOL (a single time point and channel), one level per scale."""
    datasets = []
    for i, s in enumerate(scales):
        step = 2**i
        a = group.create_array(str(i), shape=(1, 1, *VOL[::step, ::step, ::step].shape), dtype="uint16")
        a[...] = VOL[None, None, ::step, ::step, ::step]
        datasets.append({"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [1, 1, *s]}]})
    group.attrs["multiscales"] = [{"version": "0.4", "axes": TCZYX, "datasets": datasets}]


def test_a_level_of_a_tczyx_ome_zarr_given_as_a_dataset_drops_its_single_t_and_c(tmp_path):
    g = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=2)
    _ngff_04(g, [[2.0, 0.5, 0.5], [4.0, 1.0, 1.0]])
    for path, kw in ((tmp_path / "img.zarr", {"dataset": "1"}), (tmp_path / "img.zarr" / "1", {})):
        arr = open_volume(path, **kw)
        assert arr.shape == (3, 12, 12)  # was (1, 1, 3, 12, 12) by --dataset: refused as 5D
        np.testing.assert_array_equal(np.asarray(arr[:]), VOL[::2, ::2, ::2])
        assert read_voxel_size(path, **kw) == ((4.0, 1.0, 1.0), "um")


def test_a_bioformats2raw_layout_opens_its_image(tmp_path):
    g = zarr.open_group(str(tmp_path / "b2r.ome.zarr"), mode="w", zarr_format=2)
    g.attrs["bioformats2raw.layout"] = 3
    _ngff_04(g.create_group("0"), [[2.0, 0.5, 0.5]])
    g.create_group("OME").attrs["series"] = ["0"]
    for kw in ({}, {"dataset": "0"}):
        arr = open_volume(tmp_path / "b2r.ome.zarr", **kw)
        np.testing.assert_array_equal(np.asarray(arr[:]), VOL)
        assert read_voxel_size(tmp_path / "b2r.ome.zarr", **kw) == ((2.0, 0.5, 0.5), "um")


def test_a_group_of_groups_names_the_arrays_inside(tmp_path):
    g = zarr.open_group(str(tmp_path / "nested.zarr"), mode="w")
    g.create_group("recon").create_array("volume", shape=VOL.shape, dtype="uint16")[...] = VOL
    g.create_group("raw").create_array("projections", shape=(2, 4, 4), dtype="uint16")
    with pytest.raises(InputError, match=r"no array at its top level; inside it: raw/projections, recon/volume"):
        open_volume(tmp_path / "nested.zarr")
    np.testing.assert_array_equal(np.asarray(open_volume(tmp_path / "nested.zarr", dataset="recon/volume")[:]), VOL)


def test_nexus_master_file_data_behind_an_external_link_and_a_soft_link_counted_once(tmp_path):
    with h5py.File(tmp_path / "data_000001.h5", "w") as f:
        f["data"] = VOL
    with h5py.File(tmp_path / "master.nxs", "w") as f:
        f["entry/title"] = "scan 12"
        f["entry/data/data_000001"] = h5py.ExternalLink("data_000001.h5", "/data")
        f["entry/broken"] = h5py.ExternalLink("gone.h5", "/data")  # a file not copied along: not an error
    np.testing.assert_array_equal(np.asarray(open_volume(tmp_path / "master.nxs")[:]), VOL)
    with h5py.File(tmp_path / "soft.h5", "w") as f:
        f["real/vol"] = VOL
        f["alias"] = h5py.SoftLink("/real/vol")
    np.testing.assert_array_equal(np.asarray(open_volume(tmp_path / "soft.h5")[:]), VOL)  # one image, two paths


def test_predict_outputs_name_their_axes_as_ome_zarr_05_requires(tmp_path, tiny_model):
    from napari_xrayseg.core.inference import segment

    vol = np.random.default_rng(1031).random((2, 300, 300), dtype=np.float32)  # two pyramid levels (over 256)
    kw = {"tile": 32, "device": "cpu", "slab": 2}
    segment(vol, tiny_model, out=tmp_path / "plain.zarr", confidence="maxprob", **kw)
    segment(vol, tiny_model, out=tmp_path / "pyr.zarr", pyramid=True, **kw)
    for store in ("plain.zarr", "plain-maxprob.zarr", "pyr.zarr/0", "pyr.zarr/1"):
        meta = json.loads((tmp_path / store / "zarr.json").read_text())
        assert meta["dimension_names"] == ["z", "y", "x"], store


def test_class_names_of_a_many_input_tiff_output_are_read_back(tmp_path, tiny_model):
    from napari_xrayseg.core.batch import segment_many

    tifffile.imwrite(tmp_path / "a.tif", np.random.default_rng(1032).random((32, 32), dtype=np.float32))
    tiny_model.info.class_names = ["air", "paste", "rock"]
    segment_many([str(tmp_path / "a.tif")], tiny_model, out_dir=tmp_path / "out", tile=32, device="cpu")
    assert read_class_names(tmp_path / "out" / "a.tif") == {1: "air", 2: "paste", 3: "rock"}
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((4, 4), np.uint8))
    assert read_class_names(tmp_path / "plain.tif") is None


def test_messages_for_an_rgb_tiff_and_a_folder_that_is_not_a_volume(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError, match=r"colour \(RGB\).*--rgb luminance\|channels"):
        open_volume(tmp_path / "rgb.tif")
    (tmp_path / "png").mkdir()
    for i in range(3):
        (tmp_path / "png" / f"s{i}.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"folder .*png is not a volume: .*holds no TIFF slices \(3 \.png\)"):
        open_volume(tmp_path / "png")


def test_an_ome_tiff_without_a_z_size_is_said_to_take_x(tmp_path, caplog):
    tifffile.imwrite(tmp_path / "xy.ome.tif", VOL, metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    with caplog.at_level(logging.WARNING):
        assert read_voxel_size(tmp_path / "xy.ome.tif") == ((0.5, 0.5, 0.5), "um")
    assert "no z voxel size (PhysicalSizeZ)" in caplog.text and "--voxel-size" in caplog.text


def test_missing_chunks_name_the_nodata_value_as_a_plain_number(tmp_path, caplog):
    from napari_xrayseg.core.io import check_chunks_present

    a = zarr.create_array(str(tmp_path / "holes.zarr"), shape=(4, 8, 8), chunks=(1, 8, 8), dtype="uint16")
    a[0] = 5
    with caplog.at_level(logging.WARNING):
        check_chunks_present(open_volume(tmp_path / "holes.zarr"))
    assert "nodata=0 (--nodata 0)" in caplog.text


def test_a_folder_of_many_inputs_says_what_it_leaves_out(tmp_path, caplog):
    from napari_xrayseg.core.batch import collect_inputs

    write_volume(tmp_path / "a.zarr", VOL)
    write_volume(tmp_path / "b", VOL)  # a zarr store without its suffix
    (tmp_path / "c.raw").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert collect_inputs([tmp_path]) == [str(tmp_path / "a.zarr")]
    assert "left out 2 entries" in caplog.text and "b, c.raw" in caplog.text


def test_a_level_inside_a_bioformats2raw_image_by_dataset(tmp_path):
    g = zarr.open_group(str(tmp_path / "b2r.ome.zarr"), mode="w", zarr_format=2)
    g.attrs["bioformats2raw.layout"] = 3
    _ngff_04(g.create_group("0"), [[2.0, 0.5, 0.5], [4.0, 1.0, 1.0]])
    arr = open_volume(tmp_path / "b2r.ome.zarr", dataset="0/1")  # review: "5 dimensions", no voxel size
    np.testing.assert_array_equal(np.asarray(arr[:]), VOL[::2, ::2, ::2])
    assert read_voxel_size(tmp_path / "b2r.ome.zarr", dataset="0/1") == ((4.0, 1.0, 1.0), "um")


def test_an_input_whose_replacement_was_cut_short_is_named(tmp_path):
    """QA h1: killed between the two renames of a replacement, an output read as "does not exist: check the path"
    while its previous version lay beside it."""
    from napari_xrayseg.core.errors import InputError
    from napari_xrayseg.core.io import open_volume

    (tmp_path / ".o.zarr.xrayseg-old").mkdir()
    with pytest.raises(InputError, match=r"a run replacing it was cut short; .* as \.o\.zarr\.xrayseg-old"):
        open_volume(tmp_path / "o.zarr")
