"""Binder and conda environments: identical files, CPU torch, every dependency listed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _pip_names(env_text: str) -> set[str]:
    names = set()
    for line in env_text.splitlines():
        m = re.match(r"\s+-\s+([A-Za-z0-9_.\-\[\]]+)", line)
        if m and not m.group(1).startswith("-"):
            names.add(re.split(r"[<>=\[]", m.group(1))[0].lower())
    return names


def test_binder_environment_equals_root_environment() -> None:
    root = (ROOT / "environment.yml").read_text()
    binder = (ROOT / "binder" / "environment.yml").read_text()
    assert binder == root


def test_environment_pins_cpu_torch() -> None:
    text = (ROOT / "environment.yml").read_text()
    assert "torch==2.13.0" in text
    assert "download.pytorch.org/whl/cpu" in text


def test_environment_lists_core_and_notebook_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["notebook"]
    wanted_names = {re.split(r"[<>=\[ ]", d)[0].lower() for d in wanted}
    listed = _pip_names((ROOT / "environment.yml").read_text())
    assert wanted_names <= listed, f"missing from environment.yml: {wanted_names - listed}"


def test_postbuild_installs_the_package() -> None:
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post
