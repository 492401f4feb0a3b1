import dask.array as da
import numpy as np
import pytest
import torch
import zarr

from napari_xrayseg.core.errors import Cancelled, InputError, ModelFileError, OutputExistsError
from napari_xrayseg.core.inference import iter_segment, output_complete, segment
from napari_xrayseg.core.io import open_volume
from napari_xrayseg.core.models import save_model
from napari_xrayseg.core.progress import CancelToken, Progress

KW = {"tile": 32, "device": "cpu", "batch": 4}


def _ref(volume, model, axis):
    """Slice-by-slice reference: each slice alone, in memory."""
    from napari_xrayseg.core.inference import SlicePredictor
    from napari_xrayseg.core.normalize import apply_normalization
    from napari_xrayseg.core.plan import resolved_normalization

    norm = resolved_normalization(model.info.normalization, volume)
    pred = SlicePredictor(model, device="cpu", tile=32, batch=4)
    moved = np.moveaxis(volume, axis, 0)
    out = np.stack([pred.labels(apply_normalization(s[None], norm))[0] for s in moved])
    return np.moveaxis(out, 0, axis)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_every_axis_matches_slice_by_slice_reference(volume, tiny_model, axis):
    out = segment(volume, tiny_model, axis=axis, **KW)
    assert out.shape == volume.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= {1, 2, 3}
    np.testing.assert_array_equal(out, _ref(volume, tiny_model, axis % 3))


def test_streaming_zarr_deeper_than_a_slab_equals_in_memory(tmp_path, volume, tiny_model):
    src = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=volume.shape, chunks=(2, 45, 61), dtype="float32")
    src[...] = volume
    ref = segment(volume, tiny_model, **KW)
    progress = []
    out = segment(
        open_volume(tmp_path / "in.zarr"), tiny_model, out=tmp_path / "out.zarr", progress=progress.append, slab=2, **KW
    )  # slab=2: the chunks' depth (the default slab is 16 slices, a whole number of chunks)
    assert isinstance(out, zarr.Array) and out.chunks[0] == 2
    np.testing.assert_array_equal(out[...], ref)
    assert [p.step for p in progress] == [0, 2, 4, 6, 7]  # one record before the first slab, one per slab of 2
    assert output_complete(tmp_path / "out.zarr")
    # dask in -> dask out, same numbers
    dout = segment(da.from_array(volume, chunks=(3, 45, 61)), tiny_model, **KW)
    assert isinstance(dout, da.Array)
    np.testing.assert_array_equal(dout.compute(), ref)


def _context_ref(volume, model, axis):
    """2.5D reference: the whole volume in memory, neighbours stacked at once."""
    from napari_xrayseg.core.inference import SlicePredictor
    from napari_xrayseg.core.normalize import apply_normalization
    from napari_xrayseg.core.plan import resolved_normalization
    from napari_xrayseg.core.tiling import stack_context

    norm = resolved_normalization(model.info.normalization, volume)
    pred = SlicePredictor(model, device="cpu", tile=32, batch=4)
    x = stack_context(apply_normalization(np.moveaxis(volume, axis, 0), norm), model.info.context)
    out = np.stack([pred.labels(x[i : i + 1])[0] for i in range(x.shape[0])])
    return np.moveaxis(out, 0, axis)


