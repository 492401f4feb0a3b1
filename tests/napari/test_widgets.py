import numpy as np
import pytest
import zarr

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_xrayseg._napari.segment_widget import SegmentWidget  # noqa: E402
from napari_xrayseg.core.models import init_model, save_model  # noqa: E402
from napari_xrayseg.core.provenance import file_sha256  # noqa: E402


def test_manifest_is_valid():
    import subprocess
    import sys
    from pathlib import Path

    import npe2

    npe2_cli = Path(sys.executable).with_name("npe2")
    res = subprocess.run([str(npe2_cli), "validate", "napari-xrayseg", "--imports"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = npe2.PluginManifest.from_distribution("napari-xrayseg")
    ids = {c.id for c in manifest.contributions.commands}
    assert {"napari-xrayseg.make_sample_data", "napari-xrayseg.make_segment_widget"} <= ids


def test_sample_data_through_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xrayseg", "pxct")
    image, truth = viewer.layers["PXCT sample"], viewer.layers["PXCT truth"]
    assert isinstance(image, napari.layers.Image) and isinstance(truth, napari.layers.Labels)
    assert image.data.shape == truth.data.shape and image.data.ndim == 3
    assert set(np.unique(truth.data)) == {1, 2, 3}
    assert truth.metadata["napari_xrayseg"]["seed"] == 0
    viewer.open_sample("napari-xrayseg", "pxct-pillar")  # the same electrode as a pillar in air
    pillar = viewer.layers["PXCT pillar truth"]
    assert isinstance(viewer.layers["PXCT pillar"], napari.layers.Image)
    assert (pillar.data[:, 0, 0] == 1).all() and pillar.metadata["napari_xrayseg"]["pillar"] == 0.7


def test_segment_widget_end_to_end_in_a_worker(make_napari_viewer, qtbot, model_file):
    viewer = make_napari_viewer(show=True)
    rng = np.random.default_rng(0)
    layer = viewer.add_image(rng.random((5, 40, 48), dtype=np.float32), name="vol", scale=(2, 1, 1))
    viewer.add_labels(np.zeros((5, 40, 48), np.uint8), name="vol labels")  # must not be replaced
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Segment")
    assert w._image.value is layer
    w._model_file.value = model_file
    assert "UNTRAINED" in w._info.value and w._tile.value == 0  # "auto": whole slices
    w._device.value = "cpu"
    w._run.clicked.emit()
    assert w.runner.running and w._run.text == "Cancel"
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w._run.text == "Segment"
    new = viewer.layers["vol labels [2]"]
    assert isinstance(new, napari.layers.Labels)
    assert new.data.shape == (5, 40, 48) and new.data.dtype == np.uint8
    assert tuple(new.scale) == (2, 1, 1)
    rec = new.metadata["napari_xrayseg"]["provenance"]  # when, by which versions, from which layer and model file
    model = {"path": str(model_file), "sha256": file_sha256(model_file)}  # as a saved store names it
    assert rec["inputs"] == {"image": {"layer": "vol"}, "model": model}
    assert "napari-xrayseg" in rec["software"] and rec["command"] is None
    assert not np.any(viewer.layers["vol labels"].data)  # the user's layer is untouched
    shot = viewer.screenshot(canvas_only=False)
    assert shot.ndim == 3 and shot[..., :3].std() > 1  # not blank


def test_segment_widget_writes_zarr_and_backs_layer(make_napari_viewer, qtbot, model_file, tmp_path, segment_to):
    import dask.array as da

    from napari_xrayseg.core.io import write_volume
    from napari_xrayseg.core.writer import read_output_meta

    viewer = make_napari_viewer()
    scan = tmp_path / "v.zarr"  # opened from a file, as a user does: the saved store names that file
    write_volume(scan, np.random.default_rng(1).random((4, 32, 32), dtype=np.float32))
    viewer.open(scan, plugin="napari-xrayseg")
    segment_to(viewer, tmp_path / "seg.zarr")
    layer = viewer.layers["v labels"]
    assert isinstance(layer.data, da.Array) and (tmp_path / "seg.zarr").exists()
    rec = read_output_meta(tmp_path / "seg.zarr")["provenance"]  # not "dask.Array" (QA)
    assert rec["inputs"]["image"] == {"layer": "v", "path": str(scan)}
    assert rec["inputs"] == layer.metadata["napari_xrayseg"]["provenance"]["inputs"]


def test_segment_widget_cancel(make_napari_viewer, qtbot, model_file):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).random((64, 32, 32), dtype=np.float32), name="big")
    w = SegmentWidget(viewer)
    w._model_file.value = model_file
    w._device.value = "cpu"
    w._batch.value = 1
    w._run.clicked.emit()
    w._run.clicked.emit()  # second click = Cancel
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert "big labels" not in viewer.layers
    assert w._run.text == "Segment" and not w.runner.running


