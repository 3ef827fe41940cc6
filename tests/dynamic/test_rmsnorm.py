"""nn.RMSNorm as a declared layer family (one file): sliced, exported, traced with its producer."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.config import LAYER_TYPES, layer_config_class
from nasviz.dynamic import DynamicRMSNorm, dynamic_class_for
from nasviz.dynamic.family import LayerSpec
from nasviz.errors import NasvizError
from nasviz.hparam import Hparam
from nasviz.tracing.rules import layer_spec

C = 12
SMALL: dict[str, Any] = {k: {"*": {LAYER_TYPES[k].divisor_field: 4}} for k in LAYER_TYPES}


def test_declared_family() -> None:
    norm = nn.RMSNorm(C)
    assert dynamic_class_for(norm) is DynamicRMSNorm
    assert layer_spec(norm) == LayerSpec("norm", "normalized_shape", "normalized_shape", -1)
    assert set(layer_config_class("nn.RMSNorm")().model_dump()) == {
        "features_ratio",
        "feature_divisor",
    }
    assert "nn.RMSNorm" in nv.FastNASConfig.layer_types()


def test_only_the_last_dimension() -> None:
    with pytest.raises(NasvizError, match=r"normalises over 2 dimensions"):
        DynamicRMSNorm.convert(nn.RMSNorm([3, C]))


@settings(max_examples=30, deadline=None)
@given(
    width=st.integers(1, C),
    order=st.permutations(list(range(C))),
    affine=st.booleans(),
    eps=st.sampled_from([None, 1e-5]),
)
def test_dynamic_equals_export(
    width: int, order: list[int], affine: bool, eps: float | None
) -> None:
    torch.manual_seed(0)
    ref = nn.RMSNorm(C, eps=eps, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 2.0)
    dyn = DynamicRMSNorm.convert(copy.deepcopy(ref))
    x = torch.randn(2, 3, C)
    torch.testing.assert_close(dyn(x), ref(x))  # full size: the plain layer
    hp = Hparam(range(1, C + 1))
    dyn.set_dim("normalized_shape", hp)
    hp.enforce_order(order)
    hp.active = width
    kept = torch.tensor(order[:width])
    xs = x[..., kept]
    plain = dyn.export()
    assert type(plain) is nn.RMSNorm and plain.normalized_shape == (width,)
    torch.testing.assert_close(plain(xs), dyn(xs))
    expected = nn.functional.rms_norm(
        xs, (width,), None if ref.weight is None else ref.weight.detach()[kept], eps
    )
    torch.testing.assert_close(dyn(xs), expected)


def test_traced_with_its_producer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.RMSNorm(16), nn.Linear(16, 4))
    x = torch.randn(5, 8)
    model = nv.convert(model, mode=[("fastnas", nv.FastNASConfig(**SMALL))], dummy_input=x)
    space = nv.search_space(model)
    assert list(space.hparams) == ["0.out_features"]
    nv.select(model, {"0.out_features": 8})
    assert model[1].normalized_shape == (8,)
    y = model(x)
    small = nv.export(model)
    assert type(small[1]) is nn.RMSNorm and small[1].weight.shape == (8,)
    torch.testing.assert_close(small(x), y)
