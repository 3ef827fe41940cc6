"""GPT-2 (Conv1D's addmm, split by ``self.split_size``) and module attributes that follow widths.

Tiny configs, random weights, nothing downloaded. An int attribute of an ordinary module that
the exported graph uses as a channel size (GPT-2's ``split_size``/``embed_dim``, Whisper's
``num_heads``), or that names a head count the graph inferred (``num_heads``), reads as the
active width after ``select``, keeps the active value on export, and its original when the
following is undone.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.dynamic import DynamicModule
from nasviz.dynamic.params import followed_attrs, unslice_params

os.environ.setdefault("HF_HUB_OFFLINE", "1")
T = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {
    "nn.Linear": {"feature_divisor": 1},
    "transformers.Conv1D": {"feature_divisor": 1},
}


def gpt2(impl: str = "eager") -> tuple[nn.Module, dict[str, torch.Tensor]]:
    cfg = T.GPT2Config(
        n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=100, use_cache=False,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    cfg._attn_implementation = impl
    return T.GPT2LMHeadModel(cfg).eval(), {"input_ids": torch.randint(3, 100, (2, 8))}


def whisper() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    cfg = T.WhisperConfig(
        vocab_size=100, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=16, max_target_positions=32,
        use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None,
    )  # fmt: skip
    return T.WhisperForConditionalGeneration(cfg).eval(), {
        "input_features": torch.randn(2, 16, 32),
        "decoder_input_ids": torch.randint(3, 100, (2, 6)),
    }


def _logits(model: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**x).logits


def _half(hps: dict[str, Any]) -> dict[str, int]:
    return {n: min(hp.choices, key=lambda c: abs(c - hp.original / 2)) for n, hp in hps.items()}


_CONVERTED: dict[str, tuple[nn.Module, dict[str, torch.Tensor]]] = {}


def _converted(impl: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    if impl not in _CONVERTED:
        torch.manual_seed(0)
        model, x = gpt2(impl)
        nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
        _CONVERTED[impl] = (model, x)
    return _CONVERTED[impl]


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
    torch.manual_seed(0)
    model, x = gpt2()
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    hps = nv.search_space(model).hparams
    before = nv.profile(model, x).flops
    nv.select(model, _half(hps))
    assert nv.profile(model, x).flops < 0.5 * before
    y = _logits(model, x)
    small = nv.export(model)
    assert not any(isinstance(m, DynamicModule) for m in small.modules())
    attn = small.transformer.h[1].attn
    assert type(attn) is T.models.gpt2.modeling_gpt2.GPT2Attention
    assert (attn.num_heads, attn.split_size, attn.embed_dim) == (2, 32, 32)
    assert attn.c_attn.weight.shape == (32, 96)
    assert small.transformer.h[1].mlp.c_fc.weight.shape == (32, 128)
    assert small.lm_head.weight is small.transformer.wte.weight  # tied stays tied
    torch.testing.assert_close(_logits(small, x), y, atol=1e-5, rtol=0)


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
    model, x = _converted("sdpa")
    hps = nv.search_space(model).hparams
    nv.select(model, {n: data.draw(st.sampled_from(list(hp.choices)), n) for n, hp in hps.items()})
    y = _logits(model, x)
    torch.testing.assert_close(_logits(nv.export(model), x), y, atol=1e-5, rtol=0)


def test_whisper_heads_are_prunable_and_num_heads_follows() -> None:
    torch.manual_seed(0)
    model, x = whisper()
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    hps = nv.search_space(model).hparams
    name = "model.encoder.layers.0.self_attn.heads"
    assert list(hps[name].choices) == [1, 2, 3, 4]
    nv.select(model, _half(hps))
    assert model.model.encoder.layers[0].self_attn.num_heads == 2
    y = _logits(model, x)
    small = nv.export(model)
    attn = small.model.encoder.layers[0].self_attn
    assert attn.num_heads == 2
    assert attn.k_proj.out_features == 32
    torch.testing.assert_close(_logits(small, x), y, atol=1e-5, rtol=0)


def test_save_restore_rebuilds_the_following_attributes(tmp_path: Any) -> None:
    torch.manual_seed(0)
    model, x = gpt2()
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    nv.select(model, _half(nv.search_space(model).hparams))
    y = _logits(model, x)
    nv.save(model, tmp_path / "gpt2.pt")
    torch.manual_seed(1)
    fresh = nv.restore(gpt2()[0], tmp_path / "gpt2.pt")
    attn = fresh.transformer.h[0].attn
    assert set(followed_attrs(attn)) == {"num_heads", "split_size", "embed_dim"}
    assert (attn.num_heads, attn.split_size) == (2, 32)
    torch.testing.assert_close(_logits(fresh, x), y, atol=1e-5, rtol=0)


def test_t5_cross_attention_heads_follow_through_a_zeros_bias() -> None:
    """``zeros((1, self.n_heads, q, k))``: the new tensor's heads are the module's heads (its
    ``n_heads`` follows them), so cross-attention heads are searchable too.
    """
    torch.manual_seed(0)
    cfg = T.T5Config(
        vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, use_cache=False
    )
    model = T.T5ForConditionalGeneration(cfg).eval()
    ids = torch.randint(3, 100, (2, 8))
    x = {"input_ids": ids, "decoder_input_ids": ids[:, :6]}
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    hps = nv.search_space(model).hparams
    name = "decoder.block.0.layer.1.EncDecAttention.heads"
    assert list(hps[name].choices) == [1, 2, 3, 4]
    nv.select(model, {name: 3})
    y = _logits(model, x)
    small = nv.export(model)
    for block in small.decoder.block:
        cross = block.layer[1].EncDecAttention
        assert (cross.n_heads, cross.q.out_features, cross.o.in_features) == (3, 48, 48)
    torch.testing.assert_close(_logits(small, x), y, atol=1e-5, rtol=0)
