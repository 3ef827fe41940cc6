"""Dynamic norms: identical at full size, sliced statistics that really follow the selection,
exports that reproduce the subnet, and GroupNorm/LayerNorm restrictions.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasviz.config import DynamicBatchNorm2dConfig, DynamicGroupNormConfig
from nasviz.dynamic.base import DynamicModule, dynamic_class_for, registered_layer_types
from nasviz.dynamic.norm import (
    DynamicBatchNorm2d,
    DynamicGroupNorm,
    DynamicLayerNorm,
    group_order,
)
from nasviz.errors import HparamError, NasvizError
from nasviz.hparam import Hparam

N = 8  # channels of every test layer

#: name -> (layer factory, input shape with N channels)
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "bn1d_2d": (lambda: nn.BatchNorm1d(N), (6, N)),
    "bn1d_3d": (lambda: nn.BatchNorm1d(N, momentum=None), (4, N, 5)),
    "bn2d": (lambda: nn.BatchNorm2d(N), (4, N, 3, 3)),
    "bn2d_plain": (lambda: nn.BatchNorm2d(N, affine=False), (4, N, 3, 2)),
    "bn2d_nobias": (lambda: nn.BatchNorm2d(N, bias=False), (4, N, 3, 2)),
    "bn2d_untracked": (lambda: nn.BatchNorm2d(N, track_running_stats=False), (4, N, 2, 3)),
    "bn3d": (lambda: nn.BatchNorm3d(N), (2, N, 2, 3, 3)),
    "syncbn": (lambda: nn.SyncBatchNorm(N), (4, N, 3, 3)),
    "in1d": (lambda: nn.InstanceNorm1d(N), (3, N, 7)),
    "in1d_nobatch": (lambda: nn.InstanceNorm1d(N, affine=True), (N, 7)),
    "in2d_tracked": (
        lambda: nn.InstanceNorm2d(N, affine=True, track_running_stats=True),
        (3, N, 4, 4),
    ),
    "in3d": (lambda: nn.InstanceNorm3d(N, track_running_stats=True, momentum=0.3), (2, N, 2, 3, 3)),
    "ln": (lambda: nn.LayerNorm(N), (3, 5, N)),
    "ln_plain": (lambda: nn.LayerNorm(N, elementwise_affine=False), (4, N)),
    "ln_nobias": (lambda: nn.LayerNorm(N, bias=False), (2, 3, N)),
    "gn": (lambda: nn.GroupNorm(4, N), (3, N, 5)),
    "gn_plain": (lambda: nn.GroupNorm(2, N, affine=False), (3, N, 3, 3)),
}
AFFINE = [k for k, (f, _) in CASES.items() if getattr(f(), "weight", None) is not None]


def _attr(m: nn.Module) -> str:
    cls = dynamic_class_for(m)
    assert cls is not None
    return next(iter(cls.dynamic_attrs))


def _channel_dim(m: nn.Module, shape: tuple[int, ...]) -> int:
    if isinstance(m, nn.LayerNorm):
        return len(shape) - 1
    return 0 if len(shape) == 2 and isinstance(m, nn.InstanceNorm1d) else 1


def _group(m: nn.Module) -> int:
    return N // m.num_groups if isinstance(m, nn.GroupNorm) else 1


def _randomize(m: nn.Module) -> None:
    with torch.no_grad():
        if getattr(m, "weight", None) is not None:
            m.weight.uniform_(0.5, 2.0).mul_(torch.randint(0, 2, (N,)) * 2 - 1)
        if getattr(m, "bias", None) is not None:
            m.bias.normal_()
        if getattr(m, "running_mean", None) is not None:
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(3)


def _make(case: str) -> tuple[nn.Module, DynamicModule, tuple[int, ...]]:
    """(plain reference, its converted copy, full input shape)."""
    factory, shape = CASES[case]
    torch.manual_seed(0)
    ref = factory()
    _randomize(ref)
    dyn = copy.deepcopy(ref)
    cls = dynamic_class_for(dyn)
    assert cls is not None
    return ref, cls.convert(dyn), shape


def _select(dyn: DynamicModule, width: int, order: torch.Tensor | None = None) -> Hparam:
    g = _group(dyn)
    hp = Hparam(range(g, N + 1, g), name="x")
    dyn.set_dim(_attr(dyn), hp)
    if order is not None:
        hp.enforce_order(order)
    hp.active = width
    return hp


def _input(dyn: nn.Module, shape: tuple[int, ...], width: int, seed: int = 1) -> torch.Tensor:
    s = list(shape)
    s[_channel_dim(dyn, shape)] = width
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*s, generator=g) * 2 + 0.5


def _kept(hp: Hparam) -> torch.Tensor:
    idx = hp.active_slice
    return torch.arange(hp.original)[idx] if isinstance(idx, slice) else idx


def _group_perm(seed: int, g: int) -> torch.Tensor:
    """A random order that keeps groups of ``g`` whole (g=1: any permutation)."""
    gen = torch.Generator().manual_seed(seed)
    groups = torch.randperm(N // g, generator=gen)
    inner = torch.stack([torch.randperm(g, generator=gen) for _ in range(N // g)])
    return (groups[:, None] * g + inner[groups]).flatten()


# -- conversion ---------------------------------------------------------------------------------
def test_every_norm_type_is_registered() -> None:
    types = registered_layer_types()
    for key in ["nn.BatchNorm1d", "nn.BatchNorm2d", "nn.BatchNorm3d", "nn.SyncBatchNorm"]:
        assert key in types
    for key in ["nn.InstanceNorm1d", "nn.InstanceNorm2d", "nn.InstanceNorm3d"]:
        assert key in types
    assert types["nn.LayerNorm"] is DynamicLayerNorm
    assert types["nn.GroupNorm"] is DynamicGroupNorm


@pytest.mark.parametrize("case", list(CASES))
def test_conversion_keeps_class_parameters_and_state_dict(case: str) -> None:
    factory, _ = CASES[case]
    plain = factory()
    params = dict(plain.named_parameters())
    sd = {k: v.shape for k, v in plain.state_dict().items()}
    dyn = dynamic_class_for(plain).convert(plain)
    assert isinstance(dyn, type(factory()))
    assert all(p is params[n] for n, p in dyn.named_parameters())
    _select(dyn, N // 2)
    assert {k: v.shape for k, v in dyn.state_dict().items()} == sd  # full size, even when pruned


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("training", [True, False])
def test_full_size_outputs_and_statistics_identical(case: str, training: bool) -> None:
    ref, dyn, shape = _make(case)
    _select(dyn, N)  # an hparam at full size takes the fast path
    ref.train(training)
    dyn.train(training)
    for seed in range(2):
        x = _input(ref, shape, N, seed)
        assert torch.equal(dyn(x), ref(x))
    for (name, a), (_, b) in zip(ref.state_dict().items(), dyn.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("case", AFFINE)
def test_gradients_are_zero_outside_the_active_channels(case: str) -> None:
    _, dyn, shape = _make(case)
    hp = _select(dyn, N // 2, _group_perm(3, _group(dyn)))
    exported = dyn.export()
    x = _input(dyn, shape, N // 2)
    w = torch.randn_like(dyn(x))
    (dyn(x) * w).sum().backward()
    (exported(x) * w).sum().backward()
    kept = _kept(hp)
    dropped = torch.tensor([i for i in range(N) if i not in kept.tolist()])
    for name in ("weight", "bias"):
        p = getattr(dyn, name)
        if p is None:
            continue
        assert torch.count_nonzero(p.grad[dropped]) == 0
        torch.testing.assert_close(p.grad[kept], getattr(exported, name).grad)


# -- export -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_export_is_the_plain_class_with_identical_outputs(case: str) -> None:
    ref, dyn, shape = _make(case)
    hp = _select(dyn, N // 2, _group_perm(5, _group(dyn)))
    for training in (False, True):
        dyn.train(training)
        exported = dyn.export()
        assert type(exported) is type(ref)
        assert exported.training is training
        for a in ("eps", "momentum", "affine", "track_running_stats", "elementwise_affine"):
            assert getattr(exported, a, None) == getattr(ref, a, None)
        assert (getattr(exported, "bias", None) is None) == (getattr(ref, "bias", None) is None)
        x = _input(dyn, shape, N // 2)
        torch.testing.assert_close(dyn(x), exported(x), rtol=1e-6, atol=1e-6)
        if getattr(dyn, "running_mean", None) is not None:  # both updated the same statistics
            torch.testing.assert_close(dyn.running_mean[_kept(hp)], exported.running_mean)
            torch.testing.assert_close(dyn.running_var[_kept(hp)], exported.running_var)
            assert torch.equal(dyn.num_batches_tracked, exported.num_batches_tracked)


@settings(max_examples=40, deadline=None)
@given(
    case=st.sampled_from(list(CASES)),
    width_steps=st.integers(1, N),
    seed=st.integers(0, 10_000),
    training=st.booleans(),
    shuffle=st.booleans(),
)
def test_property_dynamic_equals_export(
    case: str, width_steps: int, seed: int, training: bool, shuffle: bool
) -> None:
    _, dyn, shape = _make(case)
    g = _group(dyn)
    width = max(g, (width_steps // g) * g)
    hp = _select(dyn, width, _group_perm(seed, g) if shuffle else None)
    dyn.train(training)
    exported = dyn.export()
    x = _input(dyn, shape, width, seed)
    torch.testing.assert_close(dyn(x), exported(x), rtol=1e-5, atol=1e-5)
    if getattr(dyn, "running_mean", None) is not None:
        torch.testing.assert_close(dyn.running_mean[_kept(hp)], exported.running_mean)
        again = dyn.export()  # re-exporting after the forward sees the updated statistics
        torch.testing.assert_close(again.running_var, exported.running_var)


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_round_trip_at_reduced_width(case: str) -> None:
    _, dyn, shape = _make(case)
    _select(dyn, N // 2, _group_perm(7, _group(dyn)))
    dyn.train()
    dyn(_input(dyn, shape, N // 2))  # change the statistics through the subnet
    plain = CASES[case][0]()
    plain.load_state_dict(dyn.state_dict())
    _, dyn2, _ = _make(case)
    dyn2.load_state_dict(plain.state_dict())
    _select(dyn2, N // 2, _group_perm(7, _group(dyn2)))
    for m in (dyn, dyn2):
        m.eval()
    x = _input(dyn, shape, N // 2, 11)
    assert torch.equal(dyn(x), dyn2(x))


@pytest.mark.parametrize("case", list(CASES))
def test_unconvert_restores_the_plain_layer(case: str) -> None:
    ref, dyn, shape = _make(case)
    hp = _select(dyn, N // 2)
    with pytest.raises(NasvizError, match="not at full size"):
        dyn.unconvert()
    hp.active = N
    plain = dyn.unconvert()
    assert type(plain) is type(ref)
    assert repr(plain) == repr(ref)
    x = _input(ref, shape, N)
    assert torch.equal(plain(x), ref(x))
    if isinstance(ref, nn.GroupNorm):
        assert plain.num_groups == ref.num_groups
    if isinstance(ref, nn.LayerNorm):
        assert plain.normalized_shape == (N,)


# -- attributes, importance, cost --------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_attribute_importance_and_costs(case: str) -> None:
    ref, dyn, _ = _make(case)
    attr = _attr(dyn)
    _select(dyn, N // 2)
    value = getattr(dyn, attr)
    assert value == ((N // 2,) if attr == "normalized_shape" else N // 2)
    assert f"{N // 2}" in repr(dyn)
    with pytest.raises(HparamError, match="is dynamic"):
        setattr(dyn, attr, 3)
    assert dyn.flops_ratio() == 0.5
    n_affine = sum(1 for _ in ref.parameters())
    assert dyn.active_param_count() == n_affine * N // 2
    imp = dyn.importance(attr)
    if getattr(ref, "weight", None) is None:
        assert imp is None
    elif isinstance(ref, nn.GroupNorm):
        expected = ref.weight.detach().abs().view(-1, _group(ref)).mean(1)
        torch.testing.assert_close(imp, expected.repeat_interleave(_group(ref)))
    else:
        torch.testing.assert_close(imp, ref.weight.detach().abs())


@pytest.mark.parametrize("case", ["bn2d", "syncbn", "bn1d_3d", "in2d_tracked"])
def test_num_batches_tracked_counts_like_torch(case: str) -> None:
    ref, dyn, shape = _make(case)
    _select(dyn, N // 2, _group_perm(1, 1))
    dyn.train()
    dyn(_input(dyn, shape, N // 2))
    dyn(_input(dyn, shape, N // 2))
    dyn.eval()
    dyn(_input(dyn, shape, N // 2))
    ref.train()
    ref(_input(ref, shape, N))
    ref(_input(ref, shape, N))
    assert torch.equal(dyn.num_batches_tracked, ref.num_batches_tracked)


# -- running statistics follow the selection ----------------------------------------------------
def _data_with_stats(
    mean: torch.Tensor, std: torch.Tensor, shape: tuple[int, ...], dims: tuple[int, ...], seed: int
) -> torch.Tensor:
    """Data whose statistics over ``dims`` are exactly ``mean``/``std`` (unbiased) per channel."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = (x - x.mean(dims, keepdim=True)) / x.std(dims, keepdim=True)
    view = [1] * len(shape)
    view[1] = -1
    return (x * std.view(view) + mean.view(view)).float()


