"""nasviz.testing: the tiny MLP's hparams and its known score."""

from __future__ import annotations

import pytest

import nasviz as nv
from nasviz.testing import FC1, FC2, KNOWN_DROPS, known_score, searchable_mlp


def test_searchable_mlp_has_the_documented_hparams() -> None:
    model, x = searchable_mlp()
    hps = nv.search_space(model).hparams
    assert list(hps) == [FC1, FC2]
    assert all(hp.choices == (4, 8, 12, 16) for hp in hps.values())
    assert model(x).shape == (2, 4)


@pytest.mark.parametrize(("w1", "w2"), [(16, 16), (8, 16), (12, 4), (4, 8)])
def test_known_score_is_additive_in_the_drops(w1: int, w2: int) -> None:
    model, _ = searchable_mlp()
    nv.select(model, {FC1: w1, FC2: w2})
    assert known_score(model) == pytest.approx(1 - KNOWN_DROPS[FC1][w1] - KNOWN_DROPS[FC2][w2])
