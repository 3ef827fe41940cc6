"""Dynamic twins of layer subclasses that override ``forward`` (torchvision's ``LayerNorm2d``,
timm's ``BatchNormAct2d``).

Converting such a layer gives it its family's dynamic class *and keeps its own forward*: the
generated class (:func:`subclass_namespace`) runs the subclass's ``forward`` while the layer's
sliced tensors stand in for its parameters and buffers - ``self.weight`` inside that forward is
the active slice, ``self.normalized_shape``/``self.num_features`` read the active width (they
are dynamic attributes), and running statistics are views of the buffers (or gathered copies
written back after the call), so a training step updates exactly the kept channels as the
family's own forward does. Outside ``forward`` every attribute is the full tensor, as for any
dynamic layer. ``export()`` returns an instance of the *subclass* (its own forward, its extra
children such as an activation), with the attributes, parameters and buffers of the family's
plain export.

Whether the subclass's forward uses its weights the way the family does (the family's
functional op on the right dimension) is decided by tracing (:mod:`nasviz.tracing.functional`),
not here: a layer tracing cannot follow stays static and is never sliced.

Example::

    >>> ln = DynamicLayerNorm.convert(LayerNorm2dTV(8))    # permute -> F.layer_norm -> permute
    >>> ln.set_dim("normalized_shape", Hparam([4, 8])); ln.dim("normalized_shape").active = 4
    >>> ln(torch.zeros(2, 4, 3, 3)).shape, type(ln.export()).__name__
    (torch.Size([2, 4, 3, 3]), 'LayerNorm2dTV')
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

__all__ = ["export_as_subclass", "subclass_namespace"]

#: instance key of the sliced tensors while the subclass's forward runs
_VIEWS = "_nv_views"


def subclass_namespace(twin: type, user_cls: type[nn.Module]) -> dict[str, Any]:
    """The class body of ``Dynamic<user_cls>``: the subclass's forward over sliced tensors, and
    an export to the subclass (see the module docstring).
    """
    user_forward: Callable[..., Any] = user_cls.forward
    family_export = cast(Callable[[Any], nn.Module], getattr(twin, "export"))  # noqa: B009

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.is_full() or _VIEWS in self.__dict__:
            return user_forward(self, *args, **kwargs)
        views, finish = _forward_views(self)
        self.__dict__[_VIEWS] = views
        try:
            return user_forward(self, *args, **kwargs)
        finally:
            del self.__dict__[_VIEWS]
            if finish is not None:
                finish()

    def __getattr__(self: Any, name: str) -> Any:  # noqa: N807  # a class-body dunder
        views = self.__dict__.get(_VIEWS)
        if views is not None and name in views:
            return views[name]
        return nn.Module.__getattr__(self, name)

    def export(self: Any) -> nn.Module:
        return export_as_subclass(self, family_export(self), user_cls)

    forward.__doc__ = f"{user_cls.__name__}.forward over the active slices of the tensors."
    export.__doc__ = f"A {user_cls.__name__} with the active widths (its own forward kept)."
    return {"forward": forward, "__getattr__": __getattr__, "export": export}


def _forward_views(self: Any) -> tuple[dict[str, torch.Tensor | None], Callable[[], None] | None]:
    """``({name: active slice}, after)``: the family's own hook (``_nv_forward_views``, e.g. the
    running statistics of a batch norm with their write-back) or every ``param_dims`` tensor
    sliced.
    """
    hook = getattr(type(self), "_nv_forward_views", None)
    if hook is not None:
        return cast(tuple[dict[str, torch.Tensor | None], Callable[[], None] | None], hook(self))
    views: dict[str, torch.Tensor | None] = {}
    for name, dims in self.param_dims.items():
        views[name] = self.sliced(name, nn.Module.__getattr__(self, name), dims)
    return views, None


def export_as_subclass(dyn: nn.Module, plain: nn.Module, user_cls: type[nn.Module]) -> nn.Module:
    """A ``user_cls`` instance built from dynamic layer ``dyn`` and its family's export
    ``plain``: ``plain``'s attributes, parameters and buffers; ``dyn``'s other state (extra
    attributes, copies of its children and of its own further tensors).
    """
    state = {k: v for k, v in dyn.__dict__.items() if not k.startswith("_nv_")}
    for key, value in list(state.items()):
        if isinstance(value, (dict, set, list)):
            state[key] = copy.copy(value)
    state["_parameters"] = {
        k: None if p is None else nn.Parameter(p.detach().clone(), p.requires_grad)
        for k, p in dyn._parameters.items()
    }
    state["_buffers"] = {
        k: None if b is None else b.detach().clone() for k, b in dyn._buffers.items()
    }
    state["_modules"] = {k: copy.deepcopy(m) for k, m in dyn._modules.items()}
    for key, value in plain.__dict__.items():
        if not key.startswith("_"):
            state[key] = value
    state["_parameters"].update(plain._parameters)
    state["_buffers"].update(plain._buffers)
    out = user_cls.__new__(user_cls)
    out.__dict__.update(state)
    return out
