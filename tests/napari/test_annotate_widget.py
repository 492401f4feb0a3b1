"""The Annotate widget drives the whole loop in a real viewer: preview, suggest, correct + undo, continue training."""

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_xrayseg._napari.annotate_widget import AnnotateWidget  # noqa: E402
from napari_xrayseg.core.annotation import predict_slice  # noqa: E402
from napari_xrayseg.core.models import load_model, save_model  # noqa: E402
from napari_xrayseg.core.sample import make_phantom  # noqa: E402
from napari_xrayseg.core.training import train  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    image, truth = make_phantom((8, 64, 64), seed=5)
    ann = np.zeros_like(truth)
    ann[[1, 5]] = truth[[1, 5]]
    model = train(image, ann, size="tiny", epochs=2, steps_per_epoch=2, batch=2, patch=32, device="cpu", context=3)
    path = save_model(model, tmp_path_factory.mktemp("m") / "model.safetensors")
    return image, truth, ann, path


def _pred(image, model, index, axis=0):
    """What the widget previews: the slice as the segmentation labels it."""
    return predict_slice(image, model, index, axis=axis, device="cpu", tile="auto")


def _viewer(make_napari_viewer, trained, show=True):
    image, truth, ann, path = trained
    viewer = make_napari_viewer(show=show)
    viewer.add_image(image, name="img")
    lab = viewer.add_labels(ann.copy(), name="painted")
    w = AnnotateWidget(viewer)
    w.dock = viewer.window.add_dock_widget(w, name="Annotate")
    return viewer, w, lab


def _preview_shows(w, viewer, index, axis=0):
    p = w.preview_layer
    return (
        p is not None
        and p in viewer.layers
        and p.metadata["napari_xrayseg"]["index"] == index
        and p.metadata["napari_xrayseg"]["axis"] == axis
    )


