"""The explorer's decision panel without a browser, on the tiny MLP (score additive, known map):
predicted drop while sliding, predicted vs measured, the front and its click handler, pins,
search again, code; the heatmap's raw/monotone view and map files.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import nasviz as nv
from nasviz.errors import NasvizError
from nasviz.fastnas import predict_drop
from nasviz.testing import FC1, FC2, KNOWN_DROPS, known_score, searchable_mlp
from nasviz.widgets.explorer import SubnetExplorer
from nasviz.widgets.heatmap import SensitivityHeatmap

SMAP = {n: {c: d for c, d in v.items() if c != 16} for n, v in KNOWN_DROPS.items()}
CHOICES = {FC1: [4, 8, 12, 16], FC2: [4, 8, 12, 16]}


@pytest.fixture
def ex() -> SubnetExplorer:
    model, x = searchable_mlp()
    return SubnetExplorer(
        model, x, constraints={"flops": "60%"}, sensitivity_map=SMAP,
        score_func=known_score, original_score=1.0,
    )  # fmt: skip


def test_predicted_drop_follows_the_sliders(ex: SubnetExplorer) -> None:
    assert ex.predicted_drop == 0.0
    ex.value = {FC1: 8, FC2: 12}
    assert ex.predicted_drop == pytest.approx(0.07)
    label = ex.decide.predicted_label.value
    assert "+0.0700" in label and "additivity" in label
    cur = ex.decide.front_fig.data[1]
    assert cur.y == pytest.approx((0.07,))
    assert cur.x == pytest.approx((100.0 * ex.estimate[0] / ex.full[0],))


def test_front_is_drawn_and_a_click_sets_the_sliders(ex: SubnetExplorer) -> None:
    front = ex.decide.front
    pts = ex.decide.front_fig.data[0]
    assert len(pts.x) == len(front) >= 3
    assert pts.y == pytest.approx(tuple(front["drop"]))
    k = len(front) // 2
    ex.decide.front_clicked(pts, SimpleNamespace(point_inds=[k]), None)
    assert ex.value == front["config"].iloc[k]
    assert ex.predicted_drop == pytest.approx(front["drop"].iloc[k])
    ex.decide.front_clicked(pts, SimpleNamespace(point_inds=[]), None)  # a click off the points
    assert ex.value == front["config"].iloc[k]


def test_pins_hold_through_the_threshold_and_the_front(ex: SubnetExplorer) -> None:
    ex.sliders[FC1].value = 12
    ex.lock(FC1)
    assert ex.pins == {FC1: 12}
    assert ex.sliders[FC1].disabled
    ex.threshold.value = ex.threshold.options[-1][1]  # tolerate everything
    assert ex.value == {FC1: 12, FC2: 4}
    assert set(ex.decide.front[FC1]) == {12}
    assert "1 locked" in ex.decide.front_fig.layout.title.text
    ex.lock(FC1, False)
    assert not ex.sliders[FC1].disabled and len(set(ex.decide.front[FC1])) > 1


def test_evaluate_shows_predicted_against_measured(ex: SubnetExplorer) -> None:
    for config in ({FC1: 8, FC2: 12}, {FC1: 4, FC2: 16}):
        ex.value = config
        ex.evaluate()
    table = ex.evaluations_table()
    assert list(table["predicted_drop"]) == pytest.approx([0.07, 0.30])
    # the tiny model's score is additive: measured = predicted
    assert list(table["measured_drop"]) == pytest.approx([0.07, 0.30])
    fig = ex.decide.agreement_fig
    assert fig.data[0].x == pytest.approx((0.07, 0.30)) and fig.data[0].y == pytest.approx(
        fig.data[0].x
    )
    assert "predicted_drop" in ex.result.value


def test_search_again_keeps_the_pins_and_marks_its_pick(ex: SubnetExplorer) -> None:
    ex.sliders[FC2].value = 8
    ex.lock(FC2)
    state = ex.decide.search_again()
    assert state["best"]["config"][FC2] == 8
    assert ex.value == state["best"]["config"]
    pick = ex.decide.front_fig.data[2]
    assert pick.y == pytest.approx((predict_drop(SMAP, state["best"]["config"]),))
    assert "search: score" in ex.decide.status.value


def test_search_again_needs_a_score_func() -> None:
    model, x = searchable_mlp()
    ex = SubnetExplorer(model, x, constraints={"flops": "60%"}, sensitivity_map=SMAP)
    assert ex.decide.search_button.disabled
    with pytest.raises(NasvizError, match="needs constraints, a score_func"):
        ex.decide.search_again()


def test_show_as_code_reproduces_the_choice(ex: SubnetExplorer) -> None:
    ex.value = {FC1: 4, FC2: 12}
    ex.decide.code_button.click()
    code = ex.decide.code.value
    fresh, _ = searchable_mlp(seed=3)
    scope: dict[str, Any] = {"model": fresh}
    exec(code, scope)
    assert nv.get_subnet_config(fresh) == {FC1: 4, FC2: 12}
    assert isinstance(scope["config"], nv.FastNASConfig)


def test_explorer_and_heatmap_from_a_map_file(tmp_path: Path) -> None:
    path = nv.save_sensitivity_map(SMAP, tmp_path / "m.json", choices=CHOICES, original_score=1.0)
    model, x = searchable_mlp()
    ex = SubnetExplorer.from_map_file(model, x, path, constraints={"flops": "60%"})
    assert ex.sensitivity_map == SMAP and ex.decide.original_score == 1.0
    hm = SensitivityHeatmap.from_map_file(path)
    assert hm.sensitivity_map == SMAP
    assert hm.n_cells == 6
    nv.save_sensitivity_map(SMAP, tmp_path / "bare.json")
    with pytest.raises(NasvizError, match="has no 'choices'"):
        SensitivityHeatmap.from_map_file(tmp_path / "bare.json")


def test_heatmap_raw_and_monotone_views_mark_the_changed_cells(tmp_path: Path) -> None:
    raw = {FC1: {4: 0.01, 8: 0.05, 12: 0.02}, FC2: SMAP[FC2]}
    path = nv.save_sensitivity_map(raw, tmp_path / "m.json", choices=CHOICES)
    hm = SensitivityHeatmap.from_map_file(path, columns="width")
    assert hm.changed_cells == [(FC1, 8), (FC1, 12)]
    assert hm.z[0] == pytest.approx([0.01, 0.05, 0.02])
    marks = hm.fig.data[1]
    assert list(marks.x) == ["8", "12"] and list(marks.y) == [FC1, FC1]
    hm.drops_toggle.value = "monotone"
    assert hm.z[0] == pytest.approx([0.01, 0.01, 0.01])
    assert next(list(r) for r in hm.fig.data[0].z) == pytest.approx([0.01, 0.01, 0.01])
    assert list(hm.fig.data[1].x) == ["8", "12"]  # still marked
    assert hm.z[1] == pytest.approx([0.20, 0.03, 0.02])  # already monotone: unchanged
    with pytest.raises(NasvizError, match="drops='x'"):
        SensitivityHeatmap(drops="x")  # type: ignore[arg-type]


def test_markers_do_not_catch_clicks_meant_for_the_front(ex: SubnetExplorer) -> None:
    # a real click goes to the nearest hoverable point: the current-choice cross and the search's
    # pick sit on front points, so they must not be hoverable
    fig = ex.decide.front_fig
    assert fig.data[1].hoverinfo == "skip" and fig.data[2].hoverinfo == "skip"
    assert fig.data[0].hoverinfo != "skip"
