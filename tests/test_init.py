"""The public API of DESIGN.md, and the rule that the engine never imports the notebook layer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nasviz as nv
import nasviz.fastnas
import nasviz.search
from nasviz.testing import searchable_mlp

DESIGN_NAMES = [
    "convert", "sample", "select", "get_subnet_config", "search_space", "profile", "prune",
    "export", "save", "restore", "FastNASConfig", "ModeloptBaseRuleConfig", "ModeDescriptor",
    "PatchManager", "BinarySearcher", "HooksHandle", "ActivationMapGrabber", "ModelExtender",
    "ModelStump", "distill", "KDLoss", "export_onnx", "export_program",
]  # fmt: skip


def test_every_design_name_is_public() -> None:
    missing = [n for n in DESIGN_NAMES if not hasattr(nv, n)]
    assert missing == []
    assert set(DESIGN_NAMES) <= set(nv.__all__)
    assert len(nv.__all__) == len(set(nv.__all__))


def test_import_nasviz_imports_no_notebook_code() -> None:
    code = (
        "import sys, nasviz, nasviz.search, nasviz.space, nasviz.profile, nasviz.extension\n"
        "bad = [m for m in ('ipywidgets', 'plotly', 'IPython', 'anywidget') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_engine_sources_do_not_mention_widget_libraries() -> None:
    from pathlib import Path

    root = Path(nv.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if "widgets" in path.parts:
            continue
        text = path.read_text()
        for lib in ("import ipywidgets", "import plotly", "from plotly", "from ipywidgets"):
            if lib in text:
                offenders.append(f"{path.relative_to(root)}: {lib}")
    assert offenders == []


def test_import_nasviz_registers_the_built_in_modes_and_restores_a_saved_model(
    tmp_path: Path,
) -> None:
    """Modes register by explicit import from ``nasviz/__init__`` (no importlib strings): a fresh
    process that only imports nasviz restores a saved fastnas + export model.
    """
    model, _ = searchable_mlp()
    nv.select(model, {"fc1.out_features": 8})
    small = nv.export(model)
    nv.save(small, tmp_path / "small.pt")
    code = (
        "import torch, nasviz as nv\n"
        "from nasviz.modes import registered_modes\n"
        "print(sorted(registered_modes()))\n"
        "from nasviz.testing import TinyMLP\n"
        f"m = nv.restore(TinyMLP(), {str(tmp_path / 'small.pt')!r})\n"
        "print(m.fc1.out_features, m.fc2.in_features)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["['export', 'fastnas']", "8 8"]


def test_the_generic_search_package_does_not_export_the_fastnas_searcher() -> None:
    assert not hasattr(nasviz.search, "BinarySearcher")
    assert nv.BinarySearcher is nasviz.fastnas.BinarySearcher
    assert nv.get_mode("fastnas").search_algorithm is nv.BinarySearcher
