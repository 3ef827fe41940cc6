"""ConvNeXt-like: depthwise 7x7 conv, channels-last LayerNorm + MLP, layer scale, residual.

A block runs a depthwise 7x7 conv, permutes to channels-last ``(B, H, W, C)``, normalises with
``nn.LayerNorm(C)``, applies ``Linear(C, 4C) -> GELU -> Linear(4C, C)``, multiplies by a learnable
per-channel layer scale ``gamma``, permutes back and adds the block input. Between stages a
``LayerNorm2d`` (LayerNorm over the channels of an NCHW tensor) and a 2x2 stride-2 conv halve the
resolution. The MLP hidden width (``pwconv1.out_features``) is the natural pruning target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn
from typing_extensions import override

from nasviz.errors import NasvizError

__all__ = ["ConvNeXtBlock", "ConvNeXtLike", "LayerNorm2d"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (permute -> ``nn.LayerNorm`` -> permute).

    Example:
        >>> LayerNorm2d(8)(torch.randn(2, 8, 4, 4)).mean(dim=1).abs().max() < 1e-5
        tensor(True)
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """dwconv 7x7 -> channels-last LayerNorm -> Linear(4x) -> GELU -> Linear -> gamma -> add.

    ``layer_scale_init`` defaults to 0.5 (ConvNeXt uses 1e-6) so that the blocks of an untrained
    model change its output visibly, which keeps pruning tests on untrained models meaningful.

    Example:
        >>> ConvNeXtBlock(16)(torch.zeros(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    def __init__(self, dim: int, mlp_ratio: int = 4, layer_scale_init: float = 0.5) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))

    @override
    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.dwconv(x)
        x = x.permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return shortcut + x


class ConvNeXtLike(nn.Module):
    """Patchify stem (2x2 conv + LayerNorm2d) -> stages of ConvNeXt blocks -> pool -> LN -> Linear.

    Stage ``i`` has ``depths[i]`` blocks at ``dims[i]`` channels; each later stage starts with a
    LayerNorm2d + 2x2 stride-2 conv downsample.

    Example:
        >>> model = ConvNeXtLike(num_classes=5)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        dims: Sequence[int] = (24, 48, 96),
        depths: Sequence[int] = (1, 1, 2),
        stem_stride: int = 2,
        mlp_ratio: int = 4,
        layer_scale_init: float = 0.5,
    ) -> None:
        super().__init__()
        if len(dims) != len(depths) or not dims:
            msg = (
                f"ConvNeXtLike: dims={list(dims)} and depths={list(depths)} must be non-empty "
                "and of equal length"
            )
            raise NasvizError(msg)
        self.downsample_layers = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(in_channels, dims[0], stem_stride, stride=stem_stride),
                    LayerNorm2d(dims[0]),
                )
            ]
        )
        for i in range(1, len(dims)):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], 2, 2))
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dim, mlp_ratio, layer_scale_init) for _ in range(depth)))
            for dim, depth in zip(dims, depths)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    @override
    def forward(self, x: Tensor) -> Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        x = self.norm(x.mean(dim=(-2, -1)))
        return cast(Tensor, self.head(x))
