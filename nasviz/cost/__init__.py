"""Cost: per-layer FLOPs/parameters of a (sub)net, and estimates for any candidate subnet.

* :mod:`nasviz.cost.profile` measures: :func:`profile` runs the model once and returns a
  :class:`Profile` (one row per module, totals); :func:`measure_modules`, :func:`param_count`;
* :mod:`nasviz.cost.terms` compiles a dynamic module's cost into linear terms of the hparams;
* :mod:`nasviz.cost.model` holds :class:`CostModel`, which prices ``{hparam: value}`` without a
  forward pass;
* :mod:`nasviz.cost.latency` measures latency on the device and
  :mod:`nasviz.cost.latency_table` predicts it for any subnet from a lookup table.

Imports point one way: ``profile`` <- ``terms`` <- ``model``.
"""

from __future__ import annotations

from nasviz.cost.model import CostModel
from nasviz.cost.profile import (
    ROOT_NAME,
    Profile,
    exclusive_flops,
    format_flops,
    format_params,
    measure_modules,
    param_count,
    profile,
)

__all__ = [
    "ROOT_NAME",
    "CostModel",
    "Profile",
    "exclusive_flops",
    "format_flops",
    "format_params",
    "measure_modules",
    "param_count",
    "profile",
]
