"""SensitivityHeatmap without a browser: feed search events, read FigureWidget data."""

from __future__ import annotations

import itertools
import math
import threading
from pathlib import Path

import pytest
import torch

from nasviz.errors import NasvizError
from nasviz.search.events import MapEntry, MapFinished, MapStarted, SearchHistory, SearchStarted
from nasviz.widgets.heatmap import SensitivityHeatmap
from tests.widgets._search_cases import (
    DROPS,
    ENTRIES,
    STARTED,
    A,
    B,
    run_mlp_search,
    synthetic_events,
)


def _same(z1: list, z2: list) -> bool:
    """Equal grids where None == None (empty cells) and floats match closely."""
    flat1 = [v for row in z1 for v in row]
    flat2 = [v for row in z2 for v in row]
    return len(z1) == len(z2) and all(
        (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b))
        for a, b in zip(flat1, flat2, strict=True)
    )


def _fig_z(hm: SensitivityHeatmap) -> list[list[float | None]]:
    return [[None if v is None else float(v) for v in row] for row in hm.fig.data[0].z]


def test_ratio_columns_place_each_choice_at_its_kept_fraction() -> None:
    hm = SensitivityHeatmap().replay(synthetic_events())
    trace = hm.fig.data[0]
    assert list(trace.y) == ["a", "b"]
    # a: 12/48, 24/48, 36/48; b: 8/16 -> the 25%, 50%, 75% columns; full widths are not columns
    assert list(trace.x) == ["25%", "50%", "75%"]
    assert _same(_fig_z(hm), [[0.30, 0.05, 0.01], [None, 0.02, None]])
    assert hm.n_cells == len(ENTRIES) == 4
    assert hm.sensitivity_map == {"a": {36: 0.01, 24: 0.05, 12: 0.30}, "b": {8: 0.02}}
    assert trace.zmid == 0
    assert "4/4 cells filled" in repr(hm)


def test_width_columns_use_absolute_channel_counts() -> None:
    hm = SensitivityHeatmap(columns="width").replay(synthetic_events())
    assert list(hm.fig.data[0].x) == ["8", "12", "24", "36"]
    assert _same(_fig_z(hm), [[None, 0.30, 0.05, 0.01], [0.02, None, None, None]])


def test_hover_names_group_width_kept_channels_score_and_flops_saved() -> None:
    hm = SensitivityHeatmap().replay(synthetic_events())
    text = hm.fig.data[0].text
    cell = text[0][1]  # a at 24 of 48
    assert "<b>a</b>" in cell
    assert "width 24 (50.0% kept)" in cell
    assert "kept channels 24/48" in cell
    assert "score 0.8500 (drop +0.0500)" in cell
    assert "FLOPs 800 FLOPs, saves 200 FLOPs (20.0%)" in cell
    assert "from a checkpoint" in text[1][1]  # b=8 was skipped (loaded from a checkpoint)
    assert text[1][0] == ""  # no such width for b
    assert hm.fig.data[0].hovertemplate == "%{text}<extra></extra>"


def test_fills_in_live_with_progress() -> None:
    hm = SensitivityHeatmap()
    hm(STARTED)
    assert hm.n_cells == 0 and _same(_fig_z(hm), [[None] * 3, [None] * 3])
    hm(MapStarted(original_score=0.9, total=4, done=0))
    assert hm.progress.total == 4 and hm.progress.value == 0
    for k, entry in enumerate(ENTRIES, start=1):
        hm(entry)
        assert hm.n_cells == k
        assert sum(v is not None for row in hm.fig.data[0].z for v in row) == k
        assert hm.progress.value == k
        assert f"{entry.hparam}={entry.choice}" in hm.progress.label.value
    hm(MapFinished(entries=4, n_scored=3, seconds=1.5))
    assert hm.progress.bar.bar_style == "success"
    assert "4 entries (3 scored, 1 from a checkpoint) in 1.5 s" in hm.progress.label.value


def test_a_new_search_resets_the_map() -> None:
    hm = SensitivityHeatmap().replay(synthetic_events())
    hm(SearchStarted(full_flops=10.0, full_params=1.0, limits={}, hparams={"c": [2, 4]}))
    assert hm.groups == ["c"] and hm.n_cells == 0 and hm.column_labels == ["50%"]


def test_entry_for_an_unannounced_group_is_reported_not_drawn() -> None:
    hm = SensitivityHeatmap().replay([STARTED, ENTRIES[0]])
    stray = MapEntry(
        hparam="zz", choice=3, score=0.5, drop=0.4, flops=1.0, params=1.0, index=1, total=2
    )
    hm(stray)
    assert hm.n_cells == 1
    assert "zz was not announced" in hm.progress.label.value


