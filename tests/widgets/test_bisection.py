"""BisectionAnimation without a browser: feed events, press buttons, read FigureWidget data."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from _search_cases import CANDIDATES, FINAL, GROW, STARTED, STEPS, run_mlp_search, synthetic_events

from nasviz.errors import NasvizError
from nasviz.search.events import (
    BisectionStep,
    CandidateScored,
    FinalScore,
    GrowStep,
    SearchHistory,
    SearchStarted,
)
from nasviz.widgets._base import COLORS
from nasviz.widgets.bisection import (
    BISECT,
    CAND,
    HI,
    LO,
    MID,
    BisectionAnimation,
)
from nasviz.widgets.bisection import (
    FINAL as FINAL_TRACE,
)
from nasviz.widgets.bisection import (
    GROW as GROW_TRACE,
)

GREEN, RED = COLORS["feasible"], COLORS["infeasible"]


def _shape(anim: BisectionAnimation, name: str):
    found = [s for s in anim.fig.layout.shapes if s.name == name]
    return found[0] if found else None


def _xy(anim: BisectionAnimation, idx: int) -> tuple[list, list]:
    trace = anim.fig.data[idx]
    return list(trace.x or ()), list(trace.y or ())


def test_replay_shows_every_step_against_the_limit() -> None:
    anim = BisectionAnimation().replay(synthetic_events())
    # timeline: 3 bisection steps, 1 grow step, 2 scored candidates, the final choice
    assert anim.n_frames == 7 == anim.play.max == anim.slider.max
    assert anim.frame == 7  # a replay ends at the last frame
    assert _xy(anim, MID) == ([0, 1, 2], [0.15, 0.075, 0.1125])
    assert _xy(anim, LO) == ([0, 1, 2], [0.0, 0.0, 0.075])
    assert _xy(anim, HI) == ([0, 1, 2], [0.3, 0.15, 0.15])
    assert list(anim.fig.data[MID].marker.color) == [GREEN, RED, GREEN]
    assert _xy(anim, BISECT) == ([0, 1, 2], [400.0, 700.0, 550.0])
    assert list(anim.fig.data[BISECT].marker.color) == [GREEN, RED, GREEN]
    assert _xy(anim, GROW_TRACE) == ([3], [590.0])
    assert _xy(anim, CAND) == ([4, 5], [590.0, 580.0])
    assert list(anim.fig.data[CAND].texttemplate) == ["0.8800", "0.8600"]
    assert _xy(anim, FINAL_TRACE) == ([6], [590.0])
    limit = _shape(anim, "limit")
    assert (limit.y0, limit.y1, limit.yref) == (600.0, 600.0, "y2")
    assert any(a.text == "limit 600 FLOPs" for a in anim.fig.layout.annotations)
    assert _shape(anim, "frame").x0 == 6
    assert anim.final_config == {"a": 36, "b": 16}
    assert anim.steps == STEPS and anim.limit == 600.0
    assert "best score 0.8800" in anim.status.value


def test_hover_explains_each_point() -> None:
    anim = BisectionAnimation().replay(synthetic_events())
    step1 = anim.fig.data[BISECT].text[1]
    assert "bisection step 1" in step1 and "infeasible" in step1
    assert "flops: 700 FLOPs (limit 600 FLOPs: too big)" in step1
    assert "a=36, b=8" in step1
    assert "grow a</b>: 24 -> 36" in anim.fig.data[GROW_TRACE].text[0]
    assert "real score 0.8600" in anim.fig.data[CAND].text[1]
    assert "score 0.8800 (original 0.9000)" in anim.fig.data[FINAL_TRACE].text[0]


def test_buttons_and_slider_move_the_frame() -> None:
    anim = BisectionAnimation().replay(synthetic_events())
    anim.first_button.click()
    assert anim.frame == 0 and anim.play.value == 0
    assert all(not (t.x or ()) for t in anim.fig.data)
    assert _shape(anim, "frame") is None and anim.detail.value == "frame 0"
    anim.prev_button.click()  # stays at 0
    assert anim.frame == 0
    anim.next_button.click()
    assert anim.frame == 1
    assert _xy(anim, MID) == ([0], [0.15]) and _xy(anim, BISECT) == ([0], [400.0])
    # the axes keep the range of the whole search: points do not jump while playing
    assert list(anim.fig.layout.xaxis.range) == [-0.5, 6.5]
    assert list(anim.fig.layout.yaxis2.range) == pytest.approx([0.0, 770.0])
    assert _shape(anim, "frame").x0 == 0
    assert "bisection step 0" in anim.detail.value
    anim.next_button.click()
    anim.prev_button.click()
    assert anim.frame == 1
    anim.play.value = 4  # the Play widget drives the slider (linked in the kernel)
    assert anim.slider.value == 4
    assert _xy(anim, GROW_TRACE) == ([3], [590.0]) and _xy(anim, CAND) == ([], [])
    anim.slider.value = 2
    assert anim.play.value == 2 and _xy(anim, MID)[0] == [0, 1]
    anim.last_button.click()
    assert anim.frame == 7
    anim.next_button.click()  # stays at the end
    assert anim.frame == 7
    anim.frame = 5
    assert anim.slider.value == 5 and _xy(anim, CAND) == ([4], [590.0])


def test_live_follows_the_newest_step_unless_the_user_looks_back() -> None:
    anim = BisectionAnimation()
    anim(STARTED)
    assert anim.n_frames == 0 and "computing the sensitivity map" in anim.status.value
    for k, step in enumerate(STEPS[:2], start=1):
        anim(step)
        assert anim.frame == k == anim.slider.max == anim.play.max
        assert len(anim.fig.data[MID].x) == k
    anim.frame = 1  # the user looks back
    anim(STEPS[2])
    anim(GROW)
    assert anim.slider.max == 4 and anim.frame == 1
    assert len(anim.fig.data[MID].x) == 1
    anim.last_button.click()  # back at the end: follow again
    for event in (*CANDIDATES, FINAL):
        anim(event)
    assert anim.frame == anim.n_frames == 7


def test_metric_toggle_and_params_constraint() -> None:
    anim = BisectionAnimation().replay(synthetic_events())
    anim.metric_toggle.value = "params"
    assert _xy(anim, BISECT)[1] == [40.0, 70.0, 55.0]
    assert _shape(anim, "limit") is None and anim.limit is None  # params are not constrained
    assert anim.fig.layout.yaxis2.title.text == "params"
    # a params-only search shows params by default
    started = SearchStarted(full_flops=1.0, full_params=100.0, limits={"params": 60.0}, hparams={})
    anim = BisectionAnimation().replay([started, *STEPS])
    assert anim.metric == "params" and _shape(anim, "limit").y0 == 60.0
    assert BisectionAnimation(metric="flops").replay([started]).metric == "flops"
    with pytest.raises(NasvizError, match="metric='energy'"):
        BisectionAnimation(metric="energy")  # type: ignore[arg-type]


def test_new_search_resets() -> None:
    anim = BisectionAnimation().replay(synthetic_events())
    anim(STARTED)
    assert anim.n_frames == 0 == anim.frame == anim.slider.max
    assert all(not (t.x or ()) for t in anim.fig.data) and anim.final_config is None


def test_from_state_checkpoint_and_history(tmp_path: Path) -> None:
    events = synthetic_events()
    state = {"history": SearchHistory(events).to_records()}
    path = tmp_path / "s.pt"
    torch.save(state, path)
    live = BisectionAnimation().replay(events)
    for anim in (
        BisectionAnimation.from_state(state),
        BisectionAnimation.from_checkpoint(path),
        BisectionAnimation.from_history(SearchHistory(events)),
    ):
        assert anim.n_frames == live.n_frames
        for a, b in zip(anim.fig.data, live.fig.data, strict=True):
            assert (a.x, a.y, a.text) == (b.x, b.y, b.text)


def test_events_from_a_search_thread_while_the_user_steps() -> None:
    anim = BisectionAnimation()
    anim(STARTED)
    many = [
        BisectionStep(
            step=i, lo=0.0, hi=1.0, mid=0.5, flops=float(i), params=1.0, feasible=i % 2 == 0
        )
        for i in range(60)
    ]
    worker = threading.Thread(target=lambda: [anim(e) for e in many])
    worker.start()
    while worker.is_alive():
        anim.prev_button.click()
        anim.last_button.click()
    worker.join()
    anim.last_button.click()
    assert anim.n_frames == 60 == anim.slider.max
    assert len(anim.fig.data[BISECT].x) == 60


@pytest.fixture(scope="module")
def real_search(tmp_path_factory: pytest.TempPathFactory) -> dict:
    anim = BisectionAnimation()
    frames_seen: list[int] = []

    def probe(event: object) -> None:  # runs after the animation, inside the search
        if isinstance(event, (BisectionStep, GrowStep, CandidateScored, FinalScore)):
            frames_seen.append(anim.slider.max)

    ckpt = tmp_path_factory.mktemp("search") / "search.pt"
    state, events = run_mlp_search([anim.callback, probe], checkpoint=ckpt)
    return {"anim": anim, "state": state, "events": events, "ckpt": ckpt, "seen": frames_seen}


def test_real_search_animation(real_search: dict) -> None:
    anim, events, state = real_search["anim"], real_search["events"], real_search["state"]
    steps = [e for e in events if isinstance(e, BisectionStep)]
    n = sum(isinstance(e, (BisectionStep, GrowStep, CandidateScored, FinalScore)) for e in events)
    assert anim.n_frames == n == anim.slider.max == anim.play.max
    assert len(anim.fig.data[BISECT].x) == len(steps) == state["iter_num"]
    # one more frame per timeline event, while the search ran
    assert real_search["seen"] == list(range(1, n + 1))
    limit = next(e for e in events if isinstance(e, SearchStarted)).limits["flops"]
    assert _shape(anim, "limit").y0 == pytest.approx(limit)
    expected = [GREEN if s.flops <= limit else RED for s in steps]
    assert list(anim.fig.data[BISECT].marker.color) == expected
    assert anim.final_config == state["best"]["config"]
    assert anim.fig.data[FINAL_TRACE].y[0] == pytest.approx(state["best"]["flops"])


def test_real_search_replays_from_state_and_checkpoint(real_search: dict) -> None:
    live = real_search["anim"]
    for anim in (
        BisectionAnimation.from_state(real_search["state"]),
        BisectionAnimation.from_checkpoint(real_search["ckpt"]),
    ):
        assert anim.n_frames == live.n_frames
        for a, b in zip(anim.fig.data, live.fig.data, strict=True):
            assert (a.x, a.y, a.text) == (b.x, b.y, b.text)
        anim.first_button.click()
        anim.next_button.click()
        assert len(anim.fig.data[MID].x) == 1
