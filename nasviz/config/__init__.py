"""Configs: pydantic models for modes, and glob rules per layer type.

A *rule config* (``ModeloptBaseRuleConfig``) has one field per supported layer type, keyed like the
FastNAS reference (``"nn.Conv2d"``). A field's value is

* a layer config (``{"channels_ratio": [...], ...}``), short for ``{"*": that config}``;
* ``None``: every layer of that type stays static;
* ``{glob: layer config | None}``: globs match qualified module names (``fnmatch``), are applied in
  order, and a later matching key replaces an earlier one; ``None`` switches the matched layers off.

Unset fields of a layer config take the layer type's defaults, so ``{"*": {"channel_divisor": 8}}``
keeps the default ratios.

Example::

    >>> from nasviz.fastnas import FastNASConfig  # a rule config built with build_rule_config
    >>> cfg = FastNASConfig(**{"nn.Conv2d": {"*": {"channel_divisor": 8}, "*head*": None}})
    >>> cfg.rule_for("nn.Conv2d", "backbone.conv1").rule.channel_divisor
    8
    >>> cfg.rule_for("nn.Conv2d", "head.conv").rule is None
    True
"""

from __future__ import annotations

from nasviz.config.base import ExportConfig, ModeloptBaseConfig
from nasviz.config.layers import (
    LAYER_TYPES,
    LayerConfig,
    derive_layer_config,
    layer_config_class,
)
from nasviz.config.rules import ModeloptBaseRuleConfig, RuleMatch, build_rule_config
from nasviz.dynamic import registered_layer_types

__all__ = [
    "LAYER_TYPES",
    "ExportConfig",
    "LayerConfig",
    "ModeloptBaseConfig",
    "ModeloptBaseRuleConfig",
    "RuleMatch",
    "build_rule_config",
    "layer_config_class",
]


def __getattr__(name: str) -> type[LayerConfig]:
    """The derived per-layer config classes by name (``nasviz.config.DynamicConv2dConfig``)."""
    for family in registered_layer_types().values():
        if f"{family.__name__}Config" == name:
            return derive_layer_config(family)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
