"""ViT on ``nn.MultiheadAttention``, written as torchvision's ``vit_b_16`` is.

``conv_proj`` (patch embedding) -> flatten + permute to ``(B, N, D)`` -> a learned
``class_token`` is concatenated in front -> ``pos_embedding`` is added -> ``EncoderBlock`` s
(``ln_1`` -> ``self_attention = nn.MultiheadAttention(D, heads, batch_first=True)`` -> add;
``ln_2`` -> ``mlp`` (Linear, GELU, Linear) -> add) -> ``ln`` -> the class token's features ->
``heads`` (Linear). The stream (``D``), the heads of every attention and every MLP width are
prunable; the class token and the position embedding follow the stream.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from typing_extensions import override

__all__ = ["EncoderBlock", "ViTMHA"]


class EncoderBlock(nn.Module):
    """torchvision's ``EncoderBlock``: pre-norm attention and MLP with residual adds.

    Example:
        >>> EncoderBlock(16, 4, 32)(torch.zeros(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    @override
    def forward(self, x: Tensor) -> Tensor:
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return cast(Tensor, x + self.mlp(self.ln_2(x)))


class ViTMHA(nn.Module):
    """A small torchvision-style ViT (see the module docstring).

    Example:
        >>> ViTMHA()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        patch_size: int = 8,
        dim: int = 32,
        depth: int = 2,
        num_heads: int = 4,
        mlp_dim: int = 64,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.conv_proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        n = (image_size // patch_size) ** 2
        self.class_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embedding = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.layers = nn.Sequential(*[EncoderBlock(dim, num_heads, mlp_dim) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.heads = nn.Linear(dim, num_classes)

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_proj(x)
        x = x.flatten(2).permute(0, 2, 1)  # (B, N, D)
        token = self.class_token.expand(x.shape[0], -1, -1)
        x = torch.cat([token, x], dim=1) + self.pos_embedding
        x = self.ln(self.layers(x))
        return cast(Tensor, self.heads(x[:, 0]))
