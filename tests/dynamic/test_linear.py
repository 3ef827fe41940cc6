"""DynamicLinear (and the DynamicModule base through it): identical at full size, sliced subnets
that equal their exports, flatten -> Linear through RepeatDim, caching that is never stale.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasviz.config import DynamicLinearConfig
from nasviz.dynamic.base import DynamicModule, dynamic_class_for, is_dynamic
from nasviz.dynamic.linear import DynamicLinear
from nasviz.errors import HparamError, NasvizError
from nasviz.hparam import Hparam, RepeatDim

IN, OUT = 6, 8


def _make(bias: bool = True) -> tuple[nn.Linear, DynamicLinear]:
    torch.manual_seed(0)
    ref = nn.Linear(IN, OUT, bias=bias)
    return ref, DynamicLinear.convert(copy.deepcopy(ref))


def _select(
    lin: DynamicLinear,
    out: int,
    inp: int,
    out_order: list[int] | None = None,
    in_order: list[int] | None = None,
) -> tuple[Hparam, Hparam]:
    hp_out, hp_in = Hparam(range(1, OUT + 1), name="fc.out"), Hparam(range(1, IN + 1), name="x")
    lin.set_dim("out_features", hp_out)
    lin.set_dim("in_features", hp_in)
    if out_order is not None:
        hp_out.enforce_order(out_order)
    if in_order is not None:
        hp_in.enforce_order(in_order)
    hp_out.active, hp_in.active = out, inp
    return hp_out, hp_in


def _kept(hp: Hparam) -> torch.Tensor:
    idx = hp.active_slice
    return torch.arange(hp.original)[idx] if isinstance(idx, slice) else idx


def test_registered_and_converted_in_place() -> None:
    ref = nn.Linear(IN, OUT)
    params = list(ref.parameters())
    sd = {k: v.shape for k, v in ref.state_dict().items()}
    assert dynamic_class_for(ref) is DynamicLinear
    lin = DynamicLinear.convert(ref)
    assert lin is ref
    assert isinstance(lin, nn.Linear)
    assert is_dynamic(lin)
    assert all(a is b for a, b in zip(lin.parameters(), params))
    _select(lin, 3, 2)
    assert {k: v.shape for k, v in lin.state_dict().items()} == sd
    assert DynamicLinear.convert(lin) is lin  # idempotent
    assert DynamicLinear.unsupported_reason(nn.Linear(2, 2)) is None


def test_convert_refuses_other_layers_and_handles_subclasses() -> None:
    with pytest.raises(NasvizError, match="converts Linear layers, got Conv1d"):
        DynamicLinear.convert(nn.Conv1d(2, 2, 1))

    class MyLinear(nn.Linear):
        pass

    mine = DynamicLinear.convert(MyLinear(IN, OUT))
    assert isinstance(mine, MyLinear)
    assert isinstance(mine, DynamicLinear)
    assert type(mine).__name__ == "DynamicMyLinear"
    assert type(mine.unconvert()) is MyLinear


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, IN), (2, 3, IN)])
def test_full_size_outputs_identical(bias: bool, shape: tuple[int, ...]) -> None:
    ref, lin = _make(bias)
    _select(lin, OUT, IN)
    x = torch.randn(*shape)
    assert torch.equal(lin(x), ref(x))
    with torch.no_grad():
        assert torch.equal(lin(x), ref(x))


def test_attributes_read_active_and_refuse_assignment() -> None:
    _, lin = _make()
    _select(lin, 3, 2)
    assert (lin.out_features, lin.in_features) == (3, 2)
    assert repr(lin) == "DynamicLinear(in_features=2, out_features=3, bias=True)"
    with pytest.raises(HparamError, match="out_features is dynamic"):
        lin.out_features = 5
    assert lin.original("out_features") == OUT


def test_set_dim_checks_the_size() -> None:
    _, lin = _make()
    with pytest.raises(HparamError, match="out_features has 8 channels; a source of size 4"):
        lin.set_dim("out_features", Hparam([4]))
    with pytest.raises(NasvizError, match="no dynamic attribute 'kernel_size'"):
        lin.set_dim("kernel_size", None)


@pytest.mark.parametrize("bias", [True, False])
def test_gradients_zero_outside_the_active_slice(bias: bool) -> None:
    _, lin = _make(bias)
    hp_out, hp_in = _select(lin, 3, 4, [7, 2, 5, 0, 1, 3, 4, 6], [5, 0, 3, 1, 2, 4])
    exported = lin.export()
    x = torch.randn(4, 4)
    w = torch.randn(4, 3)
    (lin(x) * w).sum().backward()
    (exported(x) * w).sum().backward()
    rows, cols = _kept(hp_out), _kept(hp_in)
    mask = torch.zeros(OUT, IN, dtype=torch.bool)
    mask[rows[:, None], cols[None, :]] = True
    assert lin.weight.grad is not None
    assert torch.count_nonzero(lin.weight.grad[~mask]) == 0
    torch.testing.assert_close(lin.weight.grad[rows][:, cols], exported.weight.grad)
    if bias:
        assert lin.bias.grad is not None
        assert torch.count_nonzero(lin.bias.grad) == 3
        torch.testing.assert_close(lin.bias.grad[rows], exported.bias.grad)


@pytest.mark.parametrize("bias", [True, False])
def test_export_is_a_plain_linear_with_identical_outputs(bias: bool) -> None:
    ref, lin = _make(bias)
    hp_out, hp_in = _select(lin, 5, 3, None, [2, 4, 0, 1, 3, 5])
    lin.weight.requires_grad_(False)
    lin.eval()
    exported = lin.export()
    assert type(exported) is nn.Linear
    assert (exported.in_features, exported.out_features) == (3, 5)
    assert not exported.training
    assert not exported.weight.requires_grad
    assert (exported.bias is None) is not bias
    x = torch.randn(7, 3)
    assert torch.equal(lin(x), exported(x))
    # the subnet is the original layer on the kept inputs, restricted to the kept outputs
    full_x = torch.zeros(7, IN)
    full_x[:, _kept(hp_in)] = x
    torch.testing.assert_close(lin(x), ref(full_x)[:, _kept(hp_out)])


@settings(max_examples=60, deadline=None)
@given(
    out=st.integers(1, OUT),
    inp=st.integers(1, IN),
    out_order=st.permutations(list(range(OUT))),
    in_order=st.permutations(list(range(IN))),
    bias=st.booleans(),
    no_grad=st.booleans(),
)
def test_property_dynamic_equals_export(
    out: int, inp: int, out_order: list[int], in_order: list[int], bias: bool, no_grad: bool
) -> None:
    _, lin = _make(bias)
    _select(lin, out, inp, out_order, in_order)
    x = torch.randn(3, inp)
    exported = lin.export()
    with torch.set_grad_enabled(not no_grad):
        torch.testing.assert_close(lin(x), exported(x), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(lin(x), exported(x), rtol=1e-6, atol=1e-6)  # cached path


def test_flatten_to_linear_through_repeat_dim() -> None:
    torch.manual_seed(0)
    channels, spatial = 3, 4
    ref = nn.Linear(channels * spatial, 5)
    lin = DynamicLinear.convert(copy.deepcopy(ref))
    conv_out = Hparam([1, 2, 3], name="conv.out_channels")
    lin.set_dim("in_features", RepeatDim(conv_out, spatial))
    conv_out.enforce_order([2, 0, 1])
    conv_out.active = 2
    feat = torch.randn(2, channels, spatial)
    kept = feat[:, [2, 0]].flatten(1)  # what the pruned conv produces, flattened
    dropped = feat.clone()
    dropped[:, 1] = 0
    torch.testing.assert_close(lin(kept), ref(dropped.flatten(1)))
    torch.testing.assert_close(lin.export()(kept), lin(kept))


def test_state_dict_round_trip() -> None:
    _, lin = _make()
    _select(lin, 4, 3, [1, 0, 2, 3, 4, 5, 6, 7])
    with torch.no_grad():
        lin.weight.mul_(2)
    plain = nn.Linear(IN, OUT)
    plain.load_state_dict(lin.state_dict())
    _, lin2 = _make()
    lin2.load_state_dict(plain.state_dict())
    _select(lin2, 4, 3, [1, 0, 2, 3, 4, 5, 6, 7])
    x = torch.randn(2, 3)
    assert torch.equal(lin(x), lin2(x))


def test_unconvert() -> None:
    ref, lin = _make()
    hp_out, _ = _select(lin, 4, IN)
    with pytest.raises(NasvizError, match="out_features is not at full size"):
        lin.unconvert()
    hp_out.active = OUT
    plain = lin.unconvert()
    assert type(plain) is nn.Linear
    assert (plain.in_features, plain.out_features) == (IN, OUT)
    assert "_nv_dims" not in plain.__dict__
    x = torch.randn(2, IN)
    assert torch.equal(plain(x), ref(x))


def test_importance_costs_and_choices() -> None:
    ref, lin = _make()
    torch.testing.assert_close(lin.importance("out_features"), ref.weight.detach().norm(dim=1))
    assert lin.importance("in_features") is None
    _select(lin, 4, 3)
    assert lin.flops_ratio() == pytest.approx(4 * 3 / (OUT * IN))
    assert lin.active_param_count() == 4 * 3 + 4
    assert lin.active_shape("weight") == (4, 3)
    assert not lin.is_full()
    rule = DynamicLinearConfig(features_ratio=[0.25, 0.5, 1.0], feature_divisor=2)  # type: ignore[call-arg]  # LayerConfig fields are generated
    assert lin.choices_for("out_features", rule) == [2, 4, 8]
    assert lin.choices_for("in_features", rule) is None
    assert lin.channel_block("out_features") == 1


def test_cache_follows_in_place_updates() -> None:
    _, lin = _make()
    _select(lin, 4, 3, [3, 1, 0, 2, 4, 5, 6, 7], [2, 1, 0, 3, 4, 5])
    lin.eval()
    x = torch.randn(2, 3)
    with torch.no_grad():
        first = lin(x)
        assert torch.equal(lin(x), first)
        lin.weight.add_(1.0)  # bumps _version
        assert not torch.equal(lin(x), first)
        torch.testing.assert_close(lin(x), lin.export()(x))


@pytest.mark.parametrize("training", [True, False])
def test_cache_is_not_stale_after_a_fused_optimizer_step(training: bool) -> None:
    # a fused Adam step changes parameters without bumping Tensor._version
    _, lin = _make()
    hp_out, hp_in = _select(lin, 4, 3, [3, 1, 0, 2, 4, 5, 6, 7], [2, 1, 0, 3, 4, 5])
    lin.train(training)
    opt = torch.optim.Adam(lin.parameters(), lr=0.1, fused=True)
    x = torch.randn(5, 3)
    with torch.no_grad():
        lin(x)  # fills the cache (in eval mode)
    version = lin.weight._version
    lin(x).square().sum().backward()
    with torch.no_grad():
        lin(x)  # a metric between backward and step
    opt.step()
    assert lin.weight._version == version  # the reason the cache must be dropped
    rows, cols = _kept(hp_out), _kept(hp_in)
    with torch.no_grad():
        expect = torch.nn.functional.linear(x, lin.weight[rows][:, cols], lin.bias[rows])
        torch.testing.assert_close(lin(x), expect)
        torch.testing.assert_close(lin.export()(x), expect)


def test_train_and_eval_clear_the_cache() -> None:
    _, lin = _make()
    _select(lin, 4, 3, [3, 1, 0, 2, 4, 5, 6, 7])
    with torch.no_grad():
        lin(torch.randn(1, 3))
        assert not lin._nv_cache  # never cached in training mode
        assert lin.eval() is lin
        lin(torch.randn(1, 3))
        assert lin._nv_cache
        lin.train()
        assert not lin._nv_cache


def test_dynamic_module_base_has_no_export() -> None:
    class Bare(DynamicModule):
        pass

    with pytest.raises(NotImplementedError):
        Bare().export()