def test_segment_widget_finishes_a_run_cancelled_into_its_zarr(make_napari_viewer, qtbot, model_file, tmp_path):
    # "...seg.zarr exists: choose a new zarr path" was all a second click got, and the cancel never said the
    # finished slabs were kept there
    from napari_xrayseg.core.inference import segment
    from napari_xrayseg.core.writer import output_complete

    viewer = make_napari_viewer()
    image = np.random.default_rng(2).random((64, 32, 32), dtype=np.float32)
    viewer.add_image(image, name="big")
    w = SegmentWidget(viewer)
    w._model_file.value = model_file
    w._device.value = "cpu"
    w._batch.value = 1
    out = tmp_path / "seg.zarr"
    w._out.value = out
    infos = []
    import napari_xrayseg._napari.segment_widget as sw

    sw.show_info, show_info = infos.append, sw.show_info
    real = sw.iter_segment

    def slow(*a, **k):  # a run that cannot finish before the Cancel below, however fast the machine
        import time

        for p in real(*a, **k):
            yield p
            time.sleep(0.1)

    sw.iter_segment = slow
    try:
        w._run.clicked.emit()
        qtbot.waitUntil(lambda: "%" in str(w._info.value) and " 0 %" not in str(w._info.value), timeout=60_000)
        w._run.clicked.emit()  # Cancel
        qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
        assert out.exists() and not output_complete(out) and "big labels" not in viewer.layers
        assert any("finished slabs are kept in" in m and "Segment again" in m for m in infos)
        sw.iter_segment = real
        w._run.clicked.emit()  # again: finishes the run
        qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    finally:
        sw.show_info, sw.iter_segment = show_info, real
    assert any("holds an unfinished run: finishing it" in m for m in infos) and output_complete(out)
    np.testing.assert_array_equal(
        np.asarray(viewer.layers["big labels"].data), segment(image, model_file, device="cpu")
    )


def test_segment_widget_reports_bad_input(make_napari_viewer, monkeypatch, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(3).random((2, 32, 32), dtype=np.float32), name="v")
    w = SegmentWidget(viewer)
    errors = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.show_error", errors.append)
    w._run.clicked.emit()  # no model chosen
    assert errors and "no model file chosen" in errors[0]
    assert not w.runner.running
    (tmp_path / "m.safetensors").mkdir()
    w._model_file.value = tmp_path / "m.safetensors"  # a folder: named as such (QA: "no model file chosen")
    w._run.clicked.emit()
    assert len(errors) == 2 and "m.safetensors" in errors[1] and "no model file chosen" not in errors[1], errors


def test_segment_widget_pyramid_backs_a_multiscale_layer(make_napari_viewer, qtbot, model_file, tmp_path):
    import dask.array as da

    viewer = make_napari_viewer(show=True)
    img = np.random.default_rng(5).random((4, 560, 300), dtype=np.float32)
    viewer.add_image(img, name="v")
    w = SegmentWidget(viewer)
    w._model_file.value = model_file
    w._device.value = "cpu"
    w._out.value = tmp_path / "seg.zarr"
    w._pyramid.value = True
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    layer = viewer.layers["v labels"]
    assert layer.multiscale and all(isinstance(lv, da.Array) for lv in layer.data)
    assert [lv.shape for lv in layer.data] == [(4, 560, 300), (2, 280, 150), (1, 140, 75)]
    shot = viewer.screenshot(canvas_only=True)
    assert shot[..., :3].std() > 1

    # the written store opens again through the plugin's reader: same multiscale labels
    opened = viewer.open(str(tmp_path / "seg.zarr"), plugin="napari-xrayseg")
    assert len(opened) == 1 and isinstance(opened[0], napari.layers.Labels) and opened[0].multiscale
    np.testing.assert_array_equal(np.asarray(opened[0].data[1]), np.asarray(layer.data[1]))
    assert opened[0].metadata["napari_xrayseg"]["complete"] is True


def test_reader_opens_plain_zarr_as_image_and_refuses_other_paths(tmp_path):
    from napari_xrayseg._napari.reader import get_reader
    from napari_xrayseg.core.io import write_volume

    write_volume(tmp_path / "img.zarr", np.ones((2, 8, 8), np.float32))
    layers = get_reader(str(tmp_path / "img.zarr"))(str(tmp_path / "img.zarr"))
    assert layers[0][2] == "image" and layers[0][0].shape == (2, 8, 8)
    (tmp_path / "x.tif").write_bytes(b"")
    assert get_reader(str(tmp_path / "x.tif")) is None
    assert get_reader(str(tmp_path / "nothing.zarr")) is None


