"""Batch prediction: many real files on disk in, one label file per input out."""

import json
import os

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from napari_xrayseg.core.batch import collect_inputs, iter_segment_many, output_name, segment_many
from napari_xrayseg.core.errors import Cancelled, InputError
from napari_xrayseg.core.inference import output_complete, segment
from napari_xrayseg.core.io import open_volume, read_voxel_size, write_volume
from napari_xrayseg.core.models import init_model, save_model
from napari_xrayseg.core.progress import CancelToken

KW = {"device": "cpu", "tile": 32, "batch": 4}


@pytest.fixture
def inputs(tmp_path):
    """A folder of a 3D zarr (chunks 2 deep), a 3D TIFF with a voxel size, a 2D TIFF and an HDF5 volume."""
    rng = np.random.default_rng(1)
    d = tmp_path / "in"
    d.mkdir()
    vols = {
        "a_vol": rng.random((6, 32, 40), dtype=np.float32),
        "b_stack": rng.random((4, 40, 32), dtype=np.float32),
        "c_slice": rng.random((48, 32), dtype=np.float32),
        "d_h5": rng.random((3, 32, 32), dtype=np.float32),
    }
    write_volume(d / "a_vol.zarr", vols["a_vol"], chunks=(2, 32, 40))
    tifffile.imwrite(
        d / "b_stack.tif",
        vols["b_stack"],
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.5),
        metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"},
    )
    tifffile.imwrite(d / "c_slice.tif", vols["c_slice"])
    with h5py.File(d / "d_h5.h5", "w") as f:
        f["data"] = vols["d_h5"]
    (d / "notes.md").write_text("not an image: ignored in a folder")
    (d / ".hidden.tif").write_bytes(b"ignored")
    return d, vols


def test_folder_in_folder_out_matches_one_by_one(tmp_path, inputs, tiny_model):
    d, vols = inputs
    out = tmp_path / "out"
    seen = []
    s = segment_many([d], tiny_model, out_dir=out, progress=seen.append, **KW)
    assert [r.name for r in s.results] == ["a_vol", "b_stack", "c_slice", "d_h5"]
    assert s.ok and [r.status for r in s.results] == ["done"] * 4
    assert sorted(os.listdir(out)) == ["a_vol.tif", "b_stack.tif", "c_slice.tif", "d_h5.tif"]  # no work stores left
    for name, vol in vols.items():
        with tifffile.TiffFile(out / f"{name}.tif") as tif:
            got = tif.asarray()
        assert got.shape == vol.shape and got.dtype == np.uint8  # 2D input -> 2D TIFF
        np.testing.assert_array_equal(got, segment(vol, tiny_model, **KW))  # the one pipeline, file by file
    r = s.results[1]
    assert r.shape == (4, 40, 32) and r.seconds > 0 and r.voxels_per_s > 0
    assert read_voxel_size(out / "b_stack.tif") == ((2.0, 0.5, 0.5), "um")  # the input's voxel size travels
    # progress spans the files, never goes back, names file k of n, and reports each result
    steps = [p.step for p in seen]
    assert steps == sorted(steps) and seen[-1].step == seen[-1].total
    assert {p.info["file"] for p in seen} == {1, 2, 3, 4} and all(p.info["files"] == 4 for p in seen)
    assert any("file 2/4 b_stack: slices" in p.message for p in seen)
    assert [p.info["result"].name for p in seen if "result" in p.info] == ["a_vol", "b_stack", "c_slice", "d_h5"]


