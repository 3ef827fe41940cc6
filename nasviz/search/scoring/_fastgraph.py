"""The sub-graph modules' fast path (private to :mod:`nasviz.search.scoring._subgraph`, which
documents it): 2-d convolution outputs in ``channels_last`` memory format, BatchNorm2d / addition
/ ReLU written into a fresh input nothing else reads, and sliced channel parameters read through
their owner at the active subnet's size.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasviz.dynamic.norm import batchnorm_into
from nasviz.dynamic.params import sliced_params

__all__ = ["add_into", "channels_last", "fast_graph", "graph_module", "read_param"]


def channels_last(value: Any) -> Any:
    """``value`` in ``channels_last`` memory format if it is a 4-d tensor (same values)."""
    if isinstance(value, torch.Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


class _ParamReader:
    """Reads a sliced channel parameter through its owner, at the active subnet's size."""

    def __init__(self, owner: nn.Module, name: str) -> None:
        self.owner, self.name = owner, name


def read_param(reader: _ParamReader) -> Any:
    return getattr(reader.owner, reader.name)


def graph_module(model: nn.Module, g: fx.Graph) -> fx.GraphModule:
    """``fx.GraphModule(model, g)`` whose reads of sliced channel parameters (a layer scale, a
    class token) stay live: a GraphModule copies what ``get_attr`` nodes name once, which would
    freeze them at the width the subnet had when it was built.
    """
    readers: list[str] = []
    try:
        for n in list(g.nodes):
            if n.op != "get_attr":
                continue
            owner_name, _, name = str(n.target).rpartition(".")
            owner = model.get_submodule(owner_name)
            if name not in sliced_params(owner):
                continue
            attr = f"_nv_param_reader_{len(readers)}"
            model.__dict__[attr] = _ParamReader(owner, name)
            readers.append(attr)
            with g.inserting_before(n):
                live = g.call_function(read_param, (g.get_attr(attr),))
            n.replace_all_uses_with(live)
            g.erase_node(n)
        return fx.GraphModule(model, g)
    finally:
        for attr in readers:
            model.__dict__.pop(attr, None)


def fast_graph(model: nn.Module, g: fx.Graph) -> None:
    """Route the output of every 2-d convolution call in ``g`` through :func:`channels_last`, and
    run a BatchNorm2d (:func:`~nasviz.dynamic.norm.batchnorm_into`), an addition (:func:`add_into`)
    or a plain ReLU in place where its input is a fresh tensor nothing else reads.
    """
    for n in list(g.nodes):
        if n.op != "call_module" or not isinstance(model.get_submodule(str(n.target)), nn.Conv2d):
            continue
        with g.inserting_after(n):
            conv = g.call_function(channels_last, (n,))
        n.replace_all_uses_with(conv, delete_user_cb=lambda u, c=conv: u is not c)
    for n in list(g.nodes):
        if n.op != "call_module" or len(n.args) != 1 or n.kwargs:
            continue
        bn = model.get_submodule(str(n.target))
        src = n.args[0]
        if not isinstance(bn, nn.BatchNorm2d) or bn._forward_hooks or bn._forward_pre_hooks:
            continue
        if isinstance(src, fx.Node) and len(src.users) == 1 and _fresh(model, src):
            with g.inserting_before(n):
                module = g.get_attr(str(n.target))
                fused = g.call_function(batchnorm_into, (module, src))
            n.replace_all_uses_with(fused)
            g.erase_node(n)
    for n in list(g.nodes):
        is_add = n.op == "call_function" and n.target in (operator.add, torch.add)
        if not is_add or len(n.args) != 2 or n.kwargs:
            continue
        for i, src in enumerate(n.args):
            if isinstance(src, fx.Node) and len(src.users) == 1 and _fresh(model, src):
                other = n.args[1 - i]
                with g.inserting_before(n):
                    added = g.call_function(add_into, (src, other))
                n.replace_all_uses_with(added)
                g.erase_node(n)
                break
    for n in list(g.nodes):
        if not _plain_relu(model, n) or not isinstance(n.args[0], fx.Node):
            continue
        src = n.args[0]
        if len(src.users) == 1 and _fresh(model, src):
            with g.inserting_after(n):
                relu = g.call_function(torch.relu_, (src,))
            n.replace_all_uses_with(relu)
            g.erase_node(n)


def _plain_relu(model: nn.Module, n: fx.Node) -> bool:
    if len(n.args) != 1 or n.kwargs:
        return False
    if n.op == "call_module":
        return type(model.get_submodule(str(n.target))) is nn.ReLU
    return (n.op == "call_function" and n.target in (torch.relu, F.relu)) or (
        n.op == "call_method" and n.target == "relu"
    )


def add_into(fresh: Any, other: Any) -> Any:
    """``fresh + other``, written into ``fresh`` (nothing else reads it) when the sum has its
    shape and dtype (addition commutes exactly, so the values are the same).
    """
    if (
        isinstance(fresh, torch.Tensor)
        and isinstance(other, torch.Tensor)
        and fresh.shape == torch.broadcast_shapes(fresh.shape, other.shape)
        and fresh.dtype == torch.result_type(fresh, other)
        and not (torch.is_grad_enabled() and (fresh.requires_grad or other.requires_grad))
    ):
        return fresh.add_(other)
    return fresh + other


def _fresh(model: nn.Module, n: fx.Node) -> bool:
    """Whether node ``n`` returns a new tensor of its own that no hook saw (a conv, BatchNorm or
    Linear call without forward hooks).
    """
    if n.op == "call_function" and n.target is channels_last:
        return isinstance(n.args[0], fx.Node) and _fresh(model, n.args[0])
    if n.op == "call_function" and n.target in (batchnorm_into, add_into):
        return True
    if n.op != "call_module":
        return False
    m = model.get_submodule(str(n.target))
    return isinstance(m, (nn.Conv2d, _BatchNorm, nn.Linear)) and not m._forward_hooks
