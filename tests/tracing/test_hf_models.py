"""Hugging Face transformers models: captured with torch.export, heads/FFN/stream searchable.

Tiny configs, random weights, nothing downloaded. For each family: convert with a dict
dummy_input, check the hparams cover what the family allows (and every static dim has a
reason), select the choice nearest 50% everywhere, check the FLOPs drop and that the exported
model gives the subnet's outputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.dynamic import DynamicModule

os.environ.setdefault("HF_HUB_OFFLINE", "1")
T = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {"nn.Linear": {"feature_divisor": 1}, "nn.Conv1d": {"channel_divisor": 1}}
DIMS: dict[str, Any] = {"hidden": 64, "heads": 4, "ffn": 128, "layers": 2, "vocab": 100}


def _ids(b: int, s: int) -> torch.Tensor:
    return torch.randint(3, DIMS["vocab"], (b, s))


def bert() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    cfg = T.BertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=32,
    )  # fmt: skip
    return T.BertForMaskedLM(cfg), {"input_ids": _ids(2, 8)}


def llama() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    cfg = T.LlamaConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=32, use_cache=False,
    )  # fmt: skip
    return T.LlamaForCausalLM(cfg), {"input_ids": _ids(2, 8)}


def bart() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    cfg = T.BartConfig(
        vocab_size=100, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, max_position_embeddings=32, use_cache=False,
    )  # fmt: skip
    return T.BartForConditionalGeneration(cfg), {
        "input_ids": _ids(2, 8),
        "decoder_input_ids": _ids(2, 6),
    }


def t5() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    cfg = T.T5Config(
        vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, use_cache=False
    )
    return T.T5ForConditionalGeneration(cfg), {
        "input_ids": _ids(2, 8),
        "decoder_input_ids": _ids(2, 6),
    }


def vit() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    cfg = T.ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        image_size=32, patch_size=8, num_labels=10,
    )  # fmt: skip
    return T.ViTForImageClassification(cfg), {"pixel_values": torch.randn(2, 3, 32, 32)}


def whisper() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    cfg = T.WhisperConfig(
        vocab_size=100, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=16, max_target_positions=32,
        use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None,
    )  # fmt: skip
    return T.WhisperForConditionalGeneration(cfg), {
        "input_features": torch.randn(2, 16, 32),
        "decoder_input_ids": _ids(2, 6),
    }


#: family -> (builder, hparam kinds that must be searchable)
FAMILIES: dict[str, tuple[Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]], set[str]]] = {
    "bert": (bert, {"heads", "ffn", "stream"}),
    "llama": (llama, {"heads", "ffn", "stream"}),
    "vit": (vit, {"heads", "ffn", "stream"}),
    # the encoder's hidden state is a model output (encoder_last_hidden_state): stream static
    "bart": (bart, {"heads", "ffn"}),
    "t5": (t5, {"heads", "ffn"}),
    # Whisper names its head count (view(b, -1, self.num_heads, head_dim)): num_heads follows
    "whisper": (whisper, {"heads", "ffn", "stream"}),
}


def _kind(name: str, hp: Any) -> str:
    if name.endswith(".heads"):
        return "heads"
    if hp.original == DIMS["ffn"]:
        return "ffn"
    return "stream" if hp.original == DIMS["hidden"] else "other"


def _logits(model: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**x)
    return out.logits if hasattr(out, "logits") else out[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_converts_prunes_and_exports(family: str) -> None:
    torch.manual_seed(0)
    build, kinds = FAMILIES[family]
    model, x = build()
    model.eval()
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    space = nv.search_space(model)
    hps = space.hparams
    assert hps
    assert kinds <= {_kind(n, hp) for n, hp in hps.items()}, sorted(hps)
    static = space.static
    assert all(isinstance(r, str) and r for r in static["reason"])
    full = nv.profile(model, x).flops
    nv.select(
        model,
        {n: min(hp.choices, key=lambda c: abs(c - hp.original / 2)) for n, hp in hps.items()},
    )
    assert nv.profile(model, x).flops < 0.8 * full
    y = _logits(model, x)
    small = nv.export(model)
    assert not any(isinstance(m, DynamicModule) for m in small.modules())
    assert torch.allclose(_logits(small, x), y, atol=1e-5)


def test_gqa_removes_a_kv_head_with_its_query_heads() -> None:
    torch.manual_seed(0)
    model, x = llama()
    model.eval()
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    hp = nv.search_space(model).hparams["model.layers.0.self_attn.heads"]
    assert (hp.original, list(hp.choices)) == (2, [1, 2])  # the two KV heads
    nv.select(model, {"model.layers.0.self_attn.heads": 1})
    small = nv.export(model)
    attn = small.model.layers[0].self_attn
    head_dim = 16
    assert attn.k_proj.out_features == attn.v_proj.out_features == head_dim
    assert attn.q_proj.out_features == attn.o_proj.in_features == 2 * head_dim
    small(**x)


def test_bert_heads_are_whole_and_q_k_v_o_follow() -> None:
    torch.manual_seed(0)
    model, x = bert()
    model.eval()
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    name = "bert.encoder.layer.1.attention.self.heads"
    assert list(nv.search_space(model).hparams[name].choices) == [1, 2, 3, 4]
    nv.select(model, {name: 3})
    stream = "bert.embeddings.word_embeddings.embedding_dim"
    nv.select(model, {stream: 32})
    small = nv.export(model)
    layer = small.bert.encoder.layer[1].attention
    widths = {layer.self.query.out_features, layer.self.key.out_features}
    assert widths | {layer.self.value.out_features, layer.output.dense.in_features} == {48}
    # the tied LM head stays tied to the (pruned) word embeddings
    emb = small.bert.embeddings.word_embeddings.weight
    assert small.cls.predictions.decoder.weight is emb
    assert emb.shape == (DIMS["vocab"], 32)


def test_t5_position_bias_follows_the_heads_of_every_layer() -> None:
    torch.manual_seed(0)
    model, x = t5()
    model.eval()
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    hps = nv.search_space(model).hparams
    enc = [n for n in hps if n.startswith("encoder.") and n.endswith(".heads")]
    assert enc == ["encoder.block.0.layer.0.SelfAttention.heads"]  # one bias: one head set
    nv.select(model, {enc[0]: 2})
    small = nv.export(model)
    bias = small.encoder.block[0].layer[0].SelfAttention.relative_attention_bias
    assert bias.weight.shape[1] == 2
    assert small.encoder.block[1].layer[0].SelfAttention.q.out_features == 2 * 16


_CONVERTED: dict[str, tuple[nn.Module, dict[str, torch.Tensor]]] = {}


def _converted(family: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    if family not in _CONVERTED:
        torch.manual_seed(0)
        model, x = FAMILIES[family][0]()
        model.eval()
        nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
        _CONVERTED[family] = (model, x)
    return _CONVERTED[family]


@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_random_llama_subnets_export_to_the_same_outputs(data: st.DataObject) -> None:
    model, x = _converted("llama")
    hps = nv.search_space(model).hparams
    nv.select(model, {n: data.draw(st.sampled_from(list(hp.choices)), n) for n, hp in hps.items()})
    y = _logits(model, x)
    torch.testing.assert_close(_logits(nv.export(model), x), y, atol=1e-5, rtol=0)


def test_a_train_mode_transformer_converts_and_stays_in_train_mode() -> None:
    torch.manual_seed(0)
    model, x = bert()
    model.train()  # dropout active: the capture and the self-check run in eval mode
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    assert model.training
    assert "bert.encoder.layer.0.attention.self.heads" in nv.search_space(model).hparams


def test_whisper_heads_are_searchable_with_the_attribute_that_names_them() -> None:
    model, _ = _converted("whisper")
    space = nv.search_space(model)
    assert "model.encoder.layers.0.self_attn.heads" in space.hparams
    static = space.static.set_index(["module", "attr"])
    assert ("model.encoder.layers.0.self_attn.k_proj", "out_features") not in static.index
