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

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from nasviz.dynamic.base import register_dynamic
from nasviz.dynamic.family import RuleSpec
from nasviz.dynamic.norm import _DynamicLastDimNorm

__all__ = ["DynamicRMSNorm"]


@register_dynamic
class DynamicRMSNorm(_DynamicLastDimNorm, nn.RMSNorm):
    """``nn.RMSNorm`` over the last dimension with sliceable features."""

    torch_cls = nn.RMSNorm
    layer_type = "nn.RMSNorm"
    _one = "an RMSNorm"
    rule = RuleSpec("features")
    param_dims = {"weight": {0: "normalized_shape"}}

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_full():
            return super().forward(x)
        weight, _ = self._affine()
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)
