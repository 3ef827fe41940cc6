"""nv.distill: convergence, the teacher untouched, events and history, stop/resume, Ctrl-C."""

from __future__ import annotations

import copy
import os
import signal
from typing import Any

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.demo import demo_config
from nasviz.errors import NasvizError
from nasviz.models import DigitsCNN
from nasviz.recover import (
    DistillEpoch,
    Distiller,
    DistillFinished,
    DistillStarted,
    DistillStep,
    DistillStopped,
)
from nasviz.search.events import SearchEvent, SearchHistory

pytestmark = pytest.mark.usefixtures("one_thread")


def _batches(n: int = 6, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
        for _ in range(n)
    ]


def _pair(width: int = 8) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher = DigitsCNN(width=width)
    torch.manual_seed(1)
    return DigitsCNN(width=width), teacher


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_student_of_the_same_architecture_converges_to_the_teacher() -> None:
    student, teacher = _pair()
    data = _batches(8)
    x = torch.cat([b[0] for b in data])
    result = nv.distill(student, teacher, data, epochs=15, lr=1e-2, alpha=1.0, temperature=1.0)
    losses = result.history["loss"].tolist()
    assert sum(losses[-8:]) / 8 < 0.2 * sum(losses[:8]) / 8
    student.eval()
    teacher.eval()
    with torch.no_grad():
        agree = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean()
    assert float(agree) >= 0.9
    assert result.model is student


def test_teacher_is_untouched_and_its_mode_restored() -> None:
    student, teacher = _pair()
    teacher.train()
    before = _state(teacher)
    seen_modes: list[bool] = []
    nv.distill(
        student, teacher, _batches(3), epochs=1,
        callbacks=[lambda e: seen_modes.append(teacher.training)],
    )  # fmt: skip
    assert _same(before, _state(teacher))  # BN running stats included
    assert teacher.training is True
    assert not any(seen_modes[1:-1])  # eval during the steps
    assert all(p.grad is None for p in teacher.parameters())


def test_converted_teacher_runs_at_full_width_and_keeps_its_selection() -> None:
    x = torch.rand(2, 1, 8, 8)
    model = nv.convert(DigitsCNN(width=16), mode=[("fastnas", demo_config(4))], dummy_input=x)
    teacher = copy.deepcopy(model)
    nv.sample(teacher, "min")
    chosen = nv.get_subnet_config(teacher)
    before = _state(teacher)
    nv.sample(model, "min")
    student = nv.export(model)
    widths: list[int] = []
    hook = teacher.get_submodule("stem.0").register_forward_hook(
        lambda m, a, out: widths.append(out.shape[1])
    )
    nv.distill(student, teacher, _batches(2), epochs=1, features="auto")
    hook.remove()
    assert set(widths) == {16}
    assert nv.get_subnet_config(teacher) == chosen
    assert _same(before, _state(teacher))


def test_history_events_and_scores() -> None:
    student, teacher = _pair()
    data = _batches(4)
    seen: list[SearchEvent] = []
    result = nv.distill(
        student, teacher, data, epochs=2, score_loader=data[:2], metric="accuracy",
        callbacks=[seen.append],
    )  # fmt: skip
    assert isinstance(seen[0], DistillStarted) and isinstance(seen[-1], DistillFinished)
    assert sum(isinstance(e, DistillStep) for e in seen) == 8
    assert sum(isinstance(e, DistillEpoch) for e in seen) == 2
    h = result.history
    assert list(h.columns) == ["epoch", "step", "loss", "kd", "ce", "feature", "lr", "score"]
    assert h["step"].tolist() == list(range(1, 9))
    assert h["epoch"].tolist() == [1] * 4 + [2] * 4
    assert h["score"].notna().tolist() == [False, False, False, True] * 2
    assert result.teacher_score is not None and 0 <= result.teacher_score <= 1
    assert result.score == h["score"].iloc[-1]
    assert (h["loss"] == 0.9 * h["kd"] + 0.1 * h["ce"]).all() or bool(
        ((h["loss"] - (0.9 * h["kd"] + 0.1 * h["ce"])).abs() < 1e-5).all()
    )
    again = SearchHistory.from_records(result.events.to_records())
    assert [type(e) for e in again.events] == [type(e) for e in result.events.events]
    assert "finished" in repr(result)


