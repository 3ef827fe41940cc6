"""Dynamic ``nn.MultiheadAttention``: whole heads and the embedding width.

Two widths are prunable:

* ``num_heads`` (role ``"heads"``): removing head ``h`` removes rows ``h*hd .. (h+1)*hd`` of the
  query, key and value projections (and their biases, and of ``bias_k``/``bias_v``) and the same
  columns of ``out_proj``; ``head_dim`` (``hd``) never changes. Its source counts heads (an
  :class:`~nasviz.hparam.Hparam` over ``1 .. num_heads``; its order ranks heads).
* ``embed_dim`` (role ``"out"``): the residual stream the layer reads and writes - the columns of
  the query projection (and of the key/value projections when ``kdim == vdim == embed_dim``), the
  rows of ``out_proj`` and its bias. The stream is coupled across the model like a norm's
  channels: the layer passes its input's channel layout (the last dim, ``(L, N, E)`` and
  ``(N, L, E)`` alike) to its output.

A plain ``nn.MultiheadAttention`` has ``embed_dim == num_heads * head_dim``, so a selection is
valid when the active embedding width equals the active heads times ``head_dim``. Tracing keeps
that true by letting the heads *follow* the stream (``set_dim("embed_dim", s)`` without a heads
source of its own: ``width / head_dim`` heads, the first ones); the stream's choices are then
multiples of ``head_dim``. Any valid selection computes exactly what the exported plain
``nn.MultiheadAttention`` (with the new ``embed_dim``/``num_heads``) computes; an invalid one is
refused with the reason. While sliced, ``_qkv_same_embed_dim`` reads ``False`` so that a
``nn.TransformerEncoderLayer`` never takes its fused fast path with the full weights.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nasviz.dynamic.base import DynamicModule, register_dynamic
from nasviz.dynamic.family import LayerSpec, RuleSpec, WidthRule
from nasviz.dynamic.linear import DynamicLinear
from nasviz.errors import HparamError
from nasviz.hparam import DimSource, Hparam, Index, RepeatDim

__all__ = ["DynamicMultiheadAttention", "FollowHeads"]


class FollowHeads:
    """The heads of an attention layer driven by its embedding width: ``width // head_dim``
    heads, the first ones (a :class:`~nasviz.hparam.DimSource` over head counts).
    """

    def __init__(self, stream: DimSource, head_dim: int, num_heads: int) -> None:
        self.stream, self.head_dim, self._full = stream, head_dim, num_heads

    @property
    def full(self) -> int:
        """The layer's original number of heads."""
        return self._full

    def active_size(self) -> int:
        """Active heads: the stream's active width divided by ``head_dim`` (integer division)."""
        return self.stream.active_size() // self.head_dim

    def active_index(self) -> Index:
        """``slice(0, active_size())``: the first heads are kept, never a reordered subset."""
        return slice(0, self.active_size())

    def hparams(self) -> list[Hparam]:
        """The stream's hparams (the heads have none of their own)."""
        return self.stream.hparams()

    def version(self) -> tuple[int, ...]:
        """The stream's version: the heads change exactly when the stream does."""
        return self.stream.version()

    def __repr__(self) -> str:
        return f"FollowHeads({self.stream!r}, head_dim={self.head_dim})"


