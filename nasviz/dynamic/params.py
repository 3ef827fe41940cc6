"""Channel parameters: tensors of an ordinary module that follow a pruned channel dimension.

Some parameters and buffers are not the weight of a prunable layer, yet carry one entry per
channel of a pruned dimension and are multiplied or added into it by an ordinary module's own
``forward``: ConvNeXt's layer scale ``gamma`` (shape ``(C,)``, used as ``self.gamma * x`` on a
channels-last tensor), a ViT's ``cls_token`` ``(1, 1, C)`` and ``pos_embed`` ``(1, N + 1, C)``.
Tracing decides which dimension of such a *channel parameter* follows which
:class:`~nasviz.hparam.DimSource`; :func:`slice_params` makes the module read it at the active
subnet's size without touching its ``forward``:

* the module's class is swapped, in place, for a generated subclass ``Sliced<Class>`` whose
  ``__getattr__`` slices: ``isinstance`` still holds and the ``Parameter`` objects stay the same;
* ``state_dict``, ``load_state_dict`` and ``named_parameters`` see the full tensors; a read is a
  view (or a gather) of the full tensor, so gradients reach it at the selected positions;
* reads are never cached: these tensors are small, and an uncached read cannot go stale after an
  in-place update (:func:`permute_param`, ``load_state_dict``, a fused optimizer step);
* :func:`export_params` bakes the active slices in and restores the plain class;
  :func:`unslice_params` restores it with the full tensors. Deepcopy and pickle keep the slicing.

Example::

    >>> class Scale(nn.Module):
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.gamma = nn.Parameter(torch.arange(4.0))
    ...     def forward(self, x: torch.Tensor) -> torch.Tensor:
    ...         return self.gamma * x
    >>> from nasviz.hparam import Hparam
    >>> m, hp = Scale(), Hparam([2, 4], name="c")
    >>> slice_params(m, {"gamma": (0, hp)})
    >>> hp.active = 2
    >>> m(torch.ones(2)).tolist(), tuple(m.state_dict()["gamma"].shape), type(m).__name__
    ([0.0, 1.0], (4,), 'SlicedScale')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, SupportsIndex

import torch
from torch import nn

from nasviz.dynamic.base import DynamicModule, slice_dim
from nasviz.errors import HparamError
from nasviz.hparam import DimSource

__all__ = [
    "active_param_numel",
    "export_params",
    "follow_attrs",
    "followed_attrs",
    "permute_param",
    "slice_params",
    "sliced_params",
    "unslice_params",
]

#: original class -> its generated ``Sliced<Class>``
_SLICED_CLASSES: dict[type[nn.Module], type[nn.Module]] = {}
_DIMS = "_nv_param_dims"  # instance __dict__ key: {name: (dim, source)}
_ORIG = "_nv_param_class"  # instance __dict__ key: the original class
_ATTRS = "_nv_attr_sources"  # instance __dict__ key: {int attribute: source}


class _SlicedParams(nn.Module):
    """Mixin of the generated classes: a sliced name reads as its active slice."""

    def __getattr__(self, name: str) -> Any:
        value = super().__getattr__(name)
        entry = self.__dict__.get(_DIMS, {}).get(name)
        if entry is None or not isinstance(value, torch.Tensor):
            return value
        return slice_dim(value, entry[0], entry[1].active_index())

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        """Pickle (and deepcopy) as the original class plus state: the generated class is not
        importable, the original one is.
        """
        return (_rebuild, (self.__dict__[_ORIG],), self.__getstate__())  # type: ignore[no-untyped-call]  # torch leaves it unannotated


def _rebuild(original: type[nn.Module]) -> nn.Module:
    """Unpickling half of :meth:`_SlicedParams.__reduce_ex__` (``__setstate__`` fills it in)."""
    cls = _sliced_class(original)
    return cls.__new__(cls)


def _sliced_class(original: type[nn.Module]) -> type[nn.Module]:
    cls = _SLICED_CLASSES.get(original)
    if cls is None:
        cls = type(f"Sliced{original.__name__}", (_SlicedParams, original), {})
        cls.__qualname__ = f"Sliced{original.__qualname__}"
        _SLICED_CLASSES[original] = cls
    return cls


class _FollowedAttr:
    """A data descriptor on a generated class: an int attribute that reads as the active size of
    its source on the instances that follow it (:func:`follow_attrs`), as the instance's own value
    on the others. Writes go to the instance's own value.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        source = obj.__dict__.get(_ATTRS, {}).get(self.name)
        if source is not None:
            return source.active_size()
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value


def _swap_class(module: nn.Module, original: type[nn.Module]) -> None:
    if not isinstance(module, _SlicedParams):
        module.__class__ = _sliced_class(original)
        module.__dict__[_ORIG] = original
        module.__dict__[_DIMS] = {}


