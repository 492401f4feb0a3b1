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
        "napari_xrayseg.core.sample, napari_xrayseg.core.normalize, napari_xrayseg.core.study\n"
        "import sys; print('torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_the_cli_parser_imports_no_torch_and_offers_every_architecture():
    """QA: every xrayseg command imported torch to list the architectures: --help took 2.2 CPU s and 230 MB."""
    from napari_xrayseg.core.config import ARCH_NAMES
    from napari_xrayseg.core.models import architectures

    assert list(ARCH_NAMES) == sorted(architectures())
    code = "import napari_xrayseg.cli as c; c.build_parser()\nimport sys; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_no_import_cycle_inside_core():
    """Calls go down the layers: no two core modules import each other, even inside functions."""
    import ast
    from pathlib import Path

    import napari_xrayseg.core as core

    root = Path(core.__file__).parent
    graph = {}
    for f in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                deps.add(node.module.split(".")[0])
        graph[f.stem] = deps

    def cycle_from(start, node, seen):
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [node, nxt]
            if nxt not in seen:
                seen.add(nxt)
                path = cycle_from(start, nxt, seen)
                if path:
                    return [node, *path]
        return None

    cycles = {m: cycle_from(m, m, set()) for m in graph}
    assert not {m: c for m, c in cycles.items() if c}, cycles
