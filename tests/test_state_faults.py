"""Fault test of ``nv.save`` (issue #15, item 6): a forked child process saves two different
models to one path in a loop and is killed with SIGKILL at random moments; the file is then
always one of the two complete, hash-checked files, and the next save removes the temp file the
killed save left behind.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import nasviz as nv


def _model(fill: float) -> nn.Module:
    m = nn.Sequential(nn.Linear(512, 512), nn.Linear(512, 512))
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(fill)
    return m


def _saving_child(models: list[nn.Module], target: Path) -> int:
    """Fork a child that saves ``models`` to ``target`` in turn forever; return its pid once the
    first save is complete.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            nv.save(models[0], target)
            os.write(write_end, b"r")
            i = 0
            while True:
                i += 1
                nv.save(models[i % 2], target)
        finally:
            os._exit(1)
    os.close(write_end)
    assert os.read(read_end, 1) == b"r"
    os.close(read_end)
    return pid


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_9_during_save_leaves_the_old_or_the_new_complete_file(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    models = [_model(1.0), _model(2.0)]
    rng = random.Random(6)
    interrupted = 0
    for _ in range(20):
        pid = _saving_child(models, target)
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        interrupted += any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        restored = nv.restore(_model(0.0), target)  # hash-checked: complete or refused
        values = {float(v) for p in restored.parameters() for v in p.detach().unique()}
        assert len(values) == 1 and values <= {1.0, 2.0}
    assert interrupted > 0  # some kills did land in the middle of a save
    nv.save(_model(3.0), target)  # removes the temp files the killed saves left behind
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert torch.load(target, weights_only=True)["file_version"] == 2
