"""Estimating a candidate subnet's FLOPs and parameters without a forward pass.

Public as :class:`nasviz.cost.CostModel` (also importable from :mod:`nasviz.profile`). Imports
point one way: :mod:`nasviz.cost.profile` (measuring) <- :mod:`nasviz.cost.terms` (compiling) <-
this module.

:meth:`CostModel.from_model` profiles the model once at full size (every hparam at its
original value) with :func:`nasviz.cost.profile.measure_modules`. From then on
:meth:`CostModel.estimate` prices a candidate ``{hparam name: value}`` in microseconds:

* a static module costs what it cost at full size;
* a dynamic module costs ``full FLOPs * flops_ratio()`` and ``active_param_count()``.

Every dynamic module whose dimensions are made of :class:`~nasviz.hparam.Hparam`,
:class:`~nasviz.hparam.ConcatDim` and :class:`~nasviz.hparam.RepeatDim` is first *compiled* with
the base-class formulas (``DynamicModule.flops_ratio``/``active_param_count``/``active_shape``):
every dimension's active size is a linear form in the hparam values and every cost term a
product of such sizes, so an estimate is one ``bincount`` and one ``prod`` over numpy arrays and
touches no model state. The compiled formula is then checked against the module's *own* methods
(which a twin may override) at probe subnets - everything full, everything at its minimum, and
each hparam through all its choices - and a module that disagrees anywhere (a depthwise or
grouped conv, a twin with its own formula, a module with tied parameters) is *opaque*: its cost
is memoised per combination of the values of the hparams it depends on, and a cache miss sets
those hparams briefly (restored in ``finally``) and calls the module's own methods.

For convolutions and linear layers the estimate equals the exact FlopCounterMode profile of the
exported subnet. FLOPs a *non-dynamic* module issues itself (the ``q @ k.T`` and ``attn @ v``
matmuls an attention block computes in its own ``forward``) are fitted as a linear function of
the hparams: one extra profile per configurable hparam at its minimum (only for models that have
such modules), checked against a profile with every hparam at its minimum; a module whose FLOPs
are not linear in the hparams keeps its full-size value (an over-estimate). The model's
structure (which hparams drive which dimension) must not change after ``from_model``; build a
new cost model after re-converting.

Example::

    >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> hp = Hparam([8, 16, 32], name="0.out_features")
    >>> DynamicLinear.convert(model[0]).set_dim("out_features", hp)
    >>> DynamicLinear.convert(model[2]).set_dim("in_features", hp)
    >>> cm = CostModel.from_model(model, torch.zeros(1, 16))
    >>> cm.estimate({"0.out_features": 16})  # 2 * (16*16 + 16*10) FLOPs, (16*16+16) + (16*10+10)
    (832, 442)
    >>> hp.active  # the model is untouched
    32
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
from torch import nn

from nasviz.cost.profile import Profile, format_flops, format_params, measure_modules, param_count
from nasviz.cost.terms import (
    _compile,
    _Compiled,
    _fit_parents,
    _FloatArray,
    _IntArray,
    _Opaque,
    _opaque,
    _opaque_cost,
)
from nasviz.dynamic.base import DynamicModule
from nasviz.dynamic.params import sliced_params
from nasviz.errors import HparamError
from nasviz.hparam import Hparam

__all__ = ["CostModel"]


class CostModel:
    """FLOPs/params of any subnet of a converted model, from one full-size profile.

    Use :meth:`from_model`. ``full`` is the full-size :class:`~nasviz.cost.Profile`;
    ``hparams`` maps names to the model's hparams; ``static_flops``/``static_params`` are what
    the non-dynamic modules contribute (fixed).

    Example (continuing the module's example)::

        >>> cm.full_flops, cm.full_params
        (1664, 874)
        >>> cm.estimate_min()  # every hparam at its smallest choice (8)
        (416, 226)
    """

    def __init__(
        self,
        full: Profile,
        hparams: list[Hparam],
        static: tuple[int, int],
        compiled: _Compiled,
        opaque: list[_Opaque],
    ) -> None:
        self.full = full
        self._hps = hparams
        self._col = {hp.name: i for i, hp in enumerate(hparams) if hp.name}
        self.static_flops, self.static_params = static
        self._compiled = compiled
        self._opaque = opaque

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: nn.Module, dummy_input: Any) -> CostModel:
        """Profile ``model`` once at full size (the active subnet is restored afterwards)."""
        hps: list[Hparam] = []
        col_of: dict[int, int] = {}
        for m in model.modules():
            if isinstance(m, DynamicModule):
                for _, hp in m.hparams():
                    if id(hp) not in col_of:
                        col_of[id(hp)] = len(hps)
                        hps.append(hp)
        named: dict[str, Hparam] = {}
        for hp in hps:
            if hp.name and named.setdefault(hp.name, hp) is not hp:
                msg = (
                    f"two different hparams are both named {hp.name!r}; hparam names must be "
                    "unique to address them in a config (rename one, e.g. after its module)"
                )
                raise HparamError(msg)
        saved = [hp.active for hp in hps]
        try:
            for hp in hps:
                hp.active = hp.original
            rows = measure_modules(model, dummy_input)
            full = Profile.from_rows(
                [(n, type(m).__name__, f, p) for n, m, f, p, _ in rows if f or p]
            )
            static_flops = static_params = 0
            candidates: list[tuple[DynamicModule, int, frozenset[str]]] = []
            opaque: list[_Opaque] = []
            owners: list[nn.Module] = []
            for _, m, flops, params, tied in rows:
                if not isinstance(m, DynamicModule):
                    static_flops += flops
                    static_params += params
                    sliced = sliced_params(m)
                    if sliced:  # its channel parameters are priced by the terms
                        owners.append(m)
                        static_params -= sum(
                            p.numel()
                            for n, p in m.named_parameters(recurse=False)
                            if n in sliced and n not in tied
                        )
                elif tied:
                    opaque.append(_opaque(m, flops, tied, col_of))
                else:
                    candidates.append((m, flops, tied))
            parents = [(m, f) for _, m, f, _, _ in rows if f and not isinstance(m, DynamicModule)]
            fitted = _fit_parents(model, dummy_input, hps, parents)
            static_flops -= sum(f for (_, f), fit in zip(parents, fitted) if fit is not None)
            fits = [fit for fit in fitted if fit is not None]
            table, kept = _compile(candidates, col_of, len(hps), opaque, owners, fits)
            self = cls(full, hps, (static_flops, static_params), table, opaque)
            bad = self._verify(kept, col_of)
            if bad:
                opaque.extend(_opaque(*kept[i], col_of) for i in sorted(bad))
                good = [k for i, k in enumerate(kept) if i not in bad]
                self._compiled, _ = _compile(good, col_of, len(hps), opaque, owners, fits)
        finally:
            for hp, value in zip(hps, saved):
                hp.active = value
        return self

    def _verify(
        self, kept: list[tuple[DynamicModule, int, frozenset[str]]], col_of: dict[int, int]
    ) -> set[int]:
        """Indices of compiled modules whose formula disagrees with their own methods.

        Probes: every hparam at its original, every hparam at its minimum, and each hparam
        through all its choices with the others at their originals. Changes ``active`` values;
        the caller restores them.
        """
        hps = self._hps
        users: dict[int, set[int]] = {}
        for i, (m, _, _) in enumerate(kept):
            for _, hp in m.hparams():
                users.setdefault(col_of[id(hp)], set()).add(i)
        bad: set[int] = set()

        def probe(check: Iterable[int]) -> None:
            flops_m, params_m = self._compiled_per_module(self._vector(None), len(kept))
            for i in check:
                m, f, t = kept[i]
                if flops_m[i] != round(f * m.flops_ratio()) or params_m[i] != param_count(m, t):
                    bad.add(i)

        for hp in hps:
            hp.active = hp.min
        probe(range(len(kept)))
        for hp in hps:
            hp.active = hp.original
        probe(range(len(kept)))
        for j, hp in enumerate(hps):
            for c in hp.choices[:-1]:
                hp.active = c
                probe(sorted(users.get(j, ())))
            hp.active = hp.original
        return bad

    # -- queries -------------------------------------------------------------------------------
    @property
    def hparams(self) -> dict[str, Hparam]:
        """``{name: Hparam}`` of every named hparam the cost depends on."""
        return {name: self._hps[i] for name, i in self._col.items()}

    @property
    def full_flops(self) -> int:
        """FLOPs of the full-size model on the dummy input (``full.flops``, from its profile)."""
        return self.full.flops

    @property
    def full_params(self) -> int:
        """Parameter count of the full-size model (``full.params``)."""
        return self.full.params

    def estimate(self, config: Mapping[str, int] | None = None) -> tuple[int, int]:
        """``(flops, params)`` of the subnet ``config`` (the active subnet when ``None``).

        Hparams missing from ``config`` keep their current active value. Unknown names and
        values outside an hparam's choices raise :class:`~nasviz.errors.HparamError`. The model
        is not run; opaque modules may set their hparams briefly on a cache miss.
        """
        return self._total(self._vector(config))

    def estimate_many(self, names: Sequence[str], values: Any) -> tuple[_IntArray, _IntArray]:
        """FLOPs and params of many subnets at once: row ``i`` of ``values`` (shape
        ``(n, len(names))``) gives the value of each of ``names``; hparams not named keep their
        active value. Equal to ``estimate`` row by row, in one matrix product (used to rank
        thousands of candidate subnets).
        """
        table = np.asarray(values, dtype=np.float64).reshape(-1, len(names))
        v = self._vector(None)
        rows = np.repeat(v[None, :], table.shape[0], axis=0)
        for j, name in enumerate(names):
            i = self._col.get(name)
            bad = None if i is None else set(np.unique(table[:, j])) - set(self._hps[i].choices)
            if i is None or bad:
                self._vector({name: int(sorted(bad)[0]) if bad else 0})  # raises the error
            rows[:, i] = table[:, j]
        c = self._compiled
        mix = np.zeros((len(v), c.n_rows))
        np.add.at(mix, (c.col, c.row), c.weight)
        sizes = rows @ mix
        vals = np.rint(c.coef * np.prod(sizes[:, c.fac], axis=2))
        flops_c = vals @ c.is_flops
        flops = self.static_flops + flops_c.astype(np.int64)
        params = self.static_params + (vals.sum(axis=1) - flops_c).astype(np.int64)
        for entry in self._opaque:
            extra = np.array([_opaque_cost(entry, r, self._hps) for r in rows], dtype=np.int64)
            flops += extra[:, 0]
            params += extra[:, 1]
        return flops, params

    def estimate_min(self) -> tuple[int, int]:
        """``(flops, params)`` of the smallest subnet (every hparam at its smallest choice)."""
        v = np.ones(len(self._hps) + 1)
        v[:-1] = [hp.min for hp in self._hps]
        return self._total(v)

    def __repr__(self) -> str:
        return (
            f"CostModel({len(self._hps)} hparams, full={format_flops(self.full_flops)}, "
            f"{format_params(self.full_params)}; compiled modules: "
            f"{len(set(self._compiled.module.tolist()))}, opaque: {len(self._opaque)})"
        )

    # -- internals -----------------------------------------------------------------------------
    def _vector(self, config: Mapping[str, int] | None) -> _FloatArray:
        hps = self._hps
        v = np.ones(len(hps) + 1)
        v[:-1] = [hp.active for hp in hps]
        if config:
            col = self._col
            for name, value in config.items():
                i = col.get(name)
                if i is None:
                    known = sorted(col)
                    more = f", ... ({len(known)} in all)" if len(known) > 8 else ""
                    msg = (
                        f"{name!r} is not an hparam of this model; known names: "
                        f"{', '.join(known[:8])}{more}"
                    )
                    raise HparamError(msg)
                if type(value) is bool or value not in hps[i].choices:
                    msg = (
                        f"{name}: {value!r} is not a valid choice; choose one of "
                        f"{list(hps[i].choices)}"
                    )
                    raise HparamError(msg)
                v[i] = value
        return v

    def _terms(self, v: _FloatArray) -> _FloatArray:
        c = self._compiled
        sizes = np.bincount(c.row, weights=c.weight * v[c.col], minlength=c.n_rows)
        return cast(_FloatArray, np.rint(c.coef * np.prod(sizes[c.fac], axis=1)))

    def _compiled_per_module(self, v: _FloatArray, n: int) -> tuple[_IntArray, _IntArray]:
        c = self._compiled
        vals = self._terms(v)
        flops = np.bincount(c.module, weights=vals * c.is_flops, minlength=n)
        params = np.bincount(c.module, weights=vals * (1.0 - c.is_flops), minlength=n)
        return flops.astype(np.int64), params.astype(np.int64)

    def _total(self, v: _FloatArray) -> tuple[int, int]:
        c = self._compiled
        vals = self._terms(v)
        flops_c = float(vals @ c.is_flops)
        flops = self.static_flops + int(flops_c)
        params = self.static_params + int(float(vals.sum()) - flops_c)
        for entry in self._opaque:
            f, p = _opaque_cost(entry, v, self._hps)
            flops += f
            params += p
        return flops, params
