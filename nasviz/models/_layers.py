"""Small building blocks shared by the reference model families (private)."""

from __future__ import annotations

from torch import nn

__all__ = ["conv_bn_act"]


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """``Conv2d(bias=False) -> BatchNorm2d -> act`` with "same" padding (children ``0, 1, 2``)."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)
