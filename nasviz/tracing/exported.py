"""Capture with real tensors: ``torch.export`` mapped back to the model's modules.

Where a dummy_input is given, the model is exported with
``torch.export.export(model, args, kwargs, strict=False)`` (in eval mode, without grad; nothing
runs on real data, so BatchNorm statistics never move). Non-strict export follows Python with
the example tensors, so library code that fx cannot trace (Hugging Face transformers'
``**kwargs`` forwards, data-dependent shapes) is captured; the branches taken are the ones the
example takes.

The exported aten graph is rewritten into the shape the analyzer reads from fx:

* parameters, buffers and constants (lifted to inputs by export) become ``get_attr`` nodes
  named by their qualified name in the model;
* a layer op (``aten.linear``, ``aten.conv2d``, ``aten.layer_norm``, ``aten.batch_norm`` ...,
  ``aten.embedding``) whose weight is the own weight of the innermost module on the node's
  ``nn_module_stack`` is that module's call: a ``call_module`` node with the input as its only
  argument. A layer whose parameters are used any other way keeps its aten op, and the
  analyzer sees its weight read directly (so it stays static, with that reason);
* a layer whose own forward is several ops (transformers' ``Conv1D``: ``view`` ->
  ``addmm(bias, x, weight)`` -> ``view``) is one ``call_module`` too, when those ops run
  back to back, read its own weight, take one tensor from outside and give one out;
* every other node keeps its aten target, classified by :mod:`nasviz.tracing.aten`;
* each tensor-valued node carries its shape (from export's fake values) under ``SHAPE_KEY``;
* the output node carries the dotted name of each of its (flat) values under ``OUTPUT_KEY``
  (an :class:`~nasviz.tracing.outputs.OutputNames`; ``None`` for a mutated buffer), read from
  export's output spec, so :mod:`nasviz.tracing.outputs` can tell ``logits`` from
  ``encoder_last_hidden_state``.

Example::

    >>> graph = export_graph(model, ((), {"input_ids": ids}))
    >>> [n.target for n in graph.nodes if n.op == "call_module"][:2]
    ['bert.embeddings.word_embeddings', 'bert.embeddings.token_type_embeddings']
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from nasviz.tracing.aten import aten_name
from nasviz.tracing.functional import LAYER_OP_KEY, family_op
from nasviz.tracing.outputs import OutputNames, spec_names
from nasviz.tracing.rules import layer_spec

__all__ = ["MODULE_KEY", "OUTPUT_KEY", "export_graph"]

#: ``node.meta`` key of the qualified name of the innermost module a node was called from
MODULE_KEY = "nasviz_module"
_SHAPE_KEY = "nasviz_shape"  # the same key as graph.SHAPE_KEY (graph.py imports this module)
#: ``node.meta`` key of the output node: ``(OutputNames, [name or None per flat value])``
OUTPUT_KEY = "nasviz_outputs"

#: layer ops -> (index of the input, index of the weight)
_LAYER_OPS: dict[str, tuple[int, int]] = {
    "aten.linear": (0, 1),
    "aten.conv1d": (0, 1),
    "aten.conv2d": (0, 1),
    "aten.conv3d": (0, 1),
    "aten.convolution": (0, 1),
    "aten.conv_transpose1d": (0, 1),
    "aten.conv_transpose2d": (0, 1),
    "aten.conv_transpose3d": (0, 1),
    "aten.layer_norm": (0, 2),
    "aten.group_norm": (0, 2),
    "aten.batch_norm": (0, 1),
    "aten._native_batch_norm_legit_no_training": (0, 1),
    "aten._native_batch_norm_legit": (0, 1),
    "aten.instance_norm": (0, 1),
    "aten.embedding": (1, 0),
}


def export_graph(model: nn.Module, example: tuple[tuple[Any, ...], dict[str, Any]]) -> fx.Graph:
    """Export ``model`` on ``example`` and rewrite the graph (see the module docstring).

    Raises whatever ``torch.export`` raises when the model cannot be exported.
    """
    args, kwargs = example
    flags = [(m, m.training) for m in model.modules()]
    try:
        for m, _ in flags:
            m.training = False
        with torch.no_grad():
            program = torch.export.export(model, tuple(args), dict(kwargs), strict=False)
    finally:
        for m, t in flags:
            m.training = t
    return _rewrite(model, program)


def _innermost(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path, _cls = list(stack.values())[-1]
    return str(path)


def _rewrite(model: nn.Module, program: Any) -> fx.Graph:
    sig = program.graph_signature
    lifted: dict[str, str] = {
        **sig.inputs_to_parameters,
        **sig.inputs_to_buffers,
        **getattr(sig, "inputs_to_lifted_tensor_constants", {}),
    }
    modules = dict(model.named_modules())
    params = dict(model.named_parameters(remove_duplicate=False))
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    layer_nodes: set[fx.Node] = set()
    closed = _closed_calls(program.graph, lifted, modules, params)
    for node in program.graph.nodes:
        new: fx.Node | None = None
        if node in closed:
            closed_qual, x, last = closed[node]
            if node is not last:
                continue  # an inner op of a layer's own forward: the call_module stands for it
            new = graph.call_module(closed_qual, (env[x],))
            layer_nodes.add(new)
        elif node.op == "placeholder":
            fqn = lifted.get(node.name)
            new = graph.get_attr(fqn) if fqn is not None else graph.placeholder(node.name)
        elif node.op == "output":
            out = graph.output(fx.node.map_arg(node.args[0], lambda n: env[n]))
            out.meta[OUTPUT_KEY] = _output_names(program)
            continue
        elif node.op == "call_function":
            if (
                node.target is operator.getitem
                and isinstance(node.args[0], fx.Node)
                and env.get(node.args[0]) in layer_nodes
                and node.args[1] == 0
            ):
                env[node] = env[node.args[0]]  # a norm op's tuple: (output, mean, rstd)
                continue
            qual = _layer_call(node, lifted, modules, params)
            if qual is not None:
                x_index = _LAYER_OPS[aten_name(node.target) or ""][0]
                x = node.args[x_index]
                new = graph.call_module(qual, (env[x] if isinstance(x, fx.Node) else x,))
                new.meta[LAYER_OP_KEY] = family_op(node.target)
                layer_nodes.add(new)
            else:
                new = graph.call_function(
                    node.target,
                    fx.node.map_arg(node.args, lambda n: env[n]),
                    fx.node.map_arg(node.kwargs, lambda n: env[n]),
                )
        else:  # get_attr of a submodule (higher-order ops): opaque
            new = graph.create_node(
                node.op,
                node.target,
                fx.node.map_arg(node.args, lambda n: env[n]),
                fx.node.map_arg(node.kwargs, lambda n: env[n]),
                node.name,
            )
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            new.meta[_SHAPE_KEY] = tuple(int(s) for s in val.shape)
        where = _innermost(node)
        if where is not None:
            new.meta[MODULE_KEY] = where
        env[node] = new
    # a layer's weight and bias, now read by its call_module, and values only used for their
    # shape (``x[:, :, -1]`` read for ``.shape``) were left without users
    for n in reversed(list(graph.nodes)):
        if n.op in ("get_attr", "call_function") and not n.users:
            graph.erase_node(n)
        elif n.op == "get_attr":  # where a parameter is read: its first user's module
            where = next((u.meta.get(MODULE_KEY) for u in n.users), None)
            if where is not None:
                n.meta[MODULE_KEY] = where
    return graph


def _output_names(program: Any) -> tuple[OutputNames, list[str | None]] | None:
    """The user outputs' dotted names, aligned with the output node's flat values."""
    try:
        names = spec_names(program.call_spec.out_spec)
        kinds = [spec.kind.name for spec in program.graph_signature.output_specs]
    except (AttributeError, TypeError):
        return None
    if kinds.count("USER_OUTPUT") != len(names.names):
        return None
    it = iter(names.names)
    return names, [next(it) if k == "USER_OUTPUT" else None for k in kinds]


def _closed_calls(
    graph: fx.Graph,
    lifted: dict[str, str],
    modules: dict[str, nn.Module],
    params: dict[str, nn.Parameter],
) -> dict[fx.Node, tuple[str, fx.Node, fx.Node]]:
    """Layers whose own forward is several ops (transformers' ``Conv1D``: ``view`` ->
    ``addmm(bias, x, weight)`` -> ``view``): a run of consecutive nodes called from the same
    prunable layer that reads the layer's own weight, takes one tensor input from outside and
    gives one output is that layer's call. Maps each node of such a run to
    ``(qualified name, input, last node)``.
    """
    runs: list[tuple[str, list[fx.Node]]] = []
    for node in graph.nodes:
        qual = _innermost(node) if node.op == "call_function" else None
        if qual is None or aten_name(node.target) in _LAYER_OPS:
            qual = None
        if qual is not None and runs and runs[-1][0] == qual and runs[-1][1][-1].next is node:
            runs[-1][1].append(node)
        elif qual is not None:
            runs.append((qual, [node]))
    found: dict[fx.Node, tuple[str, fx.Node, fx.Node]] = {}
    for qual, run in runs:
        m = modules.get(qual)
        own = getattr(m, "weight", None)
        if m is None or own is None or layer_spec(m) is None:
            continue
        inside = set(run)
        own_params = {id(p) for p in m.parameters(recurse=False)}
        outside: set[fx.Node] = set()
        reads_weight = False
        for n in run:
            for a in n.all_input_nodes:
                fqn = lifted.get(a.name) if a.op == "placeholder" else None
                p = params.get(fqn) if fqn is not None else None
                if p is not None and id(p) in own_params:
                    reads_weight = reads_weight or p is own
                    if any(u not in inside for u in a.users):
                        outside.add(a)  # the weight is also used elsewhere: not closed
                elif a not in inside:
                    outside.add(a)
        escaping = [n for n in run if any(u not in inside for u in n.users)]
        if reads_weight and len(outside) == 1 and escaping == [run[-1]]:
            x = next(iter(outside))
            found.update(dict.fromkeys(run, (qual, x, run[-1])))
    return found


def _layer_call(
    node: fx.Node,
    lifted: dict[str, str],
    modules: dict[str, nn.Module],
    params: dict[str, nn.Parameter],
) -> str | None:
    """The qualified name of the module whose own call ``node`` is, or ``None``."""
    name = aten_name(node.target)
    if name not in _LAYER_OPS:
        return None
    qual = _innermost(node)
    m = modules.get(qual) if qual is not None else None
    if m is None or not (layer_spec(m) is not None or isinstance(m, nn.Embedding)):
        return None
    _x, w = _LAYER_OPS[name]
    weight = node.args[w] if len(node.args) > w else None
    own = getattr(m, "weight", None)
    if weight is None and own is None and layer_spec(m) is not None:
        return qual  # a norm without affine parameters
    if not isinstance(weight, fx.Node) or weight.op != "placeholder":
        return None
    fqn = lifted.get(weight.name)
    if fqn is None or own is None or params.get(fqn) is not own:
        return None
    return qual
