"""Capture with torch.export, untraceable children analysed alone, what is known without input."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

import nasviz as nv
from nasviz.errors import MissingDummyInputWarning
from nasviz.tracing import analyze, capture
from nasviz.tracing.exported import export_graph

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {
    "nn.Conv1d": {"channel_divisor": 1},
    "nn.Conv2d": {"channel_divisor": 1},
    "nn.Linear": {"feature_divisor": 1},
    "nn.BatchNorm1d": {"feature_divisor": 1},
    "nn.BatchNorm2d": {"feature_divisor": 1},
    "nn.GroupNorm": {"channel_divisor": 1},
}


class Gate(nn.Module):
    """Data-dependent control flow: neither fx nor torch.export can capture it."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.mean() > 0:
            return torch.relu(self.conv(x))
        return x


class GateNet(nn.Module):
    """Plain conv-BN blocks with an untraceable Gate next to them."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.gate = Gate(16)
        self.conv2 = nn.Conv2d(16, 24, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(24)
        self.conv3 = nn.Conv2d(24, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.gate(torch.relu(self.bn(self.stem(x))))
        x = self.conv3(torch.relu(self.bn2(self.conv2(x))))
        return self.head(x.mean((-2, -1)))


def _hparams(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(hp.choices) for n, hp in nv.search_space(model).hparams.items()}


def test_export_maps_layer_calls_back_to_modules() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    graph = export_graph(model, ((torch.randn(2, 3, 8, 8),), {}))
    calls = [n.target for n in graph.nodes if n.op == "call_module"]
    assert calls == ["0", "1", "3"]  # the ReLU is an aten op, the layers are module calls
    assert [n.op for n in graph.nodes].count("get_attr") == 0  # weights belong to the calls


class ShapeBranch(nn.Module):
    """fx cannot branch on a size; torch.export specialises it on the example."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 2)
        self.norm = nn.LayerNorm(16)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.a(x))
        if h.shape[0] > 1:
            h = torch.relu(h)
        return self.b(h)


def test_a_model_fx_cannot_trace_is_exported() -> None:
    model, x = ShapeBranch(), torch.randn(3, 6)
    cap = capture(model, {"x": x})
    assert [g.exported for g in cap.graphs] == [True]
    layers = analyze(model, cap).layers
    assert layers["norm"].dims["normalized_shape"] == layers["a"].dims["out_features"]


@pytest.mark.parametrize("form", ["tensor", "tuple", "dict"])
def test_dummy_input_forms(form: str) -> None:
    class TwoIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 12)
            self.b = nn.Linear(12, 3)

        def forward(self, x: Tensor, scale: float = 1.0) -> Tensor:
            return self.b(torch.relu(self.a(x))) * scale

    x = torch.randn(4, 6)
    given = {"tensor": x, "tuple": (x, 2.0), "dict": {"x": x, "scale": 2.0}}[form]
    model = nv.convert(TwoIn(), mode=[("fastnas", CFG)], dummy_input=given)
    assert "a.out_features" in _hparams(model)


def test_an_untraceable_child_never_freezes_its_siblings() -> None:
    torch.manual_seed(0)
    model = GateNet().eval()
    x = torch.randn(2, 3, 8, 8)
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    hps = _hparams(model)
    # conv2 -> bn2 -> conv3 is a sibling block after the gate: searchable
    assert "conv2.out_channels" in hps
    # the gate's own conv was analysed alone: its output leaves the gate, so it stays static
    # with a reason that names the gate; its input (the stem) is consumed by the opaque gate
    static = nv.search_space(model).static
    rows = {(m, a): r for m, a, r in zip(static["module"], static["attr"], static["reason"])}
    assert "gate" in rows[("gate.conv", "out_channels")]
    assert "gate" in rows[("stem", "out_channels")]
    notes = " ".join(nv.search_space(model).notes)
    assert "analysed alone" in notes
    assert "torch.export failed" in notes


def test_an_untraceable_child_without_dummy_input() -> None:
    model = GateNet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingDummyInputWarning)
        nv.convert(model, mode=[("fastnas", CFG)])
    assert "conv2.out_channels" in _hparams(model)


def test_a_train_mode_untraceable_model_converts_and_keeps_its_statistics() -> None:
    torch.manual_seed(0)
    model = GateNet().train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x = torch.randn(2, 3, 8, 8)
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)  # self-check passes
    assert model.training
    for k, v in stats.items():
        assert torch.equal(v, model.state_dict()[k]), k


def _resnet_head() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def test_without_dummy_input_an_adaptive_pool_flatten_linear_head_is_prunable() -> None:
    model = _resnet_head()
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingDummyInputWarning)  # nothing stays static for it
        nv.convert(model, mode=[("fastnas", CFG)])
    hps = _hparams(model)
    assert "3.out_channels" in hps
    nv.select(model, {"3.out_channels": hps["3.out_channels"][0]})
    assert nv.export(model)(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_a_pooled_size_larger_than_one_repeats_the_channels() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d((2, 3)), nn.Flatten(), nn.Linear(48, 4)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingDummyInputWarning)
        nv.convert(model, mode=[("fastnas", CFG)])
    layout = nv.search_space(model)
    assert "0.out_channels" in layout.hparams
    nv.select(model, {"0.out_channels": 4})
    assert nv.export(model)[3].in_features == 24


@pytest.mark.parametrize("norm", ["bn1d", "groupnorm", "bn1d_seq"])
def test_without_dummy_input_bn1d_and_groupnorm_follow_their_producer(norm: str) -> None:
    if norm == "bn1d":
        model: nn.Module = nn.Sequential(
            nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3)
        )
        name, x = "0.out_features", torch.randn(4, 8)
    elif norm == "bn1d_seq":
        model = nn.Sequential(nn.Conv1d(4, 16, 3), nn.BatchNorm1d(16), nn.Conv1d(16, 2, 1))
        name, x = "0.out_channels", torch.randn(2, 4, 10)
    else:
        model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.GroupNorm(4, 16), nn.Conv2d(16, 2, 1))
        name, x = "0.out_channels", torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingDummyInputWarning)
        nv.convert(model, mode=[("fastnas", CFG)])
    hps = _hparams(model)
    assert name in hps
    nv.select(model, {name: hps[name][0]})
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), nv.export(model)(x), atol=1e-5)


def test_one_warning_counts_what_stayed_static_for_lack_of_a_dummy_input() -> None:
    class ViewHead(nn.Module):  # a reshape needs the spatial size: unknown without input
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.fc = nn.Linear(8 * 6 * 6, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(self.conv(x).reshape(x.shape[0], -1))

    with pytest.warns(MissingDummyInputWarning) as record:
        nv.convert(ViewHead(), mode=[("fastnas", CFG)])
    assert len(record) == 1
    text = str(record[0].message)
    assert "conv.out_channels" in text
    assert "dummy_input=x" in text


def test_every_aten_kind_has_a_handler_and_layer_ops_are_named() -> None:
    from nasviz.tracing.analyze import _Analyzer
    from nasviz.tracing.aten import ATEN_KINDS, aten_kind
    from nasviz.tracing.rules import classify_function

    missing = sorted({k for k in ATEN_KINDS.values() if not hasattr(_Analyzer, f"_op_{k}")})
    assert missing == []
    assert classify_function(torch.ops.aten.view.default).kind == "view"
    assert classify_function(torch.ops.aten.adaptive_avg_pool2d.default).arg == 2
    assert aten_kind(torch.relu) is None  # not an aten overload: the torch table decides
    assert classify_function(torch.ops.aten.roll.default).name == "aten.roll"
