"""iterative_prune: prune -> distil -> prune deeper, each step within its FLOPs budget."""

from __future__ import annotations

import pytest
import torch

import nasviz as nv
from nasviz.datasets import digits_loaders, evaluate_accuracy, train_classifier
from nasviz.demo import demo_config
from nasviz.errors import NasvizError
from nasviz.models import DigitsCNN
from nasviz.recover import DistillStarted, iterative_prune
from nasviz.search.events import SearchEvent, SearchStarted

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def test_two_steps_each_within_budget_and_recovered() -> None:
    torch.manual_seed(0)
    loaders = digits_loaders(batch_size=64, seed=0)
    model = DigitsCNN(width=16)
    train_classifier(model, loaders.train, epochs=2, lr=1e-2)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = next(iter(loaders.val))[0][:2]
    seen: list[SearchEvent] = []
    out = iterative_prune(
        model, [0.7, 0.45], dummy_input=x, data_loader=loaders.train, epochs=1,
        mode=[("fastnas", demo_config(4))],
        prune_config={"data_loader": loaders.train, "max_iter_data_loader": 2,
                      "score_loader": loaders.val, "metric": "accuracy"},
        score_loader=loaders.val, metric="accuracy", lr=3e-3, callbacks=[seen.append],
    )  # fmt: skip
    table = out.table
    assert table["target"].tolist() == [0.7, 0.45]
    assert (table["flops_kept"] <= table["target"] + 1e-9).all()
    assert table["flops_kept"].iloc[1] < table["flops_kept"].iloc[0]
    assert (table["score"] >= table["pruned_score"]).all()  # every distillation helped
    assert out.full_flops == nv.profile(model, x).flops
    assert not any("Dynamic" in type(m).__name__ for m in out.model.modules())
    assert abs(evaluate_accuracy(out.model, loaders.val) - table["score"].iloc[-1]) < 1e-6
    assert sum(isinstance(e, SearchStarted) for e in seen) == 2
    assert sum(isinstance(e, DistillStarted) for e in seen) == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


@pytest.mark.parametrize("steps", [[], [0.5, 0.6], [1.5], [0]])
def test_steps_must_decrease_in_the_unit_interval(steps: list[float]) -> None:
    with pytest.raises(NasvizError, match="decreasing fractions"):
        iterative_prune(DigitsCNN(), steps, dummy_input=torch.rand(1, 1, 8, 8),
                        data_loader=[], prune_config={})  # fmt: skip
