"""Dynamic norms: BatchNorm, SyncBatchNorm, InstanceNorm, LayerNorm and GroupNorm twins.

A norm has one prunable dimension - its channels (``num_features``, ``num_channels``, or the last
entry of ``normalized_shape``) - declared with role ``"out"``: it has its own rule's choices, and
tracing merges its hparam with the hparam of the layer that produces its input. Every per-channel
tensor (``weight``, ``bias``, ``running_mean``, ``running_var``) is sliced along dim 0.

**Running statistics follow the selection.** In training mode a BatchNorm (or an InstanceNorm
with running stats) updates the statistics of exactly the kept channels, in the full buffers:

* a plain width (``slice(0, k)``) passes ``running_mean.narrow(0, 0, k)`` - a view, so torch's
  in-place update lands in the buffer;
* an enforced order (an index tensor) gathers a copy, and the updated copy is written back with
  ``index_copy_`` right after the forward.

So re-estimating BN statistics on a sorted, smaller subnet writes into the very buffers ``export()``
slices. Running statistics are never served from the slicing cache: torch's BatchNorm kernels
update them in place *without* bumping ``Tensor._version``, so no cache key could see the change.

**GroupNorm keeps whole groups.** The channels per group stay fixed; the active number of groups is
``active channels / group size``, ``choices_for`` offers multiples of the group size only, and an
enforced order must list channels group by group (any group order, any order inside a group):
:func:`group_order` builds such an order from per-channel importance, and a selection that splits
a group is refused with an error rather than silently changing which channels are normalised
together. ``importance`` of a GroupNorm is the mean ``|gamma|`` of each channel's group, and
``channel_block("num_channels")`` tells tracing the group size an order must respect.

**LayerNorm** is prunable over its last dimension only (``normalized_shape`` of length 1);
:meth:`DynamicLayerNorm.unsupported_reason` says why another one stays static.

The five torch norm families live in one module (longer than usual) because they share one
mechanism - the channel slicing, the statistics write-back and the export - through two small
private bases; each public class only names its torch class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules._functions import SyncBatchNorm as _SyncBatchNormFn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from typing_extensions import override

from nasviz.dynamic.base import DynamicModule, register_dynamic
from nasviz.dynamic.family import RuleSpec, WidthRule
from nasviz.errors import HparamError
from nasviz.hparam import Index, index_size

__all__ = [
    "DynamicBatchNorm1d",
    "DynamicBatchNorm2d",
    "DynamicBatchNorm3d",
    "DynamicGroupNorm",
    "DynamicInstanceNorm1d",
    "DynamicInstanceNorm2d",
    "DynamicInstanceNorm3d",
    "DynamicLayerNorm",
    "DynamicSyncBatchNorm",
    "batchnorm_chunks",
    "batchnorm_into",
    "group_order",
]

#: (group, world size) of a synchronised batch norm, or None for a local one
_Sync = tuple[Any, int] | None


def group_order(importance: torch.Tensor, group_size: int) -> torch.Tensor:
    """A channel order that keeps whole groups (most important group first).

    Groups of ``group_size`` consecutive channels are ranked by their summed ``importance``
    (descending, ties keep the original order); channels inside a group keep their order.

    Example::

        >>> group_order(torch.tensor([0.1, 0.2, 0.9, 0.8]), 2)
        tensor([2, 3, 0, 1])
    """
    imp = importance.detach().flatten().float().cpu()
    if group_size < 1 or imp.numel() % group_size:
        msg = (
            f"group_order: {imp.numel()} channels cannot be split into groups of {group_size}; "
            "pass the group size of the GroupNorm (num_channels // num_groups)"
        )
        raise HparamError(msg)
    ranked = torch.argsort(imp.view(-1, group_size).sum(1), descending=True, stable=True)
    return (ranked[:, None] * group_size + torch.arange(group_size)[None, :]).flatten()


def batchnorm_into(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` written into ``x`` itself, which nothing else may read afterwards: the same
    output and the same running-statistics update as the module's forward (torch's own kernel,
    ``native_batch_norm``), one allocation and one pass fewer. For ``nn.BatchNorm2d`` and
    :class:`DynamicBatchNorm2d` without autograd; anything else is simply ``bn(x)``.
    """
    kinds = (nn.BatchNorm2d, DynamicBatchNorm2d)
    grad = torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in bn.parameters())
    )
    if type(bn) not in kinds or x.dim() != 4 or grad or not x.is_floating_point():
        return cast(torch.Tensor, bn(x))
    bn._check_input_dim(x)
    return batchnorm_chunks(bn, x, [x.shape[0]], out=x)


