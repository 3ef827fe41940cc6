"""Evaluator-form config: validation, built-in metrics, skip rules, the plan event, data helpers.

Private to :mod:`nasviz.search.evaluator` (which documents the keys and re-exports the public
names).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from nasviz.errors import SearchError
from nasviz.search.events import SearchEvent

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "EVALUATOR_DEFAULTS",
    "METRICS",
    "SKIP_RULES",
    "EvaluatorPlan",
    "Metric",
    "SkipRule",
    "accuracy",
    "batch_input",
    "batch_size",
    "concat",
    "iterate",
    "neg_cross_entropy",
    "to_device",
    "validate_evaluator_config",
]

Metric = Callable[[Any, Any], float]
DEFAULT_CACHE_BYTES = 1 << 30
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
        raise SearchError(
            "metric 'accuracy' needs logits of shape (N, classes) from the model, got "
            f"{type(outputs).__name__} {getattr(outputs, 'shape', '')}; pass a callable metric"
        )
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
        """Whether widths are scored narrowest first."""
        return self.kind == "negligible"

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
            raise SearchError(
                f"config key(s) {extra} only apply to the evaluator form; give "
                "config['score_loader'] and config['metric'] too, or drop them"
            )
        return False
    missing = {"score_loader", "metric"} - set(form)
    if missing:
        (key,) = missing
        example = "'accuracy' or a callable metric(outputs, targets) -> float"
        hint = example if key == "metric" else "an iterable of (inputs, targets) batches"
        raise SearchError(f"the evaluator form needs config[{key!r}] too: {hint}")
    if merged["score_func"] is not None:
        raise SearchError(
            "config['score_func'] and the evaluator form (config['score_loader'] + "
            "config['metric']) are mutually exclusive; give one of them"
        )
    if merged["forward_loop"] is not None:
        raise SearchError(
            "config['forward_loop'] cannot be used with the evaluator form: it calibrates "
            "BatchNorm on config['data_loader'] itself; pass the calibration batches there"
        )
    loader = merged["score_loader"]
    if isinstance(loader, torch.Tensor) or not isinstance(loader, Iterable):
        raise SearchError(
            "config['score_loader'] must be an iterable of (inputs, targets) batches (e.g. a "
            f"DataLoader), got {type(loader).__name__}"
        )
    metric = merged["metric"]
    if isinstance(metric, str):
        if metric not in METRICS:
            raise SearchError(
                f"config['metric']={metric!r} is not a known metric; use one of "
                f"{sorted(METRICS)} or a callable metric(outputs, targets) -> float"
            )
    elif not callable(metric):
        raise SearchError(
            f"config['metric'] must be one of {sorted(METRICS)} or a callable "
            f"metric(outputs, targets) -> float, got {metric!r}"
        )
    budget = merged["cache_bytes"]
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise SearchError(
            f"config['cache_bytes'] must be a byte count >= 0 (e.g. 2**30; 0 disables the "
            f"cache), got {budget!r}"
        )
    skip, threshold = merged["skip"], merged["skip_threshold"]
    if skip not in SKIP_RULES:
        raise SearchError(f"config['skip']={skip!r} is not a skip rule; use one of {SKIP_RULES}")
    if threshold is not None and not _is_number(threshold):
        raise SearchError(f"config['skip_threshold'] must be a finite number, got {threshold!r}")
    if skip == "floor" and threshold is None and metric != "accuracy":
        raise SearchError(
            "config['skip']='floor' needs config['skip_threshold'] (the score at or below which a "
            "subnet is useless) unless config['metric'] is 'accuracy'"
        )
    return True


def batch_input(batch: Any) -> Any:
    """The model input of a batch: its first element if it is a tuple or list."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value


def batch_size(value: Any) -> int:
    """The leading dimension of the first tensor in ``value`` (1 if there is none)."""
    if isinstance(value, torch.Tensor):
        return int(value.shape[0]) if value.dim() else 1
    if isinstance(value, (tuple, list)):
        for v in value:
            if isinstance(v, torch.Tensor):
                return batch_size(v)
    return 1


def concat(values: list[Any]) -> Any:
    """Per-batch values joined along dim 0 (a list when they are not all tensors)."""
    if values and all(isinstance(v, torch.Tensor) and v.dim() > 0 for v in values):
        return torch.cat(values)
    return values


def iterate(loader: Iterable[Any], limit: int | None) -> Iterator[Any]:
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            return
        yield batch
