"""The score_func form: cached BatchNorm calibration == full re-calibration, the
``max_iter_data_loader`` default, and the final-candidate skip rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import nasviz as nv
from nasviz.fastnas import BinarySearcher
from nasviz.models import DigitsCNN
from nasviz.patch import calibration_loop
from nasviz.search.events import CandidateScored, MapEntry
from nasviz.search.scoring import FuncScorer
from nasviz.testing import KNOWN_DROPS, known_score, searchable_mlp

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

CFG = {
    "nn.Conv2d": {"channel_divisor": 4},
    "nn.BatchNorm2d": {"feature_divisor": 4},
    "nn.Linear": {"feature_divisor": 4},
}


def _digits() -> tuple[nn.Module, torch.Tensor, list[Any], torch.Tensor]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    calib = [(torch.randn(8, 1, 8, 8, generator=g) * 2 + 0.5, torch.zeros(8)) for _ in range(4)]
    probe = torch.randn(16, 1, 8, 8, generator=g)
    x = calib[0][0][:2]
    model = nv.convert(DigitsCNN(width=16).eval(), mode=[("fastnas", CFG)], dummy_input=x)
    return model, x, calib, probe


def _search(config: dict[str, Any]) -> tuple[dict[str, Any], list[list[torch.Tensor]], list[Any]]:
    """A search on the small digits CNN recording, per score_func call, every BN's statistics."""
    model, x, calib, probe = _digits()
    seen: list[list[torch.Tensor]] = []
    events: list[Any] = []

    def score(m: nn.Module) -> float:
        # the active channels' statistics (what the subnet and its export use; a full
        # re-calibration also resets the inactive channels, the cache leaves them as they were)
        stats = []
        for b in m.modules():
            if isinstance(b, _BatchNorm):
                mean, var, _ = b._running_stats(update=False)
                stats += [mean.clone(), var.clone()]
        seen.append(stats)
        return -float(m(probe).square().mean())

    cfg = {"score_func": score, "callbacks": [events.append], **config}
    if "forward_loop" not in cfg:
        cfg["data_loader"] = calib
    state = BinarySearcher().search(model, {"flops": "60%"}, x, cfg)
    return state, seen, events


def test_cached_calibration_equals_full_recalibration() -> None:
    _, _, calib, _ = _digits()
    cached, seen_c, ev_c = _search({"max_iter_data_loader": 4})
    full, seen_f, ev_f = _search({"forward_loop": calibration_loop(calib, 4)})
    rep = cached["score_func"]
    assert rep["cached"] and rep["cached_scores"] > 0  # the cache was used
    assert full["score_func"]["cached_scores"] == 0
    map_c = [(e.hparam, e.choice, e.score) for e in ev_c if isinstance(e, MapEntry)]
    map_f = [(e.hparam, e.choice, e.score) for e in ev_f if isinstance(e, MapEntry)]
    assert [m[:2] for m in map_c] == [m[:2] for m in map_f] and len(map_c) >= 8
    for (_, _, a), (_, _, b) in zip(map_c, map_f):
        assert a == pytest.approx(b, abs=1e-6)
    # the full model, then every map entry: the same BatchNorm statistics, call for call
    n = 1 + len(map_c)
    assert len(seen_c) >= n and len(seen_f) >= n
    for sc, sf in zip(seen_c[:n], seen_f[:n]):
        for a, b in zip(sc, sf):  # type: ignore[assignment]  # test data typed loosely
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-6)  # type: ignore[arg-type]  # test data typed loosely
    assert cached["best"]["config"] == full["best"]["config"]
    assert cached["best"]["score"] == pytest.approx(full["best"]["score"], abs=1e-6)


class CountingLoader:
    """``n`` batches; counts every batch drawn."""

    def __init__(self, n: int) -> None:
        self.n, self.drawn = n, 0
        g = torch.Generator().manual_seed(2)
        self.batches = [(torch.randn(4, 1, 8, 8, generator=g), torch.zeros(4)) for _ in range(n)]

    def __iter__(self) -> Iterator[Any]:
        for b in self.batches:
            self.drawn += 1
            yield b


@pytest.mark.parametrize("form", ["score_func", "evaluator"])
@pytest.mark.parametrize(("given", "expected"), [(None, 50), (3, 3)])
def test_max_iter_data_loader_default_is_50(form: str, given: int | None, expected: int) -> None:
    model, x, _, probe = _digits()
    loader = CountingLoader(80)
    cfg: dict[str, Any] = {"data_loader": loader}
    if given is not None:
        cfg["max_iter_data_loader"] = given
    if form == "evaluator":
        cfg.update(score_loader=[(probe, torch.zeros(16, dtype=torch.long))], metric="accuracy")
    else:
        cfg["score_func"] = lambda m: -float(m(probe).square().mean())
    BinarySearcher().search(model, {"flops": "60%"}, x, cfg)
    assert loader.drawn == expected  # drawn once, kept, reused for every subnet


def test_default_is_documented() -> None:
    import nasviz.fastnas.searcher as searcher

    assert "default **50**" in str(searcher.__doc__)
    assert BinarySearcher().default_search_config["max_iter_data_loader"] == 50


@pytest.mark.parametrize("flops", ["35%", "45%", "55%", "65%", "75%", "85%"])
def test_skip_rule_never_skips_the_winner(flops: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With known additive drops, the subnet that wins when every candidate is scored also wins
    when candidates predicted no better than the best real score are skipped.
    """

    def run() -> tuple[dict[str, Any], list[Any]]:
        model, x = searchable_mlp()
        events: list[Any] = []
        cfg = {"score_func": known_score, "callbacks": [events.append], "final_candidates": 6}
        return BinarySearcher().search(model, {"flops": flops}, x, cfg), events

    skipping, ev_s = run()
    with monkeypatch.context() as m:
        m.setattr(FuncScorer, "worth_scoring", lambda self, predicted, best: True)
        every, ev_e = run()
    assert skipping["best"]["config"] == every["best"]["config"]
    assert skipping["best"]["score"] == every["best"]["score"]
    scored_s = [e for e in ev_s if isinstance(e, CandidateScored)]
    scored_e = [e for e in ev_e if isinstance(e, CandidateScored)]
    assert len(scored_s) + skipping["score_func"]["skipped_candidates"] == len(scored_e)
    best = max(e.score for e in scored_e)
    assert best == pytest.approx(
        1.0 - sum(KNOWN_DROPS[k][v] for k, v in every["best"]["config"].items())
    )


def test_skip_rule_skips_candidates_the_map_rules_out() -> None:
    model, x = searchable_mlp()
    cfg = {"score_func": known_score, "final_candidates": 6}
    state = BinarySearcher().search(model, {"flops": "55%"}, x, cfg)
    assert state["score_func"]["skipped_candidates"] > 0
