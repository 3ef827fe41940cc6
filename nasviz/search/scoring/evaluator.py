"""The evaluator form of the search config: give data and a metric, and nasviz owns the loop.

Instead of an opaque ``score_func(model) -> float``, the search config may name the data and the
metric; nasviz then runs the scoring loop itself and makes the sensitivity map several times
cheaper::

    config = {
        "data_loader": calib_loader,     # BatchNorm calibration batches (inputs, or (inputs, ...))
        "max_iter_data_loader": 8,       # at most this many calibration batches (optional)
        "score_loader": val_loader,      # (inputs, targets) batches the score is computed on
        "metric": "accuracy",            # or "neg_cross_entropy", or metric(outputs, targets)
        "cache_bytes": 2**30,            # activation-cache budget (optional, default 1 GiB)
        "skip": "negligible",            # rule for implied map entries (optional, see below)
        "skip_threshold": None,          # the rule's threshold (optional)
    }

**Keys.** ``score_loader`` and ``metric`` select the evaluator form; they are mutually
exclusive with ``score_func`` and with ``forward_loop`` (calibration runs on ``data_loader``).
``metric(outputs, targets)`` is called once per score with every score batch: ``outputs`` and
``targets`` are the per-batch values concatenated along dim 0 (lists when they are not tensors);
it returns a float, higher is better. ``"accuracy"`` is top-1 accuracy of logits ``(N, C)``
against class indices; ``"neg_cross_entropy"`` is minus the mean cross-entropy.

**What is cached.** The calibration and score batches are read once and kept (that is also why
a shuffled ``data_loader`` calibrates every subnet on the same batches here). The model is traced
with torch.fx; for each hparam, the activations of the nodes it cannot change that feed the nodes
it can (the *frontier*, see :mod:`._subgraph`) are computed once per batch: those
for calibration by the first, full BatchNorm calibration (a train-mode, no-grad pass), those for
scoring by the eval-mode pass that scores the full model. A map entry then runs only the affected
nodes: BatchNorm statistics are re-estimated only downstream of the changed layers, on the cached
train-mode activations (upstream statistics are those of the full calibration, which is what a
full re-calibration would give them again), and the score pass starts from the cached eval-mode
activations. The map equals the uncached one up to floating-point rounding. The calibration
batches go through the sub-graph in one pass, each BatchNorm normalizing and accumulating batch
by batch (:mod:`._calib`: the same statistics as one pass per batch), when every op
in it treats samples one by one; else one pass per batch.

**Any subnet, once.** Other subnets (the final candidates) are scored the same way: the nodes of
every changed hparam run, fed by the cached values (sliced by each hparam's active channels),
when every changed hparam is cached; else the whole model runs. A subnet already scored (a
candidate that is also a map entry) is not scored again, and the BatchNorm statistics of every
scored subnet are kept (only those its calibration changed, within ``cache_bytes``), so the
chosen subnet gets its statistics back without one more calibration.

**Prefix sums.** The first convolution after the narrowed group (``stem -> res_conv1``) sums
over a prefix of the group's channels; since an hparam's widths are scored narrowest first
(except with ``skip="floor"``), each width's sum extends the previous width's by the new channels
only (:mod:`nasviz.search.scoring._prefix`; the sums count against ``cache_bytes``).

**Layout and batches.** With a traced graph every pass runs it with 2-d convolution outputs in
``channels_last`` memory format, and score batches are run in chunks of at most
:data:`~nasviz.search.scoring._evalconfig.SCORE_CHUNK` samples (an eval-mode pass treats each sample
alone): on CPU both are several times faster for small convolutions and change no value beyond
floating-point rounding.

**Memory.** Everything kept (the input batches first, then frontier activations, greedily, the
hparam needing the fewest new bytes first) stays within ``cache_bytes``. An hparam whose frontier
does not fit is scored by recomputing the whole model from the kept inputs; if the inputs alone
do not fit, nothing is kept and the loaders are read again for every score (as with
``score_func``). ``cache_bytes=0`` therefore gives the plain uncached loop.

**Fallbacks.** A model fx cannot trace as one graph (or whose graph differs between train and
eval mode) is scored by the uncached loop; the reason is in the :class:`EvaluatorPlan` event
and in the search state (``state["evaluator"]``).

**Skipping implied entries** (``skip``); skipped entries are emitted as
``MapEntry(skipped=True)`` and recorded in the map with their implied drop:

* ``"negligible"`` (default, the FastNAS reference's rule): an hparam's widths are scored from the
  narrowest up; once a drop is below ``skip_threshold`` (default ``1e-5``), every wider width is
  taken to lose nothing (drop ``0.0``);
* ``"floor"``: widths are scored from the widest down; once a score is at or below
  ``skip_threshold`` (for ``"accuracy"`` the default is the share of the most frequent class in
  the score targets, i.e. what a constant guess scores), every narrower width is taken to be as
  bad (the same drop);
* ``"none"``: every entry is scored (narrowest first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.fx as fx
from torch import nn
from typing_extensions import override

from nasviz._utils import device_of
from nasviz.errors import MetricError, SearchError
from nasviz.hparam import Hparam
from nasviz.patch import ForwardLoop
from nasviz.search.events import SearchEvent
from nasviz.search.scoring._cached import CachedEvaluation, CachedSub, Feed
from nasviz.search.scoring._evalconfig import (
    DEFAULT_CACHE_BYTES,
    EVALUATOR_DEFAULTS,
    EVALUATOR_KEYS,
    METRICS,
    SKIP_RULES,
    Batches,
    EvaluatorPlan,
    Metric,
    SkipRule,
    accuracy,
    concat,
    neg_cross_entropy,
    same_output,
    validate_evaluator_config,
)
from nasviz.search.scoring.base import Scorer, ScorerSpec

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "EVALUATOR_DEFAULTS",
    "EVALUATOR_KEYS",
    "METRICS",
    "SKIP_RULES",
    "Evaluator",
    "EvaluatorPlan",
    "EvaluatorSpec",
    "SkipRule",
    "accuracy",
    "neg_cross_entropy",
    "validate_evaluator_config",
]


class _NamedMetric:
    """``config['metric']`` called so that its errors say so (and are told from cache errors)."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric
        self.name = str(getattr(metric, "__name__", type(metric).__name__))

    def __call__(self, outputs: Any, targets: Any) -> Any:
        try:
            return self.metric(outputs, targets)
        except SearchError:
            raise
        except Exception as e:
            msg = (
                f"config['metric'] ({self.name}) raised {type(e).__name__}: {e}; fix the metric "
                "(it is called as metric(outputs, targets) with every score batch joined)"
            )
            raise MetricError(msg) from e


