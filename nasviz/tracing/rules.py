"""Op classification: what each graph node does to the channel dimension.

Every ``call_function`` / ``call_method`` / ``call_module`` node is mapped to a *kind* that the
analyzer (:mod:`nasviz.tracing.analyze`) knows how to propagate channels through:

=============== ==========================================================================
kind            meaning
=============== ==========================================================================
``unary``       element-wise on one tensor (activations, dropout, casts, softmax): layout kept
``cast``        like ``unary``; further tensor arguments only give a dtype (``type_as``)
``elementwise`` several tensors broadcast together (add, mul, sub, where, masked_fill):
                their channels are coupled
``cat``/``stack`` concatenation / stacking; ``flatten``, ``view``, ``unflatten``, ``permute``,
                ``transpose``, ``squeeze``, ``unsqueeze``, ``getitem``, ``split``, ``expand``,
                ``repeat``: shape ops that move, merge or index dimensions
``roll``        ``torch.roll``: passes channels through when it shifts other dims only
``reduce``      mean/sum/... over some dims; ``pool``/``interpolate``/``pad``: spatial ops
``info``        ``size()``, ``dim()``, ``x.shape``: no tensor comes out
``embedding``   a lookup table: its output width belongs to no prunable layer
``matmul``      ``a @ b``: contracting two channel dims couples them (attention ``q @ k^T``);
                the rows of ``a`` or the columns of ``b`` pass through; ``sdpa``:
                ``scaled_dot_product_attention`` (q and k coupled, the output follows v)
``unknown``     anything else: every prunable channel it touches stays static
=============== ==========================================================================

:func:`layer_spec` describes the prunable layers themselves (which attributes are the input and
output widths, and which tensor dimension carries the channels): each layer family declares that
on its dynamic class (:mod:`nasviz.dynamic.family`), so no layer type is named here.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasviz.dynamic import dynamic_class_for  # importing nasviz.dynamic registers every twin
from nasviz.dynamic.family import LayerSpec
from nasviz.tracing.aten import aten_kind

__all__ = [
    "LayerSpec",
    "OpKind",
    "classify_function",
    "classify_method",
    "classify_module",
    "has_custom_forward",
    "layer_spec",
]


@dataclass(frozen=True)
class OpKind:
    """A node's kind, a human-readable op name and an extra integer (e.g. pooled dims)."""

    kind: str
    name: str
    arg: int = 0


_UNARY_FUNCS: list[Any] = [
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.gelu, F.silu, F.mish, F.elu, F.selu,
    F.celu, F.leaky_relu, F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, F.softsign,
    torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.dropout, F.dropout1d, F.dropout2d,
    F.dropout3d, F.alpha_dropout, torch.dropout, torch.neg, torch.abs, torch.exp, torch.log,
    torch.sqrt, torch.rsqrt, torch.square, torch.sin, torch.cos, torch.erf, torch.sign,
    torch.floor, torch.ceil, torch.round, torch.logical_not, torch.softmax, F.softmax,
    torch.log_softmax, F.log_softmax, F.normalize, torch.zeros_like, torch.ones_like,
    torch.empty_like, torch.full_like, torch.rand_like, torch.randn_like, torch.nan_to_num,
    operator.neg, operator.pos, operator.invert, operator.abs, F.logsigmoid, F.silu,
]  # fmt: skip
_ELEMENTWISE_FUNCS: list[Any] = [
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
    operator.pow, operator.iadd, operator.isub, operator.imul, operator.itruediv,
    operator.and_, operator.or_, operator.xor, operator.eq, operator.ne, operator.lt,
    operator.le, operator.gt, operator.ge, torch.add, torch.sub, torch.subtract, torch.mul,
    torch.multiply, torch.div, torch.divide, torch.true_divide, torch.floor_divide,
    torch.remainder, torch.pow, torch.maximum, torch.minimum, torch.fmax, torch.fmin,
    torch.where, torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge,
    torch.logical_and, torch.logical_or, torch.masked_fill, torch.clamp, torch.clip,
    torch.lerp,
]  # fmt: skip
_FUNC_KINDS: dict[Any, str] = {
    torch.cat: "cat", torch.concat: "cat", torch.concatenate: "cat", torch.stack: "stack",
    torch.flatten: "flatten", torch.reshape: "view", torch.unflatten: "unflatten",
    torch.permute: "permute", torch.transpose: "transpose", torch.swapaxes: "transpose",
    torch.swapdims: "transpose", torch.t: "t", torch.squeeze: "squeeze",
    torch.unsqueeze: "unsqueeze", operator.getitem: "getitem", torch.chunk: "split",
    torch.split: "split", torch.unbind: "split", torch.tensor_split: "split",
    torch.mean: "reduce", torch.sum: "reduce", torch.amax: "reduce", torch.amin: "reduce",
    torch.logsumexp: "reduce", torch.prod: "reduce", getattr: "info",
    F.interpolate: "interpolate", F.upsample: "interpolate", F.pad: "pad",
    F.embedding: "embedding", operator.matmul: "matmul", torch.matmul: "matmul",
    torch.bmm: "matmul", F.scaled_dot_product_attention: "sdpa", torch.roll: "roll",
}  # fmt: skip
_POOL_FUNCS: dict[Any, int] = {
    F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, F.avg_pool1d: 1, F.avg_pool2d: 2,
    F.avg_pool3d: 3, F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2,
    F.adaptive_avg_pool3d: 3, F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2,
    F.adaptive_max_pool3d: 3, F.lp_pool1d: 1, F.lp_pool2d: 2, torch.max_pool1d: 1,
    torch.max_pool2d: 2, torch.max_pool3d: 3, torch.avg_pool1d: 1,
    torch.adaptive_avg_pool1d: 1,
}  # fmt: skip

