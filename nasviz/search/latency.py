"""The latency constraint in a search: a measured lookup table for the bisection, and a real
measurement of the final subnet.

A subnet is measured as it will run: selected, exported to a plain model
(:func:`nasviz.space.export`, so the dynamic layers' slicing is not timed) and timed with
:func:`nasviz.cost.latency.measure_latency` on ``dummy_input`` (the model's device, the current
thread count, the dummy input's batch size). :class:`LatencyModel` binds a cached
:class:`~nasviz.cost.latency.LatencyTable` to a model's :class:`~nasviz.profile.CostModel` (the
table's interaction term needs exact FLOPs).

:class:`LatencyGuard` is what a searcher holds: predictions for the bisection, then
:meth:`LatencyGuard.meet`: the chosen subnet is measured for real, interleaved with the full model
(``rounds`` times each, medians; a relative limit is checked on the ratio, so a machine that got
slower or faster in the meantime does not decide); over the limit, the table is tightened by the
measured/predicted ratio and the search re-runs, up to ``retries`` times, then a
:class:`~nasviz.errors.SearchError` names the figures.

The searcher's ``config["latency"]`` takes :data:`LATENCY_DEFAULTS`' keys; ``measure`` replaces
the clock (``measure(module, dummy_input) -> seconds``; tests inject a deterministic one).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from torch import nn

from nasviz.cost import CostModel
from nasviz.cost.latency import (
    LatencyTable,
    build_latency_table,
    cached_table,
    format_latency,
    latency_key,
    measure_latency,
)
from nasviz.errors import SearchError
from nasviz.search.events import SearchEvent
from nasviz.space import export, get_subnet_config, search_space, select

__all__ = [
    "LATENCY_DEFAULTS",
    "LatencyChecked",
    "LatencyGuard",
    "LatencyModel",
    "LatencyTableBuilt",
    "build_latency_model",
    "latency_options",
    "rank_disagreement",
    "sample_latency",
    "subnet_measure",
]

ModuleMeasure = Callable[[nn.Module, Any], float]

#: ``config["latency"]`` keys of a search, with their defaults.
LATENCY_DEFAULTS: dict[str, Any] = {
    "measure": None,  # measure(module, dummy_input) -> seconds; None: measure_latency
    "min_run_time": 0.1,  # seconds of timing per measurement
    "min_calls": 20,  # ... and at least this many timed calls (the fastest one counts)
    "clock": "wall",  # or "cpu": CPU time of one thread (shared cores; torch.set_num_threads(1))
    "max_choices": 5,  # reduced choices measured per hparam (others interpolated)
    "calibration": 4,  # random whole subnets measured to fit the interaction term
    "smooth": True,  # one slope per hparam in its FLOPs (robust to noisy readings)
    "rounds": 3,  # interleaved real measurements of the final subnet and the full model
    "retries": 3,  # re-runs of the search after a final subnet measured over the limit
    "margin": 0.02,  # extra tightening after a miss
    "cache_dir": None,  # where tables are kept on disk (memory only when None)
}


def latency_options(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """``LATENCY_DEFAULTS`` updated with ``raw``; unknown keys and bad values raise."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(LATENCY_DEFAULTS))
    if unknown:
        msg = f"unknown config['latency'] key(s) {unknown}; use {sorted(LATENCY_DEFAULTS)}"
        raise SearchError(msg)
    opts = {**LATENCY_DEFAULTS, **raw}
    if opts["measure"] is not None and not callable(opts["measure"]):
        msg = (
            f"config['latency']['measure'] must be callable (module, dummy_input) -> seconds, "
            f"got {opts['measure']!r}"
        )
        raise SearchError(msg)
    if opts["clock"] not in ("wall", "cpu"):
        msg = f"config['latency']['clock'] = {opts['clock']!r}: use 'wall' or 'cpu'"
        raise SearchError(msg)
    for key in ("max_choices", "rounds", "min_calls"):
        if not isinstance(opts[key], int) or opts[key] < 1:
            msg = f"config['latency'][{key!r}] must be a positive int, got {opts[key]!r}"
            raise SearchError(msg)
    for key in ("calibration", "retries"):
        if not isinstance(opts[key], int) or opts[key] < 0:
            msg = f"config['latency'][{key!r}] must be an int >= 0, got {opts[key]!r}"
            raise SearchError(msg)
    return opts


def _module_measure(opts: Mapping[str, Any]) -> ModuleMeasure:
    if opts["measure"] is not None:
        fn: ModuleMeasure = opts["measure"]
        return fn
    run_time, calls, clock = float(opts["min_run_time"]), int(opts["min_calls"]), opts["clock"]

    def measure(module: nn.Module, x: Any) -> float:
        return measure_latency(module, x, min_run_time=run_time, min_calls=calls, clock=clock)

    return measure


def subnet_measure(
    model: nn.Module, dummy_input: Any, measure: ModuleMeasure | None = None
) -> Callable[[Mapping[str, int]], float]:
    """``config -> seconds``: select ``config``, export a plain copy, time it; the model's
    selection is restored afterwards.
    """
    timer = measure or (lambda module, x: measure_latency(module, x))

    def run(config: Mapping[str, int]) -> float:
        saved = get_subnet_config(model)
        try:
            select(model, dict(config))
            small = export(model)
        finally:
            select(model, saved)
        return float(timer(small, dummy_input))

    return run


