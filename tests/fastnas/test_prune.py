"""``nv.prune``: its guards, converting on the way, and the searcher of the mode it is given."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import nasviz as nv
from nasviz.errors import ApplyModeError, ConstraintError
from nasviz.testing import FC1, FC2, KNOWN_DROPS, TinyMLP, known_score, searchable_mlp

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

LINEAR = {"nn.Linear": {"feature_divisor": 4, "features_ratio": [0.25, 0.5, 0.75, 1.0]}}


@pytest.mark.parametrize("constraints", [None, {}])
def test_missing_constraints_raise_a_constraint_error(constraints: Any) -> None:
    model, x = searchable_mlp()
    with pytest.raises(ConstraintError, match=r"prune needs constraints, got .*'flops': '60%'"):
        nv.prune(model, constraints=constraints, dummy_input=x)


def test_missing_dummy_input_raises_a_constraint_error() -> None:
    model, _ = searchable_mlp()
    with pytest.raises(ConstraintError, match="prune needs dummy_input"):
        nv.prune(model, constraints={"flops": "60%"})


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("fastnass", "unknown mode 'fastnass'. Did you mean 'fastnas'"),
        ([("fastnas", {}, 1)], r"a mode entry is a \(name, config\) pair"),
        ({"fastnas": {}}, "mode must be a name, a ModeDescriptor, or a list"),
        ([], "prune needs a mode to search with"),
    ],
)
def test_a_bad_mode_is_refused_before_anything_changes(mode: Any, message: str) -> None:
    model = TinyMLP()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ApplyModeError, match=message):
        nv.prune(model, mode=mode, constraints={"flops": "60%"}, dummy_input=torch.zeros(2, 8))
    assert not nv.state.is_converted(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_prune_converts_with_the_given_config_and_meets_the_constraint() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8)
    model = TinyMLP()
    full = nv.profile(model, x).flops
    pruned, state = nv.prune(
        model,
        mode=[("fastnas", LINEAR)],
        constraints={"flops": "60%"},
        dummy_input=x,
        config={"score_func": known_score},
    )
    assert pruned is model
    assert nv.search_space(model).hparams[FC1].choices == (4, 8, 12, 16)
    # the searcher of the 'fastnas' mode ran: its map is the known single-group drops
    expected = {k: {c: d for c, d in v.items() if c != 16} for k, v in KNOWN_DROPS.items()}
    assert state["sensitivity_map"] == {
        k: {c: pytest.approx(d) for c, d in v.items()} for k, v in expected.items()
    }
    assert state["best"]["config"] == nv.get_subnet_config(model)
    assert nv.profile(nv.export(model), x).flops <= 0.6 * full


def test_an_already_converted_model_is_searched_as_it_is() -> None:
    model, x = searchable_mlp()
    space = nv.search_space(model)
    _, state = nv.prune(
        model, constraints={"params": 250}, dummy_input=x, config={"score_func": known_score}
    )
    assert nv.search_space(model).hparams == space.hparams  # not converted a second time
    assert set(state["best"]["config"]) == {FC1, FC2}
    assert state["best"]["params"] <= 250
