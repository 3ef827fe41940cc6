"""DigitsCNN: a small CNN for the 1x8x8 scikit-learn digits images (10 classes).

Stem conv + BN + ReLU, one residual block (two 3x3 conv + BN with an identity add), one inverted
residual block (1x1 expand, depthwise 3x3, 1x1 project, identity add), then global average pool ->
flatten -> Linear. Trained with ``nasviz.datasets.train_classifier`` it reaches >= 95% validation
accuracy in a few seconds on two CPU cores, and almost all of its FLOPs sit in prunable convs, so
it is the model the demo and the notebooks prune for real.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from typing_extensions import override

from nasviz.models._layers import conv_bn_act

__all__ = ["DigitsCNN"]


class DigitsCNN(nn.Module):
    """Stem -> residual block -> inverted residual block -> pool -> Linear, for 1x8x8 inputs.

    Example:
        >>> DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        *,
        width: int = 32,
        expand_ratio: int = 2,
    ) -> None:
        super().__init__()
        hidden = width * expand_ratio
        self.stem = conv_bn_act(in_channels, width, 3)
        self.res_conv1 = conv_bn_act(width, width, 3)
        self.res_conv2 = conv_bn_act(width, width, 3, act=None)
        self.relu = nn.ReLU()
        self.ir_expand = conv_bn_act(width, hidden, 1)
        self.ir_depthwise = conv_bn_act(hidden, hidden, 3, groups=hidden)
        self.ir_project = conv_bn_act(hidden, width, 1, act=None)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.relu(x + self.res_conv2(self.res_conv1(x)))
        x = x + self.ir_project(self.ir_depthwise(self.ir_expand(x)))
        return cast(Tensor, self.fc(torch.flatten(self.avgpool(x), 1)))
