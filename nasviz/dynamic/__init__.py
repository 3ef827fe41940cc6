"""Dynamic twins of the supported torch layers, one file per layer family.

Each family declares its facts once on its dynamic class (:mod:`nasviz.dynamic.family`); importing
this package registers every built-in family, in the order below (the 16 layer types of the
FastNAS reference first). A new family is one new file, imported here.
"""

from nasviz.dynamic.base import (
    DynamicModule,
    dynamic_class_for,
    is_dynamic,
    register_dynamic,
    registered_layer_types,
    slice_dim,
    unregister_dynamic,
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
from nasviz.dynamic.family import LayerSpec, RuleSpec
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

# isort: split
# families beyond the FastNAS reference register after its 16 (registration order is the order
# of LAYER_TYPES and of a rule config's fields)
from nasviz.dynamic.attention import DynamicMultiheadAttention, FollowHeads
from nasviz.dynamic.hf_conv1d import DynamicHFConv1D
from nasviz.dynamic.rmsnorm import DynamicRMSNorm

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
    "DynamicHFConv1D",
    "DynamicInstanceNorm1d",
    "DynamicInstanceNorm2d",
    "DynamicInstanceNorm3d",
    "DynamicLayerNorm",
    "DynamicLinear",
    "DynamicModule",
    "DynamicMultiheadAttention",
    "DynamicRMSNorm",
    "DynamicSyncBatchNorm",
    "FollowHeads",
    "GroupedHparam",
    "LayerSpec",
    "RuleSpec",
    "dynamic_class_for",
    "group_order",
    "is_dynamic",
    "register_dynamic",
    "registered_layer_types",
    "slice_dim",
    "unregister_dynamic",
]