@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("batch", [4, 64])
def test_context_streaming_across_slabs_equals_in_memory(tmp_path, volume, axis, batch):
    from napari_xrayseg.core.models import init_model

    model = init_model("unet", size="tiny", classes=3, tile=32, seed=0, context=3)
    chunks = tuple(2 if d == axis else s for d, s in enumerate(volume.shape))
    src = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=volume.shape, chunks=chunks, dtype="float32")
    src[...] = volume
    kw = dict(KW, batch=batch)
    ref = _context_ref(volume, model, axis)
    progress = []
    out = segment(open_volume(tmp_path / "in.zarr"), model, axis=axis, progress=progress.append, slab=2, **kw)
    assert len(progress) == 1 + -(-volume.shape[axis] // 2)  # really streamed in slabs of 2 (and a record first)
    np.testing.assert_array_equal(np.asarray(out), ref)
    np.testing.assert_array_equal(segment(volume, model, axis=axis, **kw), ref)  # one slab in memory
    # neighbours matter: a plain slice-by-slice run of the same net would need 1 channel
    with pytest.raises(InputError, match="3 context slices"):
        from napari_xrayseg.core.inference import SlicePredictor

        SlicePredictor(model, device="cpu", tile=32).labels(np.zeros((1, 32, 32), np.float32))


def test_context_2d_input_replicates_the_slice(volume):
    from napari_xrayseg.core.models import init_model

    model = init_model("unet", size="tiny", classes=3, tile=32, seed=0, context=5)
    out = segment(volume[0], model, **KW)
    assert out.shape == volume[0].shape
    np.testing.assert_array_equal(out, segment(volume[:1], model, **KW)[0])


def test_2d_input(volume, tiny_model):
    out = segment(volume[0], tiny_model, **KW)
    assert out.shape == volume[0].shape
    np.testing.assert_array_equal(out, segment(volume[:1], tiny_model, **KW)[0])


@pytest.mark.parametrize("tile", [32, "auto"])
def test_the_info_log_names_the_job_with_a_tile_size_or_auto(volume, tiny_model, caplog, tile):
    # "tile %d" with tile="auto" was a logging error (a traceback on stderr, the line lost) under -v
    caplog.set_level("INFO", logger="napari_xrayseg.core.inference")
    segment(volume, tiny_model, **{**KW, "tile": tile})
    assert "slabs of" in caplog.text and f"tile {tile}" in caplog.text


def test_model_from_path(tmp_path, volume, tiny_model):
    p = save_model(tiny_model, tmp_path / "m.safetensors")
    np.testing.assert_array_equal(segment(volume, p, **KW), segment(volume, tiny_model, **KW))


def test_input_is_not_modified(volume, tiny_model):
    before = volume.copy()
    segment(volume, tiny_model, **KW)
    np.testing.assert_array_equal(volume, before)


class TripAt(CancelToken):
    """A token that cancels itself at the n-th check (no sleeps, no threads)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def check(self):
        self.calls += 1
        if self.calls >= self.n:
            self.cancel()
        super().check()


def test_cancel_leaves_readable_partial_output_marked_incomplete(tmp_path, volume, tiny_model):
    gen = iter_segment(volume, tiny_model, out=tmp_path / "o.zarr", slab=2, cancel=TripAt(6), **KW)
    seen = []
    with pytest.raises(Cancelled):
        for p in gen:
            assert isinstance(p, Progress)
            seen.append(p.step)
    assert seen and seen[-1] < volume.shape[0]
    part = zarr.open_array(store=str(tmp_path / "o.zarr"), mode="r")
    assert part.shape == volume.shape
    ref = segment(volume, tiny_model, **KW)
    np.testing.assert_array_equal(part[: seen[-1]], ref[: seen[-1]])  # finished slabs are there
    assert not output_complete(tmp_path / "o.zarr")


def test_output_never_overwritten_silently(tmp_path, volume, tiny_model):
    segment(volume, tiny_model, out=tmp_path / "o.zarr", **KW)
    with pytest.raises(OutputExistsError, match="overwrite"):
        segment(volume, tiny_model, out=tmp_path / "o.zarr", **KW)
    segment(volume, tiny_model, out=tmp_path / "o.zarr", overwrite=True, **KW)


@pytest.mark.parametrize(
    ("image", "kw", "match"),
    [
        (np.zeros((2, 3, 4, 5), np.float32), {}, "4 dimensions"),
        (np.zeros((4, 32, 32), bool), {}, "dtype bool"),
        (np.full((4, 32, 32), 3.0, np.float32), {}, "constant"),
        (
            np.where(np.eye(32)[None] > 0, np.inf, 1.0).astype(np.float32) * np.ones((2, 1, 1), np.float32),
            {},
            "inf values",
        ),
        (np.random.rand(4, 32, 32).astype(np.float32), {"tile": 30}, "multiple of the network's stride"),
        (np.random.rand(4, 32, 32).astype(np.float32), {"axis": 3}, "axis 3"),
        (np.random.rand(4, 32, 32).astype(np.float32), {"overlap": 1.0}, "overlap"),
        (np.random.rand(4, 32, 32).astype(np.float32), {"device": "cuda:7"}, "device"),
        (np.random.rand(4, 32, 32).astype(np.float32), {"batch": 0}, "batch"),
    ],
)
def test_bad_input_messages(tiny_model, image, kw, match):
    args = {**KW, **kw}
    with pytest.raises(InputError, match=match):
        segment(image, tiny_model, **args)


@pytest.mark.gpu
def test_cuda_matches_cpu(volume, tiny_model):
    cpu = segment(volume, tiny_model, **KW)
    gpu = segment(volume, tiny_model, **{**KW, "device": "cuda"})  # fp16 autocast on CUDA
    assert (gpu == cpu).mean() > 0.99


def test_auto_device_is_cpu_without_cuda(volume, tiny_model):
    import torch

    from napari_xrayseg.core.device import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("kind", ["zlib-tiled-bigtiff", "pages-one-by-one", "plain"])
def test_tiff_inputs_stream_lazily_and_segment_like_numpy(tmp_path, volume, tiny_model, kind):
    import tifffile
    import zarr

    from napari_xrayseg.core.io import open_volume

    p = tmp_path / "v.tif"
    if kind == "zlib-tiled-bigtiff":
        tifffile.imwrite(p, volume, compression="zlib", tile=(16, 16), bigtiff=True, photometric="minisblack")
    elif kind == "pages-one-by-one":  # each page its own series, as many scanners write them
        with tifffile.TiffWriter(p) as tif:
            for page in volume:
                tif.write(page, compression="zlib", photometric="minisblack")
    else:
        tifffile.imwrite(p, volume, photometric="minisblack")
    img = open_volume(p)
    assert img.shape == volume.shape
    if kind == "plain":
        assert isinstance(img, np.memmap)  # uncompressed: mapped, not read
    else:
        assert isinstance(img, zarr.Array)  # compressed: decoded a chunk at a time, never whole
        np.testing.assert_array_equal(img[2:4], volume[2:4])
    np.testing.assert_array_equal(segment(img, tiny_model, **KW), segment(volume, tiny_model, **KW))
    # the output helper knows where a TIFF input lives: writing over it is refused
    from napari_xrayseg.core.errors import InputError

    with pytest.raises(InputError, match="is the input"):
        segment(img, tiny_model, out=p, overwrite=True, **KW)


def test_percentile_sample_does_not_depend_on_the_chunks(tmp_path):
    """The same image in 16-slice chunks, 1-slice chunks or in memory: the same bounds (a re-chunked copy
    was segmented differently), close to the volume's percentiles."""
    from napari_xrayseg.core.normalize import compute_normalization

    rng = np.random.default_rng(0)
    vol = (rng.normal(0, 1, (160, 24, 24)) + np.linspace(0, 2, 160)[:, None, None]).astype(np.float32)
    norms = []
    for chunks in ((16, 24, 24), (1, 24, 24), (160, 8, 8)):
        z = zarr.create_array(
            store=str(tmp_path / f"{chunks[0]}-{chunks[1]}.zarr"), shape=vol.shape, chunks=chunks, dtype="float32"
        )
        z[...] = vol
        norms.append(compute_normalization(z))
    import h5py

    with h5py.File(tmp_path / "x1.h5", "w") as f:  # chunked across the slices: each slice touches every chunk
        f.create_dataset("entry/data/data", data=vol, chunks=(160, 24, 1), compression="gzip")
        f["entry/angles"] = np.arange(10.0)  # NeXus metadata beside it: the one image is read
    from napari_xrayseg.core.io import open_volume

    h5 = open_volume(tmp_path / "x1.h5")
    assert h5.name == "/entry/data/data" and h5.file.id.get_access_plist().get_cache()[2] >= 64 << 20
    # every sample slice in one read (each chunk decoded once, not 16 times): the same bounds
    reads = []

    class Counting:
        shape, dtype = vol.shape, vol.dtype

        def __getitem__(self, index):
            reads.append(index)
            return h5[index]

    Counting.__module__ = "h5py.counting"
    assert compute_normalization(Counting()) == norms[0] and len(reads) == 1
    assert norms[0] == norms[1] == norms[2] == compute_normalization(vol) == compute_normalization(h5)
    lo, hi = np.percentile(vol, (0.5, 99.5))
    assert abs(norms[0]["low"] - lo) < 0.15 and abs(norms[0]["high"] - hi) < 0.15


def test_model_file_loads_while_the_image_is_read(tmp_path, volume, tiny_model):
    """segment(path) builds the net on a thread: same result as a Model; a bad file still fails first."""
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    np.testing.assert_array_equal(segment(volume, path, **KW), segment(volume, tiny_model, **KW))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:-64])  # weights cut short: the header reads, the tensors do not
    with pytest.raises(ModelFileError, match="bad.safetensors.*truncated"):
        segment(volume, bad, out=tmp_path / "o.zarr", **KW)
    assert not (tmp_path / "o.zarr").exists()  # nothing claimed is left behind


