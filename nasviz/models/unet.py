"""UNet-like: an encoder-decoder with skip connections, output at the input resolution.

The encoder applies double convs (conv -> norm -> ReLU, twice) and 2x2 max-pools; the decoder
upsamples with ``ConvTranspose2d(stride=2)``, concatenates the encoder feature map of the same
resolution (``torch.cat`` along channels) and applies another double conv; a 1x1 conv maps to
``out_channels``. Norm layers are GroupNorm (default) or BatchNorm. The skip concatenations couple
an encoder conv's output channels with a decoder conv's input channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import torch
from torch import Tensor, nn
from typing_extensions import override

from nasviz.errors import NasvizError

__all__ = ["DoubleConv", "UNetLike"]


def _norm(kind: Literal["group", "batch"], channels: int, groups: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(groups, channels)
    return nn.BatchNorm2d(channels)


class DoubleConv(nn.Module):
    """(3x3 conv -> norm -> ReLU) x 2.

    Example:
        >>> DoubleConv(3, 8)(torch.zeros(2, 3, 8, 8)).shape
        torch.Size([2, 8, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: Literal["group", "batch"] = "group",
        groups: int = 4,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = _norm(norm, out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _norm(norm, out_channels, groups)
        self.relu = nn.ReLU()

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.norm1(self.conv1(x)))
        return cast(Tensor, self.relu(self.norm2(self.conv2(x))))


class UNetLike(nn.Module):
    """Encoder (``widths`` per level) -> bottleneck -> decoder with concat skips -> 1x1 conv.

    Input height and width must be multiples of ``2 ** (len(widths) - 1)``.

    Example:
        >>> UNetLike(out_channels=2)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 2, 32, 32])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 2,
        *,
        widths: Sequence[int] = (16, 32, 64),
        norm: Literal["group", "batch"] = "group",
        groups: int = 4,
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            msg = f"UNetLike: widths={list(widths)} needs at least two levels"
            raise NasvizError(msg)
        if norm not in ("group", "batch"):
            msg = f"UNetLike: norm={norm!r} is not 'group' or 'batch'"
            raise NasvizError(msg)
        if norm == "group" and any(w % groups for w in widths):
            msg = (
                f"UNetLike: every width in {list(widths)} must be divisible by groups={groups} "
                "for GroupNorm; change widths or groups, or use norm='batch'"
            )
            raise NasvizError(msg)
        self.encoders = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoders.append(DoubleConv(channels, width, norm, groups))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.upsamples = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamples.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.decoders.append(DoubleConv(2 * width, width, norm, groups))
            channels = width
        self.out_conv = nn.Conv2d(channels, out_channels, 1)

    @override
    def forward(self, x: Tensor) -> Tensor:
        skips: list[Tensor] = []
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        skips.pop()
        for upsample, decoder in zip(self.upsamples, self.decoders):
            x = decoder(torch.cat([skips.pop(), upsample(x)], dim=1))
        return cast(Tensor, self.out_conv(x))