BN_RECALIBRATION = {
    "bn2d": (lambda: nn.BatchNorm2d(N, momentum=None), (16, 4, 3, 3), (0, 2, 3)),
    "bn1d": (lambda: nn.BatchNorm1d(N, momentum=None), (32, 4), (0,)),
    "syncbn": (lambda: nn.SyncBatchNorm(N, momentum=None), (8, 4, 5), (0, 2)),
    "in2d": (
        lambda: nn.InstanceNorm2d(N, affine=True, track_running_stats=True, momentum=1.0),
        (3, 4, 5, 5),
        (2, 3),
    ),
}


@pytest.mark.parametrize("case", list(BN_RECALIBRATION))
@pytest.mark.parametrize("sorted_order", [True, False])
def test_recalibrated_statistics_land_in_the_exported_buffers(
    case: str, sorted_order: bool
) -> None:
    factory, shape, dims = BN_RECALIBRATION[case]
    torch.manual_seed(0)
    plain = factory()
    _randomize(plain)
    dyn = dynamic_class_for(plain).convert(plain)
    order = torch.tensor([5, 2, 7, 0, 1, 3, 4, 6]) if sorted_order else None
    hp = _select(dyn, 4, order)
    kept = _kept(hp)
    assert isinstance(hp.active_slice, torch.Tensor) is sorted_order
    dyn.reset_running_stats()
    dyn.train()
    mean, std = torch.tensor([3.0, -1.0, 0.5, 7.0]), torch.tensor([2.0, 0.5, 1.5, 3.0])
    with torch.no_grad():
        for seed in range(3):
            dyn(_data_with_stats(mean, std, shape, dims, seed))
    torch.testing.assert_close(dyn.running_mean[kept], mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dyn.running_var[kept], std**2, atol=1e-4, rtol=1e-4)
    others = torch.tensor([i for i in range(N) if i not in kept.tolist()])
    assert torch.count_nonzero(dyn.running_mean[others]) == 0  # untouched since the reset
    assert torch.equal(dyn.running_var[others], torch.ones(4))

    exported = dyn.export()
    assert torch.equal(exported.running_mean, dyn.running_mean[kept])
    assert torch.equal(exported.running_var, dyn.running_var[kept])
    dyn.eval()
    exported.eval()
    x = _data_with_stats(mean, std, shape, dims, 99) * 1.7 + 0.3
    torch.testing.assert_close(dyn(x), exported(x), rtol=1e-6, atol=1e-6)
    # in eval the subnet really normalises with the recalibrated statistics
    ref = F.batch_norm if not isinstance(dyn, nn.InstanceNorm2d) else None
    if ref is not None:
        expect = ref(x, mean, std**2, dyn.weight[kept], dyn.bias[kept], False, 0.0, dyn.eps)
        torch.testing.assert_close(dyn(x), expect, rtol=1e-4, atol=1e-4)


