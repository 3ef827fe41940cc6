"""ConvNeXt written as torchvision's: a ``(C, 1, 1)`` layer scale and ``LayerNorm2d``.

``CNBlock``: ``block`` = depthwise 7x7 conv -> ``Permute`` to channels-last -> ``nn.LayerNorm``
-> Linear(4C) -> GELU -> Linear(C) -> ``Permute`` back; the result is
``layer_scale * block(x) + x`` with ``layer_scale`` of shape ``(C, 1, 1)``. ``LayerNorm2d`` is
torchvision's: an ``nn.LayerNorm`` *subclass* whose own ``forward`` permutes NCHW to NHWC, calls
``F.layer_norm`` and permutes back. Stem: 4x4 stride-4 conv + ``LayerNorm2d``; between stages
``LayerNorm2d`` + 2x2 stride-2 conv; head: adaptive pool, ``LayerNorm2d``, flatten, Linear.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

__all__ = ["CNBlock", "ConvNeXtTV", "LayerNorm2dTV", "Permute"]


class Permute(nn.Module):
    """``torch.permute`` as a module (torchvision's ``Permute``)."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    @override
    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


class LayerNorm2dTV(nn.LayerNorm):
    """torchvision's ``LayerNorm2d``: an ``nn.LayerNorm`` over the channels of NCHW input.

    Example:
        >>> LayerNorm2dTV(8)(torch.randn(2, 8, 4, 4)).mean(dim=1).abs().max() < 1e-5
        tensor(True)
    """

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    """torchvision's ``CNBlock`` (no stochastic depth).

    Example:
        >>> CNBlock(8)(torch.zeros(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, dim: int, layer_scale: float = 0.5) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)

    @override
    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.layer_scale * self.block(x) + x)


class ConvNeXtTV(nn.Module):
    """A small torchvision-style ConvNeXt (see the module docstring).

    Example:
        >>> ConvNeXtTV()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (16, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(3, widths[0], 4, stride=4), LayerNorm2dTV(widths[0], eps=1e-6))
        ]
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(CNBlock(w), CNBlock(w)))
            if i + 1 < len(widths):
                layers.append(
                    nn.Sequential(
                        LayerNorm2dTV(w, eps=1e-6), nn.Conv2d(w, widths[i + 1], 2, stride=2)
                    )
                )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            LayerNorm2dTV(widths[-1], eps=1e-6), nn.Flatten(1), nn.Linear(widths[-1], num_classes)
        )

    @override
    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.classifier(self.avgpool(self.features(x))))
