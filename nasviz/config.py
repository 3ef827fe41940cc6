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

import difflib
import fnmatch
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from math import lcm
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from nasviz.dynamic import DynamicModule, registered_layer_types
from nasviz.dynamic.family import DEFAULT_DIVISOR, DEFAULT_RATIOS, RuleSpec

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


class ModeloptBaseConfig(BaseModel):
    """Base of every nasviz config: strict (unknown keys refused), validated on assignment.

    Round-trips through JSON (``model_dump_json`` / ``model_validate_json``) and publishes a JSON
    Schema (``model_json_schema``).

    Example (a per-layer config reads like a dict and refuses a bad value on assignment)::

        >>> rule = FastNASConfig().rule_for("nn.Linear", "fc1").rule
        >>> rule["feature_divisor"], rule.get("kernel_size", "n/a"), rule.keys()
        (32, 'n/a', ['features_ratio', 'feature_divisor'])
        >>> rule.feature_divisor = 0
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for DynamicLinearConfig
        ...
    """

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        validate_default=True,
        populate_by_name=True,
        serialize_by_alias=True,
    )

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style read by field name or alias."""
        try:
            return self[key]
        except KeyError:
            return default

    def __getitem__(self, key: str) -> Any:
        for name, field in type(self).model_fields.items():
            if key in (name, field.alias):
                return getattr(self, name)
        raise KeyError(key)

    def keys(self) -> list[str]:
        """The field keys as a dict has them: each field's alias where it has one (a rule config's
        layer types such as ``"nn.Conv2d"``), else its name.
        """
        return [field.alias or name for name, field in type(self).model_fields.items()]

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` pairs in :meth:`keys` order, as ``dict.items`` gives them."""
        for key in self.keys():
            yield key, self[key]


# --------------------------------------------------------------------------------------------
# Per-layer configs
# --------------------------------------------------------------------------------------------


def _check_ratios(value: list[float], field: str) -> list[float]:
    if not value:
        msg = f"{field} must list at least one ratio in (0, 1], got []; e.g. [0.5, 1.0]"
        raise ValueError(msg)
    for r in value:
        if isinstance(r, bool) or not isinstance(r, (int, float)):
            msg = f"{field} must hold numbers in (0, 1], got {r!r}; e.g. [0.5, 1.0]"
            raise ValueError(msg)
        if not 0.0 < float(r) <= 1.0:
            msg = (
                f"{field} must hold ratios in (0, 1], got {r!r}; use a fraction of the original "
                "width such as 0.25 (1.0 keeps the full width)"
            )
            raise ValueError(msg)
    return [float(r) for r in value]


def _check_divisor(value: int, field: str) -> int:
    if value < 1:
        msg = f"{field} must be an integer >= 1, got {value!r}; use 1 to allow any width"
        raise ValueError(msg)
    return value


class LayerConfig(ModeloptBaseConfig):
    """Common base of the per-layer configs. Subclasses declare their fields."""

    #: name of the ratio field and of the divisor field (the two families spell them differently)
    ratio_field: ClassVar[str] = "channels_ratio"
    divisor_field: ClassVar[str] = "channel_divisor"

    @property
    def ratios(self) -> list[float]:
        """This rule's width ratios, read from the family's ratio field (``channels_ratio`` or
        ``features_ratio``).
        """
        return list(getattr(self, self.ratio_field))

    @property
    def divisor(self) -> int:
        """This rule's divisor, read from the family's divisor field (``channel_divisor`` or
        ``feature_divisor``).
        """
        return int(getattr(self, self.divisor_field))

    def choices_for(self, original: int, multiple_of: int = 1) -> list[int]:
        """Widths this rule allows for a dimension of size ``original``.

        ``ratio * original`` rounded to a multiple of the divisor (and of ``multiple_of``, e.g.
        the group size of a GroupNorm), never 0, never above the original; the original is
        always kept.
        """
        step = lcm(self.divisor, multiple_of)
        out = {original}
        for r in self.ratios:
            c = round(r * original / step) * step
            c = max(c, step)
            if c < original:
                out.add(c)
        if multiple_of > 1:
            out = {c for c in out if c % multiple_of == 0 or c == original}
        return sorted(out)


class _ChannelsRule(LayerConfig):
    channels_ratio: list[float] = Field(default_factory=lambda: list(DEFAULT_RATIOS))
    channel_divisor: int = DEFAULT_DIVISOR

    @field_validator("channels_ratio")
    @classmethod
    def _v_ratio(cls, v: list[float]) -> list[float]:
        return _check_ratios(v, "channels_ratio")

    @field_validator("channel_divisor")
    @classmethod
    def _v_div(cls, v: int) -> int:
        return _check_divisor(v, "channel_divisor")


class _FeaturesRule(LayerConfig):
    ratio_field: ClassVar[str] = "features_ratio"
    divisor_field: ClassVar[str] = "feature_divisor"

    features_ratio: list[float] = Field(default_factory=lambda: list(DEFAULT_RATIOS))
    feature_divisor: int = DEFAULT_DIVISOR

    @field_validator("features_ratio")
    @classmethod
    def _v_ratio(cls, v: list[float]) -> list[float]:
        return _check_ratios(v, "features_ratio")

    @field_validator("feature_divisor")
    @classmethod
    def _v_div(cls, v: int) -> int:
        return _check_divisor(v, "feature_divisor")