def test_statistics_are_never_served_stale() -> None:
    _, dyn, shape = _make("bn2d")
    hp = _select(dyn, 4, _group_perm(2, 1))
    dyn.eval()
    x = _input(dyn, shape, 4)
    with torch.no_grad():
        before = dyn(x)
        # torch's own batch norm kernel updates buffers in place without bumping _version
        version = dyn.running_mean._version
        F.batch_norm(_input(dyn, shape, N) + 5, dyn.running_mean, dyn.running_var, training=True)
        assert dyn.running_mean._version == version
        after = dyn(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, dyn.export()(x))
    assert isinstance(hp.active_slice, torch.Tensor)


def test_recalibration_under_inference_mode() -> None:
    _, dyn, shape = _make("bn2d")
    hp = _select(dyn, 4, _group_perm(4, 1))
    dyn.train()
    before = dyn.running_mean.clone()
    with torch.inference_mode():
        dyn(_input(dyn, shape, 4) + 10)
    kept = _kept(hp)
    assert torch.all(dyn.running_mean[kept] > before[kept] + 0.5)


# -- SyncBatchNorm ----------------------------------------------------------------------------
def test_sync_batchnorm_without_process_group_is_a_batchnorm() -> None:
    assert not (dist.is_available() and dist.is_initialized())
    _, sync, shape = _make("syncbn")
    _, bn, _ = _make("bn2d")
    for m in (sync, bn):
        _select(m, 4, _group_perm(6, 1))
        m.train()
    x = _input(bn, shape, 4)
    assert torch.equal(sync(x), bn(x))
    assert torch.equal(sync.running_mean, bn.running_mean)
    exported = sync.export()
    assert type(exported) is nn.SyncBatchNorm
    assert exported.process_group is sync.process_group


