"""profile(): per-module FLOPs/params with known answers; CostModel.estimate == exact profile."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.modules import module as torch_module

import nasviz.space as nv
from nasviz.config import LAYER_TYPES
from nasviz.dynamic import DynamicLinear, DynamicModule
from nasviz.errors import HparamError, NasvizError
from nasviz.hparam import ConcatDim, Hparam, RepeatDim
from nasviz.models import REFERENCE_MODELS
from nasviz.profile import CostModel, Profile, format_flops, format_params, profile


def linear_flops(batch: int, n_in: int, n_out: int) -> int:
    return 2 * batch * n_in * n_out


def export(model: nn.Module) -> nn.Module:
    """A plain copy of ``model``: every dynamic module replaced by its ``export()``."""
    model = copy.deepcopy(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, DynamicModule):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, m.export())
    return model


def rows(p: Profile) -> dict[str, tuple[int, int]]:
    t = p.table
    return {str(m): (int(f), int(n)) for m, f, n in zip(t["module"], t["flops"], t["params"])}


# -- profile ------------------------------------------------------------------------------------
def test_linear_known_answer() -> None:
    p = profile(nn.Linear(8, 4), torch.zeros(2, 8))
    assert (p.flops, p.params) == (linear_flops(2, 8, 4), 8 * 4 + 4)
    assert rows(p) == {"(root)": (128, 36)}
    assert list(p.table.columns) == ["module", "type", "flops", "params", "flops_pct", "params_pct"]


def test_totals_are_table_sums_and_modules_without_cost_are_omitted() -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8, bias=False), nn.Tanh())
    p = profile(model, torch.zeros(3, 16))
    assert rows(p) == {
        "0": (linear_flops(3, 16, 32), 16 * 32 + 32),
        "2": (linear_flops(3, 32, 8), 32 * 8),
    }
    assert p.flops == p.table["flops"].sum() == 3 * 2 * (16 * 32 + 32 * 8)
    assert p.params == p.table["params"].sum()
    assert p.table["flops_pct"].sum() == pytest.approx(100.0)
    assert list(p.table["type"]) == ["Linear", "Linear"]


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.stack = nn.ModuleList([nn.Linear(8, 8)])
        self.register_buffer("mix", torch.ones(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack[0](self.a(x)) @ self.mix  # the matmul is Inner's own


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Inner()
        self.head = nn.Linear(8, 4)
        self.stray = [nn.Linear(8, 2)]  # not a submodule: charged to its caller

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # inner.a also runs outside inner: FlopCounterMode's hierarchical counts mis-assign this
        y = self.head(self.inner(x)) + self.inner.a(x)[:, :4]
        return y + self.stray[0](x).sum()


def test_each_flop_is_charged_once_to_the_module_that_issued_it() -> None:
    p = profile(Outer(), torch.zeros(2, 8))
    lin = linear_flops(2, 8, 8)
    assert rows(p) == {
        "(root)": (linear_flops(2, 8, 2), 0),  # the stray Linear
        "inner": (lin, 0),  # the matmul with the buffer
        "inner.a": (2 * lin, 72),  # called twice
        "inner.stack.0": (lin, 72),
        "head": (linear_flops(2, 8, 4), 36),
    }
    assert p.flops == 4 * lin + linear_flops(2, 8, 4) + linear_flops(2, 8, 2)


def test_tied_parameters_are_counted_once() -> None:
    class TiedLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.lm_head = nn.Linear(8, 10, bias=False)
            self.lm_head.weight = self.emb.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.lm_head(self.emb(ids))

    p = profile(TiedLM(), torch.zeros(2, 3, dtype=torch.long))
    assert p.params == 80 == sum(t.numel() for t in TiedLM().parameters())
    assert rows(p) == {"emb": (0, 80), "lm_head": (linear_flops(6, 8, 10), 0)}


def test_runs_in_eval_without_grad_and_restores_mixed_train_flags() -> None:
    seen: list[tuple[bool, bool]] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((self.training, torch.is_grad_enabled()))
            return x

    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), Probe())
    model.train()
    model[0].eval()
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm1d) and bn.running_mean is not None
    before = bn.running_mean.clone()
    profile(model, torch.randn(5, 4))
    assert seen == [(False, False)]
    assert torch.equal(bn.running_mean, before)  # BN ran in eval: no statistics update
    assert [m.training for m in model.modules()] == [True, False, True, True]


def test_tuple_and_dict_inputs() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fa, self.fb = nn.Linear(4, 3), nn.Linear(6, 3)

        def forward(self, a: torch.Tensor, b: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            return (self.fa(a) + self.fb(b)) * scale

    model, a, b = TwoInputs(), torch.zeros(2, 4), torch.zeros(2, 6)
    expected = linear_flops(2, 4, 3) + linear_flops(2, 6, 3)
    assert profile(model, (a, b)).flops == expected
    assert profile(model, {"a": a, "b": b, "scale": 2.0}).flops == expected
    with pytest.raises(NasvizError, match=r"keys must be strings; got \[0\].*\(d,\)"):
        profile(model, {0: a})


def test_forward_failure_is_reported_and_hooks_are_removed() -> None:
    hooks = (len(torch_module._global_forward_pre_hooks), len(torch_module._global_forward_hooks))
    with pytest.raises(NasvizError, match=r"forward pass of Linear on dummy_input failed"):
        profile(nn.Linear(8, 4), torch.zeros(2, 5))
    profile(nn.Linear(8, 4), torch.zeros(2, 8))
    after = (len(torch_module._global_forward_pre_hooks), len(torch_module._global_forward_hooks))
    assert after == hooks


def test_repr_is_readable_and_truncates() -> None:
    p = profile(nn.Sequential(nn.Linear(8, 4), nn.ReLU()), torch.zeros(2, 8))
    text = repr(p)
    assert text.splitlines()[0] == "Profile: 128 FLOPs, 36 params in 1 module"
    assert "Linear" in text and "100.0%" in text
    big = profile(nn.Sequential(*[nn.Linear(4, 4) for _ in range(30)]), torch.zeros(1, 4))
    assert "... 10 more modules (see .table)" in big.format(max_rows=20)
    assert len(big.format(max_rows=20).splitlines()) == 1 + 1 + 20 + 1


def test_number_formatting() -> None:
    assert format_flops(1_200_000) == "1.20 MFLOPs"
    assert format_flops(950) == "950 FLOPs"
    assert format_flops(8.18e9) == "8.18 GFLOPs"
    assert format_params(25_557_032) == "25.56M params"
    assert format_params(36) == "36 params"


# -- dynamic nets built by hand -----------------------------------------------------------------
class BranchNet(nn.Module):
    """Two branches concatenated (ConcatDim), then a flatten into the head (RepeatDim)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 12), nn.Linear(16, 8)
        self.mix = nn.Linear(20, 8)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 4, 16]
        y = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=-1)
        z = F.relu(self.mix(y))  # [B, 4, 8]
        return self.head(z.transpose(1, 2).flatten(1))  # channel c -> features 4c .. 4c+3


