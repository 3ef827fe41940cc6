"""The analyzer: walks the captured graphs and couples channel dimensions into groups.

The module is one piece (over the house ~400 lines): it is the end of the analyzer's mixin
chain (:mod:`~nasviz.tracing.shapeops` -> :mod:`~nasviz.tracing.headops` ->
:mod:`~nasviz.tracing.ops` -> here), the node walk and the layer handlers that the op handlers call
back into; the op handlers already live in those modules.

Every node gets an abstract value (:class:`~nasviz.tracing.values.Val`): the layout of its
channel dimension and the axis that carries it. Prunable layers create elements (their output
widths) and read layouts (their input widths); norms and depthwise convs pass their input's
layout through; element-wise ops couple their inputs; ``torch.cat`` on the channel axis builds a
concatenation; shape ops move the axis (see :mod:`nasviz.tracing.shapeops`). Whatever is not
understood fixes the channels it touches, with a reason: the analysis is conservative and never
couples dimensions it cannot prove to be coupled.

Example::

    >>> analysis = analyze(model, capture(model, (x,)))
    >>> analysis.layers["layer1.0.conv1"].dims["out_channels"]
    Sym(elem=3, size=16)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from nasviz.dynamic import dynamic_class_for, is_dynamic
from nasviz.tracing.exported import MODULE_KEY, OUTPUT_KEY
from nasviz.tracing.functional import layer_op_matches
from nasviz.tracing.graph import Capture, CapturedGraph
from nasviz.tracing.groups import Coupling, Expr, Sym, expr_size, make_rep
from nasviz.tracing.ops import PointwiseOps
from nasviz.tracing.outputs import leaf_names, pinned_outputs
from nasviz.tracing.rules import (
    LayerSpec,
    OpKind,
    classify_function,
    classify_method,
    classify_module,
    has_custom_forward,
    layer_spec,
)
from nasviz.tracing.values import AttrUse, Val, iter_vals, node_is_tensor, node_shape

__all__ = ["Analysis", "ChannelParam", "LayerUse", "analyze"]

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


@dataclass
class LayerUse:
    """One prunable layer as tracing saw it: the layout of each channel attribute.

    ``dims[attr]`` is the layout of that width; an attribute missing from ``dims`` is static and
    ``static[attr]`` says why.
    """

    name: str
    module: nn.Module
    spec: LayerSpec
    dims: dict[str, Expr] = field(default_factory=dict)
    static: dict[str, str] = field(default_factory=dict)
    out_elem: int | None = None


@dataclass(frozen=True)
class ChannelParam:
    """A parameter/buffer of an ordinary module whose dimension ``dim`` may follow a group."""

    qual: str
    owner: str
    attr: str
    dim: int
    elem: int


@dataclass
class Analysis:
    """The result: the coupling of elements, every prunable layer met, and layer-level reasons."""

    coupling: Coupling
    layers: dict[str, LayerUse]
    #: prunable layers that are entirely static, with the reason (untraced, custom forward,
    #: parameters used directly in forward ...)
    layer_reasons: dict[str, str]
    notes: list[str]
    #: channel parameters met (qualified name -> where), see ``_Analyzer._channel_param``
    params: dict[str, ChannelParam] = field(default_factory=dict)
    #: int attributes that follow a channel size (qualified name -> use), see
    #: ``ShapeOps._follow``
    attrs: dict[str, AttrUse] = field(default_factory=dict)
    #: model outputs whose widths follow the pruned model (see :mod:`nasviz.tracing.outputs`)
    free_outputs: list[str] = field(default_factory=list)


def analyze(
    model: nn.Module, captured: Capture, keep_outputs: Sequence[str] | None = None
) -> Analysis:
    """Run the analyzer over every captured graph of ``model``.

    ``keep_outputs`` names the model outputs that keep their width (``None``: the default rule);
    see :mod:`nasviz.tracing.outputs`.
    """
    a = _Analyzer(model, keep_outputs)
    for cg in captured.graphs:
        a.run(cg)
    reasons: dict[str, str] = dict(a.direct)
    for name, use in a.layers.items():
        if name in reasons:
            for expr in use.dims.values():
                a.c.fix_expr(expr, f"coupled with '{name}' ({reasons[name]})")
    for name, m in model.named_modules():
        if name in reasons:
            continue
        if layer_spec(m) is None or name in a.layers:
            continue
        if name in captured.leaf_reasons:
            reasons[name] = captured.leaf_reasons[name]
        elif name in a.opaque:
            reasons[name] = a.opaque[name]
        else:
            reasons[name] = _unreached_reason(name, captured, a.called)
    notes = [*captured.export_failed.values(), *captured.untraced.values(), *a.output_notes()]
    return Analysis(a.c, a.layers, reasons, notes, a.params, a.attrs, list(a.free_outputs))


def _unreached_reason(name: str, captured: Capture, called: dict[str, str]) -> str:
    parts = name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:k])
        if parent in called:
            return f"inside {called[parent]}, which nasviz treats as one opaque op"
        if parent in captured.untraced:
            return f"inside untraceable '{parent}' and not called from a traced part"
    return "not reached by tracing (never called in forward)"


class _Analyzer(PointwiseOps):
    def __init__(self, model: nn.Module, keep_outputs: Sequence[str] | None = None) -> None:
        self.model = model
        self.keep_outputs = None if keep_outputs is None else list(keep_outputs)
        #: model outputs whose widths follow the pruned model (not fixed), in order met
        self.free_outputs: dict[str, None] = {}
        self.top_outputs_seen = False
        self.modules = dict(model.named_modules())
        self.c = Coupling()
        self.layers: dict[str, LayerUse] = {}
        self.opaque: dict[str, str] = {}
        #: prunable layers whose parameters or buffers forward reads directly -> reason
        self.direct: dict[str, str] = {}
        #: qualified name -> op name of every non-prunable module called as one op
        self.called: dict[str, str] = {}
        self.params: dict[str, ChannelParam] = {}
        self.attrs: dict[str, AttrUse] = {}
        self._cur_module: nn.Module | None = None
        self._cur_qual = ""

    def run(self, cg: CapturedGraph) -> None:
        env: dict[fx.Node, Any] = {}
        for node in cg.graph.nodes:
            env[node] = self._node(node, env, cg)

    def _output(self, node: fx.Node, structure: Any, cg: CapturedGraph) -> None:
        """Fix the channels that reach an output that keeps its width (all of them, except the
        model's own outputs that :func:`~nasviz.tracing.outputs.pinned_outputs` frees).
        """
        exported = node.meta.get(OUTPUT_KEY)
        if exported is not None and isinstance(structure, (tuple, list)):
            names, per_value = exported
            leaves: list[tuple[str | None, Any]] = list(zip(per_value, structure, strict=False))
        else:
            names, flat = leaf_names(structure)
            leaves = list(zip(names.names, flat, strict=True))
        pinned: set[str] | None = None
        if cg.prefix == "":  # the model's own outputs (not a sub-graph's)
            self.top_outputs_seen = True
            pinned = pinned_outputs(names, self.keep_outputs)
        several = len(leaves) > 1
        for name, leaf in leaves:
            free = pinned is not None and name is not None and name not in pinned
            for v in iter_vals(leaf):
                if v.expr is None:
                    continue
                if free:
                    self.free_outputs[str(name)] = None
                    continue
                where = f" ({name!r})" if several and name is not None else ""
                self.c.fix_expr(v.expr, f"{cg.output_reason}{where}")

    def output_notes(self) -> list[str]:
        """Notes on the model outputs whose widths follow the pruned model."""
        notes = []
        if self.free_outputs:
            how = (
                "not named in keep_outputs"
                if self.keep_outputs is not None
                else "by-products of a transformers ModelOutput with logits, whose widths "
                "follow the config"
            )
            notes.append(
                f"model outputs {list(self.free_outputs)} follow the pruned widths ({how}); "
                'keep their width with nv.convert(model, mode=[("fastnas", {"keep_outputs": '
                '["logits", ...]})], dummy_input=x)'
            )
        if self.keep_outputs is not None and not self.top_outputs_seen:
            notes.append(
                f"keep_outputs={self.keep_outputs!r} was not applied: the model's top-level "
                "forward could not be captured, so every output keeps its width"
            )
        return notes

    # -- dispatch ------------------------------------------------------------------------------
    def _node(self, node: fx.Node, env: dict[fx.Node, Any], cg: CapturedGraph) -> Any:
        if node.op == "placeholder":
            return self._untracked(node, cg, cg.input_origin)
        if node.op == "get_attr":
            return self._get_attr(node, cg)
        args: Args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs: Kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "output":
            self._output(node, args[0] if args else None, cg)
            return None
        self._cur_module = None
        if node.op == "call_module":
            qual = cg.qualify(str(node.target))
            m = self.modules[qual]
            spec = layer_spec(m)
            why = _opaque_reason(m, node) if spec is not None else None
            if spec is not None and why is None:
                return self._layer(node, qual, m, spec, args, kwargs, cg)
            if spec is not None:
                kind = OpKind("unknown", f"{type(m).__name__} '{qual}'")
                self.opaque[qual] = why or ""
            else:
                kind = classify_module(m, qual)
                self._cur_module, self._cur_qual = m, qual
            self.called[qual] = kind.name
        elif node.op == "call_function":
            kind = classify_function(node.target)
        else:
            kind = classify_method(str(node.target))
        handler: Callable[..., Any] = getattr(self, f"_op_{kind.kind}", self._op_unknown)
        return handler(node, kind, args, kwargs, cg)

    def _untracked(self, node: fx.Node, cg: CapturedGraph, origin: str) -> Val:
        return Val(None, None, node_shape(node), node_is_tensor(node, cg.no_shapes is None), origin)

    def _get_attr(self, node: fx.Node, cg: CapturedGraph) -> Val:
        target = str(node.target)
        obj: Any = cg.root
        for part in target.split("."):
            obj = getattr(obj, part, None)
        what = (
            "parameter"
            if isinstance(obj, nn.Parameter)
            else "buffer"
            if isinstance(obj, torch.Tensor)
            else "attribute"
        )
        shape = tuple(obj.shape) if isinstance(obj, torch.Tensor) else None
        tensor = isinstance(obj, torch.Tensor)
        qual = cg.qualify(target)
        owner, _, attr = qual.rpartition(".")
        origin = f"{what} '{qual}'"
        layer = self.modules.get(owner, nn.Module())
        twin = dynamic_class_for(layer)
        if tensor and twin is not None and not _unsliced_own_read(layer, owner, attr, node, cg):
            # sorting or slicing this layer would change a tensor forward also uses directly
            # (a tensor it never slices, read by its own forward, does not: num_batches_tracked)
            self.direct[owner] = _direct_reason(self.modules, owner, attr, node)
        elif (
            tensor
            and shape
            and owner in self.modules
            and any(n > 1 for n in shape)
            and _is_weight(self.modules[owner], attr, obj)
        ):
            return self._channel_param(qual, owner, attr, shape, origin)
        return Val(None, None, shape, tensor, origin)

    def _op_embedding(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        """An embedding's output width is dim 1 of its weight: a channel parameter (so a
        token + position embedding stream can be pruned, the weight sliced by columns).
        """
        idx = args[0] if args else None
        if isinstance(idx, Val) and idx.expr is not None:
            self.c.fix_expr(idx.expr, f"used as the indices of {kind.name}")
        m = self._cur_module
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        if isinstance(m, nn.Embedding) and m.max_norm is None and m.weight.dim() == 2:
            qual = self._cur_qual
            expr = self._channel_param(
                f"{qual}.weight",
                qual,
                "weight",
                tuple(m.weight.shape),
                f"'{qual}'",
                dim=1,
                producer=(qual, "embedding_dim"),
            ).expr
        elif m is None and isinstance(weight, Val) and weight.expr is not None:
            expr = weight.expr if weight.axis == -1 else None  # F.embedding(idx, weight)
            if expr is None:
                self.c.fix_expr(weight.expr, f"the weight of {kind.name}")
        else:
            expr = None
        if expr is None:
            return self._untracked(node, cg, f"{kind.name} (not a prunable layer)")
        return Val(expr, -1, node_shape(node), True, f"the output of {kind.name}")

    def _channel_param(
        self,
        qual: str,
        owner: str,
        attr: str,
        shape: tuple[int, ...],
        origin: str,
        dim: int | None = None,
        producer: tuple[str, str] | None = None,
    ) -> Val:
        """A parameter or buffer of an ordinary module: its last dim of size > 1 gets an element
        of its own, so an element-wise op with pruned channels along that dim couples it (a
        layer scale, a class token); any other use fixes it, as for a layer's output.
        """
        if dim is None:
            dim = max(i for i, n in enumerate(shape) if n > 1)
        known = self.params.get(qual)
        if known is None:
            elem = self.c.new(shape[dim], producer, origin)
            self.params[qual] = known = ChannelParam(qual, owner, attr, dim, elem)
        return Val(Sym(known.elem, shape[dim]), dim - len(shape), shape, True, origin)

    # -- prunable layers -----------------------------------------------------------------------
    def _layer(
        self,
        node: fx.Node,
        qual: str,
        m: nn.Module,
        spec: LayerSpec,
        args: Args,
        kwargs: Kwargs,
        cg: CapturedGraph,
    ) -> Val | tuple[Val, Val]:
        use = self.layers.get(qual)
        if use is None:
            use = self.layers[qual] = LayerUse(qual, m, spec)
        x = args[0] if args and isinstance(args[0], Val) else None
        if spec.kind == "attention":
            return self._attention(node, qual, m, spec, use, args, kwargs, cg)
        for v in iter_vals((args[1:], kwargs)):
            if v.expr is not None:
                self.c.fix_expr(v.expr, f"passed to '{qual}' as an extra argument")
        in_expr, in_reason = self._input_layout(qual, spec, x, cg)
        out_shape = node_shape(node)
        if spec.kind == "norm":
            if in_expr is not None:
                why = _norm_problem(m, in_expr)
                if why:
                    self.c.fix_expr(in_expr, f"'{qual}': {why}")
                    in_expr, in_reason = None, why
            self._merge(use, spec.in_attr, in_expr, in_reason)
            if x is None or x.expr is None:
                return self._untracked(node, cg, x.origin if x else f"'{qual}'")
            return Val(x.expr, x.axis, out_shape, True, x.origin, (), x.tail, x.known)
        groups = spec.groups
        out_size = int(getattr(m, spec.out_attr))
        in_size = int(getattr(m, spec.in_attr))
        out_axis = -1 if spec.kind == "linear" else spec.axis
        assert out_axis is not None
        if groups > 1 and groups == in_size and out_size % in_size == 0:
            # depthwise (channel multiplier m = out / in): every input channel becomes m outputs
            out_expr = None if in_expr is None else make_rep(in_expr, out_size // in_size)
            self._merge(use, spec.in_attr, in_expr, in_reason)
            self._merge(use, spec.out_attr, out_expr, in_reason)
            if out_expr is None:
                return self._untracked(node, cg, f"'{qual}' (depthwise; {in_reason})")
            return Val(out_expr, out_axis, out_shape, True, "")
        why = f"grouped conv (groups={groups}): its channels cannot be cut into {groups} parts"
        # every group keeps the same positions of its input channels (the parts are coupled)
        if (
            groups > 1
            and in_expr is not None
            and self.c.split(in_expr, groups, f"consumed by '{qual}': {why}") is None
        ):
            in_expr, in_reason = None, why
        self._merge(use, spec.in_attr, in_expr, in_reason)
        if use.out_elem is None:
            use.out_elem = self.c.new(out_size, (qual, spec.out_attr), f"'{qual}'")
            use.dims[spec.out_attr] = Sym(use.out_elem, out_size)
            if groups > 1:  # ... and so do its outputs
                self.c.split(use.dims[spec.out_attr], groups, f"'{qual}': {why}")
        return Val(Sym(use.out_elem, out_size), out_axis, out_shape, True, f"'{qual}'")

    def _attention(
        self,
        node: fx.Node,
        qual: str,
        m: nn.Module,
        spec: LayerSpec,
        use: LayerUse,
        args: Args,
        kwargs: Kwargs,
        cg: CapturedGraph,
    ) -> tuple[Val, Val]:
        """``(out, weights) = attn(query, key, value, ...)``: the stream (``spec.in_attr``, the
        last dim) passes from the query to the output; key and value share it when the layer
        says so (``spec.shared``), else they stay static, like the masks.
        """
        names = ("query", "key", "value")
        qkv = [args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(names)]
        x = qkv[0] if isinstance(qkv[0], Val) else None
        in_expr, in_reason = self._input_layout(qual, spec, x, cg)
        for name, v in zip(names[1:], qkv[1:]):
            if not isinstance(v, Val) or v.expr is None:
                continue
            shared = name in spec.shared
            if shared and in_expr is not None and v.axis == -1:
                self.c.unify(in_expr, v.expr, f"'{qual}' attends over differently laid out inputs")
            else:
                why = f"the key/value of '{qual}'" + ("" if shared else " (its own kdim/vdim)")
                self.c.fix_expr(v.expr, why)
                if in_expr is not None and shared:
                    self.c.fix_expr(in_expr, why)
        skip = {id(v) for v in qkv if isinstance(v, Val)}
        for v in iter_vals((args[3:], {k: a for k, a in kwargs.items() if k not in names})):
            if v.expr is not None and id(v) not in skip:
                self.c.fix_expr(v.expr, f"passed to '{qual}' as a mask")
        self._merge(use, spec.in_attr, in_expr, in_reason)
        weights = Val(None, None, None, True, f"the attention weights of '{qual}'")
        if x is None or in_expr is None:
            return self._untracked(node, cg, x.origin if x else f"'{qual}'"), weights
        return Val(x.expr, -1, None, True, x.origin), weights

    def _input_layout(
        self, qual: str, spec: LayerSpec, x: Val | None, cg: CapturedGraph
    ) -> tuple[Expr | None, str]:
        if x is None:
            return None, "its input is not a traced tensor"
        if x.expr is None or x.axis is None:
            return None, f"its input comes from {x.origin}"
        axis = spec.axis
        if axis is None and spec.pos_axis is not None and x.shape is not None:
            axis = spec.pos_axis - len(x.shape)
        elif axis is None and spec.pos_axis == 1 and _reads_dim1(spec, x):
            axis = x.axis
        if axis is None:
            why = f"'{qual}' needs the input rank ({cg.no_shapes})"
        elif axis != x.axis:
            why = f"'{qual}' reads its channels from another dimension"
        else:
            return x.expr, ""
        self.c.fix_expr(x.expr, why)
        return None, why

    def _merge(self, use: LayerUse, attr: str, expr: Expr | None, reason: str) -> None:
        """Record a layer's layout for ``attr``; a layer called twice couples both calls."""
        if attr not in use.dims and attr not in use.static:
            if expr is None:
                use.static[attr] = reason
            else:
                use.dims[attr] = expr
            return
        prev = use.dims.get(attr)
        if prev is not None and expr is not None:
            self.c.unify(prev, expr, f"'{use.name}' is called on differently laid out inputs")
        elif prev is not None:
            self.c.fix_expr(prev, f"'{use.name}' is also called on a static input ({reason})")
            del use.dims[attr]
            use.static[attr] = reason
        elif expr is not None:
            self.c.fix_expr(expr, f"'{use.name}' is also called where {use.static[attr]}")