def test_annotate_loop_end_to_end(make_napari_viewer, qtbot, trained, tmp_path):
    image, truth, ann, path = trained
    viewer, w, lab = _viewer(make_napari_viewer, trained)
    assert w._image.value.name == "img" and w._labels.value is lab
    viewer.dims.set_current_step(0, 3)
    w._model_file.value = path  # choosing the model previews the shown slice at once
    assert w.model is not None
    qtbot.waitUntil(lambda: _preview_shows(w, viewer, 3), timeout=60_000)
    model = load_model(path)
    np.testing.assert_array_equal(w.preview_layer.data[0], _pred(image, model, 3))

    # preview follows the slider; requests made while one runs are dropped but the last
    for i in (4, 6, 2, 7):
        viewer.dims.set_current_step(0, i)
    qtbot.waitUntil(lambda: not w.preview_runner.busy and _preview_shows(w, viewer, 7), timeout=60_000)
    np.testing.assert_array_equal(w.preview_layer.data[0], _pred(image, model, 7))
    assert tuple(w.preview_layer.translate) == (7.0, 0.0, 0.0)
    assert len([layer for layer in viewer.layers if layer.name.startswith("img preview")]) == 1

    # suggest: ranking plot + "go to next suggestion" moves the viewer
    w._count.value = 3
    w._suggest.clicked.emit()
    qtbot.waitUntil(lambda: w.ranking is not None and not w.suggest_runner.running, timeout=60_000)
    r = w.ranking
    assert len(r.suggested) == 3 and not {1, 5} & set(r.suggested)
    assert len(w.plot.ax.lines) >= 4  # uncertainty curve, annotated slices, suggestions
    # slices picked as the middle of a gap (no slice stood out) are named in the status, hollow in the plot
    gaps = [s for s, why in zip(r.suggested, r.reasons) if why == "gap"]
    assert len(r.reasons) == 3 and ("middle of the widest gap" in w._status.value) == bool(gaps)
    hollow = [ln for ln in w.plot.ax.lines if ln.get_markerfacecolor() == "none"]
    assert sorted(int(ln.get_xdata()[0]) for ln in hollow) == sorted(gaps)
    # the curve is what the slices are ranked by: the model's disagreement times the novelty boost
    np.testing.assert_array_equal(w.plot.ax.lines[0].get_ydata(), r.score)
    assert r.novelty is not None and "novelty" in w.plot.ax.get_ylabel()
    w._go.clicked.emit()
    assert viewer.dims.current_step[0] == r.suggested[0]
    qtbot.waitUntil(lambda: _preview_shows(w, viewer, r.suggested[0]), timeout=60_000)

    # correct: copy the prediction into the empty pixels of this slice, then undo
    s = r.suggested[0]
    lab.data[s, :10, :10] = 2  # the user painted a corner first: it is kept
    lab.refresh()
    before = lab.data.copy()
    w._copy.clicked.emit()
    qtbot.waitUntil(lambda: (lab.data[s] != 0).sum() > 100, timeout=60_000)
    pred = _pred(image, model, s)
    np.testing.assert_array_equal(lab.data[s, :10, :10], 2)
    np.testing.assert_array_equal(lab.data[s, 10:], pred[10:])
    others = np.delete(np.arange(8), s)
    np.testing.assert_array_equal(lab.data[others], before[others])  # only this slice
    # the ranking shows the copied slice annotated, no longer suggested (QA: the plot kept the old marks)
    assert s in w.ranking.annotated and s not in w.ranking.suggested
    lab.undo()
    np.testing.assert_array_equal(lab.data, before)
    lab.redo()
    lab.undo()

    # continue training on all annotations: a new round file beside the model, the preview refreshed
    lab.data[s] = truth[s]
    w._fraction.value = 0.5
    old_preview = w.preview_layer.data.copy()
    w._train.clicked.emit()
    assert w._train.text == "Cancel"
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    new = path.with_name("model-r1.safetensors")
    assert new.exists() and str(w._model_file.value) == str(new)
    assert w.ranking is None  # the old model's scores are gone: Suggest ranks with the new one
    m1 = load_model(new)
    assert [x["round"] for x in m1.info.train["rounds"]] == [0, 1]
    assert m1.info.train["rounds"][1]["annotated_slices"] == sorted({1, 5, s})
    qtbot.waitUntil(lambda: not w.preview_runner.busy, timeout=60_000)
    np.testing.assert_array_equal(w.preview_layer.data[0], _pred(image, m1, s))
    assert w.preview_layer.data.shape == old_preview.shape
    shot = viewer.screenshot(canvas_only=True)
    assert shot[..., :3].std() > 1  # the canvas drew the image and the preview


def test_preview_along_another_axis_and_cancel_keeps_the_model(make_napari_viewer, qtbot, trained):
    image, truth, ann, path = trained
    viewer, w, lab = _viewer(make_napari_viewer, trained, show=False)
    w._model_file.value = path
    w.show_slice(2, 20)  # slice along X: the viewer shows (Z, Y)
    assert viewer.dims.not_displayed == (2,) and w.current_slice() == (2, 20)
    qtbot.waitUntil(lambda: _preview_shows(w, viewer, 20, axis=2), timeout=60_000)
    assert w.preview_layer.data.shape == (8, 64, 1)
    model = load_model(path)
    np.testing.assert_array_equal(w.preview_layer.data[..., 0], _pred(image, model, 20, axis=2))
    before = w.model
    w._fraction.value = 2.0
    w._train.clicked.emit()
    w._train.clicked.emit()  # Cancel at once: nothing finished, the model stays
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert w.model is before and "keeping the model from before" in w._status.value
    viewer.dims.ndisplay = 3
    assert w.current_slice() is None  # no preview in 3D

    # closing the dock unhooks the widget: moving the slider afterwards asks nothing of it
    viewer.dims.ndisplay = 2
    viewer.window.remove_dock_widget(w.dock)
    w.native.deleteLater()
    qtbot.waitUntil(lambda: w.preview_runner._closed, timeout=10_000)
    viewer.dims.set_current_step(0, 1)
    assert not w.preview_runner.busy