def test_reader_opens_hdf5_datasets_lazily_with_their_voxel_size(make_napari_viewer, tmp_path):
    import h5py

    from napari_xrayseg._napari.reader import get_reader

    vol = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        d = f.create_dataset("entry/data", data=vol, chunks=(1, 16, 16))
        d.attrs["element_size_um"] = [0.2, 0.05, 0.05]
        f.create_dataset("entry/angles", data=np.arange(10.0))  # 1D metadata: not a layer
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "scan.h5"), plugin="napari-xrayseg")
    assert layer.name == "scan" and tuple(layer.scale) == pytest.approx((0.2, 0.05, 0.05))
    assert "dask" in type(layer.data).__module__ and np.array_equal(np.asarray(layer.data), vol)
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"], f["b"] = vol, vol[0]
    names = [kw["name"] for _, kw, _ in get_reader(str(tmp_path / "two.h5"))(str(tmp_path / "two.h5"))]
    assert names == ["two a", "two b"]
    (tmp_path / "fake.h5").write_bytes(b"not hdf5")
    assert get_reader(str(tmp_path / "fake.h5")) is None


def test_reader_opens_a_tiff_lazily_at_its_voxel_size_and_a_predict_tiff_as_labels(make_napari_viewer, tmp_path):
    """napari's own TIFF reader reads the whole file and drops the voxel size the tags record."""
    import tifffile

    from napari_xrayseg._napari._layers import layer_class_names
    from napari_xrayseg.core.batch import segment_many

    vol = np.random.default_rng(1).random((5, 40, 48)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "scan.tif", vol, imagej=True, resolution=(2.0, 2.0), metadata={"spacing": 2.0, "unit": "um"}
    )
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "scan.tif"), plugin="napari-xrayseg")
    assert isinstance(layer, napari.layers.Image) and layer.name == "scan"
    assert tuple(layer.scale) == pytest.approx((2.0, 0.5, 0.5)) and list(layer.units)[-1] == "micrometer"
    assert "dask" in type(layer.data).__module__ and np.array_equal(np.asarray(layer.data), vol)
    graph = dict(layer.data.__dask_graph__())  # QA: dask copied the memory map's pages into the graph (the file)
    assert not any(isinstance(v, np.ndarray) and v.nbytes >= vol[0].nbytes for v in graph.values())
    model = init_model("unet", size="tiny", classes=3, tile=32, seed=0)
    model.info.class_names = ["pore", "nickel", "YSZ"]
    segment_many([str(tmp_path / "scan.tif")], model, out_dir=tmp_path / "out", tile=32, device="cpu")
    (labels,) = viewer.open(str(tmp_path / "out" / "scan.tif"), plugin="napari-xrayseg")
    assert isinstance(labels, napari.layers.Labels)
    assert layer_class_names(labels) == {1: "pore", 2: "nickel", 3: "YSZ"}
    assert tuple(labels.scale) == pytest.approx((2.0, 0.5, 0.5))


def test_reader_says_why_it_refuses_a_file_of_a_kind_it_reads(tmp_path, monkeypatch):
    """napari itself only says that the plugin "refused the file"."""
    import tifffile

    from napari_xrayseg._napari import reader

    said = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", said.append)
    g = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    g.create_array("a", shape=(2, 4, 4), dtype="f4")
    g.create_array("b", shape=(2, 4, 4), dtype="f4")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    assert reader.get_reader(str(tmp_path / "two.zarr")) is None
    assert reader.get_reader(str(tmp_path / "rgb.tif")) is None
    assert "two.zarr" in said[0] and "several arrays" in said[0] and "two.zarr/NAME" in said[0]
    assert "rgb.tif" in said[1] and "RGB" in said[1]
    assert reader.get_reader(str(tmp_path / "other.png")) is None and len(said) == 2  # not ours: nothing said


