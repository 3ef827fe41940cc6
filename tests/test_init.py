"""The public API of DESIGN.md, and the rule that the engine never imports the notebook layer."""

from __future__ import annotations

import subprocess
import sys

import nasviz as nv

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
