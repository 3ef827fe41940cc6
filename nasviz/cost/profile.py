"""Per-layer FLOPs and parameters of any (sub)net: plain, dynamic (its active subnet) or exported.

:func:`profile` runs one forward pass of ``model(dummy_input)`` under ``torch.no_grad()`` with every
module in eval mode, counting FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` (its
conventions: a multiply-add is 2 FLOPs; only matmuls, convolutions and attention are counted - bias
adds, norms, activations and pooling count 0). It returns a :class:`Profile`: one table row per
module that has FLOPs or parameters of its own, and the totals. Attention is counted everywhere:
torch's fused fast path of ``nn.MultiheadAttention`` (eval, no grad), one kernel the counter does
not see, is switched off meanwhile, and the CPU kernel of ``scaled_dot_product_attention`` gets
torch's formula for its other attention kernels.

*Attribution.* FlopCounterMode charges an op to *every* module running at the time, so its
per-module counts are hierarchical (a block includes its convs). Subtracting children from parents
goes wrong when a module is called from outside its parent or shared between parents, so
:func:`profile` instead keeps its own call stack (global forward hooks, removed on exit) and charges
the growth of FlopCounterMode's running total to the innermost running module of ``model``. Each
FLOP is counted once, by the module whose own code issued it: a ``Linear``'s matmul by the
``Linear``, an attention block's ``q @ k.T`` by the attention block. Modules that are not part of
``model`` (e.g. kept in a plain list) are charged to the module that called them. The root module's
row is named ``"(root)"``.

*Parameters.* A dynamic module counts its active subnet (``active_param_count()``), any other
module the ``numel`` of its own parameters; a parameter shared by several modules (tied weights) is
counted once, by the first module in ``named_modules()`` order that holds it.

:class:`~nasviz.cost.CostModel` (:mod:`nasviz.cost.model`) estimates any candidate subnet's
FLOPs/params from one full-size profile, without running the model.

Example::

    >>> from torch import nn
    >>> p = profile(nn.Sequential(nn.Linear(8, 4), nn.ReLU()), torch.zeros(2, 8))
    >>> p.flops, p.params  # 2 * batch * in * out, weight + bias
    (128, 36)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from nasviz._utils import mha_fastpath_off, training_flags
from nasviz.dynamic.base import DynamicModule
from nasviz.errors import NasvizError

__all__ = [
    "ROOT_NAME",
    "Profile",
    "exclusive_flops",
    "format_flops",
    "format_params",
    "measure_modules",
    "param_count",
    "profile",
]

#: The ``module`` entry of the root module's row.
ROOT_NAME = "(root)"

_COLUMNS = ["module", "type", "flops", "params", "flops_pct", "params_pct"]
_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _si(value: float) -> tuple[str, str]:
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.2f}", prefix
    return (f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"), ""


def format_flops(value: float) -> str:
    """``1_200_000 -> "1.20 MFLOPs"``."""
    num, prefix = _si(value)
    return f"{num} {prefix}FLOPs"


def format_params(value: float) -> str:
    """``1_200_000 -> "1.20M params"``."""
    num, prefix = _si(value)
    return f"{num}{prefix} params"


@dataclass(frozen=True, eq=False)
class Profile:
    """FLOPs and parameters of a model, per module and in total.

    ``table`` has one row per module with FLOPs or parameters of its own, in ``named_modules()``
    order, with columns ``module`` (qualified name, ``"(root)"`` for the model itself), ``type``
    (class name; dynamic twins read ``DynamicLinear`` etc.), ``flops``, ``params``, ``flops_pct``
    and ``params_pct`` (percent of the totals). ``flops`` and ``params`` are the column sums.

    Example::

        >>> p = profile(nn.Linear(8, 4), torch.zeros(2, 8))
        >>> p.table[["module", "flops", "params"]].values.tolist()
        [['(root)', 128, 36]]
    """

    table: pd.DataFrame
    flops: int
    params: int

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[str, str, int, int]]) -> Profile:
        """Build a profile from ``(module, type, flops, params)`` rows; totals are the sums."""
        table = pd.DataFrame(list(rows), columns=_COLUMNS[:4])
        table["flops"] = table["flops"].astype("int64")
        table["params"] = table["params"].astype("int64")
        flops, params = int(table["flops"].sum()), int(table["params"].sum())
        table["flops_pct"] = 100.0 * table["flops"] / flops if flops else 0.0
        table["params_pct"] = 100.0 * table["params"] / params if params else 0.0
        return cls(table=table, flops=flops, params=params)

    def __repr__(self) -> str:
        return self.format()

    def format(self, max_rows: int = 20) -> str:
        """A readable summary: totals, then the ``max_rows`` rows with the most FLOPs."""
        n = len(self.table)
        head = (
            f"Profile: {format_flops(self.flops)}, {format_params(self.params)} "
            f"in {n} module{'s' if n != 1 else ''}"
        )
        if n == 0:
            return head
        shown = self.table
        if n > max_rows:
            keep = self.table.sort_values("flops", ascending=False, kind="stable").index[:max_rows]
            shown = self.table.loc[sorted(keep)]
        text = pd.DataFrame(
            {
                "module": shown["module"],
                "type": shown["type"],
                "flops": [format_flops(v) for v in shown["flops"]],
                "flops %": [f"{v:.1f}%" for v in shown["flops_pct"]],
                "params": [format_params(v) for v in shown["params"]],
            }
        ).to_string(index=False)
        tail = f"\n... {n - max_rows} more modules (see .table)" if n > max_rows else ""
        return f"{head}\n{text}{tail}"


def profile(model: nn.Module, dummy_input: Any) -> Profile:
    """Per-module and total FLOPs/params of ``model`` on ``dummy_input``.

    Args:
        model: any ``nn.Module``; dynamic modules are measured at their active subnet.
        dummy_input: a tensor (``model(x)``), a tuple of positional arguments
            (``model(*x)``) or a dict of keyword arguments (``model(**x)``). Batch size scales
            the FLOPs.
    """
    rows = [
        (name, type(module).__name__, flops, params)
        for name, module, flops, params, _ in measure_modules(model, dummy_input)
        if flops or params
    ]
    return Profile.from_rows(rows)


def measure_modules(
    model: nn.Module, dummy_input: Any
) -> list[tuple[str, nn.Module, int, int, frozenset[str]]]:
    """``(name, module, own FLOPs, own params, tied parameter names)`` for every module.

    The building block of :func:`profile` and the cost model: *tied* names are the module's own
    parameters already counted by an earlier module (excluded from its ``params``).
    """
    flops = exclusive_flops(model, dummy_input)
    seen: set[int] = set()
    out: list[tuple[str, nn.Module, int, int, frozenset[str]]] = []
    for name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        tied = frozenset(n for n, p in own if id(p) in seen)
        seen.update(id(p) for _, p in own)
        out.append(
            (name or ROOT_NAME, module, flops.get(id(module), 0), param_count(module, tied), tied)
        )
    return out


def _split_input(dummy_input: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(dummy_input, tuple):
        return dummy_input, {}
    if isinstance(dummy_input, Mapping):
        bad = [k for k in dummy_input if not isinstance(k, str)]
        if bad:
            msg = (
                f"dummy_input: a dict is passed as keyword arguments, so its keys must be "
                f"strings; got {bad!r}. Wrap a dict the model takes positionally in a tuple: "
                "(d,)"
            )
            raise NasvizError(msg)
        return (), dict(dummy_input)
    return (dummy_input,), {}


class _Attributor:
    """Charges the growth of a FlopCounterMode total to the innermost running module."""

    def __init__(self, counter: FlopCounterMode, model: nn.Module) -> None:
        self.counter = counter
        self.known = {id(m) for m in model.modules()}
        self.root = id(model)
        self.stack: list[int] = []
        self.flops: dict[int, int] = {}
        self.last = 0

    def flush(self) -> None:
        now = self.counter.get_total_flops()
        if now != self.last:
            owner = self.stack[-1] if self.stack else self.root
            self.flops[owner] = self.flops.get(owner, 0) + now - self.last
            self.last = now

    def pre(self, module: nn.Module, args: Any) -> None:
        if id(module) in self.known:
            self.flush()
            self.stack.append(id(module))

    def post(self, module: nn.Module, args: Any, output: Any) -> None:
        if id(module) in self.known:
            self.flush()
            key = id(module)
            for i in range(len(self.stack) - 1, -1, -1):
                if self.stack[i] == key:
                    del self.stack[i]
                    break


def _cpu_flash_attention_flop(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    *args: Any,
    **kwargs: Any,
) -> int:
    """FLOPs of ``aten._scaled_dot_product_flash_attention_for_cpu`` (the kernel
    ``scaled_dot_product_attention`` runs on CPU), as torch counts its other attention kernels.
    """
    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


#: formulas FlopCounterMode lacks: without them attention on CPU would count 0 FLOPs
_EXTRA_FORMULAS: dict[Any, Any] = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flop,
}


def exclusive_flops(model: nn.Module, dummy_input: Any) -> dict[int, int]:
    """``{id(module): FLOPs issued by the module's own code}`` for one eval forward pass."""
    args, kwargs = _split_input(dummy_input)
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    attributor = _Attributor(counter, model)
    pre = register_module_forward_pre_hook(attributor.pre)
    post = register_module_forward_hook(attributor.post)
    # the fused fast path of nn.MultiheadAttention / TransformerEncoderLayer (taken in eval mode
    # without grad) is one op FlopCounterMode does not count: count the same math unfused
    try:
        with training_flags(model, mode=False), torch.no_grad(), mha_fastpath_off(), counter:
            try:
                model(*args, **kwargs)
            except Exception as e:
                msg = (
                    f"profile: the forward pass of {type(model).__name__} on dummy_input failed "
                    f"({type(e).__name__}: {e}); pass an input the model accepts: a tensor, a "
                    "tuple of positional arguments or a dict of keyword arguments"
                )
                raise NasvizError(msg) from e
            attributor.flush()
    finally:
        pre.remove()
        post.remove()
    return attributor.flops


def param_count(module: nn.Module, tied: frozenset[str] = frozenset()) -> int:
    """Parameters of ``module`` itself (active subnet if dynamic), without the ``tied`` names."""
    if isinstance(module, DynamicModule):
        total = module.active_param_count()
        for name, p in module.named_parameters(recurse=False):
            if name in tied:
                shape = module.active_shape(name) if name in module.param_dims else p.shape
                total -= math.prod(shape)
        return total
    return sum(p.numel() for n, p in module.named_parameters(recurse=False) if n not in tied)