def test_segment_widget_orthoplane_with_confidence_layer(make_napari_viewer, qtbot, model_file):
    viewer = make_napari_viewer(show=True)
    img = np.random.default_rng(6).random((6, 40, 48), dtype=np.float32)
    viewer.add_image(img, name="v", scale=(3, 1, 1))
    w = SegmentWidget(viewer)
    w._model_file.value = model_file
    w._device.value = "cpu"
    w._axes.value = "zyx"
    w._confidence.value = "entropy"
    w._tta.value = 2  # and two test-time views each
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    labels, conf = viewer.layers["v labels"], viewer.layers["v entropy"]
    assert isinstance(labels, napari.layers.Labels) and isinstance(conf, napari.layers.Image)
    assert conf.data.shape == img.shape and 0 <= conf.data.min() and conf.data.max() <= 1
    assert tuple(conf.scale) == (3, 1, 1)
    assert labels.metadata["napari_xrayseg"]["axis"] == 0 and labels.metadata["napari_xrayseg"]["tta"] == 2
    viewer.layers.selection.active = conf
    shot = viewer.screenshot(canvas_only=True)
    assert shot[..., :3].std() > 1


def test_segment_widget_default_tile_adapts_to_small_slices(make_napari_viewer, qtbot, tmp_path):
    # the Tile box starts at "auto": whole 24x40 slices, padded to the stride (no error)
    path = save_model(init_model("unet", size="tiny", classes=3, tile=64), tmp_path / "t64.safetensors")
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(7).random((3, 24, 40), dtype=np.float32), name="small")
    w = SegmentWidget(viewer)
    w._model_file.value = path
    w._device.value = "cpu"
    assert w._tile.value == 0 and w._tile.native.currentText() == "auto"
    assert w._inputs()["tile"] == "auto" and w._inputs()["tta"] == 1  # no test-time views unless asked
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert viewer.layers["small labels"].data.shape == (3, 24, 40)
    # a tile the user typed in that exceeds the slice is refused with the core's message
    errors = []
    import napari_xrayseg._napari._jobs as jobs

    orig = jobs.notifications.show_error
    jobs.notifications.show_error = errors.append  # what the user reads, in the widgets' words
    try:
        w._tile.value = 128
        w._run.clicked.emit()
        qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    finally:
        jobs.notifications.show_error = orig
    assert errors and errors[0].endswith(
        "tile 128 is larger than the 24x40 slice: choose a Tile window of at most 40 px, or auto (whole slices)"
    )


def test_segment_widget_no_data_value_outside_a_field_of_view(make_napari_viewer, qtbot, model_file, monkeypatch):
    """A reconstruction with 0 outside its circular field of view: "No-data value" 0 leaves it unlabelled."""
    viewer = make_napari_viewer(show=True)
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:48, :48]
    inside = (yy - 23.5) ** 2 + (xx - 23.5) ** 2 < 20**2
    vol = np.where(inside, rng.random((4, 48, 48), dtype=np.float32) + 1.0, 0).astype(np.float32)
    viewer.add_image(vol, name="recon")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Segment")
    w._model_file.value, w._device.value = model_file, "cpu"
    errors, warnings = [], []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.show_error", errors.append)
    monkeypatch.setattr("napari_xrayseg._napari._jobs.show_warning", warnings.append)
    w._run.clicked.emit()  # no value given: the core's hint reaches the user as a notification
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert any("holds exactly 0, its lowest grey level" in m and "nodata=0" in m for m in warnings), warnings
    assert (viewer.layers["recon labels"].data[:, ~inside] > 0).all()  # the outside segmented as a phase
    warnings.clear()
    w._nodata.value = "zero"
    w._run.clicked.emit()
    assert errors and "No-data value 'zero' must be a number" in errors[0] and not w.runner.running
    w._nodata.value = "0"
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    labels = viewer.layers["recon labels [2]"].data
    assert (labels[:, ~inside] == 0).all() and (labels[:, inside] > 0).all()
    assert not warnings  # declared: no hint
    assert vol[0, 0, 0] == 0  # the image layer's data is untouched
    shot = viewer.screenshot(canvas_only=True)
    assert shot.ndim == 3 and shot[..., :3].std() > 1


def test_docked_widgets_scroll_and_keep_the_window_on_a_laptop_screen(make_napari_viewer, qtbot):
    """All six docked beside each other: napari's window stays 1280 x 800 (each widget scrolls), and a long
    status line wraps instead of widening the dock."""
    from napari_xrayseg._napari.analyze_widget import AnalyzeWidget
    from napari_xrayseg._napari.annotate_widget import AnnotateWidget
    from napari_xrayseg._napari.evaluate_widget import EvaluateWidget
    from napari_xrayseg._napari.model_widget import ModelWidget
    from napari_xrayseg._napari.train_widget import TrainWidget

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    widgets = [cls(viewer) for cls in (TrainWidget, SegmentWidget, EvaluateWidget, AnnotateWidget, AnalyzeWidget)]
    widgets.append(ModelWidget(viewer))
    for w in widgets:
        viewer.window.add_dock_widget(w, area="right")
    widgets[0]._status.value = "trained 40 epochs; saved to " + "/a/very/long/folder" * 12 + "/model.safetensors"
    qtbot.wait(100)
    assert window.height() <= 800 and window.width() <= 1280, (window.width(), window.height())
    assert widgets[0].scroll.verticalScrollBar().maximum() > 0  # the Train widget scrolls in its share
    assert widgets[0]._status.native.wordWrap()