def test_an_error_before_the_model_is_loaded_waits_for_its_thread(tmp_path, volume, tiny_model, monkeypatch):
    """An existing output fails while the model loads on its thread: the thread has ended when the error
    is raised (a process exiting while torch builds a network on another thread aborts with exit 134)."""
    import threading

    from napari_xrayseg.core import inference

    path = save_model(tiny_model, tmp_path / "m.safetensors")
    (tmp_path / "o.zarr").mkdir()
    slow = inference.load_model

    def load(*a, **k):  # the load outlives the claim's check
        threading.Event().wait(0.5)
        return slow(*a, **k)

    monkeypatch.setattr(inference, "load_model", load)
    with pytest.raises(OutputExistsError):
        segment(volume, path, out=tmp_path / "o.zarr", **KW)
    assert not [t for t in threading.enumerate() if t.name == "xrayseg-load-model"]


def test_segment_opens_an_image_path_itself(tmp_path, volume, tiny_model):
    """segment("scan.zarr", model) as the CLI does it (it said "image has 0 dimensions")."""
    from napari_xrayseg.core.io import write_volume

    write_volume(tmp_path / "scan.zarr", volume, chunks=(2, *volume.shape[1:]))
    np.testing.assert_array_equal(
        np.asarray(segment(str(tmp_path / "scan.zarr"), tiny_model, **KW)), segment(volume, tiny_model, **KW)
    )
    with pytest.raises(InputError, match="is the input"):
        segment(tmp_path / "scan.zarr", tiny_model, out=tmp_path / "scan.zarr", overwrite=True, **KW)


