"""Sub-graph evaluation for the evaluator form (private to :mod:`nasviz.search.scoring.evaluator`).

The converted model is captured by :func:`nasviz.tracing.fx.trace_leaves` (the one tracer,
dynamic layers kept as leaves); which ops act channel by channel is asked of tracing's op
vocabulary. For each hparam, the graph splits in two:

* the **affected** nodes: the calls of the hparam's member layers (its *seeds*) and every node
  forward-reachable from them, plus the graph output - their values change with the hparam;
* the **sliced** nodes: affected nodes whose value at any width is the full-width value indexed
  along its channel axis by the hparam's active channels - the group's producer (a regular conv
  or Linear whose output width is the hparam and whose input is not affected), then BatchNorm,
  depthwise convs, activations and pools that act channel by channel on a sliced input;
* the **frontier**: the nodes that depend on the model input, are unaffected or sliced, and feed
  one of the remaining affected nodes (the *computed* ones) - their full-width values are the
  same for every width of the hparam, so they are computed once per batch (by a *capture*
  module: the whole graph, returning its output and the frontier values), sliced if they are
  sliced nodes, and fed to a *sub-graph* module that runs only the computed nodes.

Nodes that do not depend on the input (``get_attr``, constants) are copied into the sub-graph.
Both modules put the output of every 2-d convolution in ``channels_last`` memory format (the
values are the same; only the layout changes): on CPU, small convolutions - 1x1, depthwise,
few-pixel images - run several times faster that way, and every later layer keeps the layout.
A BatchNorm2d, an addition or a plain ReLU whose input is a fresh conv/BatchNorm output that
nothing else reads (no hook saw it, it is not captured) writes into that input instead of a new
tensor: each new activation-sized tensor costs page faults on a small model, often more than the
op itself.
When the graph holds an in-place op (``relu_``, ``+=``, ``inplace=True`` modules) a captured
value could be overwritten later in the pass, so captured values are cloned when recorded and
before being fed back (:attr:`SubgraphPlan.inplace` lists the ops found).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasviz.dynamic import DynamicModule
from nasviz.hparam import Hparam
from nasviz.search.scoring._fastgraph import (
    add_into,
    channels_last,
    fast_graph,
    graph_module,
    read_param,
)
from nasviz.tracing.fx import (
    INPLACE_FUNCTIONS,
    UntraceableError,
    acts_per_channel,
    is_spatial_pool,
    trace_leaves,
)

__all__ = [
    "SubgraphPlan",
    "UntraceableError",
    "add_into",
    "capture_module",
    "channels_last",
    "plan_subgraphs",
    "read_param",
    "snapshot",
    "subgraph_module",
    "trace_leaves",
    "trace_model",
    "union_plan",
    "value_bytes",
]


@dataclass
class SubgraphPlan:
    """Per hparam: its affected nodes and its frontier (see the module docstring)."""

    graph: fx.Graph
    nodes: list[fx.Node]
    data: set[fx.Node]
    affected: dict[str, set[fx.Node]] = field(default_factory=dict)
    #: hparam -> the affected nodes the sub-graph runs (affected minus sliced)
    computed: dict[str, set[fx.Node]] = field(default_factory=dict)
    frontier: dict[str, list[fx.Node]] = field(default_factory=dict)
    #: hparam -> per frontier node, the channel axis to slice it along (None: feed as is)
    axes: dict[str, list[int | None]] = field(default_factory=dict)
    #: hparam -> its sliced nodes and the channel axis of each
    sliced: dict[str, dict[fx.Node, int]] = field(default_factory=dict)
    #: hparam -> why it cannot be evaluated from cached activations
    unusable: dict[str, str] = field(default_factory=dict)
    #: the in-place ops found (captured values are cloned when there is any)
    inplace: list[str] = field(default_factory=list)

    @property
    def placeholders(self) -> list[fx.Node]:
        return [n for n in self.nodes if n.op == "placeholder"]


def _is_seed(node: fx.Node, member: str) -> bool:
    if node.op not in ("call_module", "get_attr"):
        return False
    t = str(node.target)
    return t == member or member.startswith(t + ".") or t.startswith(member + ".")


def plan_subgraphs(
    model: nn.Module,
    graph: fx.Graph,
    members: Mapping[str, Sequence[str]],
    hparams: Mapping[str, Hparam],
) -> SubgraphPlan:
    """Affected, sliced and computed nodes and the frontier of every hparam.

    ``members``: hparam name -> its member modules' qualified names; ``hparams``: name -> Hparam.
    """
    nodes = list(graph.nodes)
    data: set[fx.Node] = set()
    for n in nodes:
        if n.op == "placeholder" or any(i in data for i in n.all_input_nodes):
            data.add(n)
    plan = SubgraphPlan(graph, nodes, data, inplace=_inplace_ops(model, nodes))
    for name, mods in members.items():
        seeds: set[fx.Node] = set()
        missing = []
        for m in mods:
            found = {n for n in nodes if _is_seed(n, m)}
            if not found:
                missing.append(m)
            seeds |= found
        if missing:
            plan.unusable[name] = f"layer(s) {missing} are not called as modules in the fx graph"
            continue
        affected = set(seeds)
        sliced: dict[fx.Node, int] = {}
        for n in nodes:
            if n not in affected and (n.op == "output" or affected & set(n.all_input_nodes)):
                affected.add(n)
            if n in affected:
                axis = _slice_axis(model, n, hparams[name], affected, sliced)
                if axis is not None:
                    sliced[n] = axis
        computed = affected - set(sliced)
        plan.affected[name] = affected
        plan.computed[name] = computed
        plan.frontier[name] = [
            n
            for n in nodes
            if n in data and n not in computed and any(u in computed for u in n.users)
        ]
        plan.axes[name] = [sliced.get(n) for n in plan.frontier[name]]
        plan.sliced[name] = sliced
    return plan


Slices = list[tuple[str | None, int | None]]


def union_plan(
    plan: SubgraphPlan, names: Sequence[str]
) -> tuple[set[fx.Node], list[fx.Node], Slices] | None:
    """The computed nodes and the frontier when every hparam in ``names`` changes at once.

    Each frontier node comes with ``(hparam, axis)``: it is the full-width value sliced along
    ``axis`` by that hparam's active channels, or ``(None, None)``: fed as is. Every frontier
    node is in the frontier of one of ``names`` (it feeds that hparam's computed nodes), so the
    cache of ``names`` holds it. ``None`` if a frontier node is sliced by two of them.
    """
    computed: set[fx.Node] = set().union(*(plan.computed[h] for h in names))
    frontier: list[fx.Node] = []
    slices: Slices = []
    for n in plan.nodes:
        if n not in plan.data or n in computed or not any(u in computed for u in n.users):
            continue
        by = [h for h in names if n in plan.affected[h]]  # affected, not computed: sliced
        if len(by) > 1:
            return None
        frontier.append(n)
        slices.append((by[0], plan.sliced[by[0]][n]) if by else (None, None))
    return computed, frontier, slices


def _slice_axis(
    model: nn.Module, n: fx.Node, hp: Hparam, affected: set[fx.Node], sliced: dict[fx.Node, int]
) -> int | None:
    """The channel axis along which node ``n`` is a slice of its full-width value, or None."""
    ins = n.all_input_nodes
    src = sliced.get(ins[0]) if len(ins) == 1 and n.args and n.args[0] is ins[0] else None
    if n.op == "call_module":
        m = model.get_submodule(str(n.target))
        if isinstance(m, DynamicModule):
            dims = {a: m.dim(a) for a in m.dynamic_attrs}
            layout = getattr(m, "layout", "")
            driven = {a for a, d in dims.items() if d is not None and hp in d.hparams()}
            if driven == {"out_channels"} and dims["out_channels"] is hp:
                regular = layout == "regular" and not getattr(m, "transposed", True)
                return 1 if regular and not (set(ins) & affected) else None
            if driven == {"in_channels", "out_channels"} and layout == "depthwise":
                ok = dims["in_channels"] is hp and dims["out_channels"] is hp and src == 1
                return 1 if ok else None
            if driven == {"out_features"} and dims["out_features"] is hp:
                return -1 if isinstance(m, nn.Linear) and not (set(ins) & affected) else None
            if isinstance(m, _BatchNorm) and dims.get("num_features") is hp and src == 1:
                return 1
            return None
    if acts_per_channel(model, n) or (is_spatial_pool(model, n) and src == 1):
        return src
    return None


def _inplace_ops(model: nn.Module, nodes: list[fx.Node]) -> list[str]:
    found = []
    for n in nodes:
        t = n.target
        if n.op == "call_method" and str(t).endswith("_") and not str(t).startswith("_"):
            found.append(f"Tensor.{t}")
        elif n.op == "call_function":
            fname = getattr(t, "__name__", "")
            if t in INPLACE_FUNCTIONS or fname.endswith("_") or n.kwargs.get("inplace") is True:
                found.append(fname or str(t))
        elif n.op == "call_module" and getattr(model.get_submodule(str(t)), "inplace", False):
            found.append(f"{t} (inplace=True)")
    return found


def snapshot(value: Any) -> Any:
    """A copy of ``value`` whose tensors are cloned (tuples, lists and dicts are walked)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(snapshot(v) for v in value)
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    return value


def value_bytes(value: Any) -> int:
    """Bytes held by the tensors in ``value`` (tuples, lists and dicts are walked)."""
    if isinstance(value, torch.Tensor):
        return int(value.element_size() * value.nelement())
    if isinstance(value, (tuple, list)):
        return sum(value_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(value_bytes(v) for v in value.values())
    return 0


def capture_module(model: nn.Module, plan: SubgraphPlan, keep: list[fx.Node]) -> fx.GraphModule:
    """The whole graph, returning ``(output, (value of each node in keep, ...))``."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out = g.graph_copy(plan.graph, env)
    vals = []
    for n in keep:
        v = env[n]
        if plan.inplace and n.op != "placeholder":
            with g.inserting_after(v):
                v = g.call_function(snapshot, (v,))
        vals.append(v)
    g.output((out, tuple(vals)))
    fast_graph(model, g)
    return graph_module(model, g)


def subgraph_module(
    model: nn.Module,
    plan: SubgraphPlan,
    computed: set[fx.Node],
    frontier: list[fx.Node],
    rewrite: Callable[[fx.Graph], Any] | None = None,
) -> fx.GraphModule:
    """The ``computed`` nodes (e.g. ``plan.computed[name]``); its inputs are the ``frontier``
    values (``plan.frontier[name]``), in order. ``rewrite(graph)`` may change the new graph
    before the layout and in-place passes.
    """
    needed = set(computed)
    for n in reversed(plan.nodes):  # constants and parameters the computed nodes read
        if n in needed:
            needed |= {i for i in n.all_input_nodes if i not in plan.data}
    g = fx.Graph()
    env: dict[fx.Node, Any] = {}
    for i, n in enumerate(frontier):
        env[n] = g.placeholder(f"frontier_{i}")
    for n in plan.nodes:
        if n in needed and n not in env:
            env[n] = g.node_copy(n, lambda a: env[a])
    if rewrite is not None:
        rewrite(g)
    fast_graph(model, g)
    return graph_module(model, g)


#: the former name of :func:`nasviz.tracing.fx.trace_leaves`
trace_model = trace_leaves
