"""Modes: ``ModeDescriptor``, the mode registry, and (in their own modules) the built-in modes.

The built-in modes register themselves when imported: ``"export"`` (``nasviz.modes.export``) and
``"fastnas"`` (the algorithm package :mod:`nasviz.fastnas`); ``import nasviz`` imports both. This
package imports neither (``nasviz.modes.fastnas`` is a re-export shim of ``nasviz.fastnas.mode``).
"""

from __future__ import annotations

from nasviz.modes.base import (
    ConvertEntrypoint,
    ConvertReturnType,
    MetadataDict,
    ModeDescriptor,
    ModeRegistry,
    NoSearchAlgorithmError,
    RestoreEntrypoint,
    UpdateEntrypoint,
    get_mode,
    register_mode,
    registered_modes,
)

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
