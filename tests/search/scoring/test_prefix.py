"""Prefix sums for the first convolution after a narrowed group: equal to the direct conv."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.dynamic import DynamicConv2d
from nasviz.fastnas import BinarySearcher
from nasviz.hparam import Hparam
from nasviz.search.scoring._prefix import PrefixSlot, prefix_conv


@pytest.mark.parametrize("order", [None, [5, 0, 11, 3, 8, 1, 10, 2, 7, 4, 9, 6]])
def test_prefix_conv_extends_the_narrower_sum(order: list[int] | None) -> None:
    torch.manual_seed(0)
    conv = DynamicConv2d.convert(nn.Conv2d(12, 6, 3, padding=1, bias=True))
    hp = Hparam([2, 4, 8, 12])
    conv.set_dim("in_channels", hp)
    if order is not None:
        hp.enforce_order(order)
    full = torch.randn(5, 12, 7, 7)
    slot = PrefixSlot()
    with torch.no_grad():
        for width in (2, 4, 8, 12, 4):  # widening extends the sum; narrowing recomputes
            hp.active = width
            x = full[:, hp.active_index()] if order is not None else full[:, :width]
            got = prefix_conv(conv, x, slot)
            torch.testing.assert_close(got, conv(x), rtol=1e-5, atol=1e-5)
            assert slot.width == width and slot.total is got


def test_prefix_sums_leave_the_map_equal_to_the_uncached_one() -> None:
    from nasviz.demo import demo_config
    from nasviz.models import DigitsCNN

    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(16, 1, 8, 8, generator=g) for _ in range(3)]
    score = [(torch.randn(20, 1, 8, 8, generator=g), torch.randint(0, 10, (20,), generator=g))]
    states = []
    for budget in (1 << 30, 0):
        torch.manual_seed(0)
        model = DigitsCNN(width=8).eval()
        model = nv.convert(model, mode=[("fastnas", demo_config(2))], dummy_input=calib[0][:2])
        config = {"data_loader": calib, "score_loader": score, "metric": "neg_cross_entropy",
                  "skip": "none", "cache_bytes": budget}  # fmt: skip
        states.append(BinarySearcher().search(model, {"flops": "60%"}, calib[0][:2], config))
    cached, plain = states
    assert cached["evaluator"]["prefix_bytes"] > 0  # the stem and residual groups used them
    for name, drops in plain["sensitivity_map"].items():
        assert len(drops) >= 3
        for c, d in drops.items():
            assert cached["sensitivity_map"][name][c] == pytest.approx(d, abs=1e-5), (name, c)
    assert cached["best"]["config"] == plain["best"]["config"]
