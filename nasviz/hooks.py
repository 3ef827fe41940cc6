"""Hook handles: forward hooks on named sub-modules of a model, with a safe life cycle.

A *handle* wraps a model and puts a forward hook on some of its sub-modules, named by their
qualified names from ``model.named_modules()`` (``"layer1.0.conv1"``; ``""`` is the model itself).
The hooks record only while the handle itself runs the model, so a hooked model called directly
behaves exactly as before.

Hooks are global state on the model, so every handle removes its hooks on ``remove_hooks()``, at
the end of a ``with`` block (also on an exception) and when it is deleted; ``attach_hooks()`` (or
entering a ``with`` block again) puts them back. :class:`HooksHandle` is that bookkeeping; what a
hook does with an output is its subclasses' (:mod:`nasviz.extension`: the activation grabbers).
"""

from __future__ import annotations

import abc
import difflib
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import Any, TypeVar, cast

from torch import nn
from torch.utils.hooks import RemovableHandle

from nasviz.errors import ModuleIdError, NasvizError

__all__ = ["HooksHandle"]

_H = TypeVar("_H", bound="HooksHandle")


def suggest(name: str, known: Iterable[str]) -> str:
    """The part of an error message that names what ``name`` may have meant among ``known``."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    if close:
        return "closest names: " + ", ".join(repr(c) for c in close)
    shown = ", ".join(repr(k) for k in known[:10])
    return f"known names: {shown}{', ...' if len(known) > 10 else ''}" if known else "none known"


class HooksHandle(nn.Module, abc.ABC):
    """Base class: forward hooks on named sub-modules of ``wrapped_model``.

    ``registered_submodules`` lists the registered ids in order; ``hook_handles`` maps each id to
    its attached hook (empty after ``remove_hooks()``). Subclasses define what a hook does with an
    output (``_on_output``) and what ``forward`` returns.

    Example (a handle that records the output shape of each registered sub-module)::

        >>> class ShapeRecorder(HooksHandle):
        ...     def __init__(self, model, ids):
        ...         super().__init__(model, ids)
        ...         self.shapes = {}
        ...     def _on_output(self, module_id, output):
        ...         self.shapes[module_id] = tuple(output.shape)
        ...     def forward(self, x):
        ...         return self._run_model(x)  # runs the model with the hooks recording
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> with ShapeRecorder(model, ["0", "2"]) as rec:
        ...     _ = rec(torch.zeros(4, 2))
        >>> rec.shapes, rec.hooks_attached
        ({'0': (4, 3), '2': (4, 1)}, False)
    """

    def __init__(self, model: nn.Module, module_ids: Iterable[str] | None = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            msg = f"model must be a torch.nn.Module, got {type(model).__name__}"
            raise NasvizError(msg)
        self.wrapped_model: nn.Module = model
        self.hook_handles: dict[str, RemovableHandle] = {}
        self._module_ids: list[str] = []
        self._attached = True
        self._recording = False
        ids = list(module_ids or [])
        for m_id in ids:  # validate all before hooking any: a failed init leaves no hook behind
            self.get_module_by_id(m_id)
        for m_id in ids:
            self.register_submodule(m_id)

    @property
    def registered_submodules(self) -> list[str]:
        """List of the ids of the registered sub-modules, in registration order."""
        return list(self._module_ids)

    @property
    def hooks_attached(self) -> bool:
        """Whether the hooks are on the model (``False`` after ``remove_hooks()``)."""
        return self._attached

    def get_module_by_id(self, m_id: str) -> nn.Module:
        """Get the sub-module of ``wrapped_model`` named ``m_id``; raises ``ModuleIdError``."""
        modules = dict(self.wrapped_model.named_modules(remove_duplicate=False))
        if not isinstance(m_id, str) or m_id not in modules:
            msg = (
                f"module id {m_id!r} is not a sub-module of {type(self.wrapped_model).__name__}; "
                f"{suggest(str(m_id), modules)}. Use a qualified name from model.named_modules()."
            )
            raise ModuleIdError(msg)
        return cast(nn.Module, modules[m_id])

    def register_submodule(self, module_id: str) -> None:
        """Register a further sub-module to take outputs from (a no-op if registered already)."""
        module = self.get_module_by_id(module_id)
        if module_id in self._module_ids:
            return
        self._module_ids.append(module_id)
        if self._attached:
            self.hook_handles[module_id] = module.register_forward_hook(self._make_hook(module_id))

    def unregister_submodule(self, module_id: str) -> None:
        """Unregister a sub-module and remove its hook; raises ``ModuleIdError`` if unknown."""
        if module_id not in self._module_ids:
            msg = (
                f"module id {module_id!r} is not registered with this handle; "
                f"{suggest(str(module_id), self._module_ids)}."
            )
            raise ModuleIdError(msg)
        self._module_ids.remove(module_id)
        handle = self.hook_handles.pop(module_id, None)
        if handle is not None:
            handle.remove()

    def remove_hooks(self) -> None:
        """Take every hook of this handle off the model (registrations are kept)."""
        for handle in self.hook_handles.values():
            handle.remove()
        self.hook_handles.clear()
        self._attached = False

    def attach_hooks(self) -> None:
        """Put the hooks of all registered sub-modules (back) on the model; idempotent."""
        self._attached = True
        for m_id in self._module_ids:
            if m_id not in self.hook_handles:
                module = self.get_module_by_id(m_id)
                self.hook_handles[m_id] = module.register_forward_hook(self._make_hook(m_id))

    def __enter__(self: _H) -> _H:
        self.attach_hooks()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove_hooks()

    def __del__(self) -> None:
        """Unregister all hooks held by this handle on handle delete."""
        for handle in self.__dict__.get("hook_handles", {}).values():
            handle.remove()

    def extra_repr(self) -> str:
        """The registered ids and whether the hooks are attached (shown in the ``repr``)."""
        return f"module_ids={self._module_ids}, hooks_attached={self._attached}"

    def _make_hook(self, module_id: str) -> Any:
        ref = weakref.ref(self)  # a strong ref would keep the handle alive via the model

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            handle = ref()
            if handle is not None and handle._recording:
                handle._on_output(module_id, output)

        return hook

    def _run_model(self, *inps: Any, **kwargs: Any) -> Any:
        """Run ``wrapped_model`` with the hooks recording; refuse to run with removed hooks."""
        if not self._attached and self._module_ids:
            msg = (
                f"{type(self).__name__}: its hooks were removed (remove_hooks() or the end of a "
                "with block); call attach_hooks() or use it inside `with handle:` again"
            )
            raise NasvizError(msg)
        self._recording = True
        try:
            return self.wrapped_model(*inps, **kwargs)
        finally:
            self._recording = False

    @abc.abstractmethod
    def _on_output(self, module_id: str, output: Any) -> None:
        """Handle the output of a registered sub-module during this handle's forward."""
