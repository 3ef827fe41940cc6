"""Search events and history: what a search did, as data.

The engine never prints. A searcher emits one typed event per thing it did (a sensitivity-map
entry scored, a bisection step, a growth step, the final score) to every registered callback,
and keeps them all in a :class:`SearchHistory` whose tables are pandas DataFrames. Progress bars
(``verbose=True``) and the notebook widgets are just callbacks.

Example::

    >>> seen = []
    >>> bus = EventBus()
    >>> bus.subscribe(seen.append)
    >>> bus.emit(MapEntry(hparam="conv.out_channels", choice=8, score=0.9, drop=0.05,
    ...                   flops=1.0e6, params=1.0e4, index=0, total=4))
    >>> type(seen[0]).__name__
    'MapEntry'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import pandas as pd

__all__ = [
    "BisectionStep",
    "CandidateScored",
    "EventBus",
    "FinalScore",
    "GrowStep",
    "MapEntry",
    "MapFinished",
    "MapStarted",
    "SearchEvent",
    "SearchFinished",
    "SearchHistory",
    "SearchStarted",
]


@dataclass(frozen=True)
class SearchEvent:
    """Base of every event."""

    def to_dict(self) -> dict[str, Any]:
        """The event as plain data: ``{"event": class name, **fields}`` (what checkpoints store)."""
        return {"event": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class SearchStarted(SearchEvent):
    """The search begins: the full model's cost and the constraint limits."""

    full_flops: float
    full_params: float
    limits: dict[str, float]
    hparams: dict[str, list[int]]


@dataclass(frozen=True)
class MapStarted(SearchEvent):
    """The map is about to be computed: ``total`` entries, ``done`` of them from a checkpoint."""

    original_score: float
    total: int
    done: int


@dataclass(frozen=True)
class MapEntry(SearchEvent):
    """One sensitivity-map entry: the score with only ``hparam`` reduced to ``choice``."""

    hparam: str
    choice: int
    score: float
    drop: float
    flops: float
    params: float
    index: int
    total: int
    skipped: bool = False


@dataclass(frozen=True)
class MapFinished(SearchEvent):
    """The map is complete (``n_scored`` of its entries were actually evaluated)."""

    entries: int
    n_scored: int
    seconds: float


@dataclass(frozen=True)
class BisectionStep(SearchEvent):
    """One bisection step over the tolerated score drop ``[lo, hi]`` at ``mid``."""

    step: int
    lo: float
    hi: float
    mid: float
    flops: float
    params: float
    feasible: bool
    config: dict[str, int] = field(default_factory=dict)
    latency: float | None = None  # predicted seconds, when a latency constraint is given


@dataclass(frozen=True)
class GrowStep(SearchEvent):
    """After bisection: one group widened because the budget allowed it."""

    hparam: str
    old: int
    new: int
    predicted_drop: float
    flops: float
    params: float


@dataclass(frozen=True)
class CandidateScored(SearchEvent):
    """A candidate subnet near the budget, scored with the real ``score_func``."""

    rank: int
    score: float
    predicted_drop: float
    flops: float
    params: float
    config: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FinalScore(SearchEvent):
    """The chosen subnet, scored with the real ``score_func`` (after BN re-calibration)."""

    score: float
    original_score: float
    flops: float
    params: float
    config: dict[str, int] = field(default_factory=dict)
    latency: float | None = None  # measured seconds, when a latency constraint is given


@dataclass(frozen=True)
class SearchFinished(SearchEvent):
    """The search is over."""

    best_config: dict[str, int]
    best_score: float
    seconds: float


Callback = Callable[[SearchEvent], None]


class EventBus:
    """Delivers events to subscribers in the order they were emitted."""

    def __init__(self) -> None:
        self._subscribers: list[Callback] = []

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Register ``callback``; returns a function that unsubscribes it."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: SearchEvent) -> None:
        """Call every subscriber with ``event``, in subscription order (a callback may unsubscribe
        during the call).
        """
        for cb in list(self._subscribers):
            cb(event)


class SearchHistory:
    """Every event of a search, with table views for people and widgets.

    Example (``state`` is the state dict a search returned, or its checkpoint's)::

        >>> history = SearchHistory.from_records(state["history"])
        >>> history
        SearchHistory(6 map entries, 12 bisection steps)
        >>> history.sensitivity_table()[["hparam", "choice", "drop"]].head(2)
                     hparam  choice  drop
        0  fc1.out_features      12  0.01
        1  fc1.out_features       8  0.05
    """

    def __init__(self, events: list[SearchEvent] | None = None) -> None:
        self.events: list[SearchEvent] = list(events or [])

    def __call__(self, event: SearchEvent) -> None:
        """Record ``event`` (a history is itself a callback)."""
        self.events.append(event)

    def _table(self, kind: type[SearchEvent]) -> pd.DataFrame:
        rows = [asdict(e) for e in self.events if isinstance(e, kind)]
        cols = [f.name for f in dataclasses.fields(kind)]
        return cast(pd.DataFrame, pd.DataFrame(rows, columns=cols))

    def sensitivity_table(self) -> pd.DataFrame:
        """One row per map entry: hparam, choice, score, drop, flops, params."""
        return self._table(MapEntry)

    def bisection_table(self) -> pd.DataFrame:
        """One row per bisection step: lo, hi, mid, candidate flops/params, feasible."""
        return self._table(BisectionStep)

    def grow_table(self) -> pd.DataFrame:
        """One row per growth step: hparam, old and new width, predicted drop, flops, params."""
        return self._table(GrowStep)

    def candidate_table(self) -> pd.DataFrame:
        """The candidates scored for real at the end, with predicted drop and real score."""
        return self._table(CandidateScored)

    def to_records(self) -> list[dict[str, Any]]:
        """Plain dicts (for checkpoints: only primitives)."""
        return [e.to_dict() for e in self.events]

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> SearchHistory:
        """A history from :meth:`to_records` output (e.g. a checkpoint's ``"history"``); records of
        unknown event types are skipped.
        """
        kinds = {k.__name__: k for k in _all_event_types()}
        events: list[SearchEvent] = []
        for rec in records:
            rec = dict(rec)
            kind = kinds.get(rec.pop("event", ""))
            if kind is not None:
                events.append(kind(**rec))
        return cls(events)

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        n_map = sum(isinstance(e, MapEntry) for e in self.events)
        n_bis = sum(isinstance(e, BisectionStep) for e in self.events)
        return f"SearchHistory({n_map} map entries, {n_bis} bisection steps)"


def _all_event_types() -> list[type[SearchEvent]]:
    """Every SearchEvent subclass defined anywhere (e.g. the evaluator's ``EvaluatorPlan``)."""
    out: list[type[SearchEvent]] = []
    todo = list(SearchEvent.__subclasses__())
    while todo:
        k = todo.pop()
        out.append(k)
        todo.extend(k.__subclasses__())
    return out
