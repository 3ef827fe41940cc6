"""Dict batches (Hugging Face style) reach the model as keyword arguments in every engine loop.

A known-answer model records how each call passed its inputs; BN calibration, the score_func
and evaluator scorers, nv.prune, distillation and the grabbers are each fed dict batches and
must call ``model(**batch)``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz._batch import batch_size, batch_target, call_model, model_input, to_device
from nasviz.patch import calibration_loop, prep_for_eval

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {"nn.Linear": {"feature_divisor": 4}, "nn.BatchNorm1d": {"feature_divisor": 4}}


class KwargsNet(nn.Module):
    """``forward(x, mask=None, labels=None)``; ``calls`` records which of ``mask`` and
    ``labels`` each call received (a dict batch passed positionally would be ``x`` and fail).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 32)
        self.bn = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, 3)
        self.calls: list[tuple[str, ...]] = []

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits of ``x`` (times ``mask``); records how it was called."""
        if not isinstance(x, torch.fx.Proxy):
            given = (("mask", mask), ("labels", labels))
            self.calls.append(tuple(k for k, v in given if v is not None))
        h = x if mask is None else x * mask
        return self.fc2(torch.relu(self.bn(self.fc1(h))))


def _dict_batches(n: int = 3, b: int = 16) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {
            "x": torch.randn(b, 8, generator=g),
            "mask": torch.ones(b, 8),
            "labels": torch.randint(0, 3, (b,), generator=g),
        }
        for _ in range(n)
    ]


def test_the_helpers_read_every_batch_form() -> None:
    x, y = torch.ones(2, 3), torch.zeros(2)
    d = {"input_ids": x, "labels": y}
    assert model_input(x) is x and batch_target(x) is None
    assert model_input((x, y)) is x and batch_target((x, y)) is y
    assert model_input([x]) is x and batch_target([x]) is None
    assert model_input(d) is d and batch_target(d) is y
    assert model_input((d, y)) is d and batch_target((d, y)) is y
    seen: list[Any] = []

    def f(*a: Any, **k: Any) -> None:
        seen.append((a, sorted(k)))

    call_model(f, d)
    call_model(f, x)
    assert seen == [((), ["input_ids", "labels"]), ((x,), [])]
    moved = to_device({"a": (x, [y]), "b": 3}, torch.device("cpu"))
    assert moved["a"][0] is x and moved["b"] == 3 and isinstance(moved["a"][1], list)
    assert batch_size({"input_ids": torch.ones(5, 2)}) == 5
    assert batch_size(({"a": torch.ones(4)}, y)) == 4
    assert batch_size("text") == 1


@given(b=st.integers(1, 6), keys=st.lists(st.sampled_from("abcde"), min_size=1, unique=True))
def test_a_mapping_is_always_passed_as_keywords(b: int, keys: list[str]) -> None:
    batch = {k: torch.zeros(b) for k in keys}
    got: dict[str, Any] = {}
    call_model(lambda **k: got.update(k), model_input(batch))
    assert sorted(got) == sorted(keys)
    assert batch_size(batch) == b


def test_bn_calibration_calls_the_model_with_keywords() -> None:
    torch.manual_seed(0)
    model = KwargsNet()
    loop = calibration_loop(_dict_batches(), max_batches=2)
    assert loop is not None
    mean = model.bn.running_mean
    assert mean is not None
    before = mean.clone()
    prep_for_eval(model, loop)
    assert model.calls == [("mask", "labels")] * 2
    assert not torch.equal(mean, before)  # the statistics were recomputed


def test_prune_with_a_dict_data_loader_calls_model_with_keywords() -> None:
    torch.manual_seed(0)
    model = KwargsNet()
    batches = _dict_batches()
    dummy = {"x": batches[0]["x"][:4], "mask": batches[0]["mask"][:4]}
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=dummy)
    model.calls.clear()

    def score(m: nn.Module) -> float:
        with torch.no_grad():
            out = call_model(m, model_input(batches[0]))
        return float((out.argmax(-1) == batches[0]["labels"]).float().mean())

    pruned, _ = nv.prune(
        model,
        mode="fastnas",
        constraints={"flops": "70%"},
        dummy_input=dummy,
        config={"data_loader": batches, "score_func": score, "max_iter_data_loader": 2},
    )
    # the loader's batches as keywords (with labels); the dummy_input's calls have no labels
    assert ("mask", "labels") in model.calls, "the calibration never ran the model"
    assert set(model.calls) <= {("mask", "labels"), ("mask",)}, set(model.calls)
    assert nv.profile(pruned, dummy).flops <= 0.7 * nv.profile(KwargsNet(), dummy).flops + 1


def test_the_evaluator_form_reads_labels_of_dict_score_batches() -> None:
    torch.manual_seed(0)
    model = KwargsNet()
    batches = _dict_batches()
    dummy = {"x": batches[0]["x"][:4]}
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=dummy)
    model.calls.clear()
    seen: list[torch.Tensor] = []

    def metric(out: torch.Tensor, target: torch.Tensor) -> float:
        seen.append(target)
        return float((out.argmax(-1) == target).float().mean())

    nv.prune(
        model,
        mode="fastnas",
        constraints={"flops": "80%"},
        dummy_input=dummy,
        config={"data_loader": batches, "score_loader": batches, "metric": metric},
    )
    assert ("mask", "labels") in model.calls
    assert set(model.calls) <= {("mask", "labels"), ()}, set(model.calls)
    labels = torch.cat([b["labels"] for b in batches])
    assert seen and all(torch.equal(t, labels) for t in seen)  # targets: each batch's "labels"


def test_distill_and_grabbers_take_dict_batches() -> None:
    torch.manual_seed(0)
    teacher, student = KwargsNet(), KwargsNet()
    result = nv.distill(student, teacher, _dict_batches(), epochs=1)
    assert result.model is student
    assert student.calls and all(c == ("mask", "labels") for c in student.calls)
    assert all(c == ("mask", "labels") for c in teacher.calls)
    grab = nv.ActivationMapGrabber(teacher, ["fc1"])
    batch = _dict_batches(1)[0]
    out, acts = grab(**batch)
    assert out.shape == (16, 3) and acts["fc1"].shape == (16, 32)
