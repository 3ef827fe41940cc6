"""nn.MultiheadAttention as a declared family: whole heads, the embedding width, exact exports."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.config import LAYER_TYPES
from nasviz.dynamic import (
    DynamicLayerNorm,
    DynamicLinear,
    DynamicMultiheadAttention,
    FollowHeads,
)
from nasviz.dynamic.family import LayerSpec
from nasviz.errors import HparamError
from nasviz.hparam import Hparam
from nasviz.tracing.rules import layer_spec

E, H = 16, 4
HD = E // H
L, N = 5, 3
SMALL: dict[str, Any] = {k: {"*": {LAYER_TYPES[k].divisor_field: 4}} for k in LAYER_TYPES}


def _mha(batch_first: bool, **kw: Any) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    m = nn.MultiheadAttention(E, H, batch_first=batch_first, **kw).eval()
    with torch.no_grad():  # torch zero-initialises the biases: make them matter
        for p in m.parameters():
            if p.dim() == 1 or p.shape[:2] == (1, 1):
                p.uniform_(-0.5, 0.5)
    return m


def _inputs(batch_first: bool, width: int, kv_width: int | None = None) -> list[torch.Tensor]:
    shape = (N, L, width) if batch_first else (L, N, width)
    kv = (*shape[:2], kv_width or width)
    return [torch.randn(shape), torch.randn(kv), torch.randn(kv)]


def test_declared_family() -> None:
    m = nn.MultiheadAttention(E, H)
    assert layer_spec(m) == LayerSpec(
        "attention", "embed_dim", "embed_dim", -1, inner=("num_heads",), shared=("key", "value")
    )
    assert layer_spec(nn.MultiheadAttention(E, H, kdim=6, vdim=6)).shared == ()
    assert "nn.MultiheadAttention" in nv.FastNASConfig.layer_types()
    dyn = DynamicMultiheadAttention.convert(m)
    rule = LAYER_TYPES["nn.MultiheadAttention"](features_ratio=[0.25, 0.5, 1.0], feature_divisor=1)
    assert dyn.choices_for("num_heads", rule) == [1, 2, 4]
    assert dyn.choices_for("embed_dim", rule) == [4, 8, 16]  # whole heads only


@pytest.mark.parametrize("batch_first", [False, True])
def test_full_size_is_the_plain_layer(batch_first: bool) -> None:
    ref = _mha(batch_first)
    dyn = DynamicMultiheadAttention.convert(copy.deepcopy(ref))
    q, k, v = _inputs(batch_first, E)
    for a, b in zip(dyn(q, k, v), ref(q, k, v), strict=True):
        torch.testing.assert_close(a, b)


@settings(max_examples=40, deadline=None)
@given(
    heads=st.integers(1, H),
    head_order=st.permutations(list(range(H))),
    stream_order=st.permutations(list(range(E))),
    batch_first=st.booleans(),
    need_weights=st.booleans(),
    masks=st.booleans(),
    bias_kv=st.booleans(),
)
def test_random_heads_and_widths_equal_the_export(
    heads: int,
    head_order: list[int],
    stream_order: list[int],
    batch_first: bool,
    need_weights: bool,
    masks: bool,
    bias_kv: bool,
) -> None:
    ref = _mha(batch_first, add_bias_kv=bias_kv)
    dyn = DynamicMultiheadAttention.convert(copy.deepcopy(ref))
    hp_e, hp_h = Hparam(range(HD, E + 1, HD)), Hparam(range(1, H + 1))
    dyn.set_dim("embed_dim", hp_e)
    dyn.set_dim("num_heads", hp_h)
    hp_e.enforce_order(stream_order)
    hp_h.enforce_order(head_order)
    hp_e.active, hp_h.active = heads * HD, heads
    assert (dyn.embed_dim, dyn.num_heads, dyn.head_dim) == (heads * HD, heads, HD)
    q, k, v = _inputs(batch_first, heads * HD)
    kw: dict[str, Any] = {"need_weights": need_weights}
    if masks:
        kw["key_padding_mask"] = torch.zeros(N, L, dtype=torch.bool)
        kw["key_padding_mask"][:, -1] = True
        kw["attn_mask"] = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    y, w = dyn(q, k, v, **kw)
    plain = dyn.export()
    assert type(plain) is nn.MultiheadAttention
    assert (plain.embed_dim, plain.num_heads, plain.head_dim) == (heads * HD, heads, HD)
    assert plain.batch_first is batch_first
    y2, w2 = plain(q, k, v, **kw)
    torch.testing.assert_close(y2, y)
    assert (w is None) is (w2 is None) is (not need_weights)
    if w is not None:
        torch.testing.assert_close(w2, w)
    # the kept heads are exactly the chosen ones: the export's q rows are theirs
    rows = torch.tensor([h * HD + i for h in head_order[:heads] for i in range(HD)])
    cols = torch.tensor(stream_order[: heads * HD])
    torch.testing.assert_close(
        plain.in_proj_weight[: heads * HD], ref.in_proj_weight[rows][:, cols]
    )


def test_separate_key_value_dims() -> None:
    ref = _mha(True, kdim=6, vdim=7)
    dyn = DynamicMultiheadAttention.convert(copy.deepcopy(ref))
    hp = Hparam(range(HD, E + 1, HD))
    dyn.set_dim("embed_dim", hp)  # the heads follow
    assert isinstance(dyn.dim("num_heads"), FollowHeads)
    hp.active = 2 * HD
    assert dyn.num_heads == 2
    q = torch.randn(N, L, 2 * HD)
    k, v = torch.randn(N, L, 6), torch.randn(N, L, 7)
    plain = dyn.export()
    assert (plain.kdim, plain.vdim, plain.num_heads) == (6, 7, 2)
    torch.testing.assert_close(plain(q, k, v)[0], dyn(q, k, v)[0])


def test_a_selection_that_is_not_whole_heads_is_refused() -> None:
    dyn = DynamicMultiheadAttention.convert(_mha(False))
    hp_e, hp_h = Hparam([8, 16]), Hparam([1, 4])
    dyn.set_dim("embed_dim", hp_e)
    dyn.set_dim("num_heads", hp_h)
    hp_e.active, hp_h.active = 8, 1
    with pytest.raises(HparamError, match=r"embed_dim 8 must equal num_heads 1 x head_dim 4"):
        dyn.export()
    q = torch.randn(L, N, 8)
    with pytest.raises(HparamError, match="whole heads"):
        dyn(q, q, q)


@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer_encoder_layer_equals_its_exported_twin(batch_first: bool) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=24, batch_first=batch_first)
    layer.eval()
    stream = Hparam(range(HD, E + 1, HD), name="stream")
    stream.enforce_order(torch.randperm(E))
    hidden = Hparam([12, 24], name="ffn")
    attn = DynamicMultiheadAttention.convert(layer.self_attn)
    attn.set_dim("embed_dim", stream)
    lin1, lin2 = DynamicLinear.convert(layer.linear1), DynamicLinear.convert(layer.linear2)
    lin1.set_dim("in_features", stream)
    lin1.set_dim("out_features", hidden)
    lin2.set_dim("in_features", hidden)
    lin2.set_dim("out_features", stream)
    for norm in (layer.norm1, layer.norm2):
        DynamicLayerNorm.convert(norm).set_dim("normalized_shape", stream)
    stream.active, hidden.active = 2 * HD, 12
    x = torch.randn((N, L, 2 * HD) if batch_first else (L, N, 2 * HD))
    with torch.no_grad():  # no_grad + eval: where torch would take its fused fast path
        y = layer(x)
        twin = copy.deepcopy(layer)
        for name in ("self_attn", "linear1", "linear2", "norm1", "norm2"):
            setattr(twin, name, getattr(layer, name).export())
        assert twin.self_attn.num_heads == 2 and twin.linear1.out_features == 12
        torch.testing.assert_close(twin(x), y)


class _Block(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(E)
        self.attn = nn.MultiheadAttention(E, H, batch_first=batch_first)
        self.fc1, self.fc2 = nn.Linear(E, 2 * E), nn.Linear(2 * E, E)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("batch_first", [False, True])
def test_the_stream_couples_through_attention(batch_first: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, E), _Block(batch_first), _Block(batch_first), nn.Linear(E, 3)
    )
    model.eval()
    x = torch.randn(N, L, 6)
    ref = model(x)
    model = nv.convert(model, mode=[("fastnas", nv.FastNASConfig(**SMALL))], dummy_input=x)
    torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5)
    space = nv.search_space(model)
    assert space.hparams["0.out_features"].choices == (4, 8, 12, 16)  # whole heads of 4
    assert set(space.static["module"]) == {"0", "3"}  # only the input and output layers
    nv.select(model, {"0.out_features": 8, "1.fc1.out_features": 12})
    assert (model[1].attn.embed_dim, model[1].attn.num_heads) == (8, 2)
    y = model(x)
    small = nv.export(model)
    assert type(small[1].attn) is nn.MultiheadAttention and small[2].attn.num_heads == 2
    torch.testing.assert_close(small(x), y)


def test_cost_model_prices_the_pruned_attention_exactly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, E), _Block(True), nn.Linear(E, 3)).eval()
    x = torch.randn(N, L, 6)
    model = nv.convert(model, mode=[("fastnas", nv.FastNASConfig(**SMALL))], dummy_input=x)
    cm = nv.CostModel.from_model(model, x)
    sel = {"0.out_features": 8, "1.fc1.out_features": 12}
    flops, params = cm.estimate(sel)
    nv.select(model, sel)
    exact = nv.profile(nv.export(model), x)
    assert (flops, params) == (exact.flops, exact.params)


def test_unconvert_at_full_size_restores_the_plain_layer() -> None:
    ref = _mha(False)
    dyn = DynamicMultiheadAttention.convert(copy.deepcopy(ref))
    assert isinstance(dyn.out_proj, DynamicLinear)
    dyn.set_dim("embed_dim", Hparam(range(HD, E + 1, HD)))
    plain = dyn.unconvert()
    assert type(plain) is nn.MultiheadAttention
    assert type(plain.out_proj) is type(ref.out_proj)
    q = torch.randn(L, N, E)
    torch.testing.assert_close(plain(q, q, q)[0], ref(q, q, q)[0])
