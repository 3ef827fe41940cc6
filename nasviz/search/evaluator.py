"""Moved to :mod:`nasviz.search.scoring.evaluator`; this path keeps working for old imports."""

from nasviz.search.scoring.evaluator import (
    DEFAULT_CACHE_BYTES,
    EVALUATOR_DEFAULTS,
    METRICS,
    SKIP_RULES,
    Evaluator,
    EvaluatorPlan,
    SkipRule,
    accuracy,
    neg_cross_entropy,
    validate_evaluator_config,
)

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "EVALUATOR_DEFAULTS",
    "METRICS",
    "SKIP_RULES",
    "Evaluator",
    "EvaluatorPlan",
    "SkipRule",
    "accuracy",
    "neg_cross_entropy",
    "validate_evaluator_config",
]
