"""FastNAS: the ``"fastnas"`` mode, its convert pipeline, its searcher and ``prune``.

An algorithm built on the generic engine, which never imports this package:

* :mod:`nasviz.fastnas.config`: :class:`FastNASConfig` (glob rules per layer type);
* :mod:`nasviz.fastnas.convert`: trace, plan, convert, sort channels by importance, self-check;
  restore a stored plan;
* :mod:`nasviz.fastnas.mode`: :class:`FastNASModeDescriptor` (registered as ``"fastnas"`` when
  this package is imported; ``import nasviz`` does) and :class:`FastNASPatchManager`;
* :mod:`nasviz.fastnas.searcher`: :class:`BinarySearcher` (sensitivity map, bisection, growth);
* :mod:`nasviz.fastnas.prune`: :func:`prune`;
* :mod:`nasviz.fastnas.sensmap`: the map as data (:func:`predict_drop` under FastNAS's additivity
  assumption, :func:`monotone_map`, pins, :func:`save_sensitivity_map` and
  :func:`load_sensitivity_map`);
* :mod:`nasviz.fastnas.frontier`: :func:`pareto_front`, :func:`search_with_pins`,
  :func:`config_as_code`.
"""

from __future__ import annotations

from nasviz.fastnas.config import FastNASConfig
from nasviz.fastnas.convert import build_search_space, restore_search_space, sort_channels
from nasviz.fastnas.frontier import config_as_code, pareto_front, search_with_pins
from nasviz.fastnas.mode import FastNASModeDescriptor, FastNASPatchManager
from nasviz.fastnas.prune import prune
from nasviz.fastnas.searcher import BinarySearcher
from nasviz.fastnas.sensmap import (
    SensitivityMapFile,
    check_pins,
    config_at_drop,
    drop_levels,
    load_sensitivity_map,
    monotone_map,
    predict_drop,
    save_sensitivity_map,
)

__all__ = [
    "BinarySearcher",
    "FastNASConfig",
    "FastNASModeDescriptor",
    "FastNASPatchManager",
    "SensitivityMapFile",
    "build_search_space",
    "check_pins",
    "config_as_code",
    "config_at_drop",
    "drop_levels",
    "load_sensitivity_map",
    "monotone_map",
    "pareto_front",
    "predict_drop",
    "prune",
    "restore_search_space",
    "save_sensitivity_map",
    "search_with_pins",
    "sort_channels",
]
