"""The evaluator form's cache and sub-graph scoring.

Private to :mod:`nasviz.search.scoring.evaluator`, which documents the design.

:class:`CachedEvaluation` holds the data, the frontier activations, the sub-graph modules, the
memo and the kept BatchNorm statistics; it fills the cache with one full calibration and one
full scoring pass (``_fill``) and scores a subnet that differs from the full one in cached
hparams only by running their sub-graph (``_score_cached``); any other subnet is scored by the
whole model (``score_full``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasviz._utils import device_of
from nasviz.dynamic import slice_dim
from nasviz.hparam import Hparam
from nasviz.patch import ForwardLoop, prep_for_eval, recalibrate_bn
from nasviz.search.scoring._budget import choose_cached, estimate_bytes
from nasviz.search.scoring._calib import calib_module, group_feeds, join
from nasviz.search.scoring._evalconfig import (
    Batches,
    Metric,
    batchnorms,
    concat,
    same_output,
)
from nasviz.search.scoring._memo import ScoreMemo, load_bn_state
from nasviz.search.scoring._prefix import PrefixSlot, add_prefix_convs, slot_bytes
from nasviz.search.scoring._subgraph import (
    SubgraphPlan,
    capture_module,
    snapshot,
    subgraph_module,
    union_plan,
    value_bytes,
)

__all__ = ["CachedEvaluation", "CachedSub"]


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
class CachedSub:
    """A sub-graph module, its frontier with each node's ``(hparam, axis)`` slice, and the
    BatchNorms it re-calibrates."""

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
    _metric: Metric
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

    def _calib_loop(self) -> ForwardLoop | None:
        """The calibration loop, or ``None`` without a ``data_loader``."""
        return self._calibrate if self._calib_loader is not None else None

    def _calibrate(self, model: nn.Module) -> None:
        """The BatchNorm calibration loop: every calibration batch through ``model``."""
        run = self._run if model is self.model else model
        for x in self.data.calib_inputs(device_of(model)):
            run(x)

    def _run(self, x: Any) -> Any:
        """The model's output on ``x``: by the traced graph (channels_last) when there is one."""
        return self.model(x) if self._runner is None else self._runner(x)[0]

    def score_full(self) -> float:
        """Calibrate BatchNorm of the whole active subnet, then score it (no activation cache)."""
        device = device_of(self.model)
        self.data.load(device)
        prep_for_eval(self.model, self._calib_loop())
        with torch.no_grad():
            outs = [self._run(x) for x, _ in self.data.score_pairs(device)]
        self._dirty = set(self._bn_state)
        self.stats["full_scores"] += 1
        score = self._metric(concat(outs), self.data.targets(device))
        self._remember(score, batchnorms(self.model))
        return score

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

    def _fill(self, names: list[str]) -> float:
        """Full calibration and full scoring pass, keeping the chosen frontier activations."""
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
        cached): re-calibrate and run only their nodes, fed by the cached values."""
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
