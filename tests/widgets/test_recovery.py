"""RecoveryMonitor without a browser: events in, FigureWidget.data out; Stop/Resume drive the
engine.
"""

from __future__ import annotations

import pytest
import torch

import nasviz as nv
from nasviz.models import DigitsCNN
from nasviz.recover import Distiller, DistillStep
from nasviz.widgets import RecoveryMonitor

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))
        for _ in range(n)
    ]


def _pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    teacher = DigitsCNN(width=8)
    torch.manual_seed(1)
    return DigitsCNN(width=8), teacher


def test_replay_draws_loss_score_and_reference_lines() -> None:
    student, teacher = _pair()
    data = _data()
    result = nv.distill(student, teacher, data, epochs=2, score_loader=data, metric="accuracy")
    m = RecoveryMonitor().replay(result.events)
    loss = m.fig.data[m.trace_index("student", "loss")]
    score = m.fig.data[m.trace_index("student", "score")]
    assert loss.y == tuple(result.history["loss"]) and loss.x == tuple(range(1, 9))
    assert score.x == (0.0, 4.0, 8.0)
    assert score.y == (result.initial_score, *result.epochs["score"])
    unpruned, pruned = m.fig.data[0], m.fig.data[1]
    assert unpruned.name == "unpruned" and unpruned.y == (result.teacher_score,) * 2
    assert pruned.name == "pruned, before recovery" and pruned.y == (result.initial_score,) * 2
    assert unpruned.x == (0.0, 8.0)
    assert "done, 8 steps" in m.status.value


def test_two_labelled_runs_side_by_side() -> None:
    data = _data(3)
    s1, t = _pair()
    s2, _ = _pair()
    m = RecoveryMonitor()
    nv.distill(s1, t, data, epochs=1, alpha=0.0, callbacks=[m.track("fine-tune")])
    nv.distill(s2, t, data, epochs=1, callbacks=[m.track("distill")])
    names = [trace.name for trace in m.fig.data]
    assert names[2:] == ["fine-tune loss", "fine-tune score", "distill loss", "distill score"]
    assert len(m.fig.data[m.trace_index("fine-tune", "loss")].y) == 3
    assert m.fig.data[2].y != m.fig.data[4].y


def test_stop_and_resume_buttons_drive_the_distiller() -> None:
    student, teacher = _pair()
    d = Distiller(student, teacher, _data(4), epochs=2)
    m = RecoveryMonitor(d)
    assert not m.resume_button.disabled and m.stop_button.disabled
    # press Stop from inside the run at step 3 (what a user's click does between steps)
    d.bus.subscribe(lambda e: m.stop_button.click() if isinstance(e, DistillStep) and e.step == 3
                    else None)  # fmt: skip
    m.resume_button.click()
    assert m.thread is not None
    m.thread.join(60)
    assert d.step == 3 and not d.done
    assert m.result is not None and not m.result.finished
    assert "stopped at step 3" in m.status.value
    assert not m.resume_button.disabled and m.stop_button.disabled
    assert len(m.fig.data[m.trace_index("student", "loss")].y) == 3
    m.resume_button.click()  # resume from the stopped state
    m.thread.join(60)
    assert d.done and d.step == 8 and m.result is not None and m.result.finished
    assert m.fig.data[m.trace_index("student", "loss")].x == tuple(float(i) for i in range(1, 9))
    assert m.resume_button.disabled  # nothing left to run


def test_start_without_a_distiller_is_refused() -> None:
    with pytest.raises(nv.NasvizError, match="no distiller"):
        RecoveryMonitor().start()
