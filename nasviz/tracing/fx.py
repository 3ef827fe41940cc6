"""The fx capture the evaluator cuts its sub-graphs from, and the op facts it needs.

:class:`LeafTracer` is the one torch.fx tracer of nasviz (layers with a dynamic twin, and dynamic
layers themselves, stay leaves); :func:`trace_leaves` returns a converted model's single graph
(the same in train and eval mode, one input). The questions a sub-graph cut asks about an op are
answered from :mod:`nasviz.tracing.rules`' op vocabulary, not from a second table:

* :func:`acts_per_channel`: a ``unary`` op (rules' kind) that is deterministic and acts on each
  element alone (softmax, normalize and dropout are ``unary`` for the channel
  analysis - they keep the layout - but they mix or draw, so they are not);
* :func:`is_spatial_pool`: rules' ``pool`` kind (channel by channel when channels are on axis 1);
* :data:`INPLACE_FUNCTIONS`: the in-place operator functions (``+=``, ``x[i] = v``).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from nasviz._utils import training_flags
from nasviz.dynamic import dynamic_class_for, is_dynamic
from nasviz.errors import UntraceableError
from nasviz.tracing.rules import classify_function, classify_method, classify_module

__all__ = [
    "INPLACE_FUNCTIONS",
    "LeafTracer",
    "UntraceableError",
    "acts_per_channel",
    "is_spatial_pool",
    "trace_leaves",
]

INPLACE_FUNCTIONS = frozenset({
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
    operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor, operator.ilshift,
    operator.irshift, operator.imatmul, operator.setitem,
})  # fmt: skip
#: ``unary`` ops of the vocabulary that mix values along an axis or draw random numbers
_NOT_PER_ELEMENT: frozenset[Any] = frozenset({
    torch.softmax, F.softmax, torch.log_softmax, F.log_softmax, F.normalize, F.dropout,
    F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.dropout, torch.rand_like,
    torch.randn_like, torch.relu_, F.relu_,
})  # fmt: skip
_NOT_PER_ELEMENT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                            nn.AlphaDropout, nn.Softmax, nn.LogSoftmax)  # fmt: skip
_NOT_PER_ELEMENT_METHODS = frozenset({"softmax", "log_softmax"})


class LeafTracer(fx.Tracer):
    """fx tracer that keeps layers with a dynamic twin, and dynamic layers, as leaves."""

    @override
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if is_dynamic(m) or dynamic_class_for(m) is not None:
            return True
        return bool(super().is_leaf_module(m, module_qualified_name))


def trace_leaves(model: nn.Module) -> fx.Graph:
    """The model's fx graph; raises :class:`UntraceableError` with the reason if there is none.

    The graph must be the same in train and eval mode (calibration runs in train mode, scoring in
    eval mode), and ``forward`` must take one input (further parameters need defaults).
    """
    codes: list[str] = []
    graphs: list[fx.Graph] = []
    try:
        for mode in (False, True):
            with training_flags(model, mode=mode):
                graph = LeafTracer().trace(model)
            graphs.append(graph)
            codes.append(graph.python_code("self").src)
    except Exception as e:
        text = str(e).strip().splitlines()
        first = text[0][:160] if text else ""
        msg = (
            f"torch.fx cannot trace {type(model).__name__} as one graph ({type(e).__name__}: "
            f"{first})"
        )
        raise UntraceableError(msg) from e
    if codes[0] != codes[1]:
        msg = f"{type(model).__name__}.forward traces differently in train and eval mode"
        raise UntraceableError(msg)
    graph = graphs[0]
    phs = [n for n in graph.nodes if n.op == "placeholder"]
    if not phs:
        msg = f"{type(model).__name__}.forward takes no input"
        raise UntraceableError(msg)
    for n in phs:
        if str(n.target).startswith("*"):
            msg = f"{type(model).__name__}.forward takes *args or **kwargs"
            raise UntraceableError(msg)
    for n in phs[1:]:
        if not n.args:
            msg = f"{type(model).__name__}.forward needs input {n.target!r} besides the batch"
            raise UntraceableError(msg)
    return graph


def _hashable_in(target: Any, table: frozenset[Any]) -> bool:
    try:
        return target in table
    except TypeError:  # an unhashable target
        return False


def acts_per_channel(model: nn.Module, n: fx.Node) -> bool:
    """Whether node ``n`` acts on each element alone and deterministically (so its output on a
    channel slice is the slice of its output). An ``inplace=True`` module or keyword counts (the
    sub-graph plan snapshots values around in-place ops); a ``Tensor.relu_``-style method does
    not.
    """
    if n.op == "call_module":
        m = model.get_submodule(str(n.target))
        if isinstance(m, _NOT_PER_ELEMENT_MODULES):
            return False
        return not is_dynamic(m) and classify_module(m, str(n.target)).kind == "unary"
    if n.op == "call_function":
        if _hashable_in(n.target, _NOT_PER_ELEMENT):
            return False
        return classify_function(n.target).kind == "unary"
    if n.op == "call_method":
        name = str(n.target)
        if name.endswith("_") or name in _NOT_PER_ELEMENT_METHODS:
            return False
        return classify_method(name).kind == "unary"
    return False


def is_spatial_pool(model: nn.Module, n: fx.Node) -> bool:
    """Whether node ``n`` is a spatial pooling (rules' ``pool`` kind)."""
    if n.op == "call_module":
        m = model.get_submodule(str(n.target))
        return not is_dynamic(m) and classify_module(m, str(n.target)).kind == "pool"
    if n.op == "call_function":
        return classify_function(n.target).kind == "pool"
    return False
