"""Reference models recreating torchvision's patterns: ViT on nn.MultiheadAttention, ConvNeXt
with a (C,1,1) layer scale and an nn.LayerNorm-subclass LayerNorm2d, Swin-style shifted windows.

Each converts with and without a dummy_input; random subnets export with identical outputs; the
fraction of static layer dimensions is pinned (with the reasons of what stays static). Swin's
window partition (``view``/``permute``) needs real shapes, so without a dummy_input only its
MLPs prune.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.fastnas import FastNASConfig
from nasviz.models import REFERENCE_MODELS
from nasviz.space import get_record

NAMES = ["vit_mha", "convnext_tv", "swin_like"]


def _convert(name: str, with_input: bool) -> tuple[nn.Module, torch.Tensor]:
    model, x = REFERENCE_MODELS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = FastNASConfig.with_divisor(4)
        nv.convert(model, mode=[("fastnas", cfg)], dummy_input=x if with_input else None)
    return model, x


def static_fraction(model: nn.Module) -> float:
    """Static layer dimensions over all layer dimensions nasviz looked at."""
    record = get_record(model)
    assert record is not None
    plan = record.plan
    dynamic = sum(len(d) for d in plan.layers.values())
    return len(plan.static) / (len(plan.static) + dynamic)


def _reasons(model: nn.Module) -> dict[tuple[str, str], str]:
    record = get_record(model)
    assert record is not None
    return {(r["module"], r["attr"]): str(r["reason"]) for r in record.plan.static}


def test_vit_mha_stream_heads_and_mlp_are_prunable_with_a_dummy_input() -> None:
    model, x = _convert("vit_mha", True)
    hps = nv.search_space(model).hparams
    assert set(hps) == {
        "conv_proj.out_channels", "layers.0.mlp.0.out_features", "layers.1.mlp.0.out_features"
    }  # fmt: skip
    assert set(_reasons(model)) == {("conv_proj", "in_channels"), ("heads", "out_features")}
    assert static_fraction(model) == pytest.approx(2 / 19)
    nv.select(model, {"conv_proj.out_channels": 16})  # the heads follow the stream: 2 of 4
    y = model(x)
    small = nv.export(model)
    attn = small.layers[0].self_attention
    assert (attn.embed_dim, attn.num_heads, attn.head_dim) == (16, 2, 8)
    assert small.class_token.shape == (1, 1, 16) and small.pos_embedding.shape[-1] == 16
    assert torch.allclose(small(x), y, atol=1e-5)


def test_vit_mha_without_a_dummy_input_keeps_the_stream_for_lack_of_shapes() -> None:
    model, _ = _convert("vit_mha", False)
    assert set(nv.search_space(model).hparams) == {
        "layers.0.mlp.0.out_features", "layers.1.mlp.0.out_features"
    }  # fmt: skip
    assert "no dummy_input" in _reasons(model)[("layers.0.ln_1", "normalized_shape")]
    assert static_fraction(model) == pytest.approx(15 / 19)


@pytest.mark.parametrize("with_input", [True, False], ids=["dummy_input", "no_input"])
def test_convnext_tv_stream_prunes_through_the_layernorm_subclass(with_input: bool) -> None:
    model, x = _convert("convnext_tv", with_input)
    hps = nv.search_space(model).hparams
    assert sorted(hps) == sorted(
        ["features.0.0.out_channels", "features.2.1.out_channels"]
        + [f"features.{s}.{b}.block.3.out_features" for s in (1, 3) for b in (0, 1)]
    )
    # torchvision's LayerNorm2d subclasses nn.LayerNorm with its own forward: traced through,
    # its F.layer_norm over the permuted (channels-last) tensor is its call
    assert set(_reasons(model)) == {
        ("features.0.0", "in_channels"),
        ("classifier.2", "out_features"),
    }
    assert static_fraction(model) == pytest.approx(2 / 33)
    nv.select(model, {"features.0.0.out_channels": 8, "features.2.1.out_channels": 16})
    with torch.no_grad():
        y = model(x)
        small = nv.export(model)
        assert torch.allclose(small(x), y, atol=1e-5)
    ln = small.classifier[0]
    assert type(ln).__name__ == "LayerNorm2dTV" and ln.normalized_shape == (16,)
    assert small.features[1][0].layer_scale.shape == (8, 1, 1)


def test_swin_like_stream_and_heads_prune_through_roll_and_windows() -> None:
    model, x = _convert("swin_like", True)
    assert sorted(nv.search_space(model).hparams) == [
        "blocks.0.attn.qkv.out_features", "blocks.0.mlp.0.out_features",
        "blocks.1.attn.qkv.out_features", "blocks.1.mlp.0.out_features", "patch.out_channels",
    ]  # fmt: skip
    assert set(_reasons(model)) == {("patch", "in_channels"), ("head", "out_features")}
    assert static_fraction(model) == pytest.approx(2 / 26)
    # the qkv width is the per-head width (4 heads of 8, q, k and v of every head coupled)
    assert nv.search_space(model).hparams["blocks.0.attn.qkv.out_features"].original == 8
    nv.select(model, {"patch.out_channels": 16, "blocks.1.attn.qkv.out_features": 4})
    with torch.no_grad():
        y = model(x)
        small = nv.export(model)
        assert torch.allclose(small(x), y, atol=1e-5)
    assert small.blocks[1].attn.qkv.weight.shape == (3 * 4 * 4, 16)
    assert small.blocks[1].attn.proj.weight.shape == (16, 16)


def test_swin_like_without_a_dummy_input_keeps_the_windows_for_lack_of_shapes() -> None:
    model, _ = _convert("swin_like", False)
    assert sorted(nv.search_space(model).hparams) == [
        "blocks.0.mlp.0.out_features", "blocks.1.mlp.0.out_features"
    ]  # fmt: skip
    assert "no dummy_input" in _reasons(model)[("blocks.0.norm1", "normalized_shape")]
    assert static_fraction(model) == pytest.approx(22 / 26)


_CACHE: dict[str, tuple[nn.Module, torch.Tensor]] = {}


@pytest.mark.parametrize("name", NAMES)
@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_subnets_export_identically(name: str, data: st.DataObject) -> None:
    if name not in _CACHE:
        _CACHE[name] = _convert(name, True)
    model, x = _CACHE[name]
    hps = nv.search_space(model).hparams
    nv.select(
        model, {n: data.draw(st.sampled_from(list(hp.choices)), label=n) for n, hp in hps.items()}
    )
    with torch.no_grad():
        y = model(x)
        small = nv.export(model)
        assert torch.allclose(small(x), y, atol=1e-5)
