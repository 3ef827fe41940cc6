"""GPT-like: a decoder-only language model with causal self-attention and a tied LM head.

Token and position embeddings are added, pre-norm blocks apply causal self-attention (explicit
``qkv``/``proj`` Linears; future positions are masked with a lower-triangular buffer) and an
``fc1 -> GELU -> fc2`` MLP, a final LayerNorm follows, and the LM head shares its weight with the
token embedding (``lm_head.weight is tok_emb.weight``), so the embedding width cannot be pruned
on one side alone. Input: int64 tokens ``(B, T)`` with ``T <= block_size``; output logits
``(B, T, vocab_size)``.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from typing_extensions import override

from nasviz.errors import NasvizError
from nasviz.models.vit import Mlp

__all__ = ["CausalSelfAttention", "GPTBlock", "GPTLike"]


def _causal_mask_slice(mask: Tensor, length: Tensor | int) -> Tensor:
    """``mask[:, :, :length, :length]``; an fx leaf, so the slice survives symbolic tracing.

    ``torch.fx`` does not proxy buffers, so slicing the real mask with a traced length would fail;
    as a wrapped function it is recorded as one call on ``get_attr(<module>.mask)``.
    """
    return mask[:, :, :length, :length]


torch.fx.wrap("_causal_mask_slice")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` attends to positions ``<= t`` only.

    Example:
        >>> CausalSelfAttention(16, num_heads=2, block_size=8)(torch.zeros(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    mask: Tensor

    def __init__(self, dim: int, num_heads: int, block_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            msg = f"CausalSelfAttention: dim={dim} is not divisible by num_heads={num_heads}"
            raise NasvizError(msg)
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        causal = torch.tril(torch.ones(block_size, block_size, dtype=torch.bool))
        self.register_buffer("mask", causal.view(1, 1, block_size, block_size), persistent=False)

    @override
    def forward(self, x: Tensor) -> Tensor:
        b, t = x.size(0), x.size(1)
        qkv = self.qkv(x).view(b, t, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q @ k.transpose(-2, -1)) * self.scale
        scores = scores.masked_fill(~_causal_mask_slice(self.mask, t), float("-inf"))
        out = (torch.softmax(scores, dim=-1) @ v).permute(0, 2, 1, 3).reshape(b, t, -1)
        return cast(Tensor, self.proj(out))


class GPTBlock(nn.Module):
    """Pre-norm decoder block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, dim: int, num_heads: int, block_size: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, num_heads, block_size)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    @override
    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return cast(Tensor, x + self.mlp(self.ln_2(x)))


class GPTLike(nn.Module):
    """Token + position embeddings -> causal blocks -> LayerNorm -> tied LM head.

    Example:
        >>> model = GPTLike(vocab_size=50)
        >>> model.lm_head.weight is model.tok_emb.weight
        True
        >>> model(torch.zeros(2, 16, dtype=torch.long)).shape
        torch.Size([2, 16, 50])
    """

    def __init__(
        self,
        vocab_size: int = 64,
        *,
        block_size: int = 16,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(block_size, dim)
        self.blocks = nn.Sequential(
            *(GPTBlock(dim, num_heads, block_size, mlp_ratio) for _ in range(depth))
        )
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    @override
    def forward(self, idx: Tensor) -> Tensor:
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        x = self.ln_f(self.blocks(x))
        return cast(Tensor, self.lm_head(x))