def test_label_colours_are_napari_defaults():
    """Files, figures and our layers colour label v as napari paints it: the user's annotations match."""
    from napari.layers import Labels

    from napari_xrayseg.core.units import LABEL_COLORS, label_color

    layer = Labels(np.zeros((2, 2), np.uint8))
    for v, rgb in enumerate(LABEL_COLORS, start=1):
        np.testing.assert_allclose(layer.get_color(v)[:3], rgb, atol=0.002)
    for v in range(1, 121):  # label 11 was drawn like 1 (a 10-colour cycle)
        np.testing.assert_allclose(layer.get_color(v)[:3], label_color(v), atol=0.002, err_msg=f"label {v}")


def test_segment_widget_shows_progress_and_the_end_in_its_status(make_napari_viewer, qtbot, model_file):
    """The job's progress shows in the widget itself (not only in napari's collapsed activity panel)."""
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((40, 64, 64), dtype=np.float32), name="vol")
    w = SegmentWidget(viewer)
    w._model_file.value = model_file
    seen = []
    label = w._info

    class Recorder:  # the status label, recording what it is told
        value = property(lambda self: label.value, lambda self, v: (seen.append(v), setattr(label, "value", v)))

    w.runner.status = Recorder()
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert seen[0] == "Segmenting vol..." and any(s.startswith("Segmenting vol: ") and " %" in s for s in seen)
    assert w._info.value == "segmented vol into 'vol labels'"


def test_reader_opens_the_sample_truth_as_named_labels(tmp_path):
    """`xrayseg sample --annotate`: truth and annotations open as Labels named by their file, with phase names."""
    from napari_xrayseg._napari.reader import get_reader
    from napari_xrayseg.cli import main

    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "4", "16", "16", "--annotate", "2"]) == 0
    for name in ("truth", "annotations"):
        path = str(tmp_path / "s" / f"{name}.zarr")
        (data, kw, kind) = get_reader(path)(path)[0]
        assert kind == "labels" and kw["name"] == name  # not "(incomplete)": that is a cut-short predict's
        assert dict(zip(kw["features"]["index"], kw["features"]["name"])) == {1: "pore", 2: "nickel", 3: "YSZ"}


def test_reader_opens_a_one_level_ome_zarr(make_napari_viewer, tmp_path):
    """A single-level OME-Zarr (what many converters write) crashed napari: a list of one array, multiscale off."""
    import zarr

    from napari_xrayseg._napari.reader import get_reader

    vol = np.random.default_rng(2).random((4, 16, 16), dtype=np.float32)
    g = zarr.open_group(str(tmp_path / "one.zarr"), mode="w")
    g.create_array("s0", shape=vol.shape, dtype="float32")[...] = vol
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    scale = [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]
    level = {"path": "s0", "coordinateTransformations": scale}
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [level]}]}
    path = str(tmp_path / "one.zarr")
    ((data, kw, kind),) = get_reader(path)(path)
    assert kind == "image" and not kw["multiscale"] and data.shape == vol.shape
    viewer = make_napari_viewer()
    layer = viewer.open(path, plugin="napari-xrayseg")[0]
    assert tuple(layer.scale) == (2.0, 0.5, 0.5) and np.array_equal(np.asarray(layer.data), vol)


def test_a_tczyx_ome_zarr_of_one_time_point_and_channel_is_its_zyx_volume(make_napari_viewer, tmp_path):
    """bioformats2raw writes TCZYX: predict refused the 5D image, dropped its voxel size; napari showed 5D."""
    import zarr

    from napari_xrayseg.core.io import open_volume, voxel_size_of

    vol = np.random.default_rng(3).random((5, 16, 16), dtype=np.float32)
    g = zarr.open_group(str(tmp_path / "t.zarr"), mode="w")
    g.create_array("0", shape=(1, 1, *vol.shape), dtype="float32", chunks=(1, 1, 5, 16, 16))[...] = vol[None, None]
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}]
    axes += [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    level = {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2.0, 0.5, 0.5]}]}
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [level]}]}
    for path in (tmp_path / "t.zarr", tmp_path / "t.zarr" / "0"):
        a = open_volume(path)
        assert a.shape == vol.shape and voxel_size_of(a) == ((2.0, 0.5, 0.5), "um")
        np.testing.assert_array_equal(np.asarray(a), vol)
        np.testing.assert_array_equal(a[1:3, ..., 4], vol[1:3, ..., 4])
    viewer = make_napari_viewer()
    layer = viewer.open(str(tmp_path / "t.zarr"), plugin="napari-xrayseg")[0]
    assert layer.data.shape == vol.shape and tuple(layer.scale) == (2.0, 0.5, 0.5)


