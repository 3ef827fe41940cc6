"""The one protocol a searcher scores subnets through.

A searcher never asks *how* a subnet is scored: it holds one :class:`Scorer` (built from its
search config by :func:`nasviz.search.scoring.make_scorer`) and asks it to

* :meth:`~Scorer.prepare` at the full subnet (the evaluator form builds its cache there and
  returns the full model's score; the ``score_func`` form does nothing and returns ``None``),
* :meth:`~Scorer.score_active`: score the active subnet after calibrating its BatchNorm statistics
  (the raw value; :meth:`~Scorer.checked` turns it into a float or a clear ``SearchError``),
* :meth:`~Scorer.worth_scoring`: whether a final candidate is scored for real,
* :meth:`~Scorer.finish_sweep` after the sensitivity map, :meth:`~Scorer.restore_calibration` to
  leave the chosen subnet calibrated, :meth:`~Scorer.state_entries` for the search state,
  :meth:`~Scorer.release` at the end,
* :meth:`~Scorer.spec`: a picklable recipe that rebuilds an equal scorer on a Dask worker.

Two implementations: :class:`~nasviz.search.scoring.func.FuncScorer` (the user's
``score_func(model) -> float`` after BatchNorm calibration on ``data_loader``/``forward_loop``) and
:class:`~nasviz.search.scoring.evaluator.Evaluator` (data + metric, cached).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from torch import nn

from nasviz.errors import SearchError
from nasviz.hparam import Hparam
from nasviz.patch import ForwardLoop
from nasviz.search.events import SearchEvent

__all__ = ["Scorer", "ScorerSpec"]


class ScorerSpec(ABC):
    """A picklable recipe for a :class:`Scorer` (sent to Dask workers)."""

    @abstractmethod
    def build(self, model: nn.Module, emit: Callable[[SearchEvent], None]) -> Scorer:
        """The scorer this spec describes, for ``model`` (events go to ``emit``)."""

    @abstractmethod
    def parts(self) -> dict[str, Any]:
        """The user-supplied parts by the name the user knows them by (for error messages)."""

    @abstractmethod
    def data_roots(self) -> list[Any]:
        """Where the data's random generators can be found."""


class Scorer(ABC):
    """Scores the active subnet of one model (see the module docstring).

    ``label`` names the scoring in error messages; ``passes`` are the exception types
    :meth:`checked` lets through unchanged (they already carry a complete message).
    """

    label: str = "score_func"
    passes: tuple[type[BaseException], ...] = ()
    #: final candidates :meth:`worth_scoring` turned down
    skipped_candidates: int = 0

    @property
    @abstractmethod
    def forward_loop(self) -> ForwardLoop | None:
        """The BatchNorm calibration loop (``None``: the statistics are left as they are)."""

    @abstractmethod
    def prepare(self, members: dict[str, list[str]], hparams: dict[str, Hparam]) -> float | None:
        """Called once at the full subnet before the map; returns its score if preparing
        computed it (``members``: hparam -> its member layers' qualified names).
        """

    @abstractmethod
    def score_active(self) -> Any:
        """The raw score of the active subnet, BatchNorm calibrated first."""

    def skip_rule(self) -> Any:
        """The rule for implied map entries (:class:`~nasviz.search.scoring.SkipRule`), or
        ``None``: every entry is scored.
        """
        return None

    def worth_scoring(self, predicted: float, best: float | None) -> bool:
        """Whether a final candidate whose predicted score (the original score minus its summed
        map drops) is ``predicted`` is worth scoring for real, ``best`` the best real score of
        the candidates scored so far (``None``: none yet).

        Only if its prediction beats ``best``: the map's drops are single-group drops; where
        they add up (``nasviz.testing``) a candidate predicted no better cannot win, and where
        groups interact real drops exceed predicted ones, so a skipped candidate could only win
        if interactions *helped*. Skipped candidates are counted in ``skipped_candidates``.
        """
        worth = best is None or predicted > best
        self.skipped_candidates += not worth
        return worth

    def finish_sweep(self) -> None:  # noqa: B027 - optional hook
        """The map is done: undo what scoring it left in the model (not the cache)."""

    @abstractmethod
    def restore_calibration(self, last_scored: bool) -> None:
        """Leave the active subnet with its own BatchNorm statistics (``last_scored``: it is
        the subnet scored last).
        """

    def state_entries(self) -> dict[str, Any]:
        """Entries this scorer adds to the search state (primitives)."""
        return {}

    def release(self) -> None:  # noqa: B027 - optional hook
        """Free what the scorer holds (called once the search ends, also after an error)."""

    @abstractmethod
    def spec(self) -> ScorerSpec:
        """A picklable recipe that builds an equal scorer elsewhere."""

    def checked(self, scorer: Callable[[], Any], context: str = "") -> float:
        """``scorer()`` as a float; an error or a non-finite value (NaN, +-inf) raises a
        SearchError naming ``context``.
        """
        what = self.label
        try:
            score = scorer()
        except Exception as e:
            if isinstance(e, self.passes):
                raise
            where = f" while scoring {context}" if context else ""
            msg = f"{what} raised {type(e).__name__}{where}: {e}"
            raise SearchError(msg) from e
        try:
            value = float(score)
        except (TypeError, ValueError) as e:
            msg = f"{what} must return a number, got {score!r}"
            raise SearchError(msg) from e
        if not math.isfinite(value):
            msg = (
                f"{what} returned {value!r}{f' for {context}' if context else ''}; a score must "
                "be a finite number (higher is better): check the metric on that subnet"
            )
            raise SearchError(msg)
        return value