def test_a_round_in_the_widget_keeps_the_models_no_data_value(make_napari_viewer):
    """Review (s44): the panel's empty No-data field passed nodata=None, so the widget's round dropped the value
    continue_training keeps (the API's and CLI's rounds did not): an empty field takes the model's."""
    from napari_xrayseg.core.training import train

    image, truth = make_phantom((6, 48, 48), seed=1920)
    image = image.copy()
    image[:, :, :6] = 0
    ann = np.zeros_like(truth)
    ann[[1, 4]] = truth[[1, 4]]
    model = train(image, ann, nodata=0, size="tiny", epochs=1, steps_per_epoch=1, batch=2, patch=32, device="cpu")
    viewer = make_napari_viewer()
    viewer.add_image(image, name="recon")
    viewer.add_labels(ann.copy(), name="painted")
    w = AnnotateWidget(viewer)
    assert w._nodata.value == ""
    w.set_model(model)
    assert w._nodata.value == "0" and w._train_inputs()["nodata"] == 0.0  # the model's, shown and used
    plain = train(image, ann, size="tiny", epochs=1, steps_per_epoch=1, batch=2, patch=32, device="cpu")
    w._nodata.value = ""
    w.set_model(plain)
    assert w._nodata.value == "" and "nodata" not in w._train_inputs()  # none: continue_training's default


def test_no_data_value_reaches_the_preview_and_the_suggestions(make_napari_viewer, qtbot, trained):
    """An image whose outside is 0: with 'No-data value' 0 the preview leaves it unlabelled, as predict_slice does."""
    from napari_xrayseg.core.normalize import mark_missing

    image, truth, ann, path = trained
    yy, xx = np.mgrid[:64, :64]
    inside = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 28**2
    zero = np.where(inside, image, 0).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(zero, name="recon")
    viewer.add_labels(ann.copy(), name="painted")
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)  # undocked, it crashed at garbage collection
    viewer.dims.set_current_step(0, 3)
    w._model_file.value = path
    qtbot.waitUntil(lambda: not w.preview_runner.busy and _preview_shows(w, viewer, 3), timeout=60_000)
    assert (w.preview_layer.data[0][~inside] > 0).all()  # the outside segmented as a phase
    w._nodata.value = "0"
    qtbot.waitUntil(
        lambda: (
            not w.preview_runner.busy and _preview_shows(w, viewer, 3) and (w.preview_layer.data[0][~inside] == 0).all()
        ),
        timeout=60_000,
    )
    model = load_model(path)
    np.testing.assert_array_equal(w.preview_layer.data[0], _pred(mark_missing(zero, 0), model, 3))
    w._count.value = 2
    w._suggest.clicked.emit()
    qtbot.waitUntil(lambda: w.ranking is not None and not w.suggest_runner.running, timeout=60_000)
    assert len(w.ranking.suggested) == 2


def test_high_scoring_end_slices_are_explained(make_napari_viewer):
    """Ends that score highest yet are not suggested (by design) are shaded on the plot and explained."""
    from napari_xrayseg.core.annotation import SliceRanking, spread_pick

    w = AnnotateWidget(make_napari_viewer())
    u = np.full(48, 0.3)
    u[[0, 46, 47]] = 0.48
    why: list[str] = []
    picks = spread_pick(u, [24], 3, 3.0, ends=True, margin=0.5, why=why)
    w._ranked(SliceRanking(picks, u, [24], 0, "orthoplane", 3.0, None, 0.5, why))
    assert 0 not in picks and 47 not in picks
    assert "the end slices score highest" in w._status.value
    spans = [p for p in w.plot.ax.patches if p.get_label() == "volume ends (count as annotated)"]
    assert len(spans) == 1
    w._ranked(SliceRanking([47, 5], u, [24], 0, "orthoplane", 3.0, None, 0.5, ["score", "gap"]))
    assert "end slices score highest" not in w._status.value  # the end was suggested: nothing to explain


def test_the_preview_is_never_offered_as_the_annotations(make_napari_viewer, qtbot, trained):
    """QA: with no Labels layer yet, the preview became the "Annotations" choice; Suggest then refused its shape."""
    image, _, _, path = trained
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._model_file.value = path
    qtbot.waitUntil(lambda: _preview_shows(w, viewer, viewer.dims.current_step[0]), timeout=60_000)
    qtbot.waitUntil(lambda: not w.preview_runner.busy, timeout=60_000)
    assert w._labels.value is None and not list(w._labels.choices)