def test_sync_batchnorm_with_a_process_group_acts_as_torch() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = dist.FileStore(str(Path(tmp) / "store"), 1)  # type: ignore[attr-defined]  # re-exported at run time
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        try:
            ref, sync, shape = _make("syncbn")
            _select(sync, 4, _group_perm(6, 1))
            sync.train()
            ref.train()
            with pytest.raises(ValueError, match="expected input tensor to be on GPU") as ours:
                sync(_input(sync, shape, 4))
            with pytest.raises(ValueError, match="expected input tensor to be on GPU") as theirs:
                ref(_input(ref, shape, N))
            assert str(ours.value) == str(theirs.value)
            sync.eval()  # eval never synchronises
            x = _input(sync, shape, 4)
            torch.testing.assert_close(sync(x), sync.export()(x))
        finally:
            dist.destroy_process_group()


# -- GroupNorm ----------------------------------------------------------------------------------
def test_groupnorm_choices_are_multiples_of_the_group_size() -> None:
    gn = DynamicGroupNorm.convert(nn.GroupNorm(8, 32))  # groups of 4
    rule = DynamicGroupNormConfig(channels_ratio=[0.1, 0.3, 0.5, 0.77, 1.0], channel_divisor=1)  # type: ignore[call-arg]  # LayerConfig fields are generated
    choices = gn.choices_for("num_channels", rule)
    assert choices == [4, 8, 16, 24, 32]  # 3.2->4, 9.6->8, 16, 24.64->24, 32
    wide = DynamicGroupNorm.convert(nn.GroupNorm(12, 96))  # groups of 8, default divisor 32
    assert all(c % 8 == 0 for c in wide.choices_for("num_channels", DynamicGroupNormConfig()))
    assert wide.channel_block("num_channels") == 8
    bn = DynamicBatchNorm2d.convert(nn.BatchNorm2d(96))
    assert bn.channel_block("num_features") == 1
    assert bn.choices_for("num_features", DynamicBatchNorm2dConfig()) == [32, 64, 96]


