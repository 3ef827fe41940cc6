"""The dynamic-module base: a torch layer whose channel dimensions can be sliced.

Converting a layer swaps its class for a *dynamic twin* (``nn.Linear`` -> ``DynamicLinear``, a
subclass of both :class:`DynamicModule` and ``nn.Linear``), in place:

* ``isinstance(m, nn.Linear)`` still holds; parameters are the very same ``Parameter`` objects;
  at full size the ``state_dict`` and the outputs are unchanged.
* Each *dynamic attribute* (declared once, on the dynamic class, in ``dynamic_attrs``) is backed
  by a :class:`~nasviz.hparam.DimSource` (``None`` = static, full size). Reading the attribute
  (``m.out_features``) gives the active size.
* ``forward`` slices parameters to the active subnet; sliced weights are cached while neither the
  selection nor the parameters change (only outside autograd, where reuse is safe).
* ``export()`` returns the plain torch layer with the active shape and identical outputs.

A dynamic class declares, per dynamic attribute, its *role*:

* ``"out"`` - a width this layer produces; its choices come from the layer's rule;
* ``"in"``  - a width this layer consumes; it follows its producer (tracing assigns the source);
* ``"kernel"`` - a kernel size (choices from the rule's ``kernel_size`` list).

The other facts of a layer family (its rule key and fields, its channel axes) are declared on the
same class too; :mod:`nasviz.dynamic.family` lists them and what is derived from them. A family
is matched by its torch class (``torch_cls``), or, for a class of an optional library that nasviz
must not import, by its qualified name (``torch_qualname``, e.g.
``"transformers.pytorch_utils.Conv1D"``): the class is resolved from the first module met.

The module is one piece (longer than the house ~400 lines): the registry and the base class
resolve a family's torch class together (``convert`` and ``dynamic_class_for`` both bind a
qualname family), so splitting them would make the two import each other.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar, cast

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from nasviz.dynamic.family import LayerSpec, RuleSpec, WidthRule
from nasviz.dynamic.subclass import subclass_namespace
from nasviz.errors import HparamError, NasvizError
from nasviz.hparam import DimSource, Hparam, Index, index_size

__all__ = [
    "DynamicModule",
    "dynamic_class_for",
    "is_dynamic",
    "register_dynamic",
    "registered_layer_types",
    "slice_dim",
    "unregister_dynamic",
]

_D = TypeVar("_D", bound="type[DynamicModule]")
_M = TypeVar("_M", bound="DynamicModule")

#: rule key ("nn.Conv2d") -> dynamic twin, in registration order
_FAMILIES: dict[str, type[DynamicModule]] = {}
#: torch layer class -> its dynamic twin (qualname families join once resolved)
_REGISTRY: dict[type[nn.Module], type[DynamicModule]] = {}
#: "module.QualName" of a layer class nasviz does not import -> its dynamic twin
_BY_QUALNAME: dict[str, type[DynamicModule]] = {}
#: (dynamic twin, user subclass of the torch layer) -> generated class
_SUBCLASS_CACHE: dict[tuple[type, type], type] = {}
#: bumped after every torch optimizer step: fused steps change parameters without bumping
#: ``Tensor._version``, so cached slices are keyed on this counter too
_OPTIMIZER_STEPS = [0]


def _count_optimizer_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    _OPTIMIZER_STEPS[0] += 1


register_optimizer_step_post_hook(_count_optimizer_step)


def register_dynamic(cls: _D) -> _D:
    """Class decorator: register a dynamic twin (its ``torch_cls`` or ``torch_qualname``) under
    its rule key ``layer_type``.
    """
    key = cls.layer_type
    if key in _FAMILIES and _FAMILIES[key] is not cls:
        msg = (
            f"layer type {key!r} already has a dynamic twin ({_FAMILIES[key].__name__}); "
            f"give {cls.__name__} another layer_type"
        )
        raise NasvizError(msg)
    qualname = cls.torch_qualname
    if qualname is not None:
        _BY_QUALNAME[qualname] = cls
    else:
        torch_cls = cls.torch_cls
        if torch_cls in _REGISTRY and _REGISTRY[torch_cls] is not cls:
            msg = (
                f"{torch_cls.__name__} already has a dynamic twin ({_REGISTRY[torch_cls].__name__})"
            )
            raise NasvizError(msg)
        _REGISTRY[torch_cls] = cls
    _FAMILIES[key] = cls
    return cls


def unregister_dynamic(cls: type[DynamicModule]) -> None:
    """Undo :func:`register_dynamic` (for families declared by tests or plugins)."""
    if _FAMILIES.get(cls.layer_type) is cls:
        del _FAMILIES[cls.layer_type]
    for klass in [k for k, v in _REGISTRY.items() if v is cls]:
        del _REGISTRY[klass]
    for name in [k for k, v in _BY_QUALNAME.items() if v is cls]:
        del _BY_QUALNAME[name]


def registered_layer_types() -> dict[str, type[DynamicModule]]:
    """``{"nn.Conv2d": DynamicConv2d, ...}`` for every registered family, in registration order."""
    return dict(_FAMILIES)


def dynamic_class_for(module: nn.Module) -> type[DynamicModule] | None:
    """The dynamic twin registered for ``module``'s class (or a base class of it), if any."""
    if isinstance(module, DynamicModule):
        return type(module)
    for klass in type(module).__mro__:
        twin = _REGISTRY.get(klass)
        if twin is None and _BY_QUALNAME:
            twin = _BY_QUALNAME.get(f"{klass.__module__}.{klass.__qualname__}")
            if twin is not None:
                twin._resolve(klass)
        if twin is not None:
            return twin
    return None