def branch_net() -> tuple[BranchNet, dict[str, Hparam]]:
    torch.manual_seed(0)
    net = BranchNet()
    a, b, mix, head = (DynamicLinear.convert(m) for m in (net.a, net.b, net.mix, net.head))
    ha = Hparam([3, 6, 9, 12], name="a.out_features")
    hb = Hparam([2, 4, 8], name="b.out_features")
    hm = Hparam(range(1, 9), name="mix.out_features")
    a.set_dim("out_features", ha)
    b.set_dim("out_features", hb)
    mix.set_dim("in_features", ConcatDim([ha, hb]))
    mix.set_dim("out_features", hm)
    head.set_dim("in_features", RepeatDim(hm, 4))
    return net, {hp.name: hp for hp in (ha, hb, hm)}


X_BRANCH = torch.randn(3, 4, 16)


@functools.cache
def branch_cost_model() -> tuple[BranchNet, dict[str, Hparam], CostModel]:
    net, hps = branch_net()
    return net, hps, CostModel.from_model(net, X_BRANCH)


def select(hps: dict[str, Hparam], config: dict[str, int]) -> None:
    for name, value in config.items():
        hps[name].active = value


def test_profile_of_a_dynamic_subnet_equals_the_exported_subnet() -> None:
    net, hps = branch_net()
    select(hps, {"a.out_features": 6, "b.out_features": 4, "mix.out_features": 3})
    p, exported = profile(net, X_BRANCH), profile(export(net), X_BRANCH)
    assert rows(p) == rows(exported)
    assert rows(p)["mix"] == (linear_flops(12, 10, 3), 10 * 3 + 3)
    assert rows(p)["head"] == (linear_flops(3, 12, 5), 12 * 5 + 5)
    assert list(p.table["type"]) == ["DynamicLinear"] * 4


