"""Hugging Face transformers models: captured with torch.export, heads/FFN/stream searchable.

Tiny configs, random weights, nothing downloaded. For each family: convert with a dict
dummy_input, check the hparams cover what the family allows (and every static dim has a
reason), select the choice nearest 50% everywhere, check the FLOPs drop and that the exported
model gives the subnet's outputs.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _hf import DIMS, FAMILIES, bert, check_random_subnet, converted, llama, logits, t5
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.dynamic import DynamicModule

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {"nn.Linear": {"feature_divisor": 1}, "nn.Conv1d": {"channel_divisor": 1}}


def _converted(family: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return converted(family, FAMILIES[family][0], CFG)


def _kind(name: str, hp: Any) -> str:
    if name.endswith(".heads"):
        return "heads"
    if hp.original == DIMS["ffn"]:
        return "ffn"
    return "stream" if hp.original == DIMS["hidden"] else "other"


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
    y = logits(model, x)
    small = nv.export(model)
    assert not any(isinstance(m, DynamicModule) for m in small.modules())
    assert torch.allclose(logits(small, x), y, atol=1e-5)


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


@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_random_llama_subnets_export_to_the_same_outputs(data: st.DataObject) -> None:
    check_random_subnet(*_converted("llama"), data)


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
