"""ShuffleNetV2-like: channel split, one conv branch, concat, channel shuffle.

A basic unit splits its input in two halves with ``x.chunk(2, dim=1)``, passes one half through a
1x1 -> depthwise 3x3 -> 1x1 branch, concatenates it with the untouched half and shuffles the
channels (``view`` to ``(b, 2, c/2, h, w)``, ``transpose``, ``contiguous``, ``view`` back) so
information crosses between halves. A downsampling unit feeds the whole input to two branches
with stride 2. The split and the shuffle tie channels across units, which constrains pruning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn
from typing_extensions import override

from nasviz.errors import NasvizError
from nasviz.models._layers import conv_bn_act

__all__ = ["ShuffleNetLike", "ShuffleUnit", "channel_shuffle"]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` equal groups (view/transpose/contiguous/view)."""
    b, h, w = x.size(0), x.size(2), x.size(3)
    x = x.view(b, groups, -1, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


def _branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1 conv-BN-ReLU -> depthwise 3x3 conv-BN -> 1x1 conv-BN-ReLU."""
    return nn.Sequential(
        *conv_bn_act(in_channels, out_channels, 1),
        *conv_bn_act(out_channels, out_channels, 3, stride=stride, groups=out_channels, act=None),
        *conv_bn_act(out_channels, out_channels, 1),
    )


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit: ``stride=1`` splits the input, ``stride=2`` downsamples it whole.

    Example:
        >>> ShuffleUnit(32, 32, stride=1)(torch.zeros(2, 32, 8, 8)).shape
        torch.Size([2, 32, 8, 8])
        >>> ShuffleUnit(32, 64, stride=2)(torch.zeros(2, 32, 8, 8)).shape
        torch.Size([2, 64, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels % 2 or (stride == 1 and in_channels != out_channels):
            msg = (
                f"ShuffleUnit: out_channels={out_channels} must be even, and equal to "
                f"in_channels={in_channels} when stride=1"
            )
            raise NasvizError(msg)
        half = out_channels // 2
        self.stride = stride
        self.branch1: nn.Module
        if stride == 1:
            self.branch1 = nn.Identity()
            self.branch2 = _branch(half, half, 1)
        else:
            self.branch1 = nn.Sequential(
                *conv_bn_act(in_channels, in_channels, 3, stride=2, groups=in_channels, act=None),
                *conv_bn_act(in_channels, half, 1),
            )
            self.branch2 = _branch(in_channels, half, 2)

    @override
    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], dim=1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetLike(nn.Module):
    """Stem conv -> stages of ShuffleNetV2 units -> 1x1 conv -> pool -> flatten -> Linear.

    Stage ``i`` has ``repeats[i]`` units: one downsampling unit to ``widths[i]`` channels, then
    basic (split) units.

    Example:
        >>> model = ShuffleNetLike(num_classes=5)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        stem_channels: int = 24,
        widths: Sequence[int] = (48, 96, 192),
        repeats: Sequence[int] = (2, 2, 1),
        last_channels: int = 256,
    ) -> None:
        super().__init__()
        if len(widths) != len(repeats) or not all(r >= 1 for r in repeats):
            msg = (
                f"ShuffleNetLike: widths={list(widths)} and repeats={list(repeats)} need one "
                "entry per stage, each repeat >= 1"
            )
            raise NasvizError(msg)
        self.stem = conv_bn_act(in_channels, stem_channels, 3)
        units: list[nn.Module] = []
        channels = stem_channels
        for width, repeat in zip(widths, repeats):
            units.append(ShuffleUnit(channels, width, stride=2))
            units.extend(ShuffleUnit(width, width, stride=1) for _ in range(repeat - 1))
            channels = width
        self.stages = nn.Sequential(*units)
        self.head_conv = conv_bn_act(channels, last_channels, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last_channels, num_classes)

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = self.head_conv(self.stages(self.stem(x)))
        return cast(Tensor, self.fc(torch.flatten(self.avgpool(x), 1)))