def test_a_closed_dock_previews_no_more(make_napari_viewer, qtbot, trained):
    """The dock's "x" only takes the widget out of its dock: it must stop following the slider."""
    viewer, w, _ = _viewer(make_napari_viewer, trained)
    w._model_file.value = trained[3]
    qtbot.waitUntil(lambda: _preview_shows(w, viewer, viewer.dims.current_step[0]), timeout=60_000)
    qtbot.waitUntil(lambda: not w.preview_runner.busy, timeout=60_000)
    w.dock.title.close_button.click()
    viewer.layers.remove(w.preview_layer)
    viewer.dims.set_current_step(0, 2)
    qtbot.wait(500)
    assert not w.preview_runner.busy and not [ly for ly in viewer.layers if "preview" in ly.name]


def test_an_rgb_image_says_why_there_is_no_preview_and_raises_nothing(make_napari_viewer, qtbot, trained):
    """With an RGB layer chosen, every slider move raised an uncaught error from the preview request."""
    image, _, ann, path = trained
    viewer = make_napari_viewer()
    rgb = np.stack([image[0], image[0] ** 2, 1 - image[0]], axis=-1)  # colours (identical planes are grey)
    viewer.add_image(rgb, name="photo", rgb=True)
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w, name="Annotate")  # an undocked widget crashed at garbage collection
    w._model_file.value = path
    w._image.value = viewer.layers["photo"]
    w.refresh_preview()  # raised InputError ("is RGB: set 'Channel axis'") before
    assert w._status.value.startswith("no preview:") and "RGB" in w._status.value
    assert w.preview_layer is None


def test_outputs_of_a_rotated_image_overlay_it(make_napari_viewer, qtbot, trained):
    """A rotated image's preview (and Segment's labels) were drawn axis-aligned, away from the image."""
    from napari_xrayseg._napari._layers import placement

    image, _, ann, path = trained
    viewer = make_napari_viewer()
    img = viewer.add_image(image, name="tilted", rotate=30, scale=(2, 1, 1), translate=(5, 3, 0))
    where = placement(img)
    assert np.allclose(where["rotate"], img.rotate) and where["scale"] == (2, 1, 1)
    assert "rotate" not in placement(viewer.add_image(image, name="plain"))
    viewer.layers.remove("plain")
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)  # undocked, it crashed at garbage collection
    w._image.value = img
    viewer.dims.set_current_step(0, 3)
    w._model_file.value = path
    qtbot.waitUntil(lambda: not w.preview_runner.busy and w.preview_layer is not None, timeout=60_000)
    p = w.preview_layer
    # the preview's pixel (0, y, x) lands where the image's (3, y, x) does, in world coordinates
    for y, x in ((0, 0), (10, 40), (63, 5)):
        assert np.allclose(p.data_to_world((0, y, x)), img.data_to_world((3, y, x)))


def test_a_plane_along_y_leaves_the_z_slices_to_suggest_and_all_painted_says_why(make_napari_viewer, qtbot, trained):
    """One plane painted along y crosses every z slice in a line: no z slice was suggested any more (QA)."""
    image, truth, _, path = trained
    crossing = np.zeros_like(truth)
    crossing[:, 30, :] = truth[:, 30, :]
    crossing[2, 5, 5] = 1  # a stroke: slice 2 is not done
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    lab = viewer.add_labels(crossing, name="painted")
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)  # undocked, it crashed at garbage collection
    w._model_file.value = path
    w._suggest.clicked.emit()
    qtbot.waitUntil(lambda: w.ranking is not None and not w.suggest_runner.running, timeout=60_000)
    assert w.ranking.annotated == [] and len(w.ranking.suggested) == w._count.value > 0
    w.go_to_next()  # the first suggestion, though its slice holds a line of the plane
    assert viewer.dims.current_step[0] == w.ranking.suggested[0]
    lab.data = truth.copy()  # every slice painted
    from qtpy.QtWidgets import QApplication

    qtbot.wait(QApplication.doubleClickInterval() + 100)  # a second click within it counts as a double click
    w._suggest.clicked.emit()
    qtbot.waitUntil(lambda: not w.suggest_runner.running and w.ranking.suggested == [], timeout=60_000)
    assert w._status.value.startswith("nothing to suggest: every slice along axis 0 is annotated")


