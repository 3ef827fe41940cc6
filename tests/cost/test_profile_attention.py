"""profile() counts attention: nn.MultiheadAttention's fused fast path and sdpa on CPU.

Known answers (a multiply-add is 2 FLOPs): batch B=2, length L=5, width E=16, 4 heads of d=4.
The input projection is ``2*B*L*E*3E`` = 15360, ``q @ k^T`` and ``attn @ v`` are
``2*B*h*L*L*d`` = 1600 each, the output projection ``2*B*L*E*E`` = 5120: 23680 in all.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from nasviz.profile import profile

B, L, E, H = 2, 5, 16, 4
MHA_FLOPS = 2 * B * L * E * 3 * E + 2 * (2 * B * H * L * L * (E // H)) + 2 * B * L * E * E


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(E, H, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class Sdpa(nn.Module):
    def forward(self, q: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, q, q)


def test_multihead_attention_counts_projections_and_attention_in_eval_without_grad() -> None:
    assert MHA_FLOPS == 23680
    p = profile(SelfAttention(), torch.randn(B, L, E))
    assert p.flops == MHA_FLOPS
    rows = p.table.set_index("module")["flops"]
    # MHA's own code issues every matmul, the output projection's too (it calls F.linear with
    # out_proj's weight, never the out_proj module)
    assert rows["attn"] == MHA_FLOPS
    assert rows["attn.out_proj"] == 0


@pytest.mark.parametrize("enabled", [True, False])
def test_the_fast_path_setting_is_put_back(enabled: bool) -> None:
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        profile(SelfAttention(), torch.randn(B, L, E))
        assert torch.backends.mha.get_fastpath_enabled() is enabled
        with pytest.raises(Exception, match="profile"):
            profile(SelfAttention(), torch.randn(B, L, E + 1))  # fails inside the forward
        assert torch.backends.mha.get_fastpath_enabled() is enabled
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def test_transformer_encoder_layer_counts_attention_and_feed_forward() -> None:
    layer = nn.TransformerEncoderLayer(E, H, 32, batch_first=True)
    assert profile(layer, torch.randn(B, L, E)).flops == MHA_FLOPS + 2 * (2 * B * L * E * 32)


@settings(max_examples=10, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 4), n=st.integers(1, 9), d=st.sampled_from([2, 4, 8]))
def test_sdpa_on_cpu_counts_its_two_matmuls(b: int, h: int, n: int, d: int) -> None:
    assert profile(Sdpa(), torch.randn(b, h, n, d)).flops == 2 * (2 * b * h * n * n * d)
