"""torch's own transformer blocks: nn.TransformerEncoderLayer / DecoderLayer are traced through.

The capture traces them with the fused attention fast path off (its checks branch on the
input), so their attention heads, FFN widths and the stream are searchable; a converted model
runs with the fast path off too, because the fused kernel would read full weights of sliced
layers (known answer: a subnet with only its FFN halved equals its export).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.config import LAYER_TYPES

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {k: {"*": {LAYER_TYPES[k].divisor_field: 4}} for k in LAYER_TYPES}
E, HEADS, FFN = 32, 4, 64


class Encoder(nn.Module):
    """``Linear -> TransformerEncoderLayer x2 -> Linear``."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, E)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(E, HEADS, FFN, dropout=0.0, batch_first=True)
            for _ in range(2)
        )
        self.out = nn.Linear(E, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits per position."""
        h = self.inp(x)
        for layer in self.layers:
            h = layer(h)
        return self.out(h)


class Decoder(nn.Module):
    """``Linear -> TransformerDecoderLayer (memory from another Linear) -> Linear``."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mem = nn.Linear(6, E), nn.Linear(6, E)
        self.layer = nn.TransformerDecoderLayer(E, HEADS, FFN, dropout=0.0, batch_first=True)
        self.out = nn.Linear(E, 3)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Logits per target position."""
        return self.out(self.layer(self.inp(tgt), self.mem(memory)))


def test_encoder_layers_are_traced_through_and_only_input_and_output_stay_static() -> None:
    torch.manual_seed(0)
    model, x = Encoder().eval(), torch.randn(2, 5, 6)
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    space = nv.search_space(model)
    assert set(space.hparams) == {
        "inp.out_features",
        "layers.0.linear1.out_features",
        "layers.1.linear1.out_features",
    }
    assert set(space.static["module"]) == {"inp", "out"}
    assert space.hparams["inp.out_features"].choices == (8, 16, 24, 32)  # whole heads of 8
    nv.select(model, {"inp.out_features": 16, "layers.1.linear1.out_features": 32})
    with torch.no_grad():
        y = model(x)
    small = nv.export(model)
    assert small.layers[0].self_attn.num_heads == 2 and small.layers[1].linear1.out_features == 32
    with torch.no_grad():
        torch.testing.assert_close(small(x), y, atol=1e-5, rtol=0)


def test_a_subnet_never_takes_the_fused_fast_path_with_full_weights() -> None:
    torch.manual_seed(0)
    model, x = Encoder().eval(), torch.randn(2, 5, 6)
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    nv.select(model, {"layers.0.linear1.out_features": 32})  # attention at full size
    assert torch.backends.mha.get_fastpath_enabled()
    with torch.no_grad():  # eval + no_grad: where torch takes its fused fast path
        y = model(x)
    assert torch.backends.mha.get_fastpath_enabled()  # put back after the forward
    with torch.no_grad():
        torch.testing.assert_close(nv.export(model)(x), y, atol=1e-5, rtol=0)


def test_decoder_layers_prune_self_and_cross_attention_with_the_stream() -> None:
    torch.manual_seed(0)
    model = Decoder().eval()
    x = (torch.randn(2, 4, 6), torch.randn(2, 7, 6))
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    space = nv.search_space(model)
    assert "layer.linear1.out_features" in space.hparams
    assert set(space.static["module"]) == {"inp", "mem", "out"}
    full = nv.profile(model, x).flops
    nv.select(
        model,
        {
            n: min(hp.choices, key=lambda c: abs(c - hp.original / 2))
            for n, hp in space.hparams.items()
        },
    )
    assert nv.profile(model, x).flops < 0.6 * full
    with torch.no_grad():
        y = model(*x)
        torch.testing.assert_close(nv.export(model)(*x), y, atol=1e-5, rtol=0)


def test_profile_counts_the_fused_attention_path() -> None:
    layer = nn.TransformerEncoderLayer(E, HEADS, FFN, dropout=0.0, batch_first=True).eval()
    x = torch.randn(2, 5, E)
    fused = nv.profile(layer, x).flops  # eval + no_grad inside: torch would fuse it
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        unfused = nv.profile(layer, x).flops
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    assert fused == unfused > 2 * 5 * 2 * E * FFN * 2  # at least the two FFN matmuls
