"""MobileNetV2-like: inverted residual blocks and one squeeze-excitation block.

An inverted residual expands with a 1x1 conv, filters each channel with a depthwise 3x3 conv and
projects back with a 1x1 conv; it adds its input when shapes match. The depthwise conv ties its
input and output channels to the expand conv, and the residual add ties the projections of a
stage together. The squeeze-excitation block multiplies the features by a per-channel gate
computed from their global average (pool -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn
from typing_extensions import override

from nasviz.errors import NasvizError
from nasviz.models._layers import conv_bn_act

__all__ = ["InvertedResidual", "MobileNetV2Like", "SqueezeExcitation"]


class SqueezeExcitation(nn.Module):
    """Channel gate: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` with 1x1 convs as the fcs.

    Example:
        >>> se = SqueezeExcitation(32, 8)
        >>> se(torch.ones(2, 32, 4, 4)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    @override
    def forward(self, x: Tensor) -> Tensor:
        scale = self.gate(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return cast(Tensor, x * scale)


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise 3x3 -> (optional SE) -> 1x1 project; residual when shapes match.

    Example:
        >>> block = InvertedResidual(16, 16, stride=1, expand_ratio=4)
        >>> block.use_residual, block(torch.zeros(2, 16, 8, 8)).shape
        (True, torch.Size([2, 16, 8, 8]))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        expand_ratio: int,
        use_se: bool = False,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_act(in_channels, hidden, 1, act=nn.ReLU6))
        layers.append(conv_bn_act(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.ReLU6))
        if use_se:
            layers.append(SqueezeExcitation(hidden, max(hidden // 4, 8)))
        layers.append(conv_bn_act(hidden, out_channels, 1, act=None))
        self.conv = nn.Sequential(*layers)

    @override
    def forward(self, x: Tensor) -> Tensor:
        if self.use_residual:
            return cast(Tensor, x + self.conv(x))
        return cast(Tensor, self.conv(x))


# (expand_ratio, out_channels, num_blocks, stride) per stage, sized for 32x32 inputs.
_DEFAULT_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (4, 24, 2, 2),
    (4, 32, 2, 2),
    (4, 64, 2, 2),
)


class MobileNetV2Like(nn.Module):
    """Stem conv -> inverted residual stages -> 1x1 conv -> pool -> flatten -> Linear.

    ``stages`` lists ``(expand_ratio, out_channels, num_blocks, stride)``; ``width_mult`` scales
    every width. The first block of stage ``se_stage`` carries the squeeze-excitation block.

    Example:
        >>> model = MobileNetV2Like(num_classes=5)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        width_mult: float = 1.0,
        stem_channels: int = 16,
        last_channels: int = 128,
        stages: Sequence[tuple[int, int, int, int]] = _DEFAULT_STAGES,
        se_stage: int = 2,
    ) -> None:
        super().__init__()
        if not 0 <= se_stage < len(stages):
            msg = (
                f"MobileNetV2Like: se_stage={se_stage} is not a stage index; "
                f"use 0..{len(stages) - 1}"
            )
            raise NasvizError(msg)

        def scaled(c: int) -> int:
            return max(8, round(c * width_mult))

        channels = scaled(stem_channels)
        self.stem = conv_bn_act(in_channels, channels, 3, act=nn.ReLU6)
        blocks: list[nn.Module] = []
        for i, (expand, out, num_blocks, stride) in enumerate(stages):
            for j in range(num_blocks):
                blocks.append(
                    InvertedResidual(
                        channels,
                        scaled(out),
                        stride=stride if j == 0 else 1,
                        expand_ratio=expand,
                        use_se=(i == se_stage and j == 0),
                    )
                )
                channels = scaled(out)
        self.features = nn.Sequential(*blocks)
        self.head_conv = conv_bn_act(channels, scaled(last_channels), 1, act=nn.ReLU6)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(scaled(last_channels), num_classes)

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = self.head_conv(self.features(self.stem(x)))
        return cast(Tensor, self.classifier(torch.flatten(self.avgpool(x), 1)))
