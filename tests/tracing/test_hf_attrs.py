"""GPT-2 (Conv1D's addmm, split by ``self.split_size``) and module attributes that follow widths.

Tiny configs, random weights, nothing downloaded. An int attribute of an ordinary module that
the exported graph uses as a channel size (GPT-2's ``split_size``/``embed_dim``, Whisper's
``num_heads``), or that names a head count the graph inferred (``num_heads``), reads as the
active width after ``select``, keeps the active value on export, and its original when the
following is undone.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from _hf import T, check_random_subnet, converted, converted_new, gpt2, logits, t5, whisper
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.dynamic import DynamicModule
from nasviz.dynamic.params import followed_attrs, unslice_params

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {
    "nn.Linear": {"feature_divisor": 1},
    "transformers.Conv1D": {"feature_divisor": 1},
}


def _half(hps: dict[str, Any]) -> dict[str, int]:
    return {n: min(hp.choices, key=lambda c: abs(c - hp.original / 2)) for n, hp in hps.items()}


def _converted(impl: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return converted(f"gpt2-{impl}", lambda: gpt2(impl), CFG)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_gpt2_heads_ffn_and_stream_are_searchable(impl: str) -> None:
    model, _ = _converted(impl)
    space = nv.search_space(model)
    hps = space.hparams
    for i in range(2):
        assert list(hps[f"transformer.h.{i}.attn.heads"].choices) == [1, 2, 3, 4]
        assert hps[f"transformer.h.{i}.mlp.c_fc.nf"].original == 256
    assert hps["transformer.wte.embedding_dim"].original == 64
    # only the tied LM head's vocabulary rows stay
    assert list(space.static["module"]) == ["lm_head"]
    nv.select(model, _half(hps))
    attn = model.transformer.h[0].attn
    assert (attn.num_heads, attn.split_size, attn.embed_dim) == (2, 32, 32)
    assert model.transformer.embed_dim == 32
    nv.select(model, {n: hp.original for n, hp in hps.items()})
    assert (attn.num_heads, attn.split_size, attn.embed_dim) == (4, 64, 64)


def test_gpt2_exports_half_with_the_same_outputs_fewer_flops_and_attributes() -> None:
    model, x = converted_new(gpt2, CFG)
    hps = nv.search_space(model).hparams
    before = nv.profile(model, x).flops
    nv.select(model, _half(hps))
    assert nv.profile(model, x).flops < 0.5 * before
    y = logits(model, x)
    small = nv.export(model)
    assert not any(isinstance(m, DynamicModule) for m in small.modules())
    attn = small.transformer.h[1].attn
    assert type(attn) is T.models.gpt2.modeling_gpt2.GPT2Attention
    assert (attn.num_heads, attn.split_size, attn.embed_dim) == (2, 32, 32)
    assert attn.c_attn.weight.shape == (32, 96)
    assert small.transformer.h[1].mlp.c_fc.weight.shape == (32, 128)
    assert small.lm_head.weight is small.transformer.wte.weight  # tied stays tied
    torch.testing.assert_close(logits(small, x), y, atol=1e-5, rtol=0)


def test_unfollowing_restores_the_original_attribute_values() -> None:
    model, _ = _converted("eager")
    hps = nv.search_space(model).hparams
    nv.select(model, _half(hps))
    attn = model.transformer.h[0].attn
    clone = copy.deepcopy(attn)
    assert set(followed_attrs(clone)) == {"num_heads", "split_size", "embed_dim"}
    assert clone.num_heads == 2
    unslice_params(clone)
    assert type(clone).__name__ == "GPT2Attention"
    assert (clone.num_heads, clone.split_size, clone.embed_dim) == (4, 64, 64)
    assert followed_attrs(clone) == {}


@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_random_gpt2_subnets_export_to_the_same_outputs(data: st.DataObject) -> None:
    check_random_subnet(*_converted("sdpa"), data)


def test_whisper_heads_are_prunable_and_num_heads_follows() -> None:
    model, x = converted_new(whisper, CFG)
    hps = nv.search_space(model).hparams
    name = "model.encoder.layers.0.self_attn.heads"
    assert list(hps[name].choices) == [1, 2, 3, 4]
    nv.select(model, _half(hps))
    assert model.model.encoder.layers[0].self_attn.num_heads == 2
    y = logits(model, x)
    small = nv.export(model)
    attn = small.model.encoder.layers[0].self_attn
    assert attn.num_heads == 2
    assert attn.k_proj.out_features == 32
    torch.testing.assert_close(logits(small, x), y, atol=1e-5, rtol=0)


def test_save_restore_rebuilds_the_following_attributes(tmp_path: Any) -> None:
    model, x = converted_new(gpt2, CFG)
    nv.select(model, _half(nv.search_space(model).hparams))
    y = logits(model, x)
    nv.save(model, tmp_path / "gpt2.pt")
    torch.manual_seed(1)
    fresh = nv.restore(gpt2()[0], tmp_path / "gpt2.pt")
    attn = fresh.transformer.h[0].attn
    assert set(followed_attrs(attn)) == {"num_heads", "split_size", "embed_dim"}
    assert (attn.num_heads, attn.split_size) == (2, 32)
    torch.testing.assert_close(logits(fresh, x), y, atol=1e-5, rtol=0)


def test_t5_cross_attention_heads_follow_through_a_zeros_bias() -> None:
    """``zeros((1, self.n_heads, q, k))``: the new tensor's heads are the module's heads (its
    ``n_heads`` follows them), so cross-attention heads are searchable too.
    """
    model, x = converted_new(t5, CFG)
    hps = nv.search_space(model).hparams
    name = "decoder.block.0.layer.1.EncDecAttention.heads"
    assert list(hps[name].choices) == [1, 2, 3, 4]
    nv.select(model, {name: 3})
    y = logits(model, x)
    small = nv.export(model)
    for block in small.decoder.block:
        cross = block.layer[1].EncDecAttention
        assert (cross.n_heads, cross.q.out_features, cross.o.in_features) == (3, 48, 48)
    torch.testing.assert_close(logits(small, x), y, atol=1e-5, rtol=0)
