"""Issue #15 item 8: a checkpoint that loads but is malformed (wrong types, missing keys,
truncated lists) raises a SearchError naming the file and the field, never a raw
ValueError/TypeError/AttributeError/KeyError.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nasviz as nv
from nasviz.errors import SearchError
from nasviz.search.checkpoint import load_search_state
from nasviz.testing import known_score, searchable_mlp

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

_DAMAGED = "damaged; delete the file or pass another"


@functools.cache
def _valid(tmp: str) -> dict[str, Any]:
    """The raw dict of a valid checkpoint of the searchable TinyMLP (computed once)."""
    path = Path(tmp) / "valid.pt"
    nv.prune(
        searchable_mlp()[0],
        constraints={"flops": "60%"},
        dummy_input=searchable_mlp()[1],
        config={"score_func": known_score, "checkpoint": str(path)},
    )
    return torch.load(path, weights_only=True)


def _paths(d: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into nested dicts and lists (the lists of the history too)."""
    out = []
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else []
    for k, v in items:
        out.append((*prefix, k))
        if prefix[:1] != ("history",) or len(prefix) < 2:
            out.extend(_paths(v, (*prefix, k)))
    return out


_values = st.sampled_from(
    [
        None,
        "x",
        -1,
        0,
        2.5,
        math.inf,
        math.nan,
        True,
        [],
        [1, 2],
        {},
        {"a": 1},
        {3: "b"},
        torch.zeros(2),
    ]
)


def _mutate(raw: dict, path: tuple, how: str, value: Any) -> dict:
    out = copy.deepcopy(raw)
    parent = out
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if how == "delete":
        del parent[key]
    elif how == "truncate" and isinstance(parent[key], (list, dict)):
        items = parent[key]
        parent[key] = items[: len(items) // 2] if isinstance(items, list) else {}
    else:
        parent[key] = value
    return out


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_mutated_checkpoint_resumes_or_raises_a_search_error(
    tmp_path: Path, data: st.DataObject
) -> None:
    raw = _valid(str(tmp_path.parent))
    path = data.draw(st.sampled_from(_paths(raw)), label="field")
    how = data.draw(st.sampled_from(["delete", "truncate", "replace"]), label="how")
    value = data.draw(_values, label="value")
    ckpt = tmp_path / "mutated.pt"
    mutated = _mutate(raw, path, how, value)
    torch.save(mutated, ckpt)
    model, x = searchable_mlp()
    errors = []
    try:
        nv.prune(
            model,
            constraints={"flops": "60%"},
            dummy_input=x,
            config={"score_func": known_score, "checkpoint": str(ckpt)},
        )
    except SearchError as e:  # anything else fails the test
        errors.append(str(e))
    try:
        load_search_state(ckpt)
    except SearchError as e:
        errors.append(str(e))
    assert all(str(ckpt) in e for e in errors)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sensitivity_map", [1, 2], r"field 'sensitivity_map' is malformed \(TypeError"),
        ("sensitivity_map", {"fc1.out_features": {4: "x"}}, r"field 'sensitivity_map'"),
        ("original_score", "high", r"field 'original_score' is malformed"),
        ("history", [{"event": "MapEntry", "hparam": "a"}], r"field 'history'.*record 0"),
        ("history", None, r"field 'history' is malformed"),
    ],
)
def test_a_malformed_field_is_named(tmp_path: Path, field: str, value: Any, message: str) -> None:
    raw = dict(_valid(str(tmp_path.parent)))
    raw[field] = value
    ckpt = tmp_path / "bad.pt"
    torch.save(raw, ckpt)
    model, x = searchable_mlp()
    config = {"score_func": known_score, "checkpoint": str(ckpt)}
    match = rf"{ckpt}.*{message}.*{_DAMAGED}"
    if field == "history":
        with pytest.raises(SearchError, match=match):
            load_search_state(ckpt)
    else:
        with pytest.raises(SearchError, match=match):
            nv.prune(model, constraints={"flops": "60%"}, dummy_input=x, config=config)
