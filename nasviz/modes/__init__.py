"""Modes: ``ModeDescriptor``, the mode registry, and (in their own modules) the built-in modes.

The built-in modes live in ``nasviz.modes.fastnas`` and ``nasviz.modes.export``; they register
themselves when imported, and :func:`get_mode` imports them on first need.
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
