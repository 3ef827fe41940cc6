"""Layer subclasses with their own ``forward``: the family op inside is the layer's call.

torchvision's ``LayerNorm2d`` is an ``nn.LayerNorm`` subclass whose ``forward`` permutes NCHW to
NHWC, calls ``F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)`` and
permutes back; timm's ``BatchNormAct2d`` is a ``BatchNorm2d`` whose ``forward`` calls
``F.batch_norm`` on its own statistics and weights and then an activation. Such a layer still
belongs to its family (it becomes the family's dynamic twin, its weights and statistics sliced),
but where its channels are is decided by what its forward does, never by the base class: the
capture traces *through* the forward, and the one call of the family's functional op
(:attr:`~nasviz.dynamic.DynamicModule.functional_op`) that reads the layer's own weights is
rewritten into a ``call_module`` node of the layer whose input is the tensor the op receives.
The standard rule of the family (a LayerNorm's channels are the last dim, a BatchNorm's dim 1)
then applies to *that* tensor, and the permutes, activations and dropouts around it are analysed
like any other op. (``torch.export`` graphs are rewritten the same way by
:mod:`~nasviz.tracing.exported`, which marks the node with :data:`LAYER_OP_KEY` too.)

A layer whose own weights are used any other way (read twice, computed on, passed to another
op) is not rewritten: the analyzer then sees the weights read directly and leaves the layer
static, with that reason. The rewrite runs after shape propagation (the rewritten graph stands
for the analysis only; it is never run).

Example::

    >>> graph = LeafTracer().trace(model)        # LayerNorm2d traced through
    >>> collapse_layer_ops(model, graph)         # F.layer_norm(permute(x), ...) -> call_module
    1
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from nasviz.dynamic import dynamic_class_for
from nasviz.tracing.aten import aten_name

__all__ = ["LAYER_OP_KEY", "collapse_layer_ops", "family_op", "layer_op_matches"]

#: ``node.meta`` key: the family op (``"layer_norm"``) a ``call_module`` node stands for
LAYER_OP_KEY = "nasviz_layer_op"
_SHAPE_KEY = "nasviz_shape"  # the same key as graph.SHAPE_KEY (graph.py imports this module)

_FUNCTIONALS: dict[Any, str] = {
    F.linear: "linear", F.conv1d: "conv1d", F.conv2d: "conv2d", F.conv3d: "conv3d",
    F.layer_norm: "layer_norm", F.batch_norm: "batch_norm", F.group_norm: "group_norm",
    F.instance_norm: "instance_norm", torch.conv1d: "conv1d", torch.conv2d: "conv2d",
    torch.conv3d: "conv3d", torch.layer_norm: "layer_norm", torch.batch_norm: "batch_norm",
    torch.group_norm: "group_norm", torch.instance_norm: "instance_norm",
}  # fmt: skip
#: aten ops of an exported graph -> the functional op they are
_ATEN_OPS = {
    "_native_batch_norm_legit_no_training": "batch_norm",
    "_native_batch_norm_legit": "batch_norm",
}


def family_op(target: Any) -> str | None:
    """The family op name of a graph target (``F.layer_norm`` or ``aten.layer_norm`` ->
    ``"layer_norm"``), ``None`` for other targets.
    """
    name = aten_name(target)
    if name is not None:
        short = name[len("aten.") :]
        return _ATEN_OPS.get(short, short)
    try:
        return _FUNCTIONALS.get(target)
    except TypeError:  # an unhashable target
        return None


def layer_op_matches(m: nn.Module, node: fx.Node) -> bool:
    """Whether ``node`` (a ``call_module`` of ``m``) stands for the functional op of ``m``'s
    family, found inside ``m``'s own forward.
    """
    twin = dynamic_class_for(m)
    op = node.meta.get(LAYER_OP_KEY)
    return twin is not None and op is not None and op == twin.functional_op


def collapse_layer_ops(root: nn.Module, graph: fx.Graph) -> int:
    """Rewrite each family op call inside a custom-forward layer into a call of that layer
    (see the module docstring); returns how many calls were rewritten.
    """
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or family_op(node.target) is None:
            continue
        qual = _innermost(node)
        m = _submodule(root, qual) if qual is not None else None
        if m is None or qual is None:
            continue
        twin = dynamic_class_for(m)
        if twin is None or twin.functional_op != family_op(node.target):
            continue
        x = _own_input(node, qual, twin.param_dims)
        if x is None:
            continue
        with graph.inserting_before(node):
            new = graph.call_module(qual, (x,))
        new.meta.update(node.meta)
        new.meta[LAYER_OP_KEY] = twin.functional_op
        node.replace_all_uses_with(new)
        params = [a for a in node.all_input_nodes if a.op == "get_attr"]
        graph.erase_node(node)
        for p in params:
            if not p.users:
                graph.erase_node(p)
        count += 1
    return count


def _innermost(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path, _cls = list(stack.values())[-1]
    return str(path)


def _submodule(root: nn.Module, qual: str) -> nn.Module | None:
    try:
        return root.get_submodule(qual)
    except AttributeError:
        return None


def _own_input(node: fx.Node, qual: str, param_dims: dict[str, Any]) -> fx.Node | None:
    """The op's input tensor if every other tensor it takes is one of the layer's own sliced
    parameters/buffers, read for this op only; else ``None``.
    """
    kwargs = dict(node.kwargs)
    x = node.args[0] if node.args else kwargs.pop("input", None)
    if not isinstance(x, fx.Node) or x.op == "get_attr":
        return None
    own = {f"{qual}.{name}" if qual else name for name in param_dims}
    for value in [*node.args[1:], *kwargs.values()]:
        for arg in _nodes(value):
            if arg.op != "get_attr" or str(arg.target) not in own:
                return None  # a computed weight, or another module's tensor
            if any(u is not node for u in arg.users):
                return None  # the weight is also used elsewhere
    return x


def _nodes(value: Any) -> list[fx.Node]:
    if isinstance(value, fx.Node):
        return [value]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _nodes(v)]
    return []
