"""Batched BatchNorm re-calibration: one pass over all calibration batches gives the running
statistics, outputs and sensitivity map of the per-batch loop (unequal last batch included).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

import nasviz as nv
import nasviz.search.scoring._cached as evaluator_mod
import nasviz.search.scoring._calib as calib_mod
from nasviz.dynamic.norm import DynamicBatchNorm2d
from nasviz.fastnas import BinarySearcher
from nasviz.hparam import Hparam
from nasviz.search.evaluator import Evaluator
from nasviz.search.executors import members_of as _members
from nasviz.search.scoring._calib import calib_module, chunked_batchnorm, groups, pack
from tests.search.scoring.test_evaluator import CFG, TinyCNN

SIZES = [8, 8, 8, 5]  # several calibration batches, the last one smaller


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _bn(width: int, order: list[int] | None) -> nn.BatchNorm2d:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(8, momentum=None)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    if width == 8 and order is None:
        return bn
    dyn = DynamicBatchNorm2d.convert(bn)
    hp = Hparam([4, 8])
    dyn.set_dim("num_features", hp)
    if order is not None:
        hp.enforce_order(order)
    hp.active = width
    return dyn


@pytest.mark.parametrize(
    ("width", "order", "inplace"),
    [(8, None, True), (8, None, False), (4, None, True), (4, [6, 1, 7, 0, 2, 5, 3, 4], False)],
)
def test_chunked_batchnorm_is_one_call_per_batch(
    width: int, order: list[int] | None, inplace: bool
) -> None:
    a, b = _bn(width, order), _bn(width, order)
    for m in (a, b):
        m.reset_running_stats()
        m.train()
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(s, width, 3, 3, generator=g) * (i + 1) + i for i, s in enumerate(SIZES)]
    with torch.no_grad():
        want = torch.cat([a(x) for x in xs])
        joined = torch.cat(xs).contiguous(memory_format=torch.channels_last)
        got = chunked_batchnorm(b, joined, SIZES, inplace)
    assert (got.data_ptr() == joined.data_ptr()) == inplace
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert int(b.get_buffer("num_batches_tracked")) == len(SIZES)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="cannot split"):
        chunked_batchnorm(b, joined, [3, 3], inplace)


def test_pack_keeps_views_of_one_tensor_and_groups_respect_the_cap() -> None:
    vals = [torch.full((s, 2), float(i)) for i, s in enumerate(SIZES)]
    views, joined = pack(vals, SIZES)
    assert joined is not None and joined.shape == (sum(SIZES), 2)
    assert all(v._base is joined and torch.equal(v, w) for v, w in zip(views, vals))
    assert pack(vals, [8, 8, 8, 8])[1] is None  # dim 0 is not the batch: left as is
    assert pack([(v,) for v in vals], SIZES)[1] is None
    assert groups(SIZES, 10, cap=1 << 20) == [range(4)]
    assert groups(SIZES, 10, cap=170) == [range(2), range(2, 4)]
    assert groups(SIZES, 10, cap=1) == [range(i, i + 1) for i in range(4)]


class MeanCentred(nn.Module):
    """A BatchNorm fed by a reduction over the batch (times 0, so that eval mode still treats
    each sample alone, which the evaluator checks): not sample by sample.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        y = self.conv2(x)
        y = torch.relu(self.bn2(y - y.mean(0, keepdim=True) * 0))
        return self.fc(y.mean((2, 3)))


def _setup(kind: str) -> tuple[nn.Module, list[Any], list[Any]]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    calib = [(torch.randn(s, 1, 6, 6, generator=g) * 3 + 1, torch.zeros(s)) for s in SIZES]
    score = [
        (torch.randn(10, 1, 6, 6, generator=g) * 3 + 1, torch.randint(0, 3, (10,), generator=g))
        for _ in range(2)
    ]
    model: nn.Module = (TinyCNN() if kind == "cnn" else MeanCentred()).eval()
    model = nv.convert(model, mode=[("fastnas", CFG)], dummy_input=calib[0][0][:2])
    return model, calib, score


def _bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    small = nv.export(copy.deepcopy(model))
    return {
        f"{name}.{k}": v.clone()
        for name, m in small.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for k, v in m._buffers.items()
        if v is not None
    }


