"""Tiny Hugging Face transformers models for the HF tests, built once here.

Small configs, random weights, nothing downloaded (``HF_HUB_OFFLINE=1``). Each builder returns
``(model in eval mode, dummy_input dict)``. Importing this module skips the importing test
module when transformers is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import strategies as st
from torch import nn

import nasviz as nv

os.environ.setdefault("HF_HUB_OFFLINE", "1")
T = pytest.importorskip("transformers")

#: a model and its dummy input
Built = tuple[nn.Module, dict[str, torch.Tensor]]

#: the sizes every builder uses (so a test can tell the FFN from the stream by its width)
DIMS: dict[str, Any] = {"hidden": 64, "heads": 4, "ffn": 128, "layers": 2, "vocab": 100}


def ids(b: int, s: int) -> torch.Tensor:
    """Random token ids ``(b, s)`` (ids 0-2 are the special tokens)."""
    return torch.randint(3, DIMS["vocab"], (b, s))


def bert() -> Built:
    """BERT for masked LM."""
    cfg = T.BertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=32,
    )  # fmt: skip
    return T.BertForMaskedLM(cfg).eval(), {"input_ids": ids(2, 8)}


def llama() -> Built:
    """Llama with grouped-query attention (4 query heads, 2 KV heads)."""
    cfg = T.LlamaConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=32, use_cache=False,
    )  # fmt: skip
    return T.LlamaForCausalLM(cfg).eval(), {"input_ids": ids(2, 8)}


def bart() -> Built:
    """BART encoder-decoder."""
    cfg = T.BartConfig(
        vocab_size=100, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, max_position_embeddings=32, use_cache=False,
    )  # fmt: skip
    return T.BartForConditionalGeneration(cfg).eval(), {
        "input_ids": ids(2, 8),
        "decoder_input_ids": ids(2, 6),
    }


def t5() -> Built:
    """T5 encoder-decoder (relative position bias, ``d_kv=16``)."""
    cfg = T.T5Config(
        vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, use_cache=False
    )
    return T.T5ForConditionalGeneration(cfg).eval(), {
        "input_ids": ids(2, 8),
        "decoder_input_ids": ids(2, 6),
    }


def vit() -> Built:
    """ViT image classifier (32x32 images, patches of 8)."""
    cfg = T.ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        image_size=32, patch_size=8, num_labels=10,
    )  # fmt: skip
    return T.ViTForImageClassification(cfg).eval(), {"pixel_values": torch.randn(2, 3, 32, 32)}


def whisper() -> Built:
    """Whisper encoder-decoder (16 mel bins, 32 frames)."""
    cfg = T.WhisperConfig(
        vocab_size=100, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=16, max_target_positions=32,
        use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None,
    )  # fmt: skip
    return T.WhisperForConditionalGeneration(cfg).eval(), {
        "input_features": torch.randn(2, 16, 32),
        "decoder_input_ids": ids(2, 6),
    }


def gpt2(impl: str = "eager") -> Built:
    """GPT-2 LM (transformers' ``Conv1D`` projections) with attention implementation ``impl``."""
    cfg = T.GPT2Config(
        n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=100, use_cache=False,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    cfg._attn_implementation = impl
    return T.GPT2LMHeadModel(cfg).eval(), {"input_ids": ids(2, 8)}


#: family -> (builder, hparam kinds that must be searchable)
FAMILIES: dict[str, tuple[Callable[[], Built], set[str]]] = {
    "bert": (bert, {"heads", "ffn", "stream"}),
    "llama": (llama, {"heads", "ffn", "stream"}),
    "vit": (vit, {"heads", "ffn", "stream"}),
    # the encoder's hidden state is a model output (encoder_last_hidden_state): stream static
    "bart": (bart, {"heads", "ffn"}),
    "t5": (t5, {"heads", "ffn"}),
    # Whisper names its head count (view(b, -1, self.num_heads, head_dim)): num_heads follows
    "whisper": (whisper, {"heads", "ffn", "stream"}),
}


def logits(model: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's logits (its first output where it has none) without autograd."""
    with torch.no_grad():
        out = model(**x)
    return out.logits if hasattr(out, "logits") else out[0]


_CONVERTED: dict[str, Built] = {}


def converted(name: str, build: Callable[[], Built], config: dict[str, Any]) -> Built:
    """``build()`` (seed 0) converted with the FastNAS ``config``, once per ``name`` per session:
    the tests that share it select their own subnets.
    """
    if name not in _CONVERTED:
        _CONVERTED[name] = converted_new(build, config)
    return _CONVERTED[name]


def converted_new(build: Callable[[], Built], config: dict[str, Any]) -> Built:
    """``build()`` (seed 0) converted with the FastNAS ``config``: a model of one test's own."""
    torch.manual_seed(0)
    model, x = build()
    nv.convert(model, mode=[("fastnas", config)], dummy_input=x)
    return model, x


def check_random_subnet(model: nn.Module, x: dict[str, torch.Tensor], data: st.DataObject) -> None:
    """Select a subnet drawn from hypothesis ``data`` and check that its export gives the same
    logits.
    """
    hps = nv.search_space(model).hparams
    nv.select(model, {n: data.draw(st.sampled_from(list(hp.choices)), n) for n, hp in hps.items()})
    y = logits(model, x)
    torch.testing.assert_close(logits(nv.export(model), x), y, atol=1e-5, rtol=0)
