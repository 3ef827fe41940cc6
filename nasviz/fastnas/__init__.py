"""FastNAS: the ``"fastnas"`` mode, its convert pipeline, its searcher and ``prune``.

An algorithm built on the generic engine, which never imports this package:

* :mod:`nasviz.fastnas.config`: :class:`FastNASConfig` (glob rules per layer type);
* :mod:`nasviz.fastnas.convert`: trace, plan, convert, sort channels by importance, self-check;
  restore a stored plan;
* :mod:`nasviz.fastnas.mode`: :class:`FastNASModeDescriptor` (registered as ``"fastnas"`` when
  this package is imported; ``import nasviz`` does) and :class:`FastNASPatchManager`;
* :mod:`nasviz.fastnas.searcher`: :class:`BinarySearcher` (sensitivity map, bisection, growth);
* :mod:`nasviz.fastnas.prune`: :func:`prune`.
"""

from __future__ import annotations

from nasviz.fastnas.config import FastNASConfig
from nasviz.fastnas.convert import build_search_space, restore_search_space, sort_channels
from nasviz.fastnas.mode import FastNASModeDescriptor, FastNASPatchManager
from nasviz.fastnas.prune import prune
from nasviz.fastnas.searcher import BinarySearcher, config_at_drop, drop_levels

__all__ = [
    "BinarySearcher",
    "FastNASConfig",
    "FastNASModeDescriptor",
    "FastNASPatchManager",
    "build_search_space",
    "config_at_drop",
    "drop_levels",
    "prune",
    "restore_search_space",
    "sort_channels",
]
