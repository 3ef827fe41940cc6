"""Per-layer configs: the rule fields of one layer type, derived from its layer family.

A layer family declares its rule (:class:`~nasviz.dynamic.family.RuleSpec`: width field names,
kernel sizes, defaults) once on its dynamic class; :func:`derive_layer_config` builds the pydantic
config class from it (``DynamicConv2d`` -> ``DynamicConv2dConfig``), and :data:`LAYER_TYPES` is
the live ``{rule key: config class}`` view of every registered family. The derived classes are
public as ``nasviz.config.<Name>Config``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from math import lcm
from typing import Any, ClassVar

from pydantic import Field, create_model, field_validator

from nasviz.config.base import ModeloptBaseConfig
from nasviz.dynamic import DynamicModule, registered_layer_types
from nasviz.dynamic.family import DEFAULT_DIVISOR, DEFAULT_RATIOS, RuleSpec

__all__ = [
    "LAYER_TYPES",
    "PUBLIC_MODULE",
    "LayerConfig",
    "derive_layer_config",
    "layer_config_class",
    "unknown_layer_type_message",
]

#: the module the derived config classes say they belong to: the package, ``nasviz.config``,
#: whose ``__getattr__`` finds them by name (so they pickle and print under their public path)
PUBLIC_MODULE = __name__.rpartition(".")[0]


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


def derive_layer_config(family: type[DynamicModule]) -> type[LayerConfig]:
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
        __module__=PUBLIC_MODULE,
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
        return derive_layer_config(family)

    def __iter__(self) -> Iterator[str]:
        return iter(registered_layer_types())

    def __len__(self) -> int:
        return len(registered_layer_types())

    def __repr__(self) -> str:
        return f"LAYER_TYPES({', '.join(self)})"


#: The supported layer types (the 16 of the FastNAS reference first) with their per-layer config
#: classes, derived from the layer families of :mod:`nasviz.dynamic`.
LAYER_TYPES: Mapping[str, type[LayerConfig]] = _LayerTypes()


def layer_config_class(layer_type: str) -> type[LayerConfig]:
    """The per-layer config class of ``layer_type`` (``"nn.Conv2d"``); unknown keys are refused."""
    try:
        return LAYER_TYPES[layer_type]
    except KeyError:
        raise KeyError(unknown_layer_type_message(layer_type)) from None


def unknown_layer_type_message(key: str) -> str:
    """The error message for an unknown layer-type key, with the closest known ones."""
    close = difflib.get_close_matches(key, list(LAYER_TYPES), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown layer type {key!r}.{hint} Known layer types: {', '.join(LAYER_TYPES)}."
