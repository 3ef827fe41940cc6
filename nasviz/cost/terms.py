"""The compiled cost terms behind :class:`nasviz.cost.CostModel` (see :mod:`nasviz.cost.model`).

Every dynamic module whose dimensions are linear forms in the hparam values becomes product
terms over "size rows" (:class:`_Builder` -> :class:`_Compiled`); modules that are not are
*opaque* (memoised by the values of their hparams); sliced channel parameters and the FLOPs of
non-dynamic modules fitted as linear in the hparams (:func:`_fit_parents`) add terms too.
Split from ``nasviz/_cost.py`` to keep both files short.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from nasviz.cost.profile import exclusive_flops, param_count
from nasviz.dynamic.base import DynamicModule
from nasviz.dynamic.params import sliced_params
from nasviz.hparam import ConcatDim, DimSource, Hparam, RepeatDim

_FloatArray = npt.NDArray[np.float64]
_IntArray = npt.NDArray[np.int64]


@dataclass
class _Opaque:
    module: DynamicModule
    cols: tuple[int, ...]
    full_flops: int
    tied: frozenset[str]
    cache: dict[tuple[int, ...], tuple[int, int]] = field(default_factory=dict)


@dataclass
class _Compiled:
    """Cost terms of the compiled modules: ``value_t = coef_t * prod_j size[fac_tj]``."""

    row: _IntArray  # size row of each (row, col, weight) triplet
    col: _IntArray
    weight: _FloatArray
    n_rows: int
    coef: _FloatArray
    fac: _IntArray  # (terms, max factors), padded with the constant-1 row
    is_flops: _FloatArray  # 1.0 for FLOPs terms, 0.0 for params terms
    module: _IntArray  # index into the compiled module list


class _Builder:
    """Turns dynamic modules into linear size rows and product terms."""

    def __init__(self, col_of: dict[int, int], const_col: int) -> None:
        self.col_of = col_of
        self.const_col = const_col
        self.triplets: list[tuple[int, int, float]] = [(0, const_col, 1.0)]  # row 0 == 1
        self.n_rows = 1
        self.terms: list[tuple[int, float, list[int], bool]] = []

    def linear(self, src: DimSource) -> dict[int, float] | None:
        if isinstance(src, Hparam) and type(src).active_size is Hparam.active_size:
            return {self.col_of[id(src)]: 1.0}
        if type(src) is ConcatDim:
            out: dict[int, float] = {}
            for part in src.parts:
                form = self.linear(part)
                if form is None:
                    return None
                for c, w in form.items():
                    out[c] = out.get(c, 0.0) + w
            return out
        if type(src) is RepeatDim:
            form = self.linear(src.source)
            return None if form is None else {c: w * src.inner for c, w in form.items()}
        return None

    def add_module(self, index: int, m: DynamicModule, full_flops: int) -> bool:
        forms: dict[str, dict[int, float]] = {}
        for attr in m.dynamic_attrs:
            src = m.dim(attr)
            form = {self.const_col: float(m.original_size(attr))} if src is None else None
            if src is not None:
                form = self.linear(src)
            if form is None:
                return False
            forms[attr] = form
        rows: dict[str, int] = {}
        for attr, form in forms.items():
            rows[attr] = self.n_rows
            self.triplets.extend((self.n_rows, c, w) for c, w in form.items())
            self.n_rows += 1
        terms: list[tuple[int, float, list[int], bool]] = []
        w = getattr(m, "weight", None)
        dims = m.param_dims.get("weight")
        if isinstance(w, torch.Tensor) and dims is not None and w.numel():
            static = math.prod(s for d, s in enumerate(w.shape) if d not in dims)
            full = math.prod(w.shape)
            terms.append(
                (index, full_flops * static / full, [rows[a] for a in dims.values()], True)
            )
        else:
            terms.append((index, float(full_flops), [], True))
        for name, p in m.named_parameters(recurse=False):
            pdims = m.param_dims.get(name, {})
            static = math.prod(s for d, s in enumerate(p.shape) if d not in pdims)
            terms.append((index, float(static), [rows[a] for a in pdims.values()], False))
        self.terms.extend(terms)
        return True

    def add_params(self, index: int, owner: nn.Module) -> None:
        """Terms for the sliced channel parameters of an ordinary module (a layer scale, a class
        token); the caller no longer counts them as static.
        """
        for name, (dim, src) in sliced_params(owner).items():
            t = owner._parameters.get(name)
            if t is None:
                continue  # a buffer: not a parameter
            form = self.linear(src) or {self.const_col: float(src.full)}
            self.triplets.extend((self.n_rows, c, w) for c, w in form.items())
            self.terms.append((index, float(t.numel() // t.shape[dim]), [self.n_rows], False))
            self.n_rows += 1

    def add_linear_flops(self, index: int, const: float, form: dict[int, float]) -> None:
        """A FLOPs term ``const + sum(w * hparam value)`` (a fitted non-dynamic module)."""
        self.triplets.append((self.n_rows, self.const_col, const))
        self.triplets.extend((self.n_rows, c, w) for c, w in form.items())
        self.terms.append((index, 1.0, [self.n_rows], True))
        self.n_rows += 1

    def build(self) -> _Compiled:
        width = max((len(f) for _, _, f, _ in self.terms), default=0) or 1
        fac = np.zeros((len(self.terms), width), dtype=np.int64)
        for t, (_, _, factors, _) in enumerate(self.terms):
            fac[t, : len(factors)] = factors
        tri = np.array(self.triplets, dtype=np.float64).reshape(-1, 3)
        return _Compiled(
            row=tri[:, 0].astype(np.int64),
            col=tri[:, 1].astype(np.int64),
            weight=tri[:, 2].copy(),
            n_rows=self.n_rows,
            coef=np.array([c for _, c, _, _ in self.terms], dtype=np.float64),
            fac=fac,
            is_flops=np.array([float(f) for _, _, _, f in self.terms], dtype=np.float64),
            module=np.array([i for i, _, _, _ in self.terms], dtype=np.int64),
        )


def _fit_parents(
    model: nn.Module, dummy_input: Any, hps: list[Hparam], parents: list[tuple[nn.Module, int]]
) -> list[tuple[float, dict[int, float]] | None]:
    """For each non-dynamic module with FLOPs of its own: ``(constant, {hparam column: FLOPs per
    unit})`` if its FLOPs are linear in the hparams (``None`` = keep the full-size value).
    Sets hparams (every one at its original on return; the caller restores the subnet).
    """
    if not parents:
        return []
    slopes: list[dict[int, float]] = [{} for _ in parents]
    for j, hp in enumerate(hps):
        if not hp.is_configurable:
            continue
        hp.active = hp.min
        got = exclusive_flops(model, dummy_input)
        hp.active = hp.original
        for k, (m, full) in enumerate(parents):
            if got.get(id(m), 0) != full:
                slopes[k][j] = (full - got.get(id(m), 0)) / (hp.original - hp.min)
    if not any(slopes):
        return [None] * len(parents)
    ok = [bool(slope) for slope in slopes]
    # checked where it was not fitted: every hparam at its minimum (do the slopes add up?) and
    # at a middle choice (is it linear?)
    pick: Callable[[Hparam], int]
    for pick in (lambda hp: hp.min, lambda hp: hp.choices[len(hp.choices) // 2]):
        for hp in hps:
            hp.active = pick(hp)
        got = exclusive_flops(model, dummy_input)
        for k, ((m, full), slope) in enumerate(zip(parents, slopes)):
            predicted = full + sum(w * (hps[j].active - hps[j].original) for j, w in slope.items())
            ok[k] = ok[k] and round(predicted) == got.get(id(m), 0)
        for hp in hps:
            hp.active = hp.original
    return [
        (full - sum(w * hps[j].original for j, w in slope.items()), slope) if good else None
        for (_, full), slope, good in zip(parents, slopes, ok)
    ]


def _opaque(m: DynamicModule, flops: int, tied: frozenset[str], col_of: dict[int, int]) -> _Opaque:
    cols = tuple(dict.fromkeys(col_of[id(hp)] for _, hp in m.hparams()))
    return _Opaque(module=m, cols=cols, full_flops=flops, tied=tied)


def _compile(
    modules: list[tuple[DynamicModule, int, frozenset[str]]],
    col_of: dict[int, int],
    n_hparams: int,
    opaque: list[_Opaque],
    owners: Sequence[nn.Module] = (),
    fitted: Sequence[tuple[float, dict[int, float]]] = (),
) -> tuple[_Compiled, list[tuple[DynamicModule, int, frozenset[str]]]]:
    """Compile what can be compiled; the rest is appended to ``opaque``. ``owners`` are ordinary
    modules with sliced channel parameters (their terms come after the modules' indices).
    """
    builder = _Builder(col_of, n_hparams)
    kept: list[tuple[DynamicModule, int, frozenset[str]]] = []
    for m, flops, tied in modules:
        if builder.add_module(len(kept), m, flops):
            kept.append((m, flops, tied))
        else:
            opaque.append(_opaque(m, flops, tied, col_of))
    for k, owner in enumerate(owners):
        builder.add_params(len(kept) + k, owner)
    for k, (const, form) in enumerate(fitted):
        builder.add_linear_flops(len(kept) + len(owners) + k, const, form)
    return builder.build(), kept


def _opaque_cost(entry: _Opaque, v: _FloatArray, hps: list[Hparam]) -> tuple[int, int]:
    key = tuple(int(v[j]) for j in entry.cols)
    hit = entry.cache.get(key)
    if hit is None:
        touched = [hps[j] for j in entry.cols]
        saved = [hp.active for hp in touched]
        try:
            for hp, value in zip(touched, key):
                hp.active = value
            hit = (
                round(entry.full_flops * entry.module.flops_ratio()),
                param_count(entry.module, entry.tied),
            )
        finally:
            for hp, value in zip(touched, saved):
                hp.active = value
        entry.cache[key] = hit
    return hit
