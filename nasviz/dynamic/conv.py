"""Dynamic convolutions: ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d`` with prunable
channels and a searchable, centre-cropped kernel size.

Dynamic attributes: ``out_channels`` ("out"), ``in_channels`` ("in"), ``kernel_size``
("kernel"); ``groups``, ``padding`` and ``_reversed_padding_repeated_twice`` read as their active
values too, so torch's own code paths (``extra_repr``, ``_conv_forward``) stay correct. The
weight is ``(out, in/groups, *k)`` for convs and ``(in, out/groups, *k)`` for transposed convs.
The ``groups`` a layer was built with decides its channel ``layout``, once, at conversion:

* **regular** (``groups == 1``): the out and in dims are sliced independently.
* **depthwise** (``groups == in_channels > 1``, ``out_channels == m * in_channels``): channels
  pass through. ``in_channels`` is the one free dim and ``out_channels`` follows it: the same
  source for ``m == 1``, ``RepeatDim(source, m)`` otherwise; ``choices_for("out_channels")`` is
  ``None``. ``set_dim("in_channels", hp)`` (what tracing does with the producer's hparam) sets
  both; ``set_dim("out_channels", hp)`` means the same for ``m == 1``. Active ``groups`` equals
  the active ``in_channels``.
* **grouped** (``1 < groups < in_channels``): ``groups`` stays, and every group must keep the same
  number of channels, group by group (``channel_groups(attr)`` says how many groups). A
  configurable :class:`~nasviz.hparam.Hparam` cannot promise that (its first ``k`` channels all
  lie in the first groups), so a grouped dim accepts a :class:`GroupedHparam` (whose active
  channels are group-contiguous, the same count per group) or a source that never shrinks; other
  sources are checked whenever their selection changes, and refused with an ``HparamError``.

Kernel size: an :class:`~nasviz.hparam.Hparam` of odd sizes ``k <= K`` (square kernels only,
dilation 1, any stride) keeps the centre ``k`` taps and lowers the padding by ``(K - k) / 2`` so
the output's spatial size is unchanged; ``choices_for("kernel_size", rule)`` lists only the sizes
this layer can crop to. Anything else is refused at ``set_dim`` with the reason.

Both slices and enforced channel orders (index tensors) work in every layout. Everything derived
from the selection (indices, padding, groups) is computed once per selection change (a
``_Plan``); in eval mode under ``torch.no_grad`` the sliced weights are cached too (the policy of
:meth:`~nasviz.dynamic.base.DynamicModule.sliced`), so a fixed subnet costs a single convolution
per call, and the full-size model the plain one.

The module is one piece (over the house ~400 lines) because the six classes share a single
implementation, ``_DynamicConvNd`` (~400 lines by itself): the three layouts and the transposed
weight layout are branches inside one plan, one weight slicing and one export. The transposed
classes add only their weight layout and ``forward`` (~25 lines); in a file of their own they
would import the shared base from here while this module re-exported them (their public path), a
cycle. :class:`GroupedHparam`, a concept of its own, lives in :mod:`nasviz.dynamic.grouped`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar, Literal, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _reverse_repeat_tuple

from nasviz.dynamic.base import _OPTIMIZER_STEPS, DynamicModule, register_dynamic, slice_dim
from nasviz.dynamic.family import LayerSpec, RuleSpec, WidthRule
from nasviz.dynamic.grouped import GroupedHparam
from nasviz.errors import HparamError
from nasviz.hparam import DimSource, Hparam, Index, RepeatDim

__all__ = [
    "DynamicConv1d",
    "DynamicConv2d",
    "DynamicConv3d",
    "DynamicConvTranspose1d",
    "DynamicConvTranspose2d",
    "DynamicConvTranspose3d",
    "GroupedHparam",
]


class _Plan(NamedTuple):
    """Everything a forward needs that depends only on the selection (rebuilt when it changes)."""

    key: tuple[Any, ...]
    full: bool
    kernel: tuple[int, ...]
    crop: int  # taps dropped on each side of every spatial dim
    padding: str | tuple[int, ...]
    reversed_padding: list[int]
    groups: int
    dim0: Index | None  # weight dim 0 (global channel positions)
    dim1: Index | None  # weight dim 1, the same positions in every group
    dim1_groups: torch.Tensor | None  # weight dim 1, (groups, kept) positions per group
    bias: Index | None


class _DynamicConvNd(DynamicModule):
    """Shared implementation; the concrete classes name their torch class, rule key and the
    input's channel axis (``-(spatial dims + 1)``: channels precede the spatial dims).
    """

    rule = RuleSpec("channels", kernel_size=True)
    trace_kind = "conv"
    dynamic_attrs = {"out_channels": "out", "in_channels": "in", "kernel_size": "kernel"}
    param_dims = {"weight": {0: "out_channels", 1: "in_channels"}, "bias": {0: "out_channels"}}
    _nv_fns: ClassVar[dict[int, Callable[..., torch.Tensor]]] = {
        1: F.conv1d,
        2: F.conv2d,
        3: F.conv3d,
    }

    # attributes of the torch layer this mixin reads (declared for the type checker)
    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"]
    transposed: bool
    _nv_kind: str
    _nv_fn: Callable[..., torch.Tensor]
    _nv_plan_cache: _Plan | None
    _nv_weight_cache: tuple[tuple[Any, ...], torch.Tensor, torch.Tensor | None] | None
    _nv_cache_attrs: ClassVar[dict[str, Any]] = {"_nv_cache": {}, "_nv_weight_cache": None}

    @classmethod
    def layer_spec(cls, module: nn.Module) -> LayerSpec | None:
        """The declared spec plus the groups the layer was built with."""
        spec = super().layer_spec(module)
        groups = int(module.__dict__.get("groups", 1))
        return None if spec is None else replace(spec, groups=groups)

    def _nv_after_convert(self) -> None:
        groups, cin = self.__dict__["groups"], self._nv_orig["in_channels"]
        kind = "regular" if groups == 1 else "depthwise" if groups == cin else "grouped"
        self.__dict__.update(
            _nv_kind=kind,
            _nv_fn=self._nv_fns[len(self._nv_orig["kernel_size"])],
            _nv_plan_cache=None,
            _nv_weight_cache=None,
        )

    def _nv_before_unconvert(self) -> None:
        for key in ("_nv_kind", "_nv_fn", "_nv_plan_cache", "_nv_weight_cache"):
            self.__dict__.pop(key, None)

    # -- dimensions ----------------------------------------------------------------------------
    def _nv_attr_value(self, attr: str) -> Any:
        if attr == "kernel_size":
            src = self._nv_dims["kernel_size"]
            full: tuple[int, ...] = self._nv_orig["kernel_size"]
            return full if src is None else (src.active_size(),) * len(full)
        return self.active_size(attr)

    @property
    def layout(self) -> str:
        """``"regular"``, ``"depthwise"`` or ``"grouped"`` (fixed at conversion by ``groups``)."""
        return self._nv_kind

    def channel_groups(self, attr: str) -> int:
        """How many equal groups a source of ``attr`` must keep (1 = any selection works)."""
        self._check_attr(attr)
        return (
            self.__dict__["groups"] if self._nv_kind == "grouped" and attr != "kernel_size" else 1
        )

    def set_dim(self, attr: str, source: DimSource | None) -> None:
        """Back ``attr`` by ``source``; see the module docstring for depthwise/grouped rules."""
        self._check_attr(attr)
        if attr == "kernel_size":
            self._nv_check_kernel_source(source)
        elif self._nv_kind == "depthwise":
            mult = self._nv_orig["out_channels"] // self._nv_orig["in_channels"]
            if attr == "out_channels":
                if isinstance(source, RepeatDim) and source.inner == mult > 1:
                    source = source.source
                elif source is not None and mult > 1:
                    msg = (
                        f"{type(self).__name__} is depthwise with channel multiplier {mult}: its "
                        "out_channels follow in_channels; set_dim('in_channels', ...) instead"
                    )
                    raise HparamError(msg)
            super().set_dim("in_channels", source)
            derived = source if source is None or mult == 1 else RepeatDim(source, mult)
            self._nv_dims["out_channels"] = derived
            self._nv_reset()
            return
        elif self._nv_kind == "grouped" and source is not None:
            self._nv_check_grouped_source(attr, source)
        super().set_dim(attr, source)
        self._nv_reset()

    def _nv_reset(self) -> None:
        self.__dict__.update(_nv_plan_cache=None, _nv_weight_cache=None)

    def train(self, mode: bool = True) -> _DynamicConvNd:
        """Switch train/eval mode and drop the cached sliced weights."""
        self.__dict__["_nv_weight_cache"] = None
        super().train(mode)
        return self

    def _nv_check_grouped_source(self, attr: str, source: DimSource) -> None:
        groups = self.__dict__["groups"]
        if not isinstance(source, Hparam):
            return  # composite sources are checked whenever their selection changes
        bad = [c for c in source.choices if c % groups]
        grouped = isinstance(source, GroupedHparam) and source.groups % groups == 0
        if bad or (source.is_configurable and not grouped):
            raise HparamError(
                f"{type(self).__name__}.{attr} has groups={groups}: every group must keep the "
                f"same number of channels, but {source!r} "
                + (f"allows {bad} (not multiples of {groups})" if bad else "does not keep groups")
                + f"; use GroupedHparam(choices, groups={groups}) with multiples of {groups}"
            )

    def _nv_kernel_problem(self, k: int) -> str | None:
        """Why this layer cannot crop its kernel to ``k`` (``None`` if it can)."""
        full: tuple[int, ...] = self._nv_orig["kernel_size"]
        if len(set(full)) != 1:
            return f"its kernel {full} is not square"
        big = full[0]
        if k == big:
            return None
        if not 1 <= k < big or k % 2 == 0 or big % 2 == 0:
            return f"only odd kernels can be centre-cropped to an odd size < {big}, not {k}"
        if any(d != 1 for d in self.dilation):
            return f"its dilation is {self.dilation} (kernel cropping needs dilation 1)"
        pad = self.__dict__["padding"]
        crop = (big - k) // 2
        if pad == "valid" or (not isinstance(pad, str) and min(pad) < crop):
            return (
                f"its padding {pad!r} is smaller than the {crop} taps cropped per side, so the "
                "output size would change"
            )
        return None

    def _nv_check_kernel_source(self, source: DimSource | None) -> None:
        if source is None:
            return
        full: tuple[int, ...] = self._nv_orig["kernel_size"]
        name = type(self).__name__
        if not isinstance(source, Hparam) or source.original != full[-1]:
            msg = (
                f"{name}.kernel_size needs an Hparam of kernel sizes with original {full[-1]}, "
                f"got {source!r}"
            )
            raise HparamError(msg)
        for k in source.choices:
            problem = self._nv_kernel_problem(k)
            if problem is not None:
                msg = (
                    f"{name}.kernel_size cannot take {k} ({source.name or 'hparam'}): {problem}; "
                    "leave kernel_size static or drop that choice"
                )
                raise HparamError(msg)

    # -- rules and importance ------------------------------------------------------------------
    def choices_for(self, attr: str, rule: WidthRule) -> list[int] | None:
        """``out_channels``: the rule's widths (multiples of ``groups`` for grouped convs; ``None``
        for depthwise convs, whose output follows their input). ``kernel_size``: the rule's sizes
        this layer can crop to (``None`` for non-square kernels).
        """
        self._check_attr(attr)
        if attr == "kernel_size":
            full: tuple[int, ...] = self._nv_orig["kernel_size"]
            if len(set(full)) != 1:
                return None
            sizes = {int(k) for k in getattr(rule, "kernel_size", []) or []} | {full[0]}
            return sorted(k for k in sizes if self._nv_kernel_problem(k) is None)
        if attr == "out_channels" and self._nv_kind == "depthwise":
            return None
        if attr == "out_channels" and self._nv_kind == "grouped":
            return rule.choices_for(self.original_size(attr), multiple_of=self.__dict__["groups"])
        return super().choices_for(attr, rule)

    def importance(self, attr: str) -> torch.Tensor | None:
        """``out_channels``: the L2 norm of each output channel's weights; otherwise ``None``."""
        if attr != "out_channels":
            return None
        w = self.weight.detach().float()
        if not self.transposed:
            return cast(torch.Tensor, w.flatten(1).norm(dim=1))
        groups = self.__dict__["groups"]
        per_group = w.reshape(groups, w.shape[0] // groups, w.shape[1], -1)
        return cast(torch.Tensor, per_group.norm(dim=(1, 3)).flatten())

    # -- the plan ------------------------------------------------------------------------------
    def _nv_plan(self) -> _Plan:
        dims = self._nv_dims
        out, cin, ker = dims["out_channels"], dims["in_channels"], dims["kernel_size"]
        key = (
            None if out is None else out.version(),
            None if cin is None else cin.version(),
            None if ker is None else ker.version(),
        )
        plan = self._nv_plan_cache
        if plan is None or plan.key != key:
            plan = self._nv_build_plan(key)
            self.__dict__["_nv_plan_cache"] = plan
        return plan

    def _nv_build_plan(self, key: tuple[Any, ...]) -> _Plan:
        full_kernel: tuple[int, ...] = self._nv_orig["kernel_size"]
        kernel = self._nv_attr_value("kernel_size")
        crop = (full_kernel[0] - kernel[0]) // 2 if kernel != full_kernel else 0
        pad0 = self.__dict__["padding"]
        padding: str | tuple[int, ...] = pad0
        reversed_padding: list[int] = self.__dict__["_reversed_padding_repeated_twice"]
        if crop and isinstance(pad0, str):  # "same" (a cropped "valid" is refused)
            reversed_padding = [q for k in reversed(kernel) for q in ((k - 1) // 2,) * 2]
        elif crop:
            padding = tuple(p - crop for p in pad0)
            reversed_padding = list(_reverse_repeat_tuple(padding, 2))

        out_idx, in_idx = self.active_index("out_channels"), self.active_index("in_channels")
        first, second = (
            ("in_channels", "out_channels") if self.transposed else ("out_channels", "in_channels")
        )
        idx0, idx1 = (in_idx, out_idx) if self.transposed else (out_idx, in_idx)
        groups = self.__dict__["groups"]
        dim1: Index | None = None
        dim1_groups: torch.Tensor | None = None
        if self._nv_kind == "regular":
            dim1 = idx1
        elif self._nv_kind == "depthwise":
            groups = self.active_size("in_channels")
        else:
            self._nv_group_positions(first, idx0)  # validates
            local = self._nv_group_positions(second, idx1)
            if local is not None and local.dim() == 2:
                dim1_groups = local
            elif local is not None:
                prefix = torch.equal(local, torch.arange(local.numel()))
                dim1 = slice(0, local.numel()) if prefix else local
        full = crop == 0 and idx0 is None and idx1 is None
        return _Plan(
            key, full, kernel, crop, padding, reversed_padding, groups,
            idx0, dim1, dim1_groups, out_idx,
        )  # fmt: skip

    def _nv_group_positions(self, attr: str, idx: Index | None) -> torch.Tensor | None:
        """Within-group positions of a grouped dim's active channels: a 1-D tensor if every group
        keeps the same ones, else ``(groups, kept)``; ``None`` = all. Refuses selections that
        do not keep the same number of channels group by group.
        """
        if idx is None:
            return None
        full, groups = self.original_size(attr), self.__dict__["groups"]
        pos = torch.arange(full)[idx] if isinstance(idx, slice) else idx
        n = full // groups
        kept = pos.numel() // groups
        if pos.numel() % groups or not torch.equal(
            pos // n, torch.arange(pos.numel()) // max(kept, 1)
        ):
            msg = (
                f"{type(self).__name__}.{attr} has groups={groups}, but its source "
                f"{self._nv_dims[attr]!r} selects channels {pos.tolist()}, not the same number "
                f"from each of the {groups} groups in group order; drive it by a "
                f"GroupedHparam(choices, groups={groups})"
            )
            raise HparamError(msg)
        local = (pos % n).view(groups, kept)
        if bool((local == local[0]).all()):
            return cast(torch.Tensor, local[0])  # every group keeps the same positions
        return cast(torch.Tensor, local)

    # -- slicing -------------------------------------------------------------------------------
    def _nv_slice_weight(self, w: torch.Tensor, plan: _Plan) -> torch.Tensor:
        w = slice_dim(w, 0, plan.dim0)
        if plan.dim1 is not None:
            w = slice_dim(w, 1, plan.dim1)
        elif plan.dim1_groups is not None:
            local = plan.dim1_groups.to(w.device)
            groups, kept = local.shape
            per_group = w.reshape(groups, w.shape[0] // groups, w.shape[1], -1)
            index = local[:, None, :, None].expand(-1, per_group.shape[1], -1, per_group.shape[3])
            w = per_group.gather(2, index).reshape(w.shape[0], kept, *w.shape[2:])
        if plan.crop:
            for d, k in enumerate(plan.kernel, start=2):
                w = w.narrow(d, plan.crop, k)
        return w.contiguous()

    def _nv_params(self, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias of the active subnet (the parameters themselves at full size)."""
        # ``_parameters`` first: ``self.weight`` goes through the slow ``nn.Module.__getattr__``;
        # the attribute is the fallback for reparametrised layers (weight norm, parametrize)
        params = self._parameters
        found = params.get("weight")
        w: torch.Tensor = self.weight if found is None else found
        b: torch.Tensor | None = params["bias"] if "bias" in params else self.bias  # noqa: SIM401
        if plan.full:
            return w, b
        # the same policy as ``DynamicModule.sliced``: cache in eval mode outside autograd only,
        # keyed on the selection, the tensors' versions and the optimizer-step count (fused steps
        # change parameters without bumping ``_version``)
        cacheable = not self.training and not (
            torch.is_grad_enabled() and (w.requires_grad or (b is not None and b.requires_grad))
        )
        if cacheable:
            key = (plan.key, w._version, w.data_ptr(), _OPTIMIZER_STEPS[0]) + (
                () if b is None else (b._version, b.data_ptr())
            )
            hit = self._nv_weight_cache
            if hit is not None and hit[0] == key:
                return hit[1], hit[2]
        ws = self._nv_slice_weight(w, plan)
        bs = None if b is None else slice_dim(b, 0, plan.bias).contiguous()
        self.__dict__["_nv_weight_cache"] = (key, ws, bs) if cacheable else None
        return ws, bs

    # -- shapes and cost -----------------------------------------------------------------------
    def active_shape(self, name: str) -> tuple[int, ...]:
        """Active shape of ``weight`` or ``bias`` (grouped, depthwise and kernel aware).

        The base ``flops_ratio`` (active / full weight elements) is then exact for every layout:
        the output's spatial size never changes and each weight element costs one multiply-add
        per output position (per input position for transposed convs).
        """
        if name == "bias":
            return (self.active_size("out_channels"),)
        if name != "weight":
            return super().active_shape(name)
        out, cin = self.active_size("out_channels"), self.active_size("in_channels")
        groups = self._nv_plan().groups
        kernel: tuple[int, ...] = self._nv_attr_value("kernel_size")
        lead = (cin, out // groups) if self.transposed else (out, cin // groups)
        return (*lead, *kernel)

    # -- torch integration ---------------------------------------------------------------------
    def extra_repr(self) -> str:
        plan = self._nv_plan()
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={plan.kernel}"
        s += f", stride={self.stride}"
        if plan.padding != (0,) * len(plan.padding):
            s += f", padding={plan.padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += f", dilation={self.dilation}"
        output_padding = self.__dict__["output_padding"]
        if output_padding != (0,) * len(output_padding):
            s += f", output_padding={output_padding}"
        if plan.groups != 1:
            s += f", groups={plan.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s

    def export(self) -> nn.Module:
        """The plain torch layer (the original torch class) with the active shape."""
        plan = self._nv_plan()
        with torch.no_grad():
            w, b = self._nv_params(plan)
        kwargs: dict[str, Any] = {
            "in_channels": self.active_size("in_channels"),
            "out_channels": self.active_size("out_channels"),
            "kernel_size": plan.kernel,
            "stride": self.stride,
            "padding": plan.padding,
            "dilation": self.dilation,
            "groups": plan.groups,
            "bias": b is not None,
            "padding_mode": self.padding_mode,
            "device": w.device,
            "dtype": w.dtype,
        }
        if self.transposed:
            kwargs["output_padding"] = self.__dict__["output_padding"]
        plain = nn.utils.skip_init(self.torch_cls, **kwargs)
        with torch.no_grad():
            plain.weight.copy_(w)
            if b is not None:
                plain.bias.copy_(b)
        return self._export_finish(plain)


def _active_property(field: str) -> property:
    def fget(self: _DynamicConvNd) -> Any:
        return getattr(self._nv_plan(), field)

    def fset(self: _DynamicConvNd, value: Any) -> None:
        msg = (
            f"{type(self).__name__}: {field} follows the active channels and kernel size; "
            f"it cannot be assigned ({value!r})"
        )
        raise HparamError(msg)

    return property(fget, fset, doc=f"Active {field} (follows the selection).")


# The originals stay in the instance ``__dict__``, shadowed by these data descriptors, and come
# back untouched on ``unconvert``.
for _attr, _field in (
    ("groups", "groups"),
    ("padding", "padding"),
    ("_reversed_padding_repeated_twice", "reversed_padding"),
):
    setattr(_DynamicConvNd, _attr, _active_property(_field))


class _DynamicConvPlainNd(_DynamicConvNd):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        plan = self._nv_plan()
        w, b = self._nv_params(plan)
        if self.padding_mode != "zeros":
            input = F.pad(input, plan.reversed_padding, mode=self.padding_mode)
            return self._nv_fn(input, w, b, self.stride, 0, self.dilation, plan.groups)
        return self._nv_fn(input, w, b, self.stride, plan.padding, self.dilation, plan.groups)


class _DynamicConvTransposeNd(_DynamicConvNd):
    param_dims = {"weight": {0: "in_channels", 1: "out_channels"}, "bias": {0: "out_channels"}}
    _nv_fns: ClassVar[dict[int, Callable[..., torch.Tensor]]] = {
        1: F.conv_transpose1d,
        2: F.conv_transpose2d,
        3: F.conv_transpose3d,
    }
    output_padding: tuple[int, ...]

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            msg = f"Only `zeros` padding mode is supported for {self.torch_cls.__name__}"
            raise ValueError(msg)
        plan = self._nv_plan()
        w, b = self._nv_params(plan)
        output_padding: Any = self.output_padding
        if output_size is not None:
            output_padding = self._output_padding(  # type: ignore[operator]
                input, output_size, self.stride, plan.padding, plan.kernel,
                len(plan.kernel), self.dilation,
            )  # fmt: skip
        return self._nv_fn(
            input, w, b, self.stride, plan.padding, output_padding, plan.groups, self.dilation
        )


@register_dynamic
class DynamicConv1d(_DynamicConvPlainNd, nn.Conv1d):
    """``nn.Conv1d`` with prunable channels and kernel size (see the module docstring)."""

    torch_cls = nn.Conv1d
    layer_type = "nn.Conv1d"
    functional_op = "conv1d"
    channel_axis = -2


@register_dynamic
class DynamicConv2d(_DynamicConvPlainNd, nn.Conv2d):
    """``nn.Conv2d`` with prunable channels and kernel size (see the module docstring).

    Example::

        >>> conv = DynamicConv2d.convert(nn.Conv2d(4, 8, 5, padding=2))
        >>> conv.set_dim("out_channels", Hparam([4, 8]))
        >>> conv.set_dim("kernel_size", Hparam([3, 5]))
        >>> conv.dim("out_channels").active = 4
        >>> conv.dim("kernel_size").active = 3
        >>> conv.out_channels, conv.kernel_size, conv.padding
        (4, (3, 3), (1, 1))
        >>> conv(torch.zeros(1, 4, 6, 6)).shape
        torch.Size([1, 4, 6, 6])
        >>> conv.export()
        Conv2d(4, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    """

    torch_cls = nn.Conv2d
    layer_type = "nn.Conv2d"
    functional_op = "conv2d"
    channel_axis = -3


@register_dynamic
class DynamicConv3d(_DynamicConvPlainNd, nn.Conv3d):
    """``nn.Conv3d`` with prunable channels and kernel size (see the module docstring)."""

    torch_cls = nn.Conv3d
    layer_type = "nn.Conv3d"
    functional_op = "conv3d"
    channel_axis = -4


@register_dynamic
class DynamicConvTranspose1d(_DynamicConvTransposeNd, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` with prunable channels and kernel size; weight ``(in, out/g, k)``."""

    torch_cls = nn.ConvTranspose1d
    layer_type = "nn.ConvTranspose1d"
    channel_axis = -2


@register_dynamic
class DynamicConvTranspose2d(_DynamicConvTransposeNd, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with prunable channels and kernel size; weight ``(in, out/g, *k)``.

    Example::

        >>> up = DynamicConvTranspose2d.convert(nn.ConvTranspose2d(8, 4, 2, stride=2))
        >>> up.set_dim("in_channels", Hparam([2, 8]))
        >>> up.dim("in_channels").active = 2
        >>> up(torch.zeros(1, 2, 3, 3)).shape
        torch.Size([1, 4, 6, 6])
    """

    torch_cls = nn.ConvTranspose2d
    layer_type = "nn.ConvTranspose2d"
    channel_axis = -3


@register_dynamic
class DynamicConvTranspose3d(_DynamicConvTransposeNd, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with prunable channels and kernel size (see the module docstring)."""

    torch_cls = nn.ConvTranspose3d
    layer_type = "nn.ConvTranspose3d"
    channel_axis = -4