@settings(max_examples=60, deadline=None)
@given(a=st.sampled_from([3, 6, 9, 12]), b=st.sampled_from([2, 4, 8]), m=st.integers(1, 8))
def test_estimate_equals_the_exact_profile_of_the_exported_subnet(a: int, b: int, m: int) -> None:
    net, hps, cm = branch_cost_model()
    config = {"a.out_features": a, "b.out_features": b, "mix.out_features": m}
    estimate = cm.estimate(config)
    assert [hp.active for hp in hps.values()] == [12, 8, 8]  # the model was not touched
    select(hps, config)
    try:
        exact = profile(export(net), X_BRANCH)
        assert estimate == (exact.flops, exact.params)
        assert cm.estimate() == estimate  # None: the active subnet
    finally:
        select(hps, {"a.out_features": 12, "b.out_features": 8, "mix.out_features": 8})


def test_from_model_profiles_full_size_and_restores_the_active_subnet() -> None:
    net, hps = branch_net()
    select(hps, {"a.out_features": 3, "mix.out_features": 2})
    cm = CostModel.from_model(net, X_BRANCH)
    assert [hp.active for hp in hps.values()] == [3, 8, 2]
    full = profile(export(branch_net()[0]), X_BRANCH)
    assert (cm.full_flops, cm.full_params) == (full.flops, full.params)
    assert cm.estimate({"a.out_features": 12, "mix.out_features": 8}) == (full.flops, full.params)
    assert sorted(cm.hparams) == ["a.out_features", "b.out_features", "mix.out_features"]
    assert "3 hparams" in repr(cm) and "compiled modules: 4, opaque: 0" in repr(cm)


def test_partial_config_keeps_current_values_and_min_is_the_smallest_subnet() -> None:
    net, hps = branch_net()
    cm = CostModel.from_model(net, X_BRANCH)
    select(hps, {"b.out_features": 2})
    partial = cm.estimate({"a.out_features": 3})
    select(hps, {"a.out_features": 3})
    assert partial == (profile(net, X_BRANCH).flops, profile(net, X_BRANCH).params)
    select(hps, {"mix.out_features": 1})
    assert cm.estimate_min() == (profile(net, X_BRANCH).flops, profile(net, X_BRANCH).params)


def test_bad_configs_are_refused() -> None:
    _, _, cm = branch_cost_model()
    with pytest.raises(HparamError, match=r"'mix\.out' is not an hparam of this model; known"):
        cm.estimate({"mix.out": 4})
    with pytest.raises(HparamError, match=r"a\.out_features: 5 is not a valid choice.*\[3, 6"):
        cm.estimate({"a.out_features": 5})


def test_duplicate_hparam_names_are_refused() -> None:
    net, hps = branch_net()
    twin = Hparam([4, 8], name="a.out_features")
    DynamicLinear.convert(net.b).set_dim("out_features", twin)
    DynamicLinear.convert(net.mix).set_dim("in_features", ConcatDim([hps["a.out_features"], twin]))
    with pytest.raises(HparamError, match=r"two different hparams are both named 'a\.out_f"):
        CostModel.from_model(net, X_BRANCH)


