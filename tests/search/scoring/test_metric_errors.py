"""Issue #15 item 8: a metric that raises is never swallowed by the evaluator form: the error
propagates (chained) naming the metric, and the cache is not switched off with a wrong reason.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nasviz as nv
from nasviz.errors import SearchError
from nasviz.fastnas import BinarySearcher
from nasviz.search.evaluator import EvaluatorPlan
from nasviz.testing import searchable_mlp

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class FlakyMetric:
    """Negative cross-entropy; raises ``ValueError`` at its ``at``-th call."""

    __name__ = "flaky_metric"

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        self.calls += 1
        if self.calls == self.at:
            raise ValueError("labels out of range")
        return -float(F.cross_entropy(outputs, targets))


def _data() -> tuple[list, list]:
    torch.manual_seed(1)
    calib = [torch.randn(4, 8) for _ in range(2)]
    score = [(torch.randn(4, 8), torch.randint(0, 4, (4,))) for _ in range(2)]
    return calib, score


@pytest.mark.parametrize("at", [1, 2, 5])
def test_a_raising_metric_propagates_named_and_chained(at: int) -> None:
    model, x = searchable_mlp()
    calib, score = _data()
    events: list = []
    with pytest.raises(
        SearchError, match=r"config\['metric'\] \(flaky_metric\) raised ValueError"
    ) as info:
        BinarySearcher().search(
            model,
            {"flops": "60%"},
            x,
            {
                "data_loader": calib,
                "score_loader": score,
                "metric": FlakyMetric(at),
                "callbacks": [events.append],
            },
        )
    chain = []
    e: BaseException | None = info.value
    while e is not None:
        chain.append(e)
        e = e.__cause__
    assert any(isinstance(c, ValueError) and "labels out of range" in str(c) for c in chain[1:])
    plans = [e for e in events if isinstance(e, EvaluatorPlan)]
    assert all("does not reproduce" not in str(p.reason) for p in plans)


def test_a_working_metric_still_uses_the_cache() -> None:
    model, x = searchable_mlp()
    calib, score = _data()
    state = BinarySearcher().search(
        model,
        {"flops": "60%"},
        x,
        {"data_loader": calib, "score_loader": score, "metric": FlakyMetric(-1)},
    )
    assert state["evaluator"]["cached"]
    assert nv.get_subnet_config(model) == state["best"]["config"]