def test_the_labels_to_learn_from_are_the_users_painting_not_the_samples_truth(make_napari_viewer):
    """The quickstart: open the sample (image and truth), add a Labels layer to paint, open Train and Annotate.
    Both chose "PXCT truth" to learn from (the first labels layer), and fell back to it when the painted
    layer was removed."""
    from types import SimpleNamespace

    from napari_xrayseg._napari._layers import looks_like_truth
    from napari_xrayseg._napari.annotate_widget import AnnotateWidget
    from napari_xrayseg._napari.train_widget import TrainWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xrayseg", "pxct")
    shape = viewer.layers["PXCT sample"].data.shape
    painted = viewer.add_labels(np.zeros(shape, np.uint8), name="Labels")
    widgets = [TrainWidget(viewer), AnnotateWidget(viewer)]
    for w, name in zip(widgets, ("Train", "Annotate")):
        viewer.window.add_dock_widget(w, name=name)  # the viewer closes them (an undocked one crashed at exit)
    assert [w._labels.value for w in widgets] == [painted, painted]
    other = viewer.add_labels(np.zeros(shape, np.uint8), name="my gt check")  # "gt" as a word: a reference
    mine = viewer.add_labels(np.zeros(shape, np.uint8), name="length")  # "gt" inside a word: not one
    assert not any(looks_like_truth(SimpleNamespace(name=n)) for n in ("background", "Foreground", "playground"))
    assert all(looks_like_truth(SimpleNamespace(name=n)) for n in ("Ground Truth", "ground_truth", "GT", "truth 2"))
    for w in widgets:
        w._labels.value = mine
    viewer.layers.remove(mine)
    assert [w._labels.value for w in widgets] == [painted, painted]
    assert widgets[0]._labels.choices[-2:] == (viewer.layers["PXCT truth"], other)


def test_a_multichannel_file_opens_with_its_voxel_size_on_the_spatial_axes(make_napari_viewer, tmp_path):
    """QA: a 4D file's three sizes were dropped ("not one positive number per axis"); napari got no scale."""
    from napari_xrayseg.core.io import write_volume

    zcyx = np.random.default_rng(3).random((6, 2, 16, 16), dtype=np.float32)
    write_volume(tmp_path / "zcyx.zarr", zcyx, attrs={"voxel_size": [0.5, 0.1, 0.1], "unit": "um"})
    viewer = make_napari_viewer()
    (layer,) = viewer.open(tmp_path / "zcyx.zarr", plugin="napari-xrayseg")
    assert layer.data.shape == zcyx.shape
    assert np.allclose(layer.scale, (0.5, 1.0, 0.1, 0.1))  # the channel axis (the fewest entries) unscaled
    import h5py

    with h5py.File(tmp_path / "zcyx.h5", "w") as f:  # a 4D HDF5 dataset was refused by the reader (QA)
        f.create_dataset("vol", data=zcyx).attrs["element_size_um"] = [0.5, 0.1, 0.1]
    (layer,) = viewer.open(tmp_path / "zcyx.h5", plugin="napari-xrayseg")
    assert layer.data.shape == zcyx.shape and np.allclose(layer.scale, (0.5, 1.0, 0.1, 0.1))


def test_a_saved_segmentation_reopens_over_its_translated_image(
    make_napari_viewer, qtbot, model_file, tmp_path, segment_to
):
    """QA: the Segment widget's zarr of a translated image (a crop of a scan) reopened at 0, 20-50 voxels away."""
    viewer = make_napari_viewer()
    img = viewer.add_image(
        np.random.default_rng(4).random((4, 32, 32), dtype=np.float32),
        name="crop",
        scale=(0.5, 0.1, 0.1),
        translate=(10, 5, 2.5),
        units=("micrometer",) * 3,
    )
    segment_to(viewer, tmp_path / "crop.zarr")
    assert tuple(viewer.layers["crop labels"].translate) == (10, 5, 2.5)
    (again,) = viewer.open(tmp_path / "crop.zarr", plugin="napari-xrayseg")
    assert np.allclose(again.scale, img.scale) and np.allclose(again.translate, img.translate)
    assert np.allclose(again.extent.world, img.extent.world)  # the same corners as the image