def test_a_memory_mapped_input_gets_the_zarr_array_written(tmp_path, volume, tiny_model):
    """A .npy file is opened memory-mapped: with out= the result is the store, not the volume read into RAM."""
    np.save(tmp_path / "v.npy", volume)
    got = segment(open_volume(tmp_path / "v.npy"), tiny_model, out=tmp_path / "o.zarr", **KW)
    assert isinstance(got, zarr.Array)
    np.testing.assert_array_equal(got[...], segment(volume, tiny_model, **KW))
    assert isinstance(segment(volume, tiny_model, out=tmp_path / "p.zarr", **KW), np.ndarray)  # numpy in: numpy


def test_a_hot_pixel_does_not_spread_through_the_network(tiny_model, monkeypatch):
    """Normalised values are clipped one range width beyond the bounds: one pixel at 65535 in a 1000-3040
    scan (31.6 normalised) changed labels across the network's receptive field (a QA run: Dice 0.931 to 0.695)."""
    from napari_xrayseg.core.normalize import CLIP, apply_normalization

    norm = {"low": 1000.0, "high": 3040.0}
    x = np.array([500.0, 1000.0, 3040.0, 4000.0, 65535.0, np.nan])
    np.testing.assert_allclose(apply_normalization(x, norm), [-0.245098, 0, 1, 0.470588 + 1, CLIP[1], np.nan], 1e-5)
    rng = np.random.default_rng(0)
    img = (1000 + 2040 * rng.random((64, 64))).astype(np.float32)
    clean = segment(img, tiny_model, **KW)
    hot = img.copy()
    hot[32, 32] = 1e7  # a hot pixel of a float scan (one at 1e9 changed 75 % of the labels in a QA run)
    changed = int((segment(hot, tiny_model, **KW) != clean).sum())
    from napari_xrayseg.core import normalize

    monkeypatch.setattr(normalize, "CLIP", (-np.inf, np.inf))  # as before: nothing clipped
    spread = int((segment(hot, tiny_model, **KW) != clean).sum())
    assert changed <= 16 and spread > 10 * max(changed, 1), (changed, spread)


