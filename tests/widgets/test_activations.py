"""ActivationViewer without a browser: set widget values, read FigureWidget data and the drift."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.demo import demo_config
from nasviz.errors import NasvizError
from nasviz.models import DigitsCNN
from nasviz.widgets.activations import ActivationViewer, default_module_ids, feature_panel


def _arr(values: object) -> np.ndarray:
    """Trace data as floats (the view sends None for NaN: widget messages are JSON)."""
    return np.array(values, dtype=float)


def _scaled_conv(scales: list[float]) -> nn.Sequential:
    """A 1x1 conv whose output channel k is ``scales[k] * x``; then flatten and a Linear."""
    conv = nn.Conv2d(1, len(scales), 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(scales).view(-1, 1, 1, 1))
    head = nn.Linear(len(scales) * 4, 3)
    with torch.no_grad():
        head.weight.fill_(0.5)
        head.bias.zero_()
    return nn.Sequential(conv, nn.Flatten(), head)


@pytest.fixture(scope="module")
def pair() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """Known answers: the full conv outputs (x, 2x), the subnet's only (x)."""
    torch.manual_seed(0)
    full, sub = _scaled_conv([1.0, 2.0]), _scaled_conv([1.0])
    return full, sub, torch.randn(3, 1, 2, 2)


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    model = nv.convert(DigitsCNN(width=16), mode=[("fastnas", demo_config())], dummy_input=x[:2])
    full = copy.deepcopy(model)
    nv.sample(full, "max")
    nv.sample(model, "min")
    return full, model, x


def test_mosaic_shows_leading_channels_and_blank_pruned_ones(pair):
    full, sub, x = pair
    viewer = ActivationViewer(full, sub, x, n_channels=2)
    assert viewer.module_ids == ["0"]  # the convs both models have
    z_full, z_sub = (_arr(t.z) for t in viewer.maps.data[:2])
    img = x[0, 0].numpy()
    assert z_full.shape == (2, 5)  # two 2x2 tiles side by side, one NaN column between
    np.testing.assert_allclose(z_full[:, :2], img, rtol=1e-6)
    np.testing.assert_allclose(z_full[:, 3:], 2 * img, rtol=1e-6)
    assert np.isnan(z_full[:, 2]).all()
    np.testing.assert_allclose(z_sub[:, :2], img, rtol=1e-6)
    assert np.isnan(z_sub[:, 3:]).all()  # channel 1 is pruned in the subnet: blank tile
    layout = viewer.maps.layout.coloraxis
    assert layout.cmin == pytest.approx(float(min(img.min(), 2 * img.min())))
    assert layout.cmax == pytest.approx(float(max(img.max(), 2 * img.max())))


def test_slider_and_mean_mode_redraw(pair):
    full, sub, x = pair
    viewer = ActivationViewer(full, sub, x)
    viewer.sample.value = 2
    np.testing.assert_allclose(_arr(viewer.maps.data[1].z)[:, :2], x[2, 0], rtol=1e-6)
    viewer.mode.value = "mean"
    np.testing.assert_allclose(_arr(viewer.maps.data[0].z), 1.5 * x[2, 0], rtol=1e-6)
    np.testing.assert_allclose(_arr(viewer.maps.data[1].z), x[2, 0], rtol=1e-6)
    assert "sample 2" in viewer.info.value and "channel mean over 2 / 1" in viewer.info.value


def test_drift_is_compare_activations_with_known_value(pair):
    full, sub, x = pair
    viewer = ActivationViewer(full, sub, x)
    # channel means: 1.5 x (full) vs x (subnet) -> rel_l2 = 0.5 / 1.5, cosine 1
    assert viewer.drift.loc[0, "rel_l2"] == pytest.approx(1 / 3)
    assert viewer.drift.loc[0, "cosine"] == pytest.approx(1.0)
    assert list(viewer.drift_fig.data[0].y) == pytest.approx([1 / 3])
    assert list(viewer.drift_fig.data[0].x) == ["0"]


