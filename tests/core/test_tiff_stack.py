"""A folder of 2D TIFF slices (a reconstruction's recon_00000.tif, ...) read as one lazy volume."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_xrayseg.cli import main
from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.io import TiffStack, open_volume
from napari_xrayseg.core.models import init_model, save_model


@pytest.fixture
def recon(tmp_path):
    vol = np.random.default_rng(4).random((12, 24, 32), dtype=np.float32)
    d = tmp_path / "recon"
    d.mkdir()
    for k in range(12):
        tifffile.imwrite(d / f"recon_{k}.tif", vol[k])  # unpadded numbers: recon_10 sorts after recon_9
    (d / ".DS_Store").write_bytes(b"\0")  # hidden files are no slices
    return d, vol


def test_a_folder_of_slices_opens_as_a_volume(recon):
    d, vol = recon
    st = open_volume(d)
    assert isinstance(st, TiffStack) and st.shape == vol.shape and st.dtype == np.float32 and st.chunks[0] == 1
    np.testing.assert_array_equal(np.asarray(st), vol)
    np.testing.assert_array_equal(st[3], vol[3])
    np.testing.assert_array_equal(st[2:11:4, 5:9, -3:], vol[2:11:4, 5:9, -3:])
    np.testing.assert_array_equal(st[np.array([0, 10, 11])], vol[[0, 10, 11]])
    np.testing.assert_array_equal(st[..., 1], vol[..., 1])
    tifffile.imwrite(d / "recon_12.tif", vol[0, :20])
    with pytest.raises(InputError, match=r"slices of 2 shapes or types .*1 of 20x32 float32 \(e.g. recon_12.tif\)"):
        open_volume(d)


def test_predict_stack_segments_the_folder_as_its_volume_and_warns_without(recon, tmp_path, capsys, caplog):
    d, vol = recon
    np.save(tmp_path / "vol.npy", vol)
    save_model(init_model("unet", size="tiny", classes=3, context=3, tile=32), tmp_path / "m.safetensors")
    run = ["predict", "--model", str(tmp_path / "m.safetensors"), "--device", "cpu"]
    assert main([*run, "--image", str(d), "--stack", "--out", str(tmp_path / "s.zarr")]) == 0
    assert main([*run, "--image", str(tmp_path / "vol.npy"), "--out", str(tmp_path / "v.zarr")]) == 0
    got = zarr.open_array(str(tmp_path / "s.zarr"), mode="r")[...]
    np.testing.assert_array_equal(got, zarr.open_array(str(tmp_path / "v.zarr"), mode="r")[...])
    # without --stack a volume model's folder of like slices is segmented image by image: said, with the fix
    assert main([*run, "--image", str(d), "--out", str(tmp_path / "each")]) == 0
    assert "recon holds 12 TIFF images of one size (24x32)" in caplog.text and "add --stack" in caplog.text
    two = ["--image", str(d), "--image", str(tmp_path / "vol.npy")]
    assert main([*run, *two, "--stack", "--out", str(tmp_path / "x")]) == 2
    assert "--stack takes one --image" in capsys.readouterr().err


def test_train_on_a_folder_of_slices_with_one_labels_volume(recon, tmp_path, capsys):
    """--image recon/ --labels ann.tif was refused ("give --labels a folder of label files")."""
    from napari_xrayseg.core.models import read_model_info

    d, vol = recon
    ann = np.zeros(vol.shape, np.uint8)
    ann[[3, 8], :, :16], ann[[3, 8], :, 16:] = 1, 2
    tifffile.imwrite(tmp_path / "ann.tif", ann)
    out = tmp_path / "m.safetensors"
    args = ["--arch", "unet", "--size", "tiny", "--epochs", "1", "--steps", "1", "--patch", "16", "--batch", "2"]
    assert main(["train", "--image", str(d), "--labels", str(tmp_path / "ann.tif"), "--out", str(out), *args]) == 0
    assert read_model_info(out).train["annotated_slices"] == [3, 8]


def test_a_3d_model_reads_a_folder_in_slabs_as_deep_as_a_volume(recon, caplog):
    # a folder's chunks are one slice deep, and the slab followed them: 1 slice a slab, each with 14 context
    # slices recomputed by a 3D network (12x slower measured) and labels other than the same volume's
    from napari_xrayseg.core.inference import segment
    from napari_xrayseg.core.io import read_voxel_size

    d, vol = recon
    m = init_model("unet3d", size="tiny", classes=[1, 2, 3], context=5, seed=1)
    np.testing.assert_array_equal(segment(open_volume(d), m, device="cpu"), segment(vol, m, device="cpu"))
    z = zarr.create_array(store=str(d.parent / "z.zarr"), shape=vol.shape, chunks=(1, 24, 32), dtype="f4")
    z[...] = vol
    np.testing.assert_array_equal(segment(z, m, device="cpu"), segment(vol, m, device="cpu"))
    assert read_voxel_size(d) is None and "ignoring the voxel size metadata" not in caplog.text  # was warned


def test_a_folder_with_a_gap_or_another_file_is_not_stacked_silently(recon, tmp_path, caplog):
    """QA (beamline folders): a missing ``recon_00005.tif`` shifted every later slice without a word, a
    ``recon_preview.tif`` of the same size became one more slice, and ``z-004`` .. ``z+003`` came out of order."""
    d, vol = recon
    (d / "recon_5.tif").unlink()  # a failed copy
    with caplog.at_level("WARNING", logger="napari_xrayseg.core.io"):
        st = open_volume(d)
    assert st.shape[0] == 11 and "slice number 5 is missing (the files run from 0 to 11)" in caplog.text
    np.testing.assert_array_equal(st[5], vol[6])  # still read, in order

    tifffile.imwrite(d / "recon_preview.tif", vol[0])
    with pytest.raises(InputError, match=r"2 name patterns \(11 like recon_0.tif; 1 like recon_preview.tif\)"):
        open_volume(d)

    signed = tmp_path / "signed"
    signed.mkdir()
    for k in range(-4, 4):
        tifffile.imwrite(signed / f"z{k:+04d}.tif", np.full((4, 4), k + 4, np.uint8))
    caplog.clear()
    st = open_volume(signed)
    assert st[:, 0, 0].tolist() == list(range(8)) and "missing" not in caplog.text

    for names in (  # review: a second number (a position, a time tag) in the names, an unsigned zero
        [f"slice_{k:04d}_z{k / 2:.1f}mm.tif" for k in range(6)],
        [f"rec_{k:05d}_t{(4 * k) % 10:02d}.tif" for k in range(6)],
        ["z-002.tif", "z-001.tif", "z000.tif", "z+001.tif", "z+002.tif"],
    ):
        d2 = tmp_path / names[0].split(".")[0]
        d2.mkdir()
        for k, name in enumerate(names):
            tifffile.imwrite(d2 / name, np.full((4, 4), k, np.uint8))
        caplog.clear()
        assert open_volume(d2)[:, 0, 0].tolist() == list(range(len(names))) and "missing" not in caplog.text

    every_other = tmp_path / "every_other"  # a fixed step is no gap (every second slice exported)
    every_other.mkdir()
    for k in range(0, 10, 2):
        tifffile.imwrite(every_other / f"s{k:03d}.tif", np.full((4, 4), k, np.uint8))
    assert open_volume(every_other)[:, 0, 0].tolist() == [0, 2, 4, 6, 8] and "missing" not in caplog.text


def test_a_folder_of_slices_has_no_origin_and_says_nothing_about_one(recon, caplog):
    """QA: every run on a folder of slices warned "ignoring the origin metadata ... GroupNotFoundError"."""
    from napari_xrayseg.core.io import read_origin

    d, _ = recon
    with caplog.at_level("WARNING"):
        assert read_origin(d) is None
    assert caplog.text == ""