def batchnorm_chunks(
    bn: _BatchNorm, x: torch.Tensor, sizes: Sequence[int], out: torch.Tensor
) -> torch.Tensor:
    """``bn`` on each chunk ``x.narrow(0, ...)`` of ``sizes`` in turn, written into the same rows
    of ``out`` (which may be ``x``): each chunk normalized with its own statistics and the
    running statistics updated chunk by chunk, as one forward call per chunk would (torch's own
    kernel, ``native_batch_norm``). The caller checks the input (``bn._check_input_dim``).
    """
    stats = bn.training and bn.track_running_stats and bn.num_batches_tracked is not None
    training = bn.training or (bn.running_mean is None and bn.running_var is None)
    use_stats = not bn.training or bn.track_running_stats
    back = None
    if isinstance(bn, _DynamicStatsNorm) and not bn.is_full():
        mean, var, back = bn._running_stats(update=bn.training) if use_stats else (None, None, None)
        weight, bias = bn._affine()
    else:
        mean, var = (bn.running_mean, bn.running_var) if use_stats else (None, None)
        weight, bias = bn.weight, bn.bias
    start = 0
    for size in sizes:
        chunk = x.narrow(0, start, size)
        if training and chunk.numel() // chunk.shape[1] <= 1:  # as F.batch_norm refuses it
            msg = (
                f"Expected more than 1 value per channel when training, got input size "
                f"{chunk.size()}"
            )
            raise ValueError(msg)
        factor = 0.0 if bn.momentum is None else bn.momentum
        if stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:  # cumulative moving average
                factor = 1.0 / float(bn.num_batches_tracked)
        empty = (x.new_empty(0), x.new_empty(0))
        torch.ops.aten.native_batch_norm.out(
            chunk, weight, bias, mean, var, training, factor, bn.eps,
            out=out.narrow(0, start, size), save_mean=empty[0], save_invstd=empty[1],
        )  # fmt: skip
        start += size
    if back is not None and isinstance(bn, _DynamicStatsNorm):
        bn._write_back(back, mean, var)
    return out


