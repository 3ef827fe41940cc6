"""``FastNASConfig``: the ``"fastnas"`` mode's config, one glob-rule field per layer type.

Built with the generic :func:`nasviz.config.build_rule_config`, so it has a field for every
layer type in :data:`nasviz.config.LAYER_TYPES` with that type's defaults.
"""

from __future__ import annotations

from pydantic import Field, create_model, field_validator

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

    ``keep_outputs`` names the model outputs that keep their width (dotted output paths, globs:
    ``["logits"]``, ``["0"]`` for a tuple's first item); the others follow the pruned widths.
    ``None`` (default) keeps every output except the by-products of a transformers
    ``ModelOutput`` with logits (``encoder_last_hidden_state``, ``hidden_states`` ...), see
    :mod:`nasviz.tracing.outputs`. A name that matches no output is refused at convert.
    """
_Rules: type[ModeloptBaseRuleConfig] = build_rule_config(
    "FastNASConfig", _DOC, _FastNASConfigBase, module=__name__
)


class _Options(_Rules):  # type: ignore[misc,valid-type]  # a class built at runtime
    """The search-space options that are not layer rules (checked here, not per layer)."""

    keep_outputs: list[str] | None = Field(
        default=None,
        description="Model outputs that keep their width (dotted output paths such as "
        "'logits' or '0', fnmatch globs; a name covers its sub-paths); the others follow the "
        "pruned widths. None: every output except a transformers ModelOutput's by-products "
        "(encoder_last_hidden_state, hidden_states, past_key_values, attentions ...) when it "
        "has logits. See nasviz.tracing.outputs",
    )

    @field_validator("keep_outputs")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(not s.strip() for s in v):
            msg = (
                f"keep_outputs={v!r} holds an empty name; give dotted output names such as "
                "'logits' or '0', or None for the default"
            )
            raise ValueError(msg)
        return v


#: the layer-type fields first (in reference order), then the search-space options
FastNASConfig: type[ModeloptBaseRuleConfig] = create_model(
    "FastNASConfig",
    __base__=_Options,
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
