"""Issue #15 cases 2 and 3: a checkpoint is reused only for what it was computed from, a file
that is not a checkpoint is never overwritten, and a lock keeps two processes off one path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from _convnet import convnet, score

import nasviz as nv
from nasviz.errors import SearchError
from nasviz.search.checkpoint import MARKER, CheckpointLock, read_checkpoint
from nasviz.testing import FC1, known_score, searchable_mlp

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _prune(model: torch.nn.Module, x: torch.Tensor, ckpt: Path, **config: Any) -> dict:
    _, state = nv.prune(
        model,
        constraints={"flops": "60%"},
        dummy_input=x,
        config={"score_func": known_score, "checkpoint": str(ckpt), **config},
    )
    return state


def test_a_saved_model_at_the_checkpoint_path_is_refused_and_never_overwritten(
    tmp_path: Path,
) -> None:
    model, x = searchable_mlp()
    target = tmp_path / "model.pt"
    nv.save(model, target)
    before = target.read_bytes()
    with pytest.raises(SearchError, match=r"is not a nasviz search checkpoint.*left untouched"):
        _prune(searchable_mlp()[0], x, target)
    assert target.read_bytes() == before
    nv.restore(nv.testing.TinyMLP(), target)  # still the user's model file


def test_any_torch_dict_without_the_marker_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "weights.pt"
    torch.save({"fc1.weight": torch.ones(3)}, target)
    before = target.read_bytes()
    model, x = searchable_mlp()
    with pytest.raises(SearchError, match="is not a nasviz search checkpoint"):
        _prune(model, x, target)
    assert target.read_bytes() == before


def test_a_checkpoint_without_a_fingerprint_of_the_old_format_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "old.pt"
    torch.save({"sensitivity_map": {}, "original_score": 1.0, "history": []}, target)
    with pytest.raises(SearchError, match="not a nasviz search checkpoint"):
        _prune(*searchable_mlp(), target)


def _finetuned() -> tuple[torch.nn.Module, torch.Tensor]:
    model, x = searchable_mlp()
    with torch.no_grad():
        model.fc1.weight.add_(0.01)
    return model, x


def _other_space() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 8)
    cfg = {"nn.Linear": {"feature_divisor": 8, "features_ratio": [0.5, 1.0]}}
    return nv.convert(nv.testing.TinyMLP(), mode=[("fastnas", cfg)], dummy_input=x), x


@pytest.mark.parametrize(
    ("other", "config", "differs"),
    [
        (_finetuned, {}, r"weights: '[0-9a-f]+' in the file, '[0-9a-f]+' now"),
        (lambda: searchable_mlp(seed=1), {}, r"weights: "),
        (_other_space, {}, r"search_space\.fc1\.out_features: \[4, 8, 12, 16\] in the file"),
        (searchable_mlp, {"seed": 3}, r"seed: 0 in the file, 3 now"),
        (
            searchable_mlp,
            {"data_loader": [torch.randn(2, 8)] * 3, "max_iter_data_loader": 2},
            r"settings\.calibration: None in the file, 'data_loader' now.*max_iter_data_loader",
        ),
    ],
)
def test_a_checkpoint_of_something_else_is_refused_saying_what_differs(
    tmp_path: Path, other: Any, config: dict, differs: str
) -> None:
    ckpt = tmp_path / "search.pt"
    _prune(*searchable_mlp(), ckpt)
    saved = ckpt.read_bytes()
    model, x = other()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SearchError, match=rf"computed from something else.*{differs}.*delete"):
        _prune(model, x, ckpt, **config)
    assert ckpt.read_bytes() == saved  # not overwritten either
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the same model and settings reuse it
    assert _prune(*searchable_mlp(), ckpt)["sensitivity_map"]


def test_the_file_holds_the_marker_and_the_fingerprint(tmp_path: Path) -> None:
    ckpt = tmp_path / "search.pt"
    _prune(*searchable_mlp(), ckpt)
    raw = torch.load(ckpt, weights_only=True)
    assert raw[MARKER] == 1
    fp = raw["fingerprint"]
    assert set(fp) >= {"architecture", "weights", "search_space", "settings", "searcher"}
    assert fp["search_space"][FC1] == [4, 8, 12, 16]
    assert MARKER not in read_checkpoint(ckpt)  # readers get the state only
    assert not Path(str(ckpt) + ".lock").exists()  # released at the end


_HOLDER = """
import sys, time
from nasviz.search.checkpoint import CheckpointLock
lock = CheckpointLock(sys.argv[1]); lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_process_is_refused_while_the_first_holds_the_path(tmp_path: Path) -> None:
    ckpt = tmp_path / "search.pt"
    env = {**os.environ, "PYTHONPATH": str(Path(nv.__file__).parent.parent)}
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(ckpt)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        model, x = searchable_mlp()
        with pytest.raises(SearchError, match=rf"in use by process {child.pid}"):
            _prune(model, x, ckpt)
        assert not ckpt.exists()  # nothing written by the refused search
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # the holder died without releasing: its lock is stale and taken over
    state = _prune(*searchable_mlp(), ckpt)
    assert state["sensitivity_map"] and ckpt.exists()
    assert not Path(str(ckpt) + ".lock").exists()


def test_the_lock_is_exclusive_within_a_process_and_released(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    with (
        CheckpointLock(path),
        pytest.raises(SearchError, match=f"in use by process {os.getpid()}"),
    ):
        CheckpointLock(path).acquire()
    assert not Path(str(path) + ".lock").exists()
    Path(str(path) + ".lock").write_text("garbage")  # a lock file cut short: stale
    with CheckpointLock(path):
        pass


def test_the_same_model_searched_again_reuses_its_checkpoint(tmp_path: Path) -> None:
    """With a calibration loader every score re-estimates BatchNorm first, so the statistics a
    finished prune left are not part of the fingerprint: pruning the same model again for
    another constraint reuses the map (notebook 07 does this).
    """
    model, x, loader = convnet()
    ckpt = tmp_path / "search.pt"
    config = {"score_func": score, "data_loader": loader, "checkpoint": str(ckpt)}
    _, first = nv.prune(model, constraints={"flops": "60%"}, dummy_input=x, config=config)
    calls = []
    again = {**config, "score_func": lambda m: calls.append(1) or score(m)}  # type: ignore[func-returns-value]  # test data typed loosely
    _, second = nv.prune(model, constraints={"flops": "40%"}, dummy_input=x, config=again)
    assert second["sensitivity_map"] == first["sensitivity_map"]
    assert len(calls) <= 4  # only the final candidates
