"""The one fx capture the evaluator cuts sub-graphs from, and its op questions."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import nasviz as nv
from nasviz._utils import training_flags
from nasviz.dynamic import is_dynamic
from nasviz.testing import TinyMLP
from nasviz.tracing.fx import UntraceableError, acts_per_channel, is_spatial_pool, trace_leaves


class Ops(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.drop(self.act(self.conv(x))))
        y = torch.softmax(F.gelu(y), dim=1).sigmoid().relu_()
        return F.avg_pool2d(y, 1)


def _nodes(model: nn.Module) -> dict[str, fx.Node]:
    return {n.name: n for n in trace_leaves(model).nodes}


def test_dynamic_layers_are_leaves_of_the_capture() -> None:
    wide = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 4))
    model = nv.convert(wide, mode="fastnas", dummy_input=torch.randn(2, 8))
    calls = [n for n in trace_leaves(model).nodes if n.op == "call_module"]
    assert [n.target for n in calls] == ["0", "1", "2"]
    assert is_dynamic(model[0]) and is_dynamic(model[2])  # kept whole: not traced through


def test_per_channel_and_pool_questions_come_from_the_op_vocabulary() -> None:
    model = Ops()
    nodes = _nodes(model)
    per_channel = {name for name, n in nodes.items() if acts_per_channel(model, n)}
    pools = {name for name, n in nodes.items() if is_spatial_pool(model, n)}
    assert per_channel == {"act", "gelu", "sigmoid"}  # not dropout, softmax, relu_, the conv
    assert pools == {"pool", "avg_pool2d"}


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if self.training else -self.fc(x)


def test_a_model_that_traces_differently_per_mode_is_untraceable_and_flags_come_back() -> None:
    model = Branchy().train()
    with pytest.raises(UntraceableError, match="traces differently in train and eval mode"):
        trace_leaves(model)
    assert model.training


def test_training_flags_restore_every_module_also_after_an_error() -> None:
    model = TinyMLP().train()
    model.fc2.eval()
    seen: list[bool] = []

    def run() -> None:
        with training_flags(model, mode=False):
            seen.extend(m.training for m in model.modules())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run()
    assert seen and not any(seen)
    assert model.training and model.fc1.training and not model.fc2.training
