"""Searching a converted model: constraints, events and history, searchers.

The generic search machinery; FastNAS's ``BinarySearcher`` lives in :mod:`nasviz.fastnas.searcher`
(``nv.BinarySearcher``), since this package never imports an algorithm. ``Constraints`` parses
``{"flops": "60%", "params": 2e5}``; every step is an event (:mod:`nasviz.search.events`).
"""

from nasviz.search.base import BaseSearcher, IterativeSearcher
from nasviz.search.constraints import CONSTRAINT_KEYS, Constraints, Limit
from nasviz.search.evaluator import Evaluator, EvaluatorPlan
from nasviz.search.events import (
    BisectionStep,
    EventBus,
    FinalScore,
    GrowStep,
    MapEntry,
    MapFinished,
    MapStarted,
    SearchEvent,
    SearchFinished,
    SearchHistory,
    SearchStarted,
)
from nasviz.search.executors import DaskExecutor, LocalExecutor, local_cluster, resolve_executor

__all__ = [
    "CONSTRAINT_KEYS",
    "BaseSearcher",
    "BisectionStep",
    "Constraints",
    "DaskExecutor",
    "Evaluator",
    "EvaluatorPlan",
    "EventBus",
    "FinalScore",
    "GrowStep",
    "IterativeSearcher",
    "Limit",
    "LocalExecutor",
    "MapEntry",
    "MapFinished",
    "MapStarted",
    "SearchEvent",
    "SearchFinished",
    "SearchHistory",
    "SearchStarted",
    "local_cluster",
    "resolve_executor",
]