def test_stop_then_resume_equals_an_uninterrupted_run() -> None:
    data = _batches(5)
    student, teacher = _pair()
    reference = copy.deepcopy(student)
    nv.distill(reference, copy.deepcopy(teacher), data, epochs=2)

    d = Distiller(student, teacher, data, epochs=2)
    d.bus.subscribe(lambda e: d.stop() if isinstance(e, DistillStep) and e.step == 7 else None)
    first = d.run()
    assert not first.finished and d.step == 7
    assert isinstance(first.events.events[-1], DistillStopped)
    second = d.run()  # resumes: same iterator, optimizer state kept
    assert second.finished and d.step == 10
    assert second.history["step"].tolist() == list(range(1, 11))
    assert _same(_state(reference), _state(student))


def _snapshot_at(step: int, model: nn.Module, store: dict[str, Any]) -> Any:
    def cb(event: SearchEvent) -> None:
        if isinstance(event, DistillStep) and event.step == step:
            store["state"] = _state(model)

    return cb


def test_ctrl_c_in_the_forward_pass_leaves_the_last_completed_step() -> None:
    student, teacher = _pair()
    teacher.train()
    t_before = _state(teacher)
    store: dict[str, Any] = {}
    calls = {"n": 0}

    def interrupt(module: nn.Module, args: Any, out: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # the third student forward: BN stats already updated
            raise KeyboardInterrupt

    hook = student.fc.register_forward_hook(interrupt)
    d = Distiller(student, teacher, _batches(5), epochs=1)
    d.bus.subscribe(_snapshot_at(2, student, store))
    with pytest.raises(KeyboardInterrupt):
        d.run()
    hook.remove()
    assert d.step == 2
    assert _same(store["state"], _state(student))
    assert _same(t_before, _state(teacher)) and teacher.training
    assert isinstance(d.events.events[-1], DistillStopped)
    assert "KeyboardInterrupt" in d.events.events[-1].reason
    assert d.run().finished  # resumable


def test_ctrl_c_during_the_update_is_held_until_the_step_is_complete() -> None:
    data = _batches(4)
    student, teacher = _pair()
    reference = copy.deepcopy(student)
    ref_store: dict[str, Any] = {}
    d_ref = Distiller(reference, copy.deepcopy(teacher), data, epochs=1)
    d_ref.bus.subscribe(_snapshot_at(3, reference, ref_store))
    d_ref.run()

    d = Distiller(student, teacher, data, epochs=1)
    real_step = d.optimizer.step
    count = {"n": 0}

    def step_with_sigint(*args: Any, **kwargs: Any) -> Any:
        count["n"] += 1
        if count["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the update
        return real_step(*args, **kwargs)

    d.optimizer.step = step_with_sigint  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        d.run()
    assert d.step == 3
    assert _same(ref_store["state"], _state(student))


def test_searchable_student_trains_its_subnet() -> None:
    x = torch.rand(2, 1, 8, 8)
    model = nv.convert(DigitsCNN(width=16), mode=[("fastnas", demo_config(4))], dummy_input=x)
    teacher = copy.deepcopy(model)
    nv.sample(model, "min")
    chosen = nv.get_subnet_config(model)
    before = nv.export(model).eval()
    nv.distill(model, teacher, _batches(3), epochs=1, lr=1e-2, features="auto")
    assert nv.get_subnet_config(model) == chosen
    after = nv.export(model).eval()
    with torch.no_grad():
        assert not torch.allclose(before(x), after(x))
        model.eval()
        assert torch.allclose(model(x), after(x), atol=1e-5)


def test_non_finite_loss_stops_without_updating() -> None:
    student, teacher = _pair()
    bad = [(torch.full((4, 1, 8, 8), float("nan")), torch.zeros(4, dtype=torch.long))]
    before = _state(student)
    with pytest.raises(NasvizError, match="the loss is nan at step 1"):
        nv.distill(student, teacher, bad, epochs=1)
    assert _same(before, _state(student))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs=0 must be an integer >= 1"),
        ({"epochs": 1, "score_loader": []}, "metric is missing"),
        ({"epochs": 1, "metric": "top5", "score_loader": []}, "'top5' is not a known metric"),
        ({"epochs": 1, "features": "all"}, "features='all': use 'auto'"),
        ({"epochs": 1, "features": "auto"}, "carries no nasviz record"),
        ({"epochs": 1, "lr": -1.0}, "lr=-1.0 must be a positive"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    student, teacher = _pair()
    with pytest.raises(NasvizError, match=match):
        nv.distill(student, teacher, _batches(1), **kwargs)


def test_same_or_sharing_models_are_refused() -> None:
    student, _ = _pair()
    with pytest.raises(NasvizError, match="same object"):
        nv.distill(student, student, _batches(1), epochs=1)
    twin = copy.copy(student)
    with pytest.raises(NasvizError, match=r"share .* parameter"):
        nv.distill(student, twin, _batches(1), epochs=1)
