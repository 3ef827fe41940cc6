"""ViT-like: patch embedding, class token, pre-norm transformer blocks, class-token head.

Attention is written out (no ``nn.MultiheadAttention``) so every prunable piece is an ordinary
layer: ``qkv = Linear(dim, 3 * dim)`` is reshaped with ``view(B, N, 3, heads, -1)`` and permuted
to ``(3, B, heads, N, head_dim)``; scores are ``softmax(q @ k^T * scale)``; the heads are merged
with ``permute`` + ``reshape(B, N, -1)`` and projected by ``proj = Linear(dim, dim)``. The ``-1``
sizes let a pruner shrink the per-head width without rewriting the forward. The MLP is
``fc1 -> GELU -> fc2``; ``fc1.out_features`` is its hidden width.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from typing_extensions import override

from nasviz.errors import NasvizError

__all__ = ["Attention", "Mlp", "TransformerBlock", "ViTLike"]


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2``.

    Example:
        >>> Mlp(16, 32)(torch.zeros(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    @override
    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.fc2(self.act(self.fc1(x))))


class Attention(nn.Module):
    """Multi-head self-attention with explicit ``qkv`` and ``proj`` Linears (no mask).

    Example:
        >>> Attention(16, num_heads=4)(torch.zeros(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            msg = (
                f"Attention: dim={dim} is not divisible by num_heads={num_heads}; "
                "choose num_heads dividing dim"
            )
            raise NasvizError(msg)
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    @override
    def forward(self, x: Tensor) -> Tensor:
        b, n = x.size(0), x.size(1)
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        out = (attn @ v).permute(0, 2, 1, 3).reshape(b, n, -1)
        return cast(Tensor, self.proj(out))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return cast(Tensor, x + self.mlp(self.norm2(x)))


class ViTLike(nn.Module):
    """Conv2d patch embedding + class token + positional embedding -> blocks -> LN -> head.

    Example:
        >>> model = ViTLike(num_classes=5)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        image_size: int = 32,
        patch_size: int = 8,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            msg = f"ViTLike: image_size={image_size} is not a multiple of patch_size={patch_size}"
            raise NasvizError(msg)
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)
        self.blocks = nn.Sequential(
            *(TransformerBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.size(0), -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return cast(Tensor, self.head(x[:, 0]))