class Attention(nn.Module):
    """A non-dynamic parent issuing its own matmuls on a dynamic width."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.o = nn.Linear(8, 6), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, 8]
        q = self.q(x)
        attn = torch.softmax(q @ q.transpose(1, 2), dim=-1)
        return self.o(attn @ q)


def test_flops_of_non_dynamic_parents_follow_the_widths() -> None:
    torch.manual_seed(0)
    model, x = Attention(), torch.randn(2, 5, 8)
    hp = Hparam([2, 4, 6], name="q.out_features")
    DynamicLinear.convert(model.q).set_dim("out_features", hp)
    DynamicLinear.convert(model.o).set_dim("in_features", hp)
    cm = CostModel.from_model(model, x)
    for width in (2, 4, 6):
        hp.active = width
        exact = profile(model, x)
        assert exact.flops == profile(export(model), x).flops
        # q @ k.T and attn @ v are fitted as linear in the width: exact at every width
        assert cm.estimate() == (exact.flops, exact.params)
    assert hp.active == 6


class Quadratic(nn.Module):
    """A parent whose own FLOPs grow with the square of a width: not fitted, kept full size."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 8]
        q = self.q(x)
        outer = q[:, :, None] @ q[:, None, :]  # B x w x w, then w x w @ w x 1
        return outer @ q[:, :, None]


def test_flops_of_parents_that_are_not_linear_stay_fixed() -> None:
    model, x = Quadratic(), torch.randn(2, 8)
    hp = Hparam([2, 4, 6], name="q.out_features")
    DynamicLinear.convert(model.q).set_dim("out_features", hp)
    cm = CostModel.from_model(model, x)

    def own(width: int) -> int:  # batch 2: outer product w x 1 x w, then w x w x 1, 2 per MAC
        return 2 * 2 * (width * width + width * width)

    assert rows(profile(model, x))["(root)"][0] == own(6)
    hp.active = 2
    exact = profile(model, x)
    assert rows(exact)["(root)"][0] == own(2)
    # the quadratic parent is not fitted: it keeps its full-size FLOPs (an over-estimate)
    assert cm.estimate() == (exact.flops - own(2) + own(6), exact.params)


class CustomCost(DynamicLinear):
    """A twin with its own cost formula: the cost model must use it (opaque path)."""

    def flops_ratio(self) -> float:
        return 0.5 * super().flops_ratio()


def test_modules_with_their_own_formulas_use_their_methods() -> None:
    net, hps = branch_net()
    net.mix.__class__ = CustomCost
    cm = CostModel.from_model(net, X_BRANCH)
    assert "compiled modules: 3, opaque: 1" in repr(cm)
    select(hps, {"a.out_features": 6, "mix.out_features": 4})
    full_mix = linear_flops(12, 20, 8)
    expected_mix = round(full_mix * 0.5 * ((6 + 8) * 4) / (20 * 8))
    exact = profile(net, X_BRANCH)
    exact_mix = rows(exact)["mix"][0]
    flops, params = cm.estimate()
    assert (flops - exact.flops + exact_mix, params) == (expected_mix, exact.params)
    assert cm.estimate() == (flops, params)  # memoised answer is the same
    assert [hp.active for hp in hps.values()] == [6, 8, 4]  # restored after the cache miss


def test_tied_dynamic_weights_are_counted_once() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    model[2].weight = model[0].weight
    hp = Hparam([2, 4, 6], name="0.out_features")
    DynamicLinear.convert(model[0]).set_dim("out_features", hp)
    DynamicLinear.convert(model[2]).set_dim("in_features", hp)
    cm = CostModel.from_model(model, torch.zeros(1, 6))
    assert "opaque: 1" in repr(cm)
    for value in hp.choices:
        hp.active = value
        p = profile(model, torch.zeros(1, 6))
        assert cm.estimate() == (p.flops, p.params)
    hp.active = 6
    assert cm.full_params == 36 + 6 + 6 == rows(profile(model, torch.zeros(1, 6)))["0"][1] + 6