class Evaluator(CachedEvaluation, Scorer):
    """Scores the searcher's model on the evaluator-form data (see the module docstring).

    The searcher builds one from its sanitized config, calls :meth:`prepare` at the full subnet
    (it returns the original score), then selects subnets and calls :meth:`score_active`;
    :meth:`restore_calibration` puts the statistics of the active subnet back, :meth:`release`
    frees the cache. Example::

        >>> ev = Evaluator(model, searcher.config)      # a sanitized search config
        >>> members = {"fc1.out_features": ["fc1", "fc2"]}
        >>> original = ev.prepare(members, nv.search_space(model).hparams)
        >>> nv.select(model, {"fc1.out_features": 8})
        >>> drop = original - ev.score_active()
    """

    def __init__(
        self,
        model: nn.Module,
        config: dict[str, Any],
        emit: Callable[[SearchEvent], None] | None = None,
    ) -> None:
        self.model = model
        self._config = {k: config[k] for k in EVALUATOR_KEYS}
        self._calib_loader = config["data_loader"]
        self.budget: int = config["cache_bytes"]
        self.data = Batches(
            config["data_loader"],
            config["max_iter_data_loader"],
            config["score_loader"],
            self.budget,
        )
        metric = config["metric"]
        self._metric_name = metric if isinstance(metric, str) else ""
        self._metric: _NamedMetric = _NamedMetric(
            METRICS[metric] if isinstance(metric, str) else metric
        )
        self._skip = (str(config["skip"]), config["skip_threshold"])
        self._emit = emit or (lambda _e: None)
        self._init_cache_state()

    def skip_rule(self) -> SkipRule:
        """The skip rule with its threshold resolved (see the module docstring)."""
        kind, threshold = self._skip
        if threshold is None and kind == "negligible":
            threshold = 1e-5
        elif threshold is None and kind == "floor":
            targets = self.data.targets(device_of(self.model))
            if isinstance(targets, torch.Tensor) and targets.numel():
                threshold = float(torch.bincount(targets.flatten().long()).max()) / targets.numel()
        return SkipRule(kind, threshold)

    def score_single(self, name: str) -> float:
        """Score the active subnet, which differs from the full one in hparam ``name`` only."""
        return cast(float, self.score_active())

    def prepare(self, members: dict[str, list[str]], hparams: dict[str, Hparam]) -> float:
        """Build the cache at the active (full) subnet; returns its score (an error raises a
        SearchError naming the full model, as :meth:`checked` does).
        """
        return self.checked(lambda: self._prepare(members, hparams), "the full model")

    def _prepare(self, members: dict[str, list[str]], hparams: dict[str, Hparam]) -> float:
        score: float = self._prepare_cache(members, hparams)
        self._emit(
            EvaluatorPlan(
                cached=list(self._cached),
                uncached=dict(self._uncached),
                reason=self._reason,
                cache_bytes=self.stats["cache_bytes"],
                budget=self.budget,
            )
        )
        return score

    # -- the form's scoring (hooks of CachedEvaluation) -------------------------------------------
    def _score_model(self) -> float:
        """The metric over every score batch, the whole model run (by its traced graph)."""
        device = device_of(self.model)
        with torch.no_grad():
            outs = [self._run(x) for x, _ in self.data.score_pairs(device)]
        return cast(float, self._metric(concat(outs), self.data.targets(device)))

    def _score_sub(self, sub: CachedSub, changed: tuple[str, ...], feed: Feed) -> float:
        """The metric over the score batches run through the sub-graph from their cached
        frontier values.
        """
        n = len(self.data.score or [])
        outs = [sub.module(*feed(self._score_vals, i, "score")) for i in range(n)]
        return cast(float, self._metric(concat(outs), self.data.targets(device_of(self.model))))

    def _fill_score(self, capture: fx.GraphModule, keep: list[fx.Node]) -> float:
        """The full model's score, keeping the frontier values of every score batch; checks
        the traced graph against the model on the first score batch.
        """
        outs = []
        with torch.no_grad():
            for x, _ in self.data.score or []:
                out, vals = capture(x)
                outs.append(out)
                for n, v in zip(keep, vals):
                    self._score_vals[n].append(v)
            x0, out0 = (self.data.score or [])[0][0], outs[0]
            if _batch_first(x0, out0):  # eval mode treats samples alone: check a few of them
                x0, out0 = x0[:8], out0[:8]
            if not same_output(out0, self.model(x0)):  # the graph must be the model
                msg = "its output on the first score batch differs from the model's"
                raise ValueError(msg)
        return cast(float, self._metric(concat(outs), self.data.targets(device_of(self.model))))

    def report(self) -> dict[str, Any]:
        """What the cache did, as primitives (stored in the search state as ``"evaluator"``)."""
        return {
            "metric": self._metric_name or self._metric.name,
            "budget": self.budget,
            "input_bytes": self.data.nbytes,
            "cache_bytes": self.stats["cache_bytes"],
            "cache_peak": self.stats["cache_peak"],
            "cached": list(self._cached),
            "uncached": dict(self._uncached),
            "reason": self._reason,
            "inplace_ops": list(self._plan.inplace) if self._plan is not None else [],
            "cached_scores": self.stats["cached_scores"],
            "full_scores": self.stats["full_scores"],
            "remembered_scores": self._memo.hits,
            "memo_bytes": self._memo.peak,
            "prefix_bytes": self.stats["prefix_peak"],
            "skipped_candidates": self.skipped_candidates,
        }

    # -- the Scorer protocol ----------------------------------------------------------------------
    label = "scoring with config['metric']"
    passes = (SearchError,)

    @property
    def forward_loop(self) -> ForwardLoop | None:
        """The BatchNorm calibration loop over the kept calibration batches (``None`` without a
        ``data_loader``).
        """
        return self._calib_loop()

    def state_entries(self) -> dict[str, Any]:
        """The cache's report under ``"evaluator"``."""
        return {"evaluator": self.report()}

    @override
    def spec(self) -> EvaluatorSpec:
        return EvaluatorSpec({k: self._config[k] for k in EVALUATOR_KEYS})


def _batch_first(x: Any, out: Any) -> bool:
    """Whether ``x`` and ``out`` are tensors with the same leading (batch) size."""
    return (
        isinstance(x, torch.Tensor)
        and isinstance(out, torch.Tensor)
        and x.dim() > 0
        and out.dim() > 0
        and x.shape[0] == out.shape[0]
    )


@dataclass
class EvaluatorSpec(ScorerSpec):
    """The evaluator form as a picklable recipe: its config keys (a worker builds its own
    cache).
    """

    config: dict[str, Any]

    @override
    def build(self, model: nn.Module, emit: Callable[[SearchEvent], None]) -> Scorer:
        return Evaluator(model, self.config, emit)

    @override
    def parts(self) -> dict[str, Any]:
        return {f"config[{k!r}]": self.config[k] for k in ("data_loader", "score_loader", "metric")}

    @override
    def data_roots(self) -> list[Any]:
        return [self.config[k] for k in ("data_loader", "score_loader", "metric")]