def _check_kernel(v: list[int]) -> list[int]:
    for k in v:
        if k < 1 or k % 2 == 0:
            msg = (
                f"kernel_size entries must be odd positive integers, got {k!r}; kernels are "
                "centre-cropped, so use e.g. [1, 3, 5] (or [] to keep the kernel size fixed)"
            )
            raise ValueError(msg)
    return sorted(set(v))


class _ChannelsKernelRule(_ChannelsRule):
    kernel_size: list[int] = Field(default_factory=list)

    @field_validator("kernel_size")
    @classmethod
    def _v_kernel(cls, v: list[int]) -> list[int]:
        return _check_kernel(v)


class _FeaturesKernelRule(_FeaturesRule):
    kernel_size: list[int] = Field(default_factory=list)

    @field_validator("kernel_size")
    @classmethod
    def _v_kernel(cls, v: list[int]) -> list[int]:
        return _check_kernel(v)


_RULE_BASES: dict[tuple[str, bool], type[LayerConfig]] = {
    ("channels", False): _ChannelsRule,
    ("channels", True): _ChannelsKernelRule,
    ("features", False): _FeaturesRule,
    ("features", True): _FeaturesKernelRule,
}
#: dynamic class -> its derived per-layer config class
_DERIVED: dict[type[DynamicModule], type[LayerConfig]] = {}


def _derive_layer_config(family: type[DynamicModule]) -> type[LayerConfig]:
    """The per-layer config class of a layer family, from its declared :class:`RuleSpec`
    (``DynamicConv2d`` -> ``DynamicConv2dConfig``).
    """
    cls = _DERIVED.get(family)
    if cls is not None:
        return cls
    spec: RuleSpec = family.rule
    base = _RULE_BASES[(spec.width, spec.kernel_size)]
    overrides: dict[str, Any] = {}
    if spec.ratios != DEFAULT_RATIOS:
        overrides[spec.ratio_field] = (
            list[float],
            Field(default_factory=lambda: list(spec.ratios)),
        )
    if spec.divisor != DEFAULT_DIVISOR:
        overrides[spec.divisor_field] = (int, spec.divisor)
    cls = create_model(
        f"{family.__name__}Config",
        __base__=base,
        __doc__=f"Rule for ``{family.layer_type}``: {', '.join(f'``{f}``' for f in spec.fields)} "
        f"(derived from :class:`{family.__module__}.{family.__name__}`).",
        __module__=__name__,
        **overrides,
    )
    _DERIVED[family] = cls
    return cls


class _LayerTypes(Mapping[str, type[LayerConfig]]):
    """``{rule key: per-layer config class}`` of every registered layer family, in registration
    order; a live view, so a family registered later (a plugin, a test) shows up too.
    """

    def __getitem__(self, key: str) -> type[LayerConfig]:
        family = registered_layer_types().get(key)
        if family is None:
            raise KeyError(key)
        return _derive_layer_config(family)

    def __iter__(self) -> Iterator[str]:
        return iter(registered_layer_types())

    def __len__(self) -> int:
        return len(registered_layer_types())

    def __repr__(self) -> str:
        return f"LAYER_TYPES({', '.join(self)})"


#: The supported layer types (the 16 of the FastNAS reference first) with their per-layer config
#: classes, derived from the layer families of :mod:`nasviz.dynamic`.
LAYER_TYPES: Mapping[str, type[LayerConfig]] = _LayerTypes()


def __getattr__(name: str) -> type[LayerConfig]:
    """The derived per-layer config classes by name (``nasviz.config.DynamicConv2dConfig``)."""
    for family in registered_layer_types().values():
        if f"{family.__name__}Config" == name:
            return _derive_layer_config(family)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def layer_config_class(layer_type: str) -> type[LayerConfig]:
    """The per-layer config class of ``layer_type`` (``"nn.Conv2d"``); unknown keys are refused."""
    try:
        return LAYER_TYPES[layer_type]
    except KeyError:
        raise KeyError(_unknown_layer_type_message(layer_type)) from None


def _unknown_layer_type_message(key: str) -> str:
    close = difflib.get_close_matches(key, list(LAYER_TYPES), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown layer type {key!r}.{hint} Known layer types: {', '.join(LAYER_TYPES)}."


# --------------------------------------------------------------------------------------------
# Rule configs
# --------------------------------------------------------------------------------------------


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
                        raise ValueError(_unknown_layer_type_message(key))
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
        raise KeyError(_unknown_layer_type_message(layer_type))

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
    module: str = __name__,
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


class ExportConfig(ModeloptBaseConfig):
    """Config of the ``"export"`` mode (no options: it freezes the active subnet)."""

    strict: bool = Field(
        default=True,
        description="Refuse to export a model that has no searchable layers.",
    )
