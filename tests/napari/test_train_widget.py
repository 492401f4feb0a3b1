import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_xrayseg._napari.train_widget import TrainWidget  # noqa: E402
from napari_xrayseg.core.models import init_model, load_model, save_model  # noqa: E402
from napari_xrayseg.core.sample import make_phantom  # noqa: E402


def _setup(viewer, shape=(6, 64, 64)):
    image, truth = make_phantom(shape, seed=11, artefacts=False)
    ann = np.zeros_like(truth)
    ann[[1, 4]] = truth[[1, 4]]
    viewer.add_image(image, name="img")
    lab = viewer.add_labels(ann, name="painted")
    return lab, ann.copy()


def _configure(w, out):
    w._size.value = "tiny"
    w._epochs.value = 2
    w._minutes.value = 5
    w._batch.value = 2
    w._patch.value = 32
    w._device.value = "cpu"
    w._out.value = out


def test_train_widget_end_to_end(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import napari_xrayseg._napari._jobs as jobs

    released = []
    real_release = jobs.release_memory
    monkeypatch.setattr(jobs, "release_memory", lambda: (released.append(1), real_release()))
    viewer = make_napari_viewer(show=True)
    lab, before = _setup(viewer)
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train")
    assert w._labels.value is lab
    _configure(w, tmp_path / "m.safetensors")
    assert w._context.value % 2 == 1
    w._context.value = 3
    w._run.clicked.emit()
    assert w._run.text == "Cancel"
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert released  # cached GPU memory is given back once training ends (a no-op on CPU)
    # training done: model saved, plot drawn; segmentation chained after it
    qtbot.waitUntil(lambda: "img labels" in viewer.layers, timeout=120_000)
    m = load_model(tmp_path / "m.safetensors")
    assert m.info.classes == [1, 2, 3] and len(m.info.history) == 2
    assert m.info.context == 3 and m.info.train["context"] == 3  # the "Context slices" box is passed on
    assert len(w.plot.epochs) == 2 and len(w.plot.ax_loss.lines[0].get_xdata()) == 2
    seg = viewer.layers["img labels"]
    assert seg.data.shape == lab.data.shape and seg.data.dtype == np.uint8
    names = dict(zip(seg.features["index"], seg.features["name"]))  # Analyze and Evaluate name the phases
    assert names == dict(zip(m.info.classes, m.info.class_names))
    # which slices it learned from, for Evaluate to score the others apart
    assert seg.metadata["napari_xrayseg"]["trained_on"] == {"axis": 0, "slices": [1, 4]}
    np.testing.assert_array_equal(lab.data, before)  # the user's labels are never modified
    shot = viewer.screenshot(canvas_only=False)
    assert shot[..., :3].std() > 1


def test_train_widget_cancel_keeps_best_model(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _setup(viewer)
    w = TrainWidget(viewer)
    _configure(w, tmp_path / "c.safetensors")
    w._epochs.value = 1000
    w._segment_after.value = False
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: len(w.plot.epochs) >= 1, timeout=120_000)
    w._run.clicked.emit()  # Cancel
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert w._run.text == "Train"
    assert w.model is not None and (tmp_path / "c.safetensors").exists()
    assert len(load_model(tmp_path / "c.safetensors").info.history) < 1000


def test_train_widget_refuses_existing_model_path(make_napari_viewer, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    _setup(viewer)
    w = TrainWidget(viewer)
    (tmp_path / "old.safetensors").write_bytes(b"precious")
    _configure(w, tmp_path / "old.safetensors")
    errors = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.show_error", errors.append)
    w._run.clicked.emit()
    assert errors and "exists" in errors[0] and not w.runner.running
    assert (tmp_path / "old.safetensors").read_bytes() == b"precious"


def test_train_widget_arch_and_mode_reach_train(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _setup(viewer, shape=(6, 32, 32))
    w = TrainWidget(viewer)
    assert w._mode.value == "supervised" and set(w._mode.choices) == {"supervised", "pix2pix"}
    w._arch.value = "segresnet"
    assert list(w._size.choices) == ["tiny", "small", "medium", "large"] and w._size.value == "small"
    _configure(w, tmp_path / "g.safetensors")  # size tiny
    w._mode.value = "pix2pix"
    w._all_axes.value = True
    w._epochs.value = 1
    w._context.value = 1
    w._segment_after.value = False
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    m = load_model(tmp_path / "g.safetensors")
    assert m.info.arch == "segresnet" and m.info.size == "tiny"
    assert m.info.train["mode"] == "pix2pix" and "loss_d" in m.info.history[0]
    assert m.info.train["axes"] == [0, 1, 2]
    w._arch.value = "unet3d"  # a 3D U-Net over 15 slices: its own default context and batch, and the
    assert w._context.value == 15 and w._size.value == "medium" and w._batch.value == 4  # start's size
    w._arch.value = "unet"  # back to the default architecture: its default size, context and batch
    assert w._size.value == "medium" and w._context.value == 3 and w._batch.value == 8


def test_train_widget_architecture_follows_the_image_until_the_user_picks_one(make_napari_viewer):
    """As train(arch="auto"): unet3d (with its size, context and batch) for a volume at least 15
    slices deep, unet for thinner ones and 2D images; once the user picks one, it stays."""
    viewer = make_napari_viewer()
    thin = viewer.add_image(np.zeros((6, 32, 32), np.float32), name="thin")
    viewer.add_labels(np.zeros((6, 32, 32), np.uint8), name="painted")
    w = TrainWidget(viewer)
    w._image.value = thin
    assert (w._arch.value, w._size.value, w._context.value, w._batch.value) == ("unet", "medium", 3, 8)
    deep = viewer.add_image(np.zeros((20, 32, 32), np.float32), name="deep")
    flat = viewer.add_image(np.zeros((32, 32), np.float32), name="flat")
    w._image.value = deep
    # unet3d, at the pretrained start's size (the start weights are "auto")
    assert (w._arch.value, w._size.value, w._context.value, w._batch.value) == ("unet3d", "medium", 15, 4)
    w._axis.value = 1  # 32 slices along Y: still deep enough
    assert w._arch.value == "unet3d"
    w._minutes.value = 2  # a short budget: the 2.5D net's faster epochs win
    assert w._arch.value == "unet"
    w._minutes.value = 10
    assert w._arch.value == "unet3d"
    w._image.value = flat
    assert w._arch.value == "unet"
    w._image.value = deep
    assert w._arch.value == "unet3d"
    w._arch.value = "unet"  # the user's pick
    w._image.value = thin
    w._image.value = deep
    assert w._arch.value == "unet" and w._context.value == 3


def test_train_widget_starts_from_the_pretrained_model(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    _setup(viewer, shape=(16, 48, 48))
    w = TrainWidget(viewer)
    _configure(w, tmp_path / "p.safetensors")
    w._epochs.value = 1
    w._context.value = 3  # ignored: the pretrained start keeps its own context
    w._segment_after.value = False
    w._start_from.value = "pretrained"
    w._init.value = tmp_path / "other.safetensors"
    errors = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.show_error", errors.append)
    w._run.clicked.emit()  # a file and the pretrained start: refused, nothing runs
    assert errors and "choose one" in errors[0] and not w.runner.running
    w._init.value = ""
    errors.clear()
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert not errors
    m = load_model(tmp_path / "p.safetensors")
    assert m.info.arch == "unet3d" and m.info.context == 15 and m.info.train["init"] == "pretrained"
    assert m.info.classes == [1, 2, 3] and len(m.info.history) == 1


def test_train_widget_fine_tunes_a_2d_model_file_on_a_volume_with_the_form_left_alone(
    make_napari_viewer, qtbot, tmp_path
):
    """The form showed the volume's unet3d (context 15) and passed its context with the file's own 2.5D network:
    training failed ("init model takes 3 context slice(s) ... asked for context=15")."""

    save_model(init_model("unet", size="tiny", classes=3, context=3, seed=0), tmp_path / "start.safetensors")
    viewer = make_napari_viewer()
    _setup(viewer, shape=(16, 48, 48))
    w = TrainWidget(viewer)
    assert w._arch.value == "unet3d" and w._context.value == 15  # the volume's choice
    w._init.value = tmp_path / "start.safetensors"
    assert w._arch.value == "unet" and w._context.value == 3  # the file's network and context, shown
    w._image.value = w._image.value  # the image does not take it back
    assert w._arch.value == "unet" and not w._arch_picked
    w._epochs.value, w._patch.value, w._device.value = 1, 32, "cpu"
    w._segment_after.value = False
    w._out.value = tmp_path / "tuned.safetensors"
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    m = load_model(tmp_path / "tuned.safetensors")
    assert m.info.arch == "unet" and m.info.context == 3 and len(m.info.history) == 1
    w._init.value = ""  # cleared: the volume's choice again
    assert w._arch.value == "unet3d"


def test_train_widget_by_default_races_the_pretrained_start_and_says_which_it_kept(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    _setup(viewer, shape=(16, 48, 48))
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train")
    # the size shown is what train(size=None) trains: the pretrained start's (medium) where it starts
    assert w._start_from.value == "auto" and w._arch.value == "unet3d" and w._size.value == "medium"
    w._start_from.value = "random"
    assert w._size.value == "small"
    w._start_from.value = "auto"
    w._epochs.value, w._batch.value, w._patch.value, w._device.value = 1, 1, 32, "cpu"
    w._segment_after.value = False
    w._out.value = tmp_path / "a.safetensors"
    assert w._size.value == "medium" and w._inputs()["size"] is None  # not picked: train chooses
    seen = []
    orig = w._on_progress
    w._on_progress = lambda p: (seen.append(p.info.get("start")), orig(p))[1]
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=180_000)
    m = load_model(tmp_path / "a.safetensors")
    assert m.info.train["init"] == "auto" and m.info.train["start"] in ("pretrained", "random")
    assert f"kept the {m.info.train['start']} start" in w._status.value
    # the plot showed each candidate's curves in turn (cleared when the random start began), and
    # when done shows the kept candidate's, titled by it
    assert {"pretrained", "random"} <= set(seen)
    assert w.plot.epochs == [h["epoch"] for h in m.info.history] == [1]
    assert w.plot.loss == [h["loss"] for h in m.info.history]
    assert w.plot.ax_loss.get_title() == f"{m.info.train['start']} start (kept)"
    shot = viewer.screenshot(canvas_only=False)
    assert shot[..., :3].std() > 1


def test_a_failed_training_says_so_in_the_status(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """Nothing painted: the job fails, and the status line says why instead of "training..." forever."""
    viewer = make_napari_viewer()
    lab, _ = _setup(viewer)
    lab.data = np.zeros_like(lab.data)
    w = TrainWidget(viewer)
    _configure(w, tmp_path / "m.safetensors")
    errors = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.show_error", errors.append)
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert errors and w._status.value.startswith("training failed: ")
    assert "labels hold no annotations (all 0)" in w._status.value
    assert not (tmp_path / "m.safetensors").exists()


def test_the_widget_passes_its_seed_and_steps_so_a_cli_run_can_be_repeated(make_napari_viewer, tmp_path):
    """The widget had no seed or steps: a CLI run with --seed 3 --steps 10 could not be repeated in napari."""
    viewer = make_napari_viewer()
    _setup(viewer)
    w = TrainWidget(viewer)
    w._out.value = tmp_path / "m.safetensors"
    assert (w._seed.value, w._steps.value) == (0, 25)  # TrainConfig's, as the CLI's
    w._seed.value, w._steps.value = 3, 10
    kw = w._inputs()
    assert kw["seed"] == 3 and kw["steps_per_epoch"] == 10
    # nor precision, loss or schedule (--precision fp32 --loss ce --schedule step)
    assert (kw["precision"], kw["loss"], kw["schedule"]) == ("auto", "dicece", "cosine")  # TrainConfig's
    w._precision.value, w._loss.value, w._schedule.value = "fp32", "ce", "step"
    kw = w._inputs()
    assert (kw["precision"], kw["loss"], kw["schedule"]) == ("fp32", "ce", "step")


def test_an_image_replaced_while_training_is_not_segmented_under_its_name(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """With "Segment the image when done", the old data's labels were laid over the layer's new data."""
    import threading

    import napari_xrayseg._napari.train_widget as tw

    go = threading.Event()
    real = tw.iter_train

    def held(*args, **kwargs):
        go.wait(60)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(tw, "iter_train", held)
    warnings = []
    monkeypatch.setattr(tw, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    _setup(viewer)
    w = TrainWidget(viewer)
    _configure(w, tmp_path / "m.safetensors")
    w._epochs.value, w._context.value = 1, 3
    w._run.clicked.emit()
    viewer.layers["img"].data = viewer.layers["img"].data[::-1].copy()  # another scan in the same layer
    go.set()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert (tmp_path / "m.safetensors").exists() and "img labels" not in viewer.layers
    assert any("holds other data than it was trained on" in m for m in warnings)


def test_level_slices_trains_a_model_that_levels_and_segments_levelled(make_napari_viewer, qtbot, tmp_path):
    """A stitched scan (the lower half on another grey scale): the widget could not train with normalize='slice'."""
    viewer = make_napari_viewer()
    image, truth = make_phantom((8, 32, 32), seed=11, artefacts=False)
    image = image.astype(np.float32)
    image[4:] = image[4:] * 0.7 + 0.1
    ann = np.zeros_like(truth)
    ann[[1, 6]] = truth[[1, 6]]
    viewer.add_image(image, name="img")
    viewer.add_labels(ann, name="painted")
    w = TrainWidget(viewer)
    _configure(w, tmp_path / "l.safetensors")
    w._arch.value = "unet"
    w._size.value = "tiny"
    w._epochs.value = 1
    assert not w._level.value and w._inputs()["normalize"] == "image"  # off by default: the model as before
    w._level.value = True
    assert w._inputs()["normalize"] == "slice"
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    m = load_model(tmp_path / "l.safetensors")
    assert m.info.normalization["level"] == "z" and m.info.train["normalize"] == "slice"
    from napari_xrayseg.core.inference import segment

    shown = np.asarray(viewer.layers["img labels"].data)
    np.testing.assert_array_equal(shown, segment(image, m, device="cpu"))  # segmented when done, levelled
    plain = load_model(tmp_path / "l.safetensors")
    del plain.info.normalization["level"]
    assert not np.array_equal(shown, segment(image, plain, device="cpu"))  # the levelling shows in the labels
    # fine-tuning a levelled or fixed-bounds model file starts from its normalisation (it lost it silently)
    w._level.value = False
    w._out.value = str(tmp_path / "next.safetensors")
    w._init.value = str(tmp_path / "l.safetensors")
    assert w._level.value and w._inputs()["normalize"] == "slice"
    fixed = init_model("unet", size="tiny", classes=3, tile=32)
    fixed.info.normalization.update(low=0.0, high=1.0)
    save_model(fixed, tmp_path / "fixed.safetensors")
    w._init.value = str(tmp_path / "fixed.safetensors")
    assert not w._level.value and w._inputs()["normalize"] == "fixed"
    w._arch_picked = True  # an architecture picked first: the file's levelling still shows (review)
    w._init.value = str(tmp_path / "l.safetensors")
    assert w._level.value and w._inputs()["normalize"] == "slice"


def test_train_widget_names_the_classes_as_the_labels_layer_does(make_napari_viewer, qtbot, tmp_path):
    """The layer's features name the classes (the sample's truth has them); a layer without names: 'class N'."""
    viewer = make_napari_viewer()
    lab, _ = _setup(viewer, shape=(6, 32, 32))
    lab.features = {"index": [1, 2, 3], "name": ["air", "paste", "rock"]}
    w = TrainWidget(viewer)
    _configure(w, tmp_path / "m.safetensors")
    w._arch.value, w._epochs.value, w._context.value, w._segment_after.value = "unet", 1, 1, False
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert load_model(tmp_path / "m.safetensors").info.class_names == ["air", "paste", "rock"]


def test_segment_and_annotate_offer_the_model_train_saved(make_napari_viewer, qtbot, tmp_path):
    """QA (a newcomer): after training, the Segment and Annotate model fields were empty; a chosen one stays."""
    from napari_xrayseg._napari.annotate_widget import AnnotateWidget
    from napari_xrayseg._napari.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    vol, truth = make_phantom((6, 48, 48), seed=2)
    viewer.add_image(vol, name="img")
    ann = np.zeros_like(truth)
    ann[[1, 4]] = truth[[1, 4]]
    viewer.add_labels(ann, name="painted")
    seg, mine = SegmentWidget(viewer), SegmentWidget(viewer)
    other = save_model(init_model("unet", size="tiny", classes=3, tile=32), tmp_path / "chosen.safetensors")
    mine._model_file.value = other
    w = TrainWidget(viewer)
    for name, widget in (("Segment", seg), ("Segment 2", mine), ("Train", w)):
        viewer.window.add_dock_widget(widget, name=name)
    w._out.value = tmp_path / "m.safetensors"
    w._size.value, w._epochs.value, w._batch.value, w._patch.value, w._device.value = "tiny", 1, 2, 32, "cpu"
    w._segment_after.value = False
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    saved = tmp_path / "m.safetensors"
    assert saved.exists() and str(seg._model_file.value) == str(saved)
    assert str(mine._model_file.value) == str(other)  # the user's choice is kept
    annotate = AnnotateWidget(viewer)  # docked after the training: offered it too, and loads it
    viewer.window.add_dock_widget(annotate, name="Annotate")
    assert str(annotate._model_file.value) == str(saved) and annotate.model is not None


def test_a_second_training_replaces_the_model_offered_before(make_napari_viewer):
    """Review: the field kept the first training's model after a second, as if the user had chosen it."""
    from napari_xrayseg._napari._recent import model_saved
    from napari_xrayseg._napari.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    tmp = __import__("tempfile").mkdtemp()
    paths = [save_model(init_model("unet", size="tiny", classes=3, tile=32), f"{tmp}/m{k}.safetensors") for k in (1, 2)]
    model_saved(paths[0])
    assert str(seg._model_file.value) == str(paths[0])
    model_saved(paths[1])
    assert str(seg._model_file.value) == str(paths[1])
    seg._model_file.value = paths[0]  # the user's choice now (another value than the one offered)
    model_saved(paths[1])
    assert str(seg._model_file.value) == str(paths[0])


def test_a_model_that_cannot_be_saved_at_the_end_is_rescued_and_named(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """QA (Windows: a folder the ACLs refuse passes the checks before training): the widget showed the save error
    and the trained model was gone (the CLI saved it elsewhere); the error named the CLI's --out."""
    import errno
    import tempfile

    import napari_xrayseg.core.training as training
    from napari_xrayseg.core.errors import write_error

    def refused(model, path, **kw):
        raise write_error(OSError(errno.EACCES, "Permission denied"), path)

    monkeypatch.setattr(training, "save_model", refused)  # the final save only; the rescue saves as always
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    viewer = make_napari_viewer()
    _setup(viewer)
    w = TrainWidget(viewer)
    _configure(w, tmp_path / "m.safetensors")
    w._segment_after.value = False
    errors = []
    monkeypatch.setattr("napari_xrayseg._napari._jobs.notifications.show_error", errors.append)
    w._run.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    (rescued,) = (tmp_path / "tmp").glob("*.safetensors")
    assert len(load_model(rescued).info.history) == 2 and not (tmp_path / "m.safetensors").exists()
    assert errors and "permission denied" in errors[0] and f"saved to {rescued} instead" in errors[0]
    assert "--out" not in errors[0] and "choose a writable location;" in errors[0]
    assert str(rescued) in w._status.value


def test_the_dice_gamma_loss_gets_its_gamma(make_napari_viewer, tmp_path):
    """QA (three doors): the widget offered loss dice_gamma but no gamma (always 1; the CLI's --gamma)."""
    viewer = make_napari_viewer()
    _setup(viewer)
    w = TrainWidget(viewer)
    _configure(w, tmp_path / "m.safetensors")
    assert w._gamma.native.isHidden()
    w._loss.value = "dice_gamma"
    assert not w._gamma.native.isHidden()
    w._gamma.value = 0.5
    kw = w._inputs()
    assert kw["loss"] == "dice_gamma" and kw["gamma"] == 0.5
