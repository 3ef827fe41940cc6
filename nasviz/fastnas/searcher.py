"""FastNAS's binary searcher: a sensitivity map, a bisected score drop, and then better.

The module is one piece (over the house ~400 lines): BinarySearcher's phases - the map, the
bisection, the growth, the final candidates - read and write one search state, checkpointed as a
whole. The candidate enumeration (``_alternatives``, ``_enumerated``, ``_grow``) is the part that
could stand alone, as functions of the map and the cost model.

As in the FastNAS reference:

1. ``before_search`` builds the **sensitivity map** ``{hparam: {choice: drop}}``: the score drop
   of the subnet where only that hparam is reduced to that choice (all others at full width).
2. Each step bisects a tolerated drop ``middle_value`` in ``[min_degrade, max_degrade]``; every
   hparam takes its smallest choice whose drop is within it; a candidate that meets the
   constraints moves ``max_degrade`` down, one that does not moves ``min_degrade`` up.

Where the reference is wrong, this one is not:

* every scored subnet has its BatchNorm statistics re-estimated first (and the statistics land in
  the buffers the exported model receives);
* the budget is used: after bisection, the groups whose widening costs the least predicted score
  per FLOP are grown while every constraint still holds;
* the final subnet is scored with the real ``score_func`` and reported (``best["score"]``);
  since summed single-group drops ignore interactions between groups, the ``final_candidates``
  best-predicted subnets that use the budget (the grown bisection result first) are scored for
  real and the best real score wins (the scorer may skip a candidate whose predicted score does
  not beat the best real one, :meth:`~nasviz.search.scoring.Scorer.worth_scoring`);
* BatchNorm is calibrated on ``config["data_loader"]``: its first ``max_iter_data_loader``
  batches (default **50**, as in the FastNAS reference; ``None``: the whole loader), drawn once
  and reused for every subnet, and cached so that a subnet re-estimates only the statistics
  downstream of its change (both forms, :mod:`nasviz.search.scoring`);
* the map's entries are scored by ``config["executor"]``: in process (the default) or on a Dask
  cluster, streaming back as they complete (see :mod:`nasviz.search.executors`); each entry is
  scored from the same seeded random state (``config["seed"]``), so the map does not depend on
  where or in which order entries run;
* a ``latency`` constraint is predicted by a measured lookup table during the bisection, and the
  final subnet is measured for real; over the limit, the table is tightened and the bisection
  re-runs (see :mod:`nasviz.search.latency`; options in ``config["latency"]``);
* ``config["pins"]`` (``{hparam: width}``) fixes groups at a width: the bisection, growth and
  the final candidates keep them (a width that is not a choice is refused, naming the choices);
  ``config["sensitivity_map"]``/``config["original_score"]`` reuse an earlier map instead of
  scoring one (a search again with other pins scores only its final candidates);
* state is checkpointed after each entry of the map and each step; a checkpoint made for one
  constraint is reused for another without re-scoring (only the map and the original score are
  loaded: the bisection is deterministic and cheap).

Example::

    searcher = BinarySearcher()
    state = searcher.search(model, {"flops": "60%"}, dummy_input=x,
                            config={"data_loader": train_loader, "score_func": val_accuracy})
    state["best"]["config"], state["best"]["score"]
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any, cast

import numpy as np
from typing_extensions import override

from nasviz.errors import SearchError
from nasviz.fastnas.sensmap import check_pins, config_at_drop, drop_levels
from nasviz.hparam import Hparam
from nasviz.search.base import IterativeSearcher
from nasviz.search.checkpoint import as_optional_score, as_sensitivity_map, checked_field
from nasviz.search.events import (
    BisectionStep,
    CandidateScored,
    FinalScore,
    GrowStep,
    MapEntry,
    MapFinished,
    MapStarted,
    SearchFinished,
    SearchStarted,
)
from nasviz.search.executors import MapSchedule, resolve_executor
from nasviz.search.latency import LatencyGuard
from nasviz.space import SearchSpace, search_space

__all__ = ["BinarySearcher", "config_at_drop", "drop_levels"]


def _next_choice(hp: Hparam, value: int) -> int | None:
    """The next wider choice of ``hp`` after ``value`` (``None`` at the original width)."""
    return next((c for c in hp.choices if c > value), None)


class BinarySearcher(IterativeSearcher):
    """An iterative searcher that bisects the tolerated score drop (see module docstring).

    Example (on the test MLP, whose map is known: :mod:`nasviz.testing`)::

        >>> from nasviz.testing import known_score, searchable_mlp
        >>> model, x = searchable_mlp()
        >>> searcher = BinarySearcher()
        >>> state = searcher.search(model, {"params": "70%"}, x, {"score_func": known_score})
        >>> state["best"]["config"], state["best"]["score"]
        ({'fc1.out_features': 12, 'fc2.out_features': 12}, 0.97)
    """

    sensitivity_map: dict[str, dict[int, float]]
    original_score: float | None
    min_degrade: float
    max_degrade: float
    middle_value: float

    def __init__(self) -> None:
        super().__init__()
        self._pins: dict[str, int] = {}  # set from config["pins"] by before_search

    @property
    @override
    def default_search_config(self) -> dict[str, Any]:
        return {
            **super().default_search_config,
            "iterations": 40,
            "tolerance": 1e-4,
            "final_candidates": 4,
            "seed": 0,
            "executor": None,
            "latency": None,  # latency: options of nasviz.search.latency.LATENCY_DEFAULTS
            "pins": {},
            "sensitivity_map": None,
            "original_score": None,
        }

    @property
    @override
    def default_state_dict(self) -> dict[str, Any]:
        return {
            **super().default_state_dict,
            "sensitivity_map": {},
            "original_score": None,
            "min_degrade": 0.0,
            "max_degrade": 0.0,
            "middle_value": 0.0,
        }

    # -- checkpoints ------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """The base fingerprint plus the search space (hparam names and choices) and the seed
        the map's entries are scored from.
        """
        base = super().fingerprint()
        space = {n: [int(c) for c in hp.choices] for n, hp in self._hparams().items()}
        return {**base, "search_space": space, "seed": self.config["seed"]}

    def load_search_checkpoint(self) -> bool:
        """Load only the sensitivity map and the original score; the rest is recomputed."""
        state = self.read_search_checkpoint()
        if state is None:
            return False
        path = self.config["checkpoint"]
        smap = checked_field(state, "sensitivity_map", path, as_sensitivity_map)
        names = set(self._hparams())
        unknown = sorted(set(smap) - names)
        if unknown:
            msg = (
                f"checkpoint {str(path)!r} belongs to another search space: it has hparams "
                f"{unknown} this model does not have; delete it or pass another checkpoint path"
            )
            raise SearchError(msg)
        self.sensitivity_map = smap
        self.original_score = checked_field(state, "original_score", path, as_optional_score)
        return True

    # -- helpers ----------------------------------------------------------------------------------
    def _space(self) -> SearchSpace:
        """The search space searched: its ``hparams``, ``select`` and ``cost_model`` are all this
        searcher uses of the model's space.
        """
        return search_space(self.model)

    def _hparams(self) -> dict[str, Any]:
        """The configurable hparams, looked up once per model (the map, the bisection, growth
        and the candidate ranking ask for them in their inner loops; selecting a subnet changes
        active values, never the hparams themselves).
        """
        cached: tuple[Any, dict[str, Any]] | None = getattr(self, "_hps_cache", None)
        if cached is None or cached[0] is not self.model:
            hps = {n: hp for n, hp in self._space().hparams.items() if hp.is_configurable}
            cached = (self.model, hps)
            self._hps_cache = cached
        return cached[1]

    def _select(self, config: dict[str, int]) -> None:
        self._space().select(config)

    def _max_config(self) -> dict[str, int]:
        return {n: hp.original for n, hp in self._hparams().items()}

    def _pinned(self, config: dict[str, int]) -> dict[str, int]:
        """``config`` with the pinned groups at their pins."""
        return {**config, **self._pins}

    def _cost(self, config: dict[str, int]) -> tuple[float, float]:
        """``(flops, params)`` of ``config`` (memoised: growth and the candidate ranking ask for
        the same subnets many times).
        """
        key = tuple(sorted(config.items()))
        hit = self._costs.get(key)
        if hit is None:
            flops, params = self._cost_model.estimate(config)
            hit = self._costs[key] = (float(flops), float(params))
        return hit

    def _feasible(self, config: dict[str, int]) -> bool:
        flops, params = self._cost(config)
        return self._check(config, flops, params)

    # latency: the predicted latency of a config, when a latency constraint is given
    def _latency(self, config: dict[str, int]) -> float | None:
        return None if self._lat is None else self._lat.predict(config)

    def _check(self, config: dict[str, int], flops: float, params: float) -> bool:
        return bool(self.constraints.check(flops, params, latency=self._latency(config)))

    def _rerun(self) -> dict[str, int] | None:
        """latency: bisect again (after the latency table was tightened); ``None`` if nothing
        is predicted to fit.
        """
        self.min_degrade, self.max_degrade = self._interval
        self.iter_num = 0
        self.best = {"config": self._config_at(self.max_degrade), "score": None}
        self.run_search()
        config = dict(self.best["config"])
        return self._grow(config) if self._feasible(config) else None

    def _config_at(self, tolerated: float) -> dict[str, int]:
        """Every hparam at its smallest choice whose drop is within ``tolerated``."""
        return config_at_drop(self.sensitivity_map, self._hparams(), tolerated, self._pins)

    def _drop(self, name: str, choice: int) -> float:
        if choice == self._hparams()[name].original:
            return 0.0
        return self.sensitivity_map[name][choice]

    # -- the search -------------------------------------------------------------------------------
    def before_search(self) -> None:
        """Resolve the constraints, refuse unreachable ones, then build the sensitivity map."""
        self._cost_model = self._space().cost_model(self.dummy_input)
        self._costs: dict[tuple[tuple[str, int], ...], tuple[float, float]] = {}
        hps = self._hparams()
        if not hps:
            msg = (
                "the model has no searchable channel groups: convert it first "
                "(nv.convert(model, mode='fastnas', dummy_input=x)) and check "
                "nv.search_space(model).static_table() for why layers are static"
            )
            raise SearchError(msg)
        self._pins = check_pins(self.config["pins"], hps)
        self._reuse_map(hps)
        full = self._cost(self._max_config())
        smallest = self._cost(self._pinned({n: hp.min for n, hp in hps.items()}))
        self._lat: LatencyGuard | None = None  # latency
        if "latency" in self.constraints:
            self._lat = LatencyGuard(
                self.model, self.dummy_input, self.config["latency"], self._cost_model, self.emit
            )
        lat = self._lat
        self.limits = self.constraints.resolve(
            full_flops=full[0], full_params=full[1], full_latency=lat.full if lat else None
        )
        self.constraints.check_reachable(
            min_flops=smallest[0], min_params=smallest[1], min_latency=lat.minimum if lat else None
        )
        self.emit(
            SearchStarted(
                full_flops=full[0],
                full_params=full[1],
                limits=dict(self.limits),
                hparams={n: list(hp.choices) for n, hp in hps.items()},
            )
        )
        self._build_sensitivity_map(hps)
        all_drops = [d for v in self.sensitivity_map.values() for d in v.values()]
        self.min_degrade = min(0.0, *all_drops) if all_drops else 0.0
        self.max_degrade = max(0.0, *all_drops) if all_drops else 0.0
        self._interval = (self.min_degrade, self.max_degrade)  # latency: for a re-run
        # the all-original subnet may already fit
        start = self._pinned(self._max_config())
        if self._feasible(start):
            self.max_degrade = self.min_degrade
        self.best = {"config": self._config_at(self.max_degrade), "score": None}

    def _reuse_map(self, hps: dict[str, Any]) -> None:
        """Take ``config["sensitivity_map"]`` (and ``"original_score"``) instead of scoring them
        (a map file, or an earlier search's map: a search again with pins costs no map).
        """
        given = self.config["sensitivity_map"]
        if given is not None:
            smap = {k: {int(c): float(d) for c, d in v.items()} for k, v in given.items()}
            unknown = sorted(set(smap) - set(hps))
            if unknown:
                msg = (
                    f"config['sensitivity_map'] has groups {unknown} this model does not have; "
                    "pass the map of a search on this model"
                )
                raise SearchError(msg)
            self.sensitivity_map = smap
        if self.config["original_score"] is not None:
            self.original_score = float(self.config["original_score"])

    def _build_sensitivity_map(self, hps: dict[str, Any]) -> None:
        """Score every (hparam, reduced width) with the executor, recording each as it completes."""
        t0 = time.perf_counter()
        total = sum(len(hp.choices) - 1 for hp in hps.values())
        done = sum(len(v) for k, v in self.sensitivity_map.items() if k in hps)
        full = self._max_config()
        rule = self.scorer.skip_rule()
        ascending = rule is not None and rule.ascending
        order = {n: sorted(hp.choices[:-1], reverse=not ascending) for n, hp in hps.items()}
        schedule = MapSchedule(order, self.sensitivity_map, rule)
        run = resolve_executor(self.config["executor"]).open(self, hps)
        index = n_scored = 0
        try:
            score = run.start(schedule.todo(), need_original=self.original_score is None)
            if self.original_score is None:
                if score is None:
                    msg = f"{type(run).__name__} did not score the full model"
                    raise SearchError(msg)
                self.original_score = score
                self.save_search_checkpoint()
            original = schedule.original_score = self.original_score
            self.emit(MapStarted(original_score=original, total=total, done=done))
            for entry in schedule.run(run):  # as they complete (in order when in process)
                flops, params = self._cost({**full, entry.hparam: entry.choice})
                n_scored += not entry.skipped
                try:
                    self.emit(
                        MapEntry(
                            hparam=entry.hparam,
                            choice=entry.choice,
                            score=original - entry.drop,
                            drop=entry.drop,
                            flops=flops,
                            params=params,
                            index=index,
                            total=total,
                            skipped=entry.skipped,
                        )
                    )
                finally:  # every finished entry reaches the checkpoint, even if a callback raised
                    self.save_search_checkpoint()
                index += 1
        finally:
            run.close()
        self._select(full)
        self.emit(MapFinished(entries=total, n_scored=n_scored, seconds=time.perf_counter() - t0))

    def early_stop(self) -> bool:
        """Stop once the interval is narrower than the tolerance."""
        scale = max(1.0, abs(self.original_score or 0.0))
        return cast(bool, self.max_degrade - self.min_degrade <= self.config["tolerance"] * scale)

    def before_step(self) -> None:
        """The tolerated drop to try: the middle of the interval."""
        self.middle_value = (self.min_degrade + self.max_degrade) / 2.0

    def sample(self) -> dict[str, Any]:
        """Each hparam takes its smallest choice within ``middle_value``; select that subnet."""
        config = self._config_at(self.middle_value)
        self._candidate = config
        return config

    def after_step(self) -> None:
        """Feasible: tolerate less next time (``max_degrade = mid``); else more."""
        config = self._candidate
        flops, params = self._cost(config)
        feasible = self._check(config, flops, params)
        self.emit(
            BisectionStep(
                step=self.iter_num,
                lo=self.min_degrade,
                hi=self.max_degrade,
                mid=self.middle_value,
                flops=flops,
                params=params,
                feasible=feasible,
                config=dict(config),
                latency=self._latency(config),
            )
        )
        if feasible:
            self.max_degrade = self.middle_value
            self.best = {"config": dict(config), "score": None}
        else:
            self.min_degrade = self.middle_value

    def after_search(self) -> None:
        """Grow into the unused budget, score the best-predicted candidates for real, keep the
        best real score.
        """
        grown = self._grow(dict(self.best["config"]))
        measured: dict[tuple[tuple[str, int], ...], float] = {}
        if self._lat is not None:  # latency: the real measurement decides
            relative = self.constraints["latency"].relative
            grown, value = self._lat.meet(grown, self.limits["latency"], relative, self._rerun)
            measured[tuple(sorted(grown.items()))] = value
        alternatives = self._alternatives(grown, self.config["final_candidates"] - 1)
        if self._lat is not None:  # latency: alternatives must fit when measured too
            for alt in alternatives:
                measured[tuple(sorted(alt.items()))] = self._lat.measured(alt, relative)[0]
            limit = self.limits["latency"]
            alternatives = [a for a in alternatives if measured[tuple(sorted(a.items()))] <= limit]
        candidates = [grown, *alternatives]
        best: dict[str, Any] | None = None
        last: dict[str, int] | None = None
        for rank, config in enumerate(candidates):
            predicted = float(self.original_score or 0.0) - self._predicted_drop(config)
            if not self.scorer.worth_scoring(predicted, None if best is None else best["score"]):
                continue
            self._select(config)
            score = self.eval_score(f"candidate {rank + 1} {config}")
            flops, params = self._cost(config)
            self.emit(
                CandidateScored(
                    rank=rank,
                    score=score,
                    predicted_drop=self._predicted_drop(config),
                    flops=flops,
                    params=params,
                    config=dict(config),
                )
            )
            last = config
            if best is None or score > best["score"]:
                best = {"config": config, "score": score, "flops": flops, "params": params}
                if measured:  # latency: seconds, measured for real
                    best["latency"] = measured[tuple(sorted(config.items()))]
        if best is None:  # unreachable: candidates always holds the grown config
            msg = "no candidate subnet was scored"
            raise SearchError(msg)
        config, score = best["config"], best["score"]
        self._select(config)
        # leave the model calibrated for the chosen subnet, not the last one scored
        self.scorer.restore_calibration(last_scored=config is last)
        self.best = best
        self.emit(
            FinalScore(
                score=score,
                original_score=float(self.original_score or 0.0),
                flops=best["flops"],
                params=best["params"],
                config=dict(config),
                latency=best.get("latency"),
            )
        )
        self.save_search_checkpoint()
        self.emit(
            SearchFinished(best_config=dict(config), best_score=score, seconds=self.elapsed())
        )

    def _predicted_drop(self, config: dict[str, int]) -> float:
        return sum(self._drop(n, c) for n, c in config.items())

    def _alternatives(self, grown: dict[str, int], k: int) -> list[dict[str, int]]:
        """Up to ``k`` other feasible subnets that use the budget, best predicted drop first.

        Small spaces are enumerated; larger ones are sampled (seeded) and each sample is grown
        into the budget. Only the cost model is used here: nothing is scored.
        """
        if k <= 0:
            return []

        hps = self._hparams()
        names = list(hps)
        size = 1
        for n, hp in hps.items():
            size *= 1 if n in self._pins else len(hp.choices)
        if size <= 20_000:
            return self._enumerated(grown, k)
        pool: list[dict[str, int]] = []
        rng = random.Random(self.config["seed"])
        for _ in range(200):
            cfg = self._pinned({n: rng.choice(hps[n].choices) for n in names})
            if self._feasible(cfg):
                pool.append(self._grow(cfg, emit=False))
        # keep subnets that cannot be widened anywhere (they use the budget)
        maximal = []
        for cfg in pool:
            widenable = any(
                n not in self._pins
                and (nxt := _next_choice(hps[n], cfg[n])) is not None
                and self._feasible({**cfg, n: nxt})
                for n in names
            )
            if not widenable and cfg != grown:
                maximal.append(cfg)
        unique = {tuple(sorted(c.items())): c for c in maximal}
        ranked = sorted(unique.values(), key=lambda c: (self._predicted_drop(c), sorted(c.items())))
        return ranked[:k]

    def _enumerated(self, grown: dict[str, int], k: int) -> list[dict[str, int]]:
        """``_alternatives`` for a small space: every subnet priced at once (one matrix product
        for the cost model), the maximal ones found on the grid of choices.
        """
        hps = self._hparams()
        names = list(hps)
        choices = [[self._pins[n]] if n in self._pins else list(hps[n].choices) for n in names]
        grid = np.array(list(itertools.product(*choices)), dtype=np.int64)
        flops, params = self._cost_model.estimate_many(names, grid)
        lat = None  # latency: predicted for the whole grid at once
        if self._lat is not None:
            lat = self._lat.latency_model.predict_many(names, grid, flops)
        ok = np.array(
            [
                self.constraints.check(float(f), float(p), latency=None if lat is None else lat[i])
                for i, (f, p) in enumerate(zip(flops, params))
            ]
        ).reshape([len(c) for c in choices])
        widenable = np.zeros_like(ok)
        for axis in range(len(names)):  # a feasible next-wider choice along some axis
            nxt = np.zeros_like(ok)
            src = [slice(None)] * len(names)
            dst = [slice(None)] * len(names)
            src[axis], dst[axis] = slice(1, None), slice(None, -1)
            nxt[tuple(dst)] = ok[tuple(src)]
            widenable |= nxt
        maximal = []
        for row in grid[(ok & ~widenable).reshape(-1)]:
            cfg = {n: int(v) for n, v in zip(names, row)}
            if cfg != grown:
                maximal.append(cfg)
        ranked = sorted(maximal, key=lambda c: (self._predicted_drop(c), sorted(c.items())))
        return ranked[:k]

    def _grow(self, config: dict[str, int], emit: bool = True) -> dict[str, int]:
        """Widen groups while every constraint holds, best predicted gain per FLOP first."""
        hps = self._hparams()
        while True:
            cur_flops, _ = self._cost(config)
            best_move: tuple[float, float, str, int] | None = None
            best_cost: tuple[float, float] = (0.0, 0.0)
            for name, hp in hps.items():
                nxt = None if name in self._pins else _next_choice(hp, config[name])
                if nxt is None:
                    continue
                cand = {**config, name: nxt}
                flops, params = self._cost(cand)
                if not self._check(cand, flops, params):
                    continue
                gain = self._drop(name, config[name]) - self._drop(name, nxt)
                added = max(flops - cur_flops, 1e-9)
                key = (gain / added, -added, name, nxt)
                if best_move is None or key > best_move:
                    best_move, best_cost = key, (flops, params)
            if best_move is None:
                return config
            _, _, name, nxt = best_move
            old = config[name]
            config[name] = nxt
            if not emit:
                continue
            self.emit(
                GrowStep(
                    hparam=name,
                    old=old,
                    new=nxt,
                    predicted_drop=sum(self._drop(n, c) for n, c in config.items()),
                    flops=best_cost[0],
                    params=best_cost[1],
                )
            )
