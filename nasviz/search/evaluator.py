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
it can (the *frontier*, see :mod:`nasviz.search._subgraph`) are computed once per batch: those
for calibration by the first, full BatchNorm calibration (a train-mode, no-grad pass), those for
scoring by the eval-mode pass that scores the full model. A map entry then runs only the affected
nodes: BatchNorm statistics are re-estimated only downstream of the changed layers, on the cached
train-mode activations (upstream statistics are those of the full calibration, which is what a
full re-calibration would give them again), and the score pass starts from the cached eval-mode
activations. The map equals the uncached one up to floating-point rounding. The calibration
batches go through the sub-graph in one pass, each BatchNorm normalizing and accumulating batch
by batch (:mod:`nasviz.search._calib`: the same statistics as one pass per batch), when every op
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
only (:mod:`nasviz.search._prefix`; the sums count against ``cache_bytes``).

**Layout and batches.** With a traced graph every pass runs it with 2-d convolution outputs in
``channels_last`` memory format, and score batches are run in chunks of at most
:data:`~nasviz.search._evalconfig.SCORE_CHUNK` samples (an eval-mode pass treats each sample
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
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasviz._utils import device_of
from nasviz.dynamic import slice_dim
from nasviz.hparam import Hparam
from nasviz.search._budget import choose_cached, estimate_bytes
from nasviz.search._calib import calib_module, group_feeds, join
from nasviz.search._evalconfig import (
    DEFAULT_CACHE_BYTES,
    EVALUATOR_DEFAULTS,
    METRICS,
    SKIP_RULES,
    Batches,
    EvaluatorPlan,
    Metric,
    SkipRule,
    accuracy,
    batchnorms,
    concat,
    neg_cross_entropy,
    same_output,
    validate_evaluator_config,
)
from nasviz.search._memo import ScoreMemo, load_bn_state
from nasviz.search._prefix import PrefixSlot, add_prefix_convs, slot_bytes
from nasviz.search._subgraph import (
    SubgraphPlan,
    UntraceableError,
    capture_module,
    plan_subgraphs,
    snapshot,
    subgraph_module,
    trace_model,
    union_plan,
    value_bytes,
)
from nasviz.search.events import SearchEvent

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "EVALUATOR_DEFAULTS",
    "METRICS",
    "SKIP_RULES",
    "Evaluator",
    "EvaluatorPlan",
    "SkipRule",
    "accuracy",
    "neg_cross_entropy",
    "validate_evaluator_config",
]


def _batch_first(x: Any, out: Any) -> bool:
    """Whether ``x`` and ``out`` are tensors with the same leading (batch) size."""
    return (
        isinstance(x, torch.Tensor)
        and isinstance(out, torch.Tensor)
        and x.dim() > 0
        and out.dim() > 0
        and x.shape[0] == out.shape[0]
    )


@dataclass(frozen=True)
class _Sub:
    """A sub-graph module, its frontier with each node's ``(hparam, axis)`` slice, and the
    BatchNorms it re-calibrates."""

    module: fx.GraphModule
    frontier: list[fx.Node]
    slices: list[tuple[str | None, int | None]]
    bns: list[_BatchNorm]
    #: prefix-sum slots it takes per batch, after the frontier values (nasviz.search._prefix)
    n_slots: int = 0
    #: its batched calibration module (nasviz.search._calib), None: calibrate batch by batch
    calib: fx.GraphModule | None = None


