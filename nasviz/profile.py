"""Re-exports of :mod:`nasviz.cost` under the path users import from (``nasviz.profile``).

The code lives in :mod:`nasviz.cost` (``profile``, ``model``, ``terms``); this module only
re-exports its public names (``nasviz.cost.__all__``, listed once, there) so that
``from nasviz.profile import profile, CostModel`` keeps working.
"""

from __future__ import annotations

from nasviz import cost
from nasviz.cost import ROOT_NAME as ROOT_NAME
from nasviz.cost import CostModel as CostModel
from nasviz.cost import Profile as Profile
from nasviz.cost import exclusive_flops as exclusive_flops
from nasviz.cost import format_flops as format_flops
from nasviz.cost import format_params as format_params
from nasviz.cost import measure_modules as measure_modules
from nasviz.cost import param_count as param_count
from nasviz.cost import profile as profile

__all__ = []
__all__ += cost.__all__
