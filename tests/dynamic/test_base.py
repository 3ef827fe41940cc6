"""Case 6 of issue #15: a converted model whose weights were changed in place under
``torch.no_grad()`` (as initialisers and optimisers do) after an eval forward at a reduced
subnet can still be deep-copied and pickled; the copy computes what the model computes.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

import nasviz as nv
from nasviz.models import resnet_tiny
from nasviz.testing import searchable_mlp


def _resnet() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    cfg = {"nn.Conv2d": {"channel_divisor": 8}, "nn.BatchNorm2d": {"feature_divisor": 8}}
    return nv.convert(resnet_tiny(), mode=[("fastnas", cfg)], dummy_input=x), x


@pytest.mark.parametrize("build", [searchable_mlp, _resnet], ids=["mlp", "resnet"])
def test_deepcopy_after_inplace_change_under_no_grad(build) -> None:
    model, x = build()
    nv.sample(model, strategy="min")
    model.eval()
    with torch.no_grad():
        model(x)  # fills the slicing caches with views of the parameters
        for p in model.parameters():
            torch.nn.init.normal_(p)  # in place, as initialisers and optimisers do
    twin = copy.deepcopy(model)
    buf = io.BytesIO()
    torch.save(model, buf)  # pickling goes through the same state
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))
    assert nv.get_subnet_config(twin) == nv.get_subnet_config(model)
