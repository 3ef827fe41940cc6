"""Test helpers with answers that can be checked by hand (used by nasviz's own tests and
notebooks; handy for users' tests too).

``TinyMLP`` is ``Linear(8, 16) -> ReLU -> Linear(16, 16) -> ReLU -> Linear(16, 4)``.
:func:`searchable_mlp` converts it so that its two hidden widths are the hparams
``"fc1.out_features"`` and ``"fc2.out_features"`` with choices 4, 8, 12, 16, and
:func:`known_score` scores a subnet as ``1 - KNOWN_DROPS[fc1][w1] - KNOWN_DROPS[fc2][w2]``, so the
sensitivity map a correct searcher computes is exactly ``KNOWN_DROPS`` (without the full widths).

Example::

    >>> model, x = searchable_mlp()
    >>> nv.select(model, {FC1: 8})
    >>> known_score(model)
    0.95
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from typing_extensions import override

import nasviz as nv

__all__ = ["FC1", "FC2", "KNOWN_DROPS", "TinyMLP", "known_score", "searchable_mlp"]

FC1, FC2 = "fc1.out_features", "fc2.out_features"
#: single-group score drops of the tiny MLP's subnets (the score is additive in them)
KNOWN_DROPS: dict[str, dict[int, float]] = {
    FC1: {16: 0.0, 12: 0.01, 8: 0.05, 4: 0.30},
    FC2: {16: 0.0, 12: 0.02, 8: 0.03, 4: 0.20},
}


class TinyMLP(nn.Module):
    """Three Linear layers with ReLUs: 8 -> 16 -> 16 -> 4."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 4)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x))))))


def searchable_mlp(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A converted :class:`TinyMLP` (hidden widths 4/8/12/16) and its batch-of-2 dummy input."""
    torch.manual_seed(seed)
    x = torch.randn(2, 8)
    cfg = {"nn.Linear": {"feature_divisor": 4, "features_ratio": [0.25, 0.5, 0.75, 1.0]}}
    return nv.convert(TinyMLP(), mode=[("fastnas", cfg)], dummy_input=x), x


def known_score(model: nn.Module) -> float:
    """``1 - KNOWN_DROPS[fc1][active] - KNOWN_DROPS[fc2][active]`` of a searchable TinyMLP."""
    cfg = nv.get_subnet_config(model)
    return 1.0 - KNOWN_DROPS[FC1][cfg[FC1]] - KNOWN_DROPS[FC2][cfg[FC2]]
