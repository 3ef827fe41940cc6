"""Constraints on a subnet's cost: upper bounds on its FLOPs, parameters and/or latency.

A search is asked for the best subnet with, e.g., ``{"flops": "60%", "params": 3e6}``. Each
value is either

* *absolute*: a positive number (``2_500_000``, ``2.5e6``) or a string with an optional SI suffix
  (``"2.5e6"``, ``"500k"``, ``"3M"``, ``"1.2G"``, ``"1T"``), or
* *relative*: a percentage of the full model (``"60%"``, in ``(0%, 100%]``).

A ``latency`` limit is a time with a unit (``"2.5ms"``, ``"800us"``, ``"0.01s"``) or a percentage
of the full model's latency, measured on the model's device (see :mod:`nasviz.cost.latency`);
its values are in seconds.

Relative limits become absolute with :meth:`Constraints.resolve` (given the full model's FLOPs
and params; it records them on the object and returns ``{key: absolute limit}``). An absolute
limit under 1% of the full model is refused there as a forgotten ``%`` (``"60"`` is 60 FLOPs);
a limit that small is written as a percentage (``"0.5%"``). Bad input
raises :class:`~nasviz.errors.ConstraintError` naming the key, the value and the fix;
:meth:`Constraints.check_reachable` refuses, before any scoring, limits that even the smallest
subnet exceeds.

Example::

    >>> c = Constraints({"flops": "60%", "params": "3M"})
    >>> c.resolve(full_flops=2e6, full_params=5e6)
    {'flops': 1200000.0, 'params': 3000000.0}
    >>> c
    Constraints(flops <= 60% (1.20 MFLOPs), params <= 3.00M params)
    >>> c.check(1.1e6, 2.9e6)
    True
    >>> c.margins(1.5e6, 2.9e6)["flops"]  # negative: over the limit by 25%
    -0.25
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from numbers import Real
from typing import cast

import pandas as pd

from nasviz.cost import format_flops, format_params
from nasviz.cost.latency import LATENCY_FORMS, format_latency, parse_duration
from nasviz.errors import ConstraintError

__all__ = ["CONSTRAINT_KEYS", "Constraints", "Limit"]

#: The quantities a constraint can bound.
CONSTRAINT_KEYS = ("flops", "params", "latency")

_NUMBER = r"([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"
_ABSOLUTE = re.compile(rf"^{_NUMBER}\s*([kKmMgGtT]?)$")
_PERCENT = re.compile(rf"^{_NUMBER}\s*%$")
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_HOW = (
    "write an absolute number (2.5e6, '500k', '3M', '1.2G') or a percentage of the full model "
    "('60%')"
)


#: an absolute limit under this fraction of the full model is taken for a missing '%'
_PLAUSIBLE = 0.01


def _implausible(lim: Limit, full: float) -> str:
    unit = "FLOPs" if lim.key == "flops" else "params"
    meant = f"for {lim.value:g}% of the model write '{lim.value:g}%'; " if lim.value <= 100 else ""
    return (
        f"constraints[{lim.key!r}] = {lim.spec!r} is {lim.value:g} {unit}, under 1% of the full "
        f"model ({_fmt(lim.key, full)}): {meant}a limit this small is given as a percentage "
        f"('{100 * lim.value / full:.2g}%')"
    )


def _fmt(key: str, value: float) -> str:
    if key == "latency":
        return format_latency(value)
    return format_flops(value) if key == "flops" else format_params(value)


def _fmt_pct(value: float) -> str:
    return f"{value:.0f}%" if value >= 10 else f"{value:.2g}%"


@dataclass(frozen=True)
class Limit:
    """One bound ``key <= ...``: an absolute number, or a percentage of the full model.

    ``value`` is the absolute limit, or the percentage (``60.0`` for ``"60%"``) when
    ``relative``; ``spec`` is the value as the user gave it; ``absolute`` is the limit in
    FLOPs/params once known (``None`` for an unresolved percentage).
    """

    key: str
    value: float
    relative: bool
    spec: str | float
    absolute: float | None

    def __str__(self) -> str:
        if not self.relative:
            return f"{self.key} <= {_fmt(self.key, self.value)}"
        shown = f"{self.value:g}%"
        if self.absolute is None:
            return f"{self.key} <= {shown}"
        return f"{self.key} <= {shown} ({_fmt(self.key, self.absolute)})"


def _parse(key: object, value: object) -> Limit:
    if key not in CONSTRAINT_KEYS:
        lower = str(key).lower()
        hint = f" (did you mean {lower!r}?)" if lower in CONSTRAINT_KEYS else ""
        msg = (
            f"unknown constraint {key!r} = {value!r}{hint}: nasviz can bound 'flops', "
            "'params' and 'latency'; rename or remove it"
        )
        raise ConstraintError(msg)
    where = f"constraints[{key!r}] = {value!r}"
    name = str(key)
    if key == "latency":
        return _parse_latency(where, value)
    if isinstance(value, str):
        text = value.strip()
        pct = _PERCENT.match(text)
        if pct:
            number = float(pct.group(1))
            if not 0 < number <= 100:
                msg = (
                    f"{where} is out of range: a percentage of the full model must be above 0% "
                    "and at most 100%; write e.g. '60%', or an absolute number"
                )
                raise ConstraintError(msg)
            return Limit(name, number, True, value, None)
        absolute = _ABSOLUTE.match(text)
        if not absolute:
            msg = f"{where} is not a number: {_HOW}"
            raise ConstraintError(msg)
        number = float(absolute.group(1)) * _SUFFIX[absolute.group(2).lower()]
    elif isinstance(value, Real) and not isinstance(value, bool):
        number = float(value)
    else:
        msg = f"{where} has type {type(value).__name__}: {_HOW}"
        raise ConstraintError(msg)
    if not math.isfinite(number) or number <= 0:
        msg = f"{where} must be a positive, finite limit: {_HOW}"
        raise ConstraintError(msg)
    if number < 1:
        msg = (
            f"{where} is below one {'FLOP' if key == 'flops' else 'parameter'}; for a fraction "
            f"of the full model write a percentage, e.g. '{number * 100:g}%'"
        )
        raise ConstraintError(msg)
    spec = value if isinstance(value, str) else number
    return Limit(name, number, False, spec, number)


def _parse_latency(where: str, value: object) -> Limit:
    text = value.strip() if isinstance(value, str) else None
    pct = None if text is None else _PERCENT.match(text)
    if pct:
        number = float(pct.group(1))
        if not 0 < number <= 100:
            msg = (
                f"{where} is out of range: a percentage of the full model must be above 0% "
                f"and at most 100%; {LATENCY_FORMS}"
            )
            raise ConstraintError(msg)
        return Limit("latency", number, True, str(value), None)
    seconds = None if text is None else parse_duration(text)
    if seconds is None:
        msg = f"{where} is not a latency: {LATENCY_FORMS}"
        raise ConstraintError(msg)
    if not math.isfinite(seconds) or seconds <= 0:
        msg = f"{where} must be a positive, finite time: {LATENCY_FORMS}"
        raise ConstraintError(msg)
    return Limit("latency", seconds, False, str(value), seconds)


class Constraints:
    """Upper bounds on a subnet's ``flops``, ``params`` and/or ``latency`` (seconds).

    Args:
        spec: ``{"flops": ..., "params": ...}`` (at least one key), or another ``Constraints``.

    Example::

        >>> c = Constraints({"flops": "60%"})
        >>> c.resolve(full_flops=2e6, full_params=5e6)
        {'flops': 1200000.0}
        >>> c.check_reachable(min_flops=1.5e6, min_params=1e6)
        Traceback (most recent call last):
        ...
        nasviz.errors.ConstraintError: flops <= 60% (1.20 MFLOPs) is unreachable: ...
    """

    def __init__(self, spec: Mapping[str, object] | Constraints) -> None:
        if isinstance(spec, Constraints):
            self._limits: dict[str, Limit] = dict(spec._limits)
            return
        if not isinstance(spec, Mapping):
            msg = (
                f"constraints must be a dict such as {{'flops': '60%'}}, got "
                f"{type(spec).__name__} {spec!r}"
            )
            raise ConstraintError(msg)
        if not spec:
            msg = (
                "constraints = {} bounds nothing: give 'flops' and/or 'params', "
                "e.g. {'flops': '60%'}"
            )
            raise ConstraintError(msg)
        self._limits = {}
        for key, value in spec.items():
            limit = _parse(key, value)
            self._limits[limit.key] = limit

    # -- views ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Limit]:
        return iter(self._limits.values())

    def __len__(self) -> int:
        return len(self._limits)

    def __contains__(self, key: object) -> bool:
        return key in self._limits

    def __getitem__(self, key: str) -> Limit:
        return self._limits[key]

    @property
    def is_resolved(self) -> bool:
        """Whether every limit is absolute (no percentage awaits the full model's size)."""
        return all(lim.absolute is not None for lim in self)

    @property
    def limits(self) -> dict[str, float]:
        """``{key: absolute limit}``; percentages must be resolved first."""
        return {lim.key: self._absolute(lim) for lim in self}

    def to_dict(self) -> dict[str, str | float]:
        """The spec as given (JSON-friendly; ``Constraints(c.to_dict())`` rebuilds it)."""
        return {lim.key: lim.spec for lim in self}

    def __repr__(self) -> str:
        return f"Constraints({', '.join(str(lim) for lim in self)})"

    # -- resolution and checks -----------------------------------------------------------------
    def resolve(
        self, full_flops: float, full_params: float, full_latency: float | None = None
    ) -> dict[str, float]:
        """Turn percentages into absolute limits for a full model of this size (and latency,
        in seconds, needed for a relative latency limit).

        Records the limits on this object (so :meth:`check` and friends work afterwards; a
        second call re-resolves) and returns them as ``{key: absolute limit}``.
        """
        full = {"flops": float(full_flops), "params": float(full_params)}
        full["latency"] = math.nan if full_latency is None else float(full_latency)
        resolved = {}
        for lim in self:
            if lim.relative and full_latency is None and lim.key == "latency":
                msg = (
                    f"cannot resolve constraints['latency'] = {lim.spec!r}: it is relative to "
                    "the full model's latency; pass full_latency (seconds, measured with "
                    "nasviz.cost.latency.measure_latency)"
                )
                raise ConstraintError(msg)
            if lim.relative:
                if not math.isfinite(full[lim.key]) or full[lim.key] <= 0:
                    msg = (
                        f"cannot resolve constraints[{lim.key!r}] = {lim.spec!r}: the full model "
                        f"has {full[lim.key]:g} {lim.key}; give an absolute limit instead"
                    )
                    raise ConstraintError(msg)
                lim = replace(lim, absolute=lim.value / 100 * full[lim.key])
            elif math.isfinite(full[lim.key]) and lim.value < _PLAUSIBLE * full[lim.key]:
                raise ConstraintError(_implausible(lim, full[lim.key]))
            resolved[lim.key] = lim
        self._limits = resolved
        return self.limits

    def _absolute(self, lim: Limit) -> float:
        if lim.absolute is None:
            msg = (
                f"constraints[{lim.key!r}] = {lim.spec!r} is relative to the full model: call "
                "resolve(full_flops, full_params) first"
            )
            raise ConstraintError(msg)
        return lim.absolute

    def _values(self, flops: float, params: float, latency: float | None) -> dict[str, float]:
        if latency is None and "latency" in self:
            msg = (
                f"{self['latency']} needs the subnet's latency: pass latency= (seconds, "
                "measured or predicted, see nasviz.cost.latency)"
            )
            raise ConstraintError(msg)
        values = {"flops": float(flops), "params": float(params)}
        if latency is not None:
            values["latency"] = float(latency)
        return values

    def margins(
        self, flops: float, params: float, latency: float | None = None
    ) -> dict[str, float]:
        """``{key: (limit - value) / limit}``: the headroom (>= 0 holds, < 0 is over)."""
        values = self._values(flops, params, latency)
        out = {}
        for lim in self:
            limit = self._absolute(lim)
            out[lim.key] = (limit - values[lim.key]) / limit
        return out

    def check(self, flops: float, params: float, latency: float | None = None) -> bool:
        """Whether a subnet of this size (and latency, in seconds) satisfies every limit."""
        return all(m >= 0 for m in self.margins(flops, params, latency).values())

    def check_reachable(
        self, min_flops: float, min_params: float, min_latency: float | None = None
    ) -> None:
        """Raise :class:`ConstraintError` if even the smallest subnet breaks a limit."""
        values = self._values(min_flops, min_params, min_latency)
        problems = []
        for lim in self:
            limit = self._absolute(lim)
            value = values[lim.key]
            if value > limit:
                over = _fmt_pct(100 * (value - limit) / limit)
                problems.append(
                    f"{lim} is unreachable: the smallest subnet has {_fmt(lim.key, value)} "
                    f"({over} over)"
                )
        if problems:
            raise ConstraintError(
                "; ".join(problems) + "; lower the divisor or widen the ratios, or relax the "
                "constraint"
            )

    def describe(
        self,
        flops: float | None = None,
        params: float | None = None,
        latency: float | None = None,
    ) -> pd.DataFrame:
        """One row per limit: ``constraint``, ``spec``, ``limit`` (NaN if unresolved) and
        ``limit_text``; given a subnet's size, also ``value``, ``margin`` and ``ok``.
        """
        values = {"flops": flops, "params": params, "latency": latency}
        rows = []
        for lim in self:
            row: dict[str, object] = {
                "constraint": lim.key,
                "spec": str(lim.spec) if lim.relative else _fmt(lim.key, lim.value),
                "limit": math.nan if lim.absolute is None else lim.absolute,
                "limit_text": "" if lim.absolute is None else _fmt(lim.key, lim.absolute),
            }
            if flops is not None or params is not None or latency is not None:
                value = values[lim.key]
                ok = lim.absolute is not None and value is not None
                row["value"] = math.nan if value is None else float(value)
                row["margin"] = (
                    (lim.absolute - value) / lim.absolute  # type: ignore[operator]
                    if ok
                    else math.nan
                )
                row["ok"] = bool(ok and row["margin"] >= 0)  # type: ignore[operator]
            rows.append(row)
        return cast(pd.DataFrame, pd.DataFrame(rows))
