"""Constraints: parsing, resolution, checks, reachability and their messages."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nasviz.errors import ConstraintError, NasvizError
from nasviz.search import Constraints


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        (2_500_000, 2.5e6),
        (2.5e6, 2.5e6),
        ("2.5e6", 2.5e6),
        ("500k", 5e5),
        ("3M", 3e6),
        (" 1.2G ", 1.2e9),
        ("1.5 g", 1.5e9),
        ("2T", 2e12),
        ("7", 7.0),
    ],
)
def test_absolute_values(value: object, limit: float) -> None:
    c = Constraints({"params": value})
    assert c.is_resolved
    assert c.limits == {"params": pytest.approx(limit)}
    assert c["params"].relative is False


def test_percentages_resolve_against_the_full_model() -> None:
    c = Constraints({"flops": "60%", "params": "100 %"})
    assert not c.is_resolved
    assert c.resolve(full_flops=2e6, full_params=5e6) == {"flops": 1.2e6, "params": 5e6}
    assert c.is_resolved
    assert c.resolve(full_flops=4e6, full_params=5e6)["flops"] == pytest.approx(2.4e6)  # again
    assert c.to_dict() == {"flops": "60%", "params": "100 %"}
    assert Constraints(c.to_dict()).to_dict() == c.to_dict()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"energy": 5}, r"unknown constraint 'energy' = 5: nasviz can bound 'flops', 'params' "),
        ({"FLOPs": "60%"}, r"unknown constraint 'FLOPs' = '60%' \(did you mean 'flops'\?\)"),
        ({"flops": "150%"}, r"constraints\['flops'\] = '150%' is out of range: .* at most 100%"),
        ({"flops": "0%"}, r"constraints\['flops'\] = '0%' is out of range: .* above 0%"),
        ({"flops": "-5%"}, r"constraints\['flops'\] = '-5%' is out of range"),
        ({"params": "-2M"}, r"constraints\['params'\] = '-2M' must be a positive"),
        ({"params": -3}, r"constraints\['params'\] = -3 must be a positive, finite limit"),
        ({"params": 0}, r"constraints\['params'\] = 0 must be a positive"),
        ({"params": math.inf}, r"constraints\['params'\] = inf must be a positive, finite"),
        ({"params": math.nan}, r"constraints\['params'\] = nan must be a positive"),
        ({"flops": 0.6}, r"constraints\['flops'\] = 0\.6 is below one FLOP; .* e\.g\. '60%'"),
        ({"flops": "3 MFLOPs"}, r"'3 MFLOPs' is not a number: write an absolute number"),
        ({"params": True}, r"constraints\['params'\] = True has type bool: write an absolute"),
        ({"params": [1]}, r"constraints\['params'\] = \[1\] has type list"),
        ({}, r"constraints = \{\} bounds nothing: give 'flops' and/or 'params'"),
    ],
)
def test_bad_specs_name_key_value_and_fix(spec: dict[str, object], match: str) -> None:
    with pytest.raises(ConstraintError, match=match):
        Constraints(spec)


def test_non_dict_spec_and_error_hierarchy() -> None:
    with pytest.raises(
        ConstraintError, match=r"must be a dict such as \{'flops': '60%'\}, got str"
    ):
        Constraints("60%")  # type: ignore[arg-type]
    assert issubclass(ConstraintError, NasvizError)
    assert issubclass(ConstraintError, ValueError)


def test_unresolved_percentages_cannot_be_checked() -> None:
    c = Constraints({"flops": "60%", "params": 1e6})
    for call in (lambda: c.check(1, 1), lambda: c.limits, lambda: c.check_reachable(1, 1)):
        with pytest.raises(ConstraintError, match=r"'60%' is relative .* call resolve\(full_fl"):
            call()
    with pytest.raises(ConstraintError, match=r"cannot resolve constraints\['flops'\] = '60%'"):
        c.resolve(full_flops=0, full_params=10)


def test_check_and_margins() -> None:
    c = Constraints({"flops": "60%", "params": "3M"})
    c.resolve(2e6, 5e6)
    assert c.check(flops=1.2e6, params=3e6)  # on the limit counts as satisfied
    assert not c.check(flops=1.2e6 + 1, params=1)
    assert not c.check(flops=1, params=3.1e6)
    margins = c.margins(flops=1.5e6, params=2.4e6)
    assert margins == {"flops": pytest.approx(-0.25), "params": pytest.approx(0.2)}
    assert Constraints({"params": 100}).check(flops=1e12, params=99)  # flops unconstrained


def test_check_reachable_says_by_how_much() -> None:
    c = Constraints({"flops": "60%"})
    c.resolve(full_flops=2e6, full_params=5e6)
    c.check_reachable(min_flops=1.2e6, min_params=1e9)  # params unconstrained: fine
    with pytest.raises(
        ConstraintError,
        match=(
            r"^flops <= 60% \(1\.20 MFLOPs\) is unreachable: the smallest subnet has 1\.50 MFLOPs "
            r"\(25% over\); lower the divisor or widen the ratios, or relax the constraint$"
        ),
    ):
        c.check_reachable(min_flops=1.5e6, min_params=0)
    both = Constraints({"flops": 1000, "params": "1k"})
    with pytest.raises(
        ConstraintError,
        match=r"flops <= 1\.00 kFLOPs is unreachable: .* 1\.00 kFLOPs \(0\.1% over\); "
        r"params <= 1\.00k params is unreachable: the smallest subnet has 2\.00k params "
        r"\(100% over\); lower",
    ):
        both.check_reachable(min_flops=1001, min_params=2000)


def test_repr() -> None:
    c = Constraints({"flops": "60%", "params": 3e6})
    assert repr(c) == "Constraints(flops <= 60%, params <= 3.00M params)"
    c.resolve(2e6, 5e6)
    assert repr(c) == "Constraints(flops <= 60% (1.20 MFLOPs), params <= 3.00M params)"
    assert repr(Constraints({"flops": "2.5e6"})) == "Constraints(flops <= 2.50 MFLOPs)"


def test_describe_tables() -> None:
    c = Constraints({"flops": "60%", "params": "3M"})
    table = c.describe()
    assert list(table.columns) == ["constraint", "spec", "limit", "limit_text"]
    assert table["spec"].tolist() == ["60%", "3.00M params"]
    assert math.isnan(table["limit"][0])
    c.resolve(2e6, 5e6)
    table = c.describe(flops=1.5e6, params=2.4e6)
    assert table["limit_text"].tolist() == ["1.20 MFLOPs", "3.00M params"]
    assert table["ok"].tolist() == [False, True]
    assert table["margin"].tolist() == [pytest.approx(-0.25), pytest.approx(0.2)]
    assert table["value"].tolist() == [1.5e6, 2.4e6]


def test_views_and_copy() -> None:
    c = Constraints({"params": "3M"})
    copy = Constraints(c)
    assert "params" in copy and "flops" not in copy
    assert len(copy) == 1 and [lim.key for lim in copy] == ["params"]


@given(
    pct=st.floats(min_value=0.01, max_value=100),
    full=st.floats(min_value=1, max_value=1e12),
    value=st.floats(min_value=0, max_value=2e12),
)
def test_check_agrees_with_the_margin_sign(pct: float, full: float, value: float) -> None:
    c = Constraints({"flops": f"{pct!r}%"})
    limit = c.resolve(full_flops=full, full_params=1)["flops"]
    assert limit == pytest.approx(pct / 100 * full)
    assert c.check(flops=value, params=0) == (value <= limit)
    assert (c.margins(flops=value, params=0)["flops"] >= 0) == (value <= limit)
