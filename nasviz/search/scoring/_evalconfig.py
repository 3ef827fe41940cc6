"""Evaluator-form config: validation, built-in metrics, skip rules, the plan event, data helpers.

Private to :mod:`.evaluator` (which documents the keys and re-exports the public
names).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasviz._batch import batch_size, batch_target, to_device
from nasviz._batch import model_input as batch_input
from nasviz.errors import SearchError
from nasviz.search.events import SearchEvent
from nasviz.search.scoring._subgraph import value_bytes

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "EVALUATOR_DEFAULTS",
    "METRICS",
    "SCORE_CHUNK",
    "SKIP_RULES",
    "Batches",
    "EvaluatorPlan",
    "Metric",
    "SkipRule",
    "accuracy",
    "batch_input",
    "batch_size",
    "batchnorms",
    "concat",
    "iterate",
    "neg_cross_entropy",
    "same_output",
    "split_pair",
    "to_device",
    "validate_evaluator_config",
]

Metric = Callable[[Any, Any], float]
DEFAULT_CACHE_BYTES = 1 << 30
#: the config keys the evaluator form reads (a Dask worker builds its own Evaluator from them)
EVALUATOR_KEYS = (
    "data_loader",
    "max_iter_data_loader",
    "score_loader",
    "metric",
    "cache_bytes",
    "skip",
    "skip_threshold",
)
SKIP_RULES = ("negligible", "floor", "none")
#: the evaluator keys of the search config and their defaults
EVALUATOR_DEFAULTS: dict[str, Any] = {
    "score_loader": None,
    "metric": None,
    "cache_bytes": DEFAULT_CACHE_BYTES,
    "skip": "negligible",
    "skip_threshold": None,
}


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy of logits ``(N, C)`` against class indices ``(N,)``."""
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2:
        msg = (
            "metric 'accuracy' needs logits of shape (N, classes) from the model, got "
            f"{type(outputs).__name__} {getattr(outputs, 'shape', '')}; pass a callable metric"
        )
        raise SearchError(msg)
    return float((outputs.argmax(dim=1) == targets).float().mean())


