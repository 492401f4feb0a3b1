"""The package builds as sdist + wheel, and the wheel installs and loads in a fresh venv.

No network: the build runs without isolation (setuptools is in the dev venv) and the fresh
venv borrows the *dependencies* (torch, napari, npe2, ...) from the dev venv through a
folder of symlinks put on its path by a ``.pth`` file. That folder leaves out the editable
install of napari-xrayseg itself (its ``__editable__`` .pth and its dist-info), so the only
napari-xrayseg the fresh venv can import, and the only distribution npe2 can discover, is
the one installed from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "site",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "xrayseg-demo",
    "*.zarr",
    "*.npy",
    "*.tif",
    "*.tiff",
    "*.h5",
)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kwargs)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _build(tmp_path: Path) -> tuple[Path, Path]:
    """sdist from a copy of the source tree, then the wheel from that sdist (like ``python -m build``)."""
    pytest.importorskip("build", reason="the `build` package (installed with npe2) builds the sdist and wheel")
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=_NOT_SOURCES)  # never write build/ or *.egg-info into the checkout
    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check", "--outdir", dist, tree],
        env=_clean_env(),
    )
    (sdist,) = dist.glob("napari_xrayseg-*.tar.gz")
    (wheel,) = dist.glob("napari_xrayseg-*.whl")
    return sdist, wheel


def _fresh_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A new venv whose path holds the dev venv's packages except napari-xrayseg itself."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower().replace("-", "_")
        if "napari_xrayseg" in name or name.startswith("__editable__") or name.endswith(".pth"):
            continue
        (deps / entry.name).symlink_to(entry)
    (site / "_dev_venv_dependencies.pth").write_text(f"{deps}\n")
    return venv, python


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    return _build(tmp_path_factory.mktemp("build"))


def test_sdist_and_wheel_contents(built):
    sdist, wheel = built
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_xrayseg/napari.yaml" in names
    assert "napari_xrayseg/__init__.py" in names and "napari_xrayseg/cli.py" in names
    assert "napari_xrayseg/weights/unet3d-medium-pretrained.safetensors" in names  # init="pretrained"
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "scripts", "docs")], names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[napari.manifest]" in text and "napari-xrayseg = napari_xrayseg:napari.yaml" in text
    assert "xrayseg = napari_xrayseg.cli:main" in text
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Classifier: Framework :: napari" in meta
    for dep in ("PyQt", "PySide", "napari"):  # no Qt binding and no napari among the runtime dependencies
        assert not [
            line
            for line in meta.splitlines()
            if line.startswith("Requires-Dist:") and dep in line and "extra ==" not in line
        ], meta

    with tarfile.open(sdist) as tar:
        members = [m.split("/", 1)[1] for m in tar.getnames() if "/" in m]
    for required in ("pyproject.toml", "README.md", "src/napari_xrayseg/napari.yaml", "src/napari_xrayseg/cli.py"):
        assert required in members, f"{required} missing from the sdist"
    # packagers run the suite from the sdist: all of it, with the docs and scripts it checks
    for required in (
        "tests/conftest.py",
        "tests/core/test_models.py",
        "tests/napari/test_widgets.py",
        "docs/cli.md",
        "scripts/setup.sh",
        "scripts/cli_reference.py",
        "mkdocs.yml",
        ".ci/constraints.txt",
        ".napari-hub/DESCRIPTION.md",  # test_docs checks it (QA: 2 failures from the sdist)
    ):
        assert required in members, f"{required} missing from the sdist"
    assert not [m for m in members if m.startswith((".venv/", ".git/", "build/", "xrayseg-demo/"))]


def test_wheel_installs_and_loads_in_a_fresh_venv(built, tmp_path):
    _, wheel = built
    venv, python = _fresh_venv(tmp_path)
    env = _clean_env()
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-deps",
            "--no-index",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "-q",
            wheel,
        ],
        env=env,
    )

    probe = r"""
import importlib.metadata as md, importlib.resources, json
import napari_xrayseg
from npe2 import PluginManager, PluginManifest

pm = PluginManager.instance()
pm.discover()
manifest = pm.get_manifest("napari-xrayseg")
dists = [d for d in md.distributions() if (d.metadata["Name"] or "").lower() == "napari-xrayseg"]
fresh = PluginManifest.from_distribution("napari-xrayseg")
fresh.validate_imports()  # imports every python_name of the manifest from the wheel's files
print(json.dumps({
    "file": napari_xrayseg.__file__,
    "version": napari_xrayseg.__version__,
    "dists": [str(d.locate_file("")) for d in dists],
    "manifest_file": str(importlib.resources.files("napari_xrayseg") / "napari.yaml"),
    "display_name": manifest.display_name,
    "widgets": sorted(w.display_name for w in manifest.contributions.widgets or []),
    "samples": [s.key for s in manifest.contributions.sample_data or []],
    "pretrained": str(__import__("napari_xrayseg.core.models").core.models.pretrained_path()),
}))
"""
    res = _run([python, "-c", probe], env=env, cwd=tmp_path)
    info = json.loads(res.stdout.strip().splitlines()[-1])
    inside = str(venv.resolve())
    assert info["file"].startswith(inside), f"napari_xrayseg was imported from {info['file']}, not the fresh venv"
    assert info["manifest_file"].startswith(inside)
    assert info["pretrained"].startswith(inside)  # the shipped start is found in the installed wheel
    assert len(info["dists"]) == 1 and info["dists"][0].startswith(inside), info["dists"]
    assert info["version"] not in ("", "unknown")
    assert info["display_name"] == "X-ray Segmentation"
    assert {"Segment", "Train", "Evaluate"} <= set(info["widgets"])
    assert "pxct" in info["samples"]

    xrayseg = venv / "bin" / "xrayseg"
    assert xrayseg.exists(), "the wheel installed no xrayseg console script"
    out = _run([xrayseg, "--help"], env=env, cwd=tmp_path).stdout
    assert out.startswith("usage: xrayseg") and "predict" in out and "train" in out
    assert _run([xrayseg, "--version"], env=env, cwd=tmp_path).stdout.strip() == f"napari-xrayseg {info['version']}"
