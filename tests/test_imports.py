import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "stmt",
    [
        "import napari_xrayseg",
        "from napari_xrayseg import segment, init_model, make_phantom, evaluate",
        "import napari_xrayseg.cli; napari_xrayseg.cli.build_parser()",
    ],
)
def test_core_and_cli_pull_in_no_qt(stmt):
    code = (
        f"{stmt}\n"
        "import sys\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'napari', 'magicgui', 'superqt', 'vispy'))\n"
        "print(','.join(bad))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "", f"{stmt} imported {res.stdout.strip()}"


def test_light_modules_do_not_import_torch():
    code = (
        "import napari_xrayseg.core.io, napari_xrayseg.core.tiling, napari_xrayseg.core.metrics, "
        "napari_xrayseg.core.sample, napari_xrayseg.core.normalize\n"
        "import sys; print('torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
