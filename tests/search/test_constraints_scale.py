"""Constraint scale (issue #15, item 8): ``"60"`` means 60 FLOPs; a limit under 1% of the full
model is refused when resolved, suggesting the percentage that was probably meant.
"""

from __future__ import annotations

import pytest

from nasviz.errors import ConstraintError
from nasviz.search.constraints import Constraints


@pytest.mark.parametrize("spec", ["60", 60, 60.0, "60 "])
def test_a_bare_number_that_is_a_tiny_part_of_the_model_suggests_a_percentage(
    spec: object,
) -> None:
    c = Constraints({"flops": spec})
    with pytest.raises(
        ConstraintError,
        match=r"constraints\['flops'\] = .*60.* is 60 FLOPs, under 1% of the full model "
        r"\(1\.20 MFLOPs\).* write '60%'",
    ):
        c.resolve(full_flops=1.2e6, full_params=5e4)


def test_params_too() -> None:
    with pytest.raises(ConstraintError, match=r"under 1% of the full model .*write '50%'"):
        Constraints({"params": 50}).resolve(full_flops=1e6, full_params=5e4)


def test_a_plausible_absolute_limit_and_a_small_percentage_are_kept() -> None:
    c = Constraints({"flops": "600k", "params": "0.5%"})
    assert c.resolve(full_flops=1.2e6, full_params=5e4) == {"flops": 6e5, "params": 250.0}
    assert Constraints({"flops": 12_000}).resolve(1.2e6, 5e4) == {"flops": 12_000.0}  # 1%
