"""Searching a converted model: constraints, events and history, searchers.

The generic search machinery; FastNAS's ``BinarySearcher`` lives in :mod:`nasviz.fastnas.searcher`
(``nv.BinarySearcher``), since this package never imports an algorithm. ``Constraints`` parses
``{"flops": "60%", "params": 2e5}``; every step is an event (:mod:`nasviz.search.events`).
Three rooms: this generic core (searchers, constraints, events, checkpoints),
:mod:`nasviz.search.scoring` (one ``Scorer``: ``score_func`` or the cached evaluator form) and
:mod:`nasviz.search.executors` (in process, Dask).
"""

from nasviz.search.base import BaseSearcher, IterativeSearcher
from nasviz.search.checkpoint import load_search_state
from nasviz.search.constraints import CONSTRAINT_KEYS, Constraints, Limit
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
from nasviz.search.scoring import Evaluator, EvaluatorPlan, FuncScorer, Scorer

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
    "FuncScorer",
    "GrowStep",
    "IterativeSearcher",
    "Limit",
    "LocalExecutor",
    "MapEntry",
    "MapFinished",
    "MapStarted",
    "Scorer",
    "SearchEvent",
    "SearchFinished",
    "SearchHistory",
    "SearchStarted",
    "load_search_state",
    "local_cluster",
    "resolve_executor",
]
