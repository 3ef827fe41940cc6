"""BinarySearcher on tiny models whose scores are known by construction."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
from _convnet import ConvBN
from torch import nn

import nasviz as nv
from nasviz.errors import ConstraintError, SearchError
from nasviz.fastnas import BinarySearcher
from nasviz.search.events import (
    BisectionStep,
    CandidateScored,
    FinalScore,
    GrowStep,
    MapEntry,
    MapFinished,
    MapStarted,
    SearchFinished,
    SearchStarted,
)
from nasviz.testing import FC1, FC2, KNOWN_DROPS, TinyMLP, known_score, searchable_mlp

A, B = FC1, FC2
DROPS = KNOWN_DROPS
MLP = TinyMLP


def _mlp() -> tuple[nn.Module, torch.Tensor]:
    model, x = searchable_mlp()
    assert set(nv.search_space(model).hparams) == {A, B}
    return model, x


class KnownScore:
    """score = 1 - drop(fc1 width) - drop(fc2 width); counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        return known_score(model)


def _flops(a: int, b: int) -> int:
    """Matmul FLOPs of the three Linears on the batch-of-2 dummy input."""
    return 2 * 2 * (8 * a + a * b + b * 4)


def _search(model: nn.Module, x: torch.Tensor, **config: Any) -> tuple[dict[str, Any], list]:
    events: list = []
    score = config.pop("score_func", None) or KnownScore()
    searcher = BinarySearcher()
    state = searcher.search(
        model,
        config.pop("constraints", {"flops": "60%"}),
        dummy_input=x,
        config={"score_func": score, "callbacks": [events.append], **config},
    )
    return state, events


def test_sensitivity_map_holds_known_drops() -> None:
    model, x = _mlp()
    state, _ = _search(model, x)
    assert state["original_score"] == pytest.approx(1.0)
    for name in (A, B):
        expected = {c: d for c, d in DROPS[name].items() if c != 16}
        got = state["sensitivity_map"][name]
        assert set(got) == set(expected)
        for c, d in expected.items():
            assert got[c] == pytest.approx(d)


def test_result_is_the_brute_force_optimum_and_uses_the_budget() -> None:
    model, x = _mlp()
    state, _ = _search(model, x)
    limit = 0.6 * _flops(16, 16)
    feasible = [
        (a, b) for a, b in itertools.product((4, 8, 12, 16), repeat=2) if _flops(a, b) <= limit
    ]
    best = max(feasible, key=lambda ab: 1.0 - DROPS[A][ab[0]] - DROPS[B][ab[1]])
    assert state["best"]["config"] == {A: best[0], B: best[1]}
    assert state["best"]["score"] == pytest.approx(1.0 - DROPS[A][best[0]] - DROPS[B][best[1]])
    assert state["best"]["flops"] == pytest.approx(_flops(*best))
    assert state["best"]["flops"] <= limit
    # the model is left at the chosen subnet
    assert nv.get_subnet_config(model) == state["best"]["config"]


def test_events_arrive_in_order() -> None:
    model, x = _mlp()
    _, events = _search(model, x)
    kinds = [type(e) for e in events]
    assert kinds[0] is SearchStarted
    assert kinds[1] is MapStarted
    n_map = kinds.count(MapEntry)
    assert n_map == 6  # 3 smaller choices x 2 groups
    assert kinds[2 : 2 + n_map] == [MapEntry] * n_map
    assert kinds[2 + n_map] is MapFinished
    rest = kinds[3 + n_map :]
    first_cand = rest.index(CandidateScored)
    assert set(rest[:first_cand]) <= {BisectionStep, GrowStep}
    assert rest[-2:] == [FinalScore, SearchFinished]
    steps = [e for e in events if isinstance(e, BisectionStep)]
    assert steps, "bisection must take at least one step"
    for e in steps:
        assert e.lo <= e.mid <= e.hi
        assert e.feasible == (e.flops <= 0.6 * _flops(16, 16))
    entries = [e for e in events if isinstance(e, MapEntry)]
    assert [e.index for e in entries] == list(range(6))


def test_history_tables() -> None:
    model, x = _mlp()
    searcher = BinarySearcher()
    searcher.search(model, {"flops": "60%"}, dummy_input=x, config={"score_func": KnownScore()})
    table = searcher.history.sensitivity_table()
    assert len(table) == 6
    assert set(table.columns) >= {"hparam", "choice", "score", "drop", "flops", "params"}
    assert len(searcher.history.bisection_table()) >= 1
    assert len(searcher.history.candidate_table()) >= 1


def test_resume_from_checkpoint_gives_identical_results_without_rescoring(tmp_path: Path) -> None:
    ckpt = tmp_path / "search.pt"
    model, x = _mlp()
    first, _ = _search(model, x, checkpoint=str(ckpt))
    assert ckpt.exists()
    model2, _ = _mlp()
    score = KnownScore()
    second, _ = _search(model2, x, checkpoint=str(ckpt), score_func=score)
    assert second["sensitivity_map"] == first["sensitivity_map"]
    assert second["best"]["config"] == first["best"]["config"]
    # only the final candidates were scored: no map entry and no original score again
    final = BinarySearcher().default_search_config["final_candidates"]
    assert 1 <= score.calls <= final


