"""Iterative pruning: prune -> distil -> prune deeper, as one call.

Model Optimizer's guide advises steps of about 30% beyond 50% pruning, each followed by
recovery. :func:`iterative_prune` does that loop on a copy of ``model`` (which is not modified):

1. convert the current model (the unpruned one, then each recovered student) and keep a copy
   of it at full width as the teacher of this step;
2. prune it to ``steps[i]`` of the **original** model's FLOPs (an absolute budget);
3. export the subnet and distil it from that teacher (``nv.distill``; with ``features`` the
   kept-channel map is exact because teacher and student share one conversion);
4. the recovered student is the next step's model.

Each step's teacher is the previous step's recovered model (a "teacher assistant" chain: the gap
between teacher and student stays one step wide, and feature distillation stays exact).

**The sensitivity map** is a function of the weights. It is reused where that is valid: the
``checkpoint`` in ``prune_config`` is used for the first step only (the weights it was computed
on); every later step runs on distilled weights, so its map is computed afresh (a later
checkpoint fingerprint will make this check automatic).

Example::

    >>> out = iterative_prune(model, [0.6, 0.4, 0.3], dummy_input=x, data_loader=loaders.train,
    ...                       prune_config={"data_loader": dl, "score_loader": loaders.val,
    ...                                     "metric": "accuracy"},
    ...                       epochs=2, score_loader=loaders.val, metric="accuracy")
    >>> out.table[["target", "flops_kept", "pruned_score", "score"]]
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import pandas as pd
from torch import nn

from nasviz.cost import profile
from nasviz.errors import NasvizError
from nasviz.fastnas.prune import prune
from nasviz.recover.distill import distill
from nasviz.recover.result import DistillResult
from nasviz.search.events import SearchEvent
from nasviz.space import convert, export, search_space

__all__ = ["IterativeResult", "IterativeStep", "iterative_prune"]


@dataclass(frozen=True)
class IterativeStep:
    """One prune -> distil step: the budget, the cost reached, the scores before and after."""

    target: float
    flops: float
    flops_kept: float
    pruned_score: float | None
    score: float | None
    search_state: dict[str, Any]
    result: DistillResult


@dataclass(frozen=True)
class IterativeResult:
    """The final recovered plain model and every step (``table``: one row per step)."""

    model: nn.Module
    full_flops: float
    steps: tuple[IterativeStep, ...]

    @property
    def table(self) -> pd.DataFrame:
        """One row per step: ``target, flops, flops_kept, pruned_score, score``."""
        cols = ["target", "flops", "flops_kept", "pruned_score", "score"]
        return cast(
            pd.DataFrame,
            pd.DataFrame([{c: getattr(s, c) for c in cols} for s in self.steps], columns=cols),
        )


def _check_steps(steps: Sequence[float]) -> list[float]:
    vals = list(steps) if isinstance(steps, Iterable) else []
    ok = bool(vals) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1 for v in vals
    )
    if not ok or any(b >= a for a, b in itertools.pairwise(vals)):
        msg = (
            f"iterative_prune: steps={steps!r} must be decreasing fractions of the original "
            "FLOPs in (0, 1], e.g. [0.8, 0.6, 0.45]"
        )
        raise NasvizError(msg)
    return [float(v) for v in vals]


def iterative_prune(
    model: nn.Module,
    steps: Sequence[float],
    *,
    dummy_input: Any,
    data_loader: Iterable[Any],
    prune_config: Mapping[str, Any],
    epochs: int = 1,
    mode: Any = "fastnas",
    features: Sequence[str] | Literal["auto"] | None = "auto",
    callbacks: Sequence[Callable[[SearchEvent], None]] | None = None,
    **distill_kwargs: Any,
) -> IterativeResult:
    """Prune a copy of ``model`` to each FLOPs fraction in ``steps`` in turn, distilling after
    each (see the module docstring); returns an :class:`IterativeResult`.

    ``prune_config`` is ``nv.prune``'s ``config`` (scoring data and metric); ``mode`` its mode
    (e.g. ``[("fastnas", FastNASConfig(...))]``). ``distill_kwargs`` go to ``nv.distill``
    (``lr``, ``score_loader``, ``metric``, ...); ``callbacks`` receive both the search and the
    distillation events.
    """
    targets = _check_steps(steps)
    if not isinstance(model, nn.Module):
        msg = f"iterative_prune: model must be an nn.Module, got {type(model)}"
        raise NasvizError(msg)
    try:
        search_space(model)
    except NasvizError:
        pass
    else:
        msg = (
            "iterative_prune: model is already converted; pass the plain (unconverted or "
            "exported) model: every step converts its own copy"
        )
        raise NasvizError(msg)
    if not isinstance(prune_config, Mapping):
        msg = "iterative_prune: prune_config must be nv.prune's config dict"
        raise NasvizError(msg)
    full_flops = profile(model, dummy_input).flops
    current = copy.deepcopy(model)
    done: list[IterativeStep] = []
    for i, target in enumerate(targets):
        searchable = convert(copy.deepcopy(current), mode=mode, dummy_input=dummy_input)
        teacher = copy.deepcopy(searchable)
        config = dict(prune_config)
        if i > 0:
            config.pop("checkpoint", None)  # computed on other weights; recompute
        config["callbacks"] = [*config.get("callbacks", []), *(callbacks or [])]
        searchable, state = prune(
            searchable,
            mode=mode,
            constraints={"flops": target * full_flops},
            dummy_input=dummy_input,
            config=config,
        )
        student = export(searchable)
        result = distill(
            student,
            teacher,
            data_loader,
            epochs=epochs,
            features=features,
            callbacks=callbacks,
            **distill_kwargs,
        )
        flops = profile(student, dummy_input).flops
        step = IterativeStep(
            target, flops, flops / full_flops, result.initial_score, result.score, state, result
        )
        done.append(step)
        current = student
    return IterativeResult(current, full_flops, tuple(done))