def test_groupnorm_num_groups_follows_the_width() -> None:
    gn = DynamicGroupNorm.convert(nn.GroupNorm(4, N))
    hp = _select(gn, 4)
    assert (gn.num_groups, gn.group_size) == (2, 2)
    assert repr(gn).startswith("DynamicGroupNorm(2, 4,")
    with pytest.raises(HparamError, match="follows num_channels"):
        gn.num_groups = 3
    hp.active = N
    assert gn.num_groups == 4


def test_groupnorm_refuses_selections_that_split_groups() -> None:
    gn = DynamicGroupNorm.convert(nn.GroupNorm(4, N))  # groups {0,1} {2,3} {4,5} {6,7}
    x = torch.randn(2, 4, 3)
    split = Hparam([3, 4, N], name="stem.out")
    gn.set_dim("num_channels", split)
    split.active = 3
    with pytest.raises(HparamError, match=r"splits a group.*multiples of 2.*group_order"):
        gn(torch.randn(2, 3, 3))
    split.active = 4
    split.enforce_order([1, 2, 0, 3, 4, 5, 6, 7])  # keeps {1, 2}: half of two groups
    with pytest.raises(HparamError, match=r"stem\.out"):
        gn(x)
    with pytest.raises(HparamError, match="splits a group"):
        gn.export()
    split.enforce_order([7, 6, 2, 3, 0, 1, 4, 5])  # whole groups, any order inside
    torch.testing.assert_close(gn(x), gn.export()(x))


