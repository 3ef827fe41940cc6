"""DenseNet-like: dense blocks that concatenate features along channels, and transitions.

Each dense layer (BN -> ReLU -> 1x1 conv -> BN -> ReLU -> 3x3 conv) adds ``growth_rate`` new
channels and returns ``torch.cat([x, new], dim=1)``, so a layer's input is the concatenation of the
block input and every earlier layer's output. A transition (BN -> ReLU -> 1x1 conv -> 2x2 avg-pool)
compresses the channels between blocks. Concatenation is what makes this family interesting for
pruning: an output channel of one conv becomes an input channel of every later layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn
from typing_extensions import override

__all__ = ["DenseLayer", "DenseNetLike", "Transition"]


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bottleneck) -> BN-ReLU-3x3 conv; returns the input with the new channels.

    Example:
        >>> DenseLayer(16, growth_rate=8, bn_size=4)(torch.zeros(2, 16, 4, 4)).shape
        torch.Size([2, 24, 4, 4])
    """

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        inner = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(inner)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False)

    @override
    def forward(self, x: Tensor) -> Tensor:
        new = self.conv1(self.relu1(self.norm1(x)))
        new = self.conv2(self.relu2(self.norm2(new)))
        return torch.cat([x, new], dim=1)


class Transition(nn.Module):
    """BN -> ReLU -> 1x1 conv -> 2x2 average pool: fewer channels, half the resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    @override
    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.pool(self.conv(self.relu(self.norm(x)))))


class DenseNetLike(nn.Module):
    """Stem conv -> dense blocks with transitions between them -> BN-ReLU -> pool -> Linear.

    ``block_config[i]`` dense layers in block ``i``; transitions multiply the channel count by
    ``compression``.

    Example:
        >>> model = DenseNetLike(num_classes=5)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        growth_rate: int = 8,
        block_config: Sequence[int] = (2, 2, 2),
        init_channels: int = 16,
        bn_size: int = 4,
        compression: float = 0.5,
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, init_channels, 3, padding=1, bias=False)
        features: list[nn.Module] = []
        channels = init_channels
        for i, num_layers in enumerate(block_config):
            block: list[nn.Module] = []
            for _ in range(num_layers):
                block.append(DenseLayer(channels, growth_rate, bn_size))
                channels += growth_rate
            features.append(nn.Sequential(*block))
            if i != len(block_config) - 1:
                out = max(1, int(channels * compression))
                features.append(Transition(channels, out))
                channels = out
        self.features = nn.Sequential(*features)
        self.norm = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.norm(self.features(self.stem(x))))
        return cast(Tensor, self.classifier(torch.flatten(self.avgpool(x), 1)))
