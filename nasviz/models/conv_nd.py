"""1-D and 3-D convolution nets: the same conv -> BN -> ReLU stack for sequences and volumes.

They exist so every layer type the config knows (``nn.Conv1d``, ``nn.BatchNorm1d``, ``nn.Conv3d``,
``nn.BatchNorm3d``) has a reference model: a stack of strided convs with batch norm, a global
average pool, flatten and a Linear head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn
from typing_extensions import override

from nasviz.errors import NasvizError

__all__ = ["Conv1dNet", "Conv3dNet"]


def _check_widths(name: str, widths: Sequence[int]) -> None:
    if not widths or min(widths) < 1:
        msg = f"{name}: widths={list(widths)} must be a non-empty list of positive channel counts"
        raise NasvizError(msg)


class Conv1dNet(nn.Module):
    """Conv1d/BatchNorm1d/ReLU stack (stride 2 after the first) -> pool -> flatten -> Linear.

    Input ``(B, in_channels, L)``.

    Example:
        >>> Conv1dNet()(torch.zeros(2, 3, 64)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        widths: Sequence[int] = (16, 32, 64),
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        _check_widths("Conv1dNet", widths)
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [
                nn.Conv1d(channels, width, kernel_size, stride, kernel_size // 2, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(channels, num_classes)

    @override
    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.fc(torch.flatten(self.pool(self.features(x)), 1)))


class Conv3dNet(nn.Module):
    """Conv3d/BatchNorm3d/ReLU stack (stride 2 after the first) -> pool -> flatten -> Linear.

    Input ``(B, in_channels, D, H, W)``.

    Example:
        >>> Conv3dNet()(torch.zeros(2, 1, 8, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        *,
        widths: Sequence[int] = (8, 16),
    ) -> None:
        super().__init__()
        _check_widths("Conv3dNet", widths)
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [
                nn.Conv3d(channels, width, 3, stride, 1, bias=False),
                nn.BatchNorm3d(width),
                nn.ReLU(),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(channels, num_classes)

    @override
    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.fc(torch.flatten(self.pool(self.features(x)), 1)))
