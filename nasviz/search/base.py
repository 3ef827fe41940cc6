"""Searchers: the loop that scores subnets of a searchable model.

``BaseSearcher.search(model, constraints, dummy_input, config)`` validates the config (keys
``data_loader``, ``score_func``, ``forward_loop``, ``checkpoint``, ``verbose``,
``max_iter_data_loader``, ``callbacks``, and the evaluator form's ``score_loader``, ``metric``,
``cache_bytes``, ``skip``, ``skip_threshold`` - see :mod:`nasviz.search.evaluator`; unknown keys
are refused), builds the forward loop used for BatchNorm re-calibration, then runs
``before_search`` -> ``run_search`` -> ``after_search`` and returns the searcher's state dict.
``IterativeSearcher`` runs ``before_step`` -> ``sample`` -> ``after_step`` until ``early_stop`` or
``iterations``.

Every subnet is scored after its BatchNorm statistics were re-estimated on the calibration data
(:func:`nasviz.patch.prep_for_eval`). With ``max_iter_data_loader`` the first batches are drawn
once and reused for every subnet, so a score is exactly the score its exported model has on the
same data; without it each re-calibration is a full pass over the loader (a reshuffling loader
then gives slightly different statistics each time).
State is checkpointed atomically after every unit of work; a search started again with the same
checkpoint resumes where it stopped.
"""

from __future__ import annotations

import copy
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasviz._utils import atomic_torch_save, device_of
from nasviz.errors import SearchError
from nasviz.search.constraints import Constraints
from nasviz.search.evaluator import EVALUATOR_DEFAULTS, Evaluator, validate_evaluator_config
from nasviz.search.events import EventBus, SearchEvent, SearchHistory

__all__ = ["BaseSearcher", "IterativeSearcher", "ScoreFunc"]

ScoreFunc = Callable[[nn.Module], float]
ForwardLoop = Callable[[nn.Module], None]

_CONFIG_KEYS = (
    "data_loader",
    "score_func",
    "forward_loop",
    "checkpoint",
    "verbose",
    "max_iter_data_loader",
    "callbacks",
)


