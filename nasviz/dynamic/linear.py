"""Dynamic ``nn.Linear``: prunable ``out_features`` (its own rule) and ``in_features`` (follows
its producer).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from nasviz.dynamic.base import DynamicModule, register_dynamic
from nasviz.dynamic.family import RuleSpec

__all__ = ["DynamicLinear"]


@register_dynamic
class DynamicLinear(DynamicModule, nn.Linear):
    """``nn.Linear`` with sliceable features.

    Example::

        >>> lin = DynamicLinear.convert(nn.Linear(8, 4))
        >>> from nasviz.hparam import Hparam
        >>> lin.set_dim("out_features", Hparam([2, 4]))
        >>> lin.dim("out_features").active = 2
        >>> lin(torch.zeros(1, 8)).shape
        torch.Size([1, 2])
    """

    torch_cls = nn.Linear
    layer_type = "nn.Linear"
    functional_op = "linear"
    rule = RuleSpec("features")
    trace_kind = "linear"
    channel_axis = -1
    dynamic_attrs = {"out_features": "out", "in_features": "in"}
    param_dims = {"weight": {0: "out_features", 1: "in_features"}, "bias": {0: "out_features"}}

    @override
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight = self.sliced("weight", self.weight, self.param_dims["weight"])
        bias = self.sliced("bias", self.bias, self.param_dims["bias"])
        return F.linear(input, weight, bias)

    @override
    def importance(self, attr: str) -> torch.Tensor | None:
        """``out_features``: the L2 norm of each output feature's weights (a row), else ``None``."""
        if attr == "out_features":
            return cast(torch.Tensor, self.weight.detach().float().norm(dim=1))
        return None

    @override
    def export(self) -> nn.Linear:
        w = self.sliced("weight", self.weight.detach(), self.param_dims["weight"])
        plain = nn.Linear(
            w.shape[1], w.shape[0], bias=self.bias is not None, device=w.device, dtype=w.dtype
        )
        with torch.no_grad():
            plain.weight.copy_(w)
            if self.bias is not None:
                plain.bias.copy_(self.sliced("bias", self.bias.detach(), self.param_dims["bias"]))
        return self._export_finish(plain)  # type: ignore[return-value]
