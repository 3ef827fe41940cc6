"""Attention heads for the analyzer: whole heads as the channel unit, slicing, head batches.

Library attention code (Hugging Face transformers, ``torch.nn.MultiheadAttention`` once
exported) splits a projection with ``view(*input_shape, -1, head_dim)``: the head count is
inferred and ``head_dim`` is a fixed attribute, so the width that can change is the number of
whole heads. :meth:`HeadOps._heads_view` makes the heads the channel axis: a new element per
projection whose every channel is ``head_dim`` consecutive features of the projection (so q, k
and v rows and the output projection's columns are cut in whole heads). From there the heads
are a *batch* dimension of the attention matmuls:

* ``q @ k^T``, ``attn @ v`` and scaled-dot-product attention couple the heads of their
  operands (grouped-query attention: ``repeat_kv`` is ``expand`` + ``reshape``, so each key/value
  head stands for ``n_rep`` consecutive query heads, and a KV head is removed together with its
  query heads; sdpa's ``enable_gqa=True`` says the same);
* an additive bias with a heads axis (T5's relative position bias, an embedding of
  ``(buckets, heads)``) is coupled by the element-wise add like any channel parameter;
* ``aten.slice`` / ``aten.select`` (``x[..., :d]``, ``x[:, 0]``) pass the channels through when
  they leave the channel axis whole (rotary embeddings slice ``head_dim``, not the heads).
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx

from nasviz.tracing.exported import MODULE_KEY
from nasviz.tracing.graph import CapturedGraph
from nasviz.tracing.groups import Sym, expr_size, make_rep
from nasviz.tracing.rules import OpKind
from nasviz.tracing.shapeops import ShapeOps
from nasviz.tracing.values import Val, iter_vals, node_shape, resolve_dim

__all__ = ["HeadOps"]

Args = tuple[Any, ...]
Kwargs = dict[str, Any]

_SDPA_TENSORS = ("query", "key", "value", "attn_mask")


class HeadOps(ShapeOps):
    """Mixin of the head and slicing handlers (see the module docstring)."""

    _cur_qual: str

    def _heads_view(
        self,
        node: fx.Node,
        x: Val,
        parts: tuple[int, ...],
        axis: int,
        kept: tuple[int, ...],
        what: str,
        cg: CapturedGraph,
    ) -> Val:
        """``view(..., -1, head_dim)``: the heads become the channel axis (a new element, each
        of its channels ``head_dim`` consecutive features of the input).
        """
        assert x.expr is not None
        heads, head_dim = parts
        owner = str(node.meta.get(MODULE_KEY) or "")
        producer = (owner, "heads") if owner else None
        h = self.c.new(heads, producer, f"the heads of '{owner}'" if owner else "attention heads")
        why = f"{what}: its width is not a whole number of heads of {head_dim}"
        if not self.c.unify(x.expr, make_rep(Sym(h, heads), head_dim), why):
            return self._untracked(node, cg, f"a tensor whose channels are static ({why})")
        if cg.exported:  # the module's head count (num_heads) follows the heads
            self._follow(node, heads, Sym(h, heads), heads=True)
        return Val(Sym(h, heads), axis, node_shape(node), True, x.origin, kept)

    def _batch_heads(
        self, node: fx.Node, kind: OpKind, vals: list[Val], cg: CapturedGraph, ratio: int = 1
    ) -> Val:
        """Operands whose channels sit on a batch axis (heads): couple them, output keeps them.

        ``ratio > 1``: the first operand has ``ratio`` heads per head of the others (GQA).
        """
        tracked = [v for v in vals if v.expr is not None and v.axis is not None]
        axis = tracked[0].axis
        if any(v.axis != axis for v in tracked):
            return self._give_up_heads(node, cg, vals, f"{kind.name} mixes heads with channels")
        assert axis is not None
        for v in vals:
            if v.expr is None and v.shape is not None and len(v.shape) >= -axis > 0:
                heads = v.shape[axis]
                if heads != 1:  # an untracked operand must broadcast along the heads
                    why = f"{kind.name} with {v.origin} of {heads} heads"
                    return self._give_up_heads(node, cg, vals, why)
        ref = tracked[0]
        assert ref.expr is not None
        for v in tracked[1:]:
            assert v.expr is not None
            other = make_rep(v.expr, ratio) if ratio > 1 and ref is vals[0] else v.expr
            self.c.unify(ref.expr, other, f"{kind.name} couples different head layouts")
        return Val(ref.expr, axis, node_shape(node), True, ref.origin)

    def _give_up_heads(self, node: fx.Node, cg: CapturedGraph, vals: list[Val], why: str) -> Val:
        for v in vals:
            if v.expr is not None:
                self.c.fix_expr(v.expr, why)
        return self._untracked(node, cg, why)

    def _op_create(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        """A new tensor (``new_zeros``, ``zeros_like``): its inputs give only dtype and shape."""
        return self._untracked(node, cg, f"a new tensor ({kind.name})")

    def _op_fill(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        """``zeros((1, self.n_heads, q, k))`` (T5's position bias without a bias of its own): a
        new tensor whose one size is the calling module's head count has a heads axis, coupled
        with the module's heads through that attribute (which follows them).
        """
        sizes = args[0] if args else kwargs.get("size")
        if not cg.exported or not isinstance(sizes, (list, tuple)):
            return self._untracked(node, cg, f"a new tensor ({kind.name})")
        at = [
            i
            for i, n in enumerate(sizes)
            if type(n) is int and n > 1 and self._literal_attr(node, n, heads=True) is not None
        ]
        if len(at) != 1:
            return self._untracked(node, cg, f"a new tensor ({kind.name})")
        heads = int(sizes[at[0]])
        owner = str(node.meta.get(MODULE_KEY) or "")
        sym = Sym(self.c.new(heads, None, f"the heads of a new tensor in '{owner}'"), heads)
        if not self._follow(node, heads, sym, heads=True):
            return self._untracked(node, cg, f"a new tensor ({kind.name})")
        return Val(sym, at[0] - len(sizes), node_shape(node), True, f"a new tensor ({kind.name})")

    def _op_slice(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        x = self._first(node, cg, args)
        if x is None or x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin if x else f"the output of {kind.name}")
        if x.shape is None:
            return self._give_up(node, cg, x, self._need_shapes(kind, cg))
        d = resolve_dim(args[1] if len(args) > 1 else kwargs.get("dim", 0), len(x.shape))
        if d is None:
            return self._give_up(node, cg, x, f"{kind.name} with unknown dims")
        if d != x.axis:
            copies = tuple(c for c in x.copies if c != d)
            return Val(x.expr, x.axis, node_shape(node), True, x.origin, copies)
        start, end, step = (*args[2:5], None, None, None)[:3]
        size = x.shape[d]
        whole = (
            start in (None, 0)
            and (end is None or (isinstance(end, int) and end >= size))
            and step in (None, 1)
        )
        if not whole:
            return self._give_up(node, cg, x, "slicing the channel dimension")
        return Val(x.expr, x.axis, node_shape(node), True, x.origin, x.copies)

    def _op_select(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        x = self._first(node, cg, args)
        if x is None or x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin if x else f"the output of {kind.name}")
        if x.shape is None:
            return self._give_up(node, cg, x, self._need_shapes(kind, cg))
        d = resolve_dim(args[1] if len(args) > 1 else None, len(x.shape))
        if d is None or d == x.axis:
            return self._give_up(node, cg, x, "indexing picks single channels")

        def moved(a: int) -> int:
            return a + 1 if d > a else a  # dims right of the channels move one left

        copies = tuple(moved(c) for c in x.copies if c != d)
        return Val(x.expr, moved(x.axis), node_shape(node), True, x.origin, copies)

    def _op_index(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        """``aten.index(x, [i, ...])`` (``weight[position_ids]``): leading dims indexed by
        tensors; channels after them pass through, channels indexed are picked apart.
        """
        x = self._first(node, cg, args)
        indices = args[1] if len(args) > 1 else None
        if x is None or x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin if x else f"the output of {kind.name}")
        if x.shape is None or not isinstance(indices, (list, tuple)):
            return self._give_up(node, cg, x, self._need_shapes(kind, cg))
        if len(x.shape) + x.axis < len(indices) or any(i is None for i in indices):
            return self._give_up(node, cg, x, "advanced indexing of the channels")
        for i in indices:
            if isinstance(i, Val) and i.expr is not None:
                self.c.fix_expr(i.expr, f"used as indices of {kind.name}")
        return Val(x.expr, x.axis, node_shape(node), True, x.origin)

    def _sdpa_heads(
        self,
        node: fx.Node,
        kind: OpKind,
        q: Val,
        k: Val,
        v: Val,
        rest: Args,
        kwargs: Kwargs,
        cg: CapturedGraph,
    ) -> Val:
        """Sdpa on tensors whose heads carry the channels: q, k, v heads coupled (GQA: each
        key/value head stands for ``q_heads / kv_heads`` consecutive query heads); a mask with a
        heads axis (T5's position bias) follows the query heads.
        """
        vals = [q, k, v]
        mask = kwargs.get("attn_mask", rest[0] if rest else None)
        others = (rest[1:], {n: a for n, a in kwargs.items() if n not in _SDPA_TENSORS})
        self._extra_fixed(kind, others)
        if isinstance(mask, Val) and (mask.expr is not None or mask.shape is not None):
            if q.expr is None or q.axis is None:
                return self._give_up_heads(
                    node, cg, [*vals, mask], f"{kind.name} with untracked heads"
                )
            coupled = self._batch_heads(node, kind, [q, mask], cg)
            if coupled.expr is None:
                return self._give_up_heads(node, cg, vals, f"{kind.name}: its mask mixes heads")
        if any(t.expr is None for t in vals):
            return self._give_up_heads(node, cg, vals, f"{kind.name} with untracked heads")
        assert q.expr is not None
        assert k.expr is not None
        ratio = 1
        if kwargs.get("enable_gqa") and expr_size(q.expr) != expr_size(k.expr):
            ratio, left = divmod(expr_size(q.expr), expr_size(k.expr))
            if left:
                why = f"{kind.name}: query heads are not a multiple of key/value heads"
                return self._give_up_heads(node, cg, vals, why)
        return self._batch_heads(node, kind, vals, cg, ratio)

    def _extra_fixed(self, kind: OpKind, extra: Any) -> None:
        for t in iter_vals(extra):
            if t.expr is not None:
                self.c.fix_expr(t.expr, f"used as a mask or option of {kind.name}")
