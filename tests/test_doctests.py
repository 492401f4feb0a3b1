"""The examples in the core's and the CLI's docstrings run and print what they say (none was ever run: one had
drifted, ``-0.0`` for a certain voxel's entropy)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import tempfile

import pytest

import napari_xrayseg.core as core

MODULES = [m.name for m in pkgutil.iter_modules(core.__path__, "napari_xrayseg.core.")] + ["napari_xrayseg.cli"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_docstring_examples_run_as_written(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a relative path writes here
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # and its tempfile.mkdtemp() folders, gone with it
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (printed above)"