def test_rerun_skips_finished_and_never_overwrites_silently(tmp_path, inputs, tiny_model):
    d, _ = inputs
    out = tmp_path / "out"
    segment_many([d], tiny_model, out_dir=out, **KW)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = segment_many([d], tiny_model, out_dir=out, **KW)
    assert [r.status for r in again.results] == ["skipped"] * 4
    # a scan replaced by another of that name and shape: refused, not "skipped" with the old scan's labels
    tifffile.imwrite(d / "c_slice.tif", np.random.default_rng(9).random((48, 32), dtype=np.float32))
    s = segment_many([d / "c_slice.tif"], tiny_model, out_dir=out, **KW)
    assert s.results[0].status == "failed" and "another image of that name" in s.results[0].message
    elsewhere = tmp_path / "elsewhere"  # another file of that name (QA: "written with another model or settings")
    elsewhere.mkdir()
    tifffile.imwrite(elsewhere / "c_slice.tif", np.random.default_rng(10).random((48, 32), dtype=np.float32))
    s = segment_many([elsewhere / "c_slice.tif"], tiny_model, out_dir=out, **KW)
    assert s.results[0].status == "failed" and "another image of that name" in s.results[0].message
    other = init_model("unet", size="tiny", classes=3, tile=32, seed=5)
    s = segment_many([d], other, out_dir=out, **KW)  # another model: refused per file, files untouched
    assert [r.status for r in s.results] == ["failed"] * 4 and not s.ok
    assert "written with another model" in s.results[0].message and "--overwrite" in s.results[0].message
    s = segment_many([d], tiny_model, out_dir=out, **{**KW, "tile": 64})  # other settings: refused too
    assert [r.status for r in s.results] == ["failed"] * 4
    s = segment_many([d], tiny_model, out_dir=out, **{**KW, "tta": 2})  # test-time views are settings too
    assert [r.status for r in s.results] == ["failed"] * 4
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    s = segment_many([d], other, out_dir=out, overwrite=True, **KW)
    assert [r.status for r in s.results] == ["done"] * 4
    with tifffile.TiffFile(out / "a_vol.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), segment(open_volume(d / "a_vol.zarr"), other, **KW))


def test_a_users_file_in_the_way_is_kept(tmp_path, inputs, tiny_model):
    d, _ = inputs
    out = tmp_path / "out"
    out.mkdir()
    tifffile.imwrite(out / "b_stack.tif", np.full((2, 2), 7, np.uint8))  # the user's, not ours
    (out / "a_vol.zarr").mkdir()
    (out / "a_vol.zarr" / "mine.txt").write_text("keep me")
    s = segment_many([d], tiny_model, out_dir=out, **KW)
    assert [r.status for r in s.results] == ["done", "failed", "done", "done"]
    assert "not an output of xrayseg predict" in s.results[1].message
    np.testing.assert_array_equal(tifffile.imread(out / "b_stack.tif"), np.full((2, 2), 7, np.uint8))
    z = segment_many([d / "a_vol.zarr"], tiny_model, out_dir=out, fmt="zarr", **KW)
    assert z.results[0].status == "failed" and (out / "a_vol.zarr" / "mine.txt").read_text() == "keep me"


def test_cancel_mid_file_then_rerun_resumes_to_the_same_result(tmp_path, inputs, tiny_model):
    d, vols = inputs
    out = tmp_path / "out"
    files = [d / "a_vol.zarr", d / "b_stack.tif"]
    token = CancelToken()

    def cancel_after_first_slab_of_b(p):  # the user presses Cancel while b_stack runs
        if p.info["name"] == "b_stack" and "Mvox/s" in p.message:
            token.cancel()

    with pytest.raises(Cancelled) as exc:
        segment_many(files, tiny_model, out_dir=out, slab=2, cancel=token, progress=cancel_after_first_slab_of_b, **KW)
    partial = exc.value.result
    assert [r.status for r in partial.results] == ["done", "cancelled"]
    work = out / ".b_stack.tif.xrayseg-work.zarr"
    assert (out / "a_vol.tif").exists() and not (out / "b_stack.tif").exists()
    assert work.is_dir() and not output_complete(work)
    done_before = len(os.listdir(work / ".xrayseg-done"))
    assert 0 < done_before < 2
    seen = []
    s = segment_many(files, tiny_model, out_dir=out, slab=2, progress=seen.append, **KW)
    assert [r.status for r in s.results] == ["skipped", "done"]
    assert not work.exists()
    np.testing.assert_array_equal(tifffile.imread(out / "b_stack.tif"), segment(vols["b_stack"], tiny_model, **KW))
    # only the slab that was missing ran again
    ran = [p.message for p in seen if p.info["name"] == "b_stack" and "Mvox/s" in p.message]
    assert len(ran) == 1 and "slices 4/4" in ran[0]


def test_bad_file_in_the_middle_is_reported_and_the_rest_run(tmp_path, inputs, tiny_model):
    d, _ = inputs
    (d / "b_bad.tif").write_bytes(b"II*\x00 truncated")
    (d / "b_rgb.tif").write_bytes(b"")
    tifffile.imwrite(d / "b_4d.tif", np.zeros((2, 2, 8, 8), np.float32))
    s = segment_many([d], tiny_model, out_dir=tmp_path / "out", **KW)
    status = {r.name: r.status for r in s.results}
    assert status == {
        "a_vol": "done",
        "b_4d": "failed",
        "b_bad": "failed",
        "b_rgb": "failed",
        "b_stack": "done",
        "c_slice": "done",
        "d_h5": "done",
    }
    msgs = {r.name: r.message for r in s.failed}
    assert "4 dimensions" in msgs["b_4d"] and "b_bad.tif" in msgs["b_bad"]
    assert not s.ok and s.counts() == {"done": 4, "failed": 3}
    table = s.table()
    assert table.splitlines()[0].split() == ["file", "shape", "seconds", "Mvox/s", "status"]
    assert "b_bad" in table and "failed: " in table and "7 inputs" in table
    s.to_csv(tmp_path / "s.csv")
    s.to_json(tmp_path / "s.json")
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0] == "name,input,output,status,shape,seconds,mvox_per_s,message" and len(rows) == 8
    j = json.loads((tmp_path / "s.json").read_text())
    assert j["counts"] == {"done": 4, "failed": 3} and j["files"][1]["name"] == "b_4d"
    assert j["files"][0]["shape"] == "6x32x40" and j["files"][0]["mvox_per_s"] > 0


