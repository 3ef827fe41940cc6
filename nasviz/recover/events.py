"""Recovery events: what a distillation did, as data.

They are :class:`~nasviz.search.events.SearchEvent` subclasses, delivered by the same
:class:`~nasviz.search.events.EventBus` to the same kind of callbacks and recorded in the same
:class:`~nasviz.search.events.SearchHistory` (so ``SearchHistory.from_records`` rebuilds them),
instead of a second event mechanism. A notebook view (``nasviz.widgets.RecoveryMonitor``) is one
such callback.

Order of events in one run: :class:`DistillStarted`, then per optimizer step a
:class:`DistillStep` and at the end of each epoch a :class:`DistillEpoch`; finally
:class:`DistillStopped` (a stop request, or an exception) or :class:`DistillFinished`. A resumed
run starts with another :class:`DistillStarted` (``resumed=True``).

Example::

    >>> ev = DistillStep(epoch=1, step=3, loss=0.5, kd=0.4, ce=0.9, feature=0.0, lr=1e-3)
    >>> ev.to_dict()["event"]
    'DistillStep'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nasviz.search.events import SearchEvent

__all__ = ["DistillEpoch", "DistillFinished", "DistillStarted", "DistillStep", "DistillStopped"]


@dataclass(frozen=True)
class DistillStarted(SearchEvent):
    """A (resumed) run begins: the plan and the reference scores.

    ``teacher_score`` is the unpruned model's score, ``initial_score`` the student's before any
    recovery step (both ``None`` without a ``score_loader``); ``step`` is the number of steps
    already done (``0`` unless ``resumed``).
    """

    epochs: int
    steps_per_epoch: int | None
    teacher_score: float | None
    initial_score: float | None
    features: list[str] = field(default_factory=list)
    step: int = 0
    resumed: bool = False


@dataclass(frozen=True)
class DistillStep(SearchEvent):
    """One optimizer step: the total loss and its terms (``ce`` is nan without labels,
    ``feature`` is 0 without feature distillation).
    """

    epoch: int
    step: int
    loss: float
    kd: float
    ce: float
    feature: float
    lr: float


@dataclass(frozen=True)
class DistillEpoch(SearchEvent):
    """An epoch ended: its mean loss and the validation score (``None`` without a loader)."""

    epoch: int
    step: int
    loss: float
    score: float | None


@dataclass(frozen=True)
class DistillStopped(SearchEvent):
    """The run stopped before the end; the student holds the weights of ``step``."""

    epoch: int
    step: int
    reason: str


@dataclass(frozen=True)
class DistillFinished(SearchEvent):
    """All epochs are done."""

    epoch: int
    step: int
    score: float | None
    seconds: float
