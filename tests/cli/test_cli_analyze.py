"""`xrayseg analyze` in-process: JSON shape, voxel size from files and flags, never overwriting, errors;
`train` records the voxel size, `predict` warns at a very different one."""

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import zarr

from napari_xrayseg.cli import main
from napari_xrayseg.core.models import init_model, load_model, save_model
from napari_xrayseg.core.units import ngff_scale_transforms


def _ome_labels(path, data, voxel=(0.2, 0.1, 0.1), unit="micrometer", names=None):
    g = zarr.open_group(str(path), mode="w")
    g.create_array("0", shape=data.shape, dtype=data.dtype, chunks=(2, *data.shape[1:]))[...] = data
    ome = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [{"name": a, "type": "space", "unit": unit} for a in "zyx"],
                "datasets": [{"path": "0", "coordinateTransformations": ngff_scale_transforms(voxel, 1)[0]}],
            }
        ],
    }
    if names:
        ome["image-label"] = {"properties": [{"label-value": k, "name": v} for k, v in names.items()]}
    g.attrs["ome"] = ome
    return str(path)


def _checkerboard(n=12, b=3):
    zz, yy, xx = np.indices((n, n, n)) // b
    return ((zz + yy + xx) % 3 + 1).astype(np.uint8)


@pytest.mark.needs("taufactor")
def test_analyze_json_csv_shape_units_and_names(tmp_path, capsys, caplog):
    lab = _checkerboard()
    lab[:, :, 5] = 2  # a plane of phase 2 across the volume: percolates along z and y
    src = _ome_labels(tmp_path / "lab.zarr", lab, names={1: "pore", 2: "nickel", 3: "YSZ"})
    out = tmp_path / "res.json"
    assert main(["analyze", "--labels", src, "--json", str(out), "--csv", str(tmp_path / "res.csv")]) == 0
    cap = capsys.readouterr()
    assert "nickel" in cap.out and "TPB density" in cap.out and "analyze:" in cap.err
    d = json.loads(out.read_text())
    assert d["voxel_size"] == [0.2, 0.1, 0.1] and d["unit"] == "um"
    # --unit voxel: lengths in voxels whatever the file records, as analyze(unit="voxel") (QA s44: the file's um)
    assert (
        main(["analyze", "--labels", src, "--fractions-only", "--json", str(tmp_path / "v.json"), "--unit", "voxel"])
        == 0
    )
    v = json.loads((tmp_path / "v.json").read_text())
    assert (v["voxel_size"], v["unit"]) == ([1.0, 1.0, 1.0], "voxel")
    capsys.readouterr()
    assert main(["analyze", "--labels", src, "--fractions-only", "--voxel-size", "2", "1", "1", "--unit", "voxel"]) == 2
    assert "in voxel units: a voxel is 1 a side" in capsys.readouterr().err
    assert main(["analyze", "--labels", src, "--fractions-only", "--unit", "voxel"]) == 0
    assert "records no voxel size" not in capsys.readouterr().err  # asked for: no note (review)
    ev = ["evaluate", "--pred", src, "--truth", src, "--physics", "--no-tortuosity", "--unit", "voxel"]
    assert main([*ev, "--json", str(tmp_path / "e.json")]) == 0
    m = json.loads((tmp_path / "e.json").read_text())["microstructure"]
    assert (m["unit"], m["voxel_size"]) == ("voxel", [1.0, 1.0, 1.0])  # review: the file's um came back
    with caplog.at_level("WARNING", logger="napari_xrayseg"):  # a size given over the file's is said to replace it
        assert main(["analyze", "--labels", src, "--fractions-only", "--voxel-size", "1"]) == 0
        assert (
            main(["analyze", "--labels", src, "--fractions-only", "--voxel-size", "200", "100", "100", "--unit", "nm"])
            == 0
        )
    said = [r.getMessage() for r in caplog.records if "replaces" in r.getMessage()]
    assert said == [f"--voxel-size 1 x 1 x 1 um replaces the 0.2 x 0.1 x 0.1 um that {src} records"]  # 200 nm: the same
    assert list(d["phases"]) == ["1", "2", "3"]
    ni = d["phases"]["2"]
    assert ni["name"] == "nickel"
    assert set(ni) == {
        "name",
        "voxels",
        "volume_fraction",
        "specific_surface_area",
        "largest_cluster_fraction",
        "percolates",
        "tortuosity",
        "mean_size",
        "size_distribution",
    }
    assert ni["percolates"] == {"z": True, "y": True, "x": False}
    # the plane conducts, the blocks hanging on it are dead ends: counted in eps, so tau > 1
    assert ni["tortuosity"]["x"] is None and 1.0 < ni["tortuosity"]["z"] < 10
    assert d["phases"]["1"]["tortuosity"] == {"z": None, "y": None, "x": None}
    assert d["tpb_density"] > 0
    assert (tmp_path / "res.csv").read_text().startswith("label,name,")
    # the same numbers in nm: lengths x1000, S_V and TPB density / 1000 and / 1e6
    assert (
        main(["analyze", "--labels", src, "--unit", "nm", "--no-tortuosity", "--json", str(tmp_path / "nm.json")]) == 0
    )
    nm = json.loads((tmp_path / "nm.json").read_text())
    assert nm["voxel_size"] == pytest.approx([200.0, 100.0, 100.0]) and nm["unit"] == "nm"
    assert nm["phases"]["2"]["specific_surface_area"] == pytest.approx(ni["specific_surface_area"] / 1000)
    assert nm["tpb_density"] == pytest.approx(d["tpb_density"] / 1e6)
    assert nm["phases"]["2"]["mean_size"] == pytest.approx(ni["mean_size"] * 1000)


