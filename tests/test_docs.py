"""The documentation: the MkDocs site builds with warnings as errors, the console examples run,
the generated CLI reference is current, and README / hub links point at files that exist."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Pages whose ```python blocks are tested examples; ```py marks a block that needs a running napari (or a person
# pressing Ctrl-C).
EXAMPLE_PAGES = ["console.md"]
_PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _load_script(name: str):
    path = ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_scripts_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _require_mkdocs() -> None:
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):  # the test extra installs mkdocs: missing in CI means a broken install
            pytest.fail("mkdocs is not installed")
        pytest.skip("mkdocs not installed")


def _nav_pages(nav) -> list[str]:
    pages: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_docs_build_strict(tmp_path):
    """What CI runs: `mkdocs build --strict` (broken links, anchors and images are errors)."""
    _require_mkdocs()
    site = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    for page in (
        "index.html",
        "quickstart/index.html",
        "console/index.html",
        "cli/index.html",
        "troubleshooting/index.html",
        "images/overview.png",
    ):
        assert (site / page).is_file(), f"{page} missing from the built site"


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = set(_nav_pages(config["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert not on_disk - in_nav, f"add these pages to the nav in mkdocs.yml: {sorted(on_disk - in_nav)}"
    assert not in_nav - on_disk, f"the nav names pages that do not exist: {sorted(in_nav - on_disk)}"


def test_cli_reference_is_current():
    """docs/cli.md is generated from the argparse parser; regenerate it after changing the CLI."""
    expected = _load_script("cli_reference").render()
    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert current == expected, "docs/cli.md is stale: run `python scripts/cli_reference.py`"


def test_cli_reference_covers_every_command():
    from napari_xrayseg.cli import build_parser

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:
        assert f"## xrayseg {name}" in text


@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_examples_run(page, tmp_path, monkeypatch):
    """Every ```python block of the page runs, in order, in one namespace, in an empty folder."""
    blocks = _PYTHON_BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))
    assert len(blocks) >= 5, f"{page}: expected the tested examples to be ```python blocks"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks, 1):
        exec(compile(code, f"docs/{page} (python block {i})", "exec"), namespace)  # noqa: S102


def test_examples_are_small():
    """The tested examples must stay fast: tiny networks, small volumes, the CPU."""
    for page in EXAMPLE_PAGES:
        code = "\n".join(_PYTHON_BLOCK.findall((DOCS / page).read_text(encoding="utf-8")))
        for shape in re.findall(r"make_phantom\(\(([^)]*)\)", code):
            dims = [int(v) for v in shape.split(",")]
            assert dims[0] <= 8 and max(dims) <= 128, f"{page}: make_phantom(({shape})) is too big for a test"
        for size in re.findall(r"size=\"(\w+)\"", code):
            assert size == "tiny", f"{page}: use size='tiny' in tested examples"
        assert 'device="cpu"' in code


@pytest.mark.parametrize(
    "doc",
    ["README.md", ".napari-hub/DESCRIPTION.md", *sorted(p.relative_to(ROOT).as_posix() for p in DOCS.glob("*.md"))],
)
def test_relative_links_exist(doc):
    """Relative links and images point at files that exist (mkdocs checks docs/ too, this covers README)."""
    path = ROOT / doc
    missing = []
    for target in _MD_LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file = target.split("#", 1)[0]
        if file and not (path.parent / file).exists():
            missing.append(target)
    assert not missing, f"{doc}: broken links {missing}"


def test_readme_links_work_on_pypi_and_point_at_files_here():
    """README.md is the package's PyPI page, where relative links and images break: they are absolute, to this
    repository's files (session 37's newcomer QA)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    prefixes = (
        "https://github.com/napari-xrayseg/napari-xrayseg/blob/main/",
        "https://github.com/napari-xrayseg/napari-xrayseg/tree/main/",
        "https://raw.githubusercontent.com/napari-xrayseg/napari-xrayseg/main/",
    )
    relative, missing = [], []
    for target in _MD_LINK.findall(text):
        if (
            target.startswith("#")
            or target.startswith(("http://", "https://", "mailto:"))
            and not target.startswith(prefixes)
        ):
            continue
        hit = next((p for p in prefixes if target.startswith(p)), None)
        if hit is None:
            relative.append(target)
        elif not (ROOT / target[len(hit) :].split("#", 1)[0]).exists():
            missing.append(target)
    assert not relative, f"relative links break on PyPI: {relative}"
    assert not missing, f"links to files this repository lacks: {missing}"


def test_hub_metadata_matches_the_package():
    import tomllib

    hub = yaml.safe_load((ROOT / ".napari-hub" / "config.yml").read_text(encoding="utf-8"))
    manifest = yaml.safe_load((ROOT / "src" / "napari_xrayseg" / "napari.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert hub["visibility"] == manifest["visibility"] == "public"
    assert 20 < len(hub["summary"]) <= 200 and len(project["description"]) <= 200
    assert "Framework :: napari" in project["classifiers"]
    assert set(project["urls"].values()) <= set(hub["project_urls"].values())
    assert manifest["display_name"] and manifest["categories"]
    assert len((ROOT / ".napari-hub" / "DESCRIPTION.md").read_text(encoding="utf-8")) > 500