def _every_entry(
    kind: str, batched: bool, monkeypatch: pytest.MonkeyPatch, budget: int = 1 << 30
) -> tuple[dict[tuple[str, int], tuple[float, dict[str, torch.Tensor]]], Evaluator]:
    """Score every single-hparam entry; per entry its score and the subnet's statistics."""
    model, calib, score = _setup(kind)
    with monkeypatch.context() as mp:
        if not batched:
            mp.setattr(evaluator_mod, "calib_module", lambda sub: None)
        searcher = BinarySearcher()
        searcher.model = model
        searcher.config = searcher.sanitize_search_config(
            {"data_loader": calib, "score_loader": score, "metric": "neg_cross_entropy",
             "cache_bytes": budget}
        )  # fmt: skip
        hps = searcher._hparams()
        ev = Evaluator(model, searcher.config)
        ev.prepare(_members(searcher, hps), hps)
        out = {}
        for name, hp in hps.items():
            for choice in hp.choices:
                if choice == hp.original:
                    continue
                nv.select(model, {name: choice})
                out[(name, choice)] = (ev.score_active(), _bn_buffers(model))
                nv.select(model, {name: hp.original})
    return out, ev


def _assert_same(a: dict[Any, Any], b: dict[Any, Any]) -> None:
    assert set(a) == set(b) and a
    for key, (score, stats) in a.items():
        assert score == pytest.approx(b[key][0], abs=1e-5), key
        assert set(stats) == set(b[key][1])
        for k, v in stats.items():
            torch.testing.assert_close(v, b[key][1][k], rtol=1e-4, atol=1e-5, msg=f"{key} {k}")


def test_batched_calibration_equals_the_per_batch_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    batched, ev = _every_entry("cnn", True, monkeypatch)
    per_batch, ev_loop = _every_entry("cnn", False, monkeypatch)
    uncached, ev_plain = _every_entry("cnn", True, monkeypatch, budget=0)
    assert any(s.calib is not None for s in ev._modules.values())  # the batched path ran
    assert all(s.calib is None for s in ev_loop._modules.values())
    assert ev_plain.stats["cached_scores"] == 0
    _assert_same(batched, per_batch)
    _assert_same(batched, uncached)
    nbt = [v for k, v in next(iter(batched.values()))[1].items() if "num_batches" in k]
    assert nbt and all(int(v) == len(SIZES) for v in nbt)  # one update per batch


def test_batches_in_several_groups_give_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calib_mod, "GROUP_BYTES", 1)  # one batch per group
    grouped, _ = _every_entry("cnn", True, monkeypatch)
    per_batch, _ = _every_entry("cnn", False, monkeypatch)
    _assert_same(grouped, per_batch)


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.bn(x)))


def test_calib_module_only_for_sample_by_sample_graphs() -> None:
    plain = torch.fx.symbolic_trace(TinyCNN())
    module = calib_module(plain)
    assert module is not None
    targets = [n.target for n in module.graph.nodes]
    assert targets.count(chunked_batchnorm) == 6 and "fc" not in targets  # the head is dropped
    assert calib_module(torch.fx.symbolic_trace(MeanCentred())) is None  # y.mean(0)
    assert calib_module(torch.fx.symbolic_trace(Twice())) is None  # a BatchNorm called twice
    hooked = TinyCNN()
    hooked.res1[0].register_forward_hook(lambda *a: None)
    assert calib_module(torch.fx.symbolic_trace(hooked)) is None
    x = torch.randn(6, 1, 6, 6)  # the module runs: one update per batch in every BatchNorm
    plain.train()
    with torch.no_grad():
        module(x, (2, 4))
    bns = [m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(int(m.get_buffer("num_batches_tracked")) == 2 for m in bns)


def test_a_batch_reduction_keeps_the_per_batch_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    cached, ev = _every_entry("mean", True, monkeypatch)
    uncached, _ = _every_entry("mean", True, monkeypatch, budget=0)
    assert ev._modules and all(s.calib is None for s in ev._modules.values())
    assert ev.stats["cached_scores"] == len(cached)
    _assert_same(cached, uncached)
