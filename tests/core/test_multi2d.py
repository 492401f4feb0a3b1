"""Several training pairs, declared 2D images, 2D image files (issue #18)."""

import logging

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_xrayseg import segment, train
from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.io import image_files, open_image, open_volume, pair_image_folders, read_image_2d
from napari_xrayseg.core.models import TWO_D_FORMAT_VERSION, load_model, read_model_info
from napari_xrayseg.core.normalize import pooled_normalization
from napari_xrayseg.core.radiographs import BACKGROUND, LUNG, make_radiographs
from napari_xrayseg.core.sample import make_phantom

FAST = {"size": "tiny", "epochs": 1, "steps_per_epoch": 2, "batch": 2, "patch": 32, "device": "cpu"}


@pytest.fixture(scope="module")
def slices():
    image, truth = make_phantom((8, 64, 64), seed=3, artefacts=False)
    return image, truth


# ---------------------------------------------------------------- reading 2D files


def test_read_image_2d_png_jpeg_tiff_8_16_bit(tmp_path):
    rng = np.random.default_rng(0)
    g8 = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    g16 = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    iio.imwrite(tmp_path / "a.png", g8)
    iio.imwrite(tmp_path / "b.png", g16)
    tifffile.imwrite(tmp_path / "c.tif", g16)
    iio.imwrite(tmp_path / "d.jpg", g8)
    np.testing.assert_array_equal(read_image_2d(tmp_path / "a.png"), g8)
    b = read_image_2d(tmp_path / "b.png")
    assert b.dtype == np.uint16
    np.testing.assert_array_equal(b, g16)
    np.testing.assert_array_equal(read_image_2d(tmp_path / "c.tif"), g16)
    d = read_image_2d(tmp_path / "d.jpg")  # lossy: same shape, close values
    assert d.shape == (20, 30) and d.dtype == np.uint8 and np.abs(d.astype(int) - g8).mean() < 40
    # the volume reader opens a 2D file as a 2D image
    for name, ref in (("a.png", g8), ("c.tif", g16)):
        np.testing.assert_array_equal(np.asarray(open_volume(tmp_path / name)), ref)
    tifffile.imwrite(tmp_path / "z.tif", g16, compression="zlib")  # compressed 2D TIFF too
    assert open_volume(tmp_path / "z.tif").shape == (20, 30)
    # the training reader keeps 2D files 2D, volumes 3D
    assert open_image(tmp_path / "c.tif").shape == (20, 30)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([g16, g16]))
    assert open_image(tmp_path / "stack.tif").shape == (2, 20, 30)
    with pytest.raises(InputError, match="not one 2D image"):
        read_image_2d(tmp_path / "stack.tif")
    assert [f.name for f in image_files(tmp_path)] == ["a.png", "b.png", "c.tif", "d.jpg", "stack.tif", "z.tif"]


def test_read_image_2d_rgb_is_converted_only_when_asked(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "c.png", rgb)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    for name in ("c.png", "c.tif"):
        with pytest.raises(InputError, match="colour \\(RGB\\) image: choose how to convert it"):
            read_image_2d(tmp_path / name)
        lum = read_image_2d(tmp_path / name, rgb="luminance")
        want = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        assert lum.dtype == np.float32
        np.testing.assert_allclose(lum, want, rtol=1e-5)
        np.testing.assert_array_equal(read_image_2d(tmp_path / name, rgb="channels"), np.moveaxis(rgb, -1, 0))
    grey = np.repeat(rgb[..., :1], 3, axis=-1)  # grey saved as RGB: read as grey without asking
    iio.imwrite(tmp_path / "g.png", grey)
    np.testing.assert_array_equal(read_image_2d(tmp_path / "g.png"), rgb[..., 0])
    rgba = np.concatenate([rgb, np.full((16, 24, 1), 255, np.uint8)], -1)
    iio.imwrite(tmp_path / "a.png", rgba)
    assert read_image_2d(tmp_path / "a.png", rgb="channels").shape == (3, 16, 24)  # alpha dropped
    with pytest.raises(InputError, match="unknown rgb conversion"):
        read_image_2d(tmp_path / "c.png", rgb="average")
    with pytest.raises(InputError, match="colour"):
        open_volume(tmp_path / "c.png")


