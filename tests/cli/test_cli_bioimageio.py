"""`xrayseg export` / `xrayseg import`: a bioimage.io package that `bioimageio test` passes, read back exactly."""

import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tifffile

from napari_xrayseg.cli import main

pytestmark = pytest.mark.needs("bioimageio.core")  # the bioimageio extra


def test_export_bioimageio_test_and_import(tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    assert main(["init-model", "--out", str(model), "--size", "tiny", "--context", "3", "--tile", "32"]) == 0
    image = np.random.default_rng(1).random((4, 40, 56), dtype=np.float32)
    tifffile.imwrite(tmp_path / "img.tif", image, photometric="minisblack")
    capsys.readouterr()
    args = ["export", "--model", str(model), "--out", str(tmp_path / "m"), "--image", str(tmp_path / "img.tif")]
    args += ["--author", "A. Person", "--cite", "Our paper", "10.1000/xyz123", "--side", "32"]
    assert main(args) == 0
    cap = capsys.readouterr()
    package = tmp_path / "m.zip"
    assert f"wrote bioimage.io model package {package}" in cap.out and "model test passed" in cap.out
    assert "export:" in cap.err
    x = np.load(zipfile.ZipFile(package).open("test_input.npy"))
    assert x.shape == (1, 3, 32, 32) and np.array_equal(x[0], image[1:4, 4:36, 12:44])

    # bioimage.io's own command line, as a Model Zoo user would run it
    res = subprocess.run(
        [sys.executable, "-m", "bioimageio.core", "test", str(package)], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "passed" in res.stdout

    assert main(["import", str(package), "--out", str(tmp_path / "back")]) == 0
    assert "wrote unet (tiny) model with classes [1, 2, 3], context 3" in capsys.readouterr().out
    assert (tmp_path / "back.safetensors").read_bytes() == model.read_bytes()

    # an existing output is never replaced without --overwrite
    assert main(["import", str(package), "--out", str(tmp_path / "back.safetensors")]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_bad_packages_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "not.zip").write_bytes(b"hello")
    assert main(["import", str(tmp_path / "not.zip"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xrayseg import: error: ") and "not a zip file" in err and "\n" not in err
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("rdf.yaml", "type: model\nweights:\n  pytorch_state_dict: {source: w.pt}\n")
    assert main(["import", str(tmp_path / "other.zip"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "only pickled weights (pytorch_state_dict)" in err and "\n" not in err
    assert main(["export", "--model", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "p.zip")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and "\n" not in err
    model = tmp_path / "m.safetensors"
    assert main(["init-model", "--out", str(model), "--size", "tiny"]) == 0
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "p.zip"), "--license", "mine"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("invalid: license: not an SPDX licence identifier (e.g. CC-BY-4.0, MIT, BSD-3-Clause)")
    assert not (tmp_path / "o.safetensors").exists() and not (tmp_path / "p.zip").exists()
