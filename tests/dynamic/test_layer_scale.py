"""Layer scales of any broadcastable shape are channel parameters of the stream they scale.

ConvNeXt scales its block output by a learned ``gamma``: torchvision keeps it as ``(C, 1, 1)``
on an ``(N, C, H, W)`` tensor, the original ConvNeXt as ``(C,)`` on a channels-last tensor, and
ViT-style code as ``(1, 1, C)``. Whatever the shape, tracing must find the one dimension of size
``C`` that lines up with the channels, slice it there, sort it with the channels, and export it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.config import LAYER_TYPES
from nasviz.dynamic.params import sliced_params

C = 16
SMALL: dict[str, Any] = {k: {"*": {LAYER_TYPES[k].divisor_field: 4}} for k in LAYER_TYPES}


class Block(nn.Module):
    """A ConvNeXt block: depthwise conv, channels-last LayerNorm + MLP, layer scale, residual."""

    def __init__(self, shape: tuple[int, ...], channels_last_scale: bool) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(C, C, 7, padding=3, groups=C)
        self.norm = nn.LayerNorm(C)
        self.fc1 = nn.Linear(C, 2 * C)
        self.fc2 = nn.Linear(2 * C, C)
        self.gamma = nn.Parameter(torch.rand(shape) + 0.5)
        self.channels_last_scale = channels_last_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(y))))
        if self.channels_last_scale:
            y = self.gamma * y
        y = y.permute(0, 3, 1, 2)
        if not self.channels_last_scale:
            y = self.gamma * y
        return x + y


def convnext(shape: tuple[int, ...], channels_last_scale: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, C, 3, padding=1),
        Block(shape, channels_last_scale),
        Block(shape, channels_last_scale),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(C, 4),
    ).eval()


SHAPES = [
    ((C, 1, 1), False, 0),  # torchvision ConvNeXt
    ((1, C, 1, 1), False, 1),
    ((C,), True, 0),  # the original ConvNeXt (channels last)
    ((1, 1, C), True, 2),
]


@pytest.mark.parametrize(("shape", "channels_last", "dim"), SHAPES)
def test_layer_scale_follows_the_stream(
    shape: tuple[int, ...], channels_last: bool, dim: int
) -> None:
    model = convnext(shape, channels_last)
    x = torch.randn(2, 3, 8, 8)
    ref = model(x)
    model = nv.convert(model, mode=[("fastnas", nv.FastNASConfig(**SMALL))], dummy_input=x)
    torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5)  # the channel sort kept f
    space = nv.search_space(model)
    assert "0.out_channels" in space.hparams  # the residual stream is prunable
    for block in (model[1], model[2]):
        (entry,) = sliced_params(block).items()
        assert entry[0] == "gamma" and entry[1][0] == dim
        assert entry[1][1] is space.hparams["0.out_channels"]
    nv.select(model, {"0.out_channels": 8})
    assert model[1].gamma.shape[dim] == 8
    y = model(x)
    small = nv.export(model)
    assert small[1].gamma.shape == tuple(8 if d == dim else n for d, n in enumerate(shape))
    assert type(small[1]) is Block
    torch.testing.assert_close(small(x), y)


@settings(max_examples=10, deadline=None)
@given(width=st.sampled_from([4, 8, 12]), hidden=st.sampled_from([8, 16, 24, 32]))
def test_random_subnets_export_with_the_same_outputs(width: int, hidden: int) -> None:
    model = convnext((C, 1, 1), False)
    x = torch.randn(2, 3, 8, 8)
    model = nv.convert(model, mode=[("fastnas", nv.FastNASConfig(**SMALL))], dummy_input=x)
    nv.select(model, {"0.out_channels": width, "1.fc1.out_features": hidden})
    y = model(x)
    small = nv.export(model)
    assert small[1].gamma.shape == (width, 1, 1)
    torch.testing.assert_close(small(x), y)
