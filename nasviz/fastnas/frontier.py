"""Deciding from one sensitivity map: the Pareto front, a pinned search, the choice as code.

* :func:`pareto_front`: every candidate subnet (the whole grid of choices when it is small
  enough, a seeded sample plus the searcher's path otherwise) priced by a pluggable cost (a
  :class:`~nasviz.cost.CostModel` - FLOPs or params - or any callable over the same
  ``(names, values)`` table, such as a latency model) against its predicted drop
  (:func:`~nasviz.fastnas.sensmap.predict_drop`, the additivity assumption), reduced to the
  non-dominated points: no other candidate is at most as costly *and* predicted to drop at most
  as much, with one of the two strictly less. Pinned groups stay at their pins.
* :func:`search_with_pins`: FastNAS's binary search with some groups fixed at a width, reusing a
  sensitivity map when given one (then only the final candidates are scored).
* :func:`config_as_code`: a subnet as a Python cell: ``nv.select(model, {...})`` and the
  ``FastNASConfig`` rules that confine a new search to it (each group at its chosen width or its
  full width, which a rule always keeps). Executing the cell reproduces the selection.

Example::

    >>> cm = nv.search_space(model).cost_model(x)
    >>> front = pareto_front(state["sensitivity_map"], nv.search_space(model).hparams, cm)
    >>> front[["cost", "drop"]].is_monotonic_increasing.all()
    >>> print(config_as_code(model))
"""

from __future__ import annotations

import itertools
import pprint
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, cast

import numpy as np
import pandas as pd
from torch import nn

from nasviz.dynamic.base import DynamicModule
from nasviz.errors import HparamError, NasvizError
from nasviz.fastnas.config import FastNASConfig
from nasviz.fastnas.searcher import BinarySearcher
from nasviz.fastnas.sensmap import (
    Choices,
    SensitivityMap,
    check_pins,
    choices_of,
    config_at_drop,
    drop_levels,
    monotone_map,
)
from nasviz.space import get_subnet_config, search_space
from nasviz.state import modelopt_state

__all__ = ["config_as_code", "pareto_front", "search_with_pins"]

CostFn = Callable[[Sequence[str], np.ndarray], Any]


class _EstimatesMany(Protocol):
    def estimate_many(self, names: Sequence[str], values: Any) -> tuple[Any, Any]: ...


def _candidates(
    choices: dict[str, list[int]],
    smap: dict[str, dict[int, float]],
    pins: dict[str, int],
    max_candidates: int,
    seed: int,
) -> tuple[np.ndarray, bool]:
    """The candidate table (rows = subnets, columns = ``choices``' order) and whether it is the
    whole grid.
    """
    names = list(choices)
    axes = [[pins[n]] if n in pins else choices[n] for n in names]
    size = int(np.prod([len(a) for a in axes], dtype=np.float64))
    if size <= max_candidates:
        return np.array(list(itertools.product(*axes)), dtype=np.int64).reshape(
            -1, len(names)
        ), True
    rng = np.random.default_rng(seed)
    sample = np.stack([rng.choice(np.array(a), size=max_candidates) for a in axes], axis=1)
    path = [config_at_drop(smap, choices, lv, pins) for lv in drop_levels(smap)]
    extra = np.array([[c[n] for n in names] for c in path], dtype=np.int64)
    ends = np.array([[min(a) for a in axes], [max(a) for a in axes]], dtype=np.int64)
    return np.unique(np.concatenate([sample, extra, ends]), axis=0), False


def _drops(
    smap: dict[str, dict[int, float]], choices: dict[str, list[int]], grid: np.ndarray
) -> np.ndarray:
    """Predicted drop of every row (``inf`` where a reduced width has no entry in the map)."""
    total = np.zeros(len(grid))
    for j, (name, cs) in enumerate(choices.items()):
        drops = smap.get(name, {})
        original = max(cs)
        lut = np.array([0.0 if c == original else drops.get(c, np.inf) for c in cs])
        total += lut[np.searchsorted(np.array(cs), grid[:, j])]
    return total


