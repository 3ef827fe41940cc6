"""Batched BatchNorm re-calibration for the evaluator form (private to the evaluator).

A map entry re-calibrates the BatchNorms downstream of its change on every cached calibration
batch: BatchNorm statistics are reset (cumulative average, ``momentum=None``) and each batch runs
in train mode, so batch ``b`` is normalized with its own statistics and the running mean and
variance become the average over the batches of each batch's mean and unbiased variance. With
many small batches (50 of 16 images) that is 50 tiny sub-graph passes per scored subnet.

The *calibration module* of a sub-graph runs all of them in one pass with the same result: its
inputs are the batches' cached frontier values concatenated along dim 0 (kept that way by
:func:`pack`: the per-batch values are views of the joined tensor, so nothing is copied), and
every BatchNorm call becomes :func:`chunked_batchnorm`, which normalizes and accumulates each
batch's chunk alone with torch's own kernel, in batch order - exactly the per-batch loop's
updates (``num_batches_tracked`` too). Every other op must treat the samples along dim 0 one by
one (convs, Linear, element-wise ops, activations, pools, ``flatten`` from dim 1, ``cat`` along
a later dim): then running the big batch is running each batch. Only the ancestors of the
BatchNorm calls are kept (the head after the last BatchNorm calibrates nothing). A sub-graph
with any other op, a hooked module, or a BatchNorm called twice has no calibration module (the
evaluator keeps the per-batch loop); so does one whose batched pass raises.

Memory: the joined values replace the per-batch ones; a pass runs at most
:data:`GROUP_BYTES` of frontier values at once (:func:`groups`), so a pass's activations stay
bounded like the per-batch loop's are, times a constant.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasviz.dynamic.norm import (
    DynamicBatchNorm1d,
    DynamicBatchNorm2d,
    batchnorm_chunks,
    batchnorm_into,
)
from nasviz.search.scoring._fastgraph import add_into, channels_last, read_param
from nasviz.search.scoring._prefix import prefix_conv
from nasviz.search.scoring._subgraph import _inplace_ops, value_bytes
from nasviz.tracing.fx import acts_per_channel, is_spatial_pool

K = TypeVar("K")

__all__ = [
    "GROUP_BYTES",
    "calib_module",
    "chunked_batchnorm",
    "group_feeds",
    "groups",
    "join",
    "pack",
]

#: at most this many bytes of frontier values per batched calibration pass
GROUP_BYTES = 64 * 2**20

_BN_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, DynamicBatchNorm1d, DynamicBatchNorm2d,
)  # fmt: skip
#: modules that treat the samples along dim 0 one by one
_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.GroupNorm)
_FUNCS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.add,
    torch.sub, torch.mul, torch.relu_, F.conv1d, F.conv2d, F.linear, channels_last, add_into,
    read_param, prefix_conv, batchnorm_into,
}  # fmt: skip
_METHODS = {"relu_", "contiguous", "add", "mul", "add_", "mul_"}


def pack(values: list[Any], sizes: Sequence[int]) -> tuple[list[Any], torch.Tensor | None]:
    """``values`` (one per calibration batch) as views of one tensor joined along dim 0, and that
    tensor; ``(values, None)`` unless they are tensors with ``sizes`` samples along dim 0 and the
    same trailing shape, dtype and device.
    """
    ok = len(values) == len(sizes) and bool(values)
    ok = ok and all(isinstance(v, torch.Tensor) and v.dim() > 0 for v in values)
    if ok:
        first = values[0]
        ok = all(
            v.shape[0] == s and v.shape[1:] == first.shape[1:] and v.dtype == first.dtype
            and v.device == first.device
            for v, s in zip(values, sizes)
        )  # fmt: skip
    if not ok:
        return values, None
    joined = torch.cat(values)
    return list(joined.split(list(sizes))), joined


def join(values: dict[K, list[Any]], inputs: list[Any]) -> dict[K, torch.Tensor]:
    """Replace (in place) each list of ``values`` - one value per calibration batch, ``inputs``
    the batches - by views of one tensor joined along dim 0, where :func:`pack` can; returns the
    joined tensors. A list of the inputs themselves also makes ``inputs`` views (one copy kept).
    """
    if not all(isinstance(x, torch.Tensor) and x.dim() > 0 for x in inputs):
        return {}
    sizes = [int(x.shape[0]) for x in inputs]
    out: dict[K, torch.Tensor] = {}
    for key, vals in values.items():
        views, joined = pack(vals, sizes)
        if joined is not None:
            if all(v is x for v, x in zip(vals, inputs)):
                inputs[:] = views
            values[key], out[key] = views, joined
    return out


def group_feeds(
    frontier: Sequence[K], joined: Mapping[K, torch.Tensor], inputs: Sequence[Any]
) -> Iterator[tuple[int, dict[K, dict[int, torch.Tensor]], tuple[int, ...]]]:
    """Per group of batches (:func:`groups`): its index ``g``, each frontier node's joined values
    as ``{node: {g: value}}``, and the group's batch sizes.
    """
    sizes = [int(x.shape[0]) for x in inputs]
    per_sample = sum(value_bytes(joined[n]) for n in frontier) // max(1, sum(sizes))
    for g, run in enumerate(groups(sizes, per_sample)):
        lo, hi = sum(sizes[: run.start]), sum(sizes[: run.stop])
        yield g, {n: {g: joined[n][lo:hi]} for n in frontier}, tuple(sizes[run.start : run.stop])


def groups(sizes: Sequence[int], bytes_per_sample: int, cap: int | None = None) -> list[range]:
    """Consecutive runs of batch indices, each with at most ``cap`` (default
    :data:`GROUP_BYTES`) bytes of frontier values (at least one batch).
    """
    cap = GROUP_BYTES if cap is None else cap
    out: list[range] = []
    start, held = 0, 0
    for i, s in enumerate(sizes):
        if i > start and held + s * bytes_per_sample > cap:
            out.append(range(start, i))
            start, held = i, 0
        held += s * bytes_per_sample
    if sizes:
        out.append(range(start, len(sizes)))
    return out


def chunked_batchnorm(
    bn: _BatchNorm, x: torch.Tensor, sizes: Sequence[int], inplace: bool
) -> torch.Tensor:
    """``cat([bn(chunk) for chunk in x.split(sizes)])``: each chunk normalized with its own
    statistics and the running statistics updated chunk by chunk, as one call per chunk would
    (torch's ``native_batch_norm`` per chunk; written into ``x`` when ``inplace``).
    """
    if x.dim() < 2 or not x.is_floating_point() or sum(sizes) != x.shape[0]:
        msg = f"cannot split input of size {tuple(x.size())} into batches {sizes}"
        raise ValueError(msg)
    bn._check_input_dim(x)
    return batchnorm_chunks(bn, x, sizes, out=x if inplace else torch.empty_like(x))


def _module(root: nn.Module, n: Any) -> nn.Module | None:
    if isinstance(n, fx.Node) and n.op in ("call_module", "get_attr"):
        m = root.get_submodule(str(n.target))
        return m if isinstance(m, nn.Module) else None
    return None


def _batchnorm_call(root: nn.Module, n: fx.Node) -> tuple[_BatchNorm, fx.Node, bool] | None:
    """``(module, input, inplace)`` if ``n`` calls a BatchNorm module on one input."""
    if n.kwargs:
        return None
    if n.op == "call_function" and n.target is batchnorm_into and len(n.args) == 2:
        bn, src, inplace = _module(root, n.args[0]), n.args[1], True
    elif n.op == "call_module" and len(n.args) == 1:
        bn, src, inplace = _module(root, n), n.args[0], False
    else:
        return None
    if type(bn) not in _BN_TYPES or not isinstance(src, fx.Node) or not isinstance(bn, _BatchNorm):
        return None
    return bn, src, inplace


def _per_sample(root: nn.Module, n: fx.Node) -> bool:
    """Whether node ``n`` treats the samples along dim 0 one by one (see the module docstring)."""
    if n.op in ("placeholder", "get_attr"):
        return True
    if n.op != "call_module" and (acts_per_channel(root, n) or is_spatial_pool(root, n)):
        return True
    if n.op == "call_module":
        m = root.get_submodule(str(n.target))
        if m._forward_hooks or m._forward_pre_hooks:
            return False
        if isinstance(m, nn.Flatten):
            return m.start_dim >= 1
        return isinstance(m, _MODULES) or acts_per_channel(root, n) or is_spatial_pool(root, n)
    if n.op == "call_function" and n.target in (torch.flatten, torch.cat):
        dim = n.kwargs.get("start_dim" if n.target is torch.flatten else "dim", 1)
        dim = n.args[1] if len(n.args) > 1 else dim
        return isinstance(dim, int) and dim >= 1
    if n.op == "call_method" and n.target == "flatten":
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
        return isinstance(dim, int) and dim >= 1
    if n.op == "call_function":
        return n.target in _FUNCS
    return n.op == "call_method" and n.target in _METHODS


def calib_module(sub: fx.GraphModule) -> fx.GraphModule | None:
    """The calibration module of the sub-graph module ``sub`` (see the module docstring): the
    same inputs plus a trailing tuple of batch sizes; ``None`` if it cannot have one.
    """
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    g.graph_copy(sub.graph, env)
    for n in list(g.nodes):
        if n.op == "output":
            g.erase_node(n)
    placeholders = [n for n in g.nodes if n.op == "placeholder"]
    if not placeholders:
        return None
    with g.inserting_after(placeholders[-1]):
        sizes = g.placeholder("batch_sizes")
    bns: list[fx.Node] = []
    seen: set[int] = set()
    for n in list(g.nodes):
        call = _batchnorm_call(sub, n)
        if call is None:
            continue
        bn, src, inplace = call
        if id(bn) in seen:  # called twice: the per-batch order of updates would change
            return None
        seen.add(id(bn))
        with g.inserting_before(n):
            module = g.get_attr(str(n.args[0].target if n.op == "call_function" else n.target))
            new = g.call_function(chunked_batchnorm, (module, src, sizes, inplace))
        n.replace_all_uses_with(new)
        g.erase_node(n)
        bns.append(new)
    if not bns:
        return None
    needed: set[fx.Node] = set()
    for n in reversed(list(g.nodes)):
        if n in bns or n in needed:
            needed.add(n)
            needed |= set(n.all_input_nodes)
    for n in reversed(list(g.nodes)):
        if n in needed or n.op == "placeholder":
            continue
        if _inplace_ops(sub, [n]) and set(n.all_input_nodes) & needed:
            return None  # it changes a value the BatchNorms read: it must not be dropped
        g.erase_node(n)
    for n in g.nodes:
        if n.target is not chunked_batchnorm and not _per_sample(sub, n):
            return None
    g.output(tuple(bns))
    return fx.GraphModule(sub, g)
