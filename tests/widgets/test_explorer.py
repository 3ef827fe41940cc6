"""SubnetExplorer without a browser: move sliders, read FigureWidget data and labels, press
Evaluate through its handler, export, and check the threshold rule against the searcher's.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.dynamic import DynamicModule
from nasviz.errors import NasvizError
from nasviz.widgets._base import COLORS, fmt_flops, fmt_params
from nasviz.widgets.explorer import SubnetExplorer, config_at_threshold, threshold_levels

A, B = "0.out_channels", "3.out_channels"  # the two channel groups of _net()
CONFIG = nv.FastNASConfig(
    **{
        "nn.Conv2d": {"channel_divisor": 2, "channels_ratio": [0.25, 0.5, 0.75, 1.0]},
        "nn.BatchNorm2d": {"feature_divisor": 2},
        "nn.Linear": {"feature_divisor": 2},
    }
)
# widths: A in (2, 4, 6, 8), B in (4, 8, 12, 16); drops are made up, known answers below
SMAP = {A: {2: 0.30, 4: 0.10, 6: 0.02}, B: {4: 0.50, 8: 0.05, 12: 0.01}}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )  # fmt: skip


X = torch.randn(4, 3, 8, 8)


@pytest.fixture
def model() -> nn.Module:
    return nv.convert(_net(), mode=[("fastnas", CONFIG)], dummy_input=X)


@pytest.fixture
def explorer(model: nn.Module) -> SubnetExplorer:
    return SubnetExplorer(model, X, constraints={"flops": "50%"}, sensitivity_map=SMAP)


def test_sliders_snap_to_the_choices(explorer: SubnetExplorer) -> None:
    assert explorer.sliders[A].options == (2, 4, 6, 8)
    assert explorer.sliders[B].options == (4, 8, 12, 16)
    assert explorer.value == {A: 8, B: 16} == nv.get_subnet_config(explorer.model)
    assert explorer.estimate == (explorer.cost_model.full_flops, explorer.cost_model.full_params)


def test_moving_a_slider_updates_the_figures_and_labels(explorer: SubnetExplorer) -> None:
    explorer.sliders[A].value = 4
    explorer.sliders[B].value = 8
    flops, params = explorer.cost_model.estimate({A: 4, B: 8})
    assert explorer.estimate == (flops, params)
    assert explorer.channels_fig.data[1].y == (4, 8)
    assert explorer.channels_fig.data[0].y == (8, 16)  # the originals stay
    assert fmt_flops(flops) in explorer.cost_label.value
    assert fmt_params(params) in explorer.cost_label.value
    full_flops, full_params = explorer.full
    bar = explorer.cost_fig.data[0]
    assert bar.x == pytest.approx((100 * flops / full_flops, 100 * params / full_params))
    # the estimate is the real cost of the subnet
    nv.select(explorer.model, explorer.value)
    assert nv.profile(explorer.model, X).flops == flops
    assert nv.profile(nv.export(explorer.model), X).params == params


def test_over_the_limit_turns_red(explorer: SubnetExplorer) -> None:
    assert explorer.feasible is False
    assert explorer.cost_fig.data[0].marker.color[0] == COLORS["infeasible"]
    assert COLORS["infeasible"] in explorer.cost_label.value
    explorer.value = {A: 2, B: 4}
    assert explorer.feasible is True
    assert explorer.cost_fig.data[0].marker.color == (COLORS["feasible"],) * 2
    assert COLORS["infeasible"] not in explorer.cost_label.value
    limit = explorer.cost_fig.layout.shapes[0]
    assert limit.x0 == pytest.approx(50.0)  # the FLOPs limit line at 50% of the full model


def test_threshold_slider_sets_the_groups(explorer: SubnetExplorer) -> None:
    assert [v for _, v in explorer.threshold.options] == [0.0, 0.01, 0.02, 0.05, 0.1, 0.3, 0.5]
    expected = {
        0.0: {A: 8, B: 16},
        0.01: {A: 8, B: 12},
        0.02: {A: 6, B: 12},
        0.05: {A: 6, B: 8},
        0.1: {A: 4, B: 8},
        0.3: {A: 2, B: 8},
        0.5: {A: 2, B: 4},
    }
    for level, config in expected.items():
        explorer.threshold.value = level
        assert explorer.value == config, level
        assert explorer.estimate == explorer.cost_model.estimate(config)
        assert explorer.channels_fig.data[1].y == tuple(config.values())


def test_threshold_rule_is_the_searchers(model: nn.Module) -> None:
    searcher = nv.BinarySearcher()
    searcher.model = model
    searcher.sensitivity_map = {k: dict(v) for k, v in SMAP.items()}
    hparams = nv.search_space(model).hparams
    for level in [-1.0, *threshold_levels(SMAP), 0.07, 1.0]:
        assert config_at_threshold(SMAP, hparams, level) == searcher._config_at(level)


@settings(max_examples=40, deadline=None)
@given(st.floats(-0.1, 0.6), st.floats(-0.1, 0.6))
def test_a_higher_threshold_never_widens(t1: float, t2: float) -> None:
    hparams = _HPARAMS()
    low, high = sorted((t1, t2))
    at_low, at_high = (config_at_threshold(SMAP, hparams, t) for t in (low, high))
    assert all(at_high[n] <= at_low[n] for n in hparams)
    assert all(w in hparams[n].choices for n, w in at_high.items())


def test_evaluate_scores_the_selected_subnet(explorer: SubnetExplorer) -> None:
    calls: list[dict[str, object]] = []
    calibrated: list[int] = []

    def score(m: nn.Module) -> float:
        calls.append(
            {
                "config": nv.get_subnet_config(m),
                "training": m.training,
                "button_disabled": explorer.evaluate_button.disabled,
            }
        )
        return 0.75

    def forward_loop(m: nn.Module) -> None:
        calibrated.append(1)
        m(X)

    explorer.score_func, explorer.forward_loop = score, forward_loop
    explorer.evaluate_button.disabled = False
    explorer.value = {A: 4, B: 12}
    explorer._evaluate_clicked()  # what a click does
    assert calls == [{"config": {A: 4, B: 12}, "training": False, "button_disabled": True}]
    assert calibrated == [1]
    assert not explorer.evaluate_button.disabled
    assert (
        explorer.progress.bar.bar_style == "success" and "0.7500" in explorer.progress.label.value
    )
    table = explorer.evaluations_table()
    assert table.loc[0, "score"] == 0.75 and table.loc[0, A] == 4 and table.loc[0, B] == 12
    assert "0.7500" in explorer.result.value


def test_a_failing_score_func_is_shown_not_raised(model: nn.Module) -> None:
    def broken(m: nn.Module) -> float:
        raise RuntimeError("no data")

    ex = SubnetExplorer(model, X, score_func=broken)
    ex.evaluate_button.click()
    assert ex.progress.bar.bar_style == "danger"
    assert "RuntimeError: no data" in ex.progress.label.value
    assert not ex.evaluate_button.disabled and ex.evaluations == []
    with pytest.raises(RuntimeError, match="no data"):
        ex.evaluate()


def test_without_a_score_func_evaluate_is_disabled(explorer: SubnetExplorer) -> None:
    assert explorer.evaluate_button.disabled
    with pytest.raises(NasvizError, match="score_func"):
        explorer.evaluate()


def test_export_gives_the_subnets_outputs(explorer: SubnetExplorer) -> None:
    explorer.value = {A: 4, B: 8}
    small = explorer.export()
    assert isinstance(small, nn.Sequential)
    assert not any(isinstance(m, DynamicModule) for m in small.modules())
    assert small[0].out_channels == 4 and small[3].out_channels == 8
    explorer.model.eval()
    small.eval()
    assert nv.get_subnet_config(explorer.model) == {A: 4, B: 8}
    with torch.no_grad():
        torch.testing.assert_close(small(X), explorer.model(X), rtol=0, atol=1e-6)
    assert sum(p.numel() for p in small.parameters()) == explorer.estimate[1]


def test_value_setter_and_from_search_state(model: nn.Module) -> None:
    state = {"sensitivity_map": SMAP, "best": {"config": {A: 6, B: 8}}}
    ex = SubnetExplorer.from_search_state(model, X, state)
    assert ex.value == {A: 6, B: 8}
    assert not ex.threshold.disabled
    with pytest.raises(NasvizError, match="invalid widths"):
        ex.value = {A: 5}
    with pytest.raises(NasvizError, match="unknown groups"):
        ex.value = {"nope": 4}
    assert ex.value == {A: 6, B: 8}


def test_needs_configurable_groups() -> None:
    plain = nv.convert(_net(), mode="fastnas", dummy_input=X)  # divisor 32: nothing to choose
    with pytest.raises(NasvizError, match="no configurable channel groups"):
        SubnetExplorer(plain, X)


_CACHE: list[dict] = []


def _HPARAMS() -> dict:
    if not _CACHE:
        m = nv.convert(_net(), mode=[("fastnas", CONFIG)], dummy_input=X)
        _CACHE.append(nv.search_space(m).hparams)
    return _CACHE[0]


@pytest.mark.parametrize("error", [RuntimeError("no data"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_evaluate_leaves_the_model_as_it_was(
    model: nn.Module, error: BaseException
) -> None:
    """Issue #15 case 1: the score_func fails after the subnet was selected and BatchNorm was
    re-calibrated; the model's selection, weights, BN statistics and flags are put back.
    """

    def broken(m: nn.Module) -> float:
        raise error

    def forward_loop(m: nn.Module) -> None:
        m(X * 3 + 1)

    model.train()
    ex = SubnetExplorer(model, X, score_func=broken, forward_loop=forward_loop)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    objects = [id(t) for t in [*model.parameters(), *model.buffers()]]
    ex.value = {A: 4, B: 12}
    with pytest.raises(type(error)):
        ex.evaluate()
    assert nv.get_subnet_config(model) == {A: 8, B: 16}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [id(t) for t in [*model.parameters(), *model.buffers()]] == objects
    assert all(m.training for m in model.modules())
    assert ex.value == {A: 4, B: 12} and not ex.evaluate_button.disabled
