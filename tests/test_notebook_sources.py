"""Each notebook is generated from its reviewable source in notebooks/src/ and stored stripped."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))


def _builder():
    spec = importlib.util.spec_from_file_location(
        "make_notebook", ROOT / "tools" / "make_notebook.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_notebook_matches_its_source(src: Path, tmp_path: Path) -> None:
    built = tmp_path / f"{src.stem}.ipynb"
    _builder()(src, built)
    stored = ROOT / "notebooks" / f"{src.stem}.ipynb"
    assert stored.exists(), f"run: python tools/make_notebook.py {src} {stored}"
    assert stored.read_text() == built.read_text(), (
        f"{stored.name} is out of date: python tools/make_notebook.py notebooks/src/{src.name} "
        f"notebooks/{stored.name}"
    )


@pytest.mark.parametrize(
    "nb_path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem
)
def test_notebooks_are_stored_without_outputs(nb_path: Path) -> None:
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None
