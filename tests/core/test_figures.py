"""Tests of napari_xrayseg.core.figures: each figure drawn, saved non-blank, never overwriting."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from matplotlib.figure import Figure
from matplotlib.image import imread

from napari_xrayseg.core import figures
from napari_xrayseg.core.errors import InputError, OutputExistsError
from napari_xrayseg.core.figures import collage, save_figures, slice_dice_plot, training_curves
from napari_xrayseg.core.metrics import evaluate

HISTORY = [
    {"epoch": 1, "loss": 0.9, "val_dice": 0.5, "val_dice_per_class": [0.4, 0.6]},
    {"epoch": 2, "loss": 0.5, "val_dice": 0.7, "val_dice_per_class": {"1": 0.6, "2": 0.8}},
    {"epoch": 3, "loss": 0.4, "val_dice": None},
]


@pytest.fixture
def trio():
    rng = np.random.default_rng(0)
    image = rng.random((6, 24, 32), dtype=np.float32)
    truth = np.zeros((6, 24, 32), np.uint8)
    truth[:, :12] = 1
    truth[:, 12:] = 2
    truth[1] = 0  # an unannotated slice: sparse truth
    pred = truth.copy()
    pred[:, 10:14, :8] = 2
    pred[:, 20:, 28:] = 0
    pred[1] = 1
    return image, pred, truth


def _non_blank(path):
    img = imread(path)
    assert img.ndim == 3 and img[..., :3].std() > 0
    return img


class _Counting:
    """An array that records what was read (to prove collage reads only its slices)."""

    def __init__(self, a):
        self.a = a
        self.shape, self.dtype, self.ndim = a.shape, a.dtype, a.ndim
        self.reads = []

    def __getitem__(self, idx):
        out = self.a[idx]
        self.reads.append(np.asarray(out).size)
        return out


def test_collage_draws_rows_and_saves_png(trio, tmp_path):
    image, pred, truth = trio
    out = tmp_path / "c.png"
    fig = collage(image, pred, truth, n=3, path=out)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 9  # 3 slices x raw | prediction | overlay
    assert "green correct" in fig.axes[2].get_title()
    _non_blank(out)
    with pytest.raises(OutputExistsError, match="exists"):
        collage(image, pred, truth, n=3, path=out)
    collage(image, pred, truth, n=3, path=out, overwrite=True)


def test_collage_reads_only_the_shown_slices(trio):
    image, pred, truth = trio
    arrays = [_Counting(a) for a in trio]
    collage(*arrays, axis=1, slices=[0, 5])
    for a in arrays:
        assert a.reads == [6 * 32, 6 * 32]  # two (Z, X) slices each, nothing more


def test_collage_overlay_colours(trio):
    image, pred, truth = trio
    fig = collage(image, pred, truth, slices=[1, 2])
    overlay = fig.axes[2 + 3].images[0].get_array()  # row of slice 2
    base = figures._grey(image[2], *figures._contrast([image[1], image[2]]), image[2].shape)
    wrong = (pred[2] != truth[2]) & (pred[2] != 0)
    missed = pred[2] == 0
    assert (overlay[wrong][:, 0] > base[wrong][:, 0]).all()  # red
    assert (overlay[missed][:, 2] > overlay[missed][:, 0]).all()  # blue
    unannotated = fig.axes[2].images[0].get_array()  # slice 1 has no truth: raw grey
    grey = figures._grey(image[1], *figures._contrast([image[1], image[2]]), image[1].shape)
    np.testing.assert_allclose(unannotated, grey)
    assert "no annotated pixel" in fig.axes[2].get_xlabel()


def test_collage_on_dask_zarr_2d_and_without_image_or_truth(trio, tmp_path):
    image, pred, truth = trio
    z = zarr.create_array(store=str(tmp_path / "p.zarr"), shape=pred.shape, chunks=(1, 24, 32), dtype=pred.dtype)
    z[:] = pred
    fig = collage(da.from_array(image, chunks=(2, 24, 32)), z, da.from_array(truth), axis=2, n=2)
    assert len(fig.axes) == 6
    fig = collage(image[3], pred[3], truth[3], path=tmp_path / "2d.png")
    assert len(fig.axes) == 3 and fig.axes[0].get_ylabel() == "2D image"
    _non_blank(tmp_path / "2d.png")
    fig = collage(None, pred, truth, n=2)
    assert fig.axes[0].get_title().startswith("truth")
    fig = collage(image, pred, n=1)
    assert "boundaries" in fig.axes[2].get_title()


def test_collage_rejects_bad_input(trio):
    image, pred, truth = trio
    with pytest.raises(InputError, match="does not match"):
        collage(image[:, :10], pred, truth)
    with pytest.raises(InputError, match="out of range"):
        collage(image, pred, truth, slices=[6])
    with pytest.raises(InputError, match="axis"):
        collage(image, pred, truth, axis=3)
    with pytest.raises(InputError, match="dimensions"):
        collage(image[None], pred[None], None)


def test_training_curves_from_records_and_model_file(tmp_path):
    out = tmp_path / "t.png"
    fig = training_curves(HISTORY, path=out)
    assert fig.axes[1].get_title() == "validation Dice (best 0.700 at epoch 2)"
    labels = [line.get_label() for line in fig.axes[1].get_lines()]
    assert {"class 1", "class 2", "mean"} <= set(labels)
    _non_blank(out)
    with pytest.raises(OutputExistsError):
        training_curves(HISTORY, path=out)

    from napari_xrayseg.core.models import init_model, save_model

    model = init_model("unet", size="tiny", classes=2, tile=32)
    model.info.history = [dict(r) for r in HISTORY[:2]]
    path = save_model(model, tmp_path / "m.safetensors")
    for source in (path, str(path), model):
        fig = training_curves(source)
        assert len(fig.axes[0].get_lines()[0].get_xdata()) == 2
    with pytest.raises(InputError, match="empty"):
        training_curves(init_model("unet", size="tiny", classes=2, tile=32))
    with pytest.raises(InputError, match="not dicts"):
        training_curves([1, 2])
    fig = training_curves([{"epoch": 1, "loss": 1.0, "val_dice": None}])
    assert fig.axes[1].texts[0].get_text() == "no validation data"


def test_slice_dice_plot(trio, tmp_path):
    _, pred, truth = trio
    report = evaluate(pred, truth)
    out = tmp_path / "s.png"
    fig = slice_dice_plot(report, path=out)
    mean_line = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "mean over classes"][0]
    y = np.asarray(mean_line.get_ydata(), dtype=float)
    assert np.isnan(y[1]) and y[0] == pytest.approx(report.slice_dice[0])
    assert f"{report.mean_slice_dice:.3f} ± {report.std_slice_dice:.3f}" in fig.axes[0].get_title()
    _non_blank(out)
    with pytest.raises(OutputExistsError):
        slice_dice_plot(report, path=out)
    slice_dice_plot(report.to_dict())  # a loaded JSON report works too
    with pytest.raises(InputError, match="per_slice"):
        slice_dice_plot(evaluate(pred, truth, per_slice=False))
    fig = Figure()
    assert slice_dice_plot(report, figure=fig) is fig and len(fig.axes) == 1


def test_save_figures_writes_and_refuses_overwrite(trio, tmp_path):
    image, pred, truth = trio
    report = evaluate(pred, truth)
    out = tmp_path / "figs"
    files = save_figures(report, image, pred, truth, out, history=HISTORY)
    assert [f.name for f in files] == ["collage.png", "slice_dice.png", "training_curves.png"]
    for f in files:
        _non_blank(f)
    before = (out / "collage.png").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="collage.png"):
        save_figures(report, image, pred, truth, out)
    assert (out / "collage.png").stat().st_mtime_ns == before
    files = save_figures(report, None, pred, truth, out, overwrite=True)
    assert [f.name for f in files] == ["collage.png", "slice_dice.png"]
    # 2D, no per-slice scores: only the collage
    r2 = evaluate(pred[2], truth[2], per_slice=False)
    assert [f.name for f in save_figures(r2, image[2], pred[2], truth[2], tmp_path / "2d")] == ["collage.png"]


def test_save_figures_collage_shows_annotated_slices(trio, tmp_path):
    image, pred, truth = trio
    sparse = np.zeros_like(truth)
    sparse[4] = truth[4]
    fig_dir = tmp_path / "f"
    save_figures(evaluate(pred, sparse), image, pred, sparse, fig_dir, n=4)
    _non_blank(fig_dir / "collage.png")
    # only slice 4 carries annotations, so the collage has one row (at 150 dpi: one 3-inch panel and titles)
    assert imread(fig_dir / "collage.png").shape[0] < 600


def test_error_map_codes_numpy_and_lazy(trio, tmp_path):
    _, pred, truth = trio
    err = figures.error_map(pred, truth)
    assert isinstance(err, np.ndarray) and err.dtype == np.uint8
    report = evaluate(pred, truth)
    assert np.count_nonzero(err) == report.n_voxels - np.trace(report.confusion_matrix)
    assert not err[1].any()  # unannotated slice
    assert (err[pred == 0] != 1).all() and (err[(pred != 0) & (pred != truth) & (truth != 0)] == 1).all()
    dense = figures.error_map(pred, truth, ignore_zero=False)
    assert dense[1].any()  # 0 is a class: the unannotated slice is now wrong where pred != 0
    z = zarr.create_array(store=str(tmp_path / "t.zarr"), shape=truth.shape, chunks=(2, 24, 32), dtype=truth.dtype)
    z[:] = truth
    lazy = figures.error_map(da.from_array(pred, chunks=(3, 12, 32)), z)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), err)
    with pytest.raises(InputError, match="does not match"):
        figures.error_map(pred[:2], truth)


def test_figures_name_the_phases():
    """The legends say pore / nickel / YSZ when the report knows the names, as the text reports do."""
    from napari_xrayseg.core.figures import collage, slice_dice_plot
    from napari_xrayseg.core.metrics import evaluate

    t = np.ones((3, 8, 8), np.uint8)
    t[:, 4:] = 2
    p = t.copy()
    p[1, :2] = 2
    names = {1: "pore", 2: "nickel"}
    report = evaluate(p, t, class_names=names)
    fig = slice_dice_plot(report)
    assert {"pore", "nickel"} <= {x.get_text() for x in fig.axes[0].get_legend().get_texts()}
    fig = collage(None, p, t, class_names=names)
    assert not any(ax.get_legend() for ax in fig.axes)  # below the panels: it hid the prediction's corner
    assert {x.get_text() for leg in fig.legends for x in leg.get_texts()} == {"pore", "nickel"}


def test_collage_draws_pixels_to_scale_and_names_positions(tmp_path):
    """A y slice of voxels 0.1 x 0.02 x 0.02 um was drawn 5 times too flat, with no axis names; the overlay
    title promised interface lines that are drawn only without raw data."""
    rng = np.random.default_rng(0)
    lab = rng.integers(1, 4, (20, 64, 200)).astype(np.uint8)
    img = lab.astype(np.float32)
    fig = collage(img, lab, lab, axis=1, slices=[12], voxel_size=(0.1, 0.02, 0.02), unit="um")
    panel = fig.axes[0]
    assert panel.get_ylabel() == "y = 12 (0.24 um)"
    assert panel.get_aspect() == pytest.approx(5.0)  # a row is 5 times a column's width
    assert "z down, x across" in fig._suptitle.get_text() and "to scale" in fig._suptitle.get_text()
    assert "dark lines" not in fig.axes[2].get_title()
    fig2 = collage(None, lab, lab, axis=0, slices=[3])
    assert "dark lines: true interfaces" in fig2.axes[2].get_title()
    # a big slice gets a big panel: about one figure pixel per voxel, so one-voxel errors stay visible
    big = np.ones((1, 1024, 1024), np.uint8)
    fig3 = collage(None, big, big, slices=[0])
    assert fig3.get_size_inches()[0] * fig3.dpi >= 3 * 1024


def test_training_curves_name_and_colour_the_phases_and_mark_the_kept_weights():
    """The demo passed a bare history: classes were "class 1/2/3" in matplotlib's colours, and the star
    marked a best epoch the model did not keep (it kept an average)."""
    from types import SimpleNamespace

    from napari_xrayseg.core.units import LABEL_COLORS

    hist = [
        {"epoch": e, "loss": 1 / e, "val_dice": 0.5 + e / 40, "val_dice_per_class": [0.6, 0.5, 0.4]}
        for e in range(1, 9)
    ]
    info = SimpleNamespace(
        history=hist,
        classes=[1, 2, 3],
        class_names=["pore", "nickel", "YSZ"],
        train={"kept": "average", "averaged_epochs": [5, 8]},
    )
    fig = training_curves(SimpleNamespace(info=info))
    ax = fig.axes[1]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert {"pore", "nickel", "YSZ", "mean", "best epoch"} <= set(lines)
    assert tuple(lines["pore"].get_color()[:3]) == pytest.approx(tuple(LABEL_COLORS[0][:3]))
    assert "kept: the average of these epochs" in [t.get_text() for t in ax.get_legend().get_texts()]
