"""VGG-like: a plain conv/BN/ReLU/max-pool stack, then flatten -> Linear -> ReLU -> Linear.

The flatten keeps a spatial size above 1 (by default 64 channels x 2 x 2 = 256 features), so
pruning an output channel of the last conv removes ``h * w`` consecutive input features of the
first Linear: the flatten -> linear coupling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn
from typing_extensions import override

from nasviz.errors import NasvizError
from nasviz.models._layers import conv_bn_act

__all__ = ["VGGLike"]


class VGGLike(nn.Module):
    """Stages of 3x3 conv + BN + ReLU, each closed by a 2x2 max-pool, then a two-layer MLP head.

    ``stages[i]`` lists the conv widths of stage ``i``; ``input_size`` (square inputs) fixes the
    flattened feature count ``widths[-1] * (input_size // 2**len(stages))**2``.

    Example:
        >>> model = VGGLike(num_classes=5)
        >>> model.classifier[0].in_features, model(torch.zeros(2, 3, 32, 32)).shape
        (256, torch.Size([2, 5]))
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        stages: Sequence[Sequence[int]] = ((16,), (32,), (64, 64), (64,)),
        hidden: int = 128,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        spatial = input_size // 2 ** len(stages)
        if spatial < 1 or not all(stages):
            msg = (
                f"VGGLike: input_size={input_size} with {len(stages)} pooled stages leaves no "
                "pixels (or a stage is empty); use fewer stages or a larger input_size"
            )
            raise NasvizError(msg)
        layers: list[nn.Module] = []
        channels = in_channels
        for stage in stages:
            for width in stage:
                layers.extend(conv_bn_act(channels, width, 3))
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(channels * spatial * spatial, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.features(x), 1)
        return cast(Tensor, self.classifier(x))
