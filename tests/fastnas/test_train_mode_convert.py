"""A model left in train mode converts: the self-check runs in eval mode (no grad), the training
flags come back as they were and no BatchNorm statistic moves (traceable and untraceable
forwards, with and without a dummy_input).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.models import REFERENCE_MODELS

SMALL = {"nn.Conv2d": {"channel_divisor": 4}, "nn.BatchNorm2d": {"feature_divisor": 4}}


def _stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "batches" in k}


@pytest.mark.parametrize("name", ["resnet_tiny", "data_dependent_net", "convnext_like"])
@pytest.mark.parametrize("with_input", [True, False], ids=["dummy_input", "no_input"])
def test_train_mode_model_converts_with_statistics_untouched(name: str, with_input: bool) -> None:
    model, x = REFERENCE_MODELS[name]()
    model.train()
    model(x)  # non-trivial running statistics
    stats, flags = _stats(model), [m.training for m in model.modules()]
    assert stats or name == "convnext_like"
    nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=x if with_input else None)
    assert nv.search_space(model).hparams
    after = _stats(model)
    assert after.keys() == stats.keys()
    for k, v in stats.items():
        # the sorted model permutes channels: compare the multiset of values per statistic
        assert torch.equal(after[k].flatten().sort().values, v.flatten().sort().values), k
    assert [m.training for m in model.modules() if not isinstance(m, nn.Identity)][:1] == [True]
    assert all(m.training for m in model.modules()) == all(flags)
