"""The sensitivity map's bookkeeping: which entries to score, and when a result is final.

Private to :mod:`nasviz.search.executors` (which re-exports the public names). A
:class:`SweepRun` is one sweep's executor (in process or on a cluster); a :class:`MapSchedule`
turns its results, which may arrive in any order, into final map entries in each group's order,
applying the evaluator form's skip rules and cancelling the entries they imply.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Entry", "FinalEntry", "MapSchedule", "SweepRun"]

#: one map entry: (hparam name, reduced width)
Entry = tuple[str, int]


class SweepRun(ABC):
    """One sweep's executor: ``start``, then ``results`` as they complete, then ``close``."""

    @abstractmethod
    def start(self, entries: list[Entry], need_original: bool) -> float | None:
        """Begin scoring ``entries``; returns the full model's score (``None`` if not needed)."""

    @abstractmethod
    def results(self) -> Iterator[tuple[str, int, float]]:
        """``(hparam, choice, score)`` of each entry as it completes."""

    @abstractmethod
    def cancel(self, entries: list[Entry]) -> None:
        """Do not score these entries (a skip rule implied them)."""

    @abstractmethod
    def close(self) -> None:
        """Release everything the run holds (also after an error)."""


@dataclass(frozen=True)
class FinalEntry:
    """A map entry whose drop is final: scored now, or ``skipped`` (checkpoint or skip rule)."""

    hparam: str
    choice: int
    drop: float
    skipped: bool


class MapSchedule:
    """Which entries to score, and when a result is final.

    ``order``: each hparam's reduced widths in scoring order; ``known``: the map so far (updated
    in place); ``rule``: the evaluator form's skip rule, or ``None``. Results may arrive in any
    order; an entry is final once every entry before it in its group is (that is when a skip rule
    can imply the rest, which are then cancelled). Example::

        >>> sched = MapSchedule({"a": [4, 8]}, {}, None)
        >>> sched.original_score = 1.0
        >>> [(e.choice, e.drop) for e in sched.run(LocalExecutor().open(searcher, hps))]
    """

    def __init__(self, order: dict[str, list[int]], known: dict[str, dict[int, float]],
                 rule: Any) -> None:  # fmt: skip
        self.order = order
        self.known = known  # a group gets its dict with its first entry
        self.rule = rule
        self.original_score: float | None = None
        self._pos = dict.fromkeys(order, 0)
        self._implied: dict[str, float | None] = dict.fromkeys(order)
        self._scores: dict[Entry, float] = {}

    def _implies(self, drop: float) -> float | None:
        if self.rule is None or self.original_score is None:
            return None
        implied: float | None = self.rule.implied(self.original_score - drop, drop)
        return implied

    def todo(self) -> list[Entry]:
        """The entries to score: not known, and not implied by a known entry before them."""
        todo: list[Entry] = []
        for name, widths in self.order.items():
            for choice in widths:
                if choice not in self.known.get(name, {}):
                    todo.append((name, choice))
                elif self._implies(self.known[name][choice]) is not None:
                    break  # the rest of this group is implied
        return todo

    def _ready(self) -> tuple[list[FinalEntry], list[Entry]]:
        final: list[FinalEntry] = []
        cancel: list[Entry] = []
        for name, widths in self.order.items():
            known = self.known.get(name, {})
            while self._pos[name] < len(widths):
                choice = widths[self._pos[name]]
                implied = self._implied[name]
                if choice in known:
                    drop, skipped = known[choice], True
                elif implied is not None:
                    drop = self.known.setdefault(name, known)[choice] = implied
                    skipped = True
                elif (name, choice) in self._scores and self.original_score is not None:
                    drop = self.original_score - self._scores.pop((name, choice))
                    self.known.setdefault(name, known)[choice] = drop
                    skipped = False
                else:
                    break
                if implied is None:
                    self._implied[name] = self._implies(drop)
                    if self._implied[name] is not None:
                        rest = widths[self._pos[name] + 1 :]
                        cancel.extend((name, c) for c in rest if c not in known)
                self._pos[name] += 1
                final.append(FinalEntry(name, choice, drop, skipped))
        return final, cancel

    def run(self, run: SweepRun) -> Iterator[FinalEntry]:
        """Every entry of the map as it becomes final (known ones first)."""
        final, _ = self._ready()
        yield from final
        for name, choice, score in run.results():
            self._scores[(name, choice)] = score
            final, cancel = self._ready()
            if cancel:
                run.cancel(cancel)
            yield from final
