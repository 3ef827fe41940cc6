"""Transactions on a model: an operation that fails or is interrupted leaves it as it was.

:func:`transaction` takes a :class:`ModelSnapshot` of a model before an operation and puts it
back if the operation raises anything (``KeyboardInterrupt`` included), then re-raises. Put back
means: every module of the model has its class and its attributes again (so the parent/child
tree, hooks, patched methods and training flags are as before), the very same ``Parameter`` and
buffer objects are in place (an optimizer built before still holds them), and they hold the
values, shapes and ``requires_grad`` flags they had. Other objects the operation may change (the
hparams of a search space, say) are passed as ``also``; their attributes are put back too.

Generic on purpose: ``convert`` uses it, and so can ``prune``, a search's evaluation of a subnet
or a widget's Evaluate button. Example::

    with transaction(model):
        risky_in_place_change(model)   # raises: model is exactly as it was before the block
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["ModelSnapshot", "transaction"]


def _copy_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """A copy of an object's attributes whose dict/list/set values are copied one level deep (a
    module's ``_parameters``, ``_buffers``, ``_modules`` and hook dicts); restoring uses a fresh
    copy too, so a snapshot can be restored more than once.
    """
    return {k: (v.copy() if isinstance(v, (dict, list, set)) else v) for k, v in attrs.items()}


@dataclass
class _Tensor:
    tensor: torch.Tensor
    value: torch.Tensor
    requires_grad: bool
    grad: torch.Tensor | None


@dataclass
class ModelSnapshot:
    """What :meth:`restore` puts back: objects with their classes and attributes, tensors with
    their values.
    """

    objects: list[tuple[object, type, dict[str, Any]]] = field(default_factory=list)
    tensors: list[_Tensor] = field(default_factory=list)

    @classmethod
    def take(cls, model: nn.Module, also: Iterable[object] = ()) -> ModelSnapshot:
        """Snapshot ``model`` (every module, parameter and buffer) and the objects ``also``."""
        snap = cls()
        seen: set[int] = set()
        for m in model.modules():
            snap.objects.append((m, type(m), _copy_attrs(vars(m))))
            for t in [*m._parameters.values(), *m._buffers.values()]:
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    snap.tensors.append(_Tensor(t, t.detach().clone(), t.requires_grad, t.grad))
        snap.objects.extend((o, type(o), _copy_attrs(vars(o))) for o in also)
        return snap

    def restore(self) -> None:
        """Put everything back as it was when the snapshot was taken."""
        for obj, cls, attrs in self.objects:
            vars(obj).clear()
            vars(obj).update(_copy_attrs(attrs))
            if type(obj) is not cls:
                obj.__class__ = cls
        with torch.no_grad():
            for t in self.tensors:
                same = (t.tensor.shape, t.tensor.dtype, t.tensor.device) == (
                    t.value.shape,
                    t.value.dtype,
                    t.value.device,
                )
                if same and t.tensor.is_contiguous() == t.value.is_contiguous():
                    t.tensor.copy_(t.value)
                else:
                    t.tensor.data = t.value.clone()
                if t.tensor.is_leaf:
                    t.tensor.requires_grad_(t.requires_grad)
                    t.tensor.grad = t.grad


@contextmanager
def transaction(model: nn.Module, also: Iterable[object] = ()) -> Iterator[ModelSnapshot]:
    """Run the ``with`` block on ``model``; if it raises anything, restore ``model`` (and the
    objects ``also``) to what they were before it, then re-raise.
    """
    snap = ModelSnapshot.take(model, also)
    try:
        yield snap
    except BaseException:
        snap.restore()
        raise