def neg_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Minus the mean cross-entropy of logits ``(N, C)`` against class indices (higher: better)."""
    return -float(F.cross_entropy(outputs.float(), targets))


METRICS: dict[str, Metric] = {"accuracy": accuracy, "neg_cross_entropy": neg_cross_entropy}


@dataclass(frozen=True)
class EvaluatorPlan(SearchEvent):
    """How the evaluator form computes the sensitivity map (emitted before ``MapStarted``).

    ``cached``: hparams scored from cached activations; ``uncached``: hparam -> why it is scored
    from the inputs; ``reason``: why nothing is cached (``None`` if the graph cache is used);
    ``cache_bytes``: bytes the cache holds (inputs included); ``budget``: ``config["cache_bytes"]``.
    """

    cached: list[str] = field(default_factory=list)
    uncached: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    cache_bytes: int = 0
    budget: int = 0


@dataclass(frozen=True)
class SkipRule:
    """When the rest of an hparam's map entries are implied (see the module docstring).

    Example::

        >>> rule = SkipRule("negligible", 1e-5)
        >>> rule.ascending, rule.implied(score=0.9, drop=0.0), rule.implied(0.8, 0.1)
        (True, 0.0, None)
    """

    kind: str
    threshold: float | None

    @property
    def ascending(self) -> bool:
        """Whether widths are scored narrowest first (all but ``"floor"``: narrowest first lets
        the evaluator extend the previous width's sums, see :mod:`._prefix`).
        """
        return self.kind != "floor"

    def implied(self, score: float, drop: float) -> float | None:
        """The drop implied for the remaining widths after this entry, or ``None``."""
        if self.threshold is None:
            return None
        if self.kind == "negligible" and drop < self.threshold:
            return 0.0
        if self.kind == "floor" and score <= self.threshold:
            return drop
        return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_evaluator_config(given: dict[str, Any], merged: dict[str, Any]) -> bool:
    """Check the evaluator keys; returns whether the config uses the evaluator form.

    ``given`` is the config as passed, ``merged`` the config with defaults. Raises
    :class:`~nasviz.errors.SearchError` naming the key and the fix.
    """
    form = [k for k in ("score_loader", "metric") if given.get(k) is not None]
    if not form:
        extra = sorted(k for k in ("cache_bytes", "skip", "skip_threshold") if k in given)
        if extra:
            msg = (
                f"config key(s) {extra} only apply to the evaluator form; give "
                "config['score_loader'] and config['metric'] too, or drop them"
            )
            raise SearchError(msg)
        return False
    missing = {"score_loader", "metric"} - set(form)
    if missing:
        (key,) = missing
        example = "'accuracy' or a callable metric(outputs, targets) -> float"
        hint = example if key == "metric" else "an iterable of (inputs, targets) batches"
        msg = f"the evaluator form needs config[{key!r}] too: {hint}"
        raise SearchError(msg)
    if merged["score_func"] is not None:
        msg = (
            "config['score_func'] and the evaluator form (config['score_loader'] + "
            "config['metric']) are mutually exclusive; give one of them"
        )
        raise SearchError(msg)
    if merged["forward_loop"] is not None:
        msg = (
            "config['forward_loop'] cannot be used with the evaluator form: it calibrates "
            "BatchNorm on config['data_loader'] itself; pass the calibration batches there"
        )
        raise SearchError(msg)
    loader = merged["score_loader"]
    if isinstance(loader, torch.Tensor) or not isinstance(loader, Iterable):
        msg = (
            "config['score_loader'] must be an iterable of (inputs, targets) batches (e.g. a "
            f"DataLoader), got {type(loader).__name__}"
        )
        raise SearchError(msg)
    metric = merged["metric"]
    if isinstance(metric, str):
        if metric not in METRICS:
            msg = (
                f"config['metric']={metric!r} is not a known metric; use one of "
                f"{sorted(METRICS)} or a callable metric(outputs, targets) -> float"
            )
            raise SearchError(msg)
    elif not callable(metric):
        msg = (
            f"config['metric'] must be one of {sorted(METRICS)} or a callable "
            f"metric(outputs, targets) -> float, got {metric!r}"
        )
        raise SearchError(msg)
    budget = merged["cache_bytes"]
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        msg = (
            f"config['cache_bytes'] must be a byte count >= 0 (e.g. 2**30; 0 disables the "
            f"cache), got {budget!r}"
        )
        raise SearchError(msg)
    skip, threshold = merged["skip"], merged["skip_threshold"]
    if skip not in SKIP_RULES:
        msg = f"config['skip']={skip!r} is not a skip rule; use one of {SKIP_RULES}"
        raise SearchError(msg)
    if threshold is not None and not _is_number(threshold):
        msg = f"config['skip_threshold'] must be a finite number, got {threshold!r}"
        raise SearchError(msg)
    if skip == "floor" and threshold is None and metric != "accuracy":
        msg = (
            "config['skip']='floor' needs config['skip_threshold'] (the score at or below which a "
            "subnet is useless) unless config['metric'] is 'accuracy'"
        )
        raise SearchError(msg)
    return True


def concat(values: list[Any]) -> Any:
    """Per-batch values joined along dim 0 (a list when they are not all tensors)."""
    if values and all(isinstance(v, torch.Tensor) and v.dim() > 0 for v in values):
        return torch.cat(values)
    return values


def iterate(loader: Iterable[Any], limit: int | None) -> Iterator[Any]:
    """The first ``limit`` batches of ``loader`` (all with ``None``); never draws one more."""
    if limit is not None and limit < 1:
        return
    for i, batch in enumerate(loader):
        yield batch
        if limit is not None and i + 1 >= limit:
            return


class Batches:
    """The calibration and score batches: kept (on the model's device) if they fit in ``budget``
    bytes, else read from the loaders again every time (``reason`` then says why).
    """

    def __init__(
        self,
        calib_loader: Iterable[Any] | None,
        limit: int | None,
        score_loader: Iterable[Any] | None,
        budget: int,
    ) -> None:
        self._calib_loader, self._limit = calib_loader, limit
        self._score_loader, self._budget = score_loader, budget
        self._loaded = False
        self._targets: Any = None
        self.calib: list[Any] | None = None
        self.score: list[tuple[Any, Any]] | None = None
        self.nbytes = 0
        self.reason: str | None = None

    def load(self, device: torch.device) -> None:
        """Read the loaders once and keep the batches if they fit in the budget."""
        if self._loaded:
            return
        self._loaded = True
        total, calib, score = 0, [], []
        for batch in self._calib_raw():
            calib.append(to_device(batch_input(batch), device))
            total += value_bytes(calib[-1])
            if total > self._budget:
                self.reason = _stream_reason(total, self._budget)
                return
        for x, y in self._score_raw():
            pair = (to_device(x, device), to_device(y, device))
            total += value_bytes(pair)
            if total > self._budget:
                self.reason = _stream_reason(total, self._budget)
                return
            score.extend(split_pair(*pair))
        self.calib, self.score, self.nbytes = calib, score, total
        self._targets = concat([y for _, y in score])

    def calib_inputs(self, device: torch.device) -> Iterator[Any]:
        """The calibration inputs (kept, or read from the loader)."""
        if self.calib is not None:
            yield from self.calib
            return
        for batch in self._calib_raw():
            yield to_device(batch_input(batch), device)

    def score_pairs(self, device: torch.device) -> Iterator[tuple[Any, Any]]:
        """The ``(inputs, targets)`` score batches (kept, or read from the loader)."""
        if self.score is not None:
            yield from self.score
            return
        targets = []
        for x, y in self._score_raw():
            targets.append(to_device(y, device))
            yield from split_pair(to_device(x, device), targets[-1])
        self._targets = concat(targets)

    def targets(self, device: torch.device) -> Any:
        """Every score target, joined (read from the loader if nothing was read yet)."""
        if self._targets is None:
            self._targets = concat([to_device(y, device) for _, y in self._score_raw()])
        return self._targets

    def _calib_raw(self) -> Iterator[Any]:
        if self._calib_loader is not None:
            yield from iterate(self._calib_loader, self._limit)

    def _score_raw(self) -> Iterator[tuple[Any, Any]]:
        if self._score_loader is None:  # the score_func form: calibration batches only
            return
        n = 0
        for batch in self._score_loader:
            target = batch_target(batch)
            if target is None:
                msg = (
                    "config['score_loader'] must yield (inputs, targets) batches or mappings "
                    f"with 'labels', got a {type(batch).__name__}"
                )
                raise SearchError(msg)
            n += 1
            yield batch_input(batch), target
        if n == 0:
            msg = "config['score_loader'] yielded no batches"
            raise SearchError(msg)


#: score batches are run in chunks of at most this many samples: an eval-mode pass treats every
#: sample alone, so the outputs are the same, and small activations stay in the CPU caches and
#: the allocator's free lists (a 270-image batch of the digits CNN ran 2-8x slower per image)
SCORE_CHUNK = 64


def split_pair(x: Any, y: Any) -> list[tuple[Any, Any]]:
    """``(x, y)`` as chunks of at most :data:`SCORE_CHUNK` samples (views; as is otherwise)."""
    if (
        isinstance(x, torch.Tensor)
        and isinstance(y, torch.Tensor)
        and x.dim() > 0
        and y.dim() > 0
        and x.shape[0] == y.shape[0] > SCORE_CHUNK
    ):
        return list(zip(x.split(SCORE_CHUNK), y.split(SCORE_CHUNK)))
    return [(x, y)]


def _stream_reason(total: int, budget: int) -> str:
    return (
        f"the calibration and score batches take more than cache_bytes={budget:,} bytes "
        f"(> {total:,} read); nothing is cached and the loaders are read for every score"
    )


def batchnorms(module: nn.Module) -> list[_BatchNorm]:
    """The BatchNorms in ``module`` whose running statistics a calibration re-estimates."""
    return [
        m
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]


def same_output(a: Any, b: Any) -> bool:
    """Whether two outputs match (tensors within float tolerance; containers element-wise)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        scale = max(1.0, float(b.abs().max())) if b.numel() and b.is_floating_point() else 1.0
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same_output(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_output(a[k], b[k]) for k in a)
    return bool(a == b)
