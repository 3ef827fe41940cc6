"""Latency in the widgets, without a browser: the latency/FLOPs scatter, the explorer's latency
bar and the bisection animation's latency metric (a deterministic fake measurement throughout).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from torch import nn

import nasviz as nv
from nasviz.cost.latency import clear_cache
from nasviz.errors import NasvizError
from nasviz.fastnas import BinarySearcher
from nasviz.search.latency import build_latency_model
from nasviz.testing import known_score, searchable_mlp
from nasviz.widgets._base import COLORS
from nasviz.widgets.bisection import BisectionAnimation
from nasviz.widgets.explorer import SubnetExplorer
from nasviz.widgets.latency import LatencyScatter, latency_flops_figure

H1, H2 = "fc1.out_features", "fc2.out_features"


def lat(h1: int, h2: int) -> float:
    return 1e-3 + 2e-5 * h1 + 3e-5 * h2 + 1e-6 * h1 * h2


def fake_measure(module: nn.Module, x: Any) -> float:
    return lat(module.fc1.out_features, module.fc2.out_features)  # type: ignore[arg-type]  # torch: Tensor | Module


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    clear_cache()
    yield
    clear_cache()


def test_scatter_marks_the_subnets_whose_ranks_disagree() -> None:
    # FLOPs order 1 < 2 < 3 < 4; latency order puts the cheapest-in-FLOPs subnet last
    table = pd.DataFrame(
        {
            "flops": [1.0, 2.0, 3.0, 4.0],
            "measured": [0.004, 0.001, 0.002, 0.003],
            "config": [{H1: 4}, {H1: 8}, {H1: 12}, {H1: 16}],
        }
    )
    fig = latency_flops_figure(table, threshold=0.5)
    measured = fig.data[0]
    assert list(measured.x) == [1.0, 2.0, 3.0, 4.0]
    assert list(measured.y) == pytest.approx([4.0, 1.0, 2.0, 3.0])  # ms
    assert list(measured.marker.color) == pytest.approx([1.0, 1 / 3, 1 / 3, 1 / 3])
    assert fig.layout.meta["disagree"] == [0]
    assert list(measured.marker.line.width) == [2.5, 0.5, 0.5, 0.5]
    assert fig.layout.meta["tau"] == pytest.approx(0.0)  # 3 concordant, 3 discordant pairs
    assert "fc1.out_features=4" in measured.text[0]
    assert fig.data[1].visible is False  # no predictions given


def test_scatter_refuses_a_table_without_measurements() -> None:
    with pytest.raises(NasvizError, match=r"lacks column\(s\) \['measured'\]: pass the output"):
        latency_flops_figure(pd.DataFrame({"flops": [1.0]}))
    with pytest.raises(NasvizError, match="threshold=2 must be a fraction"):
        latency_flops_figure(pd.DataFrame({"flops": [1.0], "measured": [1.0]}), threshold=2)


def test_scatter_view_measures_and_draws() -> None:
    model, x = searchable_mlp()
    lm, _ = build_latency_model(
        model, x, options={"measure": fake_measure, "calibration": 1, "smooth": False}
    )
    view = LatencyScatter(model, x, n=6, latency_model=lm, measure=fake_measure)
    table = view.measure()
    assert len(view.fig.data[0].x) == 6 and view.table is table
    for cfg, y in zip(table["config"], view.fig.data[0].y):
        assert y == pytest.approx(1e3 * lat(cfg[H1], cfg[H2]))
    assert list(view.fig.data[1].y) == pytest.approx(list(view.fig.data[0].y))  # exact model
    assert "prediction |error| median 0.0%" in view.status.value


def test_explorer_shows_predicted_latency_against_the_limit() -> None:
    model, x = searchable_mlp()
    lm, _ = build_latency_model(
        model, x, options={"measure": fake_measure, "calibration": 1, "smooth": False}
    )
    ex = SubnetExplorer(model, x, constraints={"latency": "70%"}, latency_model=lm)
    bar = ex.cost_fig.data[0]
    assert list(bar.y) == ["flops", "params", "latency"]
    assert ex.latency == pytest.approx(lat(16, 16)) and ex.feasible is False
    ex.value = {H1: 4, H2: 8}
    assert ex.latency == pytest.approx(lat(4, 8))
    assert bar.x[2] == pytest.approx(100 * lat(4, 8) / lat(16, 16))
    assert ex.feasible is True and bar.marker.color[2] == COLORS["feasible"]
    assert "latency (predicted)</b> 1.35 ms" in ex.cost_label.value
    ex.value = {H1: 16, H2: 12}
    assert ex.feasible is False and bar.marker.color[2] == COLORS["infeasible"]
    limit_x = [s.x0 for s in ex.cost_fig.layout.shapes]
    assert limit_x == pytest.approx([70.0])


def test_explorer_without_latency_keeps_two_bars() -> None:
    model, x = searchable_mlp()
    ex = SubnetExplorer(model, x, constraints={"flops": "50%"})
    assert list(ex.cost_fig.data[0].y) == ["flops", "params"] and ex.latency is None


def test_bisection_animation_shows_latency_of_a_latency_search() -> None:
    model, x = searchable_mlp()
    anim = BisectionAnimation()
    state = BinarySearcher().search(
        model,
        {"latency": "70%"},
        dummy_input=x,
        config={
            "score_func": known_score,
            "callbacks": [anim],
            "latency": {"measure": fake_measure, "calibration": 0, "smooth": False},
        },
    )
    assert "latency" in anim.metric_toggle.options and anim.metric == "latency"
    assert anim.limit == pytest.approx(0.7 * lat(16, 16))
    anim.frame = anim.n_frames
    ys = list(anim.fig.data[3].y)  # bisection candidates: predicted latency
    assert ys == pytest.approx([s.latency for s in anim.steps])
    final = list(anim.fig.data[6].y)
    assert final == pytest.approx([state["best"]["latency"]])
    assert "latency (measured)" in anim.detail.value
    replay = BisectionAnimation.from_state(state)
    assert replay.metric == "latency" and replay.steps == anim.steps
    replay.metric_toggle.value = "flops"
    assert list(replay.fig.data[3].y) == [s.flops for s in replay.steps]
    assert nv.get_subnet_config(model) == state["best"]["config"]
