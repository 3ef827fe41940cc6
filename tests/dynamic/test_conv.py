"""Tests for nasviz.dynamic.conv: dynamic Conv1d/2d/3d and ConvTranspose1d/2d/3d.

The subnet outputs are checked against an independent reference: the *original* layer run on
an input whose pruned channels are zero and with the taps outside the kept kernel centre zeroed,
restricted to the kept output channels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nasviz.config import DynamicConv2dConfig
from nasviz.dynamic.base import DynamicModule, registered_layer_types
from nasviz.dynamic.conv import (
    DynamicConv1d,
    DynamicConv2d,
    DynamicConv3d,
    DynamicConvTranspose1d,
    DynamicConvTranspose2d,
    DynamicConvTranspose3d,
    GroupedHparam,
)
from nasviz.errors import HparamError, NasvizError
from nasviz.hparam import ConcatDim, DimSource, Hparam

DYNAMIC = {
    nn.Conv1d: DynamicConv1d,
    nn.Conv2d: DynamicConv2d,
    nn.Conv3d: DynamicConv3d,
    nn.ConvTranspose1d: DynamicConvTranspose1d,
    nn.ConvTranspose2d: DynamicConvTranspose2d,
    nn.ConvTranspose3d: DynamicConvTranspose3d,
}
SPATIAL = {1: (11,), 2: (7, 7), 3: (5, 5, 5)}
RULE = DynamicConv2dConfig(channel_divisor=1, kernel_size=[1, 3, 5])  # type: ignore[call-arg]  # LayerConfig fields are generated


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@dataclass(frozen=True)
class Case:
    cls: type[nn.Module]
    args: tuple[int, int, int]
    kwargs: tuple[tuple[str, Any], ...] = ()

    def make(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
        torch.manual_seed(seed)
        conv = self.cls(*self.args, **dict(self.kwargs), dtype=dtype)
        if conv.bias is not None:  # a visible bias (torch's init is tiny)
            with torch.no_grad():
                conv.bias.uniform_(-1, 1)
        return conv

    def input(self, channels: int | None = None, seed: int = 1) -> torch.Tensor:
        torch.manual_seed(seed)
        nd = int(self.cls.__name__[-2])
        return torch.randn(2, self.args[0] if channels is None else channels, *SPATIAL[nd])

    def __str__(self) -> str:
        kw = ",".join(f"{k}={v}" for k, v in self.kwargs)
        return f"{self.cls.__name__}{self.args}{kw}"


def _c(cls: type[nn.Module], i: int, o: int, k: int, **kw: Any) -> Case:
    return Case(cls, (i, o, k), tuple(kw.items()))


CASES = [
    _c(nn.Conv1d, 4, 6, 3),
    _c(nn.Conv1d, 4, 6, 5, stride=2, padding=2, bias=False),
    _c(nn.Conv1d, 6, 9, 3, groups=3, padding=1),
    _c(nn.Conv1d, 4, 8, 5, groups=4, padding=2),  # depthwise, channel multiplier 2
    _c(nn.Conv2d, 3, 8, 5, padding=2),
    _c(nn.Conv2d, 4, 6, 3, stride=2, padding=1, bias=False),
    _c(nn.Conv2d, 4, 6, 3, dilation=2, padding=2),
    _c(nn.Conv2d, 4, 6, 5, padding=2, padding_mode="reflect"),
    _c(nn.Conv2d, 4, 6, 5, padding="same", padding_mode="reflect"),
    _c(nn.Conv2d, 8, 12, 5, groups=4, padding=2, stride=2),  # grouped
    _c(nn.Conv2d, 6, 6, 5, groups=6, padding=2),  # depthwise
    _c(nn.Conv2d, 4, 6, 1),
    _c(nn.Conv3d, 3, 4, 5, padding=2),
    _c(nn.Conv3d, 4, 6, 3, groups=2, padding=1, bias=False),
    _c(nn.Conv3d, 4, 4, 3, groups=4),
    _c(nn.ConvTranspose1d, 4, 6, 5, stride=2, padding=2, output_padding=1),
    _c(nn.ConvTranspose1d, 6, 4, 3, groups=2),
    _c(nn.ConvTranspose1d, 4, 4, 3, groups=4, stride=2, bias=False),
    _c(nn.ConvTranspose2d, 6, 4, 5, stride=2, padding=2, output_padding=1, bias=False),
    _c(nn.ConvTranspose2d, 4, 6, 3, dilation=2),
    _c(nn.ConvTranspose2d, 8, 4, 3, groups=4, stride=2, padding=1),
    _c(nn.ConvTranspose2d, 4, 8, 5, groups=4, padding=2),  # depthwise, multiplier 2
    _c(nn.ConvTranspose3d, 4, 3, 5, stride=2, padding=2),
    _c(nn.ConvTranspose3d, 3, 3, 3, groups=3, padding=1),
]
IDS = [str(c) for c in CASES]


def _convert(conv: nn.Module) -> Any:
    return DYNAMIC[type(conv)].convert(conv)  # type: ignore[attr-defined]  # DYNAMIC values are dynamic classes


def _attach(m: Any, out: int, cin: int, kernel: int | None, seed: int | None = None) -> None:
    """Drive ``m`` by fresh hparams at the given active values (random orders if ``seed``)."""
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    depthwise = m.choices_for("out_channels", RULE) is None
    for attr, active in (("in_channels", cin), ("out_channels", out)):
        if depthwise and attr == "out_channels":
            continue
        full, g = m.original_size(attr), m.channel_groups(attr)
        hp = GroupedHparam(range(g, full + 1, g), groups=g) if g > 1 else Hparam(range(1, full + 1))
        if gen is not None:
            hp.enforce_order(torch.randperm(full, generator=gen))
        hp.active = active
        m.set_dim(attr, hp)
    if kernel is not None:
        m.set_dim("kernel_size", Hparam(m.choices_for("kernel_size", RULE)))
        m.dim("kernel_size").active = kernel


def _positions(src: DimSource | None, full: int) -> torch.Tensor:
    if src is None:
        return torch.arange(full)
    idx = src.active_index()
    return torch.arange(full)[idx] if isinstance(idx, slice) else idx


def _reference(plain: nn.Module, m: Any, x: torch.Tensor) -> torch.Tensor:
    """The original layer on zero-filled pruned inputs, centre taps only, kept outputs."""
    out_pos = _positions(m.dim("out_channels"), m.original_size("out_channels"))
    in_pos = _positions(m.dim("in_channels"), m.original_size("in_channels"))
    ref = copy.deepcopy(plain)
    with torch.no_grad():
        ref.weight.mul_(_kernel_mask(plain.weight.shape, m.kernel_size))
    full_x = x.new_zeros(x.shape[0], plain.in_channels, *x.shape[2:])
    full_x[:, in_pos] = x
    return ref(full_x)[:, out_pos]


def _kernel_mask(shape: torch.Size, kernel: tuple[int, ...]) -> torch.Tensor:
    mask = torch.zeros(shape)
    view = mask
    for d, k in enumerate(kernel, start=2):
        view = view.narrow(d, (shape[d] - k) // 2, k)
    view.fill_(1)
    return mask


def _weight_mask(plain: nn.Module, m: Any) -> torch.Tensor:
    """Which weight entries the active subnet uses (written out channel by channel)."""
    keep_out = torch.zeros(plain.out_channels, dtype=torch.bool)
    keep_out[_positions(m.dim("out_channels"), plain.out_channels)] = True
    keep_in = torch.zeros(plain.in_channels, dtype=torch.bool)
    keep_in[_positions(m.dim("in_channels"), plain.in_channels)] = True
    g = plain.groups
    opg, ipg = plain.out_channels // g, plain.in_channels // g
    mask = _kernel_mask(plain.weight.shape, m.kernel_size)
    for row in range(plain.weight.shape[0]):
        for col in range(plain.weight.shape[1]):
            if plain.transposed:  # row: input channel, col: output within the row's group
                used = keep_in[row] and keep_out[(row // ipg) * opg + col]
            else:
                used = keep_out[row] and keep_in[(row // opg) * ipg + col]
            if not used:
                mask[row, col] = 0
    return mask


def _half(m: Any) -> tuple[int, int, int | None]:
    """About half the channels (whole groups) and kernel 3 where the layer can crop to it."""
    half = []
    for attr in ("out_channels", "in_channels"):
        full, g = m.original_size(attr), m.channel_groups(attr)
        half.append(max(g, full // 2 // g * g))
    kernels = m.choices_for("kernel_size", RULE)
    return half[0], half[1], 3 if 3 in kernels and len(kernels) > 1 else None


def _subnet(case: Case, seed: int | None = None) -> tuple[nn.Module, Any]:
    """The original layer and a converted copy at a smaller subnet (see ``_half``)."""
    plain = case.make()
    m = _convert(copy.deepcopy(plain))
    _attach(m, *_half(m), seed)
    return plain, m


# ----------------------------------------------------------------------------- full size


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_full_size_is_the_original_layer(case: Case) -> None:
    plain = case.make()
    x = case.input()
    expected = plain(x)
    params = dict(plain.named_parameters())
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    m = _convert(plain)
    assert m is plain and isinstance(m, case.cls) and isinstance(m, DynamicModule)
    assert {k: v.shape for k, v in m.state_dict().items()} == shapes
    assert all(p is params[n] for n, p in m.named_parameters())
    assert torch.equal(m(x), expected)
    _attach(m, m.original_size("out_channels"), m.original_size("in_channels"), None)
    with mock.patch.object(type(m), "_nv_slice_weight", side_effect=AssertionError("sliced")):
        assert torch.equal(m(x), expected)  # the fast path: no slicing at full size
    assert m.out_channels == case.args[1] and m.in_channels == case.args[0]
    assert m.kernel_size == (case.args[2],) * len(m.kernel_size)


def test_registered_layer_types() -> None:
    types = registered_layer_types()
    for torch_cls, dyn in DYNAMIC.items():
        assert types[f"nn.{torch_cls.__name__}"] is dyn


# ----------------------------------------------------------------------------- subnets


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("ordered", [False, True], ids=["slice", "order"])
def test_subnet_matches_reference_and_export(case: Case, ordered: bool) -> None:
    plain, m = _subnet(case, seed=7 if ordered else None)
    x = case.input(m.in_channels)
    with torch.no_grad():
        y = m(x)
        exported = m.export()
        assert type(exported) is case.cls
        assert torch.equal(exported(x), y)
        torch.testing.assert_close(y, _reference(plain, m, x), atol=1e-5, rtol=1e-5)
    assert torch.equal(m(x), y)  # autograd path (no cache) gives the same numbers
    for attr in ("stride", "dilation", "padding_mode"):
        assert getattr(exported, attr) == getattr(plain, attr)
    assert (exported.in_channels, exported.out_channels) == (m.in_channels, m.out_channels)
    assert exported.kernel_size == m.kernel_size and exported.padding == m.padding
    assert exported.groups == m.groups
    assert (exported.bias is None) == (plain.bias is None)
    assert exported.weight.shape == m.active_shape("weight")
    assert m.active_param_count() == sum(p.numel() for p in exported.parameters())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_stay_inside_the_active_subnet(case: Case) -> None:
    plain, m = _subnet(case, seed=3)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)  # the same Parameter objects as `plain`'s
    before = m.weight.detach().clone()
    m(case.input(m.in_channels)).square().sum().backward()
    mask = _weight_mask(plain, m).bool()
    assert m.weight.grad is not None
    assert torch.all(m.weight.grad[~mask] == 0)
    assert torch.all(m.weight.grad[mask].abs().sum() > 0)
    if m.bias is not None:
        out_pos = _positions(m.dim("out_channels"), m.original_size("out_channels"))
        dropped = torch.ones(m.bias.shape[0], dtype=torch.bool)
        dropped[out_pos] = False
        assert torch.all(m.bias.grad[dropped] == 0)
    opt.step()
    assert torch.equal(m.weight.detach()[~mask], before[~mask])
    assert not torch.equal(m.weight.detach()[mask], before[mask])


def test_optimizer_built_before_conversion_keeps_stepping() -> None:
    plain = nn.Conv2d(4, 6, 3, padding=1)
    opt = torch.optim.SGD(plain.parameters(), lr=0.5)
    m = DynamicConv2d.convert(plain)
    m.set_dim("out_channels", Hparam([3, 6]))
    m.dim("out_channels").active = 3
    before = m.weight.detach().clone()
    m(torch.randn(1, 4, 5, 5)).sum().backward()
    opt.step()
    assert opt.param_groups[0]["params"][0] is m.weight
    assert not torch.equal(m.weight[:3], before[:3])
    assert torch.equal(m.weight[3:], before[3:])


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from(CASES),
    fractions=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    kernel=st.sampled_from([None, 1, 3, 5]),
    seed=st.one_of(st.none(), st.integers(0, 2**16)),
)
def test_random_subnets_export_identically(
    case: Case, fractions: tuple[float, float], kernel: int | None, seed: int | None
) -> None:
    plain = case.make()
    m = _convert(copy.deepcopy(plain))
    active = []
    for attr, f in zip(("out_channels", "in_channels"), fractions):
        full, g = m.original_size(attr), m.channel_groups(attr)
        active.append(g * (1 + round(f * (full // g - 1))))
    kernels = m.choices_for("kernel_size", RULE)
    _attach(m, *active, kernel if kernel in kernels else None, seed)  # type: ignore[call-arg]  # mypy cannot count *active
    x = case.input(m.in_channels, seed=2)
    with torch.no_grad():
        y = m(x)
        assert torch.equal(m.export()(x), y)
        torch.testing.assert_close(y, _reference(plain, m, x), atol=1e-5, rtol=1e-5)
    assert y.shape[2:] == plain(case.input()).shape[2:]  # spatial size never changes


# ----------------------------------------------------------------------------- kernel size


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.args[2] == 5], ids=[str(c) for c in CASES if c.args[2] == 5]
)
def test_kernel_crop_keeps_the_spatial_size(case: Case) -> None:
    plain = case.make()
    m = _convert(copy.deepcopy(plain))
    assert m.choices_for("kernel_size", RULE) == [1, 3, 5]
    m.set_dim("kernel_size", Hparam([1, 3, 5]))
    x = case.input()
    full_shape = plain(x).shape
    for k in (3, 1):
        m.dim("kernel_size").active = k
        with torch.no_grad():
            y = m(x)
            exported = m.export()
            assert torch.equal(exported(x), y)
            torch.testing.assert_close(y, _reference(plain, m, x), atol=1e-5, rtol=1e-5)
        assert y.shape == full_shape
        assert exported.kernel_size == (k,) * len(full_shape[2:]) == m.kernel_size
        if isinstance(plain.padding, str):
            assert exported.padding == plain.padding
        else:
            assert exported.padding == tuple(p - (5 - k) // 2 for p in plain.padding)


def test_transposed_output_size_argument() -> None:
    plain = nn.ConvTranspose2d(4, 6, 5, stride=2, padding=2)
    m = DynamicConvTranspose2d.convert(copy.deepcopy(plain))
    _attach(m, 3, 2, 3)
    x = torch.randn(1, 2, 6, 6)
    with torch.no_grad():
        y = m(x, output_size=[12, 12])
        assert y.shape == (1, 3, 12, 12)
        assert torch.equal(m.export()(x, output_size=[12, 12]), y)


def test_choices_for_follows_layout_and_rule() -> None:
    rule = DynamicConv2dConfig(channel_divisor=2, kernel_size=[1, 3, 5, 7])  # type: ignore[call-arg]  # LayerConfig fields are generated
    regular = DynamicConv2d.convert(nn.Conv2d(4, 8, 5, padding=1))
    assert regular.choices_for("out_channels", rule) == rule.choices_for(8)
    assert regular.choices_for("in_channels", rule) is None
    assert regular.choices_for("kernel_size", rule) == [3, 5]  # padding 1 allows one tap a side
    grouped = DynamicConv2d.convert(nn.Conv2d(8, 12, 3, groups=4))
    assert grouped.channel_groups("out_channels") == grouped.channel_groups("in_channels") == 4
    assert all(c % 4 == 0 for c in grouped.choices_for("out_channels", rule))
    depthwise = DynamicConv2d.convert(nn.Conv2d(8, 8, 3, groups=8, dilation=2))
    assert depthwise.choices_for("out_channels", rule) is None
    assert depthwise.channel_groups("in_channels") == 1
    assert depthwise.choices_for("kernel_size", rule) == [3]  # dilation 2: no cropping
    assert DynamicConv2d.convert(nn.Conv2d(2, 2, (3, 5))).choices_for("kernel_size", rule) is None
    assert DynamicConv2d.convert(nn.Conv2d(2, 2, 4)).choices_for("kernel_size", rule) == [4]


# ----------------------------------------------------------------------------- layouts


def test_depthwise_out_follows_in() -> None:
    m = DynamicConv2d.convert(nn.Conv2d(6, 6, 3, groups=6, padding=1))
    assert m.layout == "depthwise"
    assert DynamicConv2d.convert(nn.Conv2d(6, 6, 3, groups=2)).layout == "grouped"
    assert DynamicConv2d.convert(nn.Conv2d(6, 6, 3)).layout == "regular"
    hp = Hparam([2, 4, 6])
    m.set_dim("in_channels", hp)
    assert m.dim("out_channels") is hp
    hp.active = 4
    assert (m.in_channels, m.out_channels, m.groups) == (4, 4, 4)
    assert m.active_shape("weight") == (4, 1, 3, 3)
    m.set_dim("out_channels", None)  # the same hparam both ways
    assert m.dim("in_channels") is None and m.out_channels == 6
    mult = DynamicConvTranspose2d.convert(nn.ConvTranspose2d(3, 6, 3, groups=3))
    mult.set_dim("in_channels", Hparam([1, 3]))
    mult.dim("in_channels").active = 1
    assert (mult.out_channels, mult.groups, mult.active_shape("weight")) == (2, 1, (1, 2, 3, 3))


def test_grouped_hparam_keeps_whole_groups() -> None:
    hp = GroupedHparam([2, 4, 8], groups=2, name="g")
    hp.active = 4
    assert hp.active_slice.tolist() == [0, 1, 4, 5]
    hp.enforce_order(torch.tensor([7, 0, 6, 1, 2, 3, 4, 5]))
    assert hp.active_slice.tolist() == [0, 1, 7, 6]
    hp.active = 8
    assert hp.active_slice.tolist() == [0, 1, 2, 3, 7, 6, 4, 5]
    hp.reset_order()
    assert hp.active_slice == slice(0, 8)
    merged = hp.merge(GroupedHparam([4, 8], groups=4))
    assert isinstance(merged, GroupedHparam) and merged.groups == 4 and merged.choices == (4, 8)
    assert repr(GroupedHparam([4], groups=2)) == (
        "GroupedHparam(active=4, original=4, choices=[4], groups=2)"
    )
    with pytest.raises(HparamError, match="multiple of 2"):
        GroupedHparam([3, 8], groups=2)
    with pytest.raises(HparamError, match="divide"):
        GroupedHparam([9], groups=2)


def test_importance_is_the_output_channel_norm() -> None:
    conv = DynamicConv2d.convert(nn.Conv2d(4, 6, 3, groups=2))
    expected = torch.stack([conv.weight[o].norm() for o in range(6)])
    torch.testing.assert_close(conv.importance("out_channels"), expected.detach())
    assert conv.importance("in_channels") is None and conv.importance("kernel_size") is None
    up = DynamicConvTranspose2d.convert(nn.ConvTranspose2d(4, 6, 3, groups=2))
    w = up.weight.detach()  # (in, out / groups, k, k); output o lives in group o // 3
    expected = torch.stack([w[2 * (o // 3) : 2 * (o // 3) + 2, o % 3].norm() for o in range(6)])
    torch.testing.assert_close(up.importance("out_channels"), expected)


@pytest.mark.parametrize("case", CASES[::3], ids=IDS[::3])
def test_flops_ratio_matches_the_flop_counter(case: Case) -> None:
    plain, m = _subnet(case, seed=1)

    def flops(module: nn.Module, channels: int) -> int:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            module(case.input(channels))
        return counter.get_total_flops()

    expected = flops(m.export(), m.in_channels) / flops(plain, case.args[0])
    assert m.flops_ratio() == pytest.approx(expected)


# ----------------------------------------------------------------------------- state, caching


@pytest.mark.parametrize("case", CASES[::2], ids=IDS[::2])
def test_state_dict_round_trip(case: Case) -> None:
    _, m = _subnet(case, seed=5)
    state = copy.deepcopy(m.state_dict())
    fresh = _convert(case.make(seed=99))
    for attr in ("in_channels", "out_channels", "kernel_size"):
        if not (attr == "out_channels" and m.choices_for(attr, RULE) is None):  # depthwise
            fresh.set_dim(attr, m.dim(attr))
    fresh.load_state_dict(state)
    x = case.input(m.in_channels)
    with torch.no_grad():
        assert torch.equal(fresh(x), m(x))


def test_sliced_weights_are_cached_and_refreshed() -> None:
    _, m = _subnet(CASES[4], seed=2)
    m.eval()
    x = CASES[4].input(m.in_channels)
    calls = mock.Mock(wraps=m._nv_slice_weight)
    with mock.patch.object(m, "_nv_slice_weight", calls), torch.no_grad():
        first = m(x)
        for _ in range(3):
            assert torch.equal(m(x), first)
        assert calls.call_count == 1
        m.weight.mul_(2)  # an in-place update (an optimizer step) invalidates the cache
        second = m(x)
        assert calls.call_count == 2
        assert not torch.equal(second, first)
        assert torch.equal(m.export()(x), second)
        assert calls.call_count == 2  # export reused the cached slice
        m.dim("out_channels").active = 8
        m(x)
        assert calls.call_count == 3
        m.train()  # nothing is cached in training mode
        m(x)
        m(x)
        assert calls.call_count == 5


def test_fused_optimizer_step_refreshes_the_cache() -> None:
    _, m = _subnet(CASES[5], seed=2)
    m.eval()
    x = CASES[5].input(m.in_channels)
    opt = torch.optim.Adam(m.parameters(), lr=0.1, fused=True)
    m(x).sum().backward()
    with torch.no_grad():
        before = m(x)  # cached
        version = m.weight._version
        opt.step()  # a fused step does not bump the parameters' versions
        assert m.weight._version == version
        after = m(x)
        assert not torch.equal(after, before)
        assert torch.equal(after, m.export()(x))


@pytest.mark.parametrize("case", CASES[::4], ids=IDS[::4])
def test_unconvert_restores_the_original(case: Case) -> None:
    plain = case.make()
    before = {k: v for k, v in plain.__dict__.items() if not k.startswith("_")}
    text = repr(plain)
    x = case.input()
    expected = plain(x)
    m = _convert(plain)
    _attach(m, *_half(m))
    assert not m.is_full()
    with pytest.raises(NasvizError, match="export"):
        m.unconvert()
    for _, hp in m.hparams():
        hp.active = hp.original
    back = m.unconvert()
    assert type(back) is case.cls and repr(back) == text
    assert {k: v for k, v in back.__dict__.items() if not k.startswith("_")} == before
    assert not any(k.startswith("_nv") for k in back.__dict__)
    assert torch.equal(back(x), expected)


def test_repr_shows_the_active_layer_and_deepcopy_works() -> None:
    m = DynamicConv2d.convert(nn.Conv2d(4, 8, 5, padding=2, groups=2, bias=False))
    m.set_dim("out_channels", GroupedHparam([4, 8], groups=2))
    m.set_dim("kernel_size", Hparam([3, 5]))
    m.dim("out_channels").active = 4
    m.dim("kernel_size").active = 3
    assert repr(m) == (
        "DynamicConv2d(4, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), groups=2, "
        "bias=False)"
    )
    assert m._reversed_padding_repeated_twice == [1, 1, 1, 1]
    twin = copy.deepcopy(m)
    x = torch.randn(1, 4, 6, 6)
    assert torch.equal(twin(x), m(x))


def test_user_subclass_and_dtype() -> None:
    class MyConv(nn.Conv2d):
        pass

    m = DynamicConv2d.convert(MyConv(3, 4, 3, dtype=torch.float64))
    assert isinstance(m, MyConv) and isinstance(m, DynamicConv2d)
    m.set_dim("out_channels", Hparam([2, 4]))
    m.dim("out_channels").active = 2
    exported = m.export()
    assert type(exported) is nn.Conv2d and exported.weight.dtype == torch.float64
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(exported(x), m(x))


# ----------------------------------------------------------------------------- errors


def _errors() -> list[tuple[Callable[[], object], type[Exception], str]]:
    def assign() -> None:
        DynamicConv2d.convert(nn.Conv2d(2, 4, 3)).out_channels = 3

    def assign_groups() -> None:
        DynamicConv2d.convert(nn.Conv2d(2, 4, 3)).groups = 2

    def wrong_size() -> None:
        DynamicConv2d.convert(nn.Conv2d(2, 4, 3)).set_dim("out_channels", Hparam([2, 6]))

    def grouped_plain() -> None:
        DynamicConv2d.convert(nn.Conv2d(4, 4, 3, groups=2)).set_dim("in_channels", Hparam([2, 4]))

    def grouped_odd() -> None:
        m = DynamicConv2d.convert(nn.Conv2d(6, 6, 3, groups=3))
        m.set_dim("out_channels", GroupedHparam([2, 6], groups=2))

    def grouped_concat() -> None:
        m = DynamicConv2d.convert(nn.Conv2d(4, 4, 3, groups=2))
        left, right = Hparam([1, 2]), Hparam([2])
        m.set_dim("in_channels", ConcatDim([left, right]))
        left.active = 1
        m(torch.randn(1, 3, 5, 5))

    def even_kernel() -> None:
        DynamicConv2d.convert(nn.Conv2d(2, 2, 4, padding=2)).set_dim("kernel_size", Hparam([2, 4]))

    def dilated_kernel() -> None:
        DynamicConv2d.convert(nn.Conv2d(2, 2, 5, padding=4, dilation=2)).set_dim(
            "kernel_size", Hparam([3, 5])
        )

    def small_padding() -> None:
        DynamicConv2d.convert(nn.Conv2d(2, 2, 5, padding=1)).set_dim("kernel_size", Hparam([1, 5]))

    def non_square() -> None:
        DynamicConv2d.convert(nn.Conv2d(2, 2, (3, 5), padding=2)).set_dim(
            "kernel_size", Hparam([3, 5])
        )

    def kernel_original() -> None:
        DynamicConv2d.convert(nn.Conv2d(2, 2, 5, padding=2)).set_dim("kernel_size", Hparam([3]))

    def depthwise_out() -> None:
        DynamicConv2d.convert(nn.Conv2d(2, 4, 3, groups=2)).set_dim("out_channels", Hparam([2, 4]))

    def wrong_class() -> None:
        DynamicConv2d.convert(nn.Conv1d(2, 2, 3))

    def unknown_attr() -> None:
        DynamicConv2d.convert(nn.Conv2d(2, 2, 3)).set_dim("stride", Hparam([1]))

    return [
        (assign, HparamError, "is dynamic"),
        (assign_groups, HparamError, "cannot be assigned"),
        (wrong_size, HparamError, "has 4 channels"),
        (grouped_plain, HparamError, r"GroupedHparam\(choices, groups=2\)"),
        (grouped_odd, HparamError, "not multiples of 3"),
        (grouped_concat, HparamError, "not the same number"),
        (even_kernel, HparamError, "only odd kernels"),
        (dilated_kernel, HparamError, "dilation"),
        (small_padding, HparamError, "output size would change"),
        (non_square, HparamError, "not square"),
        (kernel_original, HparamError, "original 5"),
        (depthwise_out, HparamError, "set_dim\\('in_channels'"),
        (wrong_class, NasvizError, "converts Conv2d"),
        (unknown_attr, NasvizError, "no dynamic attribute 'stride'"),
    ]


@pytest.mark.parametrize(
    ("call", "error", "match"), _errors(), ids=lambda v: getattr(v, "__name__", "")
)
def test_bad_requests_raise_clear_errors(
    call: Callable[[], object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        call()


def test_reparametrised_weight_is_read_through_the_attribute() -> None:
    conv = nn.utils.parametrizations.weight_norm(nn.Conv2d(4, 6, 3))
    x = torch.randn(1, 4, 5, 5)
    expected = conv(x)
    m = DynamicConv2d.convert(conv)
    assert torch.equal(m(x), expected)
    m.set_dim("out_channels", Hparam([3, 6]))
    m.dim("out_channels").active = 3
    with torch.no_grad():
        assert torch.equal(m(x), expected[:, :3])
        assert torch.equal(m.export()(x), m(x))
