"""Tracing: the model's graph -> channel-coupling groups, and the reasons a layer stays static.

The pipeline is :func:`~nasviz.tracing.graph.capture` (torch.fx with prunable layers as leaves
and shape propagation; ``torch.export`` with real tensors where fx fails and a dummy_input is
given, its aten graph mapped back to module calls by :mod:`~nasviz.tracing.exported` and its ops
named by :mod:`~nasviz.tracing.aten`; untraceable children analysed alone) ->
:func:`~nasviz.tracing.analyze.analyze` (abstract interpretation of every node: which channel
dimensions are coupled, which must stay static and why) ->
:func:`~nasviz.tracing.plan.make_plan` (config rules, common choices, hparam names, static rows)
-> :func:`~nasviz.tracing.plan.apply_plan`.
"""

from nasviz.tracing.analyze import Analysis, LayerUse, analyze
from nasviz.tracing.graph import Capture, CapturedGraph, capture, example_args
from nasviz.tracing.groups import Cat, Coupling, Rep, Sym
from nasviz.tracing.plan import GroupInfo, Plan, apply_plan, make_plan

__all__ = [
    "Analysis",
    "Capture",
    "CapturedGraph",
    "Cat",
    "Coupling",
    "GroupInfo",
    "LayerUse",
    "Plan",
    "Rep",
    "Sym",
    "analyze",
    "apply_plan",
    "capture",
    "example_args",
    "make_plan",
]
