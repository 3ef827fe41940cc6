"""BaseSearcher/IterativeSearcher: config checks, the scorer they build, checkpoints and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nasviz.errors import SearchError
from nasviz.search.base import IterativeSearcher
from nasviz.search.checkpoint import load_search_state
from nasviz.search.events import SearchEvent
from nasviz.search.scoring import Evaluator, FuncScorer
from nasviz.testing import TinyMLP

C = {"flops": "100%"}  # a toy search checks no constraint; the searcher still parses them


class CountingSearcher(IterativeSearcher):
    """A toy search: step i 'samples' candidate i and scores it; the best is the highest score.

    ``stop_after`` raises after that many steps (an interrupted search).
    """

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.stop_after = stop_after
        self.sampled: list[int] = []

    def sample(self) -> dict[str, Any]:
        if self.stop_after is not None and len(self.sampled) == self.stop_after:
            raise KeyboardInterrupt
        self.sampled.append(self.iter_num)
        score = self.eval_score(f"step {self.iter_num}")
        if self.best["score"] is None or score > self.best["score"]:
            self.best = {"config": {"step": self.iter_num}, "score": score}
        return {"step": self.iter_num}


def _score(model: nn.Module) -> float:  # the scores rise then fall: the best is step 2
    calls = getattr(model, "_calls", 0)
    model._calls = calls + 1  # type: ignore[assignment]
    return float(-((calls - 2) ** 2))


def test_unknown_config_key_is_refused_by_name() -> None:
    with pytest.raises(SearchError, match=r"unknown search config key\(s\) \['scor_func'\]"):
        CountingSearcher().search(TinyMLP(), C, config={"scor_func": _score})


def test_score_func_must_be_callable() -> None:
    with pytest.raises(SearchError, match=r"config\['score_func'\] must be a callable"):
        CountingSearcher().search(TinyMLP(), C, config={"score_func": 3})


def test_evaluator_only_keys_without_the_evaluator_form_are_refused() -> None:
    with pytest.raises(SearchError, match=r"\['cache_bytes'\] only apply to the evaluator form"):
        CountingSearcher().search(TinyMLP(), C, config={"score_func": _score, "cache_bytes": 0})


def test_the_config_picks_the_scorer() -> None:
    data = [(torch.randn(4, 8), torch.randint(0, 4, (4,)))]
    s = CountingSearcher()
    s.search(TinyMLP(), C, config={"score_func": _score, "iterations": 1})
    assert isinstance(s.scorer, FuncScorer)
    s = CountingSearcher()
    state = s.search(TinyMLP(), C, config={"score_loader": data, "metric": "accuracy",
                                            "iterations": 1})  # fmt: skip
    assert isinstance(s.scorer, Evaluator)
    assert state["evaluator"]["metric"] == "accuracy"  # the scorer's own state entry


def test_runs_n_steps_and_checkpoints_each(tmp_path: Path) -> None:
    ckpt = tmp_path / "sub" / "search.pt"
    events: list[SearchEvent] = []
    s = CountingSearcher()
    cfg = {"score_func": _score, "iterations": 5, "checkpoint": str(ckpt),
           "callbacks": [events.append]}  # fmt: skip
    state = s.search(TinyMLP(), C, config=cfg)
    assert s.sampled == [0, 1, 2, 3, 4]
    assert state["iter_num"] == 5
    assert state["best"] == {"config": {"step": 2}, "score": 0.0}
    saved = load_search_state(ckpt)
    assert saved["iter_num"] == 5 and saved["best"] == state["best"]


def test_an_interrupted_search_resumes_where_it_stopped(tmp_path: Path) -> None:
    ckpt = tmp_path / "search.pt"
    cfg = {"score_func": _score, "iterations": 6, "checkpoint": str(ckpt)}
    torch.manual_seed(0)  # the same weights both times: the checkpoint's fingerprint matches
    with pytest.raises(KeyboardInterrupt):
        CountingSearcher(stop_after=3).search(TinyMLP(), C, config=cfg)
    assert torch.load(ckpt, weights_only=True)["iter_num"] == 3
    again = CountingSearcher()
    torch.manual_seed(0)
    state = again.search(TinyMLP(), C, config=cfg)
    assert again.sampled == [3, 4, 5]  # only the steps not done
    assert state["iter_num"] == 6


def test_an_unreadable_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "search.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(SearchError, match="could not be read"):
        CountingSearcher().search(TinyMLP(), C, config={"score_func": _score,
                                                         "checkpoint": str(ckpt)})  # fmt: skip


def test_a_nan_score_names_the_step() -> None:
    with pytest.raises(SearchError, match="score_func returned nan for step 0; a score must be"):
        CountingSearcher().search(TinyMLP(), C, config={"score_func": lambda m: float("nan")})
