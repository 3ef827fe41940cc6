"""The sensitivity map as data: predicted drop (additivity), the monotone map, pins, the file."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nasviz as nv
from nasviz.errors import HparamError, SearchError
from nasviz.fastnas import (
    SensitivityMapFile,
    check_pins,
    config_at_drop,
    drop_levels,
    load_sensitivity_map,
    monotone_map,
    predict_drop,
    save_sensitivity_map,
)
from nasviz.testing import FC1, FC2, KNOWN_DROPS, known_score, searchable_mlp

SMAP = {n: {c: d for c, d in v.items() if c != 16} for n, v in KNOWN_DROPS.items()}
CHOICES = {FC1: [4, 8, 12, 16], FC2: [4, 8, 12, 16]}

drops = st.floats(-0.2, 1.0, allow_nan=False)
maps = st.fixed_dictionaries(
    {FC1: st.fixed_dictionaries({4: drops, 8: drops, 12: drops}),
     FC2: st.fixed_dictionaries({4: drops, 8: drops, 12: drops})}
)  # fmt: skip


def test_predicted_drop_known_answer() -> None:
    assert predict_drop(SMAP, {FC1: 8, FC2: 12}) == pytest.approx(0.07)
    assert predict_drop(SMAP, {FC1: 16, FC2: 16}) == 0.0
    assert predict_drop(SMAP, {FC1: 4}) == pytest.approx(0.30)


def test_predicted_drop_is_the_tiny_models_measured_drop() -> None:
    # the tiny model's score is additive, so the prediction is exact for every subnet
    model, _ = searchable_mlp()
    for a, b in itertools.product(CHOICES[FC1], CHOICES[FC2]):
        nv.select(model, {FC1: a, FC2: b})
        assert predict_drop(SMAP, {FC1: a, FC2: b}) == pytest.approx(1.0 - known_score(model))


@settings(max_examples=60, deadline=None)
@given(maps, st.sampled_from(CHOICES[FC1]), st.sampled_from(CHOICES[FC2]))
def test_predicted_drop_is_additive(smap: dict, a: int, b: int) -> None:
    both = predict_drop(smap, {FC1: a, FC2: b})
    assert both == pytest.approx(predict_drop(smap, {FC1: a}) + predict_drop(smap, {FC2: b}))
    mono = predict_drop(smap, {FC1: a, FC2: b}, monotone=True)
    assert mono <= both + 1e-12  # the monotone map never raises a drop


def test_predicted_drop_refuses_unknown_groups_and_widths() -> None:
    with pytest.raises(HparamError, match=r"'nope'.*does not hold"):
        predict_drop(SMAP, {"nope": 4})
    with pytest.raises(HparamError, match=r"fc1.out_features: .*no drop for width 6.*\[4, 8, 12\]"):
        predict_drop(SMAP, {FC1: 6})


def test_monotone_map_known_answer() -> None:
    raw = {FC1: {4: 0.01, 8: 0.05, 12: 0.02}}
    assert monotone_map(raw) == {FC1: {4: 0.01, 8: 0.01, 12: 0.01}}
    assert monotone_map(SMAP) == SMAP  # already monotone


@settings(max_examples=60, deadline=None)
@given(maps, st.floats(-0.3, 1.1))
def test_monotone_map_gives_the_searchers_choices(smap: dict, tolerated: float) -> None:
    mono = monotone_map(smap)
    for widths in mono.values():
        ordered = [widths[c] for c in sorted(widths)]
        assert all(x >= y for x, y in itertools.pairwise(ordered))  # wider never drops more
    assert config_at_drop(mono, CHOICES, tolerated) == config_at_drop(smap, CHOICES, tolerated)


def test_pins_are_kept_and_checked() -> None:
    assert config_at_drop(SMAP, CHOICES, 1.0) == {FC1: 4, FC2: 4}
    assert config_at_drop(SMAP, CHOICES, 1.0, pins={FC1: 12}) == {FC1: 12, FC2: 4}
    assert check_pins({FC2: 8}, CHOICES) == {FC2: 8}
    with pytest.raises(HparamError, match=r"pin fc1.out_features=6.*\[4, 8, 12, 16\]"):
        check_pins({FC1: 6}, CHOICES)
    with pytest.raises(HparamError, match=r"pin 'fc9.out_features'.*groups"):
        check_pins({"fc9.out_features": 4}, CHOICES)


def test_map_file_round_trip_from_a_search_state(tmp_path: Path) -> None:
    model, x = searchable_mlp()
    _, state = nv.prune(model, constraints={"flops": "60%"}, dummy_input=x,
                        config={"score_func": known_score})  # fmt: skip
    path = save_sensitivity_map(state, tmp_path / "sub" / "map.json")
    assert [p.name for p in path.parent.iterdir()] == ["map.json"]  # no temp file left
    loaded = load_sensitivity_map(path)
    assert loaded.choices == CHOICES
    assert loaded.original_score == pytest.approx(1.0)
    for name in SMAP:
        assert loaded.sensitivity_map[name] == pytest.approx(SMAP[name])
    assert drop_levels(loaded.sensitivity_map) == drop_levels(state["sensitivity_map"])


def test_map_file_from_a_bare_map(tmp_path: Path) -> None:
    path = save_sensitivity_map(SMAP, tmp_path / "m.json", choices=CHOICES, original_score=0.9)
    assert load_sensitivity_map(path) == SensitivityMapFile(SMAP, CHOICES, 0.9)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(format="other"), "field 'format' is 'other'"),
        (lambda d: d.update(version=99), "field 'version' is 99"),
        (lambda d: d.update(sensitivity_map=[]), "field 'sensitivity_map' is list"),
        (lambda d: d["sensitivity_map"][FC1].update({"4": "x"}),
         r"sensitivity_map\['fc1.out_features'\]\['4'\] is 'x'"),
        (lambda d: d["sensitivity_map"][FC1].update({"five": 0.1}), "has width 'five'"),
        (lambda d: d["choices"].update({FC1: [8, 16]}), r"widths \[4, 12\] not in choices"),
        (lambda d: d.update(original_score=True), "field original_score is True"),
    ],
)  # fmt: skip
def test_bad_map_files_name_the_field(tmp_path: Path, edit: object, match: str) -> None:
    path = save_sensitivity_map(SMAP, tmp_path / "m.json", choices=CHOICES)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(SearchError, match=match):
        load_sensitivity_map(path)


def test_missing_and_broken_map_files(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="does not exist"):
        load_sensitivity_map(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SearchError, match="not readable JSON"):
        load_sensitivity_map(tmp_path / "bad.json")
