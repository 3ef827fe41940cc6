"""The ``score_func`` form: BatchNorm calibration on the user's data, then ``score_func(model)``.

``config["score_func"](model) -> float`` (higher is better) is called on the active subnet, in
eval mode under ``torch.no_grad()``, after its BatchNorm statistics were re-estimated.

**Calibration on ``data_loader``** (the form users of Model Optimizer write): the first
``max_iter_data_loader`` batches (default 50, as in the FastNAS reference; ``None``: the whole
loader) are drawn once and kept, and calibration is nasviz's own loop over them - so it is cached
exactly as in the evaluator form (:mod:`nasviz.search.scoring.evaluator`, same machinery:
:mod:`._cached`, :mod:`._subgraph`, :mod:`._calib`): the full calibration keeps, per hparam, the
train-mode activations that feed the layers the hparam changes, and a subnet that differs from the
full one in cached hparams re-estimates only the BatchNorm statistics downstream of its change,
from those activations (upstream statistics are those of the full calibration, which a full
re-calibration on the same batches gives them again); the statistics equal a full
re-calibration's up to floating-point rounding. The score itself is opaque: ``score_func`` runs the
whole calibrated model. A subnet already scored (a final candidate that is also a map entry) is
not scored again: its score and statistics are remembered. Everything cached stays within
:data:`~nasviz.search.scoring._evalconfig.DEFAULT_CACHE_BYTES` (1 GiB); what does not fit, or a
model fx cannot trace, is calibrated by the whole model on the kept batches.

**Calibration by ``forward_loop``** (an opaque ``forward_loop(model)``): every scored subnet is
re-calibrated by the whole loop; nothing is cached.

**Which subnets are scored.** Every sensitivity-map entry is scored (``skip_rule`` is ``None``:
an opaque score has no floor or threshold nasviz could know). Of the final candidates, one whose
*predicted* score (the full model's score minus the sum of its map drops) is not above the best
*real* score found so far is not scored (:meth:`~nasviz.search.scoring.Scorer.worth_scoring`,
the same rule in both forms).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from typing_extensions import override

from nasviz.hparam import Hparam
from nasviz.patch import ForwardLoop, prep_for_eval
from nasviz.search.events import SearchEvent
from nasviz.search.scoring._cached import CachedEvaluation
from nasviz.search.scoring._evalconfig import DEFAULT_CACHE_BYTES, Batches
from nasviz.search.scoring.base import Scorer, ScorerSpec

__all__ = ["DEFAULT_MAX_ITER_DATA_LOADER", "FuncScorer", "FuncSpec"]

#: calibration batches drawn from ``data_loader`` by default (the FastNAS reference's default)
DEFAULT_MAX_ITER_DATA_LOADER = 50


@dataclass
class FuncSpec(ScorerSpec):
    """The ``score_func`` form as a picklable recipe (the function and the calibration data)."""

    score_func: Callable[[nn.Module], Any]
    forward_loop: ForwardLoop | None
    data_loader: Iterable[Any] | None = None
    max_iter_data_loader: int | None = DEFAULT_MAX_ITER_DATA_LOADER
    cache_bytes: int = DEFAULT_CACHE_BYTES

    @override
    def build(self, model: nn.Module, emit: Callable[[SearchEvent], None]) -> Scorer:
        return FuncScorer(
            model,
            self.score_func,
            self.forward_loop,
            data_loader=self.data_loader,
            max_iter_data_loader=self.max_iter_data_loader,
            cache_bytes=self.cache_bytes,
        )

    @override
    def parts(self) -> dict[str, Any]:
        return {
            "config['score_func']": self.score_func,
            "config['forward_loop']": self.forward_loop,
            "config['data_loader']": self.data_loader,
        }

    @override
    def data_roots(self) -> list[Any]:
        return [self.score_func, self.forward_loop, self.data_loader]


class FuncScorer(CachedEvaluation, Scorer):
    """Scores with the user's ``score_func`` (see the module docstring).

    Example::

        >>> scorer = FuncScorer(model, f, None, data_loader=dl, max_iter_data_loader=8)
        >>> scorer.prepare(members, hparams)       # the full model's score; fills the cache
        0.95
        >>> nv.select(model, {"fc1.out_features": 8})
        >>> scorer.checked(scorer.score_active)    # BatchNorm re-calibrated downstream of fc1 only
        0.93
    """

    label = "score_func"

    def __init__(
        self,
        model: nn.Module,
        score_func: Callable[[nn.Module], Any],
        forward_loop: ForwardLoop | None,
        *,
        data_loader: Iterable[Any] | None = None,
        max_iter_data_loader: int | None = DEFAULT_MAX_ITER_DATA_LOADER,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.model = model
        self.score_func = score_func
        self._user_loop = forward_loop
        self._calib_loader = data_loader if forward_loop is None else None
        self._limit = max_iter_data_loader
        self.budget = cache_bytes
        self.data = Batches(self._calib_loader, max_iter_data_loader, None, cache_bytes)
        self._init_cache_state()

    @classmethod
    def from_config(cls, model: nn.Module, config: dict[str, Any]) -> FuncScorer:
        """From a sanitized search config (``score_func``, and ``forward_loop`` or
        ``data_loader`` with ``max_iter_data_loader``).
        """
        return cls(
            model,
            config["score_func"],
            config["forward_loop"],
            data_loader=config["data_loader"],
            max_iter_data_loader=config["max_iter_data_loader"],
        )

    @property
    def cached(self) -> bool:
        """Whether calibration runs on kept batches (and may use the activation cache)."""
        return self._calib_loader is not None

    @property
    @override
    def forward_loop(self) -> ForwardLoop | None:
        return self._user_loop if self._calib_loader is None else self._calib_loop()

    def prepare(self, members: dict[str, list[str]], hparams: dict[str, Hparam]) -> float | None:
        """With a ``data_loader``: build the cache at the full subnet and return its score;
        otherwise nothing is prepared (``None``).
        """
        if not self.cached:
            return None
        return self.checked(lambda: self._prepare_cache(members, hparams), "the full model")

    @override
    def score_active(self) -> Any:
        if not self.cached:
            prep_for_eval(self.model, self._user_loop)
            return self._score_model()
        return CachedEvaluation.score_active(self)

    def _score_model(self) -> Any:
        """``score_func`` on the calibrated model (in eval mode, without gradients)."""
        self.model.eval()
        with torch.no_grad():
            return self.score_func(self.model)

    @override
    def finish_sweep(self) -> None:
        if self.cached:
            CachedEvaluation.finish_sweep(self)

    @override
    def restore_calibration(self, last_scored: bool) -> None:
        if self.cached:
            CachedEvaluation.restore_calibration(self, last_scored)
        elif not last_scored:
            prep_for_eval(self.model, self._user_loop)

    @override
    def release(self) -> None:
        if self.cached:
            CachedEvaluation.release(self)

    def state_entries(self) -> dict[str, Any]:
        """What the calibration cache did, under ``"score_func"`` (primitives)."""
        return {
            "score_func": {
                "max_iter_data_loader": self._limit if self.cached else None,
                "calibration_batches": len(self.data.calib or []),
                "cached": list(self._cached),
                "uncached": dict(self._uncached),
                "reason": self._reason,
                "cache_bytes": self.stats["cache_bytes"],
                "cached_scores": self.stats["cached_scores"],
                "full_scores": self.stats["full_scores"],
                "remembered_scores": self._memo.hits,
                "skipped_candidates": self.skipped_candidates,
            }
        }

    @override
    def spec(self) -> FuncSpec:
        return FuncSpec(
            self.score_func,
            self._user_loop,
            self._calib_loader,
            self._limit,
            self.budget,
        )
