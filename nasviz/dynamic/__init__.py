"""Dynamic twins of the supported torch layers (see :mod:`nasviz.dynamic.base`)."""

from nasviz.dynamic.base import (
    DynamicModule,
    dynamic_class_for,
    is_dynamic,
    register_dynamic,
    registered_layer_types,
    slice_dim,
)
from nasviz.dynamic.linear import DynamicLinear

__all__ = [
    "DynamicLinear",
    "DynamicModule",
    "dynamic_class_for",
    "is_dynamic",
    "register_dynamic",
    "registered_layer_types",
    "slice_dim",
]
