"""The aten half of the op vocabulary: what each ``torch.ops.aten`` op of an exported graph is.

A graph captured by ``torch.export`` (:mod:`nasviz.tracing.exported`) calls aten operators
(``aten.view.default``, ``aten.add.Tensor`` ...) instead of the torch functions and tensor
methods an fx graph calls. :func:`aten_kind` maps them onto the same kinds
(:mod:`nasviz.tracing.rules` consults it from ``classify_function``), so the analyzer has ONE
vocabulary. Kinds found only here:

* ``slice`` - ``aten.slice.Tensor(x, dim, start, end, step)`` (``x[:, a:b]``);
* ``select`` - ``aten.select.int(x, dim, index)`` (``x[:, i]``); ``index`` -
  ``aten.index.Tensor(x, [i])`` (``weight[position_ids]``);
* ``create`` - a new tensor whose tensor arguments give only dtype/device/shape
  (``new_zeros``, ``zeros_like`` ...): nothing is coupled, nothing fixed;
* ``fill`` - a new tensor of literal sizes (``aten.zeros``, ``aten.ones`` ...): untracked,
  unless one size is the calling module's head count (T5's ``zeros(1, self.n_heads, q, k)``).

Layer calls (``aten.linear`` on a ``Linear``'s own weight ...) never reach this table: the
exported graph turns them into ``call_module`` nodes first.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ATEN_KINDS", "ATEN_POOLS", "aten_kind", "aten_name"]

_GROUPS: dict[str, str] = {
    "unary": (
        "relu relu_ relu6 gelu gelu_ silu silu_ mish sigmoid sigmoid_ tanh tanh_ hardswish "
        "hardsigmoid hardtanh hardtanh_ leaky_relu elu selu celu softplus softsign neg abs exp "
        "log sqrt rsqrt square sin cos erf sign floor ceil round reciprocal logical_not "
        "dropout native_dropout feature_dropout alpha_dropout softmax _softmax log_softmax "
        "_log_softmax clone contiguous alias detach detach_ lift_fresh_copy nan_to_num "
        "_to_copy to _safe_softmax log_sigmoid"
    ),
    "cast": "type_as",
    "elementwise": (
        "add add_ sub sub_ rsub mul mul_ div div_ pow pow_ maximum minimum fmax fmin where "
        "masked_fill masked_fill_ eq ne lt le gt ge logical_and logical_or logical_xor clamp "
        "clamp_ clamp_min clamp_max lerp bitwise_and bitwise_or bitwise_xor floor_divide "
        "remainder expand_as"
    ),
    "info": "sym_size sym_numel sym_stride sym_storage_offset _assert_tensor_metadata "
    "_assert_async _assert_scalar",
    "create": (
        "zeros_like ones_like empty_like full_like rand_like randn_like new_zeros new_ones "
        "new_empty new_full new_tensor"
    ),
    "reduce": "mean sum amax amin logsumexp prod",
    "split": "chunk split split_with_sizes unbind tensor_split",
    "matmul": "matmul bmm mm",
    "view": "view reshape _unsafe_view",
    "flatten": "flatten",
    "unflatten": "unflatten",
    "permute": "permute",
    "transpose": "transpose swapaxes swapdims",
    "t": "t",
    "squeeze": "squeeze",
    "unsqueeze": "unsqueeze",
    "expand": "expand",
    "repeat": "repeat",
    "cat": "cat concat concatenate",
    "stack": "stack",
    "roll": "roll",
    "slice": "slice",
    "select": "select",
    "index": "index",
    "sdpa": "scaled_dot_product_attention",
    "fill": "zeros ones empty full",
    "interpolate": (
        "upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_linear1d "
        "upsample_bilinear2d upsample_bicubic2d upsample_trilinear3d _upsample_nearest_exact2d"
    ),
    "pad": "pad constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d "
    "replication_pad1d replication_pad2d replication_pad3d",
}

#: aten op name (without namespace and overload) -> kind
ATEN_KINDS: dict[str, str] = {
    name: kind for kind, names in _GROUPS.items() for name in names.split()
}

#: pooling ops -> number of pooled (spatial) dimensions
ATEN_POOLS: dict[str, int] = {
    "max_pool1d": 1, "max_pool2d": 2, "max_pool3d": 3, "avg_pool1d": 1, "avg_pool2d": 2,
    "avg_pool3d": 3, "adaptive_avg_pool1d": 1, "adaptive_avg_pool2d": 2,
    "adaptive_avg_pool3d": 3, "adaptive_max_pool1d": 1, "adaptive_max_pool2d": 2,
    "adaptive_max_pool3d": 3, "max_pool2d_with_indices": 2,
}  # fmt: skip


def aten_name(fn: Any) -> str | None:
    """``"aten.view"`` for ``torch.ops.aten.view.default`` (``None`` for non-aten targets)."""
    schema = getattr(fn, "_schema", None)
    name = getattr(schema, "name", None)
    if not isinstance(name, str) or not name.startswith("aten::"):
        return None
    return "aten." + name[len("aten::") :]


def aten_kind(fn: Any) -> tuple[str, str, int] | None:
    """``(kind, op name, arg)`` of an aten operator overload (``None`` if ``fn`` is none).

    ``arg`` is the number of pooled dims for pools and 0 otherwise; ops missing from the
    tables are ``"unknown"`` (every channel they touch stays static).
    """
    name = aten_name(fn)
    if name is None:
        return None
    short = name[len("aten.") :]
    if short in ATEN_POOLS:
        pools = ATEN_POOLS[short]
        return ("unknown" if short.endswith("with_indices") else "pool", name, pools)
    return (ATEN_KINDS.get(short, "unknown"), name, 0)
