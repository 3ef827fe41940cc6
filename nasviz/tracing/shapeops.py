"""Shape ops for the analyzer: how flatten, view, permute, indexing ... move the channel axis.

Each handler takes the node, its :class:`~nasviz.tracing.rules.OpKind` and its evaluated args,
and returns the output value. A handler that cannot prove where the channels go fixes them with
a reason and returns an untracked value. Shapes (from shape propagation) are needed for most
of them; without shapes the channels are fixed with the graph's ``no_shapes`` reason, except
after an adaptive pool, whose output size is known (``Val.tail``: ``pool -> flatten -> Linear``
works without a dummy_input).

In an exported graph (``torch.export``) every size is an int; :meth:`ShapeOps._read_size` says
which of them count as read from a tensor. A literal size equal to an int attribute of the
calling module, used as a channel size (a view's channel count, ``view(b, -1, self.num_heads,
head_dim)``, ``split(self.split_size, dim)`` into equal parts), is recorded by
:meth:`ShapeOps._follow`: the attribute then follows the active width
(:func:`~nasviz.dynamic.params.follow_attrs`), so the library code computes the subnet's shapes.
(The module is one piece, ~590 lines: the view, flatten and split rules share their block
matching and are easier to check side by side.)
"""

from __future__ import annotations

import math
from typing import Any

import torch.fx as fx
from torch import nn

from nasviz.tracing.exported import MODULE_KEY
from nasviz.tracing.graph import SHAPE_KEY, CapturedGraph
from nasviz.tracing.groups import Coupling, Expr, expr_size, make_cat, make_rep
from nasviz.tracing.rules import OpKind
from nasviz.tracing.values import AttrUse, Many, Val, node_shape, resolve_dim

__all__ = ["ShapeOps", "match_blocks"]

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


def match_blocks(
    a: tuple[int, ...], b: tuple[int, ...]
) -> list[tuple[tuple[int, int], tuple[int, int]]] | None:
    """Pair runs of dims of ``a`` and ``b`` with equal products (how a reshape regroups dims)."""
    blocks = []
    i = j = 0
    while i < len(a) or j < len(b):
        i0, j0 = i, j
        pa = pb = 1
        if i < len(a):
            pa, i = pa * a[i], i + 1
        if j < len(b):
            pb, j = pb * b[j], j + 1
        while pa != pb:
            if pa < pb and i < len(a):
                pa, i = pa * a[i], i + 1
            elif pb < pa and j < len(b):
                pb, j = pb * b[j], j + 1
            else:
                return None
        blocks.append(((i0, i), (j0, j)))
    return blocks


def _sizes(args: Args, start: int) -> list[Any]:
    rest = list(args[start:])
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        return list(rest[0])
    return rest


#: words of an attribute name that say it holds a width or a head count
_WIDTH_WORDS = ("dim", "size", "head", "hidden", "width", "channel", "feature", "embd", "embed",
                "inner")  # fmt: skip
#: words that say it holds something else that may equal a width by chance
_OTHER_WORDS = ("vocab", "position", "max", "len", "layer", "idx", "index", "_id", "seq",
                "window", "bucket", "label", "token", "batch", "step", "patch", "kernel",
                "stride", "image", "pool")  # fmt: skip


def _names_a_width(name: str) -> bool:
    """Whether a (lower-case) attribute name says it holds a width or a head count."""
    return any(w in name for w in _WIDTH_WORDS) and not any(w in name for w in _OTHER_WORDS)


