"""Hugging Face export: the exported model keeps its class, its config carries the new widths,
and nv.save_pretrained round-trips through from_pretrained with identical outputs.

Tiny configs, random weights, nothing downloaded. Every family is converted with
``tie_roles=True``; the subnet picked is one its config can describe (FFN widths halved; heads
halved where the config has a fixed head size or the stream is cut with them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _hf import FAMILIES
from _hf import logits as _logits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.errors import ExportError

pytestmark = pytest.mark.usefixtures("one_thread")

CFG: dict[str, Any] = {"nn.Linear": {"feature_divisor": 1}, "nn.Conv1d": {"channel_divisor": 1}}
TIED = {**CFG, "tie_roles": True}

#: family -> (hparam-name parts to halve, config key -> expected value after the cut)
CASES: dict[str, tuple[tuple[str, ...], dict[str, int]]] = {
    "bert": (
        ("intermediate", "heads", "embedding_dim"),
        {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
    ),
    "llama": (
        ("mlp", "heads"),
        {
            "hidden_size": 64,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
        },
    ),
    "vit": (
        ("fc1", "heads", "projection"),
        {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
    ),
    "bart": (("fc1",), {"d_model": 64, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}),
    "t5": (("DenseReluDense",), {"d_model": 64, "d_ff": 64, "num_heads": 4, "d_kv": 16}),
    "whisper": (("fc1",), {"d_model": 64, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}),
}


def _convert(family: str, cfg: dict[str, Any]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model, x = FAMILIES[family][0]()
    model.eval()
    nv.convert(model, mode=[("fastnas", cfg)], dummy_input=x)
    return model, x


def test_tie_roles_gives_one_hparam_per_role() -> None:
    model, _ = _convert("bert", TIED)
    names = sorted(nv.search_space(model).hparams)
    assert "bert.encoder.layer.*.intermediate.dense.out_features" in names
    assert "bert.encoder.layer.*.attention.self.heads" in names
    assert not any(".layer.0." in n or ".layer.1." in n for n in names)
    nv.select(model, {"bert.encoder.layer.*.intermediate.dense.out_features": 38})
    small = nv.export(model)
    assert [lay.intermediate.dense.out_features for lay in small.bert.encoder.layer] == [38, 38]


def test_tied_space_restores_from_nasviz_state(tmp_path: Path) -> None:
    model, x = _convert("llama", TIED)
    nv.select(model, {"model.layers.*.mlp.gate_proj.out_features": 45})
    y = _logits(model, x)
    nv.save(model, tmp_path / "m.pt")
    torch.manual_seed(1)
    fresh, _ = FAMILIES["llama"][0]()
    fresh = nv.restore(fresh.eval(), tmp_path / "m.pt")
    assert torch.allclose(_logits(fresh, x), y, atol=1e-5)


@pytest.mark.parametrize("family", sorted(CASES))
def test_save_pretrained_round_trip(family: str, tmp_path: Path) -> None:
    parts, expected = CASES[family]
    model, x = _convert(family, TIED)
    hps = nv.search_space(model).hparams
    full = nv.profile(model, x).flops
    pick = {n: hp.original // 2 for n, hp in hps.items() if any(p in n for p in parts)}
    assert set(pick) and all(v in hps[n].choices for n, v in pick.items()), (pick, sorted(hps))
    nv.select(model, pick)
    assert nv.profile(model, x).flops < 0.9 * full
    y = _logits(model, x)
    small = nv.export(model)
    assert (
        type(small).__name__ == type(model).__name__ == FAMILIES[family][0]()[0].__class__.__name__
    )
    assert {k: getattr(small.config, k) for k in expected} == expected
    assert torch.allclose(_logits(small, x), y, atol=1e-5)
    report = nv.save_pretrained(small, tmp_path / "out", x)
    assert report.max_abs_diff <= 1e-5 and report.bytes > 0
    loaded = type(small).from_pretrained(tmp_path / "out").eval()  # type: ignore[attr-defined]  # test data typed loosely
    assert {k: getattr(loaded.config, k) for k in expected} == expected
    assert torch.allclose(_logits(loaded, x), y, atol=1e-5)
    assert not list(tmp_path.glob(".out.*"))  # the temporary directory is gone


def test_non_uniform_widths_are_refused_with_both_fixes(tmp_path: Path) -> None:
    model, x = _convert("bert", CFG)
    nv.select(model, {"bert.encoder.layer.0.intermediate.dense.out_features": 64})
    small = nv.export(model)
    with pytest.raises(ExportError) as e:
        nv.save_pretrained(small, tmp_path / "out", x)
    msg = str(e.value)
    assert "intermediate_size differs per layer" in msg
    assert "64: bert.encoder.layer.0.intermediate.dense" in msg
    assert "128: bert.encoder.layer.1.intermediate.dense" in msg
    assert "tie_roles" in msg and "nv.save(model, path) / nv.restore(fresh_model, path)" in msg
    assert not (tmp_path / "out").exists()


def test_heads_without_the_stream_are_refused_where_the_config_derives_head_size(
    tmp_path: Path,
) -> None:
    model, x = _convert("bart", TIED)
    nv.select(model, {"model.encoder.layers.*.self_attn.heads": 2})
    small = nv.export(model)
    with pytest.raises(ExportError, match="cannot describe this BartForConditionalGeneration"):
        nv.save_pretrained(small, tmp_path / "out", x)
    assert not (tmp_path / "out").exists()


def test_save_pretrained_refuses_a_dynamic_model(tmp_path: Path) -> None:
    model, x = _convert("bert", TIED)
    with pytest.raises(ExportError, match="export it first"):
        nv.save_pretrained(model, tmp_path / "out", x)


_SPACES: dict[str, tuple[nn.Module, dict[str, torch.Tensor], float]] = {}


@pytest.mark.parametrize("family", ["bert", "llama"])
@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_tied_subnets_export_identically(family: str, data: st.DataObject) -> None:
    if family not in _SPACES:
        model, x = _convert(family, TIED)
        _SPACES[family] = (model, x, nv.profile(model, x).flops)
    model, x, full = _SPACES[family]
    hps = nv.search_space(model).hparams
    sub = {n: data.draw(st.sampled_from(list(hp.choices)), label=n) for n, hp in hps.items()}
    nv.select(model, sub)
    y = _logits(model, x)
    small = nv.export(model)
    assert torch.allclose(_logits(small, x), y, atol=1e-5)
    if any(v < hps[n].original for n, v in sub.items()):
        assert nv.profile(model, x).flops < full
