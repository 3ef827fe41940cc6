"""A model that ``torch.fx.symbolic_trace`` cannot trace at the top level — on purpose.

``DataDependentNet.forward`` branches on a tensor value (``if x.sum() > 0``), which symbolic
tracing cannot resolve, so tracing the whole model raises ``torch.fx.proxy.TraceError``. Its
children ``features`` (conv/BN/ReLU blocks) and ``head`` (pool -> flatten -> Linear) are ordinary
and traceable. It exercises the tracer's fallbacks (tracing children, hook-based recording).
Both branches run the same modules, so the layer graph does not depend on the branch taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from torch import Tensor, nn
from typing_extensions import override

from nasviz.models._layers import conv_bn_act

__all__ = ["DataDependentNet"]


class DataDependentNet(nn.Module):
    """``features`` (conv-BN-ReLU blocks) -> ``head``, with a data-dependent ``if`` in ``forward``.

    Example:
        >>> import torch, torch.fx
        >>> model = DataDependentNet()
        >>> model(torch.ones(2, 3, 16, 16)).shape
        torch.Size([2, 10])
        >>> _ = torch.fx.symbolic_trace(model.features)  # children trace; the model does not
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        widths: Sequence[int] = (16, 32),
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            blocks.append(conv_bn_act(channels, width, 3, stride=1 if i == 0 else 2))
            channels = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
        )

    @override
    def forward(self, x: Tensor) -> Tensor:
        # Deliberately data-dependent control flow: torch.fx cannot trace this line.
        x = self.features(x) if x.sum() > 0 else self.features(-x)
        return cast(Tensor, self.head(x))
