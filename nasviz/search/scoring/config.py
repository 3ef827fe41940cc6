"""The scoring keys of a search config, their validation, and the one place a form is chosen.

``score_func`` (with ``data_loader``/``forward_loop``/``max_iter_data_loader`` for BatchNorm
calibration; ``max_iter_data_loader`` defaults to 50 batches, as in the FastNAS reference, for
both forms; ``None`` draws the whole loader once) selects
:class:`~nasviz.search.scoring.func.FuncScorer`; ``score_loader`` + ``metric`` (with
``cache_bytes``, ``skip``, ``skip_threshold``) select the evaluator form
(:class:`~nasviz.search.scoring.evaluator.Evaluator`). :func:`make_scorer` is the only code that
looks at which form a config uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from nasviz.errors import SearchError
from nasviz.search.events import SearchEvent
from nasviz.search.scoring._evalconfig import EVALUATOR_DEFAULTS, validate_evaluator_config
from nasviz.search.scoring.base import Scorer
from nasviz.search.scoring.evaluator import Evaluator
from nasviz.search.scoring.func import DEFAULT_MAX_ITER_DATA_LOADER, FuncScorer

__all__ = ["SCORING_DEFAULTS", "make_scorer", "validate_scoring_config"]

#: the scoring keys of a search config and their defaults
SCORING_DEFAULTS: dict[str, Any] = {
    "data_loader": None,
    "score_func": None,
    "forward_loop": None,
    "max_iter_data_loader": DEFAULT_MAX_ITER_DATA_LOADER,
    **EVALUATOR_DEFAULTS,
}


def validate_scoring_config(given: dict[str, Any], merged: dict[str, Any]) -> None:
    """Check the scoring keys of a search config (``given``: as passed; ``merged``: with the
    defaults); raises :class:`~nasviz.errors.SearchError` naming the key and the fix.
    """
    if not validate_evaluator_config(given, merged) and not callable(merged["score_func"]):
        msg = (
            "config['score_func'] must be a callable model -> float (higher is better), got "
            f"{merged['score_func']!r}; or give config['score_loader'] and config['metric'] "
            "(the evaluator form, see nasviz.search.scoring.evaluator)"
        )
        raise SearchError(msg)
    fl, dl = merged["forward_loop"], merged["data_loader"]
    if fl is not None and not callable(fl):
        msg = f"config['forward_loop'] must be callable model -> None, got {fl!r}"
        raise SearchError(msg)
    if dl is not None and not isinstance(dl, Iterable):
        msg = f"config['data_loader'] must be iterable, got {type(dl).__name__}"
        raise SearchError(msg)
    n = merged["max_iter_data_loader"]
    if n is not None and (not isinstance(n, int) or n < 1):
        msg = f"config['max_iter_data_loader'] must be a positive int, got {n!r}"
        raise SearchError(msg)


def make_scorer(
    model: nn.Module, config: dict[str, Any], emit: Callable[[SearchEvent], None]
) -> Scorer:
    """The scorer a validated search config asks for (``emit`` receives its events)."""
    if config["score_loader"] is not None:
        return Evaluator(model, config, emit)
    return FuncScorer.from_config(model, config)