def test_grid_refines_when_choices_are_closer_than_5_percent() -> None:
    # 40 wide, every width 1..39: ratios 2.5% apart -> the 2.5% grid
    hm = SensitivityHeatmap()
    hm(SearchStarted(full_flops=1.0, full_params=1.0, limits={}, hparams={"g": list(range(1, 41))}))
    assert hm.column_labels[:3] == ["2.5%", "5%", "7.5%"] and len(hm.column_labels) == 39
    # 200 wide, every width: 0.5% apart -> no grid fits, one column per exact ratio
    hm(
        SearchStarted(
            full_flops=1.0, full_params=1.0, limits={}, hparams={"g": list(range(1, 201))}
        )
    )
    assert hm.column_labels[:2] == ["0.5%", "1%"] and len(hm.column_labels) == 199


def test_bad_columns_argument_is_refused() -> None:
    with pytest.raises(NasvizError, match="columns='percent'"):
        SensitivityHeatmap(columns="percent")  # type: ignore[arg-type]


def test_from_state_and_checkpoint_without_a_model(tmp_path: Path) -> None:
    events = synthetic_events()
    state = {
        "sensitivity_map": {},
        "original_score": 0.9,
        "history": SearchHistory(events).to_records(),
    }
    live = SensitivityHeatmap().replay(events)
    path = tmp_path / "search.pt"
    torch.save(state, path)
    for hm in (
        SensitivityHeatmap.from_state(state),
        SensitivityHeatmap.from_checkpoint(path),
        SensitivityHeatmap.from_history(SearchHistory(events)),
    ):
        assert _same(_fig_z(hm), _fig_z(live))
        assert list(hm.fig.data[0].text[0]) == list(live.fig.data[0].text[0])


def test_from_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(NasvizError, match="does not exist"):
        SensitivityHeatmap.from_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"sensitivity_map": {}}, bad)
    with pytest.raises(NasvizError, match="no 'history'"):
        SensitivityHeatmap.from_checkpoint(bad)


def test_events_from_another_thread() -> None:
    hm = SensitivityHeatmap()
    hm(STARTED)
    worker = threading.Thread(target=lambda: [hm(e) for e in ENTRIES])  # type: ignore[func-returns-value]  # the list only drives the calls
    worker.start()
    for _ in range(50):  # the kernel thread reads while the search thread writes
        assert 0 <= hm.n_cells <= 4
    worker.join()
    assert hm.n_cells == 4


@pytest.fixture(scope="module")
def real_search(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real search with the heatmap attached; counts what reached the front end."""
    hm = SensitivityHeatmap()
    sent: list[str] = []  # messages the FigureWidget sent towards the front end
    hm.fig.observe(
        lambda change: sent.append(change["name"]) if change["new"] is not None else None,
        names=["_py2js_update", "_py2js_restyle", "_py2js_relayout"],
    )
    during: list[tuple[int, int]] = []  # (cells drawn, messages sent) at each map entry

    def probe(event: object) -> None:  # runs after the heatmap, inside the search
        if isinstance(event, MapEntry):
            during.append((hm.n_cells, len(sent)))

    ckpt = tmp_path_factory.mktemp("search") / "search.pt"
    state, events = run_mlp_search([hm.callback, probe], checkpoint=ckpt)
    return {"hm": hm, "during": during, "state": state, "events": events, "ckpt": ckpt}


def test_real_search_heatmap_shows_the_known_drops(real_search: dict) -> None:
    hm = real_search["hm"]
    assert hm.groups == [A, B]
    assert hm.column_labels == ["25%", "50%", "75%"]
    expected = [[DROPS[g][4], DROPS[g][8], DROPS[g][12]] for g in (A, B)]
    assert _same(_fig_z(hm), expected)
    n_entries = sum(isinstance(e, MapEntry) for e in real_search["events"])
    assert hm.n_cells == n_entries == 6
    assert hm.sensitivity_map == real_search["state"]["sensitivity_map"]
    assert "kept channels 8/16" in hm.fig.data[0].text[0][1]


def test_real_search_fills_the_heatmap_while_it_runs(real_search: dict) -> None:
    during = real_search["during"]
    # one more cell after each map entry, and each one sent to the front end right away
    assert [cells for cells, _ in during] == [1, 2, 3, 4, 5, 6]
    sent = [n for _, n in during]
    assert all(b > a for a, b in itertools.pairwise(sent))


def test_real_search_checkpoint_gives_the_live_picture(real_search: dict) -> None:
    live = real_search["hm"]
    for hm in (
        SensitivityHeatmap.from_checkpoint(real_search["ckpt"]),
        SensitivityHeatmap.from_state(real_search["state"]),
    ):
        assert _same(_fig_z(hm), _fig_z(live))
        assert hm.fig.data[0].text == live.fig.data[0].text
        assert hm.progress.value == live.progress.value == 6


def test_checkpoint_of_an_interrupted_map_shows_what_was_scored(tmp_path: Path) -> None:
    events = synthetic_events()[:4]  # started, map started, two entries: then the kernel died
    path = tmp_path / "partial.pt"
    torch.save({"history": SearchHistory(events).to_records()}, path)
    hm = SensitivityHeatmap.from_checkpoint(path)
    assert _same(_fig_z(hm), [[None, 0.05, 0.01], [None, None, None]])
    assert (hm.progress.value, hm.progress.total) == (2, 4)
    assert hm.progress.bar.bar_style == "info"  # not finished
