"""A small Conv-BN network with trained-looking BatchNorm statistics, for the trust tests."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import nasviz as nv


class ConvBN(nn.Module):
    """conv(3->16)-BN-ReLU-conv(16->16)-BN-ReLU-pool-linear(16->4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def convnet(seed: int = 0) -> tuple[nn.Module, torch.Tensor, list[torch.Tensor]]:
    """A converted :class:`ConvBN` with non-default BN statistics, its dummy input and a loader."""
    torch.manual_seed(seed)
    x = torch.randn(2, 3, 8, 8)
    model = ConvBN()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 8, 8) * 2 + 1)
    cfg = nv.FastNASConfig.with_divisor(4)
    model = nv.convert(model, mode=[("fastnas", cfg)], dummy_input=x)  # type: ignore[assignment]  # test data typed loosely
    loader = [torch.randn(4, 3, 8, 8) for _ in range(3)]
    return model, x, loader


def score(model: nn.Module) -> float:
    """A score that depends on the active widths (wider is better) and on the weights."""
    cfg = nv.get_subnet_config(model)
    total = sum(cfg.values())
    out = model(torch.ones(1, 3, 8, 8))
    return float(total) / 100.0 + 1e-3 * float(out.abs().mean())


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a failed prune must leave as it was."""
    return {
        "objects": {n: id(t) for n, t in [*model.named_parameters(), *model.named_buffers()]},
        "values": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "config": nv.get_subnet_config(model),
        "training": {n: m.training for n, m in model.named_modules()},
    }


def assert_same(model: nn.Module, before: dict[str, Any]) -> None:
    after = snapshot(model)
    assert after["objects"] == before["objects"]
    assert after["values"].keys() == before["values"].keys()
    for k, v in before["values"].items():
        assert torch.equal(after["values"][k], v), k
    assert after["config"] == before["config"]
    assert after["training"] == before["training"]