def test_list_file_names_and_refusals(tmp_path, inputs, tiny_model):
    d, _ = inputs
    lst = d / "todo.txt"
    lst.write_text("# scans to do\nc_slice.tif\n\n" + str(d / "a_vol.zarr") + "\nmissing.tif\n")
    got = collect_inputs([lst])
    assert got == [str(d / "c_slice.tif"), str(d / "a_vol.zarr"), str(d / "missing.tif")]
    s = segment_many([lst], tiny_model, out_dir=tmp_path / "out", **KW)
    assert [(r.name, r.status) for r in s.results] == [("c_slice", "done"), ("a_vol", "done"), ("missing", "failed")]
    assert "does not exist" in s.results[2].message
    assert output_name("x/scan_01.ome.tif") == "scan_01" and output_name(str(d / "d_h5.h5") + ":/data") == "d_h5"
    tifffile.imwrite(tmp_path / "a_vol.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="both give the output name 'a_vol'"):
        segment_many([d / "a_vol.zarr", tmp_path / "a_vol.tif"], tiny_model, out_dir=tmp_path / "o2", **KW)
    (tmp_path / "nfd").mkdir()
    tifffile.imwrite(tmp_path / "nfd" / "cafe\u0301.tif", np.zeros((4, 4), np.float32))  # NFD: one file on macOS
    tifffile.imwrite(tmp_path / "caf\u00e9.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="both give the output name"):
        segment_many(
            [tmp_path / "caf\u00e9.tif", tmp_path / "nfd" / "cafe\u0301.tif"], tiny_model, out_dir=tmp_path / "o2", **KW
        )
    with pytest.raises(InputError, match="lies inside the input"):
        segment_many([d], tiny_model, out_dir=d / "labels", **KW)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        segment_many([tmp_path / "empty"], tiny_model, out_dir=tmp_path / "o3", **KW)
    with pytest.raises(InputError, match="--format zarr"):
        segment_many([d], tiny_model, out_dir=tmp_path / "o4", pyramid=True, **KW)
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_zarr_format_and_model_file_loaded_once(tmp_path, inputs, tiny_model, monkeypatch):
    import napari_xrayseg.core.predictor as predictor

    d, vols = inputs
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    loads = []
    real = predictor.load_model
    monkeypatch.setattr(predictor, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    copies = []
    real_copy = predictor._inference_copy
    monkeypatch.setattr(predictor, "_inference_copy", lambda net: copies.append(1) or real_copy(net))
    out = tmp_path / "out"
    files = [d / "a_vol.zarr", d / "c_slice.tif"]
    s = segment_many(files, path, out_dir=out, fmt="zarr", confidence="maxprob", **KW)
    assert len(loads) == 1 and len(copies) == 1 and s.ok  # one load, one inference copy of the network
    assert sorted(os.listdir(out)) == ["a_vol-maxprob.zarr", "a_vol.zarr", "c_slice-maxprob.zarr", "c_slice.zarr"]
    a = zarr.open_array(store=str(out / "c_slice.zarr"), mode="r")
    assert a.shape == (48, 32) and output_complete(out / "c_slice.zarr")
    np.testing.assert_array_equal(a[...], segment(vols["c_slice"], tiny_model, **KW))
    again = segment_many(files, path, out_dir=out, fmt="zarr", confidence="maxprob", **KW)
    assert [r.status for r in again.results] == ["skipped", "skipped"]


def test_arrays_in_memory(tiny_model):
    rng = np.random.default_rng(2)
    images = {"x": rng.random((2, 32, 32), dtype=np.float32), "y": rng.random((32, 48), dtype=np.float32)}
    gen = iter_segment_many(images, tiny_model, **KW)
    results = [p.info["result"] for p in gen if "result" in p.info]
    assert [r.name for r in results] == ["x", "y"] and results[0].output is None
    for r in results:
        np.testing.assert_array_equal(r.labels, segment(images[r.name], tiny_model, **KW))


def test_many_inputs_go_into_a_plain_folder_only(tmp_path, inputs, tiny_model):
    """QA: --out p.zarr (a single-volume output) got a.tif, b.tif inside, exit 0; --out FILE failed per input."""
    d, _ = inputs
    segment(np.random.default_rng(2).random((4, 32, 32), dtype=np.float32), tiny_model, out=tmp_path / "p.zarr", **KW)
    (tmp_path / "afile").write_text("x")
    for out, said in (
        (tmp_path / "p.zarr", "is \\(named as\\) a zarr store"),
        (tmp_path / "new.zarr", "is \\(named as\\) a zarr store"),
        (tmp_path / "afile", "is a file: many inputs are written into a folder"),
    ):
        with pytest.raises(InputError, match=said):
            segment_many([str(d)], tiny_model, out_dir=out, **KW)
    assert sorted(p.name for p in (tmp_path / "p.zarr").iterdir()) == ["c", "zarr.json"]  # nothing added


def test_a_model_with_a_no_data_value_does_not_skip_outputs_made_without_it(tmp_path, inputs, tiny_model):
    """Review s45: outputs made before the model's no-data value applied by default were "finished output of this
    model and settings" while a new sibling got the value."""
    import copy

    d, _ = inputs
    out = tmp_path / "out"
    with_nodata = copy.deepcopy(tiny_model)
    with_nodata.info.train = {**with_nodata.info.train, "nodata": 0.0}
    segment_many([d], tiny_model, out_dir=out, **KW)  # the same weights, no value: as before the default
    later = segment_many([d], with_nodata, out_dir=out, **KW)  # the model's value: other results, not "finished"
    assert not any(r.status == "skipped" for r in later.results)
    again = segment_many([d], with_nodata, out_dir=out, overwrite=True, **KW)
    assert [r.status for r in again.results] == ["done"] * 4
    assert [r.status for r in segment_many([d], with_nodata, out_dir=out, **KW).results] == ["skipped"] * 4
