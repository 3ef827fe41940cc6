"""The evaluator's fx graphs read sliced channel parameters live (not frozen at build time)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

import nasviz.space as nv
from nasviz.config import LAYER_TYPES
from nasviz.models import REFERENCE_MODELS
from nasviz.search.binary import BinarySearcher

SMALL: dict[str, Any] = {k: {"*": {LAYER_TYPES[k].divisor_field: 8}} for k in LAYER_TYPES}


@pytest.mark.parametrize("name", ["vit_like", "convnext_like"])
def test_cached_map_equals_uncached_with_channel_parameters(name: str) -> None:
    torch.set_num_threads(1)
    model, x = REFERENCE_MODELS[name]()
    g = torch.Generator().manual_seed(1)
    calib = [(torch.randn(4, 3, 32, 32, generator=g), torch.zeros(4)) for _ in range(2)]
    with torch.no_grad():
        score = [(t, model(t).argmax(-1)) for t in (torch.randn(6, 3, 32, 32, generator=g),)]
    nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=x)
    assert any(
        name.startswith(("patch_embed", "downsample")) for name in nv.search_space(model).hparams
    )  # the stream, whose class token / layer scale are sliced, is searched
    config = {"data_loader": calib, "score_loader": score, "metric": "accuracy", "skip": "none"}
    states = [
        BinarySearcher().search(copy.deepcopy(model), {"flops": "70%"}, x, {**config, **extra})
        for extra in ({}, {"cache_bytes": 0})
    ]
    cached, uncached = states
    assert cached["evaluator"]["reason"] is None  # the cache was used
    assert cached["sensitivity_map"].keys() == uncached["sensitivity_map"].keys()
    for hp, drops in cached["sensitivity_map"].items():
        assert drops == pytest.approx(uncached["sensitivity_map"][hp], abs=1e-6), hp
    assert cached["best"]["config"] == uncached["best"]["config"]