def test_a_layer_added_to_paint_on_becomes_the_annotations_and_a_new_segmentation_the_prediction(
    make_napari_viewer, monkeypatch
):
    """QA (a newcomer following the quickstart): widgets docked before the user added a Labels layer kept
    "PXCT truth" as the annotations (Train learned the whole truth, Annotate found every slice annotated),
    and Evaluate kept the painted layer as the prediction after Segment made one (mean Dice 0.12)."""
    from napari_xrayseg._napari.annotate_widget import AnnotateWidget
    from napari_xrayseg._napari.evaluate_widget import EvaluateWidget
    from napari_xrayseg._napari.train_widget import TrainWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xrayseg", "pxct")
    truth = viewer.layers["PXCT truth"]
    train, annotate, evaluate = TrainWidget(viewer), AnnotateWidget(viewer), EvaluateWidget(viewer)
    for name, w in (("Train", train), ("Annotate", annotate), ("Evaluate", evaluate)):
        viewer.window.add_dock_widget(w, name=name)
    assert train._labels.value is truth and annotate._labels.value is truth  # nothing else yet
    painted = viewer.add_labels(np.zeros(truth.data.shape, np.uint8), name="Labels")
    assert train._labels.value is painted and annotate._labels.value is painted
    assert (evaluate._pred.value, evaluate._truth.value) == (painted, truth)
    made = {"napari_xrayseg": {"model": "m.safetensors"}}  # as Segment marks its result
    seg = viewer.add_labels(np.ones(truth.data.shape, np.uint8), name="seg", metadata=made)
    assert evaluate._pred.value is seg and evaluate._truth.value is truth
    assert train._labels.value is painted  # a model's output never becomes the annotations
    # a layer the user chose stays chosen when another is added
    other = viewer.add_labels(np.zeros(truth.data.shape, np.uint8), name="more")
    assert train._labels.value is painted and other in list(train._labels.choices)
    # the reference picked in the box on purpose (a click: Qt's "activated") is not replaced either (review)
    train._labels.value = truth
    train._labels.native.activated.emit(train._labels.native.currentIndex())
    viewer.add_labels(np.zeros(truth.data.shape, np.uint8), name="scratch")
    assert train._labels.value is truth
    # training on a layer named as the truth says so
    warned = []
    monkeypatch.setattr("napari_xrayseg._napari.train_widget.show_warning", warned.append)
    train._labels.value = truth
    train._out.value = "unused.safetensors"
    train._inputs()
    assert any("named as a reference segmentation" in str(m) for m in warned)


def test_a_grey_image_saved_as_rgb_is_segmented_as_grey(make_napari_viewer, model_file, tmp_path, segment_to):
    """napari opens a grey PNG saved as RGB as an RGB layer: the widgets refused it ("is RGB") where xrayseg
    reads the same file as grey (QA: a model trained on it in napari could not segment it from the CLI)."""
    from napari_xrayseg.core.inference import segment

    viewer = make_napari_viewer()
    grey = (np.random.default_rng(1201).random((48, 40)) * 255).astype(np.uint8)
    viewer.add_image(np.repeat(grey[..., None], 3, axis=-1), name="g", rgb=True)
    segment_to(viewer, tmp_path / "g.zarr")
    got = np.asarray(viewer.layers["g labels"].data)
    np.testing.assert_array_equal(got, segment(grey, model_file, device="cpu"))


def test_a_sample_truth_written_before_classes_were_recorded_opens_as_labels(tmp_path):
    """An older version's sample truth.zarr (only a 'phases' attribute) opened as an Image layer that no widget
    offers as labels (QA, upgrading); its image.zarr, which holds the same attribute, stays an image."""
    from napari_xrayseg._napari.reader import read_zarr
    from napari_xrayseg.core.io import write_volume

    attrs = {"napari_xrayseg": {"sample": "pxct-phantom", "seed": 1280, "phases": {"1": "pore", "2": "nickel"}}}
    write_volume(tmp_path / "truth.zarr", np.ones((2, 8, 8), np.uint8), attrs=attrs)
    write_volume(tmp_path / "image.zarr", np.ones((2, 8, 8), np.float32), attrs=attrs)
    (_, kw, kind), *_ = read_zarr(str(tmp_path / "truth.zarr"))
    assert kind == "labels" and kw["features"]["name"] == ["pore", "nickel"], kw
    assert read_zarr(str(tmp_path / "image.zarr"))[0][2] == "image"