def test_pair_image_folders(tmp_path):
    img, lab = tmp_path / "img", tmp_path / "lab"
    img.mkdir()
    lab.mkdir()
    for n in ("a.png", "b.jpg", "c.tif"):
        iio.imwrite(img / n, np.zeros((8, 8), np.uint8)) if n != "c.tif" else tifffile.imwrite(
            img / n, np.zeros((8, 8))
        )
    iio.imwrite(lab / "a.tif", np.ones((8, 8), np.uint8))  # any extension: base names pair
    iio.imwrite(lab / "b.png", np.ones((8, 8), np.uint8))
    pairs = pair_image_folders(img, lab)
    assert [(i.name, None if b is None else b.name) for i, b in pairs] == [
        ("a.png", "a.tif"),
        ("b.jpg", "b.png"),
        ("c.tif", None),  # no label file: not annotated
    ]
    iio.imwrite(lab / "zz.png", np.ones((8, 8), np.uint8))
    with pytest.raises(InputError, match="have no image of the same base name"):
        pair_image_folders(img, lab)
    (lab / "zz.png").unlink()
    iio.imwrite(lab / "a.png", np.ones((8, 8), np.uint8))
    with pytest.raises(InputError, match="two label files for image 'a'"):
        pair_image_folders(img, lab)
    with pytest.raises(InputError, match="is not a folder"):
        pair_image_folders(img / "a.png", lab)


