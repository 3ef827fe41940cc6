"""Abstract values the analyzer computes for graph nodes (a tensor's channel layout and shape)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch.fx as fx

from nasviz.tracing.graph import SHAPE_KEY
from nasviz.tracing.groups import Expr


@dataclass(frozen=True)
class AttrUse:
    """An int attribute of an ordinary module that a graph used as a channel size (GPT-2's
    ``split_size``, Whisper's ``num_heads``): it follows ``expr``'s active size.
    """

    qual: str
    owner: str
    attr: str
    expr: Expr


__all__ = ["AttrUse", "Many", "Val", "iter_vals", "node_is_tensor", "node_shape", "resolve_dim"]


@dataclass(frozen=True)
class Val:
    """What the analyzer knows about one node's value.

    ``expr`` is the channel layout along dimension ``axis`` (negative, counted from the end), or
    ``None`` when no prunable channels are tracked in it. ``shape`` is known when shapes were
    propagated; ``tensor`` is ``False`` for Python values (sizes, dtypes) and ``None`` when
    unknown. ``origin`` words where an untracked value comes from, for reasons.

    ``copies`` are further axes (negative) that index *copies* of the channel layout: a view that
    splits the channels into ``(groups, channels per group)`` (a channel shuffle, attention
    heads) makes the leading sizes copy axes once the groups were coupled with each other. Only
    ops that know how to move them keep them; any other op drops them, which is conservative (a
    later merge of those axes into the channels is then refused).

    ``tail`` (see below) lets a flatten after an adaptive pool work without a dummy_input.
    """

    expr: Expr | None
    axis: int | None
    shape: tuple[int, ...] | None
    tensor: bool | None
    origin: str
    copies: tuple[int, ...] = ()
    #: sizes of the dims right of the channel axis when the full shape is unknown but these
    #: are (the output of an adaptive pool without a dummy_input)
    tail: tuple[int, ...] | None = None
    #: the rank and the sizes known without a dummy_input (``None`` where unknown), for ops
    #: that move the channels behind an adaptive pool (a ``LayerNorm2d``'s permutes)
    known: tuple[int | None, ...] | None = None

    def with_layout(self, expr: Expr | None, axis: int | None) -> Val:
        """A copy with layout ``expr`` along ``axis`` (no axis when ``expr`` is ``None``)."""
        return replace(self, expr=expr, axis=axis if expr is not None else None)


@dataclass(frozen=True)
class Many:
    """A tuple of tensors that share one layout (``chunk`` along another dimension)."""

    item: Val


def iter_vals(obj: Any) -> Iterator[Val]:
    """Every :class:`Val` inside nested args/kwargs."""
    if isinstance(obj, Val):
        yield obj
    elif isinstance(obj, Many):
        yield obj.item
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from iter_vals(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from iter_vals(x)
    elif isinstance(obj, slice):
        yield from iter_vals((obj.start, obj.stop, obj.step))


def node_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The shape recorded on ``node`` by shape propagation (``None``: none recorded)."""
    shape: tuple[int, ...] | None = node.meta.get(SHAPE_KEY)
    return shape


def node_is_tensor(node: fx.Node, shapes_known: bool) -> bool | None:
    """Whether ``node`` produces a tensor (it has a recorded shape); ``None`` when shapes are
    unknown.
    """
    if not shapes_known:
        return None
    return SHAPE_KEY in node.meta


def resolve_dim(dim: Any, ndim: int | None) -> int | None:
    """A dimension index as a negative index (``None`` if it cannot be resolved)."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        return None
    if dim < 0:
        return dim if ndim is None or -ndim <= dim else None
    if ndim is None or dim >= ndim:
        return None
    return dim - ndim