def follow_attrs(module: nn.Module, attrs: Mapping[str, DimSource]) -> None:
    """Make the int attributes ``attrs`` of an ordinary module read as the active size of their
    source (GPT-2's ``split_size`` and ``num_heads``, Whisper's ``num_heads``): library code that
    uses them in ``forward`` then computes the active subnet's shapes. The stored value stays the
    original; :func:`export_params` writes the active values, :func:`unslice_params` drops the
    following. Each attribute must be an int equal to its source's full size.

    Example::

        >>> class Heads(nn.Module):
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.num_heads = 4
        >>> from nasviz.hparam import Hparam
        >>> m, hp = Heads(), Hparam([2, 4], name="heads")
        >>> follow_attrs(m, {"num_heads": hp})
        >>> hp.active = 2
        >>> m.num_heads, export_params(m).num_heads, type(m).__name__
        (2, 2, 'Heads')
    """
    if not isinstance(module, nn.Module) or isinstance(module, DynamicModule):
        msg = (
            f"follow_attrs needs an ordinary nn.Module, got {type(module).__name__}; a dynamic "
            "layer's widths follow its dynamic attributes (set_dim)"
        )
        raise HparamError(msg)
    original = _original_class(module)
    for name, source in attrs.items():
        value = module.__dict__.get(name)
        if type(value) is not int:
            msg = (
                f"{original.__name__}.{name} is {value!r}, not an int attribute of the instance; "
                "only an int attribute can follow a width"
            )
            raise HparamError(msg)
        if not isinstance(source, DimSource) or source.full != value:
            msg = (
                f"{original.__name__}.{name} = {value} cannot follow {source!r}: the source's full "
                f"size must equal the attribute ({value})"
            )
            raise HparamError(msg)
        if any(name in klass.__dict__ for klass in original.__mro__):
            msg = (
                f"{original.__name__}.{name} is shadowed by a class attribute; follow_attrs "
                "can only follow a plain instance attribute"
            )
            raise HparamError(msg)
    if not attrs:
        return
    _swap_class(module, original)
    cls = type(module)
    for name in attrs:
        if not isinstance(cls.__dict__.get(name), _FollowedAttr):
            setattr(cls, name, _FollowedAttr(name))
    module.__dict__.setdefault(_ATTRS, {}).update(attrs)


def followed_attrs(module: nn.Module) -> dict[str, DimSource]:
    """``{attribute: source}`` of the int attributes ``module`` follows (empty for most)."""
    return dict(module.__dict__.get(_ATTRS, {}))


def _original_class(module: nn.Module) -> type[nn.Module]:
    original: type[nn.Module] = module.__dict__.get(_ORIG, type(module))
    return original


def _own_tensor(module: nn.Module, name: str) -> torch.Tensor | None:
    if name in module._parameters:
        return module._parameters[name]
    return module._buffers.get(name)


def slice_params(module: nn.Module, dims: Mapping[str, tuple[int, DimSource]]) -> None:
    """Make reading ``module.<name>`` return the tensor selected along ``dim`` by the source.

    ``dims`` maps names of the module's own parameters/buffers to ``(dim, source)``; calling
    again adds or replaces entries. Everything is checked before anything changes.
    """
    if not isinstance(module, nn.Module):
        msg = f"slice_params needs an nn.Module, got {type(module).__name__}"
        raise HparamError(msg)
    original = _original_class(module)
    if isinstance(module, DynamicModule):
        msg = (
            f"{original.__name__} is a dynamic layer: its parameters follow its dynamic "
            "attributes (set_dim); slice_params is for parameters of ordinary modules"
        )
        raise HparamError(msg)
    checked = {name: _check(module, original, name, entry) for name, entry in dims.items()}
    if not checked:
        return
    _swap_class(module, original)
    module.__dict__[_DIMS].update(checked)


