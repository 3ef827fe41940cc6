"""EfficientNet written as timm writes it: ``BatchNormAct2d``, SE, SiLU and drop-path.

``BatchNormAct2d`` is timm's: an ``nn.BatchNorm2d`` *subclass* whose own ``forward`` runs
``F.batch_norm`` on its statistics and weights (counting ``num_batches_tracked`` in training)
and then a dropout and an activation held as children - a norm whose channels nasviz must read
from what its forward does. ``DepthwiseSeparable`` (first stage) and ``InvertedResidual``
(MBConv: 1x1 expand -> depthwise -> squeeze-excite -> 1x1 project, a skip with drop-path when
the shape is kept) follow timm's ``_efficientnet_blocks``; ``SqueezeExcite`` reduces from the
block's input width; ``DropPath`` draws one keep-mask per sample in training, exactly as timm's
``drop_path`` (``(x.shape[0],) + (1,) * (x.ndim - 1)``). Head: 1x1 conv + ``BatchNormAct2d``,
adaptive pool, flatten, Linear.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BatchNormAct2d",
    "DepthwiseSeparable",
    "DropPath",
    "EfficientNetLike",
    "MBConv",
    "SqueezeExcite",
]


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's ``BatchNormAct2d``: batch norm, then dropout and activation, in one layer.

    Example:
        >>> BatchNormAct2d(8)(torch.zeros(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        *,
        act: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.drop: nn.Module = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.act: nn.Module = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Batch norm on its own statistics and weights, then dropout and activation."""
        torch._assert(x.ndim == 4, "expected 4D input")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_stats = not self.training or self.track_running_stats
        x = F.batch_norm(
            x,
            self.running_mean if use_stats else None,
            self.running_var if use_stats else None,
            self.weight,
            self.bias,
            bn_training,
            factor,
            self.eps,
        )
        return cast(Tensor, self.act(self.drop(x)))


class DropPath(nn.Module):
    """timm's ``DropPath``: drop whole samples of a residual branch in training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        """``x`` in eval mode; in training each sample kept with ``1 - drop_prob``, rescaled."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x.div(keep) * mask


class SqueezeExcite(nn.Module):
    """timm's ``SqueezeExcite``: mean -> 1x1 reduce -> SiLU -> 1x1 expand -> sigmoid gate."""

    def __init__(self, channels: int, rd_channels: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1)
        self.act1 = nn.SiLU(inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        """``x`` gated per channel by its squeezed-and-excited mean."""
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_expand(self.act1(self.conv_reduce(x_se)))
        return cast(Tensor, x * self.gate(x_se))


class DepthwiseSeparable(nn.Module):
    """timm's ``DepthwiseSeparableConv``: depthwise 3x3 -> BN-act -> SE -> 1x1 -> BN (+ skip)."""

    def __init__(self, in_chs: int, out_chs: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.has_skip = in_chs == out_chs
        self.conv_dw = nn.Conv2d(in_chs, in_chs, 3, padding=1, groups=in_chs, bias=False)
        self.bn1 = BatchNormAct2d(in_chs)
        self.se = SqueezeExcite(in_chs, max(1, in_chs // 4))
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn2 = BatchNormAct2d(out_chs, act=False)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Depthwise, BN-act, SE, pointwise, BN (+ drop-path skip)."""
        shortcut = x
        x = self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class MBConv(nn.Module):
    """timm's ``InvertedResidual`` (MBConv): 1x1 expand -> depthwise -> SE -> 1x1 project.

    Example:
        >>> MBConv(16, 16, stride=1, expand=4)(torch.zeros(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    def __init__(
        self, in_chs: int, out_chs: int, stride: int, expand: int, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        mid = in_chs * expand
        self.has_skip = in_chs == out_chs and stride == 1
        self.conv_pw = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = BatchNormAct2d(mid)
        self.se = SqueezeExcite(mid, max(1, in_chs // 4))
        self.conv_pwl = nn.Conv2d(mid, out_chs, 1, bias=False)
        self.bn3 = BatchNormAct2d(out_chs, act=False)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Expand, depthwise, SE, project (+ drop-path skip)."""
        shortcut = x
        x = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        x = self.bn3(self.conv_pwl(self.se(x)))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class EfficientNetLike(nn.Module):
    """A small timm-style EfficientNet (see the module docstring).

    Example:
        >>> EfficientNetLike()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, drop_path: float = 0.1) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn1 = BatchNormAct2d(16)
        self.blocks = nn.Sequential(
            DepthwiseSeparable(16, 16, drop_path),
            MBConv(16, 24, stride=2, expand=4),
            MBConv(24, 24, stride=1, expand=4, drop_path=drop_path),
            MBConv(24, 40, stride=2, expand=4),
            MBConv(40, 40, stride=1, expand=4, drop_path=drop_path),
        )
        self.conv_head = nn.Conv2d(40, 64, 1, bias=False)
        self.bn2 = BatchNormAct2d(64)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of a batch of images."""
        x = self.blocks(self.bn1(self.conv_stem(x)))
        x = self.global_pool(self.bn2(self.conv_head(x)))
        return cast(Tensor, self.classifier(x.flatten(1)))
