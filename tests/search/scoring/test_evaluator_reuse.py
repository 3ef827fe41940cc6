"""The evaluator form beyond the map: candidates from the cache, each subnet scored once, the
chosen subnet's statistics kept, the fast graph (channels_last, in-place ReLU) and the
enumerated candidate ranking - each checked against the plain computation.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.fastnas import BinarySearcher
from nasviz.fastnas.searcher import _next_choice
from nasviz.patch import prep_for_eval
from nasviz.search.evaluator import Evaluator
from nasviz.search.events import CandidateScored
from nasviz.search.executors import members_of as _members
from nasviz.search.scoring import Scorer
from nasviz.search.scoring._subgraph import capture_module, plan_subgraphs
from nasviz.tracing.fx import trace_leaves
from tests.search.scoring.test_evaluator import _model, _search

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The BatchNorm statistics of the active subnet (its exported copy's)."""
    if nv.state.is_converted(model):
        model = nv.export(copy.deepcopy(model))
    return {
        f"{name}.{k}": v.clone()
        for name, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for k, v in m._buffers.items()
        if v is not None and k != "num_batches_tracked"
    }


def _evaluator(kind: str = "cnn") -> tuple[Evaluator, nn.Module, dict[str, Any], float]:
    model, _, calib, score = _model(kind)
    searcher = BinarySearcher()
    searcher.model = model
    searcher.config = searcher.sanitize_search_config(
        {"data_loader": calib, "score_loader": score, "metric": "neg_cross_entropy"}
    )
    hps = searcher._hparams()
    ev = Evaluator(model, searcher.config)
    original = ev.prepare(_members(searcher, hps), hps)
    return ev, model, hps, original


def test_candidates_are_scored_from_the_cache_as_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # every candidate scored (no skip rule), so that several are compared
    monkeypatch.setattr(Scorer, "worth_scoring", lambda self, predicted, best: True)
    runs = {}
    for budget in (1 << 30, 0):
        state, events, _ = _search("cnn", cache_bytes=budget)
        runs[budget] = (state, [e for e in events if isinstance(e, CandidateScored)])
    (cached, cands), (uncached, plain) = runs[1 << 30], runs[0]
    assert len(cands) == len(plain) >= 2
    for a, b in zip(cands, plain):
        assert a.config == b.config
        assert a.score == pytest.approx(b.score, abs=1e-5)
    assert cached["evaluator"]["full_scores"] == 1  # only the fill ran the whole model
    assert uncached["evaluator"]["full_scores"] > len(plain)


def test_two_changed_hparams_score_from_the_cache_as_the_whole_model() -> None:
    ev, model, hps, _ = _evaluator()
    names = list(hps)[1:3]  # two later groups: their nodes run, the stem comes from the cache
    nv.select(model, {n: hps[n].choices[1] for n in names})
    full_before = ev.stats["full_scores"]
    cached = ev.score_active()
    assert ev.stats["full_scores"] == full_before and ev.stats["cached_scores"] == 1
    cached_bn = _bn_buffers(model)
    plain = ev.score_full()
    assert cached == pytest.approx(plain, abs=1e-5)
    for k, v in _bn_buffers(model).items():
        torch.testing.assert_close(cached_bn[k], v, rtol=1e-4, atol=1e-5)


def test_a_subnet_is_scored_once_and_its_statistics_come_back() -> None:
    ev, model, hps, original = _evaluator()
    first = next(iter(hps))
    nv.select(model, {first: hps[first].choices[0]})
    score = ev.score_active()
    calibrated = _bn_buffers(model)
    nv.select(model, {first: hps[first].original})
    assert ev.score_active() == original  # the full subnet: remembered from prepare
    nv.select(model, {first: hps[first].choices[0]})
    scored = ev.stats["cached_scores"] + ev.stats["full_scores"]
    assert ev.score_active() == score
    assert ev.stats["cached_scores"] + ev.stats["full_scores"] == scored  # nothing ran
    assert ev.report()["remembered_scores"] == 2
    ev.reset_calibration()
    assert ev.restore_kept()
    for k, v in _bn_buffers(model).items():
        assert torch.equal(calibrated[k], v), k


def test_the_model_ends_calibrated_for_the_chosen_subnet() -> None:
    state, _, model = _search("cnn")
    _, _, calib, _ = _model("cnn")
    got = _bn_buffers(model)
    reference = copy.deepcopy(model)
    prep_for_eval(reference, lambda m: [m(x) for x, _ in calib])
    assert state["evaluator"]["full_scores"] == 1  # no calibration after the search either
    for k, v in _bn_buffers(reference).items():
        torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["cnn", "inplace"])
def test_fast_graph_reproduces_the_model_in_both_modes(kind: str) -> None:
    model, _, calib, _ = _model(kind)
    plan = plan_subgraphs(model, trace_leaves(model), {}, {})
    run = capture_module(model, plan, [])
    code = run.code
    assert "channels_last" in code
    if kind == "cnn":
        assert "relu_" in code  # plain ReLUs on fresh conv/BN outputs run in place
        assert "batchnorm_into" in code  # so do BatchNorms on fresh conv outputs
        assert "add_into" in code  # and the residual additions
    x = calib[0][0]
    twin = copy.deepcopy(model)
    with torch.no_grad():
        model.train()
        twin.train()
        out, _ = run(x)
        torch.testing.assert_close(out, twin(x), rtol=1e-4, atol=1e-5)
        for k, v in _bn_buffers(twin).items():  # the same batch statistics were tracked
            torch.testing.assert_close(_bn_buffers(model)[k], v, rtol=1e-4, atol=1e-5)
        model.eval()
        twin.eval()
        torch.testing.assert_close(run(x)[0], twin(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("flops", ["40%", "60%", "80%"])
def test_enumerated_alternatives_match_the_brute_force_ranking(flops: str) -> None:
    from nasviz.demo import demo_config
    from nasviz.models import DigitsCNN

    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    model = nv.convert(DigitsCNN(width=16), mode=[("fastnas", demo_config(2))], dummy_input=x)
    searcher = BinarySearcher()  # scoring does not matter here: the map is replaced below
    searcher.search(model, {"flops": flops}, x, {"data_loader": [x], "score_func": lambda m: 0})
    hps = searcher._hparams()
    names = list(hps)
    g = torch.Generator().manual_seed(1)
    searcher.sensitivity_map = {  # drops falling with width, as real maps do
        n: {c: float(torch.rand(1, generator=g)) / c for c in hps[n].choices[:-1]} for n in names
    }
    grown = searcher._grow(searcher._config_at(0.02), emit=False)
    pool = [dict(zip(names, c)) for c in itertools.product(*(hps[n].choices for n in names))]
    pool = [c for c in pool if searcher._feasible(c)]
    maximal = [
        c
        for c in pool
        if c != grown
        and not any(
            (nxt := _next_choice(hps[n], c[n])) is not None and searcher._feasible({**c, n: nxt})
            for n in names
        )
    ]
    expected = sorted(maximal, key=lambda c: (searcher._predicted_drop(c), sorted(c.items())))
    assert len(expected) >= 5, "the constraint must leave alternatives to rank"
    assert searcher._alternatives(grown, 1000) == expected
