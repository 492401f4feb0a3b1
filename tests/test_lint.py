"""The layering rule (core and CLI never import Qt/napari/magicgui) is enforced by ruff's banned-api."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean_including_layering():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        if os.environ.get("CI"):  # the dev extra installs ruff: missing in CI means a broken install
            pytest.fail("ruff is not installed")
        pytest.skip("ruff not installed")
    res = subprocess.run(
        [ruff, "check", "src", "tests", "benchmarks", "scripts"], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    # one code style: the formatter has nothing to change
    res = subprocess.run(
        [ruff, "format", "--check", "src", "tests", "benchmarks", "scripts"], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, "run `ruff format src tests benchmarks scripts`:\n" + res.stdout + res.stderr
