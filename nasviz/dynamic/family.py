"""What a layer family declares about itself, once, beside its dynamic class.

A *layer family* is a torch layer type nasviz can prune (``nn.Conv2d``, ``nn.Linear``, ...). Its
dynamic class (:class:`~nasviz.dynamic.base.DynamicModule` subclass) declares every fact about it:

* ``layer_type`` - its rule key in a rule config (``"nn.Conv2d"``);
* ``rule`` - a :class:`RuleSpec`: which rule fields it takes and their defaults;
* ``dynamic_attrs`` - its roles: which attributes are widths it produces (``"out"``), widths it
  consumes (``"in"``) or kernel sizes (``"kernel"``);
* ``channel_axis`` / ``channel_pos_axis`` - which dimension of its input carries the channels
  (from the end, or from the front when that depends on the rank), and ``trace_kind`` - how a
  tracer propagates channels through it (:class:`LayerSpec`);
* ``param_dims`` and ``forward`` / ``export`` - how it slices and what plain layer it exports.

Everything else is derived from that: the per-layer config classes and ``LAYER_TYPES`` of
:mod:`nasviz.config`, the tracer's :func:`~nasviz.tracing.rules.layer_spec`. Adding a layer type
is one new file in :mod:`nasviz.dynamic` (imported by the package) plus its tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["DEFAULT_DIVISOR", "DEFAULT_RATIOS", "LayerSpec", "RuleSpec", "WidthRule"]

#: the FastNAS reference defaults: ratios 0.05 ... 1.0 in steps of 0.05, divisor 32
DEFAULT_RATIOS: tuple[float, ...] = tuple(i * 0.05 for i in range(1, 21))
DEFAULT_DIVISOR = 32


@dataclass(frozen=True)
class RuleSpec:
    """The rule fields of a layer family and their defaults.

    ``width`` names the two width fields: ``"channels"`` gives ``channels_ratio`` and
    ``channel_divisor`` (convolutions, GroupNorm), ``"features"`` gives ``features_ratio`` and
    ``feature_divisor`` (linears, most norms). ``kernel_size`` adds a ``kernel_size`` list (odd
    sizes a kernel may be centre-cropped to; default ``[]``).

    Example::

        >>> RuleSpec("channels", kernel_size=True).fields
        ('channels_ratio', 'channel_divisor', 'kernel_size')
    """

    width: Literal["channels", "features"] = "features"
    kernel_size: bool = False
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    divisor: int = DEFAULT_DIVISOR

    @property
    def ratio_field(self) -> str:
        """The ratio field's name: ``channels_ratio`` or ``features_ratio``."""
        return f"{self.width}_ratio"

    @property
    def divisor_field(self) -> str:
        """The divisor field's name: ``channel_divisor`` or ``feature_divisor``."""
        return f"{self.width[:-1]}_divisor"

    @property
    def fields(self) -> tuple[str, ...]:
        """The family's rule fields: ratio, divisor, then ``kernel_size`` if it takes one."""
        return (self.ratio_field, self.divisor_field) + (
            ("kernel_size",) if self.kernel_size else ()
        )


class WidthRule(Protocol):
    """What a dynamic layer reads from its rule (a per-layer config of :mod:`nasviz.config`)."""

    @property
    def ratios(self) -> list[float]:
        """Allowed widths as fractions of the original width, each in (0, 1]."""

    @property
    def divisor(self) -> int:
        """Every width but the original must be a multiple of this (1: any width)."""

    def choices_for(self, original: int, multiple_of: int = 1) -> list[int]:
        """The allowed widths for a dimension of size ``original``, sorted, the original included
        (all multiples of ``multiple_of`` too, e.g. a GroupNorm's group size).
        """


@dataclass(frozen=True)
class LayerSpec:
    """How a prunable layer maps tensor dimensions to its dynamic attributes (for a tracer).

    ``kind`` is ``"linear"``, ``"conv"``, ``"norm"`` or ``"attention"``. ``in_attr``/``out_attr``
    name the input and output widths (a norm has one attribute for both). The channel dimension
    of the input is ``axis`` (negative, from the end) when it does not depend on the rank, else
    ``pos_axis`` (from the front, e.g. GroupNorm's ``(N, C, *)``). ``groups`` is a conv's groups.
    ``inner`` names widths internal to the layer that no other layer shares (attention heads);
    ``shared`` names further inputs (by argument name) that carry the same channels as the first
    one (an attention's key and value when they share its ``embed_dim``).
    """

    kind: str
    in_attr: str
    out_attr: str
    axis: int | None
    pos_axis: int | None = None
    groups: int = 1
    inner: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
