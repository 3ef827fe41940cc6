"""Layer subclasses with their own forward: where their channels are comes from that forward.

The capture traces through the subclass and its family's functional op on its own weights
becomes the layer's call (fx and torch.export alike); the family's standard rule then applies to
the tensor that op receives. A subclass whose forward reads its channels from another dimension,
computes on its weights or cannot be traced stays static with the reason.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import nasviz as nv
from nasviz.fastnas import FastNASConfig
from nasviz.models import BatchNormAct2d, LayerNorm2dTV
from nasviz.space import get_record
from nasviz.tracing import analyze, capture, make_plan
from nasviz.tracing.exported import export_graph
from nasviz.tracing.functional import LAYER_OP_KEY, collapse_layer_ops
from nasviz.tracing.graph import Capture, CapturedGraph, _LeafTracer

SMALL = FastNASConfig.with_divisor(2)


class WrongAxisNorm(nn.LayerNorm):
    """A LayerNorm subclass applied to NCHW without permuting: it normalises the width W."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class ShiftedBN(nn.BatchNorm2d):
    """Reads its bias a second time: sliced weights would no longer match this use."""

    def forward(self, x: Tensor) -> Tensor:
        y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, None, False)
        return y + self.bias.view(1, -1, 1, 1)


class GatedLN(nn.LayerNorm):
    """Untraceable: a data-dependent branch in its forward."""

    def forward(self, x: Tensor) -> Tensor:
        y = x.permute(0, 2, 3, 1)
        if y.sum() > 0:
            y = F.layer_norm(y, self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class Net(nn.Module):
    """conv -> <norm under test> -> conv -> BatchNormAct2d -> pool -> flatten -> Linear."""

    def __init__(self, norm: type[nn.Module] = LayerNorm2dTV, width: int = 8) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, width, 3, padding=1)
        self.norm = norm(8 if norm is WrongAxisNorm else width)
        self.b = nn.Conv2d(width, 12, 3, padding=1)
        self.bn = BatchNormAct2d(12)
        self.head = nn.Linear(12, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.b(self.norm(self.a(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _plan(model: nn.Module, x: Tensor | None) -> tuple[list[str], dict[tuple[str, str], str]]:
    plan = make_plan(model, analyze(model, capture(model, x)), SMALL)
    return [g.name for g in plan.hparams], {
        (r["module"], r["attr"]): r["reason"] for r in plan.static
    }


def test_fx_capture_turns_the_family_op_inside_the_subclass_into_its_call() -> None:
    model = Net()
    graph = _LeafTracer().trace(model)
    assert "norm" not in [n.target for n in graph.nodes if n.op == "call_module"]
    assert collapse_layer_ops(model, graph) == 2  # F.layer_norm of norm, F.batch_norm of bn
    calls = {n.target: n for n in graph.nodes if n.op == "call_module"}
    assert calls["norm"].meta[LAYER_OP_KEY] == "layer_norm"
    assert calls["norm"].args[0].target == "permute"  # the op's input, not the module's
    assert calls["bn"].meta[LAYER_OP_KEY] == "batch_norm"
    assert not [n for n in graph.nodes if n.op == "get_attr" and n.target.startswith("norm.")]


def test_export_capture_marks_the_family_op_of_the_subclass() -> None:
    model = Net()
    graph = export_graph(model, ((torch.randn(2, 3, 8, 8),), {}))
    calls = {n.target: n for n in graph.nodes if n.op == "call_module"}
    assert calls["norm"].meta[LAYER_OP_KEY] == "layer_norm"
    assert calls["bn"].meta[LAYER_OP_KEY] == "batch_norm"
    cg = CapturedGraph("", model, graph, None, "the model input", "output layer", True)
    analysis = analyze(model, Capture(graphs=[cg]))
    plan = make_plan(model, analysis, SMALL)
    assert sorted(g.name for g in plan.hparams) == ["a.out_channels", "b.out_channels"]


def test_without_and_with_a_dummy_input_the_stream_prunes_through_both_subclasses() -> None:
    for x in (None, torch.randn(2, 3, 8, 8)):
        names, static = _plan(Net(), x)
        assert names == ["a.out_channels", "b.out_channels"]
        assert set(static) == {("a", "in_channels"), ("head", "out_features")}


def test_a_subclass_reading_another_dimension_stays_static_with_the_reason() -> None:
    names, static = _plan(Net(WrongAxisNorm), torch.randn(2, 3, 8, 8))
    assert "a.out_channels" not in names and "b.out_channels" in names
    assert "reads its channels from another dimension" in static[("norm", "normalized_shape")]
    assert "reads its channels from another dimension" in static[("a", "out_channels")]


def test_a_subclass_using_its_weights_otherwise_stays_static_with_the_reason() -> None:
    model = Net()
    model.bn = ShiftedBN(12)  # type: ignore[assignment]  # another norm in its place
    names, static = _plan(model, torch.randn(2, 3, 8, 8))
    assert names == ["a.out_channels"]
    assert "ShiftedBN overrides forward" in static[("bn", "num_features")]


def test_an_untraceable_subclass_is_one_opaque_op() -> None:
    names, static = _plan(Net(GatedLN), None)
    assert names == ["b.out_channels"]
    assert "GatedLN overrides forward" in static[("norm", "normalized_shape")]
    assert "consumed by GatedLN 'norm': unsupported op" in static[("a", "out_channels")]


def test_shape_propagation_through_a_train_graph_leaves_statistics_alone() -> None:
    model = Net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    capture(model, torch.randn(2, 3, 8, 8))  # the train graph runs F.batch_norm(training=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.training


_CACHE: dict[bool, tuple[nn.Module, Tensor]] = {}


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(with_input=st.booleans(), data=st.data())
def test_random_subnets_export_identically(with_input: bool, data: st.DataObject) -> None:
    if with_input not in _CACHE:
        torch.manual_seed(0)
        net, inp = Net(width=8).eval(), torch.randn(2, 3, 8, 8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nv.convert(net, mode=[("fastnas", SMALL)], dummy_input=inp if with_input else None)
        _CACHE[with_input] = (net, inp)
    model, x = _CACHE[with_input]
    hps = nv.search_space(model).hparams
    assert len(hps) == 2 and get_record(model) is not None
    nv.select(
        model, {n: data.draw(st.sampled_from(list(hp.choices)), label=n) for n, hp in hps.items()}
    )
    with torch.no_grad():
        y = model(x)
        small = nv.export(model)
        torch.testing.assert_close(small(x), y)
    assert type(small.norm) is LayerNorm2dTV and type(small.bn) is BatchNormAct2d