# -- events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyTableBuilt(SearchEvent):
    """The latency table is ready (``source``: ``"built"``, ``"memory"`` or ``"disk"``)."""

    full: float
    minimum: float
    measurements: int
    seconds: float
    kappa: float
    source: str


@dataclass(frozen=True)
class LatencyChecked(SearchEvent):
    """A chosen subnet measured for real against the latency limit (seconds)."""

    attempt: int
    predicted: float
    measured: float
    full_measured: float
    limit: float
    ok: bool
    config: dict[str, int]


# -- the model bound to a model -----------------------------------------------------------------
class LatencyModel:
    """A :class:`LatencyTable` bound to a converted model (through its ``CostModel``)."""

    def __init__(self, table: LatencyTable, cost_model: CostModel) -> None:
        self.table = table
        self.cost_model = cost_model

    def _complete(self, config: Mapping[str, int] | None) -> dict[str, int]:
        active = {
            n: hp.active for n, hp in self.cost_model.hparams.items() if n in self.table.delta
        }
        return {**active, **{n: int(v) for n, v in (config or {}).items()}}

    def predict(self, config: Mapping[str, int] | None = None) -> float:
        """Predicted seconds of ``config`` (missing hparams keep their active value)."""
        full = self._complete(config)
        flops, _ = self.cost_model.estimate(full)
        return self.table.predict(full, flops)

    def predict_many(self, names: Sequence[str], values: Any, flops: Any) -> np.ndarray:
        """Predicted seconds of many subnets whose exact FLOPs are ``flops`` (one per row)."""
        return self.table.predict_many(names, values, flops)

    def __repr__(self) -> str:
        return f"LatencyModel({self.table!r})"


