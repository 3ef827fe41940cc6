"""Dynamic ``nn.RMSNorm`` (torch >= 2.4): prunable over its last dimension.

``normalized_shape`` reads as ``(active,)``; the per-channel ``weight`` (there is no bias) is
sliced along dim 0. As for LayerNorm, only an RMSNorm over the last dimension alone can be
pruned; :meth:`DynamicRMSNorm.unsupported_reason` says why another one stays static. Its rule
and channel axis are LayerNorm's: ``features_ratio``/``feature_divisor``, the last dimension.

Example::

    >>> from nasviz.hparam import Hparam
    >>> norm = DynamicRMSNorm.convert(nn.RMSNorm(8))
    >>> norm.set_dim("normalized_shape", Hparam([4, 8]))
    >>> norm.dim("normalized_shape").active = 4
    >>> norm(torch.ones(2, 4)).shape, norm.export()
    (torch.Size([2, 4]), RMSNorm((4,), eps=None, elementwise_affine=True))
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from nasviz.dynamic.base import DynamicModule, register_dynamic
from nasviz.dynamic.family import RuleSpec
from nasviz.dynamic.norm import _DynamicNorm

__all__ = ["DynamicRMSNorm"]


@register_dynamic
class DynamicRMSNorm(_DynamicNorm, nn.RMSNorm):
    """``nn.RMSNorm`` over the last dimension with sliceable features."""

    torch_cls = nn.RMSNorm
    layer_type = "nn.RMSNorm"
    rule = RuleSpec("features")
    channel_axis = -1
    channel_attr = "normalized_shape"
    dynamic_attrs = {"normalized_shape": "out"}
    param_dims = {"weight": {0: "normalized_shape"}}

    @classmethod
    def unsupported_reason(cls, module: nn.Module) -> str | None:
        """Why ``module`` cannot be made dynamic (``None`` if it can)."""
        if not isinstance(module, nn.RMSNorm):
            return None
        shape = tuple(
            module.original("normalized_shape")
            if isinstance(module, DynamicModule)
            else module.normalized_shape
        )
        if len(shape) != 1:
            return (
                f"RMSNorm(normalized_shape={shape}) normalises over {len(shape)} dimensions; "
                "only an RMSNorm over the last dimension (a normalized_shape of length 1) can be "
                "pruned, so this one stays static"
            )
        return None

    def _nv_attr_value(self, attr: str) -> Any:
        return (self.active_size(attr),)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_full():
            return super().forward(x)
        weight, _ = self._affine()
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)

    def export(self) -> nn.Module:
        """The plain ``nn.RMSNorm`` over the active features."""
        plain = nn.RMSNorm(
            self.active_size("normalized_shape"),
            eps=self.eps,
            elementwise_affine=self.elementwise_affine,
            **self._factory(),
        )
        return self._export_affine(plain)