def _direct_reason(modules: dict[str, nn.Module], owner: str, attr: str, node: fx.Node) -> str:
    """Why a layer whose parameter forward reads directly stays static."""
    why = _opaque_reason(modules[owner])
    if why is not None:
        return why
    user = node.meta.get(MODULE_KEY)
    if isinstance(user, str) and user != owner and user in modules:
        label = f"nn.{type(modules[user]).__name__} '{user}'" if user else "the model"
        return f"its {attr} is used directly by the code of {label}, not by a call of the layer"
    return f"its {attr} is also used directly in forward"


def _unsliced_own_read(
    layer: nn.Module, owner: str, attr: str, node: fx.Node, cg: CapturedGraph
) -> bool:
    """Whether ``node`` reads a tensor of ``layer`` that no slicing changes (timm's
    ``num_batches_tracked.add_(1)``) inside the layer's own, overriding forward.
    """
    twin = dynamic_class_for(layer)
    if twin is None or attr in twin.param_dims or not has_custom_forward(layer):
        return False
    stack = node.meta.get("nn_module_stack")
    if stack:  # fx: paths relative to the traced root
        return cg.qualify(str(list(stack.values())[-1][0])) == owner
    return node.meta.get(MODULE_KEY) == owner


def _reads_dim1(spec: LayerSpec, x: Val) -> bool:
    """A norm reading dim 1 at every rank (BatchNorm1d, GroupNorm, SyncBatchNorm) without a
    known rank: its input's channels are dim 1 when the producer puts them right after the
    batch dims, as a conv's ``(N, C, *spatial)`` and a Linear's ``(N, C)`` output do; the
    widths must agree (a norm over another dim would have another size).
    """
    return x.expr is not None and x.axis is not None and x.shape is None and spec.kind == "norm"