def test_voxel_size_flag_region_and_no_metadata(tmp_path, capsys):
    lab = _checkerboard()
    np.save(tmp_path / "lab.npy", lab)
    assert (
        main(["analyze", "--labels", str(tmp_path / "lab.npy"), "--fractions-only", "--json", str(tmp_path / "a.json")])
        == 0
    )
    assert "records no voxel size" in capsys.readouterr().err
    assert json.loads((tmp_path / "a.json").read_text())["unit"] == "voxel"
    assert main(["analyze", "--labels", str(tmp_path / "lab.npy"), "--fractions-only", "--unit", "nm"]) == 0
    assert "(--unit nm converts a voxel size: give one with it)" in capsys.readouterr().err  # not silently ignored
    assert (
        main(
            [
                "analyze",
                "--labels",
                str(tmp_path / "lab.npy"),
                "--voxel-size",
                "2",
                "1",
                "1",
                "--unit",
                "nm",
                "--region",
                "0:6,:,3:",
                "--no-tortuosity",
                "--names",
                "pore",
                "nickel",
                "YSZ",
                "--json",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["voxel_size"] == [2.0, 1.0, 1.0] and b["unit"] == "nm" and b["shape"] == [6, 12, 9]
    assert b["phases"]["3"]["name"] == "YSZ" and b["phases"]["3"]["percolates"]["z"] is False
    assert b["phases"]["1"]["tortuosity"] is None  # not computed: --no-tortuosity


def test_truth_and_spread(tmp_path, capsys):
    truth = _checkerboard()
    pred = truth.copy()
    pred[:, :, 0] = 1
    other = truth.copy()
    other[:, 0] = 3
    for name, a in (("t", truth), ("p", pred), ("o", other)):
        np.save(tmp_path / f"{name}.npy", a)
    assert (
        main(
            [
                "analyze",
                "--labels",
                str(tmp_path / "p.npy"),
                "--truth",
                str(tmp_path / "t.npy"),
                "--spread",
                str(tmp_path / "o.npy"),
                str(tmp_path / "t.npy"),
                "--voxel-size",
                "0.5",
                "--no-tortuosity",
                "--json",
                str(tmp_path / "u.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "prediction vs truth" in out and "tpb_density" in out and "interval over 3" in out
    u = json.loads((tmp_path / "u.json").read_text())
    c = u["comparison"]["tpb_density"]
    assert c["error_percent"] == pytest.approx(100 * (c["pred"] - c["truth"]) / c["truth"]) and c["error"] != 0
    assert u["interval"]["1.volume_fraction"]["n"] == 3


def test_outputs_never_overwritten_and_errors_are_one_line(tmp_path, capsys):
    np.save(tmp_path / "lab.npy", _checkerboard(6, 2))
    args = ["analyze", "--labels", str(tmp_path / "lab.npy"), "--fractions-only", "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    before = (tmp_path / "r.json").read_text()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("xrayseg analyze: error:") and "exists" in err[-1] and "--overwrite" in err[-1]
    assert (tmp_path / "r.json").read_text() == before
    assert main([*args, "--overwrite"]) == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left
    for bad, match in (
        (["--voxel-size", "1", "2"], "2 values"),
        (["--region", "0:99"], "outside"),
        (["--unit", "parsec"], "unknown length unit"),
    ):
        assert main(["analyze", "--labels", str(tmp_path / "lab.npy"), "--fractions-only", *bad]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("xrayseg analyze: error:") and match in line
    np.save(tmp_path / "big.npy", np.ones((9, 9, 9), dtype=np.uint8))
    assert main(["analyze", "--labels", str(tmp_path / "big.npy"), "--max-voxels", "100"]) == 2
    assert "--region" in capsys.readouterr().err


def test_train_records_voxel_size_and_predict_warns(tmp_path, caplog):
    rng = np.random.default_rng(0)
    img = rng.random((4, 32, 32)).astype(np.float32)
    ann = np.zeros((4, 32, 32), dtype=np.uint8)
    ann[1] = 1 + (img[1] > 0.5)
    image = _ome_labels(tmp_path / "img.zarr", img, voxel=(0.05, 0.05, 0.05))
    zarr.create_array(store=str(tmp_path / "ann.zarr"), shape=ann.shape, dtype="uint8")[...] = ann
    model = tmp_path / "m.safetensors"
    assert (
        main(
            [
                "train",
                "--image",
                image,
                "--labels",
                str(tmp_path / "ann.zarr"),
                "--out",
                str(model),
                "--size",
                "tiny",
                "--epochs",
                "1",
                "--steps",
                "1",
                "--batch",
                "1",
                "--patch",
                "32",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    info = load_model(model).info
    assert info.voxel_size == [0.05, 0.05, 0.05] and info.unit == "um"
    # a model trained at 50 nm on an image of 200 nm voxels: a clear warning, the prediction still runs
    m = init_model("unet", size="tiny", classes=2, tile=32)
    m.info = replace(m.info, voxel_size=[0.05, 0.05, 0.05], unit="um")
    save_model(m, tmp_path / "m2.safetensors")
    coarse = _ome_labels(tmp_path / "coarse.zarr", img, voxel=(200.0, 200.0, 200.0), unit="nanometer")
    with caplog.at_level(logging.WARNING, logger="napari_xrayseg"):
        assert (
            main(
                [
                    "predict",
                    "--image",
                    coarse,
                    "--model",
                    str(tmp_path / "m2.safetensors"),
                    "--out",
                    str(tmp_path / "p.zarr"),
                    "--device",
                    "cpu",
                    "--tile",
                    "32",
                ]
            )
            == 0
        )
    assert any("trained at" in r.getMessage() and "x4" in r.getMessage() for r in caplog.records)


def test_evaluate_tables_name_the_classes(tmp_path, capsys):
    truth = _checkerboard(6, 2)
    pred = zarr.create_array(store=str(tmp_path / "pred.zarr"), shape=truth.shape, dtype="uint8")
    pred[...] = truth
    pred.attrs["napari_xrayseg"] = {"classes": [1, 2, 3], "class_names": ["pore", "nickel", "YSZ"]}
    np.save(tmp_path / "t.npy", truth)
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "pred.zarr"),
                "--truth",
                str(tmp_path / "t.npy"),
                "--json",
                str(tmp_path / "e.json"),
            ]
        )
        == 0
    )
    assert "2 nickel" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["class_names"]["3"] == "YSZ"
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "pred.zarr"),
                "--truth",
                str(tmp_path / "t.npy"),
                "--names",
                "a",
                "b",
                "c",
            ]
        )
        == 0
    )
    assert "2 b" in capsys.readouterr().out


@pytest.mark.needs("taufactor")
def test_evaluate_physics_on_the_annotated_box(tmp_path, capsys):
    from napari_xrayseg.core.metrics import Report, evaluate

    truth = np.zeros((12, 12, 12), np.uint8)
    truth[2:10, 1:11, :] = _checkerboard(12, 3)[2:10, 1:11, :]  # a fully annotated box
    pred = np.where(truth == 0, 1, truth).astype(np.uint8)
    pred[4, 3:6, 2:5] = 1  # a few wrong voxels inside the box
    _ome_labels(tmp_path / "pred.zarr", pred, voxel=(0.1, 0.1, 0.1), names={1: "pore", 2: "nickel", 3: "YSZ"})
    np.save(tmp_path / "t.npy", truth)
    argv = ["evaluate", "--pred", str(tmp_path / "pred.zarr"), "--truth", str(tmp_path / "t.npy"), "--physics"]
    assert main([*argv, "--no-tortuosity", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "microstructure, prediction vs truth on 2:10,1:11,0:12 (um)" in out and "tpb_density" in out
    ms = json.loads((tmp_path / "e.json").read_text())["microstructure"]
    assert ms["region"] == [[2, 10], [1, 11], [0, 12]] and ms["voxel_size"] == [0.1, 0.1, 0.1] and ms["unit"] == "um"
    # the same numbers as analyze on the box, one by one
    from napari_xrayseg.core.microstructure import analyze

    box = ((2, 10), (1, 11), (0, 12))
    mp, mt = (analyze(v, region=box, voxel_size=0.1, tortuosity=False) for v in (pred, truth))
    e = ms["errors"]
    assert e["1.volume_fraction"]["pred"] == pytest.approx(mp.phases[1].volume_fraction)
    assert e["1.volume_fraction"]["truth"] == pytest.approx(mt.phases[1].volume_fraction)
    assert e["tpb_density"]["error_percent"] == pytest.approx(100 * (mp.tpb_density / mt.tpb_density - 1))
    assert Report.from_dict(evaluate(pred, truth, microstructure={"tortuosity": False}).to_dict()).microstructure
    # sparse annotations (a box with holes) cannot give microstructure numbers: one clear line, exit 2
    holes = truth.copy()
    holes[5] = 0
    np.save(tmp_path / "h.npy", holes)
    assert (
        main(["evaluate", "--pred", str(tmp_path / "pred.zarr"), "--truth", str(tmp_path / "h.npy"), "--physics"]) == 2
    )
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("evaluate: [")]  # progress
    assert len(err) == 1 and "fully annotated" in err[0] and "--region" in err[0]


def test_stray_labels_keep_the_tpb_and_tpb_phases_pick_three(tmp_path, capsys, caplog):
    """A few voxels of a fourth label (or 0) in a prediction cost its TPB density nothing in evaluate;
    analyze says why there is none and --tpb-phases names the three."""
    from napari_xrayseg.core.metrics import evaluate
    from napari_xrayseg.core.microstructure import analyze

    truth = _checkerboard(12, 3)
    pred = truth.copy()
    pred[6, 6, 6], pred[1, 2, 3] = 4, 0  # stray voxels
    e = evaluate(pred, truth, microstructure={"tortuosity": False}).microstructure["errors"]["tpb_density"]
    ref = analyze(pred, tpb_phases=(1, 2, 3), tortuosity=False).tpb_density
    assert e["pred"] == pytest.approx(ref) and e["error_percent"] is not None
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        assert analyze(pred, tortuosity=False).tpb_density is None
    assert "hold 5 phases [0, 1, 2, 3, 4] (0, 4 under 0.1 % of the voxels)" in caplog.text
    assert "--tpb-phases" in caplog.text
    np.save(tmp_path / "p.npy", pred)
    argv = ["analyze", "--labels", str(tmp_path / "p.npy"), "--no-tortuosity", "--json", str(tmp_path / "a.json")]
    assert main([*argv, "--tpb-phases", "1", "2", "3"]) == 0
    got = json.loads((tmp_path / "a.json").read_text())
    assert got["tpb_phases"] == [1, 2, 3] and got["tpb_density"] == pytest.approx(ref)


def test_a_pillar_sample_analysed_with_its_envelope(tmp_path, capsys):
    """`xrayseg sample --pillar` then `analyze --envelope 1`: the pillar's porosity, not the box's."""
    from napari_xrayseg.core.sample import pillar_mask

    assert main(["sample", "--out", str(tmp_path / "s"), "--shape", "8", "64", "64", "--pillar", "0.6"]) == 0
    truth = np.asarray(zarr.open_array(str(tmp_path / "s" / "truth.zarr"), mode="r"))
    assert (truth[:, 0, 0] == 1).all()  # air around the pillar: pore
    inside = truth[:, pillar_mask((64, 64), 0.6)]
    kw = ["analyze", "--labels", str(tmp_path / "s" / "truth.zarr"), "--fractions-only"]
    assert main([*kw, "--envelope", "1", "--json", str(tmp_path / "p.json")]) == 0
    assert main([*kw, "--json", str(tmp_path / "box.json")]) == 0
    pillar = json.loads((tmp_path / "p.json").read_text())["phases"]["1"]["volume_fraction"]
    box = json.loads((tmp_path / "box.json").read_text())["phases"]["1"]["volume_fraction"]
    assert pillar == pytest.approx((inside == 1).mean(), abs=0.015) and box > pillar + 0.3
    prof = json.loads((tmp_path / "p.json").read_text())["profiles"]
    assert set(prof) == {"z", "y", "x"} and prof["x"]["sample_voxels"][0] == 0  # the air beyond the pillar
    assert main([*kw, "--envelope", "1", "--profile", str(tmp_path / "z.csv"), "--profile-axis", "x"]) == 0
    lines = (tmp_path / "z.csv").read_text().splitlines()
    assert lines[0].startswith("index,position_voxel,sample_voxels,fraction_1") and len(lines) == 65
    full = ["analyze", "--labels", str(tmp_path / "s" / "truth.zarr"), "--no-tortuosity", "--envelope", "1"]
    assert (
        main([*full, "--size-distribution", "--json", str(tmp_path / "sd.json"), "--csv", str(tmp_path / "sd.csv")])
        == 0
    )
    sd = json.loads((tmp_path / "sd.json").read_text())["phases"]["2"]["size_distribution"]
    assert sd["d50"] > 1 and len(sd["diameter"]) == len(sd["cumulative"]) and sd["cumulative"][0] == 1.0
    assert "d50" in (tmp_path / "sd.csv").read_text().splitlines()[0]
    capsys.readouterr()
    assert main([*kw, "--envelope", "1", "--envelope-radius", "0"]) == 2
    assert "envelope radius 0.0 must be a positive number" in capsys.readouterr().err


def test_without_taufactor_analyze_goes_on_without_tortuosity(tmp_path, capsys, monkeypatch):
    """A plugin-manager install has no TauFactor (the physics extra): the CLI says so and measures the rest;
    the API refuses before any work; the widget's box is off and says what to install."""
    from napari_xrayseg.core import microstructure as ms

    monkeypatch.setattr(ms, "tortuosity_available", lambda: False)
    np.save(tmp_path / "l.npy", _checkerboard(12, 3))
    assert main(["analyze", "--labels", str(tmp_path / "l.npy"), "--json", str(tmp_path / "a.json")]) == 0
    assert "no tortuosity (it needs TauFactor: pip install 'napari-xrayseg[physics]')" in capsys.readouterr().err
    got = json.loads((tmp_path / "a.json").read_text())
    assert got["phases"]["1"]["tortuosity"] is None and got["phases"]["1"]["volume_fraction"] > 0
    with pytest.raises(ms.InputError, match=r"napari-xrayseg\[physics\]"):
        ms.analyze(_checkerboard(12, 3))


def test_analyze_a_2d_section_from_a_tiff(tmp_path, capsys):
    """A 2D segmentation (an SEM image's, a radiograph's) gives its section numbers; profiles run along y by default."""
    import tifffile

    lab = np.ones((40, 40), np.uint8)
    lab[:20, 20:] = 2
    lab[20:] = 3
    tifffile.imwrite(tmp_path / "sec.tif", lab)
    base = ["analyze", "--labels", str(tmp_path / "sec.tif"), "--voxel-size", "0.5", "--unit", "um"]
    assert main([*base, "--json", str(tmp_path / "a.json"), "--profile", str(tmp_path / "p.csv")]) == 0
    out = capsys.readouterr().out
    assert "40x40 pixels of 0.5 x 0.5 um" in out and "a 2D section" in out and "triple points: 1," in out
    d = json.loads((tmp_path / "a.json").read_text())
    assert d["voxel_size"] == [0.5, 0.5] and d["section"]["triple_points"] == 1
    assert d["tpb_density"] == pytest.approx(2 / 400)  # L_V = 2 Q_A, per um^2 of the 20 x 20 um section
    assert (tmp_path / "p.csv").read_text().startswith("index,position_um,")  # along y
    assert main([*base, "--profile", str(tmp_path / "z.csv"), "--profile-axis", "z"]) == 2
    assert "a 2D section: its profiles run along y or x" in capsys.readouterr().err
