"""Rule configs: one field per layer type, each a list of glob rules merged in order.

A field's value is a layer config (short for ``{"*": that config}``), ``None`` (every layer of
that type stays static) or ``{glob: layer config | None}``: globs match qualified module names
(``fnmatch``), are applied in order, and a later matching key replaces an earlier one.
:func:`build_rule_config` makes an algorithm's config class (``FastNASConfig``) with a field for
every registered layer type; :meth:`ModeloptBaseRuleConfig.rule_for` says which rule wins for a
module.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, ValidationError, create_model, model_validator

from nasviz.config.base import ModeloptBaseConfig
from nasviz.config.layers import (
    LAYER_TYPES,
    PUBLIC_MODULE,
    LayerConfig,
    unknown_layer_type_message,
)

__all__ = ["ModeloptBaseRuleConfig", "RuleMatch", "build_rule_config"]


@dataclass(frozen=True)
class RuleMatch:
    """Which rule applies to one module: the effective layer config (``None`` = switched off)
    and the glob that won (``None`` if no glob matched the module name).
    """

    rule: LayerConfig | None
    pattern: str | None

    @property
    def enabled(self) -> bool:
        """Whether the module is pruned: a glob matched and its rule is not ``None``."""
        return self.rule is not None


def _check_glob(glob: Any, layer_type: str) -> str:
    if not isinstance(glob, str) or not glob or glob != glob.strip():
        msg = (
            f"{layer_type}: glob {glob!r} is malformed; use a non-empty pattern without "
            "surrounding spaces such as '*' or 'layer1.*'"
        )
        raise ValueError(msg)
    depth = 0
    for ch in glob:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if depth < 0 or depth > 1:
            break
    if depth != 0:
        msg = (
            f"{layer_type}: glob {glob!r} has unbalanced brackets; close every '[' with ']' "
            "(write '[[]' to match a literal '[')"
        )
        raise ValueError(msg)
    return glob


def _refuse_field_typos(
    layer_type: str, cls_name: str, cfg_fields: set[str], value: Mapping[Any, Any]
) -> None:
    """A key whose value is no rule (not a layer config, not None) was meant as a field: say
    which field, rather than reading it as a glob.
    """
    for key, rule in value.items():
        if key in cfg_fields or rule is None or isinstance(rule, (Mapping, LayerConfig)):
            continue
        close = difflib.get_close_matches(str(key), sorted(cfg_fields), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        msg = (
            f"{layer_type}: {key!r} is not a field of {cls_name} (its fields: "
            f"{', '.join(sorted(cfg_fields))}){hint} A key holding a layer config or None is "
            f"a glob, as in {{'layer1.*': {{...}}}}; {key!r} holds {rule!r}"
        )
        raise ValueError(msg)


def _normalise_rules(
    layer_type: str, cfg_cls: type[LayerConfig], value: Any
) -> dict[str, Any] | None:
    """Bring a field value into the canonical ``{glob: cfg-dict | None}`` form."""
    if value is None:
        return None
    if isinstance(value, LayerConfig):
        return {"*": value}
    if not isinstance(value, Mapping):
        msg = (
            f"{layer_type} must be a layer config, None, or {{glob: layer config | None}}, "
            f"got {type(value).__name__} {value!r}"
        )
        raise ValueError(msg)
    cfg_fields = set(cfg_cls.model_fields)
    keys = set(value)
    if keys and keys <= cfg_fields:
        # an unnested layer config: short for {"*": cfg}
        return {"*": dict(value)}
    _refuse_field_typos(layer_type, cfg_cls.__name__, cfg_fields, value)
    out: dict[str, Any] = {}
    for glob, rule in value.items():
        _check_glob(glob, layer_type)
        if glob in cfg_fields:
            msg = (
                f"{layer_type}: {glob!r} is a field of {cfg_cls.__name__}, not a glob; either "
                "give the whole layer config unnested or nest it under a glob: "
                f"{{'*': {{{glob!r}: ...}}}}"
            )
            raise ValueError(msg)
        if rule is not None and not isinstance(rule, (Mapping, LayerConfig)):
            msg = f"{layer_type}[{glob!r}] must be a layer config or None, got {rule!r}"
            raise ValueError(msg)
        out[glob] = rule
    return out


class ModeloptBaseRuleConfig(ModeloptBaseConfig):
    """A config with one glob-rule field per registered layer type (see module docstring).

    Subclasses declare the layer-type fields; ``rule_for`` resolves which rule wins for a module.

    Example (the last matching glob wins; ``None`` leaves the matched layers alone)::

        >>> cfg = FastNASConfig(**{"nn.Conv2d": {"*": {"channel_divisor": 8}, "head*": None}})
        >>> cfg.rule_for("nn.Conv2d", "layer1.conv").rule.channel_divisor
        8
        >>> cfg.rule_for("nn.Conv2d", "head.conv")
        RuleMatch(rule=None, pattern='head*')
    """

    #: field name -> layer type key ("nn_conv2d" -> "nn.Conv2d"), filled in by subclasses
    _layer_fields: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_layer_types(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known_aliases = {f.alias or n for n, f in cls.model_fields.items()}
            known = known_aliases | set(cls.model_fields)
            for key in data:
                if key not in known:
                    if isinstance(key, str) and key.startswith("nn."):
                        raise ValueError(unknown_layer_type_message(key))
                    msg = (
                        f"unknown config key {key!r}; {cls.__name__} takes the layer types "
                        f"{', '.join(sorted(known_aliases))}"
                    )
                    raise ValueError(msg)
        return data

    @classmethod
    def with_divisor(
        cls, divisor: int, rules: Mapping[str, Any] | None = None
    ) -> ModeloptBaseRuleConfig:
        """A config with one channel divisor for every layer type (the ``*_divisor`` field of
        each: convs' ``channel_divisor``, linears' and norms' ``feature_divisor``), so coupled
        layers such as a conv and its BatchNorm share it; ``rules`` (``{layer type: value}``, as
        in the constructor) replace a layer type's entry.

        Example::

            >>> cfg = FastNASConfig.with_divisor(8, {"nn.Linear": None})
            >>> cfg.rule_for("nn.BatchNorm2d", "bn1").rule.feature_divisor, cfg.rules("nn.Linear")
            (8, None)
        """
        data: dict[str, Any] = {}
        for layer_type in cls.layer_types():
            fields = [f for f in LAYER_TYPES[layer_type].model_fields if f.endswith("_divisor")]
            if fields:
                data[layer_type] = dict.fromkeys(fields, divisor)
        data.update(rules or {})
        return cls(**data)

    @classmethod
    def layer_types(cls) -> list[str]:
        """The layer-type keys this config has fields for, in declaration order."""
        return list(cls._layer_fields.values())

    def rules(self, layer_type: str) -> dict[str, LayerConfig | None] | None:
        """The canonical rules of ``layer_type``: ``{glob: LayerConfig | None}`` or ``None``."""
        field = self._field_for(layer_type)
        value: dict[str, LayerConfig | None] | None = getattr(self, field)
        return value

    def rule_for(self, layer_type: str, module_name: str) -> RuleMatch:
        """The rule that applies to module ``module_name`` of type ``layer_type``.

        Globs are tried in order; the last one that matches wins. No match means the layer is
        left alone (``RuleMatch(None, None)``).
        """
        rules = self.rules(layer_type)
        if rules is None:
            return RuleMatch(None, None)
        winner: RuleMatch = RuleMatch(None, None)
        for glob, rule in rules.items():
            if fnmatch.fnmatchcase(module_name, glob):
                winner = RuleMatch(rule, glob)
        return winner

    def _field_for(self, layer_type: str) -> str:
        for name, key in self._layer_fields.items():
            if key == layer_type:
                return name
        raise KeyError(unknown_layer_type_message(layer_type))

    def to_json(self, indent: int | None = 2) -> str:
        """The config as JSON text, keyed by alias (layer types such as ``"nn.Conv2d"``); ``indent``
        as in :func:`json.dumps`.
        """
        return json.dumps(self.model_dump(), indent=indent)


def _make_rule_validator(layer_type: str, cfg_cls: type[LayerConfig]) -> Any:

    def validate(value: Any) -> dict[str, LayerConfig | None] | None:
        canon = _normalise_rules(layer_type, cfg_cls, value)
        if canon is None:
            return None
        out: dict[str, LayerConfig | None] = {}
        for glob, rule in canon.items():
            if rule is None:
                out[glob] = None
            elif isinstance(rule, cfg_cls):
                out[glob] = rule
            else:
                data = rule.model_dump() if isinstance(rule, LayerConfig) else dict(rule)
                try:
                    out[glob] = cfg_cls(**data)
                except ValidationError as e:
                    first = e.errors()[0]
                    loc = ".".join(str(p) for p in first["loc"])
                    msg = (
                        f"{layer_type}[{glob!r}].{loc}: {first['msg']}"
                        f" (input {first.get('input')!r})"
                    )
                    raise ValueError(msg) from e
        return out

    return validate


def build_rule_config(
    name: str,
    doc: str,
    base: type[ModeloptBaseRuleConfig],
    layer_types: Mapping[str, type[LayerConfig]] | None = None,
    module: str = PUBLIC_MODULE,
) -> type:
    """Create a rule-config class with one field per layer type of ``layer_types`` (default:
    every registered one, :data:`LAYER_TYPES`, as of this call); an algorithm's config, e.g.
    :class:`nasviz.fastnas.FastNASConfig`, is built with it.
    """
    fields: dict[str, Any] = {}
    layer_fields: dict[str, str] = {}
    for layer_type, cfg_cls in dict(LAYER_TYPES if layer_types is None else layer_types).items():
        fname = layer_type.replace(".", "_").lower()
        layer_fields[fname] = layer_type
        ann = Annotated[
            dict[str, cfg_cls | None] | None,  # type: ignore[valid-type]
            BeforeValidator(_make_rule_validator(layer_type, cfg_cls)),
        ]
        fields[fname] = (
            ann,
            Field(
                default_factory=lambda c=cfg_cls: {"*": c()},
                alias=layer_type,
                description=f"Rules for {layer_type}: {cfg_cls.__name__} | None | "
                f"{{glob: {cfg_cls.__name__} | None}}",
            ),
        )
    cls = create_model(name, __base__=base, __doc__=doc, __module__=module, **fields)
    cls._layer_fields = layer_fields
    return cls