class BaseSearcher(ABC):
    """Base of all searchers (see the module docstring for the life cycle)."""

    model: nn.Module
    config: dict[str, Any]
    constraints: Constraints
    dummy_input: Any

    def __init__(self) -> None:
        self.evaluator: Evaluator | None = None
        self.bus = EventBus()
        self.history = SearchHistory()
        self.bus.subscribe(self.history)
        self._started = 0.0

    # -- config ---------------------------------------------------------------------------------
    @property
    def default_search_config(self) -> dict[str, Any]:
        return {
            "data_loader": None,
            "score_func": None,
            "forward_loop": None,
            "checkpoint": None,
            "verbose": False,
            "max_iter_data_loader": None,
            "callbacks": [],
            **EVALUATOR_DEFAULTS,
        }

    @property
    @abstractmethod
    def default_state_dict(self) -> dict[str, Any]:
        """The searcher's state at the start of a search (everything a checkpoint holds)."""

    def sanitize_search_config(self, config: dict[str, Any] | None) -> dict[str, Any]:
        config = dict(config or {})
        defaults = self.default_search_config
        unknown = sorted(set(config) - set(defaults))
        if unknown:
            raise SearchError(
                f"unknown search config key(s) {unknown}; {type(self).__name__} takes "
                f"{sorted(defaults)}"
            )
        merged = {**defaults, **config}
        if validate_evaluator_config(config, merged):
            pass
        elif not callable(merged["score_func"]):
            raise SearchError(
                "config['score_func'] must be a callable model -> float (higher is better), got "
                f"{merged['score_func']!r}; or give config['score_loader'] and config['metric'] "
                "(the evaluator form, see nasviz.search.evaluator)"
            )
        fl, dl = merged["forward_loop"], merged["data_loader"]
        if fl is not None and not callable(fl):
            raise SearchError(f"config['forward_loop'] must be callable model -> None, got {fl!r}")
        if dl is not None and not isinstance(dl, Iterable):
            raise SearchError(f"config['data_loader'] must be iterable, got {type(dl).__name__}")
        n = merged["max_iter_data_loader"]
        if n is not None and (not isinstance(n, int) or n < 1):
            raise SearchError(f"config['max_iter_data_loader'] must be a positive int, got {n!r}")
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
        self.evaluator = None
        if self.config["score_loader"] is not None:
            self.evaluator = Evaluator(model, self.config, self.emit)
        self.forward_loop = self.construct_forward_loop()
        for cb in self.config["callbacks"]:
            self.bus.subscribe(cb)
        progress = None
        if self.config["verbose"]:
            from nasviz.search.progress import TqdmProgress

            progress = TqdmProgress()
            self.bus.subscribe(progress)
        for k, v in self.default_state_dict.items():
            setattr(self, k, copy.deepcopy(v))
        self._started = time.perf_counter()
        try:
            self.load_search_checkpoint()
            self.before_search()
            self.run_search()
            self.after_search()
        finally:
            if progress is not None:
                progress.close()
            if self.evaluator is not None:
                self.evaluator.release()
        return self.state_dict()

    def before_search(self) -> None:  # noqa: B027 - optional hook
        """Hook: runs once before the search loop."""

    @abstractmethod
    def run_search(self) -> None:
        """The search itself."""

    def after_search(self) -> None:  # noqa: B027 - optional hook
        """Hook: runs once after the search loop."""

    def emit(self, event: SearchEvent) -> None:
        self.bus.emit(event)

    # -- scoring --------------------------------------------------------------------------------
    def construct_forward_loop(self) -> ForwardLoop | None:
        """The calibration loop: ``forward_loop`` if given, else one built on ``data_loader``."""
        if self.evaluator is not None:
            return self.evaluator.forward_loop if self.config["data_loader"] is not None else None
        if self.config["forward_loop"] is not None:
            loop: ForwardLoop = self.config["forward_loop"]
            return loop
        loader = self.config["data_loader"]
        if loader is None:
            return None
        limit = self.config["max_iter_data_loader"]
        # With a batch limit, the first `limit` batches are drawn once and reused, so every
        # subnet is calibrated on the same data (a shuffled loader would otherwise add noise to
        # every score and make the map depend on the order subnets were scored in).
        fixed: list[Any] = []

        def inputs() -> Iterable[Any]:
            if limit is None:
                for batch in loader:
                    yield batch[0] if isinstance(batch, (tuple, list)) else batch
                return
            if not fixed:
                for i, batch in enumerate(loader):
                    if i >= limit:
                        break
                    fixed.append(batch[0] if isinstance(batch, (tuple, list)) else batch)
            yield from fixed

        def forward_loop(model: nn.Module) -> None:
            device = device_of(model)
            for x in inputs():
                model(x.to(device) if isinstance(x, torch.Tensor) else x)

        return forward_loop

    def eval_score(self, context: str = "") -> float:
        """Re-calibrate BatchNorm on the calibration data, then score the active subnet."""
        if self.evaluator is not None:
            return self.checked_score(self.evaluator.score_active, context)
        from nasviz.patch import prep_for_eval

        prep_for_eval(self.model, self.forward_loop)
        with torch.no_grad():
            return self.checked_score(lambda: self.config["score_func"](self.model), context)

    def checked_score(self, scorer: Callable[[], Any], context: str = "") -> float:
        """``scorer()`` as a float; an error or NaN raises a SearchError naming ``context``."""
        what = "score_func" if self.evaluator is None else "scoring with config['metric']"
        try:
            score = scorer()
        except Exception as e:
            if isinstance(e, SearchError) and self.evaluator is not None:
                raise
            where = f" while scoring {context}" if context else ""
            raise SearchError(f"{what} raised {type(e).__name__}{where}: {e}") from e
        try:
            value = float(score)
        except (TypeError, ValueError) as e:
            raise SearchError(f"{what} must return a number, got {score!r}") from e
        if math.isnan(value):
            raise SearchError(f"{what} returned NaN{f' for {context}' if context else ''}")
        return value

    # -- state and checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The searcher's state: every key of ``default_state_dict`` plus the history."""
        state = {k: copy.deepcopy(getattr(self, k)) for k in self.default_state_dict}
        state["history"] = self.history.to_records()
        if self.evaluator is not None:
            state["evaluator"] = self.evaluator.report()
        return state

    def load_search_checkpoint(self) -> bool:
        """Load the checkpoint named in the config, if it exists; returns whether it did."""
        path = self.config["checkpoint"]
        if path is None or not Path(path).exists():
            return False
        try:
            state = torch.load(path, weights_only=True)
        except Exception as e:
            raise SearchError(f"checkpoint {str(path)!r} could not be read: {e}") from e
        self._load_state(state)
        return True

    def _load_state(self, state: dict[str, Any]) -> None:
        for k in self.default_state_dict:
            if k in state:
                setattr(self, k, state[k])

    def save_search_checkpoint(self) -> None:
        """Write the state to the checkpoint path atomically (temp file, then rename)."""
        path = self.config["checkpoint"]
        if path is None:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(self.state_dict(), path)

    def elapsed(self) -> float:
        return time.perf_counter() - self._started


class IterativeSearcher(BaseSearcher, ABC):
    """A searcher that repeats ``before_step`` -> ``sample`` -> ``after_step``."""

    @property
    def default_search_config(self) -> dict[str, Any]:
        return {**super().default_search_config, "iterations": 30}

    @property
    def default_state_dict(self) -> dict[str, Any]:
        return {"iter_num": 0, "best": {"config": {}, "score": None}}

    iter_num: int
    best: dict[str, Any]

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