def test_pairs_whose_names_differ_in_unicode_form_or_case_pair(tmp_path):
    """QA (macOS): labels saved by a Mac app (NFD 'é') or in another case had "no image of the same base name"
    ['Probe_é0'] beside the image 'Probe_é0'. Names compare in NFC; a case-only difference pairs where unique."""
    import unicodedata

    img, lab = tmp_path / "img", tmp_path / "lab"
    img.mkdir()
    lab.mkdir()
    for n in ("Probe_\u00e90", "Scan1", "x2", "X2"):
        tifffile.imwrite(img / f"{n}.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(lab / (unicodedata.normalize("NFD", "Probe_\u00e90") + ".tif"), np.ones((8, 8), np.uint8))
    tifffile.imwrite(lab / "scan1.tif", np.ones((8, 8), np.uint8))
    got = {i.stem: b and b.stem for i, b in pair_image_folders(img, lab)}
    assert got["Probe_\u00e90"] == unicodedata.normalize("NFD", "Probe_\u00e90") and got["Scan1"] == "scan1"
    assert got["x2"] is None and got["X2"] is None
    tifffile.imwrite(lab / "x2.tif", np.ones((8, 8), np.uint8))  # exact names first: X2 stays unannotated
    got = {i.stem: b and b.stem for i, b in pair_image_folders(img, lab)}
    assert got["x2"] == "x2" and got["X2"] is None
    tifffile.imwrite(lab / "SCAN1.tif", np.ones((8, 8), np.uint8))  # two spellings of Scan1's labels: one pairs
    with pytest.raises(InputError, match=r"\['scan1'\] in .* have no image"):
        pair_image_folders(img, lab)
    (lab / "SCAN1.tif").unlink()
    (lab / "x2.tif").rename(lab / "X2_.tif")
    with pytest.raises(InputError, match=r"\['X2_'\] in .* have no image"):
        pair_image_folders(img, lab)


# ---------------------------------------------------------------- several pairs


def test_train_on_volumes_of_different_shapes(slices):
    image, truth = slices
    image2, truth2 = make_phantom((5, 48, 80), seed=4, artefacts=False)
    sparse, sparse2 = np.zeros_like(truth), np.zeros_like(truth2)
    sparse[[1, 5]] = truth[[1, 5]]
    sparse2[2] = truth2[2]
    m = train([image, image2], [sparse, sparse2], **FAST)
    t = m.info.train
    assert not m.info.two_d and m.info.context == 3  # volumes keep their 2.5D context
    assert t["inputs"] == [[8, 64, 64], [5, 48, 80]] and t["image_shape"] is None
    assert t["annotated_slices"] == [[0, 1], [0, 5], [1, 2]]
    assert segment(image2, m, device="cpu").shape == image2.shape
    # an image without labels (None) is skipped
    m2 = train([image, image2], [sparse, None], **FAST)
    assert m2.info.train["annotated_slices"] == [[0, 1], [0, 5]]
    m3 = train([image, image2], [None, sparse2], **FAST)  # the record says which of the user's inputs it used
    assert m3.info.train["input_index"] == [1] and m3.info.train["inputs"] == [[5, 48, 80]]
    assert t["input_index"] == [0, 1]
    with pytest.raises(InputError, match="2 images but 1 labels"):
        train([image, image2], [sparse], **FAST)
    with pytest.raises(InputError, match="labels 1 shape"):
        train([image, image2], [sparse, sparse], **FAST)
    with pytest.raises(InputError, match="mix 2D images and 3D volumes"):
        train([image, image2[0]], [sparse, sparse2[0]], **FAST)


def test_two_d_images_are_never_each_others_context(slices, tmp_path):
    image, truth = slices
    images = [image[i] for i in range(8)]
    labels = [truth[i] for i in range(7)] + [None]
    m = train(images, labels, out=tmp_path / "m.safetensors", **FAST)  # several 2D images: 2D mode detected
    assert m.info.two_d and m.info.context == 1
    saved = read_model_info(tmp_path / "m.safetensors")
    # written as format 4: versions before it refuse it instead of reading the images as one volume (QA s45)
    assert saved.two_d and saved.format_version == TWO_D_FORMAT_VERSION == 4
    import json

    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(tmp_path / "m.safetensors"), "np") as f:
        meta = f.metadata()
    old = json.loads(meta["napari_xrayseg"])
    old["format_version"] = 1  # as such models were written before: they still load
    save_file({k: v for k, v in load_file(str(tmp_path / "m.safetensors")).items()}, str(tmp_path / "old.safetensors"),
              metadata={**meta, "napari_xrayseg": json.dumps(old)})  # fmt: skip
    assert load_model(tmp_path / "old.safetensors").info.two_d
    # validation holds out whole images (7 annotated >= 5)
    assert m.info.train["validation"] == "slices"
    assert m.info.train["val_slices"] and all(s == 0 for _, s in m.info.train["val_slices"])
    # a stack given to segment is a set of independent images: the same as one by one
    for model in (m, load_model(tmp_path / "m.safetensors"), train(images[:7], labels[:7], context=3, **FAST)):
        stack = segment(image, model, device="cpu")
        each = np.stack([segment(im, model, device="cpu") for im in images])
        np.testing.assert_array_equal(stack, each)
    # a 3D stack declared 2D is the same thing
    m3 = train(image, truth, two_d=True, **FAST)
    assert m3.info.two_d and m3.info.context == 1
    with pytest.raises(InputError, match="one slicing direction"):
        train(image, truth, two_d=True, axes="zyx", **FAST)
    with pytest.raises(InputError, match="independent 2D images: segment along one axis"):
        segment(image, m, axes="zyx", device="cpu")
    with pytest.raises(InputError, match="two_d"):
        train(image, truth, two_d="yes", **FAST)


def test_two_d_normalisation_per_image_or_per_dataset(slices):
    image, truth = slices
    images = [image[i] * (1 + 3 * i) + 10 * i for i in range(6)]  # each image its own exposure
    labels = [truth[i] for i in range(6)]
    per_image = train(images, labels, **FAST)
    assert per_image.info.normalization["low"] is None  # bounds from each image at inference
    pooled = train(images, labels, normalize="fixed", **FAST)
    want = pooled_normalization(images)
    assert pooled.info.normalization["low"] == pytest.approx(want["low"])
    assert pooled.info.normalization["high"] == pytest.approx(want["high"])
    # per image: every slice of a stack by its own bounds, so a slice's exposure does not matter
    stack = np.stack([image[0], image[1] * 5 + 3])
    seg = segment(stack, per_image, device="cpu")
    ref = segment(np.stack([image[0], image[1]]), per_image, device="cpu")
    assert (seg == ref).mean() > 0.999


