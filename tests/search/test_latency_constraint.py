"""The latency constraint: parsing and messages, and a search under it with a deterministic fake
measurement (the final real check, the tighten-and-retry loop, the errors).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.cost.latency import clear_cache
from nasviz.errors import ConstraintError, SearchError
from nasviz.fastnas import BinarySearcher
from nasviz.search import Constraints
from nasviz.search.latency import (
    LatencyChecked,
    LatencyTableBuilt,
    build_latency_model,
    latency_options,
    rank_disagreement,
    sample_latency,
)
from nasviz.testing import known_score, searchable_mlp

H1, H2 = "fc1.out_features", "fc2.out_features"


# -- parsing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "seconds"), [("2.5ms", 2.5e-3), ("800us", 8e-4), ("0.01s", 0.01), ("3 µs", 3e-6)]
)
def test_absolute_latency(value: str, seconds: float) -> None:
    c = Constraints({"latency": value, "flops": "90%"})
    assert c["latency"].absolute == pytest.approx(seconds)
    assert not c["latency"].relative
    assert c.to_dict()["latency"] == value


def test_relative_latency_resolves_against_the_measured_full_latency() -> None:
    c = Constraints({"latency": "60%"})
    with pytest.raises(ConstraintError, match=r"constraints\['latency'\] = '60%'.*full_latency"):
        c.resolve(full_flops=1e6, full_params=1e3)
    assert c.resolve(full_flops=1e6, full_params=1e3, full_latency=0.01) == {
        "latency": pytest.approx(0.006)
    }
    assert repr(c) == "Constraints(latency <= 60% (6 ms))"
    assert c.check(1e6, 1e3, latency=0.0059)
    assert not c.check(1e6, 1e3, latency=0.0061)
    assert c.margins(1e6, 1e3, latency=0.003)["latency"] == pytest.approx(0.5)
    row = c.describe(latency=0.0066).iloc[0]
    assert row["limit_text"] == "6 ms" and not row["ok"]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (
            "2.5 parsecs",
            r"constraints\['latency'\] = '2\.5 parsecs' is not a latency: write a "
            r"time with a unit \('2\.5ms', '800us', '0\.01s'",
        ),
        ("0ms", r"constraints\['latency'\] = '0ms' must be a positive, finite time: .*'60%'"),
        ("-1ms", r"constraints\['latency'\] = '-1ms' must be a positive"),
        ("150%", r"constraints\['latency'\] = '150%' is out of range: .*at most 100%"),
        ("0%", r"constraints\['latency'\] = '0%' is out of range"),
        (0.002, r"constraints\['latency'\] = 0\.002 is not a latency: write a time with a unit"),
        ("2.5", r"constraints\['latency'\] = '2\.5' is not a latency"),
    ],
)
def test_bad_latency_values_are_refused(value: object, match: str) -> None:
    with pytest.raises(ConstraintError, match=match):
        Constraints({"latency": value})


def test_checking_a_latency_limit_needs_a_latency() -> None:
    c = Constraints({"latency": "1ms"})
    with pytest.raises(ConstraintError, match=r"latency <= 1 ms needs the subnet's latency"):
        c.check(1e6, 1e3)
    with pytest.raises(
        ConstraintError,
        match=r"latency <= 1 ms is unreachable: the smallest "
        r"subnet has 2 ms \(100% over\)",
    ):
        c.check_reachable(1e6, 1e3, min_latency=0.002)


def test_bad_latency_options_are_refused() -> None:
    with pytest.raises(SearchError, match=r"unknown config\['latency'\] key\(s\) \['tries'\]"):
        latency_options({"tries": 2})
    with pytest.raises(SearchError, match=r"config\['latency'\]\['rounds'\] must be a positive"):
        latency_options({"rounds": 0})
    with pytest.raises(SearchError, match=r"\['measure'\] must be callable"):
        latency_options({"measure": 3})


# -- a search with a fake measurement -----------------------------------------------------------
BASE, A, B, G = 1e-3, 2e-5, 3e-5, 1e-6


def mlp_latency(module: nn.Module) -> float:
    """Deterministic 'latency' of an exported TinyMLP from its widths (seconds)."""
    h1, h2 = module.fc1.out_features, module.fc2.out_features
    return BASE + A * h1 + B * h2 + G * h1 * h2  # type: ignore[return-value]  # torch: Tensor | Module


class FakeMeasure:
    """``measure(module, x)``: ``mlp_latency``, times ``slowdown`` once ``after`` calls were made
    (the machine got slower after the table was built).
    """

    def __init__(self, slowdown: float = 1.0, after: int = 10**9) -> None:
        self.slowdown, self.after, self.calls = slowdown, after, 0

    def __call__(self, module: nn.Module, x: Any) -> float:
        self.calls += 1
        assert not any(type(m).__name__.startswith("Dynamic") for m in module.modules())
        return mlp_latency(module) * (self.slowdown if self.calls > self.after else 1.0)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    clear_cache()
    yield
    clear_cache()


def lat(h1: int, h2: int) -> float:
    return BASE + A * h1 + B * h2 + G * h1 * h2


def search(constraints: dict[str, Any], measure: FakeMeasure, **latency: Any) -> dict[str, Any]:
    model, x = searchable_mlp()
    return BinarySearcher().search(
        model,
        constraints,
        dummy_input=x,
        config={
            "score_func": known_score,
            "latency": {"measure": measure, "smooth": False, **latency},
        },
    )


def test_relative_latency_search_meets_the_limit_on_the_real_measurement() -> None:
    measure = FakeMeasure()
    state = search({"latency": "60%"}, measure, calibration=2)
    best = state["best"]
    limit = 0.6 * lat(16, 16)
    assert best["latency"] == pytest.approx(lat(best["config"][H1], best["config"][H2]))
    assert best["latency"] <= limit
    events = [e for e in state["history"] if e["event"] == "LatencyChecked"]
    assert len(events) == 1 and events[0]["ok"] and events[0]["attempt"] == 0
    assert events[0]["predicted"] == pytest.approx(events[0]["measured"])  # exact model
    steps = [e for e in state["history"] if e["event"] == "BisectionStep"]
    for e in steps:  # every step carries the predicted latency and its verdict
        assert e["latency"] == pytest.approx(lat(e["config"][H1], e["config"][H2]))
        assert e["feasible"] == (e["latency"] <= limit)
    final = next(e for e in state["history"] if e["event"] == "FinalScore")
    assert final["latency"] == best["latency"]
    built = next(e for e in state["history"] if e["event"] == "LatencyTableBuilt")
    assert built["source"] == "built" and built["full"] == pytest.approx(lat(16, 16))


def test_a_final_miss_tightens_the_table_and_continues() -> None:
    # the table is built from the first 2 * (1 + 3 + 3) = 14 measurements; afterwards every
    # measurement is 25% slower, so the first chosen subnet misses an absolute limit
    limit = 0.8 * lat(16, 16)
    measure = FakeMeasure(slowdown=1.25, after=14)
    state = search({"latency": f"{limit * 1e3}ms"}, measure, calibration=0, rounds=1)
    checks = [e for e in state["history"] if e["event"] == "LatencyChecked"]
    assert [c["ok"] for c in checks] == [False, True]
    first, second = checks
    assert first["measured"] == pytest.approx(1.25 * first["predicted"])
    assert first["measured"] > limit >= second["measured"]
    assert second["predicted"] <= limit  # predicted with the tightened scale
    cfg = state["best"]["config"]
    assert state["best"]["latency"] == pytest.approx(1.25 * lat(cfg[H1], cfg[H2]))
    assert state["best"]["latency"] <= limit


def test_an_unmeetable_limit_after_the_miss_raises_a_clear_error() -> None:
    # the smallest subnet is predicted to fit (1.22 ms <= 1.5 ms), but everything is measured
    # 2x slower after the table: after tightening nothing is predicted to fit
    measure = FakeMeasure(slowdown=2.0, after=14)
    with pytest.raises(
        SearchError,
        match=r"latency <= 1\.5 ms cannot be met: subnet .* "
        r"measured .* no subnet is predicted to fit .* relax the latency limit",
    ):
        search({"latency": "1.5ms"}, measure, calibration=0, rounds=1)


def test_no_retries_left_raises_with_the_figures() -> None:
    measure = FakeMeasure(slowdown=1.25, after=14)
    limit = 0.8 * lat(16, 16)
    with pytest.raises(
        SearchError,
        match=r"was not met after 0 retries: .* measured .* "
        r"\(predicted .*\); relax the limit",
    ):
        search({"latency": f"{limit * 1e3}ms"}, measure, calibration=0, rounds=1, retries=0)


def test_an_unreachable_latency_is_refused_before_scoring() -> None:
    with pytest.raises(
        ConstraintError,
        match=r"latency <= 1 ms is unreachable: the smallest "
        r"subnet has 1\.22 ms",
    ):
        search({"latency": "1ms"}, FakeMeasure(), calibration=0)


def test_latency_and_flops_together() -> None:
    measure = FakeMeasure()
    state = search({"latency": "90%", "flops": "50%"}, measure, calibration=1)
    best = state["best"]
    assert best["latency"] <= 0.9 * lat(16, 16)
    full_flops = 4.0 * (8 * 16 + 16 * 16 + 16 * 4)
    assert best["flops"] <= 0.5 * full_flops


def test_the_table_is_cached_per_model_batch_and_fit() -> None:
    model, x = searchable_mlp()
    measure = FakeMeasure()
    opts = {"measure": measure, "calibration": 0, "smooth": False}
    _first, source = build_latency_model(model, x, options=opts)
    n = measure.calls
    assert source == "built" and n == 2 * (1 + 3 + 3)
    again, source = build_latency_model(model, x, options=opts)
    assert source == "memory" and measure.calls == n
    assert again.predict({H1: 8, H2: 4}) == pytest.approx(lat(8, 4))
    _, source = build_latency_model(model, torch.cat([x, x]), options=opts)
    assert source == "built" and measure.calls > n  # another batch size
    n = measure.calls
    _, source = build_latency_model(model, x, options={**opts, "calibration": 1})
    assert source == "built" and measure.calls > n  # another fit


def test_sampled_subnets_and_rank_disagreement() -> None:
    model, x = searchable_mlp()
    before = nv.get_subnet_config(model)
    measure = FakeMeasure()
    latency_model, _ = build_latency_model(model, x, options={"measure": measure, "smooth": False})
    table = sample_latency(model, x, 12, latency_model=latency_model, measure=measure, seed=3)
    assert nv.get_subnet_config(model) == before
    assert len(table) == 12
    for _, row in table.iterrows():
        assert row["measured"] == pytest.approx(lat(row["config"][H1], row["config"][H2]))
        assert abs(row["error_pct"]) < 1e-6
    ranked = rank_disagreement(table)
    assert sorted(ranked["flops_rank"]) == list(range(12))
    assert ranked["disagreement"].between(0, 1).all()
    assert -1 <= ranked.attrs["tau"] <= 1 and not math.isnan(ranked.attrs["tau"])


def test_rank_disagreement_on_known_orders() -> None:
    import pandas as pd

    same = pd.DataFrame({"flops": [1.0, 2.0, 3.0], "measured": [0.1, 0.2, 0.3]})
    assert rank_disagreement(same).attrs["tau"] == 1.0
    assert rank_disagreement(same)["disagreement"].tolist() == [0.0, 0.0, 0.0]
    flipped = pd.DataFrame({"flops": [1.0, 2.0, 3.0], "measured": [0.3, 0.2, 0.1]})
    out = rank_disagreement(flipped)
    assert out.attrs["tau"] == -1.0
    assert out["disagreement"].tolist() == [1.0, 0.0, 1.0]


def test_latency_events_round_trip_through_the_history() -> None:
    from nasviz.search import SearchHistory

    state = search({"latency": "70%"}, FakeMeasure(), calibration=0)
    history = SearchHistory.from_records(state["history"])
    kinds = {type(e) for e in history.events}
    assert {LatencyChecked, LatencyTableBuilt} <= kinds
    assert "latency" in history.bisection_table().columns