class _DynamicNorm(DynamicModule):
    """What every dynamic norm shares: one channel attribute, per-channel affine parameters."""

    #: the dynamic attribute that counts the channels
    channel_attr: ClassVar[str]
    trace_kind = "norm"
    rule = RuleSpec("features")

    def _affine(self, detach: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        dims = {0: self.channel_attr}
        out = []
        for name in ("weight", "bias"):
            t = getattr(self, name, None)
            out.append(self.sliced(name, t.detach() if detach and t is not None else t, dims))
        return out[0], out[1]

    def importance(self, attr: str) -> torch.Tensor | None:
        """``|gamma|`` per channel for an affine norm; ``None`` without a weight."""
        self._check_attr(attr)
        w = getattr(self, "weight", None)
        return None if w is None else w.detach().float().abs()

    def flops_ratio(self) -> float:
        """Active channels / full channels (a norm's cost is linear in its channels)."""
        return self.active_size(self.channel_attr) / self.original_size(self.channel_attr)

    def _export_affine(self, plain: nn.Module) -> nn.Module:
        """Copy the active affine parameters into ``plain`` and finish the export."""
        weight, bias = self._affine(detach=True)
        with torch.no_grad():
            if weight is not None:
                plain.get_parameter("weight").copy_(weight)
            if bias is not None:
                plain.get_parameter("bias").copy_(bias)
            elif getattr(plain, "bias", None) is not None:
                plain.register_parameter("bias", None)  # affine without bias (``bias=False``)
        return self._export_finish(plain)

    def _factory(self) -> dict[str, Any]:
        for name in ("weight", "running_mean"):
            t = getattr(self, name, None)
            if isinstance(t, torch.Tensor):
                return {"device": t.device, "dtype": t.dtype}
        return {}


class _DynamicStatsNorm(_DynamicNorm, nn.modules.batchnorm._NormBase):
    """Batch and instance norms: ``num_features``, optional running statistics."""

    channel_attr = "num_features"
    dynamic_attrs = {"num_features": "out"}
    param_dims = {
        name: {0: "num_features"} for name in ("weight", "bias", "running_mean", "running_var")
    }

    def _running_stats(
        self, update: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """``(mean, var, write_back)`` for the active channels.

        ``mean``/``var`` are views of the buffers for a plain slice; for an index tensor they are
        gathered copies, and ``write_back`` is the index to copy them back through after a
        forward that ``update``s them (``None`` when there is nothing to write back).
        """
        mean, var = self.running_mean, self.running_var
        idx: Index | None = self.active_index("num_features")
        if idx is None or (mean is None and var is None):
            return mean, var, None
        if isinstance(idx, slice):
            start, stop, step = idx.indices(self.original_size("num_features"))
            if step == 1:  # views: torch updates the buffers themselves
                return _narrow(mean, start, stop), _narrow(var, start, stop), None
            idx = torch.arange(start, stop, step)
        idx = idx.to(next(t for t in (mean, var) if t is not None).device)
        gathered = [None if t is None else t.index_select(0, idx) for t in (mean, var)]
        return gathered[0], gathered[1], idx if update else None

    def _nv_forward_views(
        self,
    ) -> tuple[dict[str, torch.Tensor | None], Callable[[], None] | None]:
        """The active tensors a subclass's own forward reads (:mod:`nasviz.dynamic.subclass`):
        sliced affine parameters, running statistics that a training step updates in the
        buffers (views, or gathered copies written back by the returned callback).
        """
        weight, bias = self._affine()
        mean, var, back = self._running_stats(update=self.training)
        views = {"weight": weight, "bias": bias, "running_mean": mean, "running_var": var}
        if back is None:
            return views, None
        return views, lambda: self._write_back(back, mean, var)

    def _write_back(
        self, idx: torch.Tensor | None, mean: torch.Tensor | None, var: torch.Tensor | None
    ) -> None:
        if idx is None:
            return
        with torch.no_grad():
            for buf, new in ((self.running_mean, mean), (self.running_var, var)):
                if buf is not None and new is not None:
                    buf.index_copy_(0, idx, new)

    def _export_stats_norm(self, **extra: Any) -> nn.Module:
        plain = self.torch_cls(
            self.active_size("num_features"),
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
            track_running_stats=self.track_running_stats,
            **extra,
            **self._factory(),
        )
        mean, var, _ = self._running_stats(update=False)
        with torch.no_grad():
            for name, t in (("running_mean", mean), ("running_var", var)):
                if t is not None:
                    setattr(plain, name, t.detach().clone())
            if self.num_batches_tracked is not None:
                plain.num_batches_tracked = self.num_batches_tracked.detach().clone()
        return self._export_affine(plain)


class _DynamicBatchNormBase(_DynamicStatsNorm, _BatchNorm):
    """The batch-norm forward of torch with sliced parameters and statistics."""

    functional_op = "batch_norm"

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.is_full():
            return super().forward(input)
        self._check_input_dim(input)  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        return self._batch_norm(input, sync_check=False)

    def _batch_norm(self, input: torch.Tensor, sync_check: bool) -> torch.Tensor:
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        if not self.training or self.track_running_stats:
            mean, var, back = self._running_stats(update=self.training)
        else:  # untracked statistics must not be updated
            mean, var, back = None, None, None
        sync = self._sync_group(input) if sync_check else None
        weight, bias = self._affine()
        if sync is None:
            out = F.batch_norm(input, mean, var, weight, bias, bn_training, factor, self.eps)
        else:
            out = _SyncBatchNormFn.apply(
                input, weight, bias, mean, var, self.eps, factor, sync[0], sync[1]
            )
        self._write_back(back, mean, var)
        return out

    def _sync_group(self, input: torch.Tensor) -> _Sync:
        return None

    def export(self) -> nn.Module:
        """The plain torch batch norm with the active channels and their running statistics."""
        return self._export_stats_norm()


@register_dynamic
class DynamicBatchNorm1d(_DynamicBatchNormBase, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with sliceable ``num_features`` (inputs ``(N, C)`` or ``(N, C, L)``)."""

    torch_cls = nn.BatchNorm1d
    layer_type = "nn.BatchNorm1d"
    channel_axis = None
    channel_pos_axis = 1


@register_dynamic
class DynamicBatchNorm2d(_DynamicBatchNormBase, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with sliceable ``num_features``.

    Example::

        >>> from nasviz.hparam import Hparam
        >>> bn = DynamicBatchNorm2d.convert(nn.BatchNorm2d(8))
        >>> bn.set_dim("num_features", Hparam([4, 8]))
        >>> bn.dim("num_features").active = 4
        >>> bn(torch.zeros(2, 4, 3, 3)).shape, bn.export()
        (torch.Size([2, 4, 3, 3]), BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, ...))
    """

    torch_cls = nn.BatchNorm2d
    layer_type = "nn.BatchNorm2d"
    channel_axis = -3


@register_dynamic
class DynamicBatchNorm3d(_DynamicBatchNormBase, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` with sliceable ``num_features``."""

    torch_cls = nn.BatchNorm3d
    layer_type = "nn.BatchNorm3d"
    channel_axis = -4


@register_dynamic
class DynamicSyncBatchNorm(_DynamicBatchNormBase, nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` with sliceable ``num_features``.

    Without an initialised process group (or with a world size of 1, or in eval mode) it is a
    plain batch norm, exactly as torch's; otherwise statistics are synchronised over the group
    on the active channels. ``export()`` returns an ``nn.SyncBatchNorm`` with the same group.
    """

    torch_cls = nn.SyncBatchNorm
    layer_type = "nn.SyncBatchNorm"
    channel_axis = None
    channel_pos_axis = 1

    @override
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.is_full():
            return super().forward(input)  # torch's SyncBatchNorm.forward, via the base
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        return self._batch_norm(input, sync_check=True)

    def _sync_group(self, input: torch.Tensor) -> _Sync:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return None
        if input.device.type not in (
            "cuda",
            "hpu",
            "xpu",
            torch._C._get_privateuse1_backend_name(),
        ):
            msg = (
                "SyncBatchNorm expected input tensor to be on GPU or XPU or "
                f"{torch._C._get_privateuse1_backend_name()}"
            )
            raise ValueError(  # torch's own check and message
                msg
            )
        group = self.process_group or dist.group.WORLD
        world_size = dist.get_world_size(group)
        return (group, world_size) if world_size > 1 else None

    @override
    def export(self) -> nn.Module:
        return self._export_stats_norm(process_group=self.process_group)


class _DynamicInstanceNormBase(_DynamicStatsNorm, _InstanceNorm):
    """Instance norms: torch's forward (its input checks read the active ``num_features``)."""

    functional_op = "instance_norm"

    def _apply_instance_norm(self, input: torch.Tensor) -> torch.Tensor:
        if self.is_full():
            return cast(torch.Tensor, super()._apply_instance_norm(input))  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        use_input_stats = self.training or not self.track_running_stats
        mean, var, back = self._running_stats(update=use_input_stats)
        weight, bias = self._affine()
        momentum = self.momentum if self.momentum is not None else 0.0
        out = F.instance_norm(input, mean, var, weight, bias, use_input_stats, momentum, self.eps)
        self._write_back(back, mean, var)
        return out

    def export(self) -> nn.Module:
        """The plain torch instance norm with the active channels."""
        return self._export_stats_norm()


@register_dynamic
class DynamicInstanceNorm1d(_DynamicInstanceNormBase, nn.InstanceNorm1d):
    """``nn.InstanceNorm1d`` with sliceable ``num_features``."""

    torch_cls = nn.InstanceNorm1d
    layer_type = "nn.InstanceNorm1d"
    channel_axis = -2


@register_dynamic
class DynamicInstanceNorm2d(_DynamicInstanceNormBase, nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` with sliceable ``num_features``."""

    torch_cls = nn.InstanceNorm2d
    layer_type = "nn.InstanceNorm2d"
    channel_axis = -3


@register_dynamic
class DynamicInstanceNorm3d(_DynamicInstanceNormBase, nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` with sliceable ``num_features``."""

    torch_cls = nn.InstanceNorm3d
    layer_type = "nn.InstanceNorm3d"
    channel_axis = -4


class _DynamicLastDimNorm(_DynamicNorm):
    """A norm over the last dimension alone (LayerNorm, RMSNorm): ``normalized_shape`` reads as
    ``(active,)``; one over more dimensions stays static, with the reason.
    """

    channel_axis = -1
    channel_attr = "normalized_shape"
    dynamic_attrs = {"normalized_shape": "out"}
    #: the torch class with its article, as the refusal names it ("a LayerNorm")
    _one: ClassVar[str]

    # attributes of the torch layer this mixin reads (declared for the type checker)
    eps: Any  # float in LayerNorm, float | None in RMSNorm
    elementwise_affine: bool

    @classmethod
    def unsupported_reason(cls, module: nn.Module) -> str | None:
        """Why ``module`` cannot be made dynamic (``None`` if it can)."""
        reason = super().unsupported_reason(module)
        if reason is not None or not isinstance(module, cls.torch_cls):
            return reason
        shape = tuple(
            module.original("normalized_shape")
            if isinstance(module, DynamicModule)
            else cast(Any, module).normalized_shape
        )
        if len(shape) != 1:
            return (
                f"{cls.torch_cls.__name__}(normalized_shape={shape}) normalises over {len(shape)} "
                f"dimensions; only {cls._one} over the last dimension (a normalized_shape of "
                "length 1) can be pruned, so this one stays static"
            )
        return None

    def _nv_attr_value(self, attr: str) -> Any:
        return (self.active_size(attr),)

    def export(self) -> nn.Module:
        """The plain torch norm over the active features."""
        plain = self.torch_cls(
            self.active_size("normalized_shape"),
            eps=self.eps,
            elementwise_affine=self.elementwise_affine,
            **self._factory(),
        )
        return self._export_affine(plain)


@register_dynamic
class DynamicLayerNorm(_DynamicLastDimNorm, nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension; ``normalized_shape`` reads as ``(active,)``.

    Example::

        >>> DynamicLayerNorm.unsupported_reason(nn.LayerNorm([4, 8])) is not None
        True
    """

    torch_cls = nn.LayerNorm
    layer_type = "nn.LayerNorm"
    _one = "a LayerNorm"
    functional_op = "layer_norm"
    param_dims = {"weight": {0: "normalized_shape"}, "bias": {0: "normalized_shape"}}

    @override
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.is_full():
            return super().forward(input)
        weight, bias = self._affine()
        return F.layer_norm(input, self.normalized_shape, weight, bias, self.eps)


@register_dynamic
class DynamicGroupNorm(_DynamicNorm, nn.GroupNorm):
    """``nn.GroupNorm`` with sliceable ``num_channels``; the group size stays fixed.

    ``num_groups`` reads as ``active channels / group size`` (the original value stays in the
    instance ``__dict__``, shadowed while the layer is dynamic).

    Example::

        >>> from nasviz.hparam import Hparam
        >>> gn = DynamicGroupNorm.convert(nn.GroupNorm(4, 8))
        >>> gn.set_dim("num_channels", Hparam([4, 8]))
        >>> gn.dim("num_channels").active = 4
        >>> gn.num_groups, gn.group_size
        (2, 2)
    """

    torch_cls = nn.GroupNorm
    layer_type = "nn.GroupNorm"
    functional_op = "group_norm"
    channel_axis = None
    channel_pos_axis = 1
    rule = RuleSpec("channels")
    channel_attr = "num_channels"
    dynamic_attrs = {"num_channels": "out"}
    param_dims = {"weight": {0: "num_channels"}, "bias": {0: "num_channels"}}

    @property
    def group_size(self) -> int:
        """Channels per group (fixed while pruning)."""
        return self.original_size("num_channels") // int(self.__dict__["num_groups"])

    @override
    def channel_block(self, attr: str) -> int:
        self._check_attr(attr)
        return self.group_size

    def choices_for(self, attr: str, rule: WidthRule) -> list[int] | None:
        """The rule's widths, restricted to multiples of the group size."""
        self._check_attr(attr)
        return rule.choices_for(self.original_size(attr), multiple_of=self.group_size)

    def importance(self, attr: str) -> torch.Tensor | None:
        """Mean ``|gamma|`` of each channel's group (equal within a group), or ``None``."""
        imp = super().importance(attr)
        if imp is None:
            return None
        g = self.group_size
        return imp.view(-1, g).mean(1).repeat_interleave(g)

    def check_groups(self) -> None:
        """Refuse an active selection that does not consist of whole groups."""
        idx = self.active_index("num_channels")
        if idx is None:
            return
        g, full = self.group_size, self.original_size("num_channels")
        n = index_size(idx, full)
        if isinstance(idx, slice):
            start, _, step = idx.indices(full)
            ok = n % g == 0 and start % g == 0 and step == 1
        else:
            blocks = idx.cpu().view(-1, g) // g if n % g == 0 else None
            ok = blocks is not None and bool((blocks == blocks[:, :1]).all())
        if not ok:
            msg = (
                f"GroupNorm({self.__dict__['num_groups']}, {full}) keeps groups of {g} channels, "
                f"but the active selection of {self.dim('num_channels')!r} ({n} channels) splits a "
                f"group; use widths that are multiples of {g} and order channels group by group "
                f"(nasviz.dynamic.norm.group_order(importance, {g}))"
            )
            raise HparamError(msg)

    @override
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.is_full():
            return super().forward(input)
        self.check_groups()
        weight, bias = self._affine()
        return F.group_norm(input, self.num_groups, weight, bias, self.eps)

    def export(self) -> nn.Module:
        """The plain ``nn.GroupNorm`` with the active groups (whole groups only)."""
        self.check_groups()
        plain = nn.GroupNorm(
            self.num_groups,
            self.active_size("num_channels"),
            eps=self.eps,
            affine=self.affine,
            **self._factory(),
        )
        return self._export_affine(plain)

    @override
    def extra_repr(self) -> str:
        original = self.__dict__["num_groups"]
        self.__dict__["num_groups"] = self.num_groups
        try:
            return super().extra_repr()
        finally:
            self.__dict__["num_groups"] = original


def _active_groups(self: DynamicGroupNorm) -> int:
    return self.active_size("num_channels") // self.group_size


def _refuse_groups(self: DynamicGroupNorm, value: Any) -> None:
    msg = (
        f"DynamicGroupNorm.num_groups follows num_channels (group size {self.group_size}); "
        f"choose the width through its hparam instead of assigning {value!r}"
    )
    raise HparamError(msg)


# set after the class body: torch annotates ``num_groups: int`` on nn.GroupNorm
DynamicGroupNorm.num_groups = property(  # type: ignore[assignment]
    _active_groups, _refuse_groups, doc="Active number of groups."
)


def _narrow(t: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    return None if t is None else t.narrow(0, start, stop - start)
