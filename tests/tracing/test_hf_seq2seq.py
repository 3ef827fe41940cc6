"""Seq2seq transformers (BART, T5, Whisper): the residual stream is searchable.

Their output has ``logits`` plus ``encoder_last_hidden_state``, a by-product whose width follows
the config: by default only ``logits`` keeps its width (:mod:`nasviz.tracing.outputs`), so the
encoder's stream prunes, the export gives the same logits and ``save_pretrained`` round-trips with
``tie_roles``. ``keep_outputs`` pins named outputs again. Tiny configs, random weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.errors import TracingError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
T = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")

CFG: dict[str, Any] = {"nn.Linear": {"feature_divisor": 1}, "nn.Conv1d": {"channel_divisor": 1}}
D = 64  # d_model of every model here

Batch = dict[str, torch.Tensor]


def _ids(b: int, s: int) -> torch.Tensor:
    return torch.randint(3, 100, (b, s))


def bart() -> tuple[nn.Module, Batch]:
    cfg = T.BartConfig(
        vocab_size=100, d_model=D, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, max_position_embeddings=32, use_cache=False,
    )  # fmt: skip
    x = {"input_ids": _ids(2, 8), "decoder_input_ids": _ids(2, 6)}
    return T.BartForConditionalGeneration(cfg), x


def t5() -> tuple[nn.Module, Batch]:
    cfg = T.T5Config(
        vocab_size=100, d_model=D, d_kv=16, d_ff=128, num_layers=2, num_heads=4, use_cache=False
    )
    x = {"input_ids": _ids(2, 8), "decoder_input_ids": _ids(2, 6)}
    return T.T5ForConditionalGeneration(cfg), x


def whisper() -> tuple[nn.Module, Batch]:
    cfg = T.WhisperConfig(
        vocab_size=100, d_model=D, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=16, max_target_positions=32,
        use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None,
    )  # fmt: skip
    x = {"input_features": torch.randn(2, 16, 32), "decoder_input_ids": _ids(2, 6)}
    return T.WhisperForConditionalGeneration(cfg), x


BUILDERS: dict[str, Callable[[], tuple[nn.Module, Batch]]] = {
    "bart": bart,
    "t5": t5,
    "whisper": whisper,
}
#: the stream hparam of each family (the first producer of the residual stream)
STREAM = {
    "bart": "model.encoder.embed_tokens.embedding_dim",
    "t5": "encoder.embed_tokens.embedding_dim",
    "whisper": "model.decoder.embed_tokens.embedding_dim",
}


def _convert(family: str, cfg: dict[str, Any]) -> tuple[nn.Module, Batch]:
    torch.manual_seed(0)
    model, x = BUILDERS[family]()
    model.eval()
    nv.convert(model, mode=[("fastnas", cfg)], dummy_input=x)
    return model, x


def _out(model: nn.Module, x: Batch) -> Any:
    with torch.no_grad():
        return model(**x)


def _half(model: nn.Module) -> None:
    hps = nv.search_space(model).hparams
    nv.select(
        model,
        {n: min(hp.choices, key=lambda c: abs(c - hp.original / 2)) for n, hp in hps.items()},
    )


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_the_stream_prunes_and_only_logits_keep_their_width(family: str) -> None:
    model, x = _convert(family, CFG)
    space = nv.search_space(model)
    assert space.hparams[STREAM[family]].original == D
    # what stays static: the tied LM head's rows (the vocabulary), Whisper's mel input
    assert all("logits" in r or "model input" in r for r in space.static["reason"]), space.static
    assert len(space.static) <= 2
    full = nv.profile(model, x).flops
    _half(model)
    assert nv.profile(model, x).flops < 0.35 * full
    ref = _out(model, x)
    assert ref.encoder_last_hidden_state.shape[-1] == D // 2  # a by-product: follows the stream
    small = nv.export(model)
    got = _out(small, x)
    torch.testing.assert_close(got.logits, ref.logits, atol=1e-5, rtol=0)
    assert got.encoder_last_hidden_state.shape == ref.encoder_last_hidden_state.shape
    assert small.config.d_model == D // 2
    assert any("encoder_last_hidden_state" in n for n in space.notes)


def test_the_full_size_model_keeps_its_outputs_up_to_the_channel_order() -> None:
    torch.manual_seed(0)
    plain, x = bart()
    plain.eval()
    before = _out(plain, x)
    model, _ = _convert("bart", CFG)  # same seed: same weights
    after = _out(model, x)
    torch.testing.assert_close(after.logits, before.logits, atol=1e-5, rtol=1e-4)
    a, b = after.encoder_last_hidden_state, before.encoder_last_hidden_state
    torch.testing.assert_close(a.sort(-1).values, b.sort(-1).values, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_save_pretrained_round_trips_a_halved_stream(family: str, tmp_path: Path) -> None:
    model, x = _convert(family, {**CFG, "tie_roles": True})
    _half(model)
    small = nv.export(model)
    assert small.config.d_model == D // 2
    report = nv.save_pretrained(small, tmp_path / "out", x)
    assert report.max_abs_diff <= 1e-5
    loaded = type(small).from_pretrained(tmp_path / "out").eval()  # type: ignore[attr-defined]  # a transformers class
    assert loaded.config.d_model == D // 2
    torch.testing.assert_close(_out(loaded, x).logits, _out(small, x).logits, atol=1e-5, rtol=0)


def test_keep_outputs_pins_the_named_outputs_again() -> None:
    cfg = {**CFG, "keep_outputs": ["logits", "encoder_last_hidden_state"]}
    model, _ = _convert("bart", cfg)
    space = nv.search_space(model)
    assert STREAM["bart"] not in space.hparams
    assert any("('encoder_last_hidden_state')" in r for r in space.static["reason"])
    assert any(n.endswith("fc1.out_features") for n in space.hparams)  # FFN widths stay free


def test_keep_outputs_names_that_match_nothing_are_refused_with_the_output_names() -> None:
    torch.manual_seed(0)
    model, x = bart()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        TracingError, match=r"keep_outputs=\['logit'\].*'encoder_last_hidden_state'"
    ):
        nv.convert(model, mode=[("fastnas", {**CFG, "keep_outputs": ["logit"]})], dummy_input=x)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # left unchanged
