"""Re-exports of :mod:`nasviz.cost` under the path users import from (``nasviz.profile``).

The code lives in :mod:`nasviz.cost` (``profile``, ``model``, ``terms``); this module only
re-exports its public names so that ``from nasviz.profile import profile, CostModel`` keeps working.
"""

from __future__ import annotations

from nasviz.cost import (
    ROOT_NAME,
    CostModel,
    Profile,
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
    "format_flops",
    "format_params",
    "measure_modules",
    "param_count",
    "profile",
]