class ShapeOps:
    """Mixin of shape-op handlers; the analyzer provides ``c`` and the helpers used below."""

    c: Coupling
    modules: dict[str, nn.Module]
    attrs: dict[str, AttrUse]

    # provided by the analyzer
    def _untracked(self, node: fx.Node, cg: CapturedGraph, origin: str) -> Val:
        raise NotImplementedError

    # provided by HeadOps (nasviz.tracing.headops)
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
        raise NotImplementedError

    def _give_up(
        self, node: fx.Node, cg: CapturedGraph, x: Val, reason: str, origin: str = ""
    ) -> Val:
        """Fix ``x``'s channels with ``reason``; return an untracked output."""
        if x.expr is not None:
            self.c.fix_expr(x.expr, reason)
        return self._untracked(node, cg, origin or f"a tensor whose channels are static ({reason})")

    def _read_size(self, node: fx.Node, cg: CapturedGraph, size: int) -> bool:
        """Whether an int ``size`` in an exported graph was read from a tensor's shape.

        ``torch.export`` turns every size into an int, so ``x.view(b, n, h, w)`` with ``n`` read
        from ``x.shape`` and with ``n = self.channels`` look alike. A size equal to an int
        attribute of the module the op is called from (``T5Attention.inner_dim``) is taken as
        that attribute (a literal: the channels stay static); any other size as read from a
        tensor (transformers' ``repeat_kv``). In fx graphs a literal int is always a literal.
        """
        return cg.exported and self._literal_attr(node, size) is None

    def _literal_attr(self, node: fx.Node, size: int, heads: bool = False) -> str | None:
        """``"Class.attr"`` of an int attribute of the calling module equal to ``size``
        (``heads``: only one named for heads).
        """
        owner = self.modules.get(str(node.meta.get(MODULE_KEY, "")))
        if owner is None:
            return None
        for name, v in vars(owner).items():
            if type(v) is int and v == size and (not heads or "head" in name.lower()):
                return f"{type(owner).__name__}.{name}"
        return None

    def _follow(self, node: fx.Node, size: int, expr: Expr, heads: bool = False) -> bool:
        """Record the int attributes of the calling module equal to ``size`` as following
        ``expr`` (a literal channel size in an exported graph: the attribute will be set from
        the active width); whether there was one. Only attributes whose name says they hold a
        width or a head count (:func:`_names_a_width`: ``embed_dim``, ``split_size``,
        ``num_heads``), so an unrelated int that happens to equal the size (``max_tokens``,
        ``layer_idx``) is never changed. ``heads``: only attributes named for heads
        (``num_heads``), for a head count the graph inferred.
        """
        qual = str(node.meta.get(MODULE_KEY, ""))
        owner = self.modules.get(qual)
        if owner is None:
            return False
        found = False
        for name, v in vars(owner).items():
            if type(v) is not int or v != size or name.startswith("_"):
                continue
            low = name.lower()
            named_heads = "head" in low and "dim" not in low and "size" not in low
            if not _names_a_width(low) or (heads and not named_heads):
                continue
            key = f"{qual}.{name}"
            known = self.attrs.get(key)
            if known is None:
                self.attrs[key] = AttrUse(key, qual, name, expr)
            else:
                self.c.unify(known.expr, expr, f"{key} names two different widths")
            found = True
        return found

    def _need_shapes(self, kind: OpKind, cg: CapturedGraph) -> str:
        return f"{kind.name} needs tensor shapes ({cg.no_shapes or 'shapes unknown'})"

    def _out(self, node: fx.Node, x: Val, axis: int) -> Val:
        return Val(x.expr, axis, node_shape(node), True, x.origin)

    def _first(self, node: fx.Node, cg: CapturedGraph, args: Args) -> Val | None:
        x = args[0] if args else None
        return x if isinstance(x, Val) else None

    # -- handlers ------------------------------------------------------------------------------
    def _op_flatten(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        x = self._first(node, cg, args)
        if x is None or x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin if x else f"the output of {kind.name}")
        module = getattr(self, "_cur_module", None)
        default_start = 1 if module is not None else 0
        start = kwargs.get("start_dim", args[1] if len(args) > 1 else default_start)
        end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
        if module is not None:
            start, end = module.start_dim, module.end_dim
        if x.shape is None and _flattens_tail(x, start, end):
            return self._flatten_tail(node, x)
        if x.shape is None:
            if cg.no_shapes == "no dummy_input":
                why = "no dummy_input for the spatial size"
            else:
                why = f"{kind.name} needs the spatial size ({cg.no_shapes})"
            return self._give_up(node, cg, x, why)
        n = len(x.shape)
        if not (isinstance(start, int) and isinstance(end, int)) or n == 0:
            return self._give_up(node, cg, x, f"{kind.name} with unknown dims")
        s, e = start % n, end % n
        ch = n + x.axis
        out_n = n - (e - s)
        if ch < s:
            return self._out(node, x, ch - out_n)
        if ch > e:
            return self._out(node, x, ch - (e - s) - out_n)
        if ch != s:  # even a dim of size 1 here may be larger at run time (batch, spatial)
            return self._give_up(
                node, cg, x, f"{kind.name} merges the channels into a preceding dimension"
            )
        inner = math.prod(x.shape[ch + 1 : e + 1])
        return Val(make_rep(x.expr, inner), s - out_n, node_shape(node), True, "")

    def _flatten_tail(self, node: fx.Node, x: Val) -> Val:
        """Flatten from the channels to the end, with the dims after them known (``tail``)."""
        assert x.expr is not None
        assert x.tail is not None
        return Val(make_rep(x.expr, math.prod(x.tail)), -1, node_shape(node), True, x.origin)

    def _op_view(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        """reshape: the channels move, merge with copy axes or following dims, or split."""
        x = self._first(node, cg, args)
        if x is None or x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin if x else f"the output of {kind.name}")
        out_shape = node_shape(node)
        sizes = _sizes(args, 1) if "shape" not in kwargs else list(kwargs["shape"])
        flat = kind.kind == "view" and len(sizes) == 2 and sizes[-1] == -1
        if x.shape is None and flat and _flattens_tail(x, 1, -1):
            return self._flatten_tail(node, x)  # x.view(x.size(0), -1) after an adaptive pool
        if out_shape is None and x.shape is not None and kind.kind == "view":
            out_shape = _literal_shape(x.shape, sizes)  # gamma.reshape(1, -1, 1, 1)
            if out_shape is not None:  # known without a dummy_input: the node has it now
                node.meta[SHAPE_KEY] = out_shape
        if x.shape is None or out_shape is None:
            return self._give_up(node, cg, x, self._need_shapes(kind, cg))
        if kind.kind == "unflatten":  # (x, dim, sizes): the other dims keep their sizes
            sizes = _unflatten_sizes(args, kwargs, out_shape, getattr(self, "_cur_module", None))
        elif len(sizes) != len(out_shape):
            sizes = [-1] * len(out_shape)
        blocks = match_blocks(x.shape, out_shape) or []
        n_in, n_out = len(x.shape), len(out_shape)
        ch = n_in + x.axis
        block = next((b for b in blocks if b[0][0] <= ch < b[0][1]), None)
        if block is None:
            return self._give_up(node, cg, x, f"{kind.name} reshapes the channels unpredictably")
        (i0, i1), (o0, o1) = block
        copies = {n_in + a for a in x.copies}
        kept = tuple(  # copy axes elsewhere that the reshape leaves whole
            b[1][0] - n_out
            for b in blocks
            if b is not block and b[0][1] - b[0][0] == 1 == b[1][1] - b[1][0] and b[0][0] in copies
        )
        if i1 - i0 == 1 and o1 - o0 > 1:
            return self._split_view(node, kind, x, out_shape[o0:o1], sizes[o0:o1], o1, kept, cg)
        if o1 - o0 != 1:
            return self._give_up(node, cg, x, f"{kind.name} reshapes the channels unpredictably")
        if (
            isinstance(sizes[o0], int)
            and sizes[o0] != -1
            and not self._read_size(node, cg, sizes[o0])
            and not (cg.exported and self._follow(node, sizes[o0], _view_expr(x, ch, i0, i1)))
        ):
            return self._give_up(
                node,
                cg,
                x,
                f"{kind.name} names the channel count ({sizes[o0]}) instead of -1 or a size "
                "read from the tensor: a pruned width would not fit",
            )
        if any(d not in copies for d in range(i0, ch)):
            # even a dim of size 1 here may be larger at run time (batch, spatial)
            return self._give_up(
                node, cg, x, f"{kind.name} merges the channels into a preceding dimension"
            )
        return Val(_view_expr(x, ch, i0, i1), o0 - n_out, out_shape, True, x.origin, kept)

    def _split_view(
        self,
        node: fx.Node,
        kind: OpKind,
        x: Val,
        parts: tuple[int, ...],
        sizes: list[Any],
        o1: int,
        kept: tuple[int, ...],
        cg: CapturedGraph,
    ) -> Val:
        """The channels split into ``parts`` (channel shuffle, attention heads): the leading
        parts become copy axes, coupled piece by piece; the last part carries the channels.
        """
        assert x.expr is not None
        assert x.shape is not None
        total = x.shape[len(x.shape) + (x.axis or 0)]
        what = f"{kind.name} splits the channel dimension {total} into {list(parts)}"
        n_out = len(node_shape(node) or ())
        last = sizes[-1]
        if (
            len(parts) == 2
            and sizes[0] == -1
            and isinstance(last, int)
            and not isinstance(last, bool)
            and last > 0
        ):
            return self._heads_view(node, x, parts, o1 - 2 - n_out, kept, what, cg)
        if (
            len(parts) == 2
            and cg.exported
            and isinstance(last, int)
            and last > 0
            and isinstance(sizes[0], int)
            and sizes[0] > 0
            and self._literal_attr(node, sizes[0], heads=True) is not None
        ):  # view(b, -1, self.num_heads, head_dim): the heads, their count an attribute
            out = self._heads_view(node, x, parts, o1 - 2 - n_out, kept, what, cg)
            if out.expr is not None:
                self._follow(node, sizes[0], out.expr, heads=True)
            return out
        if not all(isinstance(v, int) and v > 0 for v in sizes[:-1]):
            return self._give_up(
                node, cg, x, f"{what} with a computed group count: it would change with the width"
            )
        if isinstance(sizes[-1], int) and sizes[-1] != -1 and not self._read_size(node, cg, last):
            return self._give_up(
                node,
                cg,
                x,
                f"{what} and names the last size ({_named(self._literal_attr(node, last), last)}) "
                "instead of -1: a pruned width would not fit",
            )
        pieces = self.c.split(x.expr, math.prod(parts[:-1]), f"{what}: the parts cannot be coupled")
        if pieces is None:
            return self._untracked(node, cg, f"a tensor whose channels are static ({what})")
        copies = kept + tuple(o - n_out for o in range(o1 - len(parts), o1 - 1))
        return Val(pieces[0], o1 - 1 - n_out, node_shape(node), True, x.origin, copies)

    _op_unflatten = _op_view

    def _op_permute(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        x = self._first(node, cg, args)
        if x is None or x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin if x else f"the output of {kind.name}")
        dims = _sizes(args, 1) if "dims" not in kwargs else list(kwargs["dims"])
        n = len(dims)
        if not all(isinstance(d, int) for d in dims) or n + x.axis < 0:
            return self._give_up(node, cg, x, f"{kind.name} with unknown dims")
        order = [d % n for d in dims]
        copies = tuple(order.index(n + c) - n for c in x.copies if n + c >= 0)
        axis = order.index(n + x.axis) - n
        known = _partial_shape(x, n)
        if x.shape is not None or known is None:
            return Val(x.expr, axis, node_shape(node), True, x.origin, copies)
        moved = tuple(known[d] for d in order)
        after = moved[n + axis + 1 :]
        tail = None if any(v is None for v in after) else tuple(int(v or 0) for v in after)
        return Val(x.expr, axis, None, True, x.origin, copies, tail, moved)

    def _op_transpose(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        x = self._first(node, cg, args)
        if x is None or x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin if x else f"the output of {kind.name}")
        ndim = len(x.shape) if x.shape is not None else None
        a = resolve_dim(kwargs.get("dim0", args[1] if len(args) > 1 else None), ndim)
        b = resolve_dim(kwargs.get("dim1", args[2] if len(args) > 2 else None), ndim)
        if a is None or b is None:
            return self._give_up(node, cg, x, self._need_shapes(kind, cg))

        def moved(d: int) -> int:
            return b if d == a else a if d == b else d

        return Val(
            x.expr,
            moved(x.axis),
            node_shape(node),
            True,
            x.origin,
            tuple(moved(c) for c in x.copies),
        )

    def _op_t(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        x = self._first(node, cg, args)
        if x is None or x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin if x else f"the output of {kind.name}")
        if x.shape is None:
            return self._give_up(node, cg, x, self._need_shapes(kind, cg))
        axis = x.axis if len(x.shape) < 2 else (-2 if x.axis == -1 else -1)
        return self._out(node, x, axis)

    def _op_squeeze(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        return self._by_shapes(node, kind, args, cg)

    _op_unsqueeze = _op_squeeze

    def _by_shapes(self, node: fx.Node, kind: OpKind, args: Args, cg: CapturedGraph) -> Val:
        """squeeze/unsqueeze: locate the channel axis by matching non-1 dims of both shapes."""
        x = self._first(node, cg, args)
        if x is None or x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin if x else f"the output of {kind.name}")
        out_shape = node_shape(node)
        if x.shape is None or out_shape is None:
            return self._give_up(node, cg, x, self._need_shapes(kind, cg))
        ch = len(x.shape) + x.axis
        if x.shape[ch] == 1:
            return self._give_up(node, cg, x, f"{kind.name} on a single channel")
        rank = sum(1 for s in x.shape[:ch] if s != 1)
        seen = -1
        for k, s in enumerate(out_shape):
            if s != 1:
                seen += 1
                if seen == rank:
                    return self._out(node, x, k - len(out_shape))
        return self._give_up(node, cg, x, f"{kind.name} loses the channel dimension")

    def _op_getitem(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        base, idx = args[0], args[1]
        if isinstance(base, Many):
            return Val(base.item.expr, base.item.axis, node_shape(node), True, base.item.origin)
        if isinstance(base, (list, tuple)) and isinstance(idx, int):
            item = base[idx]
            return item if isinstance(item, Val) else self._untracked(node, cg, "a constant")
        if not isinstance(base, Val) or base.expr is None or base.axis is None:
            origin = base.origin if isinstance(base, Val) else "a constant"
            return self._untracked(node, cg, origin)
        if base.shape is None:
            return self._give_up(node, cg, base, self._need_shapes(kind, cg))
        items = list(idx) if isinstance(idx, tuple) else [idx]
        n = len(base.shape)
        ch = n + base.axis
        used = sum(1 for it in items if it is not None and it is not Ellipsis)
        where: dict[int, int] = {}  # input dim -> output dim (dims indexed away are missing)
        i = o = 0
        for it in items:
            if it is Ellipsis:
                skip = n - used
                where.update({i + k: o + k for k in range(skip)})
                i, o = i + skip, o + skip
            elif it is None:
                o += 1
            elif isinstance(it, int) and not isinstance(it, bool):
                if i == ch:
                    return self._give_up(node, cg, base, "indexing picks single channels")
                i += 1
            elif isinstance(it, slice) and not any(isinstance(v, Val) for v in _slots(it)):
                if i == ch and it != slice(None):
                    return self._give_up(node, cg, base, "slicing the channel dimension")
                where[i] = o
                i, o = i + 1, o + 1
            else:
                return self._give_up(node, cg, base, "advanced indexing of the channels")
        where.update({i + k: o + k for k in range(n - i)})
        out_n = o + (n - i)
        copies = tuple(where[n + c] - out_n for c in base.copies if n + c in where)
        return Val(base.expr, where[ch] - out_n, node_shape(node), True, base.origin, copies)

    def _op_split(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Any:
        """chunk/split/unbind: along the channels only ``chunk`` (and ``tensor_split`` into a
        count) works: its pieces keep a fixed count, so they are coupled with each other.
        """
        x = self._first(node, cg, args)
        unbind = kind.name.endswith("unbind")
        pos = 1 if unbind else 2
        dim = kwargs.get("dim", args[pos] if len(args) > pos else 0)
        if x is None or x.expr is None or x.axis is None:
            return Many(self._untracked(node, cg, x.origin if x else f"the output of {kind.name}"))
        ndim = len(x.shape) if x.shape is not None else None
        d = resolve_dim(dim, ndim)
        if d is None:
            return Many(self._give_up(node, cg, x, self._need_shapes(kind, cg)))
        if d == x.axis:
            count = args[1] if len(args) > 1 else kwargs.get("chunks", kwargs.get("sections"))
            by_count = kind.name.endswith(("chunk", "tensor_split"))
            split = self._split_by_attr(node, kind, x, count, cg)
            if split is not None:
                return split
            if not by_count or isinstance(count, bool) or not isinstance(count, int):
                why = (
                    f"consumed by {kind.name}: it splits the channels into pieces of a fixed "
                    "size, so their number would change with the width (chunk() keeps it)"
                )
                return Many(self._give_up(node, cg, x, why))
            pieces = self.c.split(
                x.expr, count, f"{kind.name}({count}) cannot split these channels evenly"
            )
            if pieces is None:
                return Many(self._untracked(node, cg, f"the output of {kind.name}"))
            return Many(Val(pieces[0], x.axis, None, True, x.origin))
        axis = x.axis + 1 if unbind and d > x.axis else x.axis
        return Many(Val(x.expr, axis, None, True, x.origin))

    def _split_by_attr(
        self, node: fx.Node, kind: OpKind, x: Val, size: Any, cg: CapturedGraph
    ) -> Many | None:
        """``split(self.split_size, dim)`` on the channels, the width a multiple of the size and
        the size an int attribute of the calling module: equal parts (like ``chunk``), and the
        attribute follows the width of one part.
        """
        if not (
            kind.name.endswith(".split")
            and cg.exported
            and type(size) is int
            and size > 0
            and x.shape is not None
            and x.expr is not None
            and x.axis is not None
            and self._literal_attr(node, size) is not None
        ):
            return None
        total = x.shape[x.axis]
        if total % size or total == size:
            return None
        count = total // size
        pieces = self.c.split(x.expr, count, f"{kind.name}({size}) cannot split these channels")
        if pieces is None:
            return Many(self._untracked(node, cg, f"the output of {kind.name}"))
        self._follow(node, size, pieces[0])
        return Many(Val(pieces[0], x.axis, None, True, x.origin))

    def _op_expand(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        x = self._first(node, cg, args)
        if x is None or x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin if x else f"the output of {kind.name}")
        sizes = _sizes(args, 1)
        keep = -1 if kind.kind == "expand" else 1
        k = len(sizes) + x.axis
        read = (
            kind.kind == "expand"
            and x.shape is not None
            and 0 <= k < len(sizes)
            and sizes[k] == x.shape[x.axis]
            and cg.exported
        )
        # expanding the channels to their own size leaves them as they are; an exported graph
        # shows every size as an int, so it is taken as read from the tensor (repeat_kv). A
        # literal count there would make the smallest subnet fail the convert self-check
        if k < 0 or (sizes[k] != keep and not read):
            return self._give_up(node, cg, x, f"{kind.name} names the channel count")
        return self._out(node, x, x.axis)

    _op_repeat = _op_expand

    def _op_roll(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        """``torch.roll(x, shifts, dims)``: a shift along other dims (Swin's shifted windows)
        moves whole channel vectors, so the channels pass through; a shift along the channels
        (or of the flattened tensor, ``dims=None``) moves values between channels.
        """
        x = self._first(node, cg, args)
        if x is None or x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin if x else f"the output of {kind.name}")
        dims = kwargs.get("dims", args[2] if len(args) > 2 else None)
        seq = list(dims) if isinstance(dims, (tuple, list)) else [] if dims is None else [dims]
        if not seq:
            return self._give_up(
                node, cg, x, f"{kind.name} without dims shifts the flattened tensor across channels"
            )
        ndim = len(x.shape) if x.shape is not None else None
        resolved = [resolve_dim(d, ndim) for d in seq]
        if any(d is None for d in resolved):
            return self._give_up(node, cg, x, self._need_shapes(kind, cg))
        if x.axis in resolved:
            return self._give_up(
                node,
                cg,
                x,
                f"{kind.name} shifts along the channel dimension: a pruned width would wrap "
                "other channels around",
            )
        return Val(x.expr, x.axis, node_shape(node), True, x.origin, x.copies, x.tail)

    def _op_reduce(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        x = self._first(node, cg, args)
        if x is None or x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin if x else f"the output of {kind.name}")
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        if dim is None:
            return self._untracked(node, cg, f"the output of {kind.name}")
        ndim = len(x.shape) if x.shape is not None else None
        dims = [resolve_dim(d, ndim) for d in (dim if isinstance(dim, (tuple, list)) else [dim])]
        if any(d is None for d in dims) or not isinstance(keep, bool):
            return self._give_up(node, cg, x, self._need_shapes(kind, cg))
        if x.axis in dims:  # the channels are summed over: a valid consumer
            return self._untracked(node, cg, f"the output of {kind.name}")
        axis = x.axis if keep else x.axis + sum(1 for d in dims if d is not None and d > x.axis)
        return self._out(node, x, axis)


def _literal_shape(shape: tuple[int, ...], sizes: list[Any]) -> tuple[int, ...] | None:
    """The shape a reshape of a ``shape``-d tensor to literal ``sizes`` (at most one ``-1``)
    gives, without a dummy_input (``None`` if a size is not a literal int or does not fit).
    """
    if not all(type(v) is int for v in sizes) or sum(v == -1 for v in sizes) > 1:
        return None
    total, known = math.prod(shape), math.prod(v for v in sizes if v != -1)
    if known <= 0 or total % known:
        return None
    out = tuple(total // known if v == -1 else v for v in sizes)
    return out if math.prod(out) == total else None


def _partial_shape(x: Val, n: int) -> tuple[int | None, ...] | None:
    """The sizes of rank-``n`` ``x`` known without shapes (``None`` where unknown): its
    ``known`` sizes, or its channels followed by the ``tail`` of an adaptive pool.
    """
    if x.known is not None:
        return x.known if len(x.known) == n else None
    if x.tail is None or x.expr is None or x.axis != -(len(x.tail) + 1) or n <= len(x.tail):
        return None
    lead: tuple[int | None, ...] = (None,) * (n - len(x.tail) - 1)
    return (*lead, expr_size(x.expr), *x.tail)


def _view_expr(x: Val, ch: int, i0: int, i1: int) -> Expr:
    """The layout of the one output dim that merges input dims ``i0:i1`` (channels at ``ch``)."""
    assert x.expr is not None
    assert x.shape is not None
    expr = make_rep(x.expr, math.prod(x.shape[ch + 1 : i1]))
    outer = math.prod(x.shape[i0:ch])
    if outer > 1:  # copies of the layout, one after the other
        expr = make_cat([expr] * outer)
    return expr


def _named(attr: str | None, size: int) -> str:
    """``"16 = WhisperAttention.head_dim"`` where an attribute names the size, else ``"16"``."""
    return f"{size} = {attr}" if attr else str(size)


def _flattens_tail(x: Val, start: Any, end: Any) -> bool:
    """Whether a flatten of ``x`` (shape unknown) from ``start`` to ``end`` merges the channels
    with the known dims after them: the channels right before the known ``tail`` (an adaptive
    pool's output), flattened from a positive start (the batch dims stay, as for any conv
    output ``(N, C, *spatial)``) to the end.
    """
    return (
        x.tail is not None
        and x.expr is not None
        and x.axis == -(len(x.tail) + 1)
        and isinstance(start, int)
        and start >= 1
        and end == -1
    )


def _unflatten_sizes(
    args: Args, kwargs: Kwargs, out_shape: tuple[int, ...], module: Any
) -> list[Any]:
    """The sizes an unflatten names, in place; -1 (follows the input) for every other dim."""
    if module is not None:  # nn.Unflatten
        dim, given = module.dim, module.unflattened_size
    else:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        given = kwargs.get("sizes", args[2] if len(args) > 2 else None)
    sizes: list[Any] = [-1] * len(out_shape)
    if not isinstance(dim, int) or not isinstance(given, (tuple, list)):
        return sizes
    n_in = len(out_shape) - len(given) + 1
    start = dim % n_in
    sizes[start : start + len(given)] = list(given)
    return sizes


def _slots(s: slice) -> tuple[Any, Any, Any]:
    return (s.start, s.stop, s.step)
