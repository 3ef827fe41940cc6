"""In-process execution of the sensitivity map (the default executor).

See :mod:`nasviz.search.executors` for how executors fit into the sweep.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from nasviz.search.executors._remote import SeededUnits, score_subnet
from nasviz.search.executors._schedule import Entry, SweepRun

__all__ = ["LocalExecutor", "members_of", "searcher_parts"]


def searcher_parts(searcher: Any) -> tuple[dict[str, int], int, list[Any]]:
    """``(full config, seed, roots)`` of a searcher's sweep: every hparam at its original, the
    ``seed`` config value, and the config objects whose torch generators each unit resets.
    """
    cfg = searcher.config
    roots = [cfg[k] for k in ("score_func", "forward_loop", "data_loader", "score_loader")]
    return searcher._max_config(), int(cfg["seed"]), [*roots, cfg["metric"]]


def members_of(searcher: Any, hps: dict[str, Any]) -> dict[str, list[str]]:
    """``{hparam: member names}`` for ``hps``: each member layer's qualified name, or for a channel
    parameter (``how == "param"``) the parameter's qualified name.
    """
    members = {  # a channel parameter is named by its qualified name (the owner may be the root)
        g.name: [
            f"{m.module}.{m.attr}".lstrip(".") if m.how == "param" else m.module for m in g.members
        ]
        for g in searcher._space().groups
    }
    return {n: members[n] for n in hps}


# -- in process -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalExecutor:
    """Score the map in this process, one entry after the other (the default).

    Example::

        >>> BinarySearcher().search(model, {"flops": "60%"}, x,
        ...                         {"score_func": f, "executor": LocalExecutor()})["best"]
    """

    def open(self, searcher: Any, hps: dict[str, Any]) -> SweepRun:
        """A sweep of ``searcher``'s map over ``hps`` in this process (entries are scored one by one
        as ``results()`` is iterated).
        """
        return _LocalRun(searcher, hps)


class _LocalRun(SweepRun):
    def __init__(self, searcher: Any, hps: dict[str, Any]) -> None:
        self.searcher, self.hps = searcher, hps
        self.full, seed, roots = searcher_parts(searcher)
        self.units = SeededUnits(seed, roots)
        self.entries: list[Entry] = []
        self.cancelled: set[Entry] = set()

    def start(self, entries: list[Entry], need_original: bool) -> float | None:
        s, scorer = self.searcher, self.searcher.scorer
        self.entries = list(entries)
        with self.units.unit():
            s._select(self.full)
            score = scorer.prepare(members_of(s, self.hps), self.hps)
            if score is None and need_original:
                score = scorer.checked(self._scorer(None, None), "the full model")
            return cast(float | None, score)

    def _scorer(self, name: str | None, choice: int | None) -> Any:
        s = self.searcher
        subnet = self.full if name is None else {**self.full, name: int(choice or 0)}
        return lambda: score_subnet(s.model, subnet, s.scorer)

    def results(self) -> Iterator[tuple[str, int, float]]:
        for name, choice in self.entries:
            if (name, choice) in self.cancelled:
                continue
            with self.units.unit():
                score = self.searcher.scorer.checked(self._scorer(name, choice), f"{name}={choice}")
            yield name, choice, score

    def cancel(self, entries: list[Entry]) -> None:
        self.cancelled.update(entries)

    def close(self) -> None:
        self.searcher.scorer.finish_sweep()  # a cache stays for the final candidates
        self.units.restore()
