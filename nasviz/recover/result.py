"""The result of a distillation run, and the small helpers a step needs (batches, logits,
devices, the metric, holding Ctrl-C).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import pandas as pd
from torch import Tensor, nn

from nasviz._batch import batch_target, call_model, model_input, to_device
from nasviz.errors import NasvizError
from nasviz.recover.events import DistillEpoch, DistillStarted, DistillStep
from nasviz.search.events import SearchEvent, SearchHistory
from nasviz.search.scoring import METRICS

__all__ = [
    "DistillResult",
    "Metric",
    "call",
    "logits_of",
    "resolve_metric",
    "sigint_held",
    "split_batch",
    "to_device",
]

Metric = Callable[[Any, Any], float]
_STEP_COLUMNS = ["epoch", "step", "loss", "kd", "ce", "feature", "lr", "score"]


class DistillResult:
    """What :func:`distill` returns: the trained ``model`` (the student itself) and the record.

    * ``history``: one row per optimizer step (``epoch, step, loss, kd, ce, feature, lr``) with
      ``score`` filled on the last step of every epoch (the validation score after that epoch);
    * ``epochs``: one row per finished epoch (``epoch, step, loss, score``);
    * ``teacher_score`` / ``initial_score`` / ``score``: the unpruned model, the student before
      recovery, the student now (``None`` without a ``score_loader``);
    * ``events``: every event, as a :class:`~nasviz.search.events.SearchHistory`;
    * ``finished``: whether every epoch ran (``False`` after a stop).

    Example (a pruned student recovering from an unpruned teacher)::

        >>> result = nv.distill(student, teacher, loader, epochs=2, score_loader=val_loader,
        ...                     metric="accuracy")
        >>> result.model is student, result.finished, list(result.epochs.columns)
        (True, True, ['epoch', 'step', 'loss', 'score'])
    """

    def __init__(self, model: nn.Module, events: SearchHistory, finished: bool) -> None:
        self.model, self.events, self.finished = model, events, finished

    def _of(self, kind: type[SearchEvent]) -> list[Any]:
        return [e for e in self.events.events if isinstance(e, kind)]

    @property
    def history(self) -> pd.DataFrame:
        """One row per optimizer step: ``epoch, step, loss, kd, ce, feature, lr, score`` (``score``
        only on an epoch's last step).
        """
        scores = {e.step: e.score for e in self._of(DistillEpoch)}
        rows = [
            {**{k: getattr(e, k) for k in _STEP_COLUMNS[:-1]}, "score": scores.get(e.step)}
            for e in self._of(DistillStep)
        ]
        return cast(pd.DataFrame, pd.DataFrame(rows, columns=_STEP_COLUMNS))

    @property
    def epochs(self) -> pd.DataFrame:
        """One row per finished epoch: ``epoch, step, loss, score`` (the validation score, ``None``
        without a ``score_loader``).
        """
        rows = [(e.epoch, e.step, e.loss, e.score) for e in self._of(DistillEpoch)]
        return cast(pd.DataFrame, pd.DataFrame(rows, columns=["epoch", "step", "loss", "score"]))

    @property
    def teacher_score(self) -> float | None:
        """The unpruned teacher's validation score (``None`` without a ``score_loader``)."""
        started = self._of(DistillStarted)
        return started[0].teacher_score if started else None

    @property
    def initial_score(self) -> float | None:
        """The student's validation score before recovery (``None`` without a ``score_loader``)."""
        started = self._of(DistillStarted)
        return started[0].initial_score if started else None

    @property
    def score(self) -> float | None:
        """The student's score after its last finished epoch (before any: ``initial_score``)."""
        done = self._of(DistillEpoch)
        return done[-1].score if done else self.initial_score

    def __repr__(self) -> str:
        steps = len(self._of(DistillStep))

        def f(v: float | None) -> str:
            return "—" if v is None else f"{v:.4f}"

        state = "finished" if self.finished else "stopped"
        return (
            f"DistillResult({type(self.model).__name__}, {steps} steps, {state}; score "
            f"{f(self.initial_score)} -> {f(self.score)}, teacher {f(self.teacher_score)})"
        )


def logits_of(out: Any, who: str) -> Tensor:
    """The logits in a model output ``out``: the tensor itself, its ``"logits"`` entry or
    attribute, or a tuple's first item; otherwise a NasvizError naming ``who`` (``"student"``).
    """
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping) and isinstance(out.get("logits"), Tensor):
        return cast(Tensor, out["logits"])
    if isinstance(getattr(out, "logits", None), Tensor):
        return cast(Tensor, out.logits)
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0]
    msg = (
        f"the {who} returned {type(out).__name__}; distill needs logits (a tensor, a dict or "
        "object with 'logits', or a tuple whose first item is the logits)"
    )
    raise NasvizError(msg)


def split_batch(batch: Any) -> tuple[Any, Tensor | None]:
    """``(model input, target)`` of a loader batch (see :mod:`nasviz._batch`). A mapping's
    ``labels`` are not used as the target: a transformers model shifts or masks them itself
    (a causal LM's labels are the inputs), so a mapping batch is distilled on the teacher alone.
    """
    if isinstance(batch, Mapping):
        return batch, None
    y = batch_target(batch)
    return model_input(batch), y if isinstance(y, Tensor) else None


def call(model: nn.Module | Any, x: Any) -> Any:
    """``model(**x)`` for a mapping input, else ``model(x)``."""
    return call_model(model, x)


@contextmanager
def sigint_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block is done, then raise ``KeyboardInterrupt``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if got:
        raise KeyboardInterrupt


def resolve_metric(metric: str | Metric | None, score_loader: Any) -> Metric | None:
    """The metric function: ``None`` when neither ``score_loader`` nor ``metric`` is given, the
    :data:`~nasviz.search.scoring.METRICS` entry of a name, or the callable itself; a NasvizError
    when only one of the two is given or ``metric`` is unknown.
    """
    if score_loader is None and metric is None:
        return None
    if score_loader is None or metric is None:
        missing = "metric" if metric is None else "score_loader"
        msg = (
            f"distill: score_loader and metric go together; {missing} is missing (e.g. "
            "score_loader=loaders.val, metric='accuracy')"
        )
        raise NasvizError(msg)
    if isinstance(metric, str):
        if metric not in METRICS:
            msg = (
                f"metric={metric!r} is not a known metric; use one of {sorted(METRICS)} or a "
                "callable metric(outputs, targets) -> float"
            )
            raise NasvizError(msg)
        return METRICS[metric]
    if not callable(metric):
        msg = f"metric={metric!r} must be a name or a callable(outputs, targets)"
        raise NasvizError(msg)
    return metric
