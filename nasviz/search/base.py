"""Searchers: the loop that scores subnets of a searchable model.

``BaseSearcher.search(model, constraints, dummy_input, config)`` validates the config (keys
``data_loader``, ``score_func``, ``forward_loop``, ``checkpoint``, ``verbose``,
``max_iter_data_loader``, ``callbacks``, and the evaluator form's ``score_loader``, ``metric``,
``cache_bytes``, ``skip``, ``skip_threshold`` - see :mod:`nasviz.search.scoring`; unknown keys
are refused), builds its :class:`~nasviz.search.scoring.Scorer` (which owns the BatchNorm
calibration loop), then runs ``before_search`` -> ``run_search`` -> ``after_search`` and returns
the searcher's state dict.
``IterativeSearcher`` runs ``before_step`` -> ``sample`` -> ``after_step`` until ``early_stop`` or
``iterations``.

Every subnet is scored after its BatchNorm statistics were re-estimated on the calibration data
(:func:`nasviz.patch.prep_for_eval`). With ``max_iter_data_loader`` the first batches are drawn
once and reused for every subnet, so a score is exactly the score its exported model has on the
same data; without it each re-calibration is a full pass over the loader (a reshuffling loader
then gives slightly different statistics each time).
State is checkpointed atomically after every unit of work (:mod:`nasviz.search.checkpoint`); a
search started again with the same checkpoint resumes where it stopped, if the checkpoint's
fingerprint (architecture, weights, search space, settings: :meth:`BaseSearcher.fingerprint`)
matches. The checkpoint path is locked while the search runs.
"""

from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from typing_extensions import override

from nasviz.errors import SearchError
from nasviz.patch import ForwardLoop
from nasviz.search.checkpoint import (
    SearchCheckpoint,
    checked_field,
    like,
    module_fingerprint,
    read_checkpoint,
    write_checkpoint,
)
from nasviz.search.constraints import Constraints
from nasviz.search.events import EventBus, SearchEvent, SearchHistory
from nasviz.search.progress import TqdmProgress
from nasviz.search.scoring import SCORING_DEFAULTS, Scorer, make_scorer, validate_scoring_config

__all__ = ["BaseSearcher", "IterativeSearcher", "ScoreFunc"]

ScoreFunc = Callable[[nn.Module], float]


