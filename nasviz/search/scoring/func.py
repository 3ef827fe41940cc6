"""The ``score_func`` form: BatchNorm calibration on the user's data, then ``score_func(model)``.

``config["score_func"](model) -> float`` (higher is better) is called on the active subnet after
its BatchNorm statistics were re-estimated (:func:`nasviz.patch.prep_for_eval`) by
``config["forward_loop"]`` or, without one, by the loop over ``config["data_loader"]``
(:func:`nasviz.patch.calibration_loop`, ``max_iter_data_loader`` batches drawn once and reused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasviz.hparam import Hparam
from nasviz.patch import ForwardLoop, calibration_loop, prep_for_eval
from nasviz.search.events import SearchEvent
from nasviz.search.scoring.base import Scorer, ScorerSpec

__all__ = ["FuncScorer", "FuncSpec"]


@dataclass
class FuncSpec(ScorerSpec):
    """The ``score_func`` form as a picklable recipe (the function and the calibration loop)."""

    score_func: Callable[[nn.Module], Any]
    forward_loop: ForwardLoop | None

    def build(self, model: nn.Module, emit: Callable[[SearchEvent], None]) -> Scorer:
        return FuncScorer(model, self.score_func, self.forward_loop)

    def parts(self) -> dict[str, Any]:
        return {
            "config['score_func']": self.score_func,
            "config['forward_loop'] (or the loop over config['data_loader'])": self.forward_loop,
        }

    def data_roots(self) -> list[Any]:
        return [self.score_func, self.forward_loop]


class FuncScorer(Scorer):
    """Scores with the user's ``score_func`` (see the module docstring). Example::

    >>> scorer = FuncScorer.from_config(model, {"score_func": f, "data_loader": dl,
    ...                                          "forward_loop": None,
    ...                                          "max_iter_data_loader": 8})
    >>> scorer.checked(scorer.score_active)
    0.93
    """

    label = "score_func"

    def __init__(
        self,
        model: nn.Module,
        score_func: Callable[[nn.Module], Any],
        forward_loop: ForwardLoop | None,
    ) -> None:
        self.model = model
        self.score_func = score_func
        self._forward_loop = forward_loop

    @classmethod
    def from_config(cls, model: nn.Module, config: dict[str, Any]) -> FuncScorer:
        """From a sanitized search config (``score_func``, ``forward_loop`` or ``data_loader``
        with ``max_iter_data_loader``)."""
        loop = config["forward_loop"]
        if loop is None:
            loop = calibration_loop(config["data_loader"], config["max_iter_data_loader"])
        return cls(model, config["score_func"], loop)

    @property
    def forward_loop(self) -> ForwardLoop | None:
        return self._forward_loop

    def prepare(self, members: dict[str, list[str]], hparams: dict[str, Hparam]) -> float | None:
        return None

    def score_active(self) -> Any:
        prep_for_eval(self.model, self._forward_loop)
        with torch.no_grad():
            return self.score_func(self.model)

    def restore_calibration(self, last_scored: bool) -> None:
        if not last_scored:
            prep_for_eval(self.model, self._forward_loop)

    def spec(self) -> FuncSpec:
        return FuncSpec(self.score_func, self._forward_loop)
