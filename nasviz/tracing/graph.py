"""Graph capture: ``torch.fx`` with prunable layers as leaves, falling back to children.

The model is traced with a tracer that keeps every module with a dynamic twin
(:func:`~nasviz.dynamic.dynamic_class_for`) as an opaque leaf call, plus the ``torch.nn`` modules
fx keeps by default (activations, pools, ...). With an example input the graph is run once
(shape propagation, in eval mode without grad), so every tensor-valued node knows its shape.

The model is traced in eval mode and in train mode; if ``forward`` branches on ``self.training``
both graphs are analysed. A module whose ``forward`` fx cannot trace (data-dependent control
flow, unsupported Python) is handled through its children: the module is run once on its example
input with forward pre-hooks that record what each child receives, and every child is traced on
its own (recursively, so one untraceable block never freezes the rest of the model). Channels
that cross the untraceable code (a traced child's inputs and outputs) stay static; the reason
names the untraceable module.

Example::

    >>> captured = capture(model, (torch.randn(2, 3, 32, 32),))
    >>> [g.prefix for g in captured.graphs]      # one graph for a traceable model
    ['']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from nasviz.dynamic import dynamic_class_for

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

    def qualify(self, target: str) -> str:
        return f"{self.prefix}.{target}" if self.prefix else target


@dataclass
class Capture:
    """All graphs of a model, plus the modules that had to be handled through their children."""

    graphs: list[CapturedGraph] = field(default_factory=list)
    #: qualified name of an untraceable module -> why fx failed
    untraced: dict[str, str] = field(default_factory=dict)
    #: prunable layers called directly from untraceable code -> reason
    leaf_reasons: dict[str, str] = field(default_factory=dict)


class _LeafTracer(fx.Tracer):
    """fx tracer that keeps layers with a dynamic twin as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if dynamic_class_for(m) is not None:
            return True
        return bool(super().is_leaf_module(m, module_qualified_name))


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
    try:
        graphs = _trace_both_modes(module)
    except Exception as e:
        _fallback(module, prefix, example, result, e)
        return
    for graph in graphs:
        no_shapes = no_input
        if example is not None:
            no_shapes = _propagate(module, graph, example)
        result.graphs.append(
            CapturedGraph(prefix, module, graph, no_shapes, input_origin, output_reason)
        )


def _trace_both_modes(module: nn.Module) -> list[fx.Graph]:
    """The eval-mode graph, plus the train-mode graph if ``forward`` branches on ``training``.

    Both are analysed, so a coupling that exists in one mode only is never missed.
    """
    flags = [(m, m.training) for m in module.modules()]
    graphs: list[fx.Graph] = []
    seen: set[str] = set()
    try:
        for mode in (False, True):
            for m, _ in flags:
                m.training = mode
            graph = _LeafTracer().trace(module)
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
        with torch.no_grad():
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
    captured = _record_child_inputs(module, example) if example is not None else {}
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


def _record_child_inputs(
    module: nn.Module, example: tuple[tuple[Any, ...], dict[str, Any]]
) -> dict[str, tuple[tuple[Any, ...], dict[str, Any]]]:
    """Run ``module`` once and record the first arguments each direct child receives."""
    seen: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen.setdefault(name, (tuple(args), dict(kwargs)))

        return hook

    try:
        for name, child in module.named_children():
            handles.append(child.register_forward_pre_hook(make_hook(name), with_kwargs=True))
        args, kwargs = example
        with torch.no_grad():
            module(*args, **kwargs)
    except Exception:
        return seen
    finally:
        for h in handles:
            h.remove()
    return seen