class BaseSearcher(ABC):
    """Base of all searchers (see the module docstring for the life cycle)."""

    model: nn.Module
    config: dict[str, Any]
    constraints: Constraints
    dummy_input: Any
    scorer: Scorer

    def __init__(self) -> None:
        self.bus = EventBus()
        self.history = SearchHistory()
        self.bus.subscribe(self.history)
        self._started = 0.0

    # -- config ---------------------------------------------------------------------------------
    @property
    def default_search_config(self) -> dict[str, Any]:
        """The config keys this searcher takes, with their defaults: ``checkpoint``, ``verbose``,
        ``callbacks`` and the scoring keys (:data:`~nasviz.search.scoring.SCORING_DEFAULTS`).
        """
        return {"checkpoint": None, "verbose": False, "callbacks": [], **SCORING_DEFAULTS}

    @property
    @abstractmethod
    def default_state_dict(self) -> dict[str, Any]:
        """The searcher's state at the start of a search (everything a checkpoint holds)."""

    def sanitize_search_config(self, config: dict[str, Any] | None) -> dict[str, Any]:
        """``config`` merged over :attr:`default_search_config`; an unknown key or a bad scoring
        value raises :class:`~nasviz.errors.SearchError`.
        """
        config = dict(config or {})
        defaults = self.default_search_config
        unknown = sorted(set(config) - set(defaults))
        if unknown:
            msg = (
                f"unknown search config key(s) {unknown}; {type(self).__name__} takes "
                f"{sorted(defaults)}"
            )
            raise SearchError(msg)
        merged = {**defaults, **config}
        validate_scoring_config(config, merged)
        return merged

    # -- life cycle -----------------------------------------------------------------------------
    def search(
        self,
        model: nn.Module,
        constraints: Constraints | dict[str, Any],
        dummy_input: Any = None,
        config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run the search on ``model`` (in place) and return the final state dict."""
        self.model = model
        self.config = self.sanitize_search_config(config)
        self.constraints = (
            constraints if isinstance(constraints, Constraints) else Constraints(constraints)
        )
        self.dummy_input = dummy_input
        self.scorer = make_scorer(model, self.config, self.emit)
        for cb in self.config["callbacks"]:
            self.bus.subscribe(cb)
        progress = None
        if self.config["verbose"]:
            progress = TqdmProgress()
            self.bus.subscribe(progress)
        for k, v in self.default_state_dict.items():
            setattr(self, k, copy.deepcopy(v))
        self._started = time.perf_counter()
        path = self.config["checkpoint"]
        self.checkpoint = SearchCheckpoint(path, self.fingerprint() if path is not None else {})
        try:
            self.checkpoint.open()  # locks the path; refuses a file of another search
        except BaseException:
            if progress is not None:
                progress.close()
            self.scorer.release()
            raise
        try:
            self.load_search_checkpoint()
            self.before_search()
            self.run_search()
            self.after_search()
        finally:
            if progress is not None:
                progress.close()
            self.scorer.release()
            self.checkpoint.close()
        return self.state_dict()

    def before_search(self) -> None:  # noqa: B027 - optional hook
        """Hook: runs once before the search loop."""

    @abstractmethod
    def run_search(self) -> None:
        """The search itself."""

    def after_search(self) -> None:  # noqa: B027 - optional hook
        """Hook: runs once after the search loop."""

    def emit(self, event: SearchEvent) -> None:
        """Deliver ``event`` to every subscriber of ``bus`` (the history, the ``callbacks``, the
        progress bar), in order.
        """
        self.bus.emit(event)

    # -- scoring --------------------------------------------------------------------------------
    @property
    def forward_loop(self) -> ForwardLoop | None:
        """The scorer's BatchNorm calibration loop (``None``: statistics are left as they are)."""
        return self.scorer.forward_loop

    def eval_score(self, context: str = "") -> float:
        """Re-calibrate BatchNorm on the calibration data, then score the active subnet."""
        return self.scorer.checked(self.scorer.score_active, context)

    def checked_score(self, scorer: Callable[[], Any], context: str = "") -> float:
        """``scorer()`` as a float; an error or a non-finite value raises a SearchError naming
        ``context``.
        """
        return self.scorer.checked(scorer, context)

    # -- state and checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The searcher's state: every key of ``default_state_dict``, the history, and what the
        scorer reports.
        """
        state = {k: copy.deepcopy(getattr(self, k)) for k in self.default_state_dict}
        state["history"] = self.history.to_records()
        scorer: Scorer | None = getattr(self, "scorer", None)  # None before search()
        if scorer is not None:
            state.update(scorer.state_entries())
        return state

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint of this search is computed from (see
        :mod:`nasviz.search.checkpoint`): the searcher, the model's architecture, a hash of its
        weights and buffers now (BatchNorm statistics left out when every score re-calibrates
        them first), and :meth:`fingerprint_settings`. Subclasses add their parts.
        """
        skip: list[torch.Tensor] = []
        if self.scorer.forward_loop is not None:
            for m in self.model.modules():
                if isinstance(m, _BatchNorm):
                    skip.extend(t for t in m._buffers.values() if t is not None)
        return {
            "searcher": type(self).__name__,
            **module_fingerprint(self.model, skip),
            "settings": self.fingerprint_settings(),
        }

    def fingerprint_settings(self) -> dict[str, Any]:
        """The settings scores depend on, whatever the constraints: the scoring form, the
        calibration batches, the evaluator's skip rule (primitives).
        """
        cfg = self.config

        def batches(loader: Any) -> int | None:
            try:
                return len(loader) if loader is not None else None
            except TypeError:  # an iterable without a length
                return None

        return {
            "scorer": type(self.scorer).__name__,
            "calibration": "forward_loop"
            if cfg["forward_loop"] is not None
            else ("data_loader" if cfg["data_loader"] is not None else None),
            "data_loader_batches": batches(cfg["data_loader"]),
            "max_iter_data_loader": cfg["max_iter_data_loader"],
            "score_loader_batches": batches(cfg.get("score_loader")),
            "skip": cfg.get("skip") if cfg.get("score_loader") is not None else None,
            "skip_threshold": cfg.get("skip_threshold")
            if cfg.get("score_loader") is not None
            else None,
        }

    def read_search_checkpoint(self) -> dict[str, Any] | None:
        """The state in the checkpoint file if there is one and it was computed from the same
        fingerprint; ``None`` without one; a SearchError says what differs.
        """
        ckpt: SearchCheckpoint | None = getattr(self, "checkpoint", None)
        if ckpt is None:
            return read_checkpoint(self.config["checkpoint"])
        return ckpt.read()

    def load_search_checkpoint(self) -> bool:
        """Load the checkpoint named in the config, if it exists; returns whether it did."""
        state = self.read_search_checkpoint()
        if state is None:
            return False
        self._load_state(state)
        return True

    def _load_state(self, state: dict[str, Any]) -> None:
        """Set every key of ``default_state_dict`` found in ``state``; a value of another kind
        than the default's (a list for a dict, a string for a number) raises a SearchError
        naming the file and the field.
        """
        path = self.config["checkpoint"]
        for k, default in self.default_state_dict.items():
            if k in state:
                setattr(self, k, checked_field(state, k, path, like(default)))

    def save_search_checkpoint(self) -> None:
        """Write the state to the checkpoint path atomically (temp file, then rename)."""
        path = self.config["checkpoint"]
        if path is None:
            return
        ckpt: SearchCheckpoint | None = getattr(self, "checkpoint", None)
        if ckpt is None:
            write_checkpoint(self.state_dict(), path)
        else:
            ckpt.write(self.state_dict())

    def elapsed(self) -> float:
        """Wall-clock seconds since :meth:`search` started (``time.perf_counter``)."""
        return time.perf_counter() - self._started


class IterativeSearcher(BaseSearcher, ABC):
    """A searcher that repeats ``before_step`` -> ``sample`` -> ``after_step``."""

    @property
    @override
    def default_search_config(self) -> dict[str, Any]:
        return {**super().default_search_config, "iterations": 30}

    @property
    @override
    def default_state_dict(self) -> dict[str, Any]:
        return {"iter_num": 0, "best": {"config": {}, "score": None}}

    iter_num: int
    best: dict[str, Any]

    @override
    def run_search(self) -> None:
        while self.iter_num < self.config["iterations"] and not self.early_stop():
            self.before_step()
            self.sample()
            self.after_step()
            self.iter_num += 1
            self.save_search_checkpoint()

    def before_step(self) -> None:
        """Hook: before each step."""

    @abstractmethod
    def sample(self) -> dict[str, Any]:
        """Choose (and select) the next candidate subnet; return its config."""

    def after_step(self) -> None:
        """Hook: after each step."""

    def early_stop(self) -> bool:
        """Whether to stop before ``iterations`` are done."""
        return False
