"""Channel parameters: sliced reads match hand-built smaller modules, the full tensors stay the
stored and trained ones, export/unslice/deepcopy/pickle, and every refused call changes nothing.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasviz.dynamic.linear import DynamicLinear
from nasviz.dynamic.params import (
    active_param_numel,
    export_params,
    permute_param,
    slice_params,
    sliced_params,
    unslice_params,
)
from nasviz.errors import HparamError
from nasviz.hparam import ConcatDim, Hparam, RepeatDim

C = 6


class Block(nn.Module):
    """ConvNeXt-like tail on a channels-last tensor: ``x + gamma * pw(x)``."""

    shift: torch.Tensor
    tmp: torch.Tensor

    def __init__(self, c: int = C) -> None:
        super().__init__()
        self.pw = nn.Linear(c, c)
        self.gamma = nn.Parameter(torch.randn(c))
        self.register_buffer("shift", torch.randn(c))
        self.register_buffer("tmp", torch.randn(c), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.pw(x) + self.shift + self.tmp


class Embed(nn.Module):
    """ViT-like: prepend a class token, add position embeddings."""

    def __init__(self, c: int = C, n: int = 3) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, c))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed


class Vec(nn.Module):
    """``x * p`` for one parameter ``p`` of any shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.randn(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.p


def sliced_block(hp: Hparam) -> Block:
    torch.manual_seed(0)
    block = Block()
    pw = DynamicLinear.convert(block.pw)
    pw.set_dim("in_features", hp)
    pw.set_dim("out_features", hp)
    slice_params(block, {"gamma": (0, hp), "shift": (0, hp), "tmp": (0, hp)})
    return block


def small_block(block: Block, idx: torch.Tensor) -> Block:
    """The block a pruned model should equal, built by hand from ``block``'s full tensors."""
    small = Block(len(idx))
    full = dict(block.state_dict(keep_vars=True))
    with torch.no_grad():
        small.pw.weight.copy_(full["pw.weight"][idx][:, idx])
        small.pw.bias.copy_(full["pw.bias"][idx])
        small.gamma.copy_(full["gamma"][idx])
        small.shift.copy_(full["shift"][idx])
        full_tmp = block._buffers["tmp"]  # non-persistent: not in the state_dict
        assert full_tmp is not None
        small.tmp.copy_(full_tmp[idx])
    return small


@pytest.mark.parametrize("order", [None, [3, 0, 5, 1, 4, 2]])
def test_convnext_block_matches_hand_built_smaller_block(order: list[int] | None) -> None:
    hp = Hparam([2, 4, C], name="stage.c")
    block = sliced_block(hp)
    hp.enforce_order(order)
    hp.active = 4
    assert isinstance(hp.active_slice, slice if order is None else torch.Tensor)
    idx = torch.arange(4) if order is None else torch.tensor(order[:4])
    x = torch.randn(2, 3, 3, 4)
    expected = small_block(block, idx)(x)
    assert block(x).shape == (2, 3, 3, 4)
    torch.testing.assert_close(block(x), expected)
    assert block.gamma.shape == (4,)
    assert isinstance(block, Block)
    assert type(block).__name__ == "SlicedBlock"


def test_full_size_reads_the_parameter_itself() -> None:
    hp = Hparam([2, C])
    block = sliced_block(hp)
    assert block.gamma is block._parameters["gamma"]
    hp.active = 2
    assert block.gamma.shape == (2,)
    assert block.gamma.data_ptr() == block._parameters["gamma"].data_ptr()  # a view


def test_vit_tokens_sliced_on_channel_dim() -> None:
    torch.manual_seed(1)
    emb = Embed()
    hp = Hparam([3, C])
    slice_params(emb, {"cls_token": (-1, hp), "pos_embed": (2, hp)})
    assert {k: v[0] for k, v in sliced_params(emb).items()} == {"cls_token": 2, "pos_embed": 2}
    hp.enforce_order([5, 4, 3, 2, 1, 0])
    hp.active = 3
    x = torch.randn(2, 3, 3)
    small = Embed(3)
    with torch.no_grad():
        small.cls_token.copy_(emb._parameters["cls_token"][..., [5, 4, 3]])
        small.pos_embed.copy_(emb._parameters["pos_embed"][..., [5, 4, 3]])
    assert emb(x).shape == (2, 4, 3)
    torch.testing.assert_close(emb(x), small(x))


def test_concat_and_repeat_sources() -> None:
    a, b = Hparam([2, 4], name="a"), Hparam([1, 3], name="b")
    b.enforce_order([2, 0, 1])
    a.active, b.active = 2, 1
    cat = Vec((4 + 3,))
    slice_params(cat, {"p": (0, ConcatDim([a, b]))})
    full = cat._parameters["p"]
    assert full is not None
    torch.testing.assert_close(cat.p, full[[0, 1, 4 + 2]])

    rep = Vec((2, 3 * 2))
    slice_params(rep, {"p": (1, RepeatDim(b, 2))})
    full = rep._parameters["p"]
    assert full is not None
    torch.testing.assert_close(rep.p, full[:, [4, 5]])
    assert active_param_numel(rep) == 2 * 2 and active_param_numel(cat) == 3


def test_state_dict_and_named_parameters_stay_full() -> None:
    torch.manual_seed(0)
    plain = Block()
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    gamma = plain.gamma
    hp = Hparam([2, C])
    slice_params(plain, {"gamma": (0, hp), "shift": (0, hp)})
    hp.active = 2
    sd = plain.state_dict()
    assert list(sd) == list(before)
    for k, v in before.items():
        torch.testing.assert_close(sd[k], v)
    assert plain._parameters["gamma"] is gamma
    assert dict(plain.named_parameters())["gamma"].shape == (C,)
    new = {k: torch.full_like(v, 7.0) for k, v in before.items()}
    plain.load_state_dict(new)
    assert torch.equal(gamma, torch.full((C,), 7.0))
    assert torch.equal(plain.gamma, torch.full((2,), 7.0))


@pytest.mark.parametrize("order", [None, [4, 1, 0, 2, 3, 5]])
def test_gradients_reach_full_parameter_at_selected_positions(order: list[int] | None) -> None:
    m = Vec((C,))
    hp = Hparam([3, C])
    slice_params(m, {"p": (0, hp)})
    hp.enforce_order(order)
    hp.active = 3
    m(torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    kept = [0, 1, 2] if order is None else order[:3]
    expected = torch.zeros(C)
    expected[kept] = torch.tensor([1.0, 2.0, 3.0])
    full = m._parameters["p"]
    assert full is not None and full.grad is not None
    torch.testing.assert_close(full.grad, expected)


def test_export_gives_plain_module_with_same_outputs() -> None:
    hp = Hparam([2, 4, C])
    block = sliced_block(hp)
    block.gamma.requires_grad_(False)
    hp.enforce_order([1, 3, 5, 0, 2, 4])
    hp.active = 2
    x = torch.randn(2, 2)
    ref = block(x)
    old = block._parameters["gamma"]
    block.pw = block.pw.export()
    assert export_params(block) is block
    assert type(block) is Block and sliced_params(block) == {}
    assert not any(k.startswith("_nv_param") for k in vars(block))
    torch.testing.assert_close(block(x), ref)
    assert block.gamma.shape == (2,) and block.gamma is not old
    assert isinstance(block.gamma, nn.Parameter) and not block.gamma.requires_grad
    assert block.gamma.data_ptr() != old.data_ptr()
    assert set(block.state_dict()) == {"pw.weight", "pw.bias", "gamma", "shift"}  # tmp stays out
    assert block.tmp.shape == (2,)
    assert active_param_numel(block) == 2


def test_unslice_restores_full_tensors_and_class() -> None:
    torch.manual_seed(0)
    m = Vec((C,))
    p = m.p
    hp = Hparam([2, C])
    slice_params(m, {"p": (0, hp)})
    hp.active = 2
    assert m(torch.ones(2)).shape == (2,)
    unslice_params(m)
    assert type(m) is Vec and m.p is p and sliced_params(m) == {}
    torch.testing.assert_close(m(torch.ones(C)), p.detach())
    unslice_params(m)  # no-op on a plain module
    assert type(m) is Vec


def test_slice_again_adds_and_replaces_entries() -> None:
    m = Block()
    a, b = Hparam([2, C], name="a"), Hparam([3, C], name="b")
    slice_params(m, {"gamma": (0, a)})
    cls = type(m)
    slice_params(m, {"shift": (0, a)})
    slice_params(m, {"gamma": (0, b)})
    assert type(m) is cls and type(Block()) is Block
    assert sliced_params(m) == {"gamma": (0, b), "shift": (0, a)}
    a.active, b.active = 2, 3
    assert m.gamma.shape == (3,) and m.shift.shape == (2,)
    other = Block()
    slice_params(other, {"gamma": (0, a)})
    assert type(other) is cls  # the generated class is cached per original class
    slice_params(Block(), {})  # nothing to slice: class untouched
    empty = Block()
    slice_params(empty, {})
    assert type(empty) is Block


def test_active_param_numel() -> None:
    emb = Embed()  # 6 + 4*6
    hp = Hparam([2, C])
    assert active_param_numel(emb) == 30
    slice_params(emb, {"pos_embed": (2, hp)})
    hp.active = 2
    assert active_param_numel(emb) == 6 + 4 * 2
    block = Block()
    slice_params(block, {"gamma": (0, hp), "shift": (0, hp)})
    assert active_param_numel(block) == 2  # own parameters only; the buffer does not count


def test_permute_param_then_identity_order_equals_enforced_order() -> None:
    torch.manual_seed(0)
    m = Vec((2, C))
    hp = Hparam([3, C])
    slice_params(m, {"p": (1, hp)})
    order = [5, 2, 0, 4, 1, 3]
    hp.enforce_order(order)
    hp.active = 3
    x = torch.randn(2, 3)
    ref = m(x)
    full = m._parameters["p"]
    assert full is not None
    before = full.detach().clone()
    permute_param(m, "p", torch.tensor(order))
    assert m._parameters["p"] is full
    torch.testing.assert_close(full.detach(), before[:, order])
    hp.reset_order()
    torch.testing.assert_close(m(x), ref)


def test_train_eval_and_repr() -> None:
    hp = Hparam([2, C])
    block = sliced_block(hp)
    hp.active = 2
    x = torch.randn(1, 2)
    ref = block(x)
    assert block.eval() is block and not block.training
    torch.testing.assert_close(block(x), ref)
    assert block.train() is block and block.training
    assert repr(block).startswith("SlicedBlock(")


def test_deepcopy_is_independent() -> None:
    hp = Hparam([2, 4, C])
    model = nn.Sequential(sliced_block(hp))
    hp.active = 4
    twin = copy.deepcopy(model)
    x = torch.randn(1, 4)
    torch.testing.assert_close(twin(x), model(x))
    tb = twin[0]
    assert type(tb) is type(model[0]) and isinstance(tb, Block)
    assert tb._parameters["gamma"] is not model[0]._parameters["gamma"]
    twin_hp = sliced_params(tb)["gamma"][1]
    assert twin_hp is not hp
    assert isinstance(tb.pw, DynamicLinear)
    assert tb.pw.dim("out_features") is twin_hp  # the copy's layers share the copied hparam
    assert isinstance(twin_hp, Hparam)
    twin_hp.active = 2
    assert twin(torch.randn(1, 2)).shape == (1, 2)
    assert model(x).shape == (1, 4)  # the original still at 4
    twin_gamma = tb._parameters["gamma"]
    assert twin_gamma is not None
    with torch.no_grad():
        twin_gamma.zero_()
    assert model.state_dict()["0.gamma"].abs().sum() > 0


def test_pickle_and_torch_save_round_trip() -> None:
    hp = Hparam([2, 4, C])
    model = nn.Sequential(sliced_block(hp))
    hp.enforce_order([5, 4, 3, 2, 1, 0])
    hp.active = 4
    x = torch.randn(3, 4)
    ref = model(x)
    backs: list[nn.Module] = [pickle.loads(pickle.dumps(model)), _torch_round_trip(model)]
    for back in backs:
        blk = back.get_submodule("0")
        assert type(blk).__name__ == "SlicedBlock" and isinstance(blk, Block)
        torch.testing.assert_close(back(x), ref)
        assert set(sliced_params(blk)) == {"gamma", "shift", "tmp"}
        assert back.state_dict()["0.gamma"].shape == (C,)
        restored_hp = sliced_params(blk)["gamma"][1]
        assert isinstance(restored_hp, Hparam)
        restored_hp.active = 2
        assert blk.gamma.shape == (2,)
        assert isinstance(blk.pw, DynamicLinear)
        assert blk.pw.export().weight.shape == (2, 2)  # the restored dynamic layer still works
        assert type(export_params(blk)) is Block


def _torch_round_trip(model: nn.Module) -> nn.Module:
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    out: nn.Module = torch.load(buf, weights_only=False)
    return out


# -- refused calls -----------------------------------------------------------------------------
BAD = [
    ({"beta": (0, Hparam([2, C]))}, r"Block has no parameter or buffer 'beta'.*\['gamma', "),
    ({"pw.weight": (0, Hparam([2, C]))}, r"'pw.weight' belongs to the child module 'pw'.*get_sub"),
    ({"gamma": (1, Hparam([2, C]))}, r"Block.gamma: dim 1 is out of range .*\(6,\).*\[-1, 0\]"),
    ({"gamma": (True, Hparam([2, C]))}, r"Block.gamma: dim True is out of range"),
    ({"gamma": (0, Hparam([2, 4]))}, r"Block.gamma: dim 0 has size 6 but .* full size 4; pass"),
    ({"gamma": (0, 6)}, r"Block.gamma: the source must be a DimSource.*got int"),
    ({"gamma": 0}, r"Block.gamma: expected a \(dim, source\) pair, got 0"),
    ({"nobias": (0, Hparam([2, C]))}, r"Block.nobias is None; only a tensor"),
]


@pytest.mark.parametrize(("dims", "match"), BAD)
@pytest.mark.parametrize("already_sliced", [False, True])
def test_refused_calls_change_nothing(
    dims: dict[str, object], match: str, already_sliced: bool
) -> None:
    block = Block()
    block.register_parameter("nobias", None)
    prior = Hparam([3, C])
    if already_sliced:
        slice_params(block, {"shift": (0, prior)})
    cls, before = type(block), sliced_params(block)
    good = {"gamma": (0, Hparam([2, C]))} if "gamma" not in dims else {}
    with pytest.raises(HparamError, match=match):
        slice_params(block, {**good, **dims})  # type: ignore[dict-item]
    assert type(block) is cls and sliced_params(block) == before


def test_refused_modules() -> None:
    lin = DynamicLinear.convert(nn.Linear(C, C))
    with pytest.raises(HparamError, match=r"DynamicLinear is a dynamic layer.*set_dim"):
        slice_params(lin, {"bias": (0, Hparam([2, C]))})
    assert type(lin) is DynamicLinear

    class Shadowed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(C))

    m = Shadowed()  # a class attribute added afterwards hides the parameter from __getattr__
    Shadowed.gamma = property(lambda self: self._parameters["gamma"])  # type: ignore[assignment]
    with pytest.raises(HparamError, match=r"Shadowed\.gamma is shadowed by a class attribute"):
        slice_params(m, {"gamma": (0, Hparam([2, C]))})
    assert type(m) is Shadowed
    with pytest.raises(HparamError, match=r"needs an nn\.Module, got int"):
        slice_params(3, {})  # type: ignore[arg-type]


def test_permute_param_refusals() -> None:
    m = Vec((C,))
    with pytest.raises(HparamError, match=r"Vec.p is not sliced \(sliced: \[\]\); call slice_"):
        permute_param(m, "p", torch.arange(C))
    slice_params(m, {"p": (0, Hparam([2, C]))})
    before = m._parameters["p"].detach().clone()
    bads = [torch.arange(C - 1), torch.zeros(C, dtype=torch.long), torch.arange(C) * 1.0]
    for bad in [*bads, torch.arange(C).reshape(2, 3), torch.ones(C, dtype=torch.bool)]:
        with pytest.raises(HparamError, match=r"Vec.p: perm must be a 1-D integer permutation"):
            permute_param(m, "p", bad)
    assert torch.equal(m._parameters["p"], before)  # type: ignore[arg-type]


# -- property ----------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_sliced_output_equals_exported_output(data: st.DataObject) -> None:
    ndim = data.draw(st.integers(1, 3))
    shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    dim = data.draw(st.integers(0, ndim - 1))
    full = shape[dim]
    k = data.draw(st.integers(1, full))
    order = data.draw(st.permutations(range(full)))
    torch.manual_seed(data.draw(st.integers(0, 100)))
    m = Vec(shape)
    hp = Hparam([k, full])
    slice_params(m, {"p": (dim, hp)})
    hp.enforce_order(order)
    hp.active = k
    active = list(shape)
    active[dim] = k
    x = torch.randn(active)
    full_p = m._parameters["p"]
    assert full_p is not None and full_p.shape == shape
    full_t = full_p.detach().clone()
    sliced_out = m(x)
    assert active_param_numel(m) == torch.Size(active).numel()
    export_params(m)
    assert type(m) is Vec and m.p.shape == tuple(active)
    torch.testing.assert_close(m(x), sliced_out)
    expected = x * full_t.index_select(dim, torch.tensor(order[:k]))
    torch.testing.assert_close(sliced_out, expected)
