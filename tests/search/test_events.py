"""Search events are frozen data; a history records them and replays from plain records."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nasviz.search.events import (
    BisectionStep,
    EventBus,
    MapEntry,
    MapStarted,
    SearchEvent,
    SearchHistory,
)
from nasviz.search.scoring import EvaluatorPlan


def _entry(i: int, drop: float = 0.1) -> MapEntry:
    return MapEntry(hparam=f"h{i % 3}", choice=4 * (i + 1), score=1.0 - drop, drop=drop,
                    flops=100.0 * i, params=10.0 * i, index=i, total=5)  # fmt: skip


def test_events_are_frozen() -> None:
    e = _entry(0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.drop = 0.5  # type: ignore[misc]
    assert e.to_dict()["event"] == "MapEntry"


def test_bus_delivers_in_order_and_unsubscribes() -> None:
    bus, seen, other = EventBus(), [], []
    stop = bus.subscribe(seen.append)
    bus.subscribe(other.append)
    events = [_entry(i) for i in range(3)]
    for e in events[:2]:
        bus.emit(e)
    stop()
    bus.emit(events[2])
    assert seen == events[:2]
    assert other == events


def test_history_replays_from_records_including_subclasses_outside_events() -> None:
    hist = SearchHistory()
    hist(MapStarted(original_score=0.9, total=2, done=0))
    hist(_entry(0, 0.2))
    hist(BisectionStep(step=0, lo=0.0, hi=0.2, mid=0.1, flops=1.0, params=2.0, feasible=True,
                       config={"h0": 4}))  # fmt: skip
    hist(EvaluatorPlan(cached=["h0"], uncached={}, reason=None, cache_bytes=10, budget=20))
    again = SearchHistory.from_records(hist.to_records())
    assert again.events == hist.events
    assert repr(again) == "SearchHistory(1 map entries, 1 bisection steps)"
    assert list(again.sensitivity_table()["drop"]) == [0.2]
    assert list(again.bisection_table()["feasible"]) == [True]


def test_unknown_record_kinds_are_skipped() -> None:
    records = [{"event": "NoSuchEvent", "x": 1}, _entry(1).to_dict()]
    assert SearchHistory.from_records(records).events == [_entry(1)]


@given(st.lists(st.floats(min_value=-1, max_value=1, allow_nan=False), max_size=20))
def test_any_history_round_trips(drops: list[float]) -> None:
    hist = SearchHistory([_entry(i, d) for i, d in enumerate(drops)])
    again = SearchHistory.from_records(hist.to_records())
    assert again.events == hist.events
    assert all(isinstance(e, SearchEvent) for e in again.events)
    assert len(again) == len(drops)