def test_a_2d_image_is_not_asked_for_z(make_napari_viewer):
    """A radiograph was asked for its slice axis, the axes to fuse and a 'Voxel size z' (QA, 2D workflows)."""
    from napari_xrayseg._napari.train_widget import TrainWidget

    viewer = make_napari_viewer()
    flat = viewer.add_image(np.zeros((32, 40), np.float32), name="flat", scale=(0.05, 0.05), units="um")
    seg, train = SegmentWidget(viewer), TrainWidget(viewer)
    for w in (seg, train):
        viewer.window.add_dock_widget(w)
    seg._image.value = train._image.value = flat

    def hidden(*widgets):  # hidden on purpose (the window itself is not shown in tests)
        return [w.native.isHidden() for w in widgets]

    assert hidden(seg._axis, seg._axes, seg._voxel.z, train._axis, train._all_axes) == [True] * 5
    vol = viewer.add_image(np.zeros((4, 32, 40), np.float32), name="vol")
    seg._image.value = train._image.value = vol
    assert hidden(seg._axis, seg._axes, seg._voxel.z, train._axis, train._all_axes) == [False] * 5


def test_reader_opens_a_bioformats2raw_group_and_names_a_complex_array(make_napari_viewer, tmp_path, monkeypatch):
    """QA (files from other software): a bioformats2raw OME-Zarr (the image in group ``0``, TCZYX) crashed the
    reader with "Unsupported type for store_like: 'SpaceAxes'"; a complex zarr opened, then napari raised an
    empty NotImplementedError."""
    from napari_xrayseg._napari.reader import get_reader

    img = np.random.default_rng(1374).random((4, 16, 16), dtype=np.float32)
    top = zarr.open_group(str(tmp_path / "bf2raw.zarr"), mode="w", zarr_format=2)
    top.attrs["bioformats2raw.layout"] = 3
    g = top.create_group("0")
    g.create_array("0", data=img[None, None], chunks=(1, 1, 4, 16, 16))
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}]
    axes += [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    scale = [{"type": "scale", "scale": [1, 1, 0.5, 0.02, 0.02]}]
    g.attrs["multiscales"] = [
        {"version": "0.4", "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}
    ]
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "bf2raw.zarr"), plugin="napari-xrayseg")
    np.testing.assert_array_equal(np.asarray(layer.data), img)
    assert tuple(layer.scale) == (0.5, 0.02, 0.02)

    zarr.create_array(str(tmp_path / "obj.zarr"), data=(img + 1j * img).astype(np.complex64))
    said = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", said.append)
    assert get_reader(str(tmp_path / "obj.zarr")) is None
    assert len(said) == 1 and "obj has dtype complex64: a complex image" in said[0] and "numpy.angle" in said[0]


def test_reader_says_when_each_slice_decodes_a_large_row_of_chunks(tmp_path, monkeypatch):
    """QA (a 2048² scan in 64-deep chunks): napari took 11 s and 2.7 GB to open it, seconds per slider move, with no
    hint why; the reader now says so and points to a rechunked copy."""
    from napari_xrayseg._napari import reader

    zarr.create_array(str(tmp_path / "deep.zarr"), shape=(8, 64, 64), chunks=(8, 32, 32), dtype="float32")
    zarr.create_array(str(tmp_path / "flat.zarr"), shape=(8, 64, 64), chunks=(1, 64, 64), dtype="float32")
    monkeypatch.setattr(reader, "DEEP_ROW_BYTES", 8 * 64 * 64 * 4 - 1)  # one row of the deep store is just over
    said = []
    monkeypatch.setattr("napari.utils.notifications.show_info", said.append)
    reader.get_reader(str(tmp_path / "flat.zarr"))
    assert said == []
    reader.get_reader(str(tmp_path / "deep.zarr"))
    assert len(said) == 1 and "chunks 8 slices deep: each slice shown decodes 0.00012 GiB" in said[0]
    assert "A big zarr is slow to browse in napari" in said[0]


def test_reader_places_a_label_tiff_at_its_origin(tmp_path):
    """QA h4: a segmentation saved as TIFF reopened at 0, away from its translated image (zarr kept the origin)."""
    from napari_xrayseg._napari.reader import get_reader
    from napari_xrayseg.core import batch

    meta = {"voxel_size": [0.5, 0.25, 0.25], "unit": "um", "origin": [10.0, 20.0, 30.0], "classes": [1, 2, 3]}
    path = batch._write_tiff(tmp_path / "l.tif", np.ones((3, 8, 8), np.uint8), meta, overwrite=False, inputs=[])
    ((_, kw, kind),) = get_reader(str(path))(str(path))
    assert kind == "labels" and tuple(kw["scale"]) == (0.5, 0.25, 0.25) and tuple(kw["translate"]) == (10, 20, 30)