# -- conv nets (dynamic convs and norms) ----------------------------------------------------------
class ConvNet(nn.Module):
    """stem conv -> depthwise conv -> pointwise conv (BN after each) -> pool -> flatten -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.pw, self.bn2 = nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24)
        self.pool = nn.AvgPool2d(4)
        self.fc = nn.Linear(24 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 3, 8, 8]
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(self.bn1(self.dw(x)))
        x = F.relu(self.bn2(self.pw(x)))
        return self.fc(self.pool(x).flatten(1))


@functools.cache
def conv_cost_model() -> tuple[ConvNet, dict[str, Hparam], CostModel]:
    conv = pytest.importorskip("nasviz.dynamic.conv")
    norm = pytest.importorskip("nasviz.dynamic.norm")
    torch.manual_seed(0)
    net = ConvNet()
    h1 = Hparam([4, 8, 12, 16], name="stem.out_channels")
    h2 = Hparam([8, 16, 24], name="pw.out_channels")
    conv.DynamicConv2d.convert(net.stem).set_dim("out_channels", h1)
    dw = conv.DynamicConv2d.convert(net.dw)
    dw.set_dim("in_channels", h1)
    dw.set_dim("out_channels", h1)
    pw = conv.DynamicConv2d.convert(net.pw)
    pw.set_dim("in_channels", h1)
    pw.set_dim("out_channels", h2)
    for bn, hp in ((net.bn0, h1), (net.bn1, h1), (net.bn2, h2)):
        norm.DynamicBatchNorm2d.convert(bn).set_dim("num_features", hp)
    DynamicLinear.convert(net.fc).set_dim("in_features", RepeatDim(h2, 4))
    return net, {"stem.out_channels": h1, "pw.out_channels": h2}, CostModel.from_model(net, X_CONV)


X_CONV = torch.randn(2, 3, 8, 8)


@settings(max_examples=12, deadline=None)
@given(c1=st.sampled_from([4, 8, 12, 16]), c2=st.sampled_from([8, 16, 24]))
def test_estimate_equals_exact_profile_on_a_conv_net(c1: int, c2: int) -> None:
    net, hps, cm = conv_cost_model()
    config = {"stem.out_channels": c1, "pw.out_channels": c2}
    estimate = cm.estimate(config)
    select(hps, config)
    try:
        exact = profile(export(net), X_CONV)
        assert estimate == (exact.flops, exact.params)
        stem = 2 * 2 * 8 * 8 * c1 * 3 * 9
        dw, pw, fc = 2 * 2 * 64 * c1 * 9, 2 * 2 * 64 * c2 * c1, 2 * 2 * 4 * c2 * 10
        assert exact.flops == stem + dw + pw + fc  # BatchNorm, ReLU, pooling cost 0 FLOPs
    finally:
        select(hps, {"stem.out_channels": 16, "pw.out_channels": 24})


def test_conv_net_profile_rows() -> None:
    net, _, cm = conv_cost_model()
    p = profile(net, X_CONV)
    assert (p.flops, p.params) == (cm.full_flops, cm.full_params)
    assert rows(p)["dw"] == (2 * 2 * 64 * 16 * 9, 16 * 9)
    assert rows(p)["bn0"] == (0, 32)
    assert sum(isinstance(m, DynamicModule) for m in net.modules()) == 7
    assert "compiled modules: 6, opaque: 1" in repr(cm)  # the depthwise conv keeps its own formula


@pytest.mark.parametrize("name", ["convnext_like", "vit_like"])
def test_sliced_channel_parameters_are_priced(name: str) -> None:
    # ConvNeXt's layer scale and ViT's class token / position embedding follow the stream width
    model, x = REFERENCE_MODELS[name]()
    small = {k: {"*": {LAYER_TYPES[k].divisor_field: 4}} for k in LAYER_TYPES}
    nv.convert(model, mode=[("fastnas", small)], dummy_input=x)
    cm = CostModel.from_model(model, x)
    for seed in range(3):
        config = nv.sample(model, "random", seed=seed)
        exact = profile(nv.export(model), x)
        flops, params = cm.estimate(config)
        # ViT's attention matmuls (issued by the non-dynamic Attention) follow the head width
        assert (flops, params) == (exact.flops, exact.params)
