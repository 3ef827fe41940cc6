"""Fault test of ``nv.prune`` (issue #15, item 6): a forked child runs a checkpointed prune and
is killed with SIGKILL at random moments, over and over on one checkpoint path; the checkpoint is
always absent or a complete, loadable search state, the dead child's lock is taken over, and a
final run resumes to the same subnet as an uninterrupted search.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from torch import nn

import nasviz as nv
from nasviz.search.checkpoint import load_search_state
from nasviz.testing import known_score, searchable_mlp

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _slow_score(model: nn.Module) -> float:
    time.sleep(0.02)  # so that kills land during the map, the bisection and the candidates
    return known_score(model)


def _prune(ckpt: Path | None) -> dict:
    model, x = searchable_mlp()
    config = {"score_func": _slow_score, "checkpoint": None if ckpt is None else str(ckpt)}
    _, state = nv.prune(model, constraints={"flops": "60%"}, dummy_input=x, config=config)
    return state


def _pruning_child(ckpt: Path) -> int:
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            _prune(ckpt)
        finally:
            os._exit(0)
    return pid


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_9_during_prune_keeps_a_loadable_checkpoint_that_resumes(tmp_path: Path) -> None:
    reference = _prune(None)
    ckpt = tmp_path / "search.pt"
    lock = Path(str(ckpt) + ".lock")
    rng = random.Random(15)
    killed: list[str] = []
    for _ in range(8):
        pid = _pruning_child(ckpt)
        killed.append(str(pid))
        time.sleep(rng.uniform(0.05, 0.5))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if ckpt.exists():
            state = load_search_state(ckpt)  # complete and checked, never half written
            assert isinstance(state["sensitivity_map"], dict)
        if lock.exists():  # a killed child's lock (stale), complete
            assert lock.read_text() in killed
    assert ckpt.exists()
    resumed = _prune(ckpt)  # takes over the stale lock, resumes from the file
    assert resumed["best"]["config"] == reference["best"]["config"]
    assert resumed["sensitivity_map"] == reference["sensitivity_map"]
    assert resumed["original_score"] == reference["original_score"]
    assert not lock.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["search.pt"]  # no temp or lock file left