_UNARY_METHODS = (
    "relu sigmoid tanh neg abs exp log sqrt rsqrt square sin cos erf sign floor ceil round "
    "softmax log_softmax logical_not contiguous clone detach float half double bfloat16 bool "
    "int long cpu cuda requires_grad zero nan_to_num"
)
_ELEMENTWISE_METHODS = (
    "add sub subtract mul multiply div divide true_divide floor_divide remainder pow maximum "
    "minimum masked_fill where eq ne lt le gt ge logical_and logical_or clamp clip lerp expand_as"
)
_METHOD_GROUPS = {
    "unary": _UNARY_METHODS,
    "cast": "to type type_as",
    "elementwise": _ELEMENTWISE_METHODS,
    "info": "size dim numel ndimension nelement element_size get_device stride",
    "reduce": "mean sum amax amin logsumexp prod",
    "split": "chunk split unbind tensor_split",
    "matmul": "matmul bmm",
    "create": "new_empty new_zeros new_ones new_full new_tensor",
}
_METHOD_KINDS: dict[str, str] = {
    name: kind for kind, names in _METHOD_GROUPS.items() for name in names.split()
}
_METHOD_KINDS.update(
    flatten="flatten", view="view", reshape="view", unflatten="unflatten", permute="permute",
    transpose="transpose", swapaxes="transpose", swapdims="transpose", t="t", squeeze="squeeze",
    unsqueeze="unsqueeze", expand="expand", repeat="repeat", roll="roll",
)  # fmt: skip

_UNARY_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Mish, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Softsign, nn.Sigmoid, nn.Tanh,
    nn.LogSigmoid, nn.Tanhshrink, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout, nn.Softmax, nn.LogSoftmax,
)  # fmt: skip
_POOL_MODULES: dict[type[nn.Module], int] = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2,
    nn.AvgPool3d: 3, nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3, nn.LPPool1d: 1,
    nn.LPPool2d: 2,
}  # fmt: skip
_PAD_MODULES = (
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d,
    nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.CircularPad1d,
    nn.CircularPad2d, nn.CircularPad3d,
)  # fmt: skip

_FUNC_TABLE: dict[Any, str] = {
    **dict.fromkeys(_UNARY_FUNCS, "unary"),
    **dict.fromkeys(_ELEMENTWISE_FUNCS, "elementwise"),
    **_FUNC_KINDS,
}


def _func_name(fn: Any) -> str:
    mod = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__name__", repr(fn))
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod in ("torch", "torch._C._VariableFunctions", "") or mod.startswith("torch._C"):
        return f"torch.{name}"
    return f"{mod}.{name}" if mod else name


def classify_function(fn: Any) -> OpKind:
    """The kind of a ``call_function`` target (torch functions, operators, aten overloads)."""
    aten = aten_kind(fn)
    if aten is not None:
        return OpKind(*aten)
    name = _func_name(fn)
    try:
        if fn in _POOL_FUNCS:
            return OpKind("pool", name, _POOL_FUNCS[fn])
        kind = _FUNC_TABLE.get(fn)
    except TypeError:  # unhashable target
        kind = None
    return OpKind(kind or "unknown", name)


def classify_method(method: str) -> OpKind:
    """The kind of a ``call_method`` target (in-place variants such as ``add_`` included)."""
    base = method[:-1] if method.endswith("_") and not method.endswith("__") else method
    return OpKind(_METHOD_KINDS.get(base, "unknown"), f"Tensor.{method}")


def classify_module(m: nn.Module, qualname: str) -> OpKind:
    """The kind of a ``call_module`` target that is *not* a prunable layer."""
    name = f"nn.{type(m).__name__} '{qualname}'"
    if isinstance(m, nn.PReLU):
        return OpKind("unary" if m.num_parameters == 1 else "unknown", name)
    if isinstance(m, _UNARY_MODULES):
        return OpKind("unary", name)
    for cls, k in _POOL_MODULES.items():
        if isinstance(m, cls):
            if getattr(m, "return_indices", False):
                return OpKind("unknown", name)
            return OpKind("pool", name, k)
    if isinstance(m, (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)):
        return OpKind("interpolate", name)
    if isinstance(m, _PAD_MODULES):
        return OpKind("pad", name, len(m.padding) // 2)
    if isinstance(m, nn.Flatten):
        return OpKind("flatten", name)
    if isinstance(m, nn.Unflatten):
        return OpKind("unflatten", name)
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
        return OpKind("embedding", name)
    return OpKind("unknown", name)


def layer_spec(m: nn.Module) -> LayerSpec | None:
    """The :class:`LayerSpec` of a module with a dynamic twin (``None`` for other modules), as
    its layer family declares it (:meth:`~nasviz.dynamic.DynamicModule.layer_spec`).
    """
    twin = dynamic_class_for(m)
    return None if twin is None else twin.layer_spec(m)


def has_custom_forward(m: nn.Module) -> bool:
    """Whether ``m`` subclasses its torch layer with its own ``forward`` (then it is opaque)."""
    twin = dynamic_class_for(m)
    if twin is None or isinstance(m, twin):
        return False
    plain = twin.plain_class(m)
    return plain is not None and type(m).forward is not plain.forward
