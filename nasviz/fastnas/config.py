"""``FastNASConfig``: the ``"fastnas"`` mode's config, one glob-rule field per layer type.

Built with the generic :func:`nasviz.config.build_rule_config`, so it has a field for every
layer type in :data:`nasviz.config.LAYER_TYPES` with that type's defaults.
"""

from __future__ import annotations

from pydantic import Field, create_model

from nasviz.config import ModeloptBaseRuleConfig, build_rule_config

__all__ = ["FastNASConfig"]


class _FastNASConfigBase(ModeloptBaseRuleConfig):
    pass


_DOC = """Configuration of the ``"fastnas"`` mode: glob rules for every supported layer type
    (the 16 reference types, then the families nasviz adds).

    Defaults equal the FastNAS reference (ratios 0.05 ... 1.0 in steps of 0.05, divisor 32,
    ``kernel_size: []``)::

        >>> cfg = FastNASConfig(**{"nn.Conv2d": {"channel_divisor": 8}})
        >>> cfg.rule_for("nn.Conv2d", "layer1.0.conv1").rule.channel_divisor
        8

    ``tie_roles=True`` gives the same role in every block one hparam (named by the role, e.g.
    ``bert.encoder.layer.*.intermediate.dense.out_features``), see :mod:`nasviz.fastnas.roles`.
    """
_Rules: type[ModeloptBaseRuleConfig] = build_rule_config(
    "FastNASConfig", _DOC, _FastNASConfigBase, module=__name__
)
#: the layer-type fields first (in reference order), then the search-space options
FastNASConfig: type[ModeloptBaseRuleConfig] = create_model(
    "FastNASConfig",
    __base__=_Rules,
    __doc__=_DOC,
    __module__=__name__,
    tie_roles=(
        bool,
        Field(
            default=False,
            description="Tie the same role across blocks (every block's FFN width one hparam, "
            "every block's head count one hparam), so the result has uniform widths a Hugging "
            "Face config can describe; roles are hparam names with block indices replaced by "
            "'*' (see nasviz.fastnas.roles)",
        ),
    ),
)
