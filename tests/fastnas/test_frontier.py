"""The Pareto front, the pinned search and the choice as code, on the tiny MLP (known answers)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.errors import HparamError, NasvizError
from nasviz.fastnas import config_as_code, pareto_front, predict_drop, search_with_pins
from nasviz.testing import FC1, FC2, KNOWN_DROPS, TinyMLP, known_score, searchable_mlp

SMAP = {n: {c: d for c, d in v.items() if c != 16} for n, v in KNOWN_DROPS.items()}
W = (4, 8, 12, 16)


def _flops(a: int, b: int) -> int:
    return 2 * 2 * (8 * a + a * b + b * 4)


def _brute_front(smap: dict, cost: Any) -> set[tuple[int, int]]:
    pts = {(a, b): (cost(a, b), predict_drop(smap, {FC1: a, FC2: b})) for a in W for b in W}
    front = set()
    for k, (c, d) in pts.items():
        dominated = any(
            c2 <= c and d2 <= d and (c2 < c or d2 < d) for k2, (c2, d2) in pts.items() if k2 != k
        )
        if not dominated:
            front.add(k)
    return front


@pytest.fixture(scope="module")
def mlp() -> tuple[nn.Module, torch.Tensor, Any]:
    model, x = searchable_mlp()
    return model, x, nv.search_space(model).cost_model(x)


def test_front_known_answer(mlp: tuple) -> None:
    model, _, cm = mlp
    front = pareto_front(SMAP, nv.search_space(model).hparams, cm)
    assert front.attrs == {"candidates": 16, "exhaustive": True}
    got = {(c[FC1], c[FC2]) for c in front["config"]}
    brute = _brute_front(SMAP, _flops)
    # brute force keeps ties (equal cost and drop); the front keeps one of each
    assert got <= brute and len(got) == len(
        {(_flops(*k), round(predict_drop(SMAP, {FC1: k[0], FC2: k[1]}), 9)) for k in brute}
    )
    assert (16, 16) in got and (4, 4) in got
    assert list(front["cost"]) == sorted(front["cost"])
    assert list(front["drop"]) == sorted(front["drop"], reverse=True)
    for _, row in front.iterrows():
        assert row["cost"] == row["flops"] == _flops(row[FC1], row[FC2])
        assert row["drop"] == pytest.approx(predict_drop(SMAP, row["config"]))


@settings(max_examples=25, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            n: st.fixed_dictionaries({c: st.floats(-0.1, 1.0) for c in (4, 8, 12)})
            for n in (FC1, FC2)
        }
    ),
    st.sampled_from(["flops", "params"]),
)
def test_every_front_point_is_non_dominated(smap: dict, axis: str) -> None:
    model, x = searchable_mlp()
    cm = nv.search_space(model).cost_model(x)
    front = pareto_front(smap, nv.search_space(model).hparams, cm, axis=axis)  # type: ignore[arg-type]
    costs = {
        (a, b): cm.estimate({FC1: a, FC2: b})[0 if axis == "flops" else 1] for a in W for b in W
    }
    pts = {k: (costs[k], predict_drop(smap, {FC1: k[0], FC2: k[1]})) for k in costs}
    on = [(c[FC1], c[FC2]) for c in front["config"]]
    for k in on:  # nothing strictly better
        c, d = pts[k]
        assert not any(c2 <= c and d2 <= d and (c2 < c or d2 < d) for c2, d2 in pts.values())
    for c, d in pts.values():  # every candidate is matched or beaten by a front point
        assert any(pts[k][0] <= c and pts[k][1] <= d + 1e-12 for k in on)


def test_front_with_pins_and_a_callable_cost(mlp: tuple) -> None:
    model, _, _ = mlp
    hps = nv.search_space(model).hparams

    def width_sum(names: list[str], values: np.ndarray) -> np.ndarray:
        return values.sum(axis=1)

    front = pareto_front(SMAP, hps, width_sum, pins={FC1: 8})  # type: ignore[arg-type]  # test data typed loosely
    assert front.attrs["candidates"] == 4
    assert set(front[FC1]) == {8}
    assert list(front["cost"]) == [8 + b for b in front[FC2]]
    assert "flops" not in front
    with pytest.raises(HparamError, match=r"pin fc1.out_features=5.*\[4, 8, 12, 16\]"):
        pareto_front(SMAP, hps, width_sum, pins={FC1: 5})  # type: ignore[arg-type]  # test data typed loosely
    with pytest.raises(NasvizError, match="returned 1 values for 16"):
        pareto_front(SMAP, hps, lambda n, v: np.zeros(1))


def test_front_on_a_sample_when_the_space_is_large(mlp: tuple) -> None:
    model, _, cm = mlp
    front = pareto_front(SMAP, nv.search_space(model).hparams, cm, max_candidates=5)
    assert front.attrs["exhaustive"] is False
    configs = [(c[FC1], c[FC2]) for c in front["config"]]
    assert (16, 16) in configs and (4, 4) in configs  # the ends are always candidates


def test_monotone_front_uses_the_monotone_drops(mlp: tuple) -> None:
    model, _, cm = mlp
    raw = {FC1: {4: 0.01, 8: 0.05, 12: 0.02}, FC2: SMAP[FC2]}
    front = pareto_front(raw, nv.search_space(model).hparams, cm, monotone=True)
    for _, row in front.iterrows():
        assert row["drop"] == pytest.approx(predict_drop(raw, row["config"], monotone=True))


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        return known_score(model)


def test_pinned_search_keeps_the_pin_and_is_the_pinned_optimum() -> None:
    model, x = searchable_mlp()
    state = search_with_pins(model, {"flops": "60%"}, x, {FC1: 12},
                             config={"score_func": known_score})  # fmt: skip
    limit = 0.6 * _flops(16, 16)
    feasible = [b for b in W if _flops(12, b) <= limit]
    best_b = max(feasible, key=lambda b: -SMAP[FC2].get(b, 0.0))
    assert state["best"]["config"] == {FC1: 12, FC2: best_b}
    assert nv.get_subnet_config(model) == state["best"]["config"]
    events = nv.SearchHistory.from_records(state["history"]).events
    assert all(e.config[FC1] == 12 for e in events if hasattr(e, "config") and e.config)


def test_pinned_search_reusing_the_map_scores_only_the_candidates() -> None:
    model, x = searchable_mlp()
    score = Counting()
    state = search_with_pins(
        model, {"flops": "60%"}, x, {FC2: 8}, sensitivity_map=SMAP, original_score=1.0,
        config={"score_func": score, "final_candidates": 2},
    )  # fmt: skip
    assert score.calls <= 2  # no map entry and no full model were scored
    assert state["best"]["config"][FC2] == 8
    assert state["sensitivity_map"] == SMAP


def test_pinned_search_refuses_a_bad_pin_before_scoring() -> None:
    model, x = searchable_mlp()
    score = Counting()
    with pytest.raises(HparamError, match=r"pin fc2.out_features=7: .*\[4, 8, 12, 16\]"):
        search_with_pins(model, {"flops": "60%"}, x, {FC2: 7}, config={"score_func": score})
    assert score.calls == 0


def test_config_as_code_reproduces_the_selection() -> None:
    model, x = searchable_mlp()
    nv.select(model, {FC1: 8, FC2: 12})
    code = config_as_code(model)
    assert "nv.select(model, {'fc1.out_features': 8, 'fc2.out_features': 12})" in code
    fresh, _ = searchable_mlp(seed=1)
    scope: dict[str, Any] = {"model": fresh}
    exec(code, scope)
    assert nv.get_subnet_config(fresh) == {FC1: 8, FC2: 12}
    # the rules confine a new conversion to the chosen or the full width
    confined = nv.convert(TinyMLP(), mode=[("fastnas", scope["config"])], dummy_input=x)
    hps = nv.search_space(confined).hparams
    assert hps[FC1].choices == (8, 16) and hps[FC2].choices == (12, 16)


def test_config_as_code_from_a_config_alone() -> None:
    code = config_as_code({FC1: 4, FC2: 16}, model_name="net")
    model, _ = searchable_mlp()
    exec(code, {"net": model})
    assert nv.get_subnet_config(model) == {FC1: 4, FC2: 16}
    assert "FastNASConfig" not in code
    with pytest.raises(NasvizError, match="not a Python identifier"):
        config_as_code({FC1: 4}, model_name="a b")