@register_dynamic
class DynamicMultiheadAttention(DynamicModule, nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with prunable heads and embedding width (module docstring).

    Example::

        >>> mha = DynamicMultiheadAttention.convert(nn.MultiheadAttention(8, 4))
        >>> mha.set_dim("embed_dim", Hparam([4, 8]))
        >>> mha.dim("embed_dim").active = 4
        >>> mha.embed_dim, mha.num_heads, mha.head_dim
        (4, 2, 2)
        >>> mha.export()
        MultiheadAttention(
          (out_proj): NonDynamicallyQuantizableLinear(in_features=4, out_features=4, bias=True)
        )
    """

    torch_cls = nn.MultiheadAttention
    layer_type = "nn.MultiheadAttention"
    rule = RuleSpec("features")
    trace_kind = "attention"
    channel_axis = -1
    dynamic_attrs = {"embed_dim": "out", "num_heads": "heads"}
    param_dims = {
        "in_proj_weight": {1: "embed_dim"},
        "q_proj_weight": {1: "embed_dim"},
        "out_proj_weight": {0: "embed_dim"},
        "out_proj_bias": {0: "embed_dim"},
    }

    head_dim: int
    batch_first: bool
    dropout: float
    add_zero_attn: bool
    bias_k: torch.Tensor | None
    bias_v: torch.Tensor | None

    @classmethod
    def layer_spec(cls, module: nn.Module) -> LayerSpec | None:
        """The stream (``embed_dim``, the last dim) passes through; heads are internal; key and
        value carry the stream too when they share ``embed_dim``.
        """
        same = bool(module.__dict__.get("_qkv_same_embed_dim", False))
        shared = ("key", "value") if same else ()
        return LayerSpec(
            "attention", "embed_dim", "embed_dim", -1, inner=("num_heads",), shared=shared
        )

    # -- declared aliases: out_proj's tensors follow the stream -------------------------------
    @property
    def out_proj_weight(self) -> torch.Tensor:
        """``out_proj.weight`` under the name ``param_dims`` slices (rows follow ``embed_dim``)."""
        return self.out_proj.weight

    @property
    def out_proj_bias(self) -> torch.Tensor | None:
        """``out_proj.bias`` (``None`` without bias), sliced along ``embed_dim`` like the weight."""
        return self.out_proj.bias

    @property
    def same_embed_dim(self) -> bool:
        """Whether query, key and value share ``embed_dim`` (one fused ``in_proj_weight``)."""
        return bool(self.__dict__["_qkv_same_embed_dim"])

    # -- dimensions ----------------------------------------------------------------------------
    def _nv_after_convert(self) -> None:
        # ``out_proj`` becomes a dynamic linear driven by the same sources, so that whatever
        # counts a module's own parameters (profile, cost model) counts its active subnet
        DynamicLinear.convert(self.out_proj)

    def _nv_before_unconvert(self) -> None:
        self.__dict__.pop("_nv_tokens", None)
        if isinstance(self.out_proj, DynamicModule):
            self.out_proj.unconvert()

    def set_dim(self, attr: str, source: DimSource | None) -> None:
        """Back ``attr``; heads without a source of their own follow ``embed_dim``."""
        super().set_dim(attr, source)
        if attr == "embed_dim":
            heads = self._nv_dims["num_heads"]
            if heads is None or isinstance(heads, FollowHeads):
                hd = self.head_dim
                self._nv_dims["num_heads"] = (
                    None if source is None else FollowHeads(source, hd, self._nv_orig["num_heads"])
                )
        out_proj = self.out_proj
        if isinstance(out_proj, DynamicLinear):
            heads = self._nv_dims["num_heads"]
            out_proj.set_dim("out_features", self._nv_dims["embed_dim"])
            out_proj.set_dim(
                "in_features", None if heads is None else RepeatDim(heads, self.head_dim)
            )

    def choices_for(self, attr: str, rule: WidthRule) -> list[int] | None:
        """``embed_dim``: the rule's widths in whole heads (multiples of ``head_dim``);
        ``num_heads``: the rule's ratios of the head count, rounded to whole heads.
        """
        self._check_attr(attr)
        if attr == "embed_dim":
            return rule.choices_for(self.original_size(attr), multiple_of=self.head_dim)
        full = self.original_size("num_heads")
        return sorted({max(1, round(r * full)) for r in rule.ratios} | {full})

    def importance(self, attr: str) -> torch.Tensor | None:
        """``num_heads``: the L2 norm of each head's query/key/value rows; else ``None``."""
        if attr != "num_heads":
            return None
        w = self._proj_weights(None, None)
        rows = torch.cat([t.detach().float() for t in w], dim=1)  # (H*hd, in_q + in_k + in_v)
        return cast(torch.Tensor, rows.view(self.original_size("num_heads"), -1).norm(dim=1))

    def _rows(self) -> torch.Tensor | None:
        """Rows of each projection kept by the active heads (``None`` = all)."""
        heads = self.active_index("num_heads")
        if heads is None:
            return None
        full = self.original_size("num_heads")
        kept = torch.arange(full)[heads] if isinstance(heads, slice) else heads.cpu()
        return (kept[:, None] * self.head_dim + torch.arange(self.head_dim)).flatten()

    def _check_valid(self) -> None:
        e, h = self.active_size("embed_dim"), self.active_size("num_heads")
        if e != h * self.head_dim:
            msg = (
                f"{type(self).__name__}: embed_dim {e} must equal num_heads {h} x head_dim "
                f"{self.head_dim} (a plain nn.MultiheadAttention has no other shape); choose "
                f"widths that are whole heads, or let the heads follow embed_dim"
            )
            raise HparamError(msg)

    # -- slicing -------------------------------------------------------------------------------
    def _proj_weights(
        self, rows: torch.Tensor | None, cols: Index | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value projection weights: ``rows`` of each, the stream ``cols`` of
        the query (and of key/value when they share ``embed_dim``).
        """
        if self.same_embed_dim:
            assert self.in_proj_weight is not None
            q, k, v = self.in_proj_weight.chunk(3)
        else:
            q, k, v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        out = []
        for i, w in enumerate((q, k, v)):
            if rows is not None:
                w = w.index_select(0, rows.to(w.device))
            if cols is not None and (i == 0 or self.same_embed_dim):
                w = w[:, cols] if isinstance(cols, slice) else w.index_select(1, cols.to(w.device))
            out.append(w)
        return out[0], out[1], out[2]

    def _sliced(self) -> dict[str, Any]:
        """Every tensor of the active subnet, by the name ``multi_head_attention_forward`` and
        the constructor use.
        """
        rows, cols = self._rows(), self.active_index("embed_dim")
        q, k, v = self._proj_weights(rows, cols)
        bias: torch.Tensor | None = self.in_proj_bias
        if bias is not None and rows is not None:
            n = self.original_size("num_heads") * self.head_dim
            bias = torch.cat([b.index_select(0, rows.to(b.device)) for b in bias.split(n)])

        def heads_of(t: torch.Tensor | None) -> torch.Tensor | None:
            return t if t is None or rows is None else t.index_select(2, rows.to(t.device))

        wo: torch.Tensor = self.out_proj.weight
        bo: torch.Tensor | None = self.out_proj.bias
        if rows is not None:
            wo = wo.index_select(1, rows.to(wo.device))
        if cols is not None:
            idx = torch.arange(wo.shape[0])[cols] if isinstance(cols, slice) else cols
            wo = wo.index_select(0, idx.to(wo.device))
            bo = None if bo is None else bo.index_select(0, idx.to(bo.device))
        return {"q": q, "k": k, "v": v, "in_bias": bias, "bias_k": heads_of(self.bias_k),
                "bias_v": heads_of(self.bias_v), "out_w": wo, "out_b": bo}  # fmt: skip

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Exactly the plain layer's forward on the active subnet's tensors."""
        self._nv_record_tokens(query, key)
        if self.is_full():
            return super().forward(
                query, key, value, key_padding_mask, need_weights, attn_mask,
                average_attn_weights, is_causal,
            )  # fmt: skip
        self._check_valid()
        t = self._sliced()
        batched = query.dim() == 3
        if self.batch_first and batched:
            query, key, value = (x.transpose(1, 0) for x in (query, key, value))
        out, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, None, t["in_bias"],
            t["bias_k"], t["bias_v"], self.add_zero_attn, self.dropout, t["out_w"], t["out_b"],
            training=self.training, key_padding_mask=key_padding_mask, need_weights=need_weights,
            attn_mask=attn_mask, use_separate_proj_weight=True, q_proj_weight=t["q"],
            k_proj_weight=t["k"], v_proj_weight=t["v"],
            average_attn_weights=average_attn_weights, is_causal=is_causal,
        )  # fmt: skip
        if self.batch_first and batched:
            out = out.transpose(1, 0)
        return out, weights

    # -- shapes and cost -----------------------------------------------------------------------
    def active_shape(self, name: str) -> tuple[int, ...]:
        """Active shape of one of the layer's own tensors."""
        e, inner = self.active_size("embed_dim"), self.active_size("num_heads") * self.head_dim
        t = getattr(self, name)
        if name == "in_proj_weight":
            return (3 * inner, e)
        if name == "q_proj_weight":
            return (inner, e)
        if name in ("k_proj_weight", "v_proj_weight"):
            return (inner, t.shape[1])
        if name == "in_proj_bias":
            return (3 * inner,)
        if name in ("bias_k", "bias_v"):
            return (1, 1, inner)
        if name == "out_proj_weight":
            return (e, inner)
        if name == "out_proj_bias":
            return (e,)
        return tuple(t.shape)

    def active_param_count(self) -> int:
        """Parameters of the layer itself in the active subnet (``out_proj`` is a child module:
        a cost model counts it there, see the report on the cost of attention).
        """
        total = 0
        for name, _ in self.named_parameters(recurse=False):
            n = 1
            for s in self.active_shape(name):
                n *= s
            total += n
        return total

    def _nv_record_tokens(self, query: torch.Tensor, key: torch.Tensor) -> None:
        """Remember the token counts of the last call (query tokens, key tokens, query-key
        pairs, batch included): the cost of the attention products relative to the projections.
        """
        batched = query.dim() == 3
        batch = (query.shape[0] if self.batch_first else query.shape[1]) if batched else 1
        nq, nk = query.numel() // query.shape[-1], key.numel() // key.shape[-1]
        self.__dict__["_nv_tokens"] = (nq, nk, nq * (nk // max(batch, 1)))

    def flops_ratio(self) -> float:
        """Active / full FLOPs at the token counts of the last call: each projection scales
        with its weight times its tokens, ``q @ k^T`` and ``attn @ v`` with the heads times the
        query-key pairs. Before any call: active / full projection weights.
        """
        tokens = self.__dict__.get("_nv_tokens")
        if tokens is not None and self.bias_k is None and not self.add_zero_attn:
            return self._flops(tokens, active=True) / max(self._flops(tokens, active=False), 1)
        names = [n for n, _ in self.named_parameters(recurse=False)] + ["out_proj_weight"]
        full = act = 0
        for name in names:
            full += getattr(self, name).numel()
            n = 1
            for s in self.active_shape(name):
                n *= s
            act += n
        return act / full if full else 1.0

    def _flops(self, tokens: tuple[int, int, int], active: bool) -> int:
        """Matmul FLOPs (a multiply-add is 2) of a call with ``tokens``, active or full size."""
        nq, nk, pairs = tokens

        def numel(name: str) -> int:
            shape = self.active_shape(name) if active else tuple(getattr(self, name).shape)
            n = 1
            for s in shape:
                n *= s
            return n

        if self.same_embed_dim:
            proj = (nq + 2 * nk) * numel("in_proj_weight") // 3
        else:
            proj = nq * numel("q_proj_weight") + nk * (
                numel("k_proj_weight") + numel("v_proj_weight")
            )
        inner = numel("out_proj_weight") // (
            self.active_size("embed_dim") if active else self.original_size("embed_dim")
        )
        return 2 * (proj + nq * numel("out_proj_weight") + 2 * pairs * inner)

    def export(self) -> nn.Module:
        """A plain ``nn.MultiheadAttention`` with the active ``embed_dim`` and ``num_heads``."""
        self._check_valid()
        e, h = self.active_size("embed_dim"), self.active_size("num_heads")
        same = self.same_embed_dim
        with torch.no_grad():
            t = {k: None if v is None else v.detach() for k, v in self._sliced().items()}
        q = t["q"]
        assert q is not None
        plain = nn.MultiheadAttention(
            e, h, dropout=self.dropout, bias=self.in_proj_bias is not None,
            add_bias_kv=self.bias_k is not None, add_zero_attn=self.add_zero_attn,
            kdim=None if same else self.__dict__["kdim"],
            vdim=None if same else self.__dict__["vdim"], batch_first=self.batch_first,
            device=q.device, dtype=q.dtype,
        )  # fmt: skip
        with torch.no_grad():
            if same:
                plain.in_proj_weight.copy_(torch.cat([t["q"], t["k"], t["v"]]))  # type: ignore[list-item]
            else:
                plain.q_proj_weight.copy_(q)
                plain.k_proj_weight.copy_(t["k"])  # type: ignore[arg-type]
                plain.v_proj_weight.copy_(t["v"])  # type: ignore[arg-type]
            for name, key in (
                ("in_proj_bias", "in_bias"),
                ("bias_k", "bias_k"),
                ("bias_v", "bias_v"),
            ):
                target = getattr(plain, name)
                if target is not None and t[key] is not None:
                    target.copy_(t[key])
            plain.out_proj.weight.copy_(t["out_w"])  # type: ignore[arg-type]
            if plain.out_proj.bias is not None and t["out_b"] is not None:
                plain.out_proj.bias.copy_(t["out_b"])
        plain.out_proj.train(self.out_proj.training)
        plain.out_proj.weight.requires_grad_(self.out_proj.weight.requires_grad)
        return self._export_finish(plain)


def _same_embed_dim_while_full(self: DynamicMultiheadAttention) -> bool:
    return bool(self.__dict__["_qkv_same_embed_dim"]) and self.is_full()


def _set_same_embed_dim(self: DynamicMultiheadAttention, value: bool) -> None:
    self.__dict__["_qkv_same_embed_dim"] = value


# ``False`` while sliced, so that no fused fast path (``nn.TransformerEncoderLayer``'s) reads the
# full ``in_proj_weight``; the original value stays in the instance ``__dict__``
DynamicMultiheadAttention._qkv_same_embed_dim = property(
    _same_embed_dim_while_full, _set_same_embed_dim
)
