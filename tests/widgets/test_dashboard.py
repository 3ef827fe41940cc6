"""Dashboard without a browser: convert, run the search, read every view and the engine objects."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.demo import demo_config
from nasviz.errors import NasvizError
from nasviz.models import DigitsCNN
from nasviz.widgets.dashboard import TABS, Dashboard


def _setup() -> tuple[
    nn.Module, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], Callable[[nn.Module], float]
]:
    torch.manual_seed(0)
    model = DigitsCNN(width=8).eval()
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        ref = model(x)
    loader = [(x[:8], torch.zeros(8, dtype=torch.long)), (x[8:], torch.zeros(8))]

    def score(m: nn.Module) -> float:  # closeness to the full model's outputs (0 is best)
        with torch.no_grad():
            return -float((m(x) - ref).pow(2).mean())

    return model, x, loader, score


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Dashboard:
    model, x, loader, score = _setup()
    dash = Dashboard(
        model, x[:2], score_func=score, data_loader=loader, constraints={"flops": "60%"},
        config=demo_config(), inputs=x[:4], path=tmp_path_factory.mktemp("d") / "p.pt",
        factory=lambda: DigitsCNN(width=8),
    )  # fmt: skip
    assert dash.run_button.disabled  # nothing to search before the conversion
    dash.convert_button.click()
    assert dash.convert_button.disabled and not dash.run_button.disabled
    dash.run_button.click()
    return dash


def test_tabs_and_conversion(searched):
    dash = searched
    assert tuple(dash.tabs.titles) == TABS
    assert "converted: SearchSpace(3 hparams" in dash.config_status.value
    space = nv.search_space(dash.model)
    assert list(space.hparams) == [
        "stem.0.out_channels", "res_conv1.0.out_channels", "ir_expand.0.out_channels"
    ]  # fmt: skip
    assert dash.config.rule_for("nn.Conv2d", "stem.0").rule.channel_divisor == 4
    assert [c.children[0] for c in dash.tabs.children[2:]] == [
        dash.explorer.widget, dash.activations.widget, dash.export_panel.widget
    ]  # fmt: skip


def test_search_fills_the_views_and_selects_the_best(searched):
    dash = searched
    state = dash.search_state
    assert state is not None and "error" not in dash.search_status.value.lower()
    best = state["best"]
    assert nv.get_subnet_config(dash.model) == best["config"]
    full_flops = nv.profile(dash.full_model, dash.dummy_input).flops
    assert best["flops"] <= 0.6 * full_flops
    assert nv.profile(nv.export(dash.model), dash.dummy_input).flops <= 0.6 * full_flops
    history = nv.SearchHistory.from_records(state["history"])
    assert dash.heatmap.n_cells == len(history.sensitivity_table()) > 0
    assert len(dash.bisection.steps) == len(history.bisection_table()) > 0
    assert dash.bisection.final_config == best["config"]
    assert dash.progress.bar.bar_style == "success" and "done in" in dash.progress.label.value
    assert dash.search_views.children == (dash.heatmap.widget, dash.bisection.widget)
    # the explorer starts at the chosen subnet, over the map
    assert dash.explorer.value == best["config"]
    assert dash.explorer.sensitivity_map == {
        n: {int(c): float(d) for c, d in v.items()} for n, v in state["sensitivity_map"].items()
    }
    # the activations show the chosen subnet against the unpruned copy
    drift = nv.compare_activations(
        dash.full_model, dash.model, dash.inputs, dash.activations.module_ids
    )
    np.testing.assert_allclose(dash.activations.drift["rel_l2"], drift["rel_l2"], rtol=1e-6)
    assert all(not isinstance(m, nv.HooksHandle) for m in dash.full_model.modules())
    stem = dash.activations.subnet_activations["stem.0"]
    assert stem.shape[1] == best["config"]["stem.0.out_channels"]


def test_export_tab_exports_the_chosen_subnet(searched):
    dash = searched
    dash.export_panel.export_button.click()
    assert dash.exported is dash.export_panel.exported is not None
    assert dash.export_panel.path.is_file() and dash.export_panel.check.ok
    assert dash.exported.stem[0].out_channels == dash.search_state["best"]["config"][
        "stem.0.out_channels"
    ]  # fmt: skip
    restored = nv.restore(DigitsCNN(width=8), dash.export_panel.path)
    with torch.no_grad():
        assert torch.allclose(restored.eval()(dash.inputs), dash.exported(dash.inputs), atol=1e-6)


def test_dashboard_on_a_converted_model():
    model, x, _, _ = _setup()
    nv.convert(model, mode=[("fastnas", demo_config())], dummy_input=x[:2])
    nv.sample(model, "min")
    dash = Dashboard(model, x[:2])  # no score_func: nothing to search
    assert dash.convert_button.disabled and dash.run_button.disabled
    assert dash.config.rule_for("nn.Conv2d", "res_conv1.0").rule.channel_divisor == 4
    assert dash.explorer is not None and dash.explorer.value == nv.get_subnet_config(model)
    full_cfg = {n: hp.max for n, hp in nv.search_space(model).hparams.items()}
    assert nv.get_subnet_config(dash.full_model) == full_cfg  # type: ignore[arg-type]  # a copy at full width; set once converted
    assert nv.get_subnet_config(model) != full_cfg  # the model keeps its subnet
    with pytest.raises(NasvizError, match="converted already"):
        dash.convert()
    with pytest.raises(NasvizError, match="needs a score_func"):
        dash.run_search()


def test_errors_are_shown_on_buttons_and_raised_in_python():
    model, x, _, score = _setup()
    dash = Dashboard(copy.deepcopy(model), x[:2], score_func=score)
    assert "convert the model first" in dash.explore_box.children[0].value
    dash._guard(dash.run_search)  # what the button does before a conversion
    assert "convert the model first" in dash.search_status.value
    with pytest.raises(NasvizError, match="convert the model first"):
        dash.run_search()
    with pytest.raises(NasvizError, match="dummy_input is required"):
        Dashboard(model, None)


def test_dashboard_over_a_finished_search(searched):
    done = searched
    dash = Dashboard(
        done.model, done.dummy_input, score_func=done.score_func, inputs=done.inputs,
        full_model=done.full_model, search_state=done.search_state,
    )  # fmt: skip
    assert dash.full_model is done.full_model  # the pre-search copy, not a new one
    assert dash.heatmap.n_cells == done.heatmap.n_cells > 0  # replayed from the history
    assert dash.bisection.final_config == done.search_state["best"]["config"]
    assert dash.explorer.value == done.search_state["best"]["config"]
    np.testing.assert_allclose(dash.activations.drift["rel_l2"], done.activations.drift["rel_l2"])