def test_new_data_in_the_image_layer_gets_a_preview_of_its_own(make_napari_viewer, qtbot, trained):
    # layer.data = rescaled (a filter plugin does it): the preview kept the old data's intensity bounds, 23 % of
    # a slice's labels wrong, and "Copy prediction into annotations" pasted them
    image, truth, ann, path = trained
    viewer, w, lab = _viewer(make_napari_viewer, trained)
    viewer.dims.set_current_step(0, 3)
    w._model_file.value = path
    qtbot.waitUntil(lambda: not w.preview_runner.busy and _preview_shows(w, viewer, 3), timeout=60_000)
    model = load_model(path)
    np.testing.assert_array_equal(w.preview_layer.data[0], _pred(image, model, 3))
    rescaled = (image * 1000 + 3000).astype(np.float32)
    viewer.layers["img"].data = rescaled
    viewer.dims.set_current_step(0, 4)
    qtbot.waitUntil(lambda: not w.preview_runner.busy and _preview_shows(w, viewer, 4), timeout=60_000)
    want = _pred(rescaled, model, 4)  # by its own bounds: the labels of the image before (a linear rescale)
    np.testing.assert_array_equal(want, _pred(image, model, 4))
    np.testing.assert_array_equal(w.preview_layer.data[0], want)
    viewer.dims.set_current_step(0, 3)  # the preview computed before the new data is not reused either
    qtbot.waitUntil(lambda: not w.preview_runner.busy and _preview_shows(w, viewer, 3), timeout=60_000)
    np.testing.assert_array_equal(w.preview_layer.data[0], _pred(rescaled, model, 3))


def test_a_model_chosen_while_a_round_runs_stays_and_the_round_keeps_its_own_name(
    make_napari_viewer, qtbot, trained, tmp_path, monkeypatch
):
    """The round trained from A was saved as B-r1 and replaced the user's new choice B (QA, session 36); a
    failed or cancelled job left "training..." / "ranking slices..." in the status line."""
    import shutil
    import threading

    import napari_xrayseg._napari.annotate_widget as aw

    image, truth, ann, path = trained
    a = shutil.copy(path, tmp_path / "A.safetensors")
    b = shutil.copy(path, tmp_path / "B.safetensors")
    go = threading.Event()
    real = aw.iter_continue_training

    def held(*args, **kwargs):  # the round waits until the test has chosen B
        go.wait(60)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(aw, "iter_continue_training", held)
    viewer, w, lab = _viewer(make_napari_viewer, trained, show=False)
    w._live.value = False
    w._model_file.value = a
    assert w._status.value == "model: A.safetensors (first training)"  # it said "1 round(s)", its round 1 "2"
    w._fraction.value = 0.05
    w._train.clicked.emit()
    assert w.runner.running
    w._model_file.value = b  # chosen mid-round
    chosen = w.model
    go.set()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert (tmp_path / "A-r1.safetensors").exists() and not (tmp_path / "B-r1.safetensors").exists()
    assert w.model is chosen and str(w._model_file.value) == str(b)
    assert "A-r1.safetensors" in w._status.value and "B.safetensors, stays in use" in w._status.value
    w._model_file.value = tmp_path / "A-r1.safetensors"
    assert w._status.value == "model: A-r1.safetensors (first training + 1 round)"

    def broken(*args, **kwargs):
        raise aw.InputError("no annotations to learn from")
        yield

    monkeypatch.setattr(aw, "iter_continue_training", broken)
    w._train.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w._status.value.startswith("Continue training failed: no annotations")


