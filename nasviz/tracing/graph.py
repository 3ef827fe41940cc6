"""Graph capture: ``torch.export`` with real tensors, else ``torch.fx``, else child by child.

A model ``torch.fx`` can trace is captured by fx (below): it is fast (ResNet-50: 0.4 s, where
``torch.export`` takes ~10 s on this machine), it tells literal sizes from sizes read from a
tensor (export turns both into ints) and it sees train-mode branches. Where fx fails and an
example input is given, the model is exported with real tensors
(:func:`~nasviz.tracing.exported.export_graph`: ``torch.export`` in non-strict mode, mapped back
to the model's modules); this follows library code fx cannot trace (Hugging Face
transformers). Otherwise, the model is traced with a
``torch.fx`` tracer that keeps every module with a dynamic twin
(:func:`~nasviz.dynamic.dynamic_class_for`) as an opaque leaf call, plus the ``torch.nn``
modules fx keeps by default (activations, pools, ...). With an example input the fx graph is run
once (shape propagation, in eval mode without grad), so every tensor-valued node knows its shape.

The fx path traces in eval mode and in train mode; if ``forward`` branches on ``self.training``
both graphs are analysed. A child module that fx cannot trace (data-dependent control flow,
unsupported Python) becomes an opaque leaf of its parent's graph and is *analysed alone* (its
inputs recorded by a hook pass in eval mode, so statistics never move): its siblings keep
their searchable channels. Only if the parent's own code is untraceable is it handled through
its children, each traced on its own (recursively); channels that cross untraceable code stay
static, and the reason names the untraceable module.

Example::

    >>> captured = capture(model, (torch.randn(2, 3, 32, 32),))
    >>> [g.prefix for g in captured.graphs]      # one graph for a traceable model
    ['']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from nasviz._utils import mha_fastpath_off
from nasviz.dynamic import dynamic_class_for
from nasviz.tracing.exported import export_graph
from nasviz.tracing.functional import collapse_layer_ops
from nasviz.tracing.rules import has_custom_forward

__all__ = ["SHAPE_KEY", "Capture", "CapturedGraph", "capture", "example_args"]

#: ``node.meta`` key of a tensor-valued node's shape (a tuple of ints)
SHAPE_KEY = "nasviz_shape"


@dataclass
class CapturedGraph:
    """One traced (sub)module: its graph, whether shapes are known, and how to word reasons."""

    prefix: str
    root: nn.Module
    graph: fx.Graph
    #: ``None`` if node shapes are known, else why not (used as the reason for shape needs)
    no_shapes: str | None
    #: where the graph's inputs come from ("the model input", ...)
    input_origin: str
    #: reason given to channels that reach the graph's output
    output_reason: str
    #: captured by ``torch.export``: sizes in the graph are ints even where forward read them
    #: from a tensor's shape
    exported: bool = False

    def qualify(self, target: str) -> str:
        """``target``'s qualified name in the whole model (``prefix.target``; as is at the root)."""
        return f"{self.prefix}.{target}" if self.prefix else target


@dataclass
class Capture:
    """All graphs of a model, plus the modules that had to be handled through their children."""

    graphs: list[CapturedGraph] = field(default_factory=list)
    #: qualified name of an untraceable module -> why fx failed
    untraced: dict[str, str] = field(default_factory=dict)
    #: prunable layers called directly from untraceable code -> reason
    leaf_reasons: dict[str, str] = field(default_factory=dict)
    #: qualified name -> why ``torch.export`` failed there (fx was used instead)
    export_failed: dict[str, str] = field(default_factory=dict)


class _LeafTracer(fx.Tracer):
    """fx tracer that keeps layers with a dynamic twin (and ``extra`` modules) as leaves.

    A layer subclass with its own ``forward`` is traced through when fx can trace it alone
    (:mod:`~nasviz.tracing.functional` then finds its family op inside); else it is a leaf. So is
    a ``torch.nn`` module holding prunable layers (``nn.TransformerEncoderLayer``), which fx
    would keep as a leaf (tracing runs with the fused attention fast path off).
    """

    def __init__(self, extra: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.extra = extra

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """Whether fx keeps ``m`` as one ``call_module`` node (see the class docstring)."""
        if id(m) in self.extra:
            return True
        if dynamic_class_for(m) is not None:
            return not (has_custom_forward(m) and _traceable_alone(m))
        leaf = bool(super().is_leaf_module(m, module_qualified_name))
        if leaf and _holds_layers(m):  # nn.TransformerEncoderLayer: its layers can be pruned
            return not _traceable_alone(m)
        return leaf

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        """Trace ``root`` with the fused attention fast path off (see the class docstring)."""
        with mha_fastpath_off():
            return super().trace(root, concrete_args)


def _holds_layers(m: nn.Module) -> bool:
    """Whether a module has sub-modules with a dynamic twin."""
    return any(dynamic_class_for(c) is not None for c in m.modules() if c is not m)


@contextmanager
def _buffers_kept(module: nn.Module) -> Iterator[None]:
    """Put every buffer back afterwards. A train-mode trace through a layer's own forward runs
    its Python on real buffers (timm's ``self.num_batches_tracked.add_(1)``), and a train graph
    run for shapes has ``F.batch_norm(training=True)`` baked in: statistics must never move.
    """
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)


