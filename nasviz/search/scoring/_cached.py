"""The activation cache and sub-graph re-calibration shared by both scoring forms.

Private to :mod:`nasviz.search.scoring`; :mod:`nasviz.search.scoring.evaluator` documents the
design.

:class:`CachedEvaluation` holds the data, the frontier activations, the sub-graph modules, the
memo and the kept BatchNorm statistics; it fills the cache with one full calibration and one
full scoring pass (``_fill``) and scores a subnet that differs from the full one in cached
hparams only by re-calibrating and running their sub-graph (``_score_cached``); any other
subnet is scored by the whole model (``score_full``). How a calibrated subnet is *scored* is the
form's: two hooks, :meth:`~CachedEvaluation._score_model` (the whole model) and
:meth:`~CachedEvaluation._score_sub` (after a sub-graph re-calibration; by default the whole
model too). The evaluator form also caches its score batches' frontier values and scores from
the sub-graph; the ``score_func`` form calls the user's opaque function on the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasviz._batch import call_model
from nasviz._utils import device_of
from nasviz.dynamic import slice_dim
from nasviz.errors import MetricError
from nasviz.hparam import Hparam
from nasviz.patch import ForwardLoop, prep_for_eval, recalibrate_bn
from nasviz.search.scoring._budget import choose_cached, estimate_bytes
from nasviz.search.scoring._calib import calib_module, group_feeds, join
from nasviz.search.scoring._evalconfig import Batches, batchnorms, same_output
from nasviz.search.scoring._memo import ScoreMemo, load_bn_state
from nasviz.search.scoring._prefix import PrefixSlot, add_prefix_convs, slot_bytes
from nasviz.search.scoring._subgraph import (
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

__all__ = ["CachedEvaluation", "CachedSub", "Feed"]

#: ``feed(values, i, phase)``: a sub-graph's inputs for batch ``i`` of ``values``
Feed = Callable[[dict[fx.Node, list[Any]], int, str], list[Any]]


@dataclass(frozen=True)
class CachedSub:
    """A sub-graph module, its frontier with each node's ``(hparam, axis)`` slice, and the
    BatchNorms it re-calibrates.
    """

    module: fx.GraphModule
    frontier: list[fx.Node]
    slices: list[tuple[str | None, int | None]]
    bns: list[_BatchNorm]
    #: prefix-sum slots it takes per batch, after the frontier values (scoring._prefix)
    n_slots: int = 0
    #: its batched calibration module (nasviz.search.scoring._calib), None: calibrate batch by batch
    calib: fx.GraphModule | None = None


class CachedEvaluation:
    """The evaluator's cached state and its scoring passes (see the module docstring)."""

    model: nn.Module
    budget: int
    data: Batches
    stats: dict[str, int]
    _calib_loader: Any
    _plan: SubgraphPlan | None
    _reason: str | None
    _calib_vals: dict[fx.Node, list[Any]]
    _calib_joined: dict[fx.Node, torch.Tensor]
    _score_vals: dict[fx.Node, list[Any]]
    _cached: dict[str, list[_BatchNorm]]
    _modules: dict[tuple[str, ...], CachedSub]
    _uncached: dict[str, str]
    _hparams: dict[str, Hparam]
    _bn_state: dict[_BatchNorm, dict[str, torch.Tensor]]
    _dirty: set[_BatchNorm]
    _runner: fx.GraphModule | None
    _memo: ScoreMemo
    _prefix: dict[tuple[str, int, int], PrefixSlot]
    _prefix_key: tuple[str, ...]

    def _init_cache_state(self) -> None:
        """Empty cache state (no plan, nothing cached or remembered), set by each scorer's
        ``__init__``.
        """
        self._plan = None
        self._reason = None
        self._calib_vals = {}
        self._calib_joined = {}  # the values joined along dim 0
        self._score_vals = {}
        self._cached = {}
        self._modules = {}
        self._uncached = {}
        self._hparams = {}
        self._bn_state = {}
        self._dirty = set()
        self._runner = None
        self._memo = ScoreMemo()
        self._prefix = {}
        self._prefix_key = ()
        self.stats = {"cached_scores": 0, "full_scores": 0, "cache_bytes": 0, "cache_peak": 0,
                      "prefix_peak": 0}  # fmt: skip

    def _calib_loop(self) -> ForwardLoop | None:
        """The calibration loop, or ``None`` without a ``data_loader``."""
        return self._calibrate if self._calib_loader is not None else None

    def _calibrate(self, model: nn.Module) -> None:
        """The BatchNorm calibration loop: every calibration batch through ``model``."""
        for x in self.data.calib_inputs(device_of(model)):
            if model is self.model:
                self._run(x)
            else:
                call_model(model, x)

    def _run(self, x: Any) -> Any:
        """The model's output on ``x``: by the traced graph (channels_last) when there is one."""
        if self._runner is None or isinstance(x, Mapping):  # a mapping: model(**x)
            return call_model(self.model, x)
        return self._runner(x)[0]

    # -- the form's scoring: the two hooks a form implements ------------------------------------
    def _score_model(self) -> Any:
        """Score the whole active subnet, already calibrated and in eval mode."""
        raise NotImplementedError

    def _score_sub(self, sub: CachedSub, changed: tuple[str, ...], feed: Feed) -> Any:
        """Score the active subnet after :meth:`_score_cached` re-calibrated ``sub``'s BatchNorms
        (``feed(values, i, phase)``: the sub-graph's inputs for batch ``i``).
        """
        return self._score_model()

    def _fill_score(self, capture: fx.GraphModule, keep: list[fx.Node]) -> Any:
        """After the full calibration in :meth:`_fill`: check that the traced graph is the model
        (raise if not) and score the full subnet (the evaluator form also keeps the frontier
        values of its score batches).
        """
        calib = self.data.calib or []
        if calib:
            x0 = calib[0][:8] if isinstance(calib[0], torch.Tensor) else calib[0]
            with torch.no_grad():
                if not same_output(capture(x0)[0], self.model(x0)):
                    msg = "its output on the first calibration batch differs"
                    raise ValueError(msg)
        return self._score_model()

    # -- scoring ---------------------------------------------------------------------------------
    def score_active(self) -> Any:
        """Score the active subnet: remembered, from the cache, or from the inputs."""
        key = self._key()
        score = None if key is None else self._memo.score(key)
        if score is not None:
            return score
        changed = tuple(n for n, hp in self._hparams.items() if hp.active != hp.original)
        if changed and all(n in self._cached for n in changed):
            return self._score_cached(changed)
        return self.score_full()

    def score_full(self) -> Any:
        """Calibrate BatchNorm of the whole active subnet, then score it (no activation cache)."""
        self.data.load(device_of(self.model))
        prep_for_eval(self.model, self._calib_loop())
        score = self._score_model()
        self._dirty = set(self._bn_state)
        self.stats["full_scores"] += 1
        self._remember(score, batchnorms(self.model))
        return score

    def restore_kept(self) -> bool:
        """Give the active subnet the BatchNorm statistics its scoring calibrated (no pass);
        ``False`` if they were not kept (then calibrate it).
        """
        key = self._key()
        state = None if key is None else self._memo.statistics(key)
        if state is None:
            return False
        self.reset_calibration()
        load_bn_state(state)
        self._dirty = set(state)
        return True

    def _prepare_cache(self, members: dict[str, list[str]], hparams: dict[str, Hparam]) -> Any:
        """Build the cache at the active (full) subnet; returns its score.

        ``members``: hparam name -> the qualified names of its member layers; ``hparams``: the
        configurable hparams by name.
        """
        self.data.load(device_of(self.model))
        self._hparams = hparams
        self._reason = self.data.reason
        inputs = [*(self.data.calib or []), *(x for x, _ in self.data.score or [])]
        if self._reason is None and any(isinstance(x, Mapping) for x in inputs):
            self._reason = (
                "the batches are mappings, run as model(**batch); the activation cache runs "
                "tensor batches only, so every entry is scored without the cache"
            )
        if self._reason is None:
            try:
                graph = trace_model(self.model)
                self._plan = plan_subgraphs(self.model, graph, members, hparams)
            except UntraceableError as e:
                self._reason = f"{e}; every entry is scored without the cache"
        if self._plan is not None:
            try:
                score = self._fill(list(members))
            except MetricError:  # the user's metric failed, not the cache: never swallowed
                raise
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
        return score

    def release(self) -> None:
        """Free the cached activations, sub-graphs and kept statistics (the model's BatchNorm
        statistics stay as they are; :meth:`reset_calibration` puts back the full subnet's).
        """
        self._calib_vals, self._score_vals, self._modules = {}, {}, {}
        self._calib_joined = {}
        self._prefix, self._prefix_key = {}, ()
        self._memo.clear_statistics()

    def finish_sweep(self) -> None:
        """Put back the full subnet's statistics (the cache stays for the final candidates)."""
        self.reset_calibration()

    def restore_calibration(self, last_scored: bool) -> None:
        """The active subnet's statistics as its scoring left them, else a calibration pass."""
        if not self.restore_kept():
            prep_for_eval(self.model, self._calib_loop())

    def reset_calibration(self) -> None:
        """Put back the full subnet's BatchNorm statistics where a scoring changed them."""
        load_bn_state({bn: self._bn_state[bn] for bn in self._dirty})
        self._dirty = set()

    def _key(self) -> tuple[int, ...] | None:
        """The active subnet as the memo's key (``None`` before :meth:`prepare`)."""
        return tuple(hp.active for hp in self._hparams.values()) if self._hparams else None

    def _remember(self, score: Any, bns: list[_BatchNorm]) -> None:
        key = self._key()
        if key is not None:
            self._memo.put(key, score, bns, room=self.budget - self._held())

    def _fill(self, names: list[str]) -> float:
        """Full calibration and full scoring pass, keeping the chosen frontier activations."""
        plan, calib, score = self._plan, self.data.calib or [], self.data.score or []
        if plan is None:
            return cast(float, self.score_full())
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
        result = self._fill_score(capture, keep)
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
        return cast(float, result)

    def _held(self) -> int:
        """Bytes held: the input batches plus the frontier activations (placeholders excluded)."""
        held = self.data.nbytes
        for vals in (self._calib_vals, self._score_vals):
            held += sum(value_bytes(v) for n, v in vals.items() if n.op != "placeholder")
        return held

    def _sub(self, changed: tuple[str, ...]) -> CachedSub | None:
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
                self._modules[changed] = CachedSub(
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
        cached): re-calibrate and run only their nodes, fed by the cached values.
        """
        sub = self._sub(changed)
        if sub is None or self._plan is None:
            return cast(float, self.score_full())
        calib, inplace = self.data.calib or [], self._plan.inplace
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

            def batched(
                _model: nn.Module,
            ) -> None:  # all batches at once (nasviz.search.scoring._calib)
                for g, vals, sizes in group_feeds(sub.frontier, self._calib_joined, calib):
                    module(*feed(vals, g, "calib*"), sizes)

            try:
                recalibrate_bn(nn.ModuleList(sub.bns), batched, self._set_training)
                done = True
            except Exception:  # the ops are not sample by sample after all: batch by batch
                self._modules[changed] = replace(sub, calib=None)
                self._prefix = {k: v for k, v in self._prefix.items() if k[0] != "calib*"}
        if sub.bns and calib and not done:
            recalibrate_bn(nn.ModuleList(sub.bns), loop, self._set_training)
        self._set_training(False)
        with torch.no_grad():
            result = self._score_sub(sub, changed, feed)
        if sub.n_slots and self._held() + slot_bytes(self._prefix) > self.budget:
            self._prefix = {}  # the sums do not fit: the next width is computed directly
        self.stats["prefix_peak"] = max(self.stats["prefix_peak"], slot_bytes(self._prefix))
        self._dirty = set(sub.bns)
        self.stats["cached_scores"] += 1
        self._remember(result, sub.bns)
        return cast(float, result)

    def _set_training(self, mode: bool) -> None:
        type(self.model).train(self.model, mode)  # the class's train: no patched post-eval hook