def test_copy_prediction_lands_in_the_slice_clicked_after_the_slider_moved_on(
    make_napari_viewer, qtbot, trained, monkeypatch
):
    """Copy on slice 3, then at once slice 4, before slice 3's preview came back: nothing was copied, without a
    word (the result was stale, and the slider's next preview had replaced the copy's request)."""
    import threading

    import napari_xrayseg._napari.annotate_widget as aw

    image, truth, ann, path = trained
    go = threading.Event()
    real = aw._preview
    monkeypatch.setattr(aw, "_preview", lambda **kw: (go.wait(60), real(**kw))[1])
    viewer, w, lab = _viewer(make_napari_viewer, trained, show=False)
    viewer.dims.set_current_step(0, 3)
    w._model_file.value = path  # slice 3's preview is held
    before = lab.data.copy()
    w._copy.clicked.emit()
    viewer.dims.set_current_step(0, 4)  # moved on before it came back
    viewer.dims.set_current_step(0, 6)
    go.set()
    qtbot.waitUntil(lambda: not w.preview_runner.busy, timeout=60_000)
    pred = _pred(image, load_model(path), 3)
    changed = lab.data != before
    assert changed[3].any() and not np.delete(changed, 3, axis=0).any()
    np.testing.assert_array_equal(lab.data[3][changed[3]], pred[changed[3]])
    assert "copied" in w._status.value and "slice 3" in w._status.value
    assert _preview_shows(w, viewer, 6)  # and the slider's latest preview is shown


def test_a_round_records_the_image_layers_voxel_size_not_the_models(make_napari_viewer, qtbot, trained, tmp_path):
    """QA: a colleague's model at 2 um, my image at 8 um: the round recorded 2 um, and predicting my scan with it
    then warned to fine-tune at this voxel size (what had just been done)."""
    image, truth, ann, path = trained
    colleague = load_model(path)
    colleague.info.voxel_size, colleague.info.unit = [2.0, 2.0, 2.0], "um"
    model_file = save_model(colleague, tmp_path / "colleague.safetensors")
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img", scale=(8, 8, 8), units="um")
    viewer.add_labels(ann.copy(), name="painted", scale=(8, 8, 8), units="um")
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)  # undocked, it crashed at garbage collection
    w._model_file.value = model_file
    qtbot.waitUntil(lambda: w.model is not None, timeout=30_000)
    w._train.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    m1 = load_model(tmp_path / "colleague-r1.safetensors")
    assert m1.info.voxel_size == [8.0, 8.0, 8.0] and m1.info.unit == "um"


def test_a_file_backed_annotations_layer_says_how_to_make_it_editable(make_napari_viewer, trained, monkeypatch):
    """QA: the message said "copy it to a new Labels layer", which the GUI offers no way to do."""
    import dask.array as da

    from napari_xrayseg._napari import annotate_widget

    image, _, ann, path = trained
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    viewer.add_labels(da.from_array(ann), name="painted")
    said = []
    monkeypatch.setattr(annotate_widget, "show_warning", said.append)
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)  # undocked, it crashed at garbage collection
    w._model_file.value = path
    w.copy_prediction()
    cmd = "viewer.add_labels(np.asarray(viewer.layers['painted'].data), name='painted edit')"
    assert said and "read from its file" in said[0] and cmd in said[0]
    ns = {"viewer": viewer, "np": np}
    exec(cmd, ns)  # the line works as written
    assert isinstance(viewer.layers["painted edit"].data, np.ndarray)


def test_the_preview_goes_with_its_image(make_napari_viewer, qtbot, trained):
    """QA: removing the image (or choosing another) left its preview behind, named after the image that was gone."""
    image, _, _, path = trained
    viewer, w, _ = _viewer(make_napari_viewer, trained, show=False)
    second = viewer.add_image(image[:, ::-1].copy(), name="other")
    w._image.value = viewer.layers["img"]
    w._model_file.value = path
    qtbot.waitUntil(lambda: _preview_shows(w, viewer, viewer.dims.current_step[0]), timeout=60_000)
    first = w.preview_layer
    assert first.name == "img preview"
    w._image.value = second  # another image: a preview of its own, under its name
    qtbot.waitUntil(lambda: not w.preview_runner.busy and w.preview_layer is not None, timeout=60_000)
    assert first not in viewer.layers and w.preview_layer.name == "other preview"
    k = viewer.dims.current_step[0]
    np.testing.assert_array_equal(w.preview_layer.data[0], _pred(image[:, ::-1].copy(), load_model(path), k))
    viewer.layers.remove(second)  # the image removed: its preview goes too
    qtbot.waitUntil(lambda: not w.preview_runner.busy, timeout=60_000)
    assert not [ly for ly in viewer.layers if ly.name == "other preview"]
    assert w._image.value is viewer.layers["img"]
    qtbot.waitUntil(lambda: _preview_shows(w, viewer, k), timeout=60_000)
    assert w.preview_layer.name == "img preview"