def test_linear_output_is_drawn_as_bars(pair):
    full, sub, x = pair
    viewer = ActivationViewer(full, sub, x, module_ids=["2", "0"])
    assert viewer.layer.value == "2"
    bar_full, bar_sub = viewer.maps.data[2:]
    assert bar_full.visible and bar_sub.visible and not viewer.maps.data[0].visible
    with torch.no_grad():
        expected = full(x)[0].numpy()
    np.testing.assert_allclose(bar_full.y, expected, rtol=1e-5)
    assert len(bar_sub.y) == 3
    viewer.layer.value = "0"
    assert viewer.maps.data[0].visible and not viewer.maps.data[2].visible


def test_bar_click_picks_the_layer(pair):
    full, sub, x = pair
    viewer = ActivationViewer(full, sub, x, module_ids=["0", "2"])

    class Points:
        point_inds = [1]

    viewer._on_bar_click(None, Points(), None)
    assert viewer.layer.value == "2"
    assert list(viewer.drift_fig.data[0].marker.color) == ["#1f77b4", "#ff7f0e"]


def test_default_ids_are_the_prunable_convs(digits):
    full, sub, _ = digits
    ids = default_module_ids(full, sub)
    assert ids == ["stem.0", "res_conv1.0", "res_conv2.0", "ir_expand.0", "ir_depthwise.0",
                   "ir_project.0"]  # fmt: skip
    exported = nv.export(sub)
    assert default_module_ids(full, exported) == ids  # the same ids on the exported model


def test_refresh_follows_a_new_subnet_and_restores_modes(digits):
    full, sub, x = digits
    sub.train()
    viewer = ActivationViewer(full, sub, x, n_channels=8)
    assert sub.training and sub.stem[0].training  # flags restored after the runs
    assert viewer.drift["rel_l2"].gt(0.01).all()
    z_sub = _arr(viewer.maps.data[1].z)
    assert np.isnan(z_sub).sum() > np.isnan(_arr(viewer.maps.data[0].z)).sum()
    nv.sample(sub, "max")
    try:
        viewer.refresh()
        assert viewer.drift["rel_l2"].max() < 1e-6
        np.testing.assert_allclose(
            _arr(viewer.maps.data[1].z), _arr(viewer.maps.data[0].z), atol=1e-5
        )
        assert viewer.subnet_activations["ir_expand.0"].shape[1] == 32
    finally:
        nv.sample(sub, "min")
        sub.eval()


def test_exported_subnet_gives_the_same_drift(digits):
    full, sub, x = digits
    viewer_sub = ActivationViewer(full, sub, x)
    viewer_exp = ActivationViewer(full, nv.export(sub), x)
    np.testing.assert_allclose(viewer_exp.drift["rel_l2"], viewer_sub.drift["rel_l2"], atol=1e-5)


def test_bad_arguments_are_refused(pair):
    full, sub, x = pair
    with pytest.raises(NasvizError, match=r"'2' is not a sub-module of subnet_model"):
        ActivationViewer(full, nn.Sequential(nn.Conv2d(1, 1, 1)), x, module_ids=["0", "2"])
    with pytest.raises(NasvizError, match="'nope' is not a sub-module of full_model"):
        ActivationViewer(full, sub, x, module_ids=["nope"])
    with pytest.raises(NasvizError, match="inputs must be a batch tensor"):
        ActivationViewer(full, sub, [x])  # type: ignore[arg-type]
    with pytest.raises(NasvizError, match="no module ids"):
        ActivationViewer(full, sub, x, module_ids=[])


def test_feature_panel_shapes():
    t = torch.arange(24.0).reshape(3, 2, 4)
    assert feature_panel(t, "mean", 3, 2).shape == (2, 4)
    rows = feature_panel(t[:, 0], "channels", 3, 5)  # (C, L) -> first channels as rows
    assert rows.shape == (5, 4) and np.isnan(rows[3:]).all()
    assert feature_panel(torch.ones(7), "channels", 7, 4).shape == (7,)


def test_trace_data_is_json_safe(pair):
    full, sub, x = pair
    viewer = ActivationViewer(full, sub, x, n_channels=2)
    z_sub = viewer.maps.data[1].z
    flat = [v for row in z_sub for v in row]
    assert None in flat and not any(isinstance(v, float) and np.isnan(v) for v in flat)
    json.dumps(viewer.maps.to_plotly_json()["data"][1]["z"], allow_nan=False)