def test_inputs_go_to_a_non_cuda_device_too(tiny_model):
    # Apple's MPS (the "auto" device on a Mac) took CPU inputs to MPS weights: every segmentation failed
    from napari_xrayseg.core.predictor import SlicePredictor

    pred = SlicePredictor(tiny_model, device="cpu", precision="fp32")
    x = torch.zeros(1, 1, 8, 8)
    assert pred._to_device(x) is x  # CPU: no copy
    pred.device = torch.device("meta")  # stands in for "mps" on a machine without one
    assert pred._to_device(x).device.type == "meta"


def test_orthoplanes_on_a_thin_volume_are_warned_about(tiny_model, caplog):
    """5x1024x1024 with axes='zyx' ran 5-slice slabs along y and x: 70-140x slower, silently."""
    thin = np.random.default_rng(1).random((5, 40, 48), dtype=np.float32)
    with caplog.at_level("WARNING", logger="napari_xrayseg.core.plan"):
        segment(thin, tiny_model, axes="zyx", **KW)
    assert "axis 0 has 5 slices" in caplog.text and "segment along axis 0 alone (axes='z')" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="napari_xrayseg.core.plan"):
        segment(np.random.default_rng(1).random((20, 40, 48), dtype=np.float32), tiny_model, axes="zyx", **KW)
    assert "slices" not in caplog.text


def test_an_output_that_is_the_input_under_another_name_is_refused(tmp_path):
    """On a case-insensitive disk (macOS) --out Tomo.npy is tomo.npy: the path strings differ, the file is one
    (a hard link stands in for it here)."""
    import os

    from napari_xrayseg.core.errors import InputError
    from napari_xrayseg.core.output import check_not_input

    np.save(tmp_path / "tomo.npy", np.zeros(3))
    os.link(tmp_path / "tomo.npy", tmp_path / "Tomo.npy")
    with pytest.raises(InputError, match="is the input"):
        check_not_input(tmp_path / "Tomo.npy", [np.load(tmp_path / "tomo.npy", mmap_mode="r")])


def test_an_output_around_the_input_under_another_name_is_refused(tmp_path, monkeypatch):
    """QA (exFAT, macOS): --out proj.zarr --overwrite for the input Proj.zarr/tomo was accepted and deleted the
    group with the raw scan; containment compared path strings. The file system's answer (one folder) is
    stood in for by a case-insensitive comparison of existing paths."""
    import os

    import zarr

    from napari_xrayseg.core import output
    from napari_xrayseg.core.errors import InputError

    group = zarr.open_group(str(tmp_path / "Proj.zarr"), mode="w")
    tomo = group.create_array("tomo", shape=(4, 8, 8), dtype="float32")
    real = output._file_key

    def key(p):  # as stat answers on a case-insensitive disk: proj.zarr is Proj.zarr
        return real(p) or real(os.fspath(p).replace("proj.zarr", "Proj.zarr"))

    monkeypatch.setattr(output, "_file_key", key)
    with pytest.raises(InputError, match="lies around the input"):
        output.check_not_input(tmp_path / "proj.zarr", [zarr.open_array(str(tmp_path / "Proj.zarr" / "tomo"))])
    with pytest.raises(InputError, match="lies inside the input"):
        output.check_not_input(tmp_path / "proj.zarr" / "tomo" / "x.zarr", [tomo])
    output.check_not_input(tmp_path / "other.zarr", [tomo])
    stat = os.stat

    def no_inodes(p, **k):  # a network drive that gives every file inode 0 (sshfs-win, WebDAV)
        st = stat(p, **k)
        return os.stat_result((st.st_mode, 0, 7, *tuple(st)[3:])) if str(tmp_path) in os.fspath(p) else st

    monkeypatch.setattr(output, "_file_key", real)
    monkeypatch.setattr(os, "stat", no_inodes)
    output.check_not_input(tmp_path / "other.zarr", [tomo])  # no false alarm: every path looked like one file