def test_interrupted_map_resumes_where_it_stopped(tmp_path: Path) -> None:
    ckpt = tmp_path / "search.pt"

    class InterruptError(Exception):
        pass

    class Dying(KnownScore):
        def __call__(self, model: nn.Module) -> float:
            if self.calls == 4:  # original + 3 entries of the first group, then die
                raise InterruptError
            return super().__call__(model)

    model, x = _mlp()
    with pytest.raises(SearchError, match="InterruptError"):
        _search(model, x, checkpoint=str(ckpt), score_func=Dying())
    partial = torch.load(ckpt, weights_only=True)
    assert set(partial["sensitivity_map"]) == {A}
    model2, _ = _mlp()
    score = KnownScore()
    resumed, _ = _search(model2, x, checkpoint=str(ckpt), score_func=score)
    reference, _ = _search(_mlp()[0], x)
    assert resumed["sensitivity_map"] == reference["sensitivity_map"]
    assert resumed["best"] == reference["best"]
    final = BinarySearcher().default_search_config["final_candidates"]
    assert score.calls <= 3 + final  # the second group's 3 entries, then the candidates


def test_checkpoint_is_reused_for_another_constraint(tmp_path: Path) -> None:
    ckpt = tmp_path / "search.pt"
    model, x = _mlp()
    _search(model, x, checkpoint=str(ckpt))
    score = KnownScore()
    model2, _ = _mlp()
    state, events = _search(
        model2, x, checkpoint=str(ckpt), score_func=score, constraints={"flops": "40%"}
    )
    assert not any(isinstance(e, MapEntry) and not e.skipped for e in events)
    assert state["best"]["flops"] <= 0.4 * _flops(16, 16)


def test_unreachable_constraint_raises_before_any_scoring() -> None:
    model, x = _mlp()
    score = KnownScore()
    with pytest.raises(ConstraintError, match="unreachable"):
        _search(model, x, score_func=score, constraints={"flops": "1%"})
    assert score.calls == 0


def test_score_func_error_names_hparam_and_choice() -> None:
    model, x = _mlp()

    def bad(m: nn.Module) -> float:
        if nv.get_subnet_config(m)[B] == 8:
            raise RuntimeError("boom")
        return 1.0

    with pytest.raises(SearchError, match=r"fc2\.out_features=8.*boom|boom.*fc2\.out_features=8"):
        _search(model, x, score_func=bad)


def test_unknown_config_key_is_refused() -> None:
    model, x = _mlp()
    with pytest.raises(SearchError, match=r"unknown search config key\(s\) \['scorefunc'\]"):
        BinarySearcher().search(model, {"flops": "60%"}, x, {"scorefunc": KnownScore()})


def test_model_without_search_space_is_refused() -> None:
    with pytest.raises(Exception, match="convert it first"):
        BinarySearcher().search(
            MLP(), {"flops": "60%"}, torch.zeros(1, 8), {"score_func": KnownScore()}
        )


def test_bn_recalibration_reaches_the_exported_model() -> None:
    torch.manual_seed(0)
    data = [(torch.randn(8, 3, 6, 6) * 3 + 1, torch.zeros(8)) for _ in range(3)]
    x = data[0][0][:2]
    cfg = {
        "nn.Conv2d": {"channel_divisor": 4, "channels_ratio": [0.25, 0.5, 1.0]},
        "nn.BatchNorm2d": {"feature_divisor": 4, "features_ratio": [0.25, 0.5, 1.0]},
    }
    model = nv.convert(ConvBN(), mode=[("fastnas", cfg)], dummy_input=x)
    before = model.bn1.running_mean.clone()
    model, _ = nv.prune(
        model,
        constraints={"flops": "50%"},
        dummy_input=x,
        config={"score_func": lambda m: float(-m(x).abs().mean()), "data_loader": data},
    )
    assert not torch.allclose(model.bn1.running_mean, before), "calibration never ran"  # type: ignore[arg-type]  # torch: Tensor | Module
    small = nv.export(model)
    pruned = [n for n in ("bn1", "bn2") if getattr(small, n).num_features < 16]
    assert pruned, "a 50% FLOPs limit must shrink at least one BatchNorm"
    for name in pruned:
        bn_small, bn_dyn = getattr(small, name), getattr(model, name)
        kept = bn_small.num_features
        # the exported BN holds the statistics of the calibrated subnet...
        torch.testing.assert_close(bn_small.running_mean, bn_dyn.running_mean[:kept])
        torch.testing.assert_close(bn_small.running_var, bn_dyn.running_var[:kept])
    # ...which are what a fresh re-estimate of the exported model on the same data gives
    expected = {n: getattr(small, n).running_mean.clone() for n in ("bn1", "bn2")}
    nv.prep_for_eval(small, lambda m: [m(b[0]) for b in data])
    for n, mean in expected.items():
        torch.testing.assert_close(getattr(small, n).running_mean, mean, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), model.eval()(x))