class Evaluator:
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
        self._calib_loader = config["data_loader"]
        self.budget: int = config["cache_bytes"]
        self.data = Batches(
            config["data_loader"],
            config["max_iter_data_loader"],
            config["score_loader"],
            self.budget,
        )
        metric = config["metric"]
        self._metric: Metric = METRICS[metric] if isinstance(metric, str) else metric
        self._metric_name = metric if isinstance(metric, str) else ""
        self._skip = (str(config["skip"]), config["skip_threshold"])
        self._emit = emit or (lambda _e: None)
        self._plan: SubgraphPlan | None = None
        self._reason: str | None = None
        self._calib_vals: dict[fx.Node, list[Any]] = {}
        self._calib_joined: dict[fx.Node, torch.Tensor] = {}  # the values joined along dim 0
        self._score_vals: dict[fx.Node, list[Any]] = {}
        self._cached: dict[str, list[_BatchNorm]] = {}
        self._modules: dict[tuple[str, ...], _Sub] = {}
        self._uncached: dict[str, str] = {}
        self._hparams: dict[str, Hparam] = {}
        self._bn_state: dict[_BatchNorm, dict[str, torch.Tensor]] = {}
        self._dirty: set[_BatchNorm] = set()
        self._runner: fx.GraphModule | None = None
        self._memo = ScoreMemo()
        self._prefix: dict[tuple[str, int, int], PrefixSlot] = {}
        self._prefix_key: tuple[str, ...] = ()
        self.stats = {"cached_scores": 0, "full_scores": 0, "cache_bytes": 0, "cache_peak": 0,
                      "prefix_peak": 0}  # fmt: skip

    def forward_loop(self, model: nn.Module) -> None:
        """The BatchNorm calibration loop: every calibration batch through ``model``."""
        run = self._run if model is self.model else model
        for x in self.data.calib_inputs(device_of(model)):
            run(x)

    def _run(self, x: Any) -> Any:
        """The model's output on ``x``: by the traced graph (channels_last) when there is one."""
        return self.model(x) if self._runner is None else self._runner(x)[0]

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

    # -- scoring ----------------------------------------------------------------------------------
    def score_active(self) -> float:
        """Score the active subnet: remembered, from the cache, or from the inputs."""
        key = self._key()
        score = None if key is None else self._memo.score(key)
        if score is not None:
            return score
        changed = tuple(n for n, hp in self._hparams.items() if hp.active != hp.original)
        if changed and all(n in self._cached for n in changed):
            return self._score_cached(changed)
        return self.score_full()

    def score_single(self, name: str) -> float:
        """Score the active subnet, which differs from the full one in hparam ``name`` only."""
        return self.score_active()

    def score_full(self) -> float:
        """Calibrate BatchNorm of the whole active subnet, then score it (no activation cache)."""
        from nasviz.patch import prep_for_eval

        device = device_of(self.model)
        self.data.load(device)
        prep_for_eval(self.model, self.forward_loop if self._calib_loader is not None else None)
        with torch.no_grad():
            outs = [self._run(x) for x, _ in self.data.score_pairs(device)]
        self._dirty = set(self._bn_state)
        self.stats["full_scores"] += 1
        score = self._metric(concat(outs), self.data.targets(device))
        self._remember(score, batchnorms(self.model))
        return score

    def restore_calibration(self) -> bool:
        """Give the active subnet the BatchNorm statistics its scoring calibrated (no pass);
        ``False`` if they were not kept (then calibrate it)."""
        key = self._key()
        state = None if key is None else self._memo.statistics(key)
        if state is None:
            return False
        self.reset_calibration()
        load_bn_state(state)
        self._dirty = set(state)
        return True

    def reset_calibration(self) -> None:
        """Put back the full subnet's BatchNorm statistics where a scoring changed them."""
        load_bn_state({bn: self._bn_state[bn] for bn in self._dirty})
        self._dirty = set()

    def _key(self) -> tuple[int, ...] | None:
        """The active subnet as the memo's key (``None`` before :meth:`prepare`)."""
        return tuple(hp.active for hp in self._hparams.values()) if self._hparams else None

    def _remember(self, score: float, bns: list[_BatchNorm]) -> None:
        key = self._key()
        if key is not None:
            self._memo.put(key, score, bns, room=self.budget - self._held())

    def prepare(self, members: dict[str, list[str]], hparams: dict[str, Hparam]) -> float:
        """Build the cache at the active (full) subnet; returns its score.

        ``members``: hparam name -> the qualified names of its member layers; ``hparams``: the
        configurable hparams by name.
        """
        self.data.load(device_of(self.model))
        self._hparams = hparams
        self._reason = self.data.reason
        if self._reason is None:
            try:
                graph = trace_model(self.model)
                self._plan = plan_subgraphs(self.model, graph, members, hparams)
            except UntraceableError as e:
                self._reason = f"{e}; every entry is scored without the cache"
        if self._plan is not None:
            try:
                score = self._fill(list(members))
            except Exception as e:  # the traced graph does not run as the model does
                self._plan, self._cached, self._calib_vals, self._score_vals = None, {}, {}, {}
                self._calib_joined = {}
                self._runner = None
                self._reason = (
                    f"the fx graph of {type(self.model).__name__} does not reproduce the model "
                    f"({type(e).__name__}: {e}); every entry is scored without the cache"
                )
        if self._plan is None:
            score = self.score_full()
            self._uncached = {n: str(self._reason) for n in members}
        self._bn_state = {
            bn: {k: v.clone() for k, v in bn._buffers.items() if v is not None}
            for bn in batchnorms(self.model)
        }
        self._dirty = set()
        self._memo = ScoreMemo()
        self._remember(score, [])  # the full subnet: its statistics are self._bn_state
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

    def _fill(self, names: list[str]) -> float:
        """Full calibration and full scoring pass, keeping the chosen frontier activations."""
        from nasviz.patch import prep_for_eval

        plan, calib, score = self._plan, self.data.calib or [], self.data.score or []
        if plan is None:
            return self.score_full()
        self._uncached = {n: r for n, r in plan.unusable.items() if n in names}
        usable = [n for n in names if n in plan.frontier]
        chosen: list[str] = []
        if usable:
            est = estimate_bytes(self.model, plan, calib, score, usable)
            chosen, rest = choose_cached(plan, usable, est, self.data.nbytes, self.budget)
            self._uncached.update(rest)
        keep = [n for n in plan.nodes if any(n in plan.frontier[h] for h in chosen)]
        capture = capture_module(self.model, plan, keep)
        self._runner = capture_module(self.model, plan, [])
        self._calib_vals = {n: [] for n in keep}
        self._score_vals = {n: [] for n in keep}

        def loop(_model: nn.Module) -> None:
            for x in calib:
                _, vals = capture(x)
                for n, v in zip(keep, vals):
                    self._calib_vals[n].append(v)

        prep_for_eval(self.model, loop if self._calib_loader is not None else None)
        self._calib_joined = join(self._calib_vals, calib)
        outs = []
        with torch.no_grad():
            for x, _ in score:
                out, vals = capture(x)
                outs.append(out)
                for n, v in zip(keep, vals):
                    self._score_vals[n].append(v)
            x0, out0 = score[0][0], outs[0]
            if _batch_first(x0, out0):  # eval mode treats samples alone: check a few of them
                x0, out0 = x0[:8], out0[:8]
            if not same_output(out0, self.model(x0)):  # the graph must be the model
                raise ValueError("its output on the first score batch differs from the model's")
        self.stats["full_scores"] += 1
        self.stats["cache_peak"] = self._held()
        while chosen and self._held() > self.budget:  # the estimate was short: drop the last
            dropped = chosen.pop()
            self._uncached[dropped] = "its cached activations did not fit in cache_bytes"
            still = {n for h in chosen for n in plan.frontier[h]}
            for n in keep:
                if n not in still:
                    self._calib_vals.pop(n, None)
                    self._calib_joined.pop(n, None)
                    self._score_vals.pop(n, None)
        for h in chosen:
            called = [self.model.get_submodule(str(n.target)) for n in plan.computed[h]
                      if n.op == "call_module"]  # fmt: skip
            self._cached[h] = list({bn: None for m in called for bn in batchnorms(m)})
        self.stats["cache_bytes"] = self._held()
        return self._metric(concat(outs), self.data.targets(device_of(self.model)))

    def _held(self) -> int:
        """Bytes held: the input batches plus the frontier activations (placeholders excluded)."""
        held = self.data.nbytes
        for vals in (self._calib_vals, self._score_vals):
            held += sum(value_bytes(v) for n, v in vals.items() if n.op != "placeholder")
        return held

    def _sub(self, changed: tuple[str, ...]) -> _Sub | None:
        """The sub-graph that runs when the hparams ``changed`` change (built once)."""
        plan = self._plan
        if changed not in self._modules and plan is not None:
            union = union_plan(plan, changed)
            if union is not None:
                computed, frontier, slices = union
                bns = [bn for h in changed for bn in self._cached[h]]
                n_slots = [0]
                rewrite = None
                if len(changed) == 1 and not plan.inplace:  # one hparam: extend prefix sums
                    hp = self._hparams[changed[0]]

                    def rewrite(g: fx.Graph) -> None:
                        n_slots[0] = add_prefix_convs(self.model, g, hp)

                module = subgraph_module(self.model, plan, computed, frontier, rewrite)
                joined = all(n in self._calib_joined for n in frontier)
                self._modules[changed] = _Sub(
                    module, frontier, slices, list(dict.fromkeys(bns)), n_slots[0],
                    calib_module(module) if joined and bns else None,
                )  # fmt: skip
        return self._modules.get(changed)

    def _slots(self, changed: tuple[str, ...], phase: str, i: int, n: int) -> list[PrefixSlot]:
        """The prefix-sum slots of batch ``i`` (only the last changed set keeps any)."""
        if n and self._prefix_key != changed:
            self._prefix, self._prefix_key = {}, changed
        return [self._prefix.setdefault((phase, i, k), PrefixSlot()) for k in range(n)]

    def _score_cached(self, changed: tuple[str, ...]) -> float:
        """Score the active subnet, which differs from the full one in ``changed`` only (all
        cached): re-calibrate and run only their nodes, fed by the cached values."""
        from nasviz.patch import _recalibrate_bn

        sub = self._sub(changed)
        if sub is None or self._plan is None:
            return self.score_full()
        calib, score, inplace = self.data.calib or [], self.data.score or [], self._plan.inplace
        index = {h: self._hparams[h].active_index() for h in changed}
        feeds = [(n, a, index[h]) if h is not None else (n, None, None)
                 for n, (h, a) in zip(sub.frontier, sub.slices)]  # fmt: skip

        def feed(values: dict[fx.Node, Any], i: int, phase: str) -> list[Any]:
            out = [values[n][i] if a is None else slice_dim(values[n][i], a, ix)
                   for n, a, ix in feeds]  # fmt: skip
            out = [snapshot(v) for v in out] if inplace else out
            return [*out, *self._slots(changed, phase, i, sub.n_slots)]

        self.reset_calibration()

        def loop(_model: nn.Module) -> None:
            for i in range(len(calib)):
                sub.module(*feed(self._calib_vals, i, "calib"))

        done, module = False, sub.calib
        if sub.bns and calib and module is not None:

            def batched(_model: nn.Module) -> None:  # all batches at once (nasviz.search._calib)
                for g, vals, sizes in group_feeds(sub.frontier, self._calib_joined, calib):
                    module(*feed(vals, g, "calib*"), sizes)

            try:
                _recalibrate_bn(nn.ModuleList(sub.bns), batched, self._set_training)
                done = True
            except Exception:  # the ops are not sample by sample after all: batch by batch
                self._modules[changed] = replace(sub, calib=None)
                self._prefix = {k: v for k, v in self._prefix.items() if k[0] != "calib*"}
        if sub.bns and calib and not done:
            _recalibrate_bn(nn.ModuleList(sub.bns), loop, self._set_training)
        self._set_training(False)
        with torch.no_grad():
            outs = [sub.module(*feed(self._score_vals, i, "score")) for i in range(len(score))]
        if sub.n_slots and self._held() + slot_bytes(self._prefix) > self.budget:
            self._prefix = {}  # the sums do not fit: the next width is computed directly
        self.stats["prefix_peak"] = max(self.stats["prefix_peak"], slot_bytes(self._prefix))
        self._dirty = set(sub.bns)
        self.stats["cached_scores"] += 1
        result = self._metric(concat(outs), self.data.targets(device_of(self.model)))
        self._remember(result, sub.bns)
        return result

    def _set_training(self, mode: bool) -> None:
        type(self.model).train(self.model, mode)  # the class's train: no patched post-eval hook

    def release(self) -> None:
        """Free the cached activations, sub-graphs and kept statistics (the model's BatchNorm
        statistics stay as they are; :meth:`reset_calibration` puts back the full subnet's)."""
        self._calib_vals, self._score_vals, self._modules = {}, {}, {}
        self._calib_joined = {}
        self._prefix, self._prefix_key = {}, ()
        self._memo.clear_statistics()

    def report(self) -> dict[str, Any]:
        """What the cache did, as primitives (stored in the search state as ``"evaluator"``)."""
        return {
            "metric": self._metric_name or getattr(self._metric, "__name__", "metric"),
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
        }