def test_a_multichannel_layer_says_the_loop_does_not_read_channels(make_napari_viewer, qtbot, trained):
    """QA: a 4D layer got no preview and no reason, and Suggest a shape mismatch with the 3D annotations."""
    from napari_xrayseg.core.errors import InputError

    image, _, _, path = trained
    viewer, w, _ = _viewer(make_napari_viewer, trained, show=False)
    four = viewer.add_image(np.stack([image, 1 - image]), name="two channels")
    w._model_file.value = path
    w._image.value = four
    w.refresh_preview()
    assert w._status.value.startswith("no preview:") and "channels" in w._status.value
    with pytest.raises(InputError, match="has channels, which the annotation loop does not read yet"):
        w._suggest_inputs()


def test_preview_keeps_to_the_memory_budget_and_equals_the_segmentation(trained, monkeypatch):
    """QA (a 2048² scan): the preview ran one window over the slice, whatever the memory budget, and took a
    process to 6 GB. It now labels the slice as ``segment`` does: in tiles with a halo when the whole slice
    does not fit the budget, with the same labels."""
    from napari_xrayseg import segment
    from napari_xrayseg._napari import annotate_widget as aw
    from napari_xrayseg.core import device

    image, _, _, path = trained
    model = load_model(path)
    monkeypatch.setattr(device, "CPU_MEMORY_BUDGET", 2**16)  # a fifth of one 64² slice of this net (80 B/px)
    sides = []
    forward = model.network.forward

    def spy(x, *a, **k):
        sides.append(max(x.shape[-2:]))
        return forward(x, *a, **k)

    monkeypatch.setattr(model.network, "forward", spy)
    got = aw._preview(image, model, 3, 0, {}, "key")
    assert sides and max(sides) < 64  # tiled: no window over the whole slice
    monkeypatch.setattr(model.network, "forward", forward)
    np.testing.assert_array_equal(got, np.asarray(segment(image, model, device="cpu"))[3])


def test_a_round_that_cannot_be_saved_beside_its_model_goes_to_a_rescue_file(
    make_napari_viewer, qtbot, trained, tmp_path, monkeypatch
):
    """QA (h3): a folder that refuses files (napari started from an app: the working folder is /; a share) lost
    the round ("saved to None"); it goes to a rescue file, said, and is the model in use."""
    import errno
    import os
    import shutil
    import tempfile

    import napari_xrayseg.core.models as models
    from napari_xrayseg.core.errors import write_error

    (tmp_path / "ro").mkdir()
    (tmp_path / "tmp").mkdir()
    a = shutil.copy(trained[3], tmp_path / "ro" / "A.safetensors")
    real = models.save_model

    def refusing(model, path, **kw):
        if os.path.basename(os.path.dirname(path)) == "ro":
            raise write_error(OSError(errno.EACCES, "Permission denied"), path)
        return real(model, path, **kw)

    monkeypatch.setattr(models, "save_model", refusing)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    warned = []
    monkeypatch.setattr("napari_xrayseg._napari.annotate_widget.show_warning", warned.append)
    viewer, w, lab = _viewer(make_napari_viewer, trained, show=False)
    w._live.value = False
    w._model_file.value = a
    w._fraction.value = 0.05
    w._train.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    (rescued,) = (tmp_path / "tmp").glob("A-r1-rescued-*.safetensors")
    assert warned and "permission denied" in warned[0] and str(rescued) in warned[0]
    assert str(w._model_file.value) == str(rescued) and w.model is not None
