"""The README's ten-line API snippet runs exactly as printed (issue #15, item 9), on a small
DigitsCNN, and prunes the BatchNorm-coupled channel groups.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.datasets import digits_loaders, evaluate_accuracy
from nasviz.models import DigitsCNN

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## The API in ten lines", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README lost its API snippet"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_snippet_runs_as_printed_and_prunes_bn_coupled_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the snippet saves "pruned.pt" in the working directory
    torch.manual_seed(0)
    loaders = digits_loaders(batch_size=64, seed=0)
    x = next(iter(loaders.val))[0][:2]
    train_batches = [b for _, b in zip(range(2), loaders.train, strict=False)]  # small: fast
    val_batches = [b for _, b in zip(range(2), loaders.val, strict=False)]
    ns: dict[str, Any] = {
        "model": DigitsCNN(width=16),
        "x": x,
        "train_loader": train_batches,
        "val_accuracy": lambda m: evaluate_accuracy(m, val_batches),
        "MyNet": lambda: DigitsCNN(width=16),
    }
    original = ns["model"]
    bns = {n for n, m in original.named_modules() if isinstance(m, nn.BatchNorm2d)}
    exec(compile(_snippet(), str(README), "exec"), ns)
    space = nv.search_space(ns["model"])
    coupled = [g for g in space.groups if any(m.module in bns for m in g.members)]
    assert coupled, "no BatchNorm-coupled group is searchable: set the divisors together"
    assert any(g.active < g.original for g in coupled)  # and the search pruned one
    assert nv.profile(ns["small"], x).flops <= 0.6 * nv.profile(DigitsCNN(width=16), x).flops
    assert (tmp_path / "pruned.pt").exists()


def test_with_divisor_sets_every_layer_type() -> None:
    cfg = nv.FastNASConfig.with_divisor(8)
    for layer_type in cfg.layer_types():
        rule = cfg.rule_for(layer_type, "any.layer").rule
        assert rule is not None
        divisors = {k: v for k, v in rule.model_dump().items() if k.endswith("_divisor")}
        assert divisors and set(divisors.values()) == {8}, layer_type
    # rules given next to it replace a layer type's entry
    cfg = nv.FastNASConfig.with_divisor(4, {"nn.Linear": None, "nn.Conv2d": {"*head*": None}})
    assert cfg.rules("nn.Linear") is None
    assert cfg.rule_for("nn.Conv2d", "head").rule is None
    assert cfg.rule_for("nn.BatchNorm2d", "bn").rule.feature_divisor == 4
