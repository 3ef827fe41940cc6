"""Scoring subnets: one :class:`Scorer` protocol, two forms.

* the user's ``score_func(model) -> float`` after BatchNorm calibration
  (:class:`~nasviz.search.scoring.func.FuncScorer`);
* the evaluator form, data + metric, with its activation cache, prefix sums, batched BatchNorm
  calibration, memo and budget (:class:`~nasviz.search.scoring.evaluator.Evaluator`).

A searcher builds its scorer with :func:`make_scorer` and never asks which form it holds.
"""

from nasviz.search.scoring.base import Scorer, ScorerSpec
from nasviz.search.scoring.config import SCORING_DEFAULTS, make_scorer, validate_scoring_config
from nasviz.search.scoring.evaluator import (
    METRICS,
    Evaluator,
    EvaluatorPlan,
    EvaluatorSpec,
    SkipRule,
    accuracy,
    neg_cross_entropy,
)
from nasviz.search.scoring.func import FuncScorer, FuncSpec

__all__ = [
    "METRICS",
    "SCORING_DEFAULTS",
    "Evaluator",
    "EvaluatorPlan",
    "EvaluatorSpec",
    "FuncScorer",
    "FuncSpec",
    "Scorer",
    "ScorerSpec",
    "SkipRule",
    "accuracy",
    "make_scorer",
    "neg_cross_entropy",
    "validate_scoring_config",
]