def _check(module: nn.Module, original: type, name: object, entry: object) -> tuple[int, DimSource]:
    owner = original.__name__
    if not isinstance(name, str):
        msg = f"{owner}: parameter names must be strings, got {name!r}"
        raise HparamError(msg)
    t = _own_tensor(module, name)
    if name not in module._parameters and name not in module._buffers:
        child, _, leaf = name.rpartition(".")
        try:
            sub = module.get_submodule(child) if child else None
        except AttributeError:
            sub = None
        if sub is not None and (leaf in sub._parameters or leaf in sub._buffers):
            msg = (
                f"{owner}: {name!r} belongs to the child module {child!r}, not to {owner} "
                f"itself; call slice_params(module.get_submodule({child!r}), {{{leaf!r}: ...}})"
            )
            raise HparamError(msg)
        own = sorted([*module._parameters, *module._buffers])
        msg = f"{owner} has no parameter or buffer {name!r}; choose one of its own: {own}"
        raise HparamError(msg)
    if t is None:
        msg = f"{owner}.{name} is None; only a tensor can be sliced"
        raise HparamError(msg)
    if any(name in klass.__dict__ for klass in original.__mro__):
        msg = (
            f"{owner}.{name} is shadowed by a class attribute (a property or a parametrization); "
            "slice_params can only slice a plain registered parameter or buffer"
        )
        raise HparamError(msg)
    if not (isinstance(entry, tuple) and len(entry) == 2):
        msg = f"{owner}.{name}: expected a (dim, source) pair, got {entry!r}"
        raise HparamError(msg)
    dim, source = entry
    ndim = t.dim()
    if isinstance(dim, bool) or not isinstance(dim, int) or not -ndim <= dim < ndim:
        msg = (
            f"{owner}.{name}: dim {dim!r} is out of range for its shape {tuple(t.shape)}; "
            f"use an int in [{-ndim}, {ndim - 1}]"
        )
        raise HparamError(msg)
    if not isinstance(source, DimSource):
        msg = (
            f"{owner}.{name}: the source must be a DimSource (Hparam, ConcatDim, RepeatDim), "
            f"got {type(source).__name__}"
        )
        raise HparamError(msg)
    dim %= ndim
    if source.full != t.shape[dim]:
        msg = (
            f"{owner}.{name}: dim {dim} has size {t.shape[dim]} but the source {source!r} has "
            f"full size {source.full}; pass the dim of size {source.full} or the source that "
            f"drives this {t.shape[dim]}-channel dimension"
        )
        raise HparamError(msg)
    return dim, source


def sliced_params(module: nn.Module) -> dict[str, tuple[int, DimSource]]:
    """``{name: (dim, source)}`` of what ``module`` slices (empty for a plain module)."""
    return dict(module.__dict__.get(_DIMS, {}))


def export_params(module: nn.Module) -> nn.Module:
    """In place: keep only the active slices, as plain tensors of the original class; returns
    ``module``. Parameters keep ``requires_grad``, buffers keep their persistence.
    """
    new: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, (dim, source) in sliced_params(module).items():
            t = _own_tensor(module, name)
            if t is not None:
                new[name] = slice_dim(t, dim, source.active_index()).detach().clone()
    for name, value in new.items():
        if name in module._parameters:
            old = module._parameters[name]
            keep_grad = old is not None and old.requires_grad
            module._parameters[name] = nn.Parameter(value, requires_grad=keep_grad)
        else:
            module._buffers[name] = value
    for name, source in followed_attrs(module).items():
        module.__dict__[name] = source.active_size()
    unslice_params(module)
    return module


def unslice_params(module: nn.Module) -> None:
    """Undo :func:`slice_params`: the original class, the full tensors (no-op if not sliced)."""
    original = module.__dict__.pop(_ORIG, None)
    if original is None:
        return
    module.__dict__.pop(_DIMS, None)
    module.__dict__.pop(_ATTRS, None)
    module.__class__ = original


def active_param_numel(module: nn.Module) -> int:
    """Elements of ``module``'s own parameters in the active subnet (sliced ones at their
    active size, the others in full).
    """
    dims = module.__dict__.get(_DIMS, {})
    total = 0
    for name, p in module.named_parameters(recurse=False):
        n = p.numel()
        if name in dims and p.shape[dims[name][0]]:
            dim, source = dims[name]
            n = n // p.shape[dim] * source.active_size()
        total += n
    return total


def permute_param(module: nn.Module, name: str, perm: torch.Tensor) -> None:
    """Reorder the sliced parameter/buffer ``name`` in place along its sliced dim:
    entry ``i`` becomes old entry ``perm[i]`` (the physical channel sort at convert time).
    """
    dims = module.__dict__.get(_DIMS, {})
    owner = _original_class(module).__name__
    t = _own_tensor(module, name)
    if name not in dims or t is None:
        msg = (
            f"{owner}.{name} is not sliced (sliced: {sorted(dims)}); call "
            f"slice_params(module, {{{name!r}: (dim, source)}}) first"
        )
        raise HparamError(msg)
    dim = dims[name][0]
    n = t.shape[dim]
    perm = torch.as_tensor(perm)
    if (
        perm.dtype.is_floating_point
        or perm.dtype.is_complex
        or perm.dtype == torch.bool
        or perm.dim() != 1
        or perm.numel() != n
        or not torch.equal(torch.sort(perm.cpu().long()).values, torch.arange(n))
    ):
        msg = (
            f"{owner}.{name}: perm must be a 1-D integer permutation of 0..{n - 1} (dim {dim} "
            f"has {n} entries), got {tuple(perm.shape)} {perm.dtype}"
        )
        raise HparamError(msg)
    with torch.no_grad():
        t.data.copy_(t.data.index_select(dim, perm.long().to(t.device)))
