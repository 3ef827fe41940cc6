"""The evaluator form of the search config: cached == uncached maps, skips, budget, errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nasviz as nv
from nasviz.errors import SearchError
from nasviz.fastnas import BinarySearcher
from nasviz.search.evaluator import EvaluatorPlan
from nasviz.search.events import MapEntry, MapFinished
from nasviz.testing import TinyMLP

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


CFG = {
    "nn.Conv2d": {"channel_divisor": 4},
    "nn.BatchNorm2d": {"feature_divisor": 4},
    "nn.Linear": {"feature_divisor": 4},
}


def _cbr(cin: int, cout: int, k: int, groups: int = 1, act: bool = True, inplace: bool = False):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=inplace))
    return nn.Sequential(*layers)


class TinyCNN(nn.Module):
    """DigitsCNN in small: stem, a residual block, an inverted residual block, pool, Linear."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace
        self.stem = _cbr(1, 8, 3, inplace=inplace)
        self.res1 = _cbr(8, 8, 3, inplace=inplace)
        self.res2 = _cbr(8, 8, 3, act=False)
        self.expand = _cbr(8, 16, 1, inplace=inplace)
        self.dw = _cbr(16, 16, 3, groups=16, inplace=inplace)
        self.project = _cbr(16, 8, 1, act=False)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.res2(self.res1(x))
        if self.inplace:
            y += x
            x = F.relu(y, inplace=True)
        else:
            x = torch.relu(x + y)
        x = x + self.project(self.dw(self.expand(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Branchy(nn.Module):
    """Data-dependent control flow: fx cannot trace it as one graph (its body it can)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(_cbr(1, 8, 3), _cbr(8, 8, 3))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = x * 1.0
        return self.fc(self.body(x).mean((2, 3)))


class Counting(TinyCNN):
    """Python state fx bakes into the graph at trace time: the graph is not the model."""

    calls = 0
    counting = False  # switched on after convert (whose self-check would refuse the model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.counting and not isinstance(x, torch.fx.Proxy):  # eager calls only
            self.calls += 1
        return super().forward(x) * (1 + self.calls)


def _data(shape: tuple[int, ...], classes: int) -> tuple[list[Any], list[Any]]:
    g = torch.Generator().manual_seed(1)
    calib = [(torch.randn(8, *shape, generator=g) * 3 + 1, torch.zeros(8)) for _ in range(3)]
    score = [
        (
            torch.randn(10, *shape, generator=g) * 3 + 1,
            torch.randint(0, classes, (10,), generator=g),
        )
        for _ in range(2)
    ]
    return calib, score


def _model(kind: str) -> tuple[nn.Module, torch.Tensor, list[Any], list[Any]]:
    torch.manual_seed(0)
    if kind == "mlp":
        calib, score = _data((8,), 4)
        model: nn.Module = TinyMLP()
        cfg: dict[str, Any] = {"nn.Linear": {"feature_divisor": 4}}
    else:
        calib, score = _data((1, 6, 6), 3)
        kinds = {"cnn": TinyCNN, "inplace": lambda: TinyCNN(inplace=True), "branchy": Branchy}
        model = {**kinds, "counting": Counting}[kind]().eval()
        cfg = CFG
    x = calib[0][0][:2]
    model = nv.convert(model, mode=[("fastnas", cfg)], dummy_input=x)
    if kind == "counting":
        model.counting = True
    return model, x, calib, score


def _search(kind: str, **config: Any) -> tuple[dict[str, Any], list[Any], nn.Module]:
    model, x, calib, score = _model(kind)
    events: list[Any] = []
    base: dict[str, Any] = {"data_loader": calib, "callbacks": [events.append]}
    if "score_func" not in config:
        base.update(score_loader=score, metric="neg_cross_entropy", skip="none")
    state = BinarySearcher().search(model, {"flops": "60%"}, x, {**base, **config})
    return state, events, model


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["original_score"] == pytest.approx(b["original_score"], abs=1e-6)
    assert set(a["sensitivity_map"]) == set(b["sensitivity_map"])
    for name, drops in a["sensitivity_map"].items():
        assert set(drops) == set(b["sensitivity_map"][name])
        for c, d in drops.items():
            assert d == pytest.approx(b["sensitivity_map"][name][c], abs=1e-5), (name, c)
    assert a["best"]["config"] == b["best"]["config"]
    assert a["best"]["score"] == pytest.approx(b["best"]["score"], abs=1e-6)


@pytest.fixture(scope="module")
def cnn_runs() -> dict[str, tuple[dict[str, Any], list[Any], nn.Module]]:
    return {"cached": _search("cnn"), "uncached": _search("cnn", cache_bytes=0)}


def test_cached_map_equals_uncached_on_residual_conv_bn(cnn_runs: dict[str, Any]) -> None:
    cached, events, _ = cnn_runs["cached"]
    uncached, _, _ = cnn_runs["uncached"]
    _assert_same(cached, uncached)
    report = cached["evaluator"]
    assert sorted(report["cached"]) == sorted(cached["sensitivity_map"])
    assert report["reason"] is None
    n_entries = sum(len(v) for v in cached["sensitivity_map"].values())
    # every map entry and every final candidate came from the cache (or was remembered): the
    # whole model ran once, to fill it
    assert report["cached_scores"] >= n_entries
    assert report["full_scores"] == 1
    assert 0 < report["cache_bytes"] <= report["budget"]
    assert uncached["evaluator"]["cached_scores"] == 0
    assert "cache_bytes=0" in uncached["evaluator"]["reason"]
    plan = [e for e in events if isinstance(e, EvaluatorPlan)]
    assert len(plan) == 1 and plan[0].reason is None


def test_cached_map_equals_uncached_on_mlp() -> None:
    cached, _, _ = _search("mlp")
    uncached, _, _ = _search("mlp", cache_bytes=0)
    _assert_same(cached, uncached)
    report = cached["evaluator"]
    assert report["full_scores"] == 1  # the fill; the 6 map entries and the candidates: cached
    assert report["cached_scores"] + report["remembered_scores"] >= 6 + 1


def test_inplace_ops_are_handled() -> None:
    cached, _, _ = _search("inplace")
    uncached, _, _ = _search("inplace", cache_bytes=0)
    _assert_same(cached, uncached)
    assert cached["evaluator"]["inplace_ops"], "the in-place ops must be detected"
    assert cached["evaluator"]["cached_scores"] > 0


def test_evaluator_scores_what_score_func_scores(cnn_runs: dict[str, Any]) -> None:
    _, score = _data((1, 6, 6), 3)

    def score_func(m: nn.Module) -> float:
        outs = torch.cat([m(x) for x, _ in score])
        return -float(F.cross_entropy(outs, torch.cat([y for _, y in score])))

    reference, events, _ = _search("cnn", score_func=score_func)
    _assert_same(cnn_runs["cached"][0], reference)
    assert "evaluator" not in reference
    assert not any(isinstance(e, EvaluatorPlan) for e in events)


def test_cached_path_skips_upstream_layers() -> None:
    counts = []
    for budget in (1 << 30, 0):
        model, x, calib, score = _model("cnn")
        calls = [0]
        model.stem[0].register_forward_hook(lambda *_, c=calls: c.__setitem__(0, c[0] + 1))
        config = {"data_loader": calib, "score_loader": score, "metric": "accuracy"}
        BinarySearcher().search(
            model, {"flops": "60%"}, x, {**config, "skip": "none", "cache_bytes": budget}
        )
        counts.append(calls[0])
    # every map entry but the stem's own (4 of 5) saves 3 calibration + 2 score stem calls
    assert counts[0] <= counts[1] - 4 * 5


def test_memory_budget_fallback_gives_identical_results(cnn_runs: dict[str, Any]) -> None:
    full = cnn_runs["cached"][0]
    inputs = full["evaluator"]["input_bytes"]
    state, events, _ = _search("cnn", cache_bytes=inputs + 1)
    _assert_same(state, full)
    report = state["evaluator"]
    assert report["uncached"], "a budget of the inputs alone must leave hparams uncached"
    assert all("cache_bytes" in r for r in report["uncached"].values())
    assert report["cache_bytes"] <= inputs + 1
    assert report["full_scores"] > full["evaluator"]["full_scores"]
    plan = next(e for e in events if isinstance(e, EvaluatorPlan))
    assert plan.uncached == report["uncached"]


def test_loaders_are_read_once_with_a_cache_and_every_time_without() -> None:
    model, x, calib, score = _model("mlp")

    class Counting:
        def __init__(self, batches: list[Any]) -> None:
            self.batches, self.iterations = batches, 0

        def __iter__(self) -> Iterator[Any]:
            self.iterations += 1
            return iter(self.batches)

    for budget, few in ((1 << 30, True), (0, False)):
        model, x, _, _ = _model("mlp")
        cal, sco = Counting(calib), Counting(score)
        config = {"data_loader": cal, "score_loader": sco, "metric": "neg_cross_entropy"}
        BinarySearcher().search(model, {"flops": "60%"}, x, {**config, "cache_bytes": budget})
        assert (sco.iterations == 1) == few
        assert (cal.iterations == 1) == few


def test_untraceable_model_falls_back_with_a_reason() -> None:
    cached, events, _ = _search("branchy")
    uncached, _, _ = _search("branchy", cache_bytes=0)
    _assert_same(cached, uncached)
    plan = next(e for e in events if isinstance(e, EvaluatorPlan))
    assert plan.reason is not None and "fx" in plan.reason
    assert plan.cached == []
    assert cached["evaluator"]["cached_scores"] == 0


def test_graph_that_is_not_the_model_falls_back() -> None:
    state, events, _ = _search("counting")
    plan = next(e for e in events if isinstance(e, EvaluatorPlan))
    assert plan.reason is not None and "does not reproduce the model" in plan.reason
    assert state["evaluator"]["cached_scores"] == 0


# -- skip rules ----------------------------------------------------------------------------------
A, B = "fc1.out_features", "fc2.out_features"
DROPS = {A: {16: 0.0, 12: 0.01, 8: 0.0, 4: 0.30}, B: {16: 0.0, 12: 0.02, 8: 0.5, 4: 0.20}}


def _known_search(**config: Any) -> tuple[dict[str, Any], list[Any]]:
    model, x, calib, score = _model("mlp")

    def metric(outputs: torch.Tensor, targets: torch.Tensor) -> float:
        cfg = nv.get_subnet_config(model)
        return 1.0 - DROPS[A][cfg[A]] - DROPS[B][cfg[B]]

    events: list[Any] = []
    state = BinarySearcher().search(
        model,
        {"flops": "60%"},
        x,
        {
            "data_loader": calib,
            "score_loader": score,
            "metric": metric,
            "callbacks": [events.append],
        }
        | config,
    )
    return state, events


def test_skip_negligible_implies_wider_widths() -> None:
    state, events = _known_search()  # the default rule
    entries = [e for e in events if isinstance(e, MapEntry)]
    a = [(e.choice, e.skipped, e.drop) for e in entries if e.hparam == A]
    # scored from the narrowest up; 8 loses nothing, so 12 is implied (drop 0, not 0.01)
    assert a == [(4, False, pytest.approx(0.30)), (8, False, 0.0), (12, True, 0.0)]
    b = [(e.choice, e.skipped) for e in entries if e.hparam == B]
    assert b == [(4, False), (8, False), (12, False)]
    assert state["sensitivity_map"][A][12] == 0.0
    finished = next(e for e in events if isinstance(e, MapFinished))
    assert (finished.entries, finished.n_scored) == (6, 5)


def test_skip_floor_implies_narrower_widths() -> None:
    state, events = _known_search(skip="floor", skip_threshold=0.6)
    b = [(e.choice, e.skipped, e.drop) for e in events if isinstance(e, MapEntry) and e.hparam == B]
    # scored from the widest down; at 8 the score (0.5) is at the floor, so 4 takes its drop
    assert b == [(12, False, pytest.approx(0.02)), (8, False, 0.5), (4, True, 0.5)]
    assert state["sensitivity_map"][B][4] == 0.5


def test_skip_none_scores_every_entry() -> None:
    state, events = _known_search(skip="none")
    assert not any(e.skipped for e in events if isinstance(e, MapEntry))
    for name in (A, B):
        for c, d in state["sensitivity_map"][name].items():
            assert d == pytest.approx(DROPS[name][c])


def test_score_func_path_is_untouched() -> None:
    model, x, _, _ = _model("mlp")
    seen: list[Any] = []

    def score(m: nn.Module) -> float:
        cfg = nv.get_subnet_config(m)
        return 1.0 - DROPS[A][cfg[A]] - DROPS[B][cfg[B]]

    out = BinarySearcher().search(
        model, {"flops": "60%"}, x, {"score_func": score, "callbacks": [seen.append]}
    )
    entries = [e for e in seen if isinstance(e, MapEntry)]
    assert [e.choice for e in entries if e.hparam == A] == [12, 8, 4]  # widest first, as before
    assert not any(e.skipped for e in entries)
    assert out["sensitivity_map"][A][12] == pytest.approx(0.01)  # measured, not implied
    assert "evaluator" not in out


# -- bad configs ---------------------------------------------------------------------------------
def _f(m: nn.Module) -> float:
    return 0.0


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"score_loader": [], "metric": "accuracy", "score_func": _f}, "mutually exclusive"),
        ({"metric": "accuracy"}, r"needs config\['score_loader'\]"),
        ({"score_loader": []}, r"needs config\['metric'\]"),
        ({"score_loader": [], "metric": "top5"}, r"'top5' is not a known metric.*accuracy"),
        ({"score_loader": [], "metric": 3}, r"config\['metric'\] must be one of"),
        ({"score_loader": 5, "metric": "accuracy"}, "must be an iterable of"),
        ({"score_loader": [], "metric": "accuracy", "cache_bytes": -1}, "byte count >= 0"),
        ({"score_loader": [], "metric": "accuracy", "cache_bytes": True}, "byte count >= 0"),
        ({"score_loader": [], "metric": "accuracy", "skip": "some"}, "is not a skip rule"),
        (
            {"score_loader": [], "metric": "accuracy", "skip_threshold": float("nan")},
            "finite number",
        ),
        ({"score_loader": [], "metric": _f, "skip": "floor"}, r"needs config\['skip_threshold'\]"),
        ({"score_loader": [], "metric": "accuracy", "forward_loop": _f}, "forward_loop"),
        ({"score_func": _f, "cache_bytes": 10}, r"only apply to the evaluator form"),
    ],
)
def test_bad_configs_are_refused(config: dict[str, Any], match: str) -> None:
    model, x, _, _ = _model("mlp")
    with pytest.raises(SearchError, match=match):
        BinarySearcher().search(model, {"flops": "60%"}, x, config)


def test_score_loader_must_yield_pairs() -> None:
    model, x, calib, score = _model("mlp")
    with pytest.raises(SearchError, match=r"must yield \(inputs, targets\) batches"):
        BinarySearcher().search(
            model,
            {"flops": "60%"},
            x,
            {"score_loader": [s[0] for s in score], "metric": "accuracy"},
        )
    with pytest.raises(SearchError, match="yielded no batches"):
        BinarySearcher().search(
            model, {"flops": "60%"}, x, {"score_loader": [], "metric": "accuracy"}
        )
    del calib