def test_reading_a_dask_array_leaves_dasks_global_callbacks_alone():
    """napari slices dask layers with a global cache callback on the GUI thread; a worker's compute swapped the
    global callbacks under it (KeyError from dask/cache.py, dask#10396)."""
    import dask.array as da
    from dask.callbacks import Callback

    from napari_xrayseg.core.io import read_block

    arr = da.from_array(np.arange(64.0).reshape(4, 4, 4), chunks=2)
    seen = []
    with Callback(pretask=lambda key, dsk, state: seen.append(key)):
        np.testing.assert_array_equal(read_block(arr, (slice(1, 3),)), np.arange(64.0).reshape(4, 4, 4)[1:3])
        assert seen == []  # the global callback never ran for our read
        np.asarray(arr[:1])
        assert seen  # (it does for a plain compute)


def test_a_fixed_bounds_model_on_a_scan_of_another_grey_scale_is_warned_about(tiny_model, caplog):
    """QA: a colleague's normalize='fixed' model (bounds 0.035..0.89) on a uint16 scan (10000..50000) labelled
    everything one class, without a word. Within its range: silent."""
    import copy

    model = copy.deepcopy(tiny_model)
    from napari_xrayseg.core.sample import make_phantom

    model.info.normalization = {"method": "percentile", "low": 0.035, "high": 0.89, "percentiles": [0.5, 99.5]}
    volume = make_phantom((4, 32, 32), seed=3)[0]
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        segment(volume, model, **KW)
    assert "fixed bounds" not in caplog.text
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        segment((volume * 40000 + 10000).astype(np.uint16), model, **KW)
    assert "this image's lie at" in caplog.text and "--normalize image" in caplog.text


def test_a_run_without_out_whose_labels_exceed_the_memory_is_refused_before_any_work(tiny_model, monkeypatch):
    """QA s45: a 40 GB dask volume segmented without out= filled RAM for hours; at 268 GB numpy's bare
    MemoryError came after 6 minutes of reading the grey-level sample."""
    from napari_xrayseg.core import device, inference

    big = da.zeros((4000, 8192, 8192), dtype=np.uint16, chunks=(16, 1024, 1024))  # 250 GiB of labels
    monkeypatch.setattr(inference, "resolved_normalization", lambda *a: pytest.fail("sampled before the check"))
    said = r"need 250\.0 GiB in memory, more than the .* GiB available: pass out='labels.zarr' \(--out; out_dir= "
    with pytest.raises(InputError, match=said + r"for several inputs; the Segment widget's Save to zarr\)"):
        segment(big, tiny_model, **KW)
    monkeypatch.setattr(device, "available_memory", lambda: 10 * 2**30)  # an orthoplane sum counts too
    small = da.zeros((16, 256, 256), dtype=np.uint16, chunks=(16, 256, 256))
    inference._check_in_memory(small.shape, 3, 1, False)
    with pytest.raises(InputError, match="need 17.0 GiB"):
        inference._check_in_memory((64, 4096, 4096), 3, 3, True)  # 1 + 4 + 4 x 3 bytes a voxel


def test_slicing_along_an_axis_the_model_never_trained_along_is_said(volume, tiny_model, caplog):
    """QA s45: a model trained with --axis 1 was applied along axis 0 by predict, suggest and the Segment widget
    without a word."""
    import copy

    along_y = copy.deepcopy(tiny_model)
    along_y.info.train = {**along_y.info.train, "axis": 1, "axes": [1]}
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        segment(volume, along_y, **KW)
    assert "the model trained on slices along axis 1 (y); segmenting along axis 0 (z), which it never saw: pass " \
        "axis=1 (--axis y)" in caplog.text  # fmt: skip
    caplog.clear()
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        segment(volume, along_y, axis=1, **KW)
        segment(volume, tiny_model, **KW)  # trained along z (or with no record): nothing to say
        segment(volume, along_y, axes="zyx", **KW)  # orthoplane: every axis on purpose
        one_image = copy.deepcopy(tiny_model)  # trained on one 2D image: no axis to keep (review s45)
        one_image.info.train = {**one_image.info.train, "axis": 0, "axes": [0], "image_shape": [45, 61]}
        segment(volume, one_image, axis=1, **KW)
    assert "never saw" not in caplog.text
