"""Hparam, ConcatDim and RepeatDim: choices, validation, channel orders, merging, versions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nasviz.errors import HparamError, NasvizError
from nasviz.hparam import ConcatDim, DimSource, Hparam, RepeatDim, index_size


def _positions(idx: slice | torch.Tensor, full: int) -> list[int]:
    return torch.arange(full)[idx].tolist() if isinstance(idx, slice) else idx.tolist()


# -- choices and the active value ---------------------------------------------------------------
def test_choices_are_sorted_unique_and_include_the_original() -> None:
    hp = Hparam([32, 8, 16, 16], original=64, name="a.out")
    assert hp.choices == (8, 16, 32, 64)
    assert (hp.original, hp.full, hp.active) == (64, 64, 64)
    assert (hp.min, hp.max) == (8, 64)
    assert hp.is_configurable
    assert Hparam([4, 2]).original == 4  # default: the largest choice
    only = Hparam([], original=5)
    assert only.choices == (5,)
    assert not only.is_configurable


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"choices": []}, "needs at least one choice"),
        ({"choices": [2], "original": 0}, "original must be >= 1, got 0"),
        ({"choices": [0, 4, 9], "original": 8}, r"choices must lie in \[1, 8\].*\[0, 9\]"),
        ({"choices": [2.5]}, "2.5 is not an integer"),
        ({"choices": [True]}, "True is not an integer"),
    ],
)
def test_bad_choices_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(HparamError, match=match):
        Hparam(name="blk.out", **kwargs)  # type: ignore[arg-type]


def test_integer_like_values_are_accepted() -> None:
    hp = Hparam([torch.tensor(4)], original=torch.tensor(8))  # type: ignore[list-item,arg-type]
    assert hp.choices == (4, 8)
    hp.active = torch.tensor(4)  # type: ignore[assignment]
    assert hp.active == 4
    assert type(hp.active) is int


def test_active_validation_names_the_value_and_the_choices() -> None:
    hp = Hparam([16, 32, 64], name="layer1.conv.out_channels")
    hp.active = 32
    assert hp.active == 32
    message = (
        r"^layer1\.conv\.out_channels: 48 is not a valid choice; choose one of \[16, 32, 64\]$"
    )
    with pytest.raises(HparamError, match=message):
        hp.active = 48
    assert hp.active == 32  # unchanged after a refused value
    with pytest.raises(NasvizError, match="'x' is not an integer"):
        hp.active = "x"  # type: ignore[assignment]
    assert isinstance(HparamError("x"), ValueError)


def test_restrict_choices_keeps_the_original_and_resets_a_dropped_active() -> None:
    hp = Hparam([2, 4, 6, 8])
    hp.active = 6
    hp.restrict_choices([2, 4, 5])
    assert hp.choices == (2, 4, 8)
    assert hp.active == 8


# -- channel orders -----------------------------------------------------------------------------
def test_active_slice_without_order_is_a_leading_slice() -> None:
    hp = Hparam([2, 4, 8])
    assert hp.active_slice == slice(0, 8)
    hp.active = 2
    assert hp.active_slice == slice(0, 2)
    assert hp.active_index() == slice(0, 2)
    assert hp.order is None


def test_enforce_order_gives_index_tensors() -> None:
    hp = Hparam([2, 4, 8])
    hp.enforce_order([3, 1, 0, 2, 4, 5, 6, 7])
    hp.active = 2
    idx = hp.active_slice
    assert isinstance(idx, torch.Tensor)
    assert idx.dtype == torch.long
    assert idx.tolist() == [3, 1]
    hp.active = 4  # the first four are 0..3 in another order: still a tensor
    assert hp.active_slice.tolist() == [3, 1, 0, 2]
    hp.active = 8
    assert isinstance(hp.active_slice, torch.Tensor)  # a full permutation is not the identity
    hp.reset_order()
    assert hp.active_slice == slice(0, 8)


def test_order_prefix_equal_to_identity_is_a_slice() -> None:
    hp = Hparam([2, 4])
    hp.enforce_order([0, 1, 3, 2])
    hp.active = 2
    assert hp.active_slice == slice(0, 2)
    hp.enforce_order(list(range(4)))  # the identity is stored as no order
    assert hp.order is None


def test_enforce_order_from_importance_is_descending_and_stable() -> None:
    hp = Hparam([1, 2, 3, 4, 5])
    hp.importance = torch.tensor([1.0, 3.0, 1.0, 3.0, 2.0])
    hp.enforce_order()
    assert hp.order is not None
    assert hp.order.tolist() == [1, 3, 4, 0, 2]
    hp.active = 3
    assert hp.active_slice.tolist() == [1, 3, 4]
    plain = Hparam([1, 2])
    plain.enforce_order()  # no importance: identity
    assert plain.order is None


@pytest.mark.parametrize("order", [[0, 1, 2], [0, 1, 1, 2], [1, 2, 3, 4], [0, 0, 1, 2]])
def test_an_order_must_be_a_permutation(order: list[int]) -> None:
    hp = Hparam([2, 4], name="fc.out")
    with pytest.raises(HparamError, match=r"fc\.out: an order must be a permutation of 0\.\.3"):
        hp.enforce_order(order)


def test_importance_length_is_checked_and_normalised() -> None:
    hp = Hparam([2, 4], name="fc.out")
    with pytest.raises(HparamError, match=r"fc\.out: importance needs 4 entries.*got 3"):
        hp.importance = torch.ones(3)
    hp.importance = torch.arange(4, dtype=torch.float64).view(2, 2)
    assert hp.importance is not None
    assert hp.importance.dtype == torch.float32
    assert hp.importance.shape == (4,)
    hp.importance = None
    assert hp.importance is None


# -- merging ------------------------------------------------------------------------------------
def test_merge_intersects_choices_and_sums_importance() -> None:
    a = Hparam([2, 4, 6], original=8, name="conv.out")
    b = Hparam([4, 6, 7], original=8, name="bn.num_features")
    a.importance = torch.arange(8.0)
    b.importance = torch.ones(8)
    m = a.merge(b)
    assert m.choices == (4, 6, 8)
    assert m.name == "conv.out"
    assert m.importance is not None
    assert torch.equal(m.importance, torch.arange(8.0) + 1)
    assert m is not a
    assert m is not b
    one_sided = Hparam([4], original=8, name="").merge(b)
    assert one_sided.name == "bn.num_features"
    assert one_sided.importance is not None
    assert torch.equal(one_sided.importance, torch.ones(8))
    assert Hparam([4], original=8).merge(Hparam([2], original=8)).importance is None


def test_incompatible_merge_names_both() -> None:
    a = Hparam([4], original=8, name="conv1.out_channels")
    b = Hparam([4], original=16, name="conv2.out_channels")
    with pytest.raises(
        HparamError, match=r"conv1\.out_channels \(size 8\) with conv2\.out_channels \(size 16\)"
    ):
        a.merge(b)


# -- versions -----------------------------------------------------------------------------------
def test_version_changes_exactly_when_the_selection_may_change() -> None:
    hp = Hparam([2, 4])
    v0 = hp.version()
    assert v0[0] == id(hp)
    hp.active = 4  # same value: no change
    assert hp.version() == v0
    hp.active = 2
    v1 = hp.version()
    assert v1 != v0
    hp.enforce_order([3, 2, 1, 0])
    v2 = hp.version()
    assert v2 != v1
    assert hp.active_slice.tolist() == [3, 2]
    hp.reset_order()
    assert hp.version() != v2
    assert hp.active_slice == slice(0, 2)
    v3 = hp.version()
    hp.restrict_choices([4])  # active 2 dropped -> back to the original
    assert hp.version() != v3
    assert Hparam([2]).version() != Hparam([2]).version()  # distinct objects never collide


# -- ConcatDim / RepeatDim ----------------------------------------------------------------------
def test_concat_dim_offsets_each_part() -> None:
    a, b = Hparam([2, 4], name="a"), Hparam([3, 6], name="b")
    cat = ConcatDim([a, b])
    assert isinstance(cat, DimSource)
    assert cat.full == 10
    assert cat.active_index() == slice(0, 10)
    b.active = 3
    assert cat.active_size() == 7
    assert _positions(cat.active_index(), 10) == [0, 1, 2, 3, 4, 5, 6]
    a.active = 2
    assert cat.active_index().tolist() == [0, 1, 4, 5, 6]
    a.enforce_order([3, 0, 1, 2])
    b.enforce_order([5, 4, 3, 2, 1, 0])
    assert cat.active_index().tolist() == [3, 0, 9, 8, 7]
    assert cat.hparams() == [a, b]
    assert cat.version() == a.version() + b.version()
    with pytest.raises(HparamError, match="at least one part"):
        ConcatDim([])


def test_repeat_dim_expands_each_channel() -> None:
    hp = Hparam([1, 2, 3], name="conv.out")
    rep = RepeatDim(hp, inner=4)
    assert isinstance(rep, DimSource)
    assert (rep.full, rep.active_size()) == (12, 12)
    assert rep.active_index() == slice(0, 12)
    hp.active = 2
    assert rep.active_index() == slice(0, 8)
    hp.enforce_order([2, 0, 1])
    assert rep.active_index().tolist() == [8, 9, 10, 11, 0, 1, 2, 3]
    assert rep.hparams() == [hp]
    assert rep.version() == hp.version()
    with pytest.raises(HparamError, match="inner >= 1, got 0"):
        RepeatDim(hp, 0)


def test_repeat_of_concat() -> None:
    a, b = Hparam([1, 2]), Hparam([1, 2])
    rep = RepeatDim(ConcatDim([a, b]), inner=2)
    b.active = 1
    assert rep.active_index().tolist() == [0, 1, 2, 3, 4, 5]
    a.active = 1
    assert rep.active_index().tolist() == [0, 1, 4, 5]


def test_index_size() -> None:
    assert index_size(slice(0, 3), 10) == 3
    assert index_size(slice(None), 7) == 7
    assert index_size(torch.tensor([4, 1]), 10) == 2


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    data=st.data(),
    inner=st.integers(1, 3),
)
def test_property_concat_and_repeat_match_a_manual_gather(
    sizes: list[int], data: st.DataObject, inner: int
) -> None:
    parts = [Hparam(range(1, n + 1)) for n in sizes]
    expected: list[int] = []
    offset = 0
    for hp in parts:
        n = hp.original
        order = data.draw(st.permutations(list(range(n))))
        hp.enforce_order(order)
        hp.active = data.draw(st.integers(1, n))
        expected += [offset + i for i in order[: hp.active]]
        offset += n
    cat = ConcatDim(parts)
    assert _positions(cat.active_index(), cat.full) == expected
    assert cat.active_size() == len(expected)
    rep = RepeatDim(cat, inner)
    assert _positions(rep.active_index(), rep.full) == [
        e * inner + j for e in expected for j in range(inner)
    ]


def test_repr() -> None:
    hp = Hparam([2, 4], name="fc.out_features")
    assert repr(hp) == "Hparam('fc.out_features', active=4, original=4, choices=[2, 4])"
    assert (
        repr(RepeatDim(Hparam([1]), 2))
        == "RepeatDim(Hparam(active=1, original=1, choices=[1]), inner=2)"
    )