def _traceable_alone(m: nn.Module) -> bool:
    """Whether fx traces ``m``'s own forward in eval and in train mode (arguments after the first
    at their defaults, as a parent that passes only the input calls it: ``src_mask=None``).
    """
    params = list(inspect.signature(m.forward).parameters.values())[1:]
    concrete = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    flags = [(c, c.training) for c in m.modules()]
    try:
        with mha_fastpath_off(), _buffers_kept(m):
            for mode in (False, True):
                for c, _ in flags:
                    c.training = mode
                _LeafTracer().trace(m, concrete_args=concrete)
    except Exception:
        return False
    finally:
        for c, t in flags:
            c.training = t
    return True


def example_args(dummy_input: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` for calling a model on ``dummy_input``.

    A tensor is one positional argument, a tuple/list are the positional arguments, a dict the
    keyword arguments.
    """
    if isinstance(dummy_input, dict):
        return (), dict(dummy_input)
    if isinstance(dummy_input, (tuple, list)):
        return tuple(dummy_input), {}
    return (dummy_input,), {}


def capture(model: nn.Module, dummy_input: Any | None) -> Capture:
    """Trace ``model`` into one or more graphs (see the module docstring)."""
    result = Capture()
    example = None if dummy_input is None else example_args(dummy_input)
    no_input = None if dummy_input is not None else "no dummy_input"
    _trace(model, "", example, result, "the model input", "output layer", no_input)
    return result


def _label(prefix: str, module: nn.Module) -> str:
    return f"'{prefix}'" if prefix else f"the top-level {type(module).__name__}"


def _trace(
    module: nn.Module,
    prefix: str,
    example: tuple[tuple[Any, ...], dict[str, Any]] | None,
    result: Capture,
    input_origin: str,
    output_reason: str,
    no_input: str | None,
) -> None:
    leaves: dict[str, nn.Module] = {}
    try:
        graphs = _trace_both_modes(module)
    except Exception as e:
        if example is not None and _export(
            module, prefix, example, result, input_origin, output_reason
        ):
            return
        leaves = _untraceable_children(module)
        try:
            if not leaves:
                raise
            graphs = _trace_both_modes(module, frozenset(id(m) for m in leaves.values()))
        except Exception:
            _fallback(module, prefix, example, result, e)
            return
    for graph in graphs:
        no_shapes = no_input
        if example is not None:
            no_shapes = _propagate(module, graph, example)
        collapse_layer_ops(module, graph)  # after shapes: the rewritten graph is never run
        result.graphs.append(
            CapturedGraph(prefix, module, graph, no_shapes, input_origin, output_reason)
        )
    if leaves:
        _analyse_alone(module, prefix, example, result, leaves, no_input)


def _export(
    module: nn.Module,
    prefix: str,
    example: tuple[tuple[Any, ...], dict[str, Any]],
    result: Capture,
    input_origin: str,
    output_reason: str,
) -> bool:
    """Capture ``module`` with ``torch.export`` on its example; whether that worked."""
    try:
        with mha_fastpath_off():
            graph = export_graph(module, example)
    except Exception as e:
        result.export_failed[prefix] = (
            f"torch.export failed on {_label(prefix, module)} ({type(e).__name__}: "
            f"{_first_line(e)}); traced with torch.fx instead"
        )
        return False
    result.graphs.append(
        CapturedGraph(prefix, module, graph, None, input_origin, output_reason, True)
    )
    return True


def _untraceable_children(module: nn.Module) -> dict[str, nn.Module]:
    """The direct children fx cannot trace on their own (they become leaves of the parent)."""
    out: dict[str, nn.Module] = {}
    for name, child in module.named_children():
        if _LeafTracer().is_leaf_module(child, name):
            continue
        try:
            _LeafTracer().trace(child)
        except Exception:
            out[name] = child
    return out


def _analyse_alone(
    module: nn.Module,
    prefix: str,
    example: tuple[tuple[Any, ...], dict[str, Any]] | None,
    result: Capture,
    leaves: dict[str, nn.Module],
    no_input: str | None,
) -> None:
    """Capture each untraceable child of a traced ``module`` on its own inputs."""
    label = _label(prefix, module)
    inputs = _record_inputs(module, example, leaves) if example is not None else {}
    for name, child in leaves.items():
        qual = f"{prefix}.{name}" if prefix else name
        child_example = inputs.get(name)
        child_no_input = no_input
        if example is not None and child_example is None:
            child_no_input = f"not called while running {label}"
        _trace(
            child,
            qual,
            child_example,
            result,
            f"the inputs of '{qual}' (analysed alone)",
            f"output of '{qual}', which is analysed alone",
            child_no_input,
        )
        alone = (
            f"fx cannot trace '{qual}' ({type(child).__name__}); it is one opaque op of "
            f"{label} and was analysed alone, so its siblings keep their channels"
        )
        inner = result.untraced.get(qual)
        result.untraced[qual] = f"{alone}; {inner}" if inner else alone


def _trace_both_modes(module: nn.Module, extra: frozenset[int] = frozenset()) -> list[fx.Graph]:
    """The eval-mode graph, plus the train-mode graph if ``forward`` branches on ``training``.

    Both are analysed, so a coupling that exists in one mode only is never missed. The fused
    attention fast path is off meanwhile (``nn.TransformerEncoderLayer`` checks it first).
    """
    flags = [(m, m.training) for m in module.modules()]
    graphs: list[fx.Graph] = []
    seen: set[str] = set()
    try:
        with mha_fastpath_off(), _buffers_kept(module):
            for mode in (False, True):
                for m, _ in flags:
                    m.training = mode
                graph = _LeafTracer(extra).trace(module)
                code = graph.python_code("self").src
                if code not in seen:
                    seen.add(code)
                    graphs.append(graph)
    finally:
        for m, t in flags:
            m.training = t
    return graphs


def _propagate(
    module: nn.Module, graph: fx.Graph, example: tuple[tuple[Any, ...], dict[str, Any]]
) -> str | None:
    """Propagate shapes; returns ``None`` on success, else the reason shapes are unknown."""
    args, kwargs = example
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if kwargs:
        try:
            bound = inspect.signature(type(module).forward).bind(module, *args, **kwargs)
        except TypeError as e:
            return f"shape propagation failed ({e})"
        values = list(bound.arguments.values())[1:]
        args = tuple(values[: len(placeholders)])
    gm = fx.GraphModule(module, graph)
    flags = [(m, m.training) for m in module.modules()]
    try:
        for m, _ in flags:
            m.training = False
        with torch.no_grad(), _buffers_kept(module):  # a train graph may update statistics
            _ShapeRecorder(gm).run(*args)
    except Exception as e:
        for n in graph.nodes:
            n.meta.pop(SHAPE_KEY, None)
        return f"shape propagation failed ({type(e).__name__}: {_first_line(e)})"
    finally:
        for m, t in flags:
            m.training = t
    return None


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph and records each tensor-valued node's shape in ``node.meta``.

    (Like ``torch.fx.passes.shape_prop.ShapeProp``, but records only shapes: it is cheaper and
    never pulls in the fake-tensor machinery.)
    """

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            n.meta[SHAPE_KEY] = tuple(int(s) for s in result.shape)
        return result


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else ""


def _fallback(
    module: nn.Module,
    prefix: str,
    example: tuple[tuple[Any, ...], dict[str, Any]] | None,
    result: Capture,
    error: BaseException,
) -> None:
    label = _label(prefix, module)
    result.untraced[prefix] = (
        f"fx cannot trace {label} ({type(error).__name__}: {_first_line(error)}); "
        "its children were traced separately"
    )
    children = dict(module.named_children())
    captured = _record_inputs(module, example, children) if example is not None else {}
    where = f"the untraceable forward of {label}"
    for name, child in module.named_children():
        qual = f"{prefix}.{name}" if prefix else name
        if dynamic_class_for(child) is not None:
            result.leaf_reasons[qual] = f"called from {where}"
            continue
        if _LeafTracer().is_leaf_module(child, qual):
            continue  # an opaque torch.nn module: its layers are reported as not reached
        child_example = captured.get(name)
        no_input = None
        if child_example is None:
            no_input = "no dummy_input" if example is None else f"not called while running {label}"
        _trace(
            child,
            qual,
            child_example,
            result,
            where,
            f"output used by {where}",
            no_input,
        )


def _record_inputs(
    module: nn.Module,
    example: tuple[tuple[Any, ...], dict[str, Any]],
    targets: dict[str, nn.Module],
) -> dict[str, tuple[tuple[Any, ...], dict[str, Any]]]:
    """Run ``module`` once (eval mode, no grad: statistics never move) and record the first
    arguments each of ``targets`` receives.
    """
    seen: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen.setdefault(name, (tuple(args), dict(kwargs)))

        return hook

    flags = [(m, m.training) for m in module.modules()]
    try:
        for m, _ in flags:
            m.training = False
        for name, child in targets.items():
            handles.append(child.register_forward_pre_hook(make_hook(name), with_kwargs=True))
        args, kwargs = example
        with torch.no_grad():
            module(*args, **kwargs)
    except Exception:
        return seen
    finally:
        for h in handles:
            h.remove()
        for m, t in flags:
            m.training = t
    return seen
