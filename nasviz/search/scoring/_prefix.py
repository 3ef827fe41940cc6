"""Prefix sums for the first convolution after a narrowed group (private to the evaluator).

When one hparam narrows a group from ``w`` to ``w'`` channels, the first convolution that reads
the group's (cached, sliced) output - ``stem -> res_conv1`` in the digits CNN - computes
``y(w) = sum over the first w input channels of conv(x_c, W_c)``: a sum over a prefix of the
group's channel order. The map scores an hparam's widths one after the other, narrowest first,
so ``y(w')`` is ``y(w)`` plus the convolution of the ``w' - w`` new channels only, instead of all
``w'`` of them. :func:`add_prefix_convs` rewrites such convolutions of a sub-graph into
:func:`prefix_conv` calls, each fed a :class:`PrefixSlot` per batch that remembers the last
width and its sum. The values equal the direct convolution up to floating-point summation
order; a width narrower than the remembered one is computed directly.

Eligible: a plain 2-d convolution (``groups == 1``, zero padding, no searched kernel size, no
hooks) fed directly by a frontier value, whose input channels are driven by the hparam and whose
output channels are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from nasviz.dynamic.base import DynamicModule
from nasviz.hparam import Hparam

__all__ = ["PrefixSlot", "add_prefix_convs", "prefix_conv", "slot_bytes"]


@dataclass
class PrefixSlot:
    """One batch's remembered prefix sum: the input width it covers and the output."""

    width: int = 0
    total: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        t = self.total
        return 0 if t is None else t.element_size() * t.nelement()


def _columns(conv: nn.Conv2d, start: int, stop: int) -> torch.Tensor:
    """Input channels ``start:stop`` of the active order, as weight columns."""
    w = conv.weight
    if isinstance(conv, DynamicModule):
        out = conv.active_index("out_channels")
        if out is not None:
            w = w[out] if isinstance(out, slice) else w.index_select(0, out)
        idx = conv.active_index("in_channels")
        if isinstance(idx, torch.Tensor):
            return w.index_select(1, idx[start:stop])
        if isinstance(idx, slice):
            first = idx.indices(w.shape[1])[0]
            return w[:, first + start : first + stop]
    return w[:, start:stop]


def prefix_conv(conv: nn.Conv2d, x: torch.Tensor, slot: PrefixSlot) -> torch.Tensor:
    """``conv(x)``, as the remembered narrower sum plus the new input channels when it can."""
    width = int(x.shape[1])
    prev = slot.total
    if prev is None or not 0 < slot.width < width:
        y = conv(x)
    else:
        fresh = x[:, slot.width : width]
        y = prev + F.conv2d(
            fresh, _columns(conv, slot.width, width), None, conv.stride, conv.padding,
            conv.dilation, 1,
        )  # fmt: skip
    y = y.contiguous(memory_format=torch.channels_last)
    slot.width, slot.total = width, y
    return cast(torch.Tensor, y)


def _eligible(model: nn.Module, n: fx.Node, hp: Hparam) -> bool:
    if n.op != "call_module" or len(n.args) != 1 or n.kwargs:
        return False
    src = n.args[0]
    if not isinstance(src, fx.Node) or src.op != "placeholder":
        return False
    conv = model.get_submodule(str(n.target))
    if not (isinstance(conv, nn.Conv2d) and isinstance(conv, DynamicModule)):
        return False
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    if conv._forward_hooks or conv._forward_pre_hooks or conv.transposed:
        return False
    if conv.dim("kernel_size") is not None or conv.dim("in_channels") is not hp:
        return False
    out = conv.dim("out_channels")
    return out is None or hp not in out.hparams()


def add_prefix_convs(model: nn.Module, g: fx.Graph, hp: Hparam) -> int:
    """Rewrite the eligible convolutions of ``g`` (see the module docstring) into
    :func:`prefix_conv` calls, each with a new trailing placeholder for its slot; returns how
    many (the caller feeds one :class:`PrefixSlot` per rewritten conv and batch).
    """
    convs = [n for n in g.nodes if _eligible(model, n, hp)]
    if not convs:
        return 0
    placeholders = [n for n in g.nodes if n.op == "placeholder"]
    slots: list[fx.Node] = []
    with g.inserting_after(placeholders[-1]):
        for i in reversed(range(len(convs))):
            slots.insert(0, g.placeholder(f"prefix_slot_{i}"))
    for n, slot in zip(convs, slots):
        with g.inserting_before(n):
            module = g.get_attr(str(n.target))
            new = g.call_function(prefix_conv, (module, n.args[0], slot))
        n.replace_all_uses_with(new)
        g.erase_node(n)
    return len(convs)


def slot_bytes(slots: dict[Any, PrefixSlot]) -> int:
    """Bytes the remembered sums hold."""
    return sum(s.nbytes for s in slots.values())
