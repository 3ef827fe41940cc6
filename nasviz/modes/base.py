"""Modes: the unit of model optimization, and the registry that finds them by name.

A *mode* is one step applied to a model and recorded in its modelopt state: ``"fastnas"`` turns a
model into a searchable one, ``"export"`` freezes the chosen subnet. A mode is described by a small
:class:`ModeDescriptor` object: its ``name``, its ``config_class`` (a pydantic
:class:`~nasviz.config.ModeloptBaseConfig`), a ``convert`` entry point (model, config ->
model, metadata), a ``restore`` entry point (model, config, metadata -> model, deterministic: it
rebuilds on a fresh model exactly what ``convert`` built) and the ordering rules
(``next_modes``, ``next_prohibited_modes``, ``export_mode``, ``is_export_mode``).

Descriptors are registered once, by name, with the :func:`register_mode` class decorator; the
state code looks them up with :func:`get_mode` when a mode is applied and when a saved model is
restored. A mode module registers its modes when it is imported: ``import nasviz`` imports the
built-in ones (``nasviz.fastnas`` registers ``"fastnas"``, ``nasviz.modes.export`` registers
``"export"``), so ``restore`` finds them; this module imports none of them.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from torch import nn

from nasviz.config import ModeloptBaseConfig
from nasviz.errors import ApplyModeError, NoSearchAlgorithmError

__all__ = [
    "ConvertEntrypoint",
    "ConvertReturnType",
    "MetadataDict",
    "ModeDescriptor",
    "ModeRegistry",
    "NoSearchAlgorithmError",
    "RestoreEntrypoint",
    "UpdateEntrypoint",
    "get_mode",
    "register_mode",
    "registered_modes",
]

MetadataDict = dict[str, Any]
ConvertReturnType = tuple[nn.Module, MetadataDict]
#: ``convert(model, config, **mode_kwargs) -> (model, metadata)``
ConvertEntrypoint = Callable[..., ConvertReturnType]
#: ``restore(model, config, metadata) -> model``
RestoreEntrypoint = Callable[[nn.Module, ModeloptBaseConfig, MetadataDict], nn.Module]
#: ``update(model, config, metadata) -> None``; modifies config and metadata in place
UpdateEntrypoint = Callable[[nn.Module, ModeloptBaseConfig, MetadataDict], None]


def _no_update(model: nn.Module, config: ModeloptBaseConfig, metadata: MetadataDict) -> None:
    """The default update entry point: leaves config and metadata as they are."""


class ModeDescriptor(ABC):
    """Abstract description of a mode (see the module docstring).

    Subclasses implement ``name``, ``config_class``, ``convert`` and ``restore`` as properties and
    override the ordering properties where the mode has rules. Example::

        >>> from nasviz.config import ModeloptBaseConfig
        >>> class TagConfig(ModeloptBaseConfig):
        ...     value: float = 1.0
        >>> class TagMode(ModeDescriptor):
        ...     name = property(lambda self: "tag")
        ...     config_class = property(lambda self: TagConfig)
        ...     convert = property(lambda self: lambda model, config: (model, {}))
        ...     restore = property(lambda self: lambda model, config, metadata: model)
        >>> TagMode()
        TagMode(name='tag', config_class=TagConfig)
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """The mode's name, as recorded in the modelopt state."""

    @property
    @abstractmethod
    def config_class(self) -> type[ModeloptBaseConfig]:
        """The config class that validates this mode's config."""

    @property
    @abstractmethod
    def convert(self) -> ConvertEntrypoint:
        """``convert(model, config, **mode_kwargs) -> (model, metadata)``.

        Modifies the model (in place or returning a new one) and returns metadata that makes the
        conversion restorable (store non-deterministic outcomes there). Raise
        :class:`~nasviz.errors.ApplyModeError` when the conversion cannot be done.
        """

    @property
    @abstractmethod
    def restore(self) -> RestoreEntrypoint:
        """``restore(model, config, metadata) -> model``: redo ``convert`` deterministically."""

    @property
    def export_mode(self) -> str | None:
        """The mode that must eventually export this mode's result (``None``: no export step)."""
        return None

    @property
    def is_export_mode(self) -> bool:
        """Whether this mode is the export mode of another mode."""
        return False

    @property
    def next_modes(self) -> set[str] | None:
        """Modes allowed to immediately follow this one (``None``: any; empty set: none)."""
        return None

    @property
    def next_prohibited_modes(self) -> set[str] | None:
        """Modes that must not immediately follow this one (``None``: no check)."""
        return None

    @property
    def require_model_like(self) -> bool:
        """Whether the mode needs a model-like input (a class and its arguments). Always False."""
        return False

    @property
    def search_algorithm(self) -> type[Any]:
        """The searcher class for this mode; raises when the mode has none."""
        msg = (
            f"mode {self.name!r} has no search algorithm; search a model converted with a "
            "searchable mode such as 'fastnas'"
        )
        raise NoSearchAlgorithmError(msg)

    @property
    def update_for_new_mode(self) -> UpdateEntrypoint:
        """``update(model, config, metadata)``, called on the last mode before a new one is added.

        Trims or completes this mode's config/metadata in place. Default: no change.
        """
        return _no_update

    @property
    def update_for_save(self) -> UpdateEntrypoint:
        """``update(model, config, metadata)``, called on the last mode before the state is saved.

        Default: no change.
        """
        return _no_update

    def assert_compatibility_as_next_mode_of(self, other_mode: ModeDescriptor | str) -> None:
        """Raise :class:`~nasviz.errors.ApplyModeError` unless this mode may follow the other."""
        other = get_mode(other_mode)
        allowed = other.next_modes
        if allowed is not None and self.name not in allowed:
            if not allowed:
                rule = f"no mode may follow {other.name!r}"
            else:
                rule = f"{other.name!r} must be followed immediately by {_names(allowed)}"
            msg = (
                f"mode {self.name!r} cannot follow mode {other.name!r}: {rule}. {_fix_hint(other)}"
            )
            raise ApplyModeError(msg)
        prohibited = other.next_prohibited_modes
        if prohibited is not None and self.name in prohibited:
            msg = (
                f"mode {self.name!r} cannot follow mode {other.name!r}: {other.name!r} prohibits "
                f"{_names(prohibited)} right after it. {_fix_hint(other)}"
            )
            raise ApplyModeError(msg)

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}", f"config_class={self.config_class.__name__}"]
        if self.export_mode is not None:
            parts.append(f"export_mode={self.export_mode!r}")
        if self.is_export_mode:
            parts.append("is_export_mode=True")
        for label, value in (
            ("next_modes", self.next_modes),
            ("next_prohibited_modes", self.next_prohibited_modes),
        ):
            if value is not None:
                parts.append(f"{label}={{{', '.join(repr(n) for n in sorted(value))}}}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _names(names: set[str]) -> str:
    return ", ".join(repr(n) for n in sorted(names))


def _fix_hint(other: ModeDescriptor) -> str:
    if other.export_mode is not None:
        return f"Apply {other.export_mode!r} first, or start again from the original model."
    return "Apply the modes in an allowed order, or start again from the original model."


_M = TypeVar("_M", bound=type[ModeDescriptor])


class _ModeRegistry:
    """A named collection of mode descriptors (one instance per mode name).

    Every registry is known to :func:`get_mode`; a mode name is unique across all registries so
    that a saved state names its modes unambiguously. Example::

        >>> ModeRegistry
        _ModeRegistry('nasviz', modes=[...])
    """

    _all_registries: ClassVar[list[_ModeRegistry]] = []

    def __init__(self, registry_name: str) -> None:
        self.registry_name = registry_name
        self._modes: dict[str, ModeDescriptor] = {}
        _ModeRegistry._all_registries.append(self)

    def register_mode(self, cls: _M) -> _M:
        """Class decorator: register one instance of ``cls`` under its ``name``; returns ``cls``."""
        if not (isinstance(cls, type) and issubclass(cls, ModeDescriptor)):
            msg = (
                f"register_mode decorates ModeDescriptor subclasses, got {cls!r}; "
                "subclass nasviz.modes.ModeDescriptor"
            )
            raise ApplyModeError(msg)
        try:
            descriptor = cls()
        except TypeError as e:
            msg = (
                f"cannot register {cls.__name__}: {e}; implement name, config_class, convert "
                "and restore as properties"
            )
            raise ApplyModeError(msg) from e
        name = descriptor.name
        if not isinstance(name, str) or not name:
            msg = f"{cls.__name__}.name must be a non-empty string, got {name!r}"
            raise ApplyModeError(msg)
        for registry in _ModeRegistry._all_registries:
            if name in registry._modes:
                owner = type(registry._modes[name]).__name__
                msg = (
                    f"mode {name!r} is already registered (by {owner} in registry "
                    f"{registry.registry_name!r}); give {cls.__name__} another name"
                )
                raise ApplyModeError(msg)
        self._modes[name] = descriptor
        return cls

    def remove_mode(self, name: str) -> None:
        """Unregister the mode ``name`` (mainly for tests)."""
        if name not in self._modes:
            msg = (
                f"mode {name!r} is not in registry {self.registry_name!r}; registered here: "
                f"{_names(set(self._modes)) or 'none'}"
            )
            raise ApplyModeError(msg)
        del self._modes[name]

    def get(self, name: str) -> ModeDescriptor | None:
        """The descriptor registered here as ``name``, or ``None``."""
        return self._modes.get(name)

    def get_mode(self, name_or_descriptor: str | ModeDescriptor) -> ModeDescriptor:
        """Like :func:`get_mode`, restricted to this registry (unknown names raise)."""
        return get_mode(name_or_descriptor, registry=self)

    def __contains__(self, name: object) -> bool:
        return name in self._modes

    def registered_modes(self) -> list[str]:
        """The sorted names of the modes registered here."""
        return sorted(self._modes)

    def __repr__(self) -> str:
        return f"_ModeRegistry({self.registry_name!r}, modes={self.registered_modes()!r})"


#: the default registry, used by :func:`register_mode`
ModeRegistry = _ModeRegistry("nasviz")
register_mode = ModeRegistry.register_mode


def _registries(registry: _ModeRegistry | None) -> list[_ModeRegistry]:
    return [registry] if registry is not None else list(_ModeRegistry._all_registries)


def registered_modes(registry: _ModeRegistry | None = None) -> list[str]:
    """Sorted names of the registered modes (of ``registry``, or of all registries)."""
    return sorted({n for r in _registries(registry) for n in r.registered_modes()})


def get_mode(
    name_or_descriptor: str | ModeDescriptor, registry: _ModeRegistry | None = None
) -> ModeDescriptor:
    """The registered descriptor for a mode name (a descriptor is returned as it is).

    Unknown names raise :class:`~nasviz.errors.ApplyModeError` with close matches and the list of
    registered modes.
    """
    if isinstance(name_or_descriptor, ModeDescriptor):
        return name_or_descriptor
    if not isinstance(name_or_descriptor, str):
        msg = (
            f"a mode is given by its name or its ModeDescriptor, got "
            f"{type(name_or_descriptor).__name__} {name_or_descriptor!r}"
        )
        raise ApplyModeError(msg)
    name = name_or_descriptor
    for r in _registries(registry):
        found = r.get(name)
        if found is not None:
            return found
    known = registered_modes(registry)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(repr(k) for k in known) or "none"
    msg = (
        f"unknown mode {name!r}.{hint} Registered modes: {listing}. A custom mode must be "
        "registered with @register_mode before it is used."
    )
    raise ApplyModeError(msg)
