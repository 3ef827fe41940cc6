"""Swin-style shifted windows, written as torchvision's ``swin_t`` is.

Patch embedding (4x4 stride-4 conv, permute to channels-last ``(B, H, W, C)``, LayerNorm), then
``SwinBlock`` s: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``. The attention
(:func:`shifted_window_attention`) shifts the map with ``torch.roll`` (every second block),
partitions it into windows with ``view``/``permute``/``reshape``, runs multi-head attention in
each window (``qkv`` Linear reshaped to ``(.., 3, heads, C // heads)``, plus a learned relative
position bias per head), reverses the partition and rolls back. Head: LayerNorm, mean over
the map, Linear. No attention mask for the shifted windows (the regions that wrap around are
attended across; the pattern of ops is what matters here).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from typing_extensions import override

__all__ = ["ShiftedWindowAttention", "SwinBlock", "SwinLike", "shifted_window_attention"]


def shifted_window_attention(
    x: Tensor,
    qkv: nn.Linear,
    proj: nn.Linear,
    bias: Tensor,
    num_heads: int,
    window: int,
    shift: int,
) -> Tensor:
    """Window attention over a channels-last ``(B, H, W, C)`` map (torchvision's pattern)."""
    b, h, w, c = x.shape
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    x = x.view(b, h // window, window, w // window, window, c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b * (h // window) * (w // window), window * window, c)
    t = qkv(x)
    n = x.size(1)
    t = t.reshape(x.size(0), n, 3, num_heads, t.size(-1) // (3 * num_heads)).permute(2, 0, 3, 1, 4)
    q, k, v = t[0], t[1], t[2]
    q = q * (q.size(-1) ** -0.5)
    attn = (q @ k.transpose(-2, -1)) + bias
    x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(x.size(0), n, -1)
    x = proj(x)
    x = x.view(b, h // window, w // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)
    if shift:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    return x


class ShiftedWindowAttention(nn.Module):
    """Window attention with a learned per-head bias of shape ``(heads, N, N)``."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int) -> None:
        super().__init__()
        self.num_heads, self.window, self.shift = num_heads, window, shift
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        n = window * window
        self.relative_position_bias = nn.Parameter(torch.randn(num_heads, n, n) * 0.02)

    @override
    def forward(self, x: Tensor) -> Tensor:
        return shifted_window_attention(
            x, self.qkv, self.proj, self.relative_position_bias,
            self.num_heads, self.window, self.shift,
        )  # fmt: skip


class SwinBlock(nn.Module):
    """Pre-norm Swin block on a channels-last map.

    Example:
        >>> SwinBlock(16, 2, 2, 1)(torch.zeros(2, 4, 4, 16)).shape
        torch.Size([2, 4, 4, 16])
    """

    def __init__(self, dim: int, num_heads: int, window: int, shift: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftedWindowAttention(dim, num_heads, window, shift)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return cast(Tensor, x + self.mlp(self.norm2(x)))


class SwinLike(nn.Module):
    """A small Swin-style net (see the module docstring).

    Example:
        >>> SwinLike()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, num_classes: int = 10, dim: int = 32, num_heads: int = 4, window: int = 4
    ) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.patch_norm = nn.LayerNorm(dim)
        self.blocks = nn.Sequential(
            SwinBlock(dim, num_heads, window, 0), SwinBlock(dim, num_heads, window, window // 2)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_norm(self.patch(x).permute(0, 2, 3, 1))
        x = self.norm(self.blocks(x))
        return cast(Tensor, self.head(x.mean(dim=(1, 2))))
