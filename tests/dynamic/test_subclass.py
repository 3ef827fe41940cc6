"""Dynamic twins of layer subclasses with their own forward keep that forward over sliced tensors.

``LayerNorm2dTV`` (torchvision's ``LayerNorm2d``: permute -> F.layer_norm -> permute) and
``BatchNormAct2d`` (timm's: F.batch_norm on its own statistics, then an activation): at any
width and channel order the dynamic layer computes what its export computes, the export is an
instance of the subclass, training updates exactly the kept channels' statistics in the full
buffers, and unconvert gives the original class back.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasviz.dynamic import DynamicBatchNorm2d, DynamicLayerNorm
from nasviz.hparam import Hparam
from nasviz.models import BatchNormAct2d, LayerNorm2dTV

C = 8


def _randomised(m: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in (*m.parameters(), *m.buffers()):
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return m


def _hparam(width: int, perm: list[int] | None) -> Hparam:
    hp = Hparam(list(range(1, C + 1)), name="c")
    if perm is not None:
        hp.enforce_order(torch.tensor(perm))
    hp.active = width
    return hp


orders = st.one_of(st.none(), st.permutations(list(range(C))))


@settings(max_examples=25, deadline=None)
@given(width=st.integers(1, C), perm=orders)
def test_layernorm2d_subclass_equals_its_export(width: int, perm: list[int] | None) -> None:
    ln = DynamicLayerNorm.convert(_randomised(LayerNorm2dTV(C)))
    ln.set_dim("normalized_shape", _hparam(width, perm))
    x = torch.randn(2, width, 3, 3)
    out = ln(x)
    small = ln.export()
    assert type(small) is LayerNorm2dTV
    assert small.normalized_shape == (width,) and small.weight.shape == (width,)
    torch.testing.assert_close(small(x), out)
    # channels of an NCHW tensor were normalised: mean ~0 over dim 1 before the affine
    plain = LayerNorm2dTV(width, elementwise_affine=False)
    torch.testing.assert_close(plain(x).mean(1), torch.zeros(2, 3, 3), atol=1e-5, rtol=0)


def test_outside_forward_the_subclass_sees_its_full_parameters() -> None:
    ln = DynamicLayerNorm.convert(LayerNorm2dTV(C))
    ln.set_dim("normalized_shape", _hparam(3, None))
    ln(torch.randn(1, 3, 2, 2))
    assert ln.weight.shape == (C,) and ln.state_dict()["bias"].shape == (C,)
    assert ln.normalized_shape == (3,)
    ln.dim("normalized_shape").active = C
    assert type(ln.unconvert()) is LayerNorm2dTV and ln.normalized_shape == (C,)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@settings(max_examples=20, deadline=None)
@given(width=st.integers(2, C), perm=orders)
def test_batchnormact_subclass_equals_its_export_and_updates_kept_statistics(
    training: bool, width: int, perm: list[int] | None
) -> None:
    bn = DynamicBatchNorm2d.convert(_randomised(BatchNormAct2d(C)))
    bn.set_dim("num_features", hp := _hparam(width, perm))
    small = bn.export()  # before the step: the same statistics
    assert type(small) is BatchNormAct2d and small.num_features == width
    assert isinstance(small.act, nn.SiLU)
    before = bn.running_mean.clone()
    bn.train(training)
    small.train(training)
    x = torch.randn(4, width, 3, 3)
    out = bn(x)
    torch.testing.assert_close(small(x), out)
    assert bool((out >= -0.2785).all())  # SiLU's minimum: the activation ran
    kept = hp.active_index()
    idx = torch.arange(C)[kept] if isinstance(kept, slice) else kept
    torch.testing.assert_close(bn.running_mean[idx], small.running_mean)
    dropped = torch.ones(C, dtype=torch.bool)
    dropped[idx] = False
    torch.testing.assert_close(bn.running_mean[dropped], before[dropped])  # untouched
    counts = (bn.num_batches_tracked, small.num_batches_tracked)
    assert [int(c) for c in counts if c is not None] == [int(training)] * 2


def test_a_deep_copy_of_a_converted_subclass_keeps_its_forward() -> None:
    bn = DynamicBatchNorm2d.convert(_randomised(BatchNormAct2d(C))).eval()
    bn.set_dim("num_features", _hparam(5, list(reversed(range(C)))))
    twin = copy.deepcopy(bn)
    x = torch.randn(2, 5, 2, 2)
    torch.testing.assert_close(twin(x), bn(x))
    assert type(twin).__name__ == "DynamicBatchNormAct2d"
