"""nn.TransformerEncoderLayer never runs its fused kernel on a dynamic child's full weights.

A ViT on torch's own ``nn.TransformerEncoderLayer`` is traced through (its layers prune): in eval
mode without grad, with only the FFN pruned (the attention at full size, so it does not block
the fast path itself), the converted model computes what its export computes, and the export
takes the fast path again.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import nasviz as nv
from nasviz.dynamic import DynamicLinear
from nasviz.dynamic.fastpath import block_fastpaths, restore_fastpaths
from nasviz.fastnas import FastNASConfig


class TorchViT(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.Sequential(
            *(
                nn.TransformerEncoderLayer(dim, heads, 2 * dim, 0.0, batch_first=True)
                for _ in range(depth)
            )
        )
        self.head = nn.Linear(dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.blocks(x).mean(1))


X = torch.randn(2, 3, 16, 16)
_CACHE: dict[bool, nn.Module] = {}


def _converted(with_input: bool) -> nn.Module:
    if with_input not in _CACHE:
        torch.manual_seed(0)
        model = TorchViT().eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nv.convert(
                model,
                mode=[("fastnas", FastNASConfig.with_divisor(4))],
                dummy_input=X if with_input else None,
            )
        _CACHE[with_input] = model
    return _CACHE[with_input]


def test_the_encoder_layers_are_traced_through() -> None:
    hps = nv.search_space(_converted(True)).hparams
    assert set(hps) == {
        "patch.out_channels",
        "blocks.0.linear1.out_features",
        "blocks.1.linear1.out_features",
    }
    assert set(nv.search_space(_converted(False)).hparams) == {
        "blocks.0.linear1.out_features",
        "blocks.1.linear1.out_features",
    }


@pytest.mark.parametrize("with_input", [True, False], ids=["dummy_input", "no_input"])
@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_pruned_ffn_under_no_grad_equals_the_export(
    with_input: bool, data: st.DataObject
) -> None:
    model = _converted(with_input)
    hps = nv.search_space(model).hparams
    sel = {n: data.draw(st.sampled_from(list(hp.choices)), label=n) for n, hp in hps.items()}
    sel.update({n: hps[n].original for n in hps if n.startswith("patch")})  # attention full size
    nv.select(model, sel)
    with torch.no_grad():  # eval + no grad: where torch takes its fused fast path
        y = model(X)
        small = nv.export(model)
        torch.testing.assert_close(small(X), y)
    assert all(block.activation_relu_or_gelu == 1 for block in small.blocks)  # relu: fast again


def test_block_and_restore_touch_only_layers_holding_dynamic_modules() -> None:
    model = TorchViT()
    block_fastpaths(model)  # nothing dynamic: nothing changes
    assert [b.activation_relu_or_gelu for b in model.blocks] == [1, 1]
    layer = model.blocks[1]
    assert isinstance(layer, nn.TransformerEncoderLayer)
    DynamicLinear.convert(layer.linear1)
    block_fastpaths(model)
    assert [b.activation_relu_or_gelu for b in model.blocks] == [1, 0]
    restore_fastpaths(model)
    assert [b.activation_relu_or_gelu for b in model.blocks] == [1, 1]
    assert "_nv_fastpath" not in vars(model.blocks[1])