def test_make_radiographs():
    a, la = make_radiographs(3, side=64, seed=5)
    b, lb = make_radiographs(3, side=64, seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert set(np.unique(la)) == {BACKGROUND, LUNG}
    assert 0.05 < (la == LUNG).mean() < 0.5
    assert not np.array_equal(la[0], la[1])  # independent images: each its own anatomy
    im16, _ = make_radiographs(1, side=64, seed=5, dtype="uint16")
    assert im16.dtype == np.uint16 and im16.max() > 255
    # lungs are darker than the rest of the thorax on average
    assert a[la == LUNG].mean() < a[la == BACKGROUND].mean()
    with pytest.raises(InputError, match="side"):
        make_radiographs(1, side=8)


# ---------------------------------------------------------------- channels


def test_multichannel_training_and_segmenting(slices, tmp_path):
    image, truth = slices
    rng = np.random.default_rng(2)
    second = 50.0 * (1 - image) + rng.normal(0, 1, image.shape)  # another contrast, another unit
    two = np.stack([image, second], axis=1)  # (Z, C, Y, X)
    sparse = np.zeros_like(truth)
    sparse[::2] = truth[::2]
    m = train(two, sparse, channel_axis=1, out=tmp_path / "c.safetensors", **FAST)
    info = read_model_info(tmp_path / "c.safetensors")
    assert (info.channels, info.channel_axis, info.context) == (2, 1, 3) and info.in_channels == 6
    seg = segment(two, load_model(tmp_path / "c.safetensors"), device="cpu")
    assert seg.shape == image.shape
    np.testing.assert_array_equal(seg, segment(two, m, device="cpu"))
    # channels first (as OME-Zarr orders them): found on the one axis that holds 2, or named (QA: refused)
    czyx = np.ascontiguousarray(two.transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(segment(czyx, m, device="cpu"), seg)
    np.testing.assert_array_equal(segment(czyx, m, device="cpu", channel_axis=0), seg)
    with pytest.raises(InputError, match=r"along axis 1 but the model takes 2.*--channel-axis"):
        segment(czyx, m, device="cpu", channel_axis=1)
    import dask.array as da

    lazy = segment(da.from_array(two, chunks=(2, 2, *two.shape[2:])), m, device="cpu")  # dask in, dask out
    assert isinstance(lazy, da.Array) and (lazy.compute() == seg).all()
    # each channel by its own bounds: a channel's gain and offset do not matter
    scaled = np.stack([image, second * 7 + 100], axis=1)
    assert (segment(scaled, m, device="cpu") == seg).mean() > 0.999
    with pytest.raises(InputError, match="has 1 channel along axis 1 but the model takes 2"):
        segment(two[:, :1], m, device="cpu")
    with pytest.raises(InputError, match=r"takes 2 \(shape \(8, 64, 64\): an image without a channel axis\?\)"):
        segment(image, m, device="cpu")  # a grey volume given to a two-channel model
    with pytest.raises(InputError, match="channels"):
        train(image, sparse, init=m, **FAST)  # fine-tuning keeps the channel count
    with pytest.raises(InputError, match="per image and channel"):
        train(two, sparse, channel_axis=1, normalize="fixed", **FAST)
    with pytest.raises(InputError, match="channel_axis 4 is not an axis"):
        train(two, sparse, channel_axis=4, **FAST)
    # not yet in the annotation loop or self-training: one line each, naming what works
    from napari_xrayseg import self_train
    from napari_xrayseg.core.annotation import predict_slice, suggest_slices

    for call in (lambda: predict_slice(two, m, 2), lambda: suggest_slices(two, m, sparse)):
        with pytest.raises(InputError, match="2 image channels, which the annotation loop"):
            call()
    with pytest.raises(InputError, match="2 image channels, which self-training"):
        self_train(two, m, sparse, epochs=1, device="cpu")
    # 2D images with channels first (RGB as channels), in 2D mode
    rgb = [np.stack([image[i], image[i] ** 2, 1 - image[i]]) for i in range(6)]
    m2 = train(rgb, [truth[i] for i in range(6)], channel_axis=0, **FAST)
    assert m2.info.two_d and m2.info.channels == 3 and m2.info.in_channels == 3
    assert segment(rgb[0], m2, device="cpu").shape == (64, 64)


def test_a_planar_rgb_tiff_reads_as_a_contiguous_one(tmp_path):
    """tifffile writes a 3xYxX stack as planar RGB by default: rgb='luminance' refused it as "not one 2D image"."""
    import tifffile

    from napari_xrayseg.core.io import read_image_2d

    a = (np.random.default_rng(0).random((3, 40, 50)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", a, photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "contig.tif", np.moveaxis(a, 0, -1), photometric="rgb")
    for mode in ("luminance", "channels"):
        np.testing.assert_array_equal(
            read_image_2d(tmp_path / "planar.tif", rgb=mode), read_image_2d(tmp_path / "contig.tif", rgb=mode)
        )


def test_a_multichannel_files_voxel_size_is_kept(slices, tmp_path):
    """QA: every 4D file (zarr attributes, OME-Zarr c axis, HDF5, ImageJ Z,C,Y,X) lost its voxel size, silently."""
    import h5py
    import zarr

    from napari_xrayseg.core.io import read_voxel_size, write_volume
    from napari_xrayseg.core.writer import read_output_meta

    image, truth = slices
    two = np.stack([image, 1 - image], axis=1).astype(np.float32)  # (Z, C, Y, X)
    want = ((0.5, 0.1, 0.1), "um")
    write_volume(tmp_path / "zcyx.zarr", two, attrs={"voxel_size": [0.5, 0.1, 0.1], "unit": "um"})
    with h5py.File(tmp_path / "zcyx.h5", "w") as f:
        f.create_dataset("vol", data=two).attrs["element_size_um"] = [0.5, 0.1, 0.1]
    tifffile.imwrite(
        tmp_path / "zcyx.tif", two, imagej=True, resolution=(10.0, 10.0), metadata={"spacing": 0.5, "unit": "um"}
    )
    g = zarr.open_group(str(tmp_path / "czyx.zarr"), mode="w")
    g.create_array("0", data=np.ascontiguousarray(two.transpose(1, 0, 2, 3)))
    axes = [{"name": "c", "type": "channel"}] + [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    scale = {"type": "scale", "scale": [1.0, 0.5, 0.1, 0.1]}
    g.attrs["multiscales"] = [
        {"version": "0.4", "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [scale]}]}
    ]
    for name in ("zcyx.zarr", "zcyx.h5:/vol", "zcyx.tif", "czyx.zarr"):
        got = read_voxel_size(tmp_path / name if ":" not in name else f"{tmp_path / name}")
        assert got is not None and np.allclose(got[0], want[0]) and got[1] == want[1], (name, got)
    sparse = np.zeros_like(truth)
    sparse[::2] = truth[::2]
    m = train(open_volume(tmp_path / "zcyx.zarr"), sparse, channel_axis=1, **FAST)
    assert m.info.voxel_size is not None and np.allclose(m.info.voxel_size, want[0])  # the model records it
    segment(open_volume(tmp_path / "czyx.zarr"), m, out=tmp_path / "out.zarr", device="cpu")
    meta = read_output_meta(tmp_path / "out.zarr")
    assert np.allclose(meta["voxel_size"], want[0]) and meta["unit"] == "um"  # and so does the output


def test_a_files_channels_are_not_taken_for_slices(slices, tmp_path):
    """QA: 2-channel 2D images (OME-Zarr c,y,x) were segmented as 2-slice volumes; 4D TIFFs say Z,C,Y,X."""
    import zarr

    from napari_xrayseg.core.io import channel_axis_in_file
    from napari_xrayseg.core.models import init_model

    image, truth = slices
    cyx = np.stack([image[0], 1 - image[0]]).astype(np.float32)
    tifffile.imwrite(tmp_path / "cyx_ij.tif", cyx, imagej=True, metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "cyx_ome.tif", cyx, ome=True, metadata={"axes": "CYX"})
    g = zarr.open_group(str(tmp_path / "cyx.zarr"), mode="w")
    g.create_array("0", data=cyx)
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    g.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}]}]
    tifffile.imwrite(tmp_path / "zyx.tif", image, imagej=True)  # a plain stack: its slices are slices
    one = init_model("unet", size="tiny", classes=3, tile=32)
    # a 3D TIFF's C is not trusted: tifffile writes every 3D stack given without axes as "CYX" (review: a
    # plain volume written as OME-TIFF was refused as 32 channels)
    tifffile.imwrite(tmp_path / "zyx.ome.tif", image, ome=True)
    for name in ("cyx_ij.tif", "cyx_ome.tif", "zyx.ome.tif"):
        assert channel_axis_in_file(open_volume(tmp_path / name)) is None, name
    assert segment(open_volume(tmp_path / "zyx.ome.tif"), one, device="cpu").shape == image.shape
    for name in ("cyx.zarr",):
        opened = open_volume(tmp_path / name)
        assert channel_axis_in_file(opened) == (0, 2), name
        with pytest.raises(InputError, match=r"has 2 channels along axis 0 .*\(--channel-axis 0"):
            segment(opened, one, device="cpu")
        with pytest.raises(InputError, match="training without a channel axis would read as 2 slices"):
            train(opened, truth[:2], **FAST)
    assert channel_axis_in_file(open_volume(tmp_path / "zyx.tif")) is None
    assert segment(open_volume(tmp_path / "zyx.tif"), one, device="cpu").shape == image.shape
    # with the channel axis named, the file is what a multi-channel model reads
    m = train(open_volume(tmp_path / "cyx.zarr"), truth[0], channel_axis=0, **FAST)
    assert segment(open_volume(tmp_path / "cyx.zarr"), m, device="cpu").shape == truth[0].shape


def test_a_swapped_channel_order_is_warned(slices, caplog):
    """Each channel is normalised by its own bounds: two channels in the other order segmented into nonsense
    without a word (QA, session 40: mean Dice 0.80 -> 0.28). Training records each channel's grey range."""
    image, truth = slices
    rng = np.random.default_rng(2)
    second = 50.0 * (1 - image) + rng.normal(0, 1, image.shape)
    two = np.stack([image, second], axis=1)
    sparse = np.zeros_like(truth)
    sparse[::2] = truth[::2]
    m = train(two, sparse, channel_axis=1, **FAST)
    ranges = m.info.normalization["training_channel_bounds"]
    assert len(ranges) == 2 and ranges[0][1] < 2 < 40 < ranges[1][1]
    with caplog.at_level(logging.WARNING, logger="napari_xrayseg"):
        segment(two, m, device="cpu")
        segment(np.stack([image, second * 7 + 100], axis=1), m, device="cpu")  # another gain and offset: fine
    assert "swapped" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="napari_xrayseg"):
        segment(two[:, ::-1], m, device="cpu")
    assert "the model's channels 0..1 look like this image's channels [1, 0]" in caplog.text
    assert "np.take(image, [1, 0], axis=channel_axis)" in caplog.text


def test_indexed_colour_label_masks_and_colour_planes_by_the_models_channels(tmp_path):
    """QA (2D workflows): a palette PNG mask (VOC, labelme, GIMP) was refused as a colour image with a hint at
    rgb= (which labels never take); a grey file saved as RGB read as grey even with rgb='channels' (napari shows
    it as RGB and a model trained on its colours takes three); a grey image for a colour model got a message about
    dimensions; rgb='channels' with a one-channel model segmented the colour planes as a 3-slice volume."""
    from PIL import Image

    from napari_xrayseg import init_model, segment_many
    from napari_xrayseg.core.channels import split_channels

    idx = np.random.default_rng(1202).integers(0, 4, (20, 30)).astype(np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    im.save(tmp_path / "mask.png")
    np.testing.assert_array_equal(read_image_2d(tmp_path / "mask.png"), idx)  # the indices are the classes
    np.testing.assert_array_equal(open_volume(tmp_path / "mask.png"), idx)
    photo = Image.fromarray(np.arange(20 * 30, dtype=np.uint16).reshape(20, 30).astype(np.uint8) % 200, mode="P")
    photo.putpalette([(i * 37) % 256 for i in range(768)])
    photo.save(tmp_path / "photo.png")  # 200 colours: a picture, refused as colour as before (review)
    with pytest.raises(InputError, match="colour"):
        read_image_2d(tmp_path / "photo.png")
    assert read_image_2d(tmp_path / "mask.png", rgb="channels").shape == (3, 20, 30)  # its colours, when asked
    grey = Image.fromarray(idx * 60, mode="L").convert("P")  # a palette of greys: an image's grey scale
    grey.save(tmp_path / "greyp.png")
    np.testing.assert_array_equal(read_image_2d(tmp_path / "greyp.png"), idx * 60)
    iio.imwrite(tmp_path / "rgb.png", np.stack([idx * 60, idx, 255 - idx], -1))
    with pytest.raises(InputError, match="a label file must hold one class number per pixel"):
        read_image_2d(tmp_path / "rgb.png")
    planes = np.repeat((idx * 60)[..., None], 3, axis=-1)
    iio.imwrite(tmp_path / "g3.png", planes)
    assert read_image_2d(tmp_path / "g3.png").shape == (20, 30)
    assert read_image_2d(tmp_path / "g3.png", rgb="channels").shape == (3, 20, 30)
    with pytest.raises(InputError, match=r"one grey 2D image \(shape \(20, 30\)\) but the model takes 3 channels"):
        split_channels(idx, 0, channels=3)
    grey_model = init_model("unet", size="tiny", classes=3)
    with pytest.raises(InputError, match="reads the colour planes as 3 channels but the model takes one"):
        segment_many([tmp_path / "rgb.png"], grey_model, rgb="channels", device="cpu")


def test_a_2d_models_stack_output_is_evaluated_image_by_image(slices, tmp_path):
    """The output of a 2D-mode model records that its slices are unrelated images; evaluate takes it from there."""
    from napari_xrayseg import evaluate
    from napari_xrayseg.core.writer import read_output_meta

    image, truth = slices
    m = train([image[i] for i in range(4)], [truth[i] for i in range(4)], **FAST)
    assert m.info.two_d
    seg = segment(image, m, device="cpu", out=tmp_path / "s.zarr")
    assert read_output_meta(tmp_path / "s.zarr")["independent"] is True
    r = evaluate(open_volume(tmp_path / "s.zarr"), truth)
    assert r.by_interface_distance == evaluate(np.asarray(seg), truth, two_d=True).by_interface_distance
    assert r.n_annotated_slices == len(truth)  # a score per image


def test_slices_too_small_for_the_network_are_refused_with_fixes_that_apply():
    """QA s45: "choose another axis" was offered for 2D images and axes="zyx"; the fixes that work (a smaller
    network, padding) went unsaid, and a folder's too-small image was not named."""
    from napari_xrayseg.core.models import init_model

    rng = np.random.default_rng(1812)
    img = rng.random((9, 200), dtype=np.float32)
    lab = (img > 0.5).astype(np.uint8) + 1
    fast = {"epochs": 1, "arch": "unet", "init": None, "device": "cpu"}
    with pytest.raises(InputError) as e:
        train(img, lab, **fast)
    msg = str(e.value)
    assert "9x200 pixels, smaller than the network's minimum 16: pad the image to 16 pixels or more" in msg
    assert "train a smaller network (size='small': minimum 8, 'tiny': minimum 4; --size)" in msg
    assert "axis=" not in msg and "colour" not in msg
    with pytest.raises(InputError, match=r"minimum 16 \(input 2 of 2, 9x200\): pad"):
        train([rng.random((64, 64), dtype=np.float32), img], [np.ones((64, 64), np.uint8) * 2, lab], **fast)
    vol = rng.random((6, 64, 64), dtype=np.float32)
    with pytest.raises(InputError, match=r"or slice along axis 0 \(axis=0\)$"):
        segment(vol, init_model("unet", classes=3, seed=0, size="medium"), axis=1, device="cpu")
    with pytest.raises(InputError) as e:
        segment(rng.random((32, 32, 3), dtype=np.float32), init_model("unet", classes=3, size="small"), device="cpu")
    assert "convert a colour image" in str(e.value) and "smaller network" not in str(e.value)  # 3 px: none fits
    assert "'small'" not in str(e.value) and "axis=" not in str(e.value)
    with pytest.raises(InputError) as e:  # 3 px: no size fits, none offered (review s45)
        train(rng.random((3, 200), dtype=np.float32), np.tile(np.uint8([1, 2]), (3, 100)), **fast)
    assert "pad the image to 16 pixels" in str(e.value) and "smaller network" not in str(e.value)
