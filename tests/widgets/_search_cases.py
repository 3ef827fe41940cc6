"""Search cases with known answers for the search-view tests (heatmap, bisection animation).

``synthetic_events()``: a hand-written event sequence (no model, instant). ``run_mlp_search()``:
one real BinarySearcher run on a converted 3-layer MLP whose score is additive in known drops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nasviz.fastnas import BinarySearcher
from nasviz.search.events import (
    BisectionStep,
    CandidateScored,
    FinalScore,
    GrowStep,
    MapEntry,
    MapFinished,
    MapStarted,
    SearchEvent,
    SearchFinished,
    SearchStarted,
)
from nasviz.testing import FC1, FC2, KNOWN_DROPS, known_score, searchable_mlp

A, B = FC1, FC2
DROPS = KNOWN_DROPS


def run_mlp_search(
    callbacks: list[Any], checkpoint: Path | None = None
) -> tuple[dict[str, Any], list[SearchEvent]]:
    """Prune the MLP to 60% FLOPs with ``callbacks`` attached; returns (state, events)."""
    model, x = searchable_mlp()
    events: list[SearchEvent] = []
    state = BinarySearcher().search(
        model,
        {"flops": "60%"},
        dummy_input=x,
        config={
            "score_func": known_score,
            "callbacks": [*callbacks, events.append],
            "checkpoint": checkpoint,
        },
    )
    return state, events


# -- a synthetic search: full 1000 FLOPs, limit 600; groups "a" (48 wide) and "b" (16 wide) --------
STARTED = SearchStarted(
    full_flops=1000.0,
    full_params=100.0,
    limits={"flops": 600.0},
    hparams={"a": [12, 24, 36, 48], "b": [8, 16]},
)
ENTRIES = [
    MapEntry(
        hparam="a", choice=36, score=0.89, drop=0.01, flops=900.0, params=90.0, index=0, total=4
    ),
    MapEntry(
        hparam="a", choice=24, score=0.85, drop=0.05, flops=800.0, params=80.0, index=1, total=4
    ),
    MapEntry(
        hparam="a", choice=12, score=0.60, drop=0.30, flops=700.0, params=70.0, index=2, total=4
    ),
    MapEntry(
        hparam="b",
        choice=8,
        score=0.88,
        drop=0.02,
        flops=950.0,
        params=95.0,
        index=3,
        total=4,
        skipped=True,
    ),
]
STEPS = [
    BisectionStep(
        step=0,
        lo=0.0,
        hi=0.3,
        mid=0.15,
        flops=400.0,
        params=40.0,
        feasible=True,
        config={"a": 24, "b": 8},
    ),
    BisectionStep(
        step=1,
        lo=0.0,
        hi=0.15,
        mid=0.075,
        flops=700.0,
        params=70.0,
        feasible=False,
        config={"a": 36, "b": 8},
    ),
    BisectionStep(
        step=2,
        lo=0.075,
        hi=0.15,
        mid=0.1125,
        flops=550.0,
        params=55.0,
        feasible=True,
        config={"a": 24, "b": 16},
    ),
]
GROW = GrowStep(hparam="a", old=24, new=36, predicted_drop=0.01, flops=590.0, params=59.0)
CANDIDATES = [
    CandidateScored(
        rank=0, score=0.88, predicted_drop=0.01, flops=590.0, params=59.0, config={"a": 36, "b": 16}
    ),
    CandidateScored(
        rank=1, score=0.86, predicted_drop=0.03, flops=580.0, params=58.0, config={"a": 24, "b": 16}
    ),
]
FINAL = FinalScore(
    score=0.88, original_score=0.9, flops=590.0, params=59.0, config={"a": 36, "b": 16}
)


def synthetic_events() -> list[SearchEvent]:
    return [
        STARTED,
        MapStarted(original_score=0.9, total=4, done=1),
        *ENTRIES,
        MapFinished(entries=4, n_scored=3, seconds=1.5),
        *STEPS,
        GROW,
        *CANDIDATES,
        FINAL,
        SearchFinished(best_config={"a": 36, "b": 16}, best_score=0.88, seconds=2.0),
    ]