def is_dynamic(module: nn.Module) -> bool:
    """Whether ``module`` is a dynamic twin (a converted :class:`DynamicModule`)."""
    return isinstance(module, DynamicModule)


def slice_dim(t: torch.Tensor, dim: int, index: Index | None) -> torch.Tensor:
    """Select ``index`` along ``dim`` of ``t``: a view for slices, a gather for index tensors."""
    if index is None:
        return t
    if isinstance(index, slice):
        start, stop, step = index.indices(t.shape[dim])
        if step == 1:
            if start == 0 and stop == t.shape[dim]:
                return t
            return t.narrow(dim, start, stop - start)
        index = torch.arange(start, stop, step)
    return t.index_select(dim, index.to(t.device))


class DynamicModule(nn.Module):
    """Mixin for dynamic twins: ``class DynamicLinear(DynamicModule, nn.Linear)``.

    Subclasses set ``torch_cls`` (or ``torch_qualname``), ``layer_type``, ``rule``,
    ``dynamic_attrs``, the channel axes and ``param_dims``, and implement ``forward`` (using
    :meth:`sliced`) and ``export`` (see :mod:`nasviz.dynamic.family`).
    """

    torch_cls: ClassVar[type[nn.Module]]
    #: "module.QualName" of the torch layer when nasviz must not import its library
    torch_qualname: ClassVar[str | None] = None
    #: rule key in a rule config ("nn.Conv2d")
    layer_type: ClassVar[str]
    #: the rule fields and their defaults
    rule: ClassVar[RuleSpec] = RuleSpec()
    #: attribute -> role ("out", "in" or "kernel"); the one place a prunable dimension is declared
    dynamic_attrs: ClassVar[dict[str, str]] = {}
    #: parameter/buffer name -> {tensor dim: dynamic attribute} it is sliced along
    param_dims: ClassVar[dict[str, dict[int, str]]] = {}
    #: how a tracer propagates channels through the layer ("linear", "conv", "norm", ...)
    trace_kind: ClassVar[str] = "linear"
    #: the input's channel dimension counted from the end (``None``: see ``channel_pos_axis``)
    channel_axis: ClassVar[int | None] = -1
    #: the input's channel dimension counted from the front, for rank-dependent layouts
    channel_pos_axis: ClassVar[int | None] = None
    #: the ``torch.nn.functional`` op the plain layer's forward is (``"layer_norm"``): inside a
    #: subclass's own forward, that call on the layer's weights is the layer's call
    functional_op: ClassVar[str | None] = None

    _nv_orig: dict[str, Any]
    _nv_dims: dict[str, DimSource | None]
    _nv_cache: dict[str, tuple[tuple[Any, ...], torch.Tensor]]
    #: instance attributes holding cached slices (views of the parameters) and their empty value:
    #: a copy or a pickle starts with them empty (a view whose parameter was since changed in
    #: place under ``torch.no_grad`` cannot be deep-copied, and a cache is no state)
    _nv_cache_attrs: ClassVar[dict[str, Any]] = {"_nv_cache": {}}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in cls.__dict__.get("dynamic_attrs", {}):
            if attr not in cls.__dict__:
                setattr(cls, attr, _dynamic_property(attr))

    # -- declarations --------------------------------------------------------------------------
    @classmethod
    def _resolve(cls, klass: type) -> None:
        """Bind a qualname family to the class ``klass`` met in a model."""
        if "torch_cls" not in cls.__dict__:
            cls.torch_cls = klass
            _REGISTRY.setdefault(klass, cls)

    @classmethod
    def plain_class(cls, module: nn.Module) -> type[nn.Module] | None:
        """The torch layer class of this family among ``module``'s bases (``None``: none)."""
        for klass in type(module).__mro__:
            if not issubclass(klass, nn.Module) or issubclass(klass, DynamicModule):
                continue
            if cls.torch_qualname is not None:
                if f"{klass.__module__}.{klass.__qualname__}" == cls.torch_qualname:
                    cls._resolve(klass)
                    return klass
            elif klass is cls.torch_cls:
                return klass
        return None

    @classmethod
    def layer_spec(cls, module: nn.Module) -> LayerSpec | None:
        """The tracer's view of ``module`` (a layer of this family), from the declarations:
        ``in_attr``/``out_attr`` from the roles, the channel axes, ``trace_kind``.
        """
        ins = [a for a, r in cls.dynamic_attrs.items() if r == "in"]
        outs = [a for a, r in cls.dynamic_attrs.items() if r == "out"]
        if not ins and not outs:
            return None
        out_attr = (outs or ins)[0]
        in_attr = (ins or outs)[0]
        return LayerSpec(cls.trace_kind, in_attr, out_attr, cls.channel_axis, cls.channel_pos_axis)

    # -- conversion ----------------------------------------------------------------------------
    @classmethod
    def convert(cls: type[_M], module: nn.Module) -> _M:
        """Turn ``module`` (an instance of ``torch_cls`` or a subclass) into its dynamic twin."""
        if isinstance(module, DynamicModule):
            if not isinstance(module, cls):
                msg = (
                    f"{type(module).__name__} is already dynamic; {cls.__name__} cannot convert it"
                )
                raise NasvizError(msg)
            return module
        if cls.plain_class(module) is None:
            msg = (
                f"{cls.__name__} converts {cls.torch_qualname or cls.torch_cls.__name__} layers, "
                f"got {type(module).__name__}"
            )
            raise NasvizError(msg)
        reason = cls.unsupported_reason(module)
        if reason is not None:
            msg = f"cannot convert {type(module).__name__} to {cls.__name__}: {reason}"
            raise NasvizError(msg)
        target: type = cls
        if not issubclass(cls, type(module)):
            key = (cls, type(module))
            if key not in _SUBCLASS_CACHE:
                user_cls = type(module)
                plain = cls.plain_class(module)
                own = plain is not None and user_cls.forward is not plain.forward
                body = subclass_namespace(cls, user_cls) if own else {}  # keeps its forward
                _SUBCLASS_CACHE[key] = type(f"Dynamic{user_cls.__name__}", (cls, user_cls), body)
            target = _SUBCLASS_CACHE[key]
        orig = {attr: module.__dict__.pop(attr) for attr in cls.dynamic_attrs}
        original_class = type(module)
        module.__class__ = target
        dyn = cast(_M, module)
        object.__setattr__(dyn, "_nv_orig", orig)
        object.__setattr__(dyn, "_nv_original_class", original_class)
        object.__setattr__(dyn, "_nv_dims", dict.fromkeys(cls.dynamic_attrs))
        object.__setattr__(dyn, "_nv_cache", {})
        dyn._nv_after_convert()
        return dyn

    @classmethod
    def unsupported_reason(cls, module: nn.Module) -> str | None:
        """Why ``module`` cannot become this dynamic class (``None`` if it can).

        Tracing calls this to leave a layer static with a stated reason; ``convert`` raises it.
        """
        return None

    def _nv_after_convert(self) -> None:
        """Hook for subclasses that need extra per-instance state."""

    def unconvert(self) -> nn.Module:
        """Return this layer to its original class and attributes (parameters untouched).

        Only valid at full size with the identity channel order: anything else needs
        :meth:`export`.
        """
        for attr, src in self._nv_dims.items():
            if src is not None and not _is_full(src):
                msg = (
                    f"cannot unconvert a {type(self).__name__} whose {attr} is not at full size; "
                    "export() it instead, or select the full subnet first"
                )
                raise NasvizError(msg)
        for attr, value in self._nv_orig.items():
            self.__dict__[attr] = value
        original_class = self.__dict__.pop("_nv_original_class")
        for key in ("_nv_orig", "_nv_dims", "_nv_cache"):
            self.__dict__.pop(key, None)
        self._nv_before_unconvert()
        self.__class__ = original_class
        return self

    def _nv_before_unconvert(self) -> None:
        """Hook for subclasses that added per-instance state."""

    def __getstate__(self) -> dict[str, Any]:
        """The module's state for ``copy.deepcopy``/pickle, with the slicing caches empty."""
        state: dict[str, Any] = dict(super().__getstate__())  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        for attr, empty in self._nv_cache_attrs.items():
            if attr in state:
                state[attr] = copy.copy(empty)
        return state

    # -- dimensions ----------------------------------------------------------------------------
    def _nv_attr_value(self, attr: str) -> Any:
        """The value the attribute reads as (subclasses turn sizes into tuples etc.)."""
        return self.active_size(attr)

    def original(self, attr: str) -> Any:
        """The attribute's value in the original layer."""
        return self._nv_orig[attr]

    def original_size(self, attr: str) -> int:
        """The attribute's size in the original layer, as an int (the last entry of a tuple
        attribute such as ``kernel_size``).
        """
        value = self._nv_orig[attr]
        return int(value[-1]) if isinstance(value, (tuple, list)) else int(value)

    def dim(self, attr: str) -> DimSource | None:
        """The source of ``attr`` (``None`` = static at full size)."""
        self._check_attr(attr)
        return self._nv_dims[attr]

    def set_dim(self, attr: str, source: DimSource | None) -> None:
        """Back ``attr`` by ``source`` (its full size must equal the layer's original size)."""
        self._check_attr(attr)
        if source is not None and self.dynamic_attrs[attr] != "kernel":
            full = self.original_size(attr)
            if source.full != full:
                msg = (
                    f"{type(self).__name__}.{attr} has {full} channels; a source of size "
                    f"{source.full} ({source!r}) cannot drive it"
                )
                raise HparamError(msg)
        self._nv_dims[attr] = source
        self._nv_cache.clear()

    def active_size(self, attr: str) -> int:
        """The attribute's size in the active subnet (its original size if no source drives it)."""
        src = self._nv_dims[attr]
        return self.original_size(attr) if src is None else src.active_size()

    def active_index(self, attr: str) -> Index | None:
        """Positions kept along ``attr`` (``None`` = all of them)."""
        src = self._nv_dims[attr]
        if src is None:
            return None
        idx = src.active_index()
        if isinstance(idx, slice) and index_size(idx, src.full) == src.full:
            return None
        return idx

    def hparams(self) -> Iterator[tuple[str, Hparam]]:
        """``(attr, hparam)`` for every hparam any dynamic attribute depends on."""
        for attr, src in self._nv_dims.items():
            if src is not None:
                for hp in src.hparams():
                    yield attr, hp

    def is_full(self) -> bool:
        """Whether every dynamic attribute is at full size in the original order."""
        return all(self.active_index(a) is None for a in self.dynamic_attrs) and all(
            self.active_size(a) == self.original_size(a)
            for a, r in self.dynamic_attrs.items()
            if r == "kernel"
        )

    def _check_attr(self, attr: str) -> None:
        if attr not in self.dynamic_attrs:
            msg = (
                f"{type(self).__name__} has no dynamic attribute {attr!r}; it has "
                f"{sorted(self.dynamic_attrs)}"
            )
            raise NasvizError(msg)

    # -- rules and importance -----------------------------------------------------------------
    def choices_for(self, attr: str, rule: WidthRule) -> list[int] | None:
        """Widths the rule allows for ``attr`` (``None`` for attributes that follow a producer)."""
        role = self.dynamic_attrs[attr]
        if role == "out":
            return rule.choices_for(self.original_size(attr))
        if role == "kernel":
            ks = list(getattr(rule, "kernel_size", []) or [])
            full = self.original_size(attr)
            return sorted({k for k in ks if k <= full} | {full})
        return None

    def importance(self, attr: str) -> torch.Tensor | None:
        """Per-channel importance along ``attr`` (``None`` if this layer has no opinion)."""
        return None

    def channel_block(self, attr: str) -> int:
        """Channels along ``attr`` that must be kept or dropped together (a GroupNorm's group
        size; 1 for most layers). An enforced order must keep such blocks whole.
        """
        self._check_attr(attr)
        return 1

    # -- slicing -------------------------------------------------------------------------------
    def sliced(self, name: str, tensor: torch.Tensor | None, dims: dict[int, str]) -> Any:
        """``tensor`` sliced along ``{tensor dim: dynamic attribute}`` to the active subnet.

        Results are cached in eval mode, keyed on the selection and the tensor's version, while
        autograd is not recording through the tensor (a cached graph must never be reused). Some
        in-place updates do not bump ``Tensor._version`` (fused optimizer steps, BatchNorm running
        statistics), so nothing is cached in training mode, ``train()``/``eval()`` and every torch
        optimizer step invalidate the cache, and buffers that torch updates in place should be
        sliced with :func:`slice_dim`.
        """
        if tensor is None:
            return None
        indices = [(d, self.active_index(a)) for d, a in dims.items()]
        if all(i is None for _, i in indices):
            return tensor
        cacheable = not self.training and not (tensor.requires_grad and torch.is_grad_enabled())
        if not cacheable:
            self._nv_cache.pop(name, None)  # the tensor may change before the next cached read
        else:
            key = (
                tuple(_version_of(self._nv_dims[a]) for a in dims.values()),
                tensor._version,
                tensor.data_ptr(),
                _OPTIMIZER_STEPS[0],
            )
            hit = self._nv_cache.get(name)
            if hit is not None and hit[0] == key:
                return hit[1]
        out = tensor
        for d, idx in indices:
            out = slice_dim(out, d, idx)
        if cacheable:
            out = out.contiguous()
            self._nv_cache[name] = (key, out)
        return out

    def active_shape(self, name: str) -> tuple[int, ...]:
        """Shape parameter/buffer ``name`` has in the active subnet (without slicing it)."""
        t = getattr(self, name)
        shape = list(t.shape)
        for d, attr in self.param_dims.get(name, {}).items():
            shape[d] = self.active_size(attr)
        return tuple(shape)

    def active_param_count(self) -> int:
        """Number of parameters of this layer in the active subnet."""
        total = 0
        for name, p in self.named_parameters(recurse=False):
            n = 1
            for s in self.active_shape(name) if name in self.param_dims else p.shape:
                n *= s
            total += n
        return total

    def flops_ratio(self) -> float:
        """Active FLOPs / full FLOPs of this layer (default: ratio of active weight elements,
        exact for convs and linears whose output size does not change).
        """
        w = getattr(self, "weight", None)
        if not isinstance(w, torch.Tensor) or "weight" not in self.param_dims:
            return 1.0
        full = w.numel()
        act = 1
        for s in self.active_shape("weight"):
            act *= s
        return act / full if full else 1.0

    def export(self) -> nn.Module:
        """The plain torch layer with the active shape (copies of the active weights)."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> DynamicModule:
        """Switch train/eval mode and drop the slicing cache (parameters may change meanwhile)."""
        self._nv_cache.clear()
        return super().train(mode)

    def extra_repr(self) -> str:
        """The torch layer's ``extra_repr`` showing active values (torch formats some layers
        from ``__dict__``, where dynamic attributes no longer live).
        """
        injected = [a for a in self.dynamic_attrs if a not in self.__dict__]
        for attr in injected:
            self.__dict__[attr] = getattr(self, attr)
        try:
            return super().extra_repr()
        finally:
            for attr in injected:
                self.__dict__.pop(attr, None)

    def _export_finish(self, plain: nn.Module) -> nn.Module:
        """Common tail of ``export``: same train flag and ``requires_grad`` as this layer."""
        plain.train(self.training)
        own = dict(self.named_parameters(recurse=False))
        for name, p in plain.named_parameters(recurse=False):
            if name in own:
                p.requires_grad_(own[name].requires_grad)
        return plain


def _version_of(src: DimSource | None) -> tuple[int, ...]:
    return () if src is None else src.version()


def _is_full(src: DimSource) -> bool:
    idx = src.active_index()
    return isinstance(idx, slice) and index_size(idx, src.full) == src.full


def _dynamic_property(attr: str) -> property:
    def fget(self: DynamicModule) -> Any:
        return self._nv_attr_value(attr)

    def fset(self: DynamicModule, value: Any) -> None:
        msg = (
            f"{type(self).__name__}.{attr} is dynamic: choose its width through its hparam "
            f"(nv.select(model, {{...}})) instead of assigning {value!r}"
        )
        raise HparamError(msg)

    return property(fget, fset, doc=f"Active value of the dynamic attribute {attr!r}.")