def build_latency_model(
    model: nn.Module,
    dummy_input: Any,
    *,
    cost_model: CostModel | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[LatencyModel, str]:
    """Build (or fetch from the cache) the latency table of ``model`` and bind it.

    ``options`` are :data:`LATENCY_DEFAULTS`' keys. Returns ``(model, source)``, ``source`` in
    ``"built"``, ``"memory"``, ``"disk"``.
    """
    opts = latency_options(options)
    cm = cost_model or CostModel.from_model(model, dummy_input)
    hps = {n: hp for n, hp in search_space(model).hparams.items() if hp.is_configurable}
    choices = {n: list(hp.choices) for n, hp in hps.items()}
    original = {n: int(hp.original) for n, hp in hps.items()}
    measure = subnet_measure(model, dummy_input, _module_measure(opts))

    def build() -> LatencyTable:
        return build_latency_table(
            choices,
            original,
            measure,
            lambda cfg: float(cm.estimate(cfg)[0]),
            max_choices=opts["max_choices"],
            calibration=opts["calibration"],
            smooth=bool(opts["smooth"]),
        )

    how = "|".join(f"{k}={opts[k]}" for k in ("max_choices", "calibration", "smooth", "clock"))
    key = latency_key(model, dummy_input, choices, extra=how)
    table, source = cached_table(key, build, opts["cache_dir"])
    return LatencyModel(table, cm), source


# -- the searcher's side ------------------------------------------------------------------------
class LatencyGuard:
    """Latency predictions for a search, and the final real check (module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        dummy_input: Any,
        options: Mapping[str, Any] | None,
        cost_model: CostModel,
        emit: Callable[[SearchEvent], None],
    ) -> None:
        self.opts = latency_options(options)
        self.latency_model, source = build_latency_model(
            model, dummy_input, cost_model=cost_model, options=self.opts
        )
        self.table = self.latency_model.table
        self.measure = subnet_measure(model, dummy_input, _module_measure(self.opts))
        self.full_config = dict(self.table.original)
        self.emit = emit
        t = self.table
        emit(LatencyTableBuilt(t.full, t.minimum, t.measurements, t.build_seconds, t.kappa, source))

    @property
    def full(self) -> float:
        """The full model's measured latency the limits are resolved against (seconds)."""
        return self.table.full

    @property
    def minimum(self) -> float:
        """The smallest subnet's measured latency (seconds)."""
        return self.table.minimum

    def predict(self, config: Mapping[str, int]) -> float:
        """Predicted latency of the subnet ``config``, in seconds (from the table, not measured)."""
        return self.latency_model.predict(config)

    def measure_pair(self, config: Mapping[str, int]) -> tuple[float, float]:
        """``(subnet, full model)`` medians of ``rounds`` interleaved real measurements."""
        sub, full = [], []
        for _ in range(self.opts["rounds"]):
            sub.append(self.measure(config))
            full.append(self.measure(self.full_config))
        return statistics.median(sub), statistics.median(full)

    def measured(self, config: Mapping[str, int], relative: bool) -> tuple[float, float]:
        """``(latency to check, full model now)``: for a relative limit the subnet's latency is
        its measured ratio to the full model times :attr:`full`.
        """
        sub, full_now = self.measure_pair(config)
        return (sub / full_now * self.full if relative else sub), full_now

    def meet(
        self,
        config: dict[str, int],
        limit: float,
        relative: bool,
        rerun: Callable[[], dict[str, int] | None],
    ) -> tuple[dict[str, int], float]:
        """Measure ``config``; while it is over ``limit``, tighten the table and ``rerun()`` the
        search (``None``: no subnet is predicted to fit). Returns ``(config, measured)``.
        """
        retries = self.opts["retries"]
        for attempt in range(retries + 1):
            predicted = self.predict(config)
            value, full_now = self.measured(config, relative)
            ok = value <= limit
            self.emit(LatencyChecked(attempt, predicted, value, full_now, limit, ok, dict(config)))
            if ok:
                return config, value
            if attempt == retries:
                break
            self.table.tighten(predicted, value, self.opts["margin"])
            nxt = rerun()
            if nxt is None:
                msg = (
                    f"latency <= {format_latency(limit)} cannot be met: subnet {config} "
                    f"measured {format_latency(value)} (predicted {format_latency(predicted)}), "
                    "and after correcting the latency model by that ratio no subnet is predicted "
                    f"to fit (the smallest measured {format_latency(self.minimum)}); relax the "
                    "latency limit or allow smaller widths"
                )
                raise SearchError(msg)
            config = nxt
        msg = (
            f"latency <= {format_latency(limit)} was not met after {retries} retries: the last "
            f"subnet {config} measured {format_latency(value)} (predicted "
            f"{format_latency(predicted)}); relax the limit, raise config['latency']['retries'], "
            "or measure on a quieter machine (min_run_time, rounds)"
        )
        raise SearchError(msg)


# -- sampled subnets: prediction error, latency vs FLOPs ----------------------------------------
def sample_latency(
    model: nn.Module,
    dummy_input: Any,
    n: int = 20,
    *,
    latency_model: LatencyModel | None = None,
    measure: ModuleMeasure | None = None,
    seed: int = 0,
    paired: bool = True,
) -> pd.DataFrame:
    """Measure ``n`` random subnets (seeded): one row each with ``config``, ``flops``,
    ``params``, ``measured`` (seconds) and, given ``latency_model``, ``predicted`` and
    ``error_pct`` (signed, % of measured). The model's selection is left as it was.

    ``paired`` (as the table is built): each subnet is followed by a measurement of the full
    model (column ``full_raw``), and ``measured`` is the ratio times the latency model's full
    latency (or the quietest full reading); ``raw`` is the reading itself.
    """
    if not isinstance(n, int) or n < 1:
        msg = f"n={n!r}: sample at least one subnet"
        raise SearchError(msg)
    cm = latency_model.cost_model if latency_model else CostModel.from_model(model, dummy_input)
    hps = {nm: hp for nm, hp in search_space(model).hparams.items() if hp.is_configurable}
    timer = subnet_measure(model, dummy_input, measure)
    full_cfg = {nm: int(hp.original) for nm, hp in hps.items()}
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        cfg = {nm: int(rng.choice(list(hp.choices))) for nm, hp in hps.items()}
        flops, params = cm.estimate(cfg)
        row: dict[str, Any] = {"config": cfg, "flops": float(flops), "params": float(params)}
        row["raw"] = row["measured"] = timer(cfg)
        if paired:
            row["full_raw"] = timer(full_cfg)
        rows.append(row)
    table = pd.DataFrame(rows)
    if paired:
        ref = latency_model.table.full if latency_model else float(table["full_raw"].min())
        table["measured"] = table["raw"] / table["full_raw"] * ref
    if latency_model is not None:
        table["predicted"] = [latency_model.predict(c) for c in table["config"]]
        table["error_pct"] = 100.0 * (table["predicted"] - table["measured"]) / table["measured"]
    return cast(pd.DataFrame, table)


def rank_disagreement(table: pd.DataFrame, column: str = "measured") -> pd.DataFrame:
    """Add ``flops_rank``, ``latency_rank`` (0 = cheapest) and ``disagreement`` (``|difference|``
    of the ranks as a fraction of the rows) to a :func:`sample_latency` table; ``attrs["tau"]``
    is Kendall's tau between FLOPs and latency (1: same order).
    """
    out = table.copy()
    n = len(out)
    out["flops_rank"] = out["flops"].rank(method="first").astype(int) - 1
    out["latency_rank"] = out[column].rank(method="first").astype(int) - 1
    out["disagreement"] = (out["flops_rank"] - out["latency_rank"]).abs() / max(n - 1, 1)
    f, lat = out["flops"].to_numpy(), out[column].to_numpy()
    concordant = discordant = 0
    for i in range(n):
        s = np.sign(f[i + 1 :] - f[i]) * np.sign(lat[i + 1 :] - lat[i])
        concordant += int((s > 0).sum())
        discordant += int((s < 0).sum())
    pairs = concordant + discordant
    out.attrs["tau"] = (concordant - discordant) / pairs if pairs else math.nan
    return cast(pd.DataFrame, out)