def test_groupnorm_group_order_at_full_width_is_the_original_layer_permuted() -> None:
    torch.manual_seed(0)
    ref = nn.GroupNorm(4, N)
    _randomize(ref)
    gn = DynamicGroupNorm.convert(copy.deepcopy(ref))
    order = group_order(torch.rand(N), gn.group_size)
    assert torch.equal(order.view(-1, 2) // 2, (order.view(-1, 2) // 2)[:, :1].expand(-1, 2))
    _select(gn, N, order)
    x = torch.randn(3, N, 5)
    torch.testing.assert_close(gn(x[:, order]), ref(x)[:, order])


def test_group_order_ranks_whole_groups() -> None:
    imp = torch.tensor([0.1, 0.1, 5.0, 0.0, 1.0, 1.0])
    assert group_order(imp, 2).tolist() == [2, 3, 4, 5, 0, 1]
    assert group_order(imp, 1).tolist() == [2, 4, 5, 0, 1, 3]
    with pytest.raises(HparamError, match="groups of 4"):
        group_order(imp, 4)


# -- LayerNorm ----------------------------------------------------------------------------------
def test_layernorm_over_several_dimensions_stays_static() -> None:
    multi = nn.LayerNorm([4, N])
    reason = DynamicLayerNorm.unsupported_reason(multi)
    assert reason is not None
    assert "normalized_shape=(4, 8)" in reason
    assert "last dimension" in reason
    with pytest.raises(NasvizError, match="last dimension"):
        DynamicLayerNorm.convert(multi)
    assert type(multi) is nn.LayerNorm  # refused before anything changed
    assert DynamicLayerNorm.unsupported_reason(nn.LayerNorm(N)) is None
    assert DynamicLayerNorm.unsupported_reason(DynamicLayerNorm.convert(nn.LayerNorm(N))) is None


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_into_is_the_forward_written_in_place(
    affine: bool, momentum: float | None
) -> None:
    from nasviz.dynamic.norm import batchnorm_into

    torch.manual_seed(0)
    base = nn.BatchNorm2d(8, affine=affine, momentum=momentum)
    if affine:
        with torch.no_grad():
            base.weight.uniform_(0.5, 2.0)
            base.bias.uniform_(-1.0, 1.0)
    # plain; dynamic at full width; sliced (a view of the buffers); sliced in an enforced order
    # (gathered statistics, written back)
    for width, dynamic, order in ((8, False, None), (8, True, None), (4, True, None),
                                  (4, True, [6, 1, 7, 0, 2, 5, 3, 4])):  # fmt: skip
        a, b = copy.deepcopy(base), copy.deepcopy(base)
        if dynamic:
            a, b = DynamicBatchNorm2d.convert(a), DynamicBatchNorm2d.convert(b)
            for m in (a, b):
                hp = Hparam([4, 8])
                m.set_dim("num_features", hp)
                if order is not None:
                    hp.enforce_order(order)
                hp.active = width
        for training in (True, True, False):
            a.train(training)
            b.train(training)
            x = (torch.randn(6, width, 3, 3) * 3 + 1).contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                want = a(x.clone())
                got = batchnorm_into(b, x)
            assert got.data_ptr() == x.data_ptr()
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
            for k, v in a.state_dict().items():
                torch.testing.assert_close(b.state_dict()[k], v, rtol=1e-5, atol=1e-6)
