"""``FastNASConfig``: the ``"fastnas"`` mode's config, one glob-rule field per layer type.

Built with the generic :func:`nasviz.config.build_rule_config`, so it has a field for every
layer type in :data:`nasviz.config.LAYER_TYPES` with that type's defaults.
"""

from __future__ import annotations

from nasviz.config import ModeloptBaseRuleConfig, build_rule_config

__all__ = ["FastNASConfig"]


class _FastNASConfigBase(ModeloptBaseRuleConfig):
    pass


FastNASConfig: type[ModeloptBaseRuleConfig] = build_rule_config(
    "FastNASConfig",
    """Configuration of the ``"fastnas"`` mode: glob rules for every supported layer type
    (the 16 reference types, then the families nasviz adds).

    Defaults equal the FastNAS reference (ratios 0.05 ... 1.0 in steps of 0.05, divisor 32,
    ``kernel_size: []``)::

        >>> cfg = FastNASConfig(**{"nn.Conv2d": {"channel_divisor": 8}})
        >>> cfg.rule_for("nn.Conv2d", "layer1.0.conv1").rule.channel_divisor
        8
    """,
    _FastNASConfigBase,
    module=__name__,
)
