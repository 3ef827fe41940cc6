"""Point-wise and joining ops for the analyzer: element-wise coupling, concatenation, pooling.

* element-wise ops with several tensor inputs couple their channels (a residual add makes one
  group of both producers); a tensor that is not tracked (a parameter, a buffer, the model input)
  must broadcast along the channels (size 1), else the channels it meets stay static;
* ``torch.cat`` along the channel axis builds a concatenation (each input keeps its own
  channels); along another axis it couples its inputs like an element-wise op;
* pools, interpolation and padding pass the channels through if they do not touch the channel
  axis; an embedding's output belongs to no prunable layer;
* ``a @ b`` couples the channels it contracts (``q @ k.transpose(-2, -1)``) and passes the rows
  of ``a`` and the columns of ``b`` through (``attn @ v``); so does scaled-dot-product attention;
* anything unknown fixes every channel it touches: ``"consumed by torch.roll: unsupported op"``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch.fx as fx
from torch import nn

from nasviz.tracing.graph import CapturedGraph
from nasviz.tracing.groups import Expr, Sym, expr_size, make_cat
from nasviz.tracing.headops import HeadOps
from nasviz.tracing.rules import OpKind
from nasviz.tracing.values import Many, Val, iter_vals, node_shape, resolve_dim

__all__ = ["PointwiseOps"]

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


class PointwiseOps(HeadOps):
    """Mixin of the point-wise, joining and spatial op handlers (see the module docstring)."""

    _cur_module: nn.Module | None

    # -- generic ops ---------------------------------------------------------------------------
    def _op_unknown(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        reason = f"consumed by {kind.name}: unsupported op"
        for v in iter_vals((args, kwargs)):
            if v.expr is not None:
                self.c.fix_expr(v.expr, reason)
        return self._untracked(node, cg, f"the output of {kind.name}")

    def _op_info(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        if kind.name == "torch.getattr" or kind.name.endswith(".getattr"):
            attr = args[1] if len(args) > 1 else None
            if attr not in ("shape", "dtype", "device", "ndim", "is_cuda", "requires_grad"):
                return self._op_unknown(node, OpKind("unknown", f"Tensor.{attr}"), args, {}, cg)
        return Val(None, None, None, False, "a size")

    def _op_unary(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        x = self._first(node, cg, args)
        if x is None:
            return self._op_unknown(node, kind, args, kwargs, cg)
        if kind.kind == "unary":
            for v in iter_vals((args[1:], kwargs)):
                if v.expr is not None:
                    self.c.fix_expr(v.expr, f"used as an extra argument of {kind.name}")
        return Val(x.expr, x.axis, node_shape(node), x.tensor, x.origin, x.copies, x.tail, x.known)

    _op_cast = _op_unary

    def _op_elementwise(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        vals = [v for v in iter_vals((args, kwargs)) if v.tensor is not False]
        return self._couple(node, kind, vals, cg, broadcast=True)

    def _couple(
        self, node: fx.Node, kind: OpKind, vals: list[Val], cg: CapturedGraph, broadcast: bool
    ) -> Val:
        """Couple the channels of ``vals`` (all must carry the same channels)."""
        tracked = [v for v in vals if v.expr is not None and v.axis is not None]
        if not tracked:
            origin = vals[0].origin if vals else f"the output of {kind.name}"
            return self._untracked(node, cg, origin)
        ref = tracked[0]
        assert ref.expr is not None
        assert ref.axis is not None
        for v in tracked[1:]:
            assert v.expr is not None
            if v.axis != ref.axis:
                why = f"{kind.name} combines channels of different dimensions"
                self.c.fix_expr(ref.expr, why)
                self.c.fix_expr(v.expr, why)
            else:
                self.c.unify(ref.expr, v.expr, f"{kind.name} couples different channel layouts")
        for u in vals:
            if u.expr is not None:
                continue
            size = _size_at(u.shape, ref.axis, broadcast)
            if size == 1:
                continue
            if size is None:
                why = f"{kind.name} with {u.origin} of unknown shape ({cg.no_shapes})"
            else:
                why = f"{kind.name} with {u.origin} (size {size} along the channels)"
            for t in tracked:
                assert t.expr is not None
                self.c.fix_expr(t.expr, why)
        return Val(ref.expr, ref.axis, node_shape(node), True, ref.origin)

    def _op_cat(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        seq = kwargs.get("tensors", args[0] if args else None)
        dim = kwargs.get("dim", kwargs.get("axis", args[1] if len(args) > 1 else 0))
        if isinstance(seq, Many):  # the pieces of one split, joined again
            seq = [seq.item] if kind.kind == "stack" else self._pieces(seq.item, dim, node)
        if not isinstance(seq, (list, tuple)) or not all(isinstance(v, Val) for v in seq):
            return self._op_unknown(node, kind, args, kwargs, cg)
        vals: list[Val] = list(seq)
        tracked = [v for v in vals if v.expr is not None]
        if not tracked:
            return self._untracked(node, cg, f"the output of {kind.name}")
        out_shape = node_shape(node)
        ndim = len(out_shape) if out_shape is not None else None
        d = resolve_dim(dim, ndim)
        if kind.kind == "stack":
            return self._stack(node, kind, vals, d, cg)
        if d is None:
            return self._give_up_all(node, cg, vals, self._need_shapes(kind, cg))
        if not any(v.axis == d for v in tracked):
            return self._couple(node, kind, vals, cg, broadcast=False)
        parts: list[Expr] = []
        for v in vals:
            if v.expr is not None and v.axis == d:
                parts.append(v.expr)
                continue
            if v.expr is not None:
                self.c.fix_expr(v.expr, f"{kind.name} joins it along another dimension")
            size = _size_at(v.shape, d, broadcast=False)
            if size is None:
                return self._give_up_all(node, cg, vals, self._need_shapes(kind, cg))
            parts.append(Sym(self.c.new_fixed(size, f"concatenated {v.origin}"), size))
        return Val(make_cat(parts), d, out_shape, True, "")

    _op_stack = _op_cat

    def _pieces(self, item: Val, dim: Any, node: fx.Node) -> list[Val] | None:
        """The pieces of a split as a list (one suffices unless they are joined on the channels)."""
        out_shape = node_shape(node)
        d = resolve_dim(dim, len(out_shape) if out_shape is not None else None)
        if item.expr is None or d != item.axis:
            return [item]
        if out_shape is None or d is None:
            return None
        count, rest = divmod(out_shape[d], expr_size(item.expr))
        return [item] * count if count and not rest else None

    def _stack(
        self, node: fx.Node, kind: OpKind, vals: list[Val], d: int | None, cg: CapturedGraph
    ) -> Val:
        out = self._couple(node, kind, vals, cg, broadcast=False)
        if out.expr is None or out.axis is None:
            return out
        if d is None:
            return self._give_up(node, cg, out, self._need_shapes(kind, cg))
        # the new dimension sits at d in the output; the channel axis is one further left if
        # the new dimension lies right of it
        axis = out.axis - 1 if d > out.axis - 1 else out.axis
        return Val(out.expr, axis, node_shape(node), True, out.origin)

    def _give_up_all(self, node: fx.Node, cg: CapturedGraph, vals: list[Val], why: str) -> Val:
        for v in vals:
            if v.expr is not None:
                self.c.fix_expr(v.expr, why)
        return self._untracked(node, cg, why)

    def _spatial_ok(
        self, node: fx.Node, kind: OpKind, x: Val, spatial: int | None, cg: CapturedGraph
    ) -> Val:
        if x.expr is None or x.axis is None:
            return self._untracked(node, cg, x.origin)
        if spatial is None:
            return self._give_up(node, cg, x, self._need_shapes(kind, cg))
        if x.axis >= -spatial:
            return self._give_up(node, cg, x, f"consumed by {kind.name} over the channel dimension")
        return Val(x.expr, x.axis, node_shape(node), True, x.origin)

    def _op_pool(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        x = self._first(node, cg, args)
        if x is None:
            return self._op_unknown(node, kind, args, kwargs, cg)
        out = self._spatial_ok(node, kind, x, kind.arg, cg)
        size = _adaptive_size(self._cur_module, kind, args, kwargs)
        # an adaptive pool's output size is known without a dummy_input
        if (
            out.expr is not None
            and out.shape is None
            and size is not None
            and out.axis == -(kind.arg + 1)
        ):
            return replace(out, tail=size)
        return out

    def _op_interpolate(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        x = self._first(node, cg, args)
        if x is None:
            return self._op_unknown(node, kind, args, kwargs, cg)
        spatial = len(x.shape) - 2 if x.shape is not None else None
        return self._spatial_ok(node, kind, x, spatial, cg)

    def _op_pad(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        x = self._first(node, cg, args)
        if x is None:
            return self._op_unknown(node, kind, args, kwargs, cg)
        if self._cur_module is not None:
            return self._spatial_ok(node, kind, x, kind.arg, cg)
        pad = kwargs.get("pad", args[1] if len(args) > 1 else None)
        spatial = len(pad) // 2 if isinstance(pad, (tuple, list)) else None
        return self._spatial_ok(node, kind, x, spatial, cg)

    def _op_matmul(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        a, b = ((*args, None, None))[:2]
        if not isinstance(a, Val) or not isinstance(b, Val):
            return self._op_unknown(node, kind, args, kwargs, cg)
        ta, tb = a.expr is not None, b.expr is not None
        if not ta and not tb:
            return self._untracked(node, cg, f"the output of {kind.name}")
        if a.shape is None or b.shape is None or len(a.shape) < 2 or len(b.shape) < 2:
            return self._give_up_all(node, cg, [a, b], f"{kind.name} needs 2-D or larger shapes")
        if (ta and (a.axis or 0) <= -3) or (tb and (b.axis or 0) <= -3):
            return self._batch_heads(node, kind, [a, b], cg)  # heads: a batch dimension
        out_shape = node_shape(node)
        n_out = len(out_shape) if out_shape is not None else None
        if ta and a.axis == -1 and tb and b.axis == -2:
            assert a.expr is not None
            assert b.expr is not None
            self.c.unify(a.expr, b.expr, f"{kind.name} contracts different channel layouts")
            return self._untracked(node, cg, f"the output of {kind.name}")
        keep: Val | None = None
        if ta and a.axis == -2 and not tb:
            keep = a
        elif tb and b.axis == -1 and not ta:
            keep = b
        elif ta and tb and a.axis == -1 and b.axis == -1:
            # a's channels are contracted with b's untracked rows (an additive bias over the
            # key positions, then ``attn @ v``): they stay whole; v's channels pass through
            assert a.expr is not None
            self.c.fix_expr(a.expr, f"{kind.name} contracts them with an untracked dimension")
            keep = b
        elif ta and tb and a.axis == -2 and b.axis == -2:
            assert b.expr is not None
            self.c.fix_expr(b.expr, f"{kind.name} contracts them with an untracked dimension")
            keep = a
        if keep is None or keep.expr is None:
            what = "contracts" if (ta and a.axis == -1) or (tb and b.axis == -2) else "mixes"
            return self._give_up_all(
                node, cg, [a, b], f"{kind.name} {what} channels with another dimension"
            )
        copies = keep.copies if keep.shape is not None and len(keep.shape) == n_out else ()
        return Val(keep.expr, keep.axis, out_shape, True, keep.origin, copies)

    def _op_sdpa(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        names = ("query", "key", "value")
        q, k, v = (kwargs.get(n, args[i] if len(args) > i else None) for i, n in enumerate(names))
        if not all(isinstance(t, Val) for t in (q, k, v)):
            return self._op_unknown(node, kind, args, kwargs, cg)
        assert isinstance(q, Val)
        assert isinstance(k, Val)
        assert isinstance(v, Val)
        if any(t.expr is not None and (t.axis or 0) <= -3 for t in (q, k, v)):
            return self._sdpa_heads(node, kind, q, k, v, args[3:], kwargs, cg)
        self._extra_fixed(kind, (args[3:], {n: kwargs[n] for n in kwargs if n not in names}))
        if (q.expr is None) != (k.expr is None) or (
            q.expr is not None and (q.axis, k.axis) != (-1, -1)
        ):
            return self._give_up_all(node, cg, [q, k, v], f"{kind.name} with untracked q or k")
        if q.expr is not None and k.expr is not None:
            self.c.unify(q.expr, k.expr, f"{kind.name} contracts different channel layouts")
        if v.expr is None:
            return self._untracked(node, cg, f"the output of {kind.name}")
        if v.axis != -1:
            return self._give_up(node, cg, v, f"{kind.name} with v's channels on another axis")
        return Val(v.expr, -1, node_shape(node), True, v.origin, v.copies)

    def _op_embedding(
        self, node: fx.Node, kind: OpKind, args: Args, kwargs: Kwargs, cg: CapturedGraph
    ) -> Val:
        self._op_unknown(node, kind, args, kwargs, cg)
        return self._untracked(node, cg, f"{kind.name} (not a prunable layer)")


def _adaptive_size(
    module: nn.Module | None, kind: OpKind, args: Args, kwargs: Kwargs
) -> tuple[int, ...] | None:
    """The output size of an adaptive pool (module or function) if it is fully known."""
    if module is not None:
        name = type(module).__name__
        size = getattr(module, "output_size", None) if name.startswith("Adaptive") else None
    elif "adaptive" in kind.name:
        size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
    else:
        return None
    sizes = [size] * kind.arg if isinstance(size, int) else size
    if not isinstance(sizes, (tuple, list)) or len(sizes) != kind.arg:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
        return None
    return tuple(sizes)


def _size_at(shape: tuple[int, ...] | None, axis: int, broadcast: bool) -> int | None:
    if shape is None:
        return None
    if len(shape) < -axis:
        return 1 if broadcast else None
    return shape[axis]
