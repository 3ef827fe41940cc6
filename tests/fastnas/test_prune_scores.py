"""Issue #15 case 4: non-finite scores are refused; the returned subnet meets every constraint by
an exact profile, else ``prune`` raises and the model is left as it was.
"""

from __future__ import annotations

import math

import pytest
from _convnet import assert_same, convnet, score, snapshot
from torch import nn

import nasviz as nv
from nasviz.errors import ConstraintError, SearchError
from nasviz.fastnas import searcher as fastnas_searcher

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_score_is_refused_with_the_value_and_the_subnet(bad: float) -> None:
    model, x, loader = convnet()
    before = snapshot(model)

    def f(m: nn.Module) -> float:
        return bad if nv.get_subnet_config(m)["conv1.out_channels"] == 8 else score(m)

    with pytest.raises(SearchError, match=rf"returned {bad!r}.*conv1\.out_channels=8.*finite"):
        nv.prune(
            model,
            constraints={"flops": "50%"},
            dummy_input=x,
            config={"score_func": f, "data_loader": loader},
        )
    assert_same(model, before)


def test_a_result_over_a_constraint_raises_and_leaves_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A searcher whose cost estimate is wrong (here: halved) would return a subnet over the
    limit; the exact profile of the result catches it.
    """
    model, x, loader = convnet()
    before = snapshot(model)
    estimate = type(nv.search_space(model).cost_model(x)).estimate

    def halved(self: object, config: dict) -> tuple[float, float]:
        flops, params = estimate(self, config)  # type: ignore[arg-type]
        return flops / 2, params

    monkeypatch.setattr(type(nv.search_space(model).cost_model(x)), "estimate", halved)
    monkeypatch.setattr(fastnas_searcher.BinarySearcher, "_enumerated", lambda *a: [])
    with pytest.raises(
        ConstraintError, match=r"over the limit by its exact profile: flops \d+ > limit \d+"
    ):
        nv.prune(
            model,
            constraints={"flops": "50%"},
            dummy_input=x,
            config={"score_func": score, "data_loader": loader},
        )
    assert_same(model, before)


def test_a_returned_subnet_meets_the_constraints_by_its_exact_profile() -> None:
    model, x, loader = convnet()
    full = nv.profile(model, x)
    nv.prune(
        model,
        constraints={"flops": "50%", "params": "80%"},
        dummy_input=x,
        config={"score_func": score, "data_loader": loader},
    )
    exact = nv.profile(nv.export(model), x)
    assert exact.flops <= 0.5 * full.flops
    assert exact.params <= 0.8 * full.params
