"""Dynamic ``transformers.pytorch_utils.Conv1D`` (GPT-2's ``c_attn``, ``c_fc``, ``c_proj``).

A ``Conv1D`` is a linear layer whose weight is stored transposed, ``(in, out) = (nx, nf)``:
``y = x @ weight + bias``. Its prunable widths are ``nf`` (out, its own rule) and ``nx`` (in,
follows its producer); the weight is sliced along dim 1 for ``nf`` and dim 0 for ``nx``.

nasviz does not import transformers: the family is matched by the class's qualified name, and
``export()`` builds the very ``Conv1D`` class the model was made of.

Example::

    >>> from transformers.pytorch_utils import Conv1D  # doctest: +SKIP
    >>> from nasviz.hparam import Hparam  # doctest: +SKIP
    >>> fc = DynamicHFConv1D.convert(Conv1D(8, 4))  # doctest: +SKIP
    >>> fc.set_dim("nf", Hparam([2, 8]))  # doctest: +SKIP
    >>> fc.dim("nf").active = 2  # doctest: +SKIP
    >>> fc(torch.zeros(3, 4)).shape, fc.export()  # doctest: +SKIP
    (torch.Size([3, 2]), Conv1D(nf=2, nx=4))
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from typing_extensions import override

from nasviz.dynamic.base import DynamicModule, register_dynamic
from nasviz.dynamic.family import RuleSpec

__all__ = ["DynamicHFConv1D"]


@register_dynamic
class DynamicHFConv1D(DynamicModule):
    """``transformers``' ``Conv1D`` with sliceable ``nf`` (out) and ``nx`` (in)."""

    torch_qualname = "transformers.pytorch_utils.Conv1D"
    layer_type = "transformers.Conv1D"
    rule = RuleSpec("features")
    trace_kind = "linear"
    channel_axis = -1
    dynamic_attrs = {"nf": "out", "nx": "in"}
    param_dims = {"weight": {1: "nf", 0: "nx"}, "bias": {0: "nf"}}

    weight: nn.Parameter
    bias: nn.Parameter

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.sliced("weight", self.weight, self.param_dims["weight"])
        bias = self.sliced("bias", self.bias, self.param_dims["bias"])
        out = torch.addmm(bias, x.reshape(-1, x.size(-1)), weight)
        return out.view(*x.shape[:-1], weight.shape[1])

    def importance(self, attr: str) -> torch.Tensor | None:
        """``nf``: the L2 norm of each output feature's weights (a column); otherwise ``None``."""
        if attr == "nf":
            return cast(torch.Tensor, self.weight.detach().float().norm(dim=0))
        return None

    @override
    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}"

    def __repr__(self) -> str:
        return f"Dynamic{self.torch_cls.__name__}(nf={self.nf}, nx={self.nx})"

    def export(self) -> nn.Module:
        """A plain ``Conv1D`` (the transformers class) of the active widths."""
        weight = self.sliced("weight", self.weight.detach(), self.param_dims["weight"])
        bias = self.sliced("bias", self.bias.detach(), self.param_dims["bias"])
        plain: Any = self.torch_cls(weight.shape[1], weight.shape[0])  # Conv1D(nf, nx)
        plain.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(weight)
            plain.bias.copy_(bias)
        return self._export_finish(plain)
