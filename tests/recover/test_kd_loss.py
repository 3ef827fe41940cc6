"""KDLoss equals its formula, on fixed tensors and for all tensors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nasviz as nv
from nasviz.errors import NasvizError

S = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
T = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, -2.0]])
Y = torch.tensor([0, 2])


def _by_hand(temp: float, alpha: float) -> float:
    """The formula written out with explicit sums (no torch.nn.functional)."""
    kd = 0.0
    for s_row, t_row in zip(S.tolist(), T.tolist()):
        zs = sum(math.exp(v / temp) for v in s_row)
        zt = sum(math.exp(v / temp) for v in t_row)
        p = [math.exp(v / temp) / zt for v in t_row]
        q = [math.exp(v / temp) / zs for v in s_row]
        kd += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    kd = kd / len(S) * temp * temp
    ce = 0.0
    for s_row, y in zip(S.tolist(), Y.tolist()):
        ce += -(s_row[y] - math.log(sum(math.exp(v) for v in s_row)))
    ce /= len(S)
    return alpha * kd + (1 - alpha) * ce


@pytest.mark.parametrize(("temp", "alpha"), [(4.0, 0.9), (1.0, 0.5), (2.5, 0.0), (3.0, 1.0)])
def test_equals_formula_on_fixed_tensors(temp: float, alpha: float) -> None:
    got = nv.KDLoss(temperature=temp, alpha=alpha)(S, T, Y)
    assert float(got) == pytest.approx(_by_hand(temp, alpha), rel=1e-5, abs=1e-7)


def test_terms_and_no_target() -> None:
    loss = nv.KDLoss(temperature=2.0, alpha=0.7)
    total, kd, ce = loss.terms(S, T, Y)
    assert ce is not None
    assert float(total) == pytest.approx(0.7 * float(kd) + 0.3 * float(ce))
    only, kd2, none = loss.terms(S, T)
    assert none is None and float(only) == pytest.approx(float(kd2)) == pytest.approx(float(kd))


def test_gradient_flows_to_student_only() -> None:
    s, t = S.clone().requires_grad_(), T.clone().requires_grad_()
    nv.KDLoss()(s, t, Y).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
    assert t.grad is None


def test_sequence_logits_are_rows() -> None:
    s3, t3 = S.reshape(1, 2, 3), T.reshape(1, 2, 3)
    loss = nv.KDLoss(temperature=4.0, alpha=0.9)
    assert float(loss(s3, t3, Y.reshape(1, 2))) == pytest.approx(float(loss(S, T, Y)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0}, "temperature=0 must be > 0"),
        ({"temperature": "4"}, "temperature='4' must be a number"),
        ({"alpha": 1.5}, r"alpha=1.5 must be a number in \[0, 1\]"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(NasvizError, match=match):
        nv.KDLoss(**kwargs)  # type: ignore[arg-type]


def test_shape_mismatch() -> None:
    with pytest.raises(NasvizError, match=r"differ in shape"):
        nv.KDLoss()(S, T[:, :2])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-5, 5), min_size=6, max_size=6),
    st.lists(st.floats(-5, 5), min_size=6, max_size=6),
    st.floats(0.5, 8.0),
)
def test_soft_term_is_nonnegative_and_zero_on_equal_logits(
    a: list[float], b: list[float], temp: float
) -> None:
    s, t = torch.tensor(a).reshape(2, 3), torch.tensor(b).reshape(2, 3)
    loss = nv.KDLoss(temperature=temp, alpha=1.0)
    assert float(loss(s, t)) >= -1e-6
    assert abs(float(loss(t, t))) < 1e-5
