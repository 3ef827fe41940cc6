"""Re-exports of :mod:`nasviz.fastnas.mode` under its former path (``nasviz.modes.fastnas``).

The ``"fastnas"`` mode lives in the algorithm package :mod:`nasviz.fastnas`; this module only
re-exports its public names for code that imports them from here. No engine module imports it.
"""

from __future__ import annotations

from nasviz.fastnas.mode import (
    FastNASModeDescriptor,
    FastNASPatchManager,
    convert_fastnas_searchspace,
    restore_fastnas_searchspace,
    update_fastnas_metadata,
)

__all__ = [
    "FastNASModeDescriptor",
    "FastNASPatchManager",
    "convert_fastnas_searchspace",
    "restore_fastnas_searchspace",
    "update_fastnas_metadata",
]