def pareto_front(
    sensitivity_map: SensitivityMap,
    hparams: Choices,
    cost: _EstimatesMany | CostFn,
    *,
    axis: Literal["flops", "params"] = "flops",
    pins: Mapping[str, int] | None = None,
    monotone: bool = False,
    max_candidates: int = 50_000,
    seed: int = 0,
) -> pd.DataFrame:
    """The non-dominated subnets: cost against predicted drop (see the module docstring).

    ``cost`` is a :class:`~nasviz.cost.CostModel` (``axis`` picks FLOPs or params; both become
    columns) or a callable ``f(names, values) -> costs`` over the table of candidates (``values``
    has shape ``(n, len(names))``; it may also return ``(flops, params)`` like
    ``CostModel.estimate_many``, then ``axis`` picks). Returns one row per front point, cheapest
    first: ``cost``, ``drop`` (predicted), ``flops``/``params`` when known, one column per group
    and ``config`` (a dict). ``df.attrs`` holds ``candidates`` (how many were priced) and
    ``exhaustive`` (whether that was every subnet). Pins are checked like the searcher's.
    """
    choices = choices_of(hparams)
    pinned = check_pins(pins, hparams)
    if max_candidates < 1:
        msg = f"max_candidates={max_candidates!r}: pass a positive number, e.g. 50000"
        raise NasvizError(msg)
    if axis not in ("flops", "params"):
        msg = f"axis={axis!r}: use 'flops' or 'params'"
        raise NasvizError(msg)
    smap = {n: {int(c): float(d) for c, d in v.items()} for n, v in sensitivity_map.items()}
    if monotone:
        smap = monotone_map(smap)
    names = list(choices)
    grid, exhaustive = _candidates(choices, smap, pinned, max_candidates, seed)
    drop = _drops(smap, choices, grid)
    priced = (
        cost.estimate_many(names, grid) if hasattr(cost, "estimate_many") else cost(names, grid)
    )
    columns: dict[str, np.ndarray] = {}
    if isinstance(priced, tuple):
        columns = {"flops": np.asarray(priced[0]), "params": np.asarray(priced[1])}
        value = columns[axis]
    else:
        value = np.asarray(priced, dtype=np.float64).reshape(-1)
    if value.shape != (len(grid),):
        msg = (
            f"the cost function returned {value.shape[0]} values for {len(grid)} candidates; "
            "return one cost per row of values"
        )
        raise NasvizError(msg)
    ok = np.isfinite(drop)
    order = np.lexsort((drop, value))
    keep: list[int] = []
    best = np.inf
    for i in order:
        if ok[i] and drop[i] < best:
            keep.append(int(i))
            best = drop[i]
    rows = grid[keep]
    df = pd.DataFrame({"cost": value[keep], "drop": drop[keep]})
    for key, col in columns.items():
        df[key] = col[keep]
    for j, name in enumerate(names):
        df[name] = rows[:, j]
    df["config"] = [{n: int(v) for n, v in zip(names, r)} for r in rows]
    df.attrs.update(candidates=len(grid), exhaustive=exhaustive)
    return cast(pd.DataFrame, df)


def search_with_pins(
    model: nn.Module,
    constraints: Mapping[str, Any],
    dummy_input: Any,
    pins: Mapping[str, int],
    *,
    sensitivity_map: SensitivityMap | None = None,
    original_score: float | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """FastNAS's binary search with ``pins`` fixed (``BinarySearcher`` with ``config["pins"]``).

    With ``sensitivity_map`` (and ``original_score``) the map is reused, not scored again; the
    final candidates are still scored with ``config``'s ``score_func``. Returns the search state;
    the model is left at the chosen subnet.
    """
    cfg = {**dict(config or {}), "pins": dict(pins)}
    if sensitivity_map is not None:
        cfg["sensitivity_map"] = {k: dict(v) for k, v in sensitivity_map.items()}
    if original_score is not None:
        cfg["original_score"] = float(original_score)
    return BinarySearcher().search(model, dict(constraints), dummy_input=dummy_input, config=cfg)


def _used_config(model: nn.Module) -> Any:
    """The ``FastNASConfig`` the model was converted with (the defaults if none is recorded)."""
    for mode, entry in modelopt_state(model)["modes"]:
        if mode == "fastnas":
            return FastNASConfig(**entry["config"])
    return FastNASConfig()


def config_as_code(
    model_or_config: nn.Module | Mapping[str, int],
    *,
    subnet: Mapping[str, int] | None = None,
    model_name: str = "model",
) -> str:
    """A Python cell that selects this subnet (``nv.select``) and, given the model, builds the
    ``FastNASConfig`` that confines a new search to it (each group: chosen or full width).

    With a model, the subnet is its active one, or ``subnet`` (which need not be selected). A
    config alone gives only the ``nv.select`` line (the rules need the model's layers).
    """
    if not model_name.isidentifier():
        msg = f"model_name={model_name!r} is not a Python identifier; e.g. 'model'"
        raise NasvizError(msg)
    model = model_or_config if isinstance(model_or_config, nn.Module) else None
    if model is None:
        subnet = dict(model_or_config)  # type: ignore[arg-type]
    else:
        subnet = {**get_subnet_config(model), **dict(subnet or {})}
    if any(type(v) is bool or not isinstance(v, int) for v in subnet.values()):
        msg = f"config {subnet!r}: every width must be an int"
        raise HparamError(msg)
    lines = [
        "import nasviz as nv",
        "",
        f"# the chosen subnet ({len(subnet)} channel groups)",
        f"nv.select({model_name}, {pprint.pformat(dict(subnet), sort_dicts=False, width=88)})",
    ]
    if model is None:
        return "\n".join(lines) + "\n"
    used = _used_config(model)
    used_dump = used.model_dump(by_alias=True)
    default_dump = FastNASConfig().model_dump(by_alias=True)
    rules = {k: v for k, v in used_dump.items() if v != default_dump.get(k)}
    hps = search_space(model).hparams
    modules = dict(model.named_modules())
    for name, width in subnet.items():
        owner = name.rpartition(".")[0]
        m = modules.get(owner)
        hp = hps.get(name)
        if not isinstance(m, DynamicModule) or hp is None:
            continue
        found = used.rule_for(m.layer_type, owner)
        if found is None or found.rule is None:
            continue
        rule = found.rule
        ratio = [width / hp.original, 1.0] if width != hp.original else [1.0]
        field = rules.setdefault(m.layer_type, dict(used_dump[m.layer_type]))
        field[owner] = {
            **rule.model_dump(by_alias=True),
            rule.ratio_field: ratio,
            rule.divisor_field: 1,
        }
    lines += [
        "",
        "# FastNASConfig rules that confine a new search to it: every group may take only its",
        "# chosen width or its full width (a rule always keeps the full width)",
        f"config = nv.FastNASConfig(**{pprint.pformat(rules, sort_dicts=False, width=88)})",
    ]
    return "\n".join(lines) + "\n"
