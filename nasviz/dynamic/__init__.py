"""Dynamic twins of the 16 supported torch layers (see :mod:`nasviz.dynamic.base`)."""

from nasviz.dynamic.base import (
    DynamicModule,
    dynamic_class_for,
    is_dynamic,
    register_dynamic,
    registered_layer_types,
    slice_dim,
)
from nasviz.dynamic.conv import (
    DynamicConv1d,
    DynamicConv2d,
    DynamicConv3d,
    DynamicConvTranspose1d,
    DynamicConvTranspose2d,
    DynamicConvTranspose3d,
    GroupedHparam,
)
from nasviz.dynamic.linear import DynamicLinear
from nasviz.dynamic.norm import (
    DynamicBatchNorm1d,
    DynamicBatchNorm2d,
    DynamicBatchNorm3d,
    DynamicGroupNorm,
    DynamicInstanceNorm1d,
    DynamicInstanceNorm2d,
    DynamicInstanceNorm3d,
    DynamicLayerNorm,
    DynamicSyncBatchNorm,
    group_order,
)

__all__ = [
    "DynamicBatchNorm1d",
    "DynamicBatchNorm2d",
    "DynamicBatchNorm3d",
    "DynamicConv1d",
    "DynamicConv2d",
    "DynamicConv3d",
    "DynamicConvTranspose1d",
    "DynamicConvTranspose2d",
    "DynamicConvTranspose3d",
    "DynamicGroupNorm",
    "DynamicInstanceNorm1d",
    "DynamicInstanceNorm2d",
    "DynamicInstanceNorm3d",
    "DynamicLayerNorm",
    "DynamicLinear",
    "DynamicModule",
    "DynamicSyncBatchNorm",
    "GroupedHparam",
    "dynamic_class_for",
    "group_order",
    "is_dynamic",
    "register_dynamic",
    "registered_layer_types",
    "slice_dim",
]