def _is_weight(owner: nn.Module, attr: str, obj: torch.Tensor) -> bool:
    """Whether a tensor may be a channel parameter: a floating parameter or a persistent buffer
    (a non-persistent buffer such as rotary ``inv_freq`` is computed, not a weight to slice).
    """
    if not obj.is_floating_point():
        return False
    return attr in owner._parameters or attr not in owner._non_persistent_buffers_set


def _opaque_reason(m: nn.Module, node: fx.Node | None = None) -> str | None:
    """Why a layer with a dynamic twin is still treated as an opaque op (``None``: it is not).

    A subclass with its own forward is a layer call only where ``node`` stands for its family's
    functional op found inside that forward (:mod:`nasviz.tracing.functional`).
    """
    twin = dynamic_class_for(m)
    if twin is None:
        return "no dynamic twin"
    if is_dynamic(m):
        return "already converted to a dynamic layer (convert each model once)"
    if has_custom_forward(m) and (node is None or not layer_op_matches(m, node)):
        op = f"F.{twin.functional_op}" if twin.functional_op else "its family's op"
        return (
            f"{type(m).__name__} overrides forward, and nasviz found no single {op} call on "
            f"its own weights there (its forward is untraceable, or uses the weights otherwise): "
            f"not a {twin.torch_cls.__name__} nasviz can slice"
        )
    if m._forward_hooks or m._forward_pre_hooks:
        return "it has forward hooks, which tracing cannot see (e.g. old-style weight_norm)"
    if parametrize.is_parametrized(m):
        return "its parameters are parametrized (torch.nn.utils.parametrize)"
    return twin.unsupported_reason(m)


def _norm_problem(m: nn.Module, expr: Expr) -> str:
    if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) != 1:
        return "normalizes over several dimensions"
    if isinstance(m, nn.GroupNorm) and not isinstance(expr, Sym):
        return "GroupNorm over concatenated channels (its groups would shift)"
    if expr_size(expr) != int(getattr(m, "num_features", expr_size(expr))):
        return "channel count does not match"
    return ""
