"""The data-efficiency study on a tiny configuration (a real train + segment + evaluate per run)."""

import json

import numpy as np
import pytest

from napari_xrayseg.cli import main
from napari_xrayseg.core.errors import InputError, OutputExistsError
from napari_xrayseg.core.study import _pick_slices, study

TINY = {
    "shape": (8, 32, 32),
    "slices": (1, 2),
    "repeats": 2,
    "size": "tiny",
    "minutes": None,
    "epochs": 1,
    "steps_per_epoch": 1,
    "patch": 32,
    "batch": 2,
    "device": "cpu",
}


@pytest.mark.slow
def test_study_tiny_configuration_writes_table_json_and_plot(tmp_path):
    steps = []
    res = study(**TINY, out=tmp_path / "s", progress=lambda p: steps.append(p.step))
    assert steps == list(range(1, 2 * 2 * 2 + 1))  # modes x counts x repeats models
    assert len(res.runs) == 2 * 2 * 2 * 2  # ... each segmented along z and as orthoplane
    assert {(r["mode"], r["axes"]) for r in res.runs} == {
        (m, a) for m in ("supervised", "pix2pix") for a in ("z", "zyx")
    }
    for r in res.runs:
        assert 0 <= r["mean_dice"] <= 1 and len(r["annotated"]) == r["slices"]
    s = {(x["mode"], x["axes"], x["slices"]): x for x in res.summary}
    runs = [r["mean_dice"] for r in res.runs if (r["mode"], r["axes"], r["slices"]) == ("pix2pix", "zyx", 2)]
    assert s[("pix2pix", "zyx", 2)]["n"] == 2
    assert s[("pix2pix", "zyx", 2)]["mean"] == pytest.approx(np.mean(runs))
    assert s[("pix2pix", "zyx", 2)]["std"] == pytest.approx(np.std(runs))
    table = (tmp_path / "s" / "study.md").read_text()
    assert "| supervised | one axis (z) |" in table and "| pix2pix | orthoplane (zyx) |" in table
    assert json.loads((tmp_path / "s" / "study.json").read_text())["settings"]["repeats"] == 2
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "s" / "study.png"))
    assert png.shape[0] > 200 and png[..., :3].std() > 10
    with pytest.raises(OutputExistsError):
        study(**TINY, out=tmp_path / "s")


def test_study_cli_and_bad_input(tmp_path, capsys):
    argv = [
        "study",
        "--out",
        str(tmp_path / "c"),
        "--shape",
        "6",
        "32",
        "32",
        "--slices",
        "1",
        "--modes",
        "supervised",
        "--axes",
        "z",
        "--repeats",
        "1",
        "--size",
        "tiny",
        "--minutes",
        "0",
        "--epochs",
        "1",
        "--patch",
        "32",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| supervised | one axis (z) |" in out and "study.png" in out
    assert main([*argv[:3], "--slices", "0"]) == 2
    assert "between 1 and the depth" in capsys.readouterr().err
    with pytest.raises(InputError, match="mode"):
        study(shape=(8, 32, 32), slices=(1,), modes=("gan",))


def test_pick_slices_spread_and_distinct():
    rng = np.random.default_rng(0)
    for n in (1, 2, 4, 8, 16):
        idx = _pick_slices(16, n, rng)
        assert len(set(idx)) == n and 0 <= min(idx) and max(idx) < 16


@pytest.mark.parametrize("which", ["loop", "study"])
def test_long_plot_titles_wrap_inside_the_figure(tmp_path, which):
    """The studies' titles name the sample, net and budget: wrapped, not cut off at the figure's edge."""
    from napari_xrayseg.core.figures import study_plot
    from napari_xrayseg.core.study import loop_plot

    title = "Sample 96x128x128 (preset=hard-thin-layer), unet/small, 20 + 6/round epochs, 5 repeats"
    rows = [
        {"strategy": "even", "mode": "supervised", "axes": "z", "slices": n, "mean": 0.9, "std": 0.001} for n in (1, 2)
    ]
    plot = loop_plot if which == "loop" else study_plot
    fig = plot(rows, tmp_path / "p.png", title=title)
    assert (tmp_path / "p.png").stat().st_size > 0
    text = fig.axes[0].title
    assert "\n" in text.get_text() and text.get_text().replace("\n", " ") == title
    box = text.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width


def test_one_run_shows_no_spread():
    """A standard deviation of one run is no spread: "0.154 (1 run)", not "0.154 ± 0.000"."""
    from napari_xrayseg.core.study import _mean_spread

    assert _mean_spread({"mean": 0.154, "std": 0.0, "n": 1}, 3) == "0.154 (1 run)"
    assert _mean_spread({"mean": 0.154, "std": 0.01, "n": 2}, 3) == "0.154 ± 0.010"
