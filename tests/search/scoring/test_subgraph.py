"""The evaluator's fx graphs read sliced channel parameters live (not frozen at build time)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

import nasviz.space as nv
from nasviz.config import LAYER_TYPES
from nasviz.fastnas import BinarySearcher
from nasviz.models import REFERENCE_MODELS

SMALL: dict[str, Any] = {k: {"*": {LAYER_TYPES[k].divisor_field: 8}} for k in LAYER_TYPES}


def _token_accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return float((logits.argmax(-1) == target).float().mean())


@pytest.mark.parametrize(
    ("name", "stream"),
    [
        ("vit_like", "patch_embed"),  # class token and position embedding sliced
        ("convnext_like", "downsample"),  # layer scale sliced
        ("gpt_like", "tok_emb"),  # the embeddings' weights sliced, produced outside any layer
    ],
)
def test_cached_map_equals_uncached_with_channel_parameters(name: str, stream: str) -> None:
    torch.set_num_threads(1)
    model, x = REFERENCE_MODELS[name]()
    g = torch.Generator().manual_seed(1)

    def batch(n: int) -> torch.Tensor:
        if x.dtype == torch.long:
            return torch.randint(0, 64, (n, *x.shape[1:]), generator=g)
        return torch.randn(n, *x.shape[1:], generator=g)

    calib = [(batch(4), torch.zeros(4)) for _ in range(2)]
    with torch.no_grad():
        score = [(t, model(t).argmax(-1)) for t in (batch(6),)]
    nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=x)
    assert any(n.startswith(stream) for n in nv.search_space(model).hparams)  # it is searched
    metric = _token_accuracy if x.dtype == torch.long else "accuracy"
    config = {"data_loader": calib, "score_loader": score, "metric": metric, "skip": "none"}
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
