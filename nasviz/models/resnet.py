"""ResNet: residual stages of ``BasicBlock`` or ``Bottleneck`` blocks.

The layout and module names follow torchvision (``conv1``/``bn1``/``relu`` stem, stages
``layer1``…``layerN``, blocks ``conv1``/``bn1``/…, shortcut ``downsample`` = 1x1 conv + BN, head
``avgpool`` -> flatten -> ``fc``), so hparam names such as ``layer1.0.conv1.out_channels`` read as
they do for a torchvision model. Residual adds couple the channels of every block output in a
stage with the stage input (or its downsample shortcut).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn
from typing_extensions import override

from nasviz.errors import NasvizError

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNeXtBottleneck",
    "ResNet",
    "resnet50_like",
    "resnet_tiny",
]


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """A 1x1 conv + BN projection when the residual's shape changes, else ``None`` (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN with an identity (or 1x1 conv + BN) shortcut; output ``width`` channels.

    Example:
        >>> block = BasicBlock(16, 32, stride=2)
        >>> block(torch.zeros(2, 16, 8, 8)).shape
        torch.Size([2, 32, 4, 4])
    """

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(width, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    @override
    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return cast(Tensor, self.relu(out + identity))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), each with BN; output ``4 * width`` channels.

    Example:
        >>> block = Bottleneck(64, 16)
        >>> block(torch.zeros(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    expansion = 4
    #: groups of the 3x3 conv (1: ResNet; > 1: ResNeXt, see :class:`ResNeXtBottleneck`)
    cardinality = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(
            width, width, 3, stride=stride, padding=1, groups=self.cardinality, bias=False
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(in_channels, out_channels, stride)

    @override
    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return cast(Tensor, self.relu(out + identity))


class ResNeXtBottleneck(Bottleneck):
    """A ResNeXt block: the bottleneck's 3x3 conv is grouped (4 groups), expansion 2.

    Example:
        >>> block = ResNeXtBottleneck(32, 16)
        >>> block.conv2.groups, block(torch.zeros(2, 32, 8, 8)).shape
        (4, torch.Size([2, 32, 8, 8]))
    """

    expansion = 2
    cardinality = 4


class ResNet(nn.Module):
    """A ResNet: stem conv + BN + ReLU (optional max-pool), residual stages, pool -> flatten -> fc.

    ``layers[i]`` blocks of type ``block`` at width ``widths[i]``; every stage after the first
    starts with stride 2. ``stem_kernel=3, stem_stride=1, stem_pool=False`` (the default) suits
    32x32 inputs; ``7, 2, True`` is the ImageNet stem.

    Example:
        >>> model = ResNet(BasicBlock, layers=[1, 1], widths=[8, 16], num_classes=5)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        stem_channels: int | None = None,
        stem_kernel: int = 3,
        stem_stride: int = 1,
        stem_pool: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths) or not layers:
            msg = (
                f"ResNet: layers={list(layers)} and widths={list(widths)} must be non-empty and "
                "of equal length (one block count and one width per stage)"
            )
            raise NasvizError(msg)
        stem_out = widths[0] if stem_channels is None else stem_channels
        self.conv1 = nn.Conv2d(
            in_channels,
            stem_out,
            stem_kernel,
            stride=stem_stride,
            padding=stem_kernel // 2,
            bias=False,
        )
        self.bn1 = nn.BatchNorm2d(stem_out)
        self.relu = nn.ReLU()
        self.maxpool: nn.Module = (
            nn.MaxPool2d(3, stride=2, padding=1) if stem_pool else nn.Identity()
        )
        channels = stem_out
        self.num_stages = len(layers)
        for i, (num_blocks, width) in enumerate(zip(layers, widths)):
            blocks: list[nn.Module] = []
            for j in range(num_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(channels, width, stride))
                channels = width * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = torch.flatten(self.avgpool(x), 1)
        return cast(Tensor, self.fc(x))


def resnet_tiny(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    layers: Sequence[int] = (1, 1, 1),
    widths: Sequence[int] = (16, 32, 64),
) -> ResNet:
    """A ResNet of basic blocks ``[1, 1, 1]`` at widths 16/32/64 for 32x32 inputs (~0.08M params).

    Example:
        >>> resnet_tiny()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return ResNet(BasicBlock, layers, widths, num_classes=num_classes, in_channels=in_channels)


def resnet50_like(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """A ResNet-50-sized net: Bottleneck ``[3, 4, 6, 3]``, widths 64..512 (out 256..2048), ~25.6M
    params, the ImageNet stem, for 224x224 inputs. Meant for benchmarks (convert time, FLOPs).
    """
    return ResNet(
        Bottleneck,
        (3, 4, 6, 3),
        (64, 128, 256, 512),
        num_classes=num_classes,
        in_channels=in_channels,
        stem_channels=64,
        stem_kernel=7,
        stem_stride=2,
        stem_pool=True,
    )
