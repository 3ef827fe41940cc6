"""The files ``nv.save`` writes (issue #15, item 4): a content hash that ``restore`` checks, the
target's mode kept, symlinks written through, orphaned temp files cleaned, errors naming the
target, files of the previous format still read.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.errors import RestoreError
from nasviz.testing import TinyMLP, searchable_mlp


def _saved(tmp_path: Path, name: str = "model.pt") -> tuple[Path, torch.Tensor]:
    model, x = searchable_mlp()
    nv.select(model, {"fc1.out_features": 8})
    path = tmp_path / name
    nv.save(model, path)
    with torch.no_grad():
        return path, model(x)


def test_every_flipped_byte_is_refused_naming_the_file(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    data = path.read_bytes()
    rng = random.Random(15)
    # 40 random positions, the first and the last byte, the hash comment's first byte and the
    # zip end record's comment length (the comment is the last 78 bytes)
    ends = {0, len(data) - 1, len(data) - 78, len(data) - 80}
    positions = sorted(ends | set(rng.sample(range(len(data)), 40)))
    refused = 0
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 1 << rng.randrange(8)
        damaged = tmp_path / "damaged.pt"
        damaged.write_bytes(bytes(bad))
        fresh = TinyMLP()
        before = {k: v.clone() for k, v in fresh.state_dict().items()}
        with pytest.raises(RestoreError, match=re.escape(str(damaged))):
            nv.restore(fresh, damaged)
        refused += 1
        assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    assert refused == len(positions) >= 40


def test_a_damaged_tensor_names_the_hash_mismatch(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(RestoreError, match=r"content hash|could not be loaded"):
        nv.restore(TinyMLP(), path)


def test_an_intact_file_restores_the_same_outputs(tmp_path: Path) -> None:
    path, y = _saved(tmp_path)
    fresh = nv.restore(TinyMLP(), path)
    torch.manual_seed(0)
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(fresh(x), y)
    # still a plain torch file: torch.load(weights_only=True) reads it
    assert "model_state_dict" in torch.load(path, weights_only=True)


def test_new_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path, _ = _saved(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_overwriting_keeps_the_target_mode(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    path.chmod(0o664)
    _saved(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664


def test_a_symlink_target_is_written_through(tmp_path: Path) -> None:
    real_dir = tmp_path / "store"
    real_dir.mkdir()
    real = real_dir / "weights.pt"
    real.write_bytes(b"old")
    link = tmp_path / "model.pt"
    link.symlink_to(real)
    model, _ = searchable_mlp()
    nv.save(model, link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() != b"old"
    nv.restore(TinyMLP(), link)
    assert sorted(p.name for p in real_dir.iterdir()) == ["weights.pt"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_orphaned_temp_files_of_interrupted_saves_are_cleaned(tmp_path: Path) -> None:
    _saved(tmp_path)
    dead = tmp_path / f".model.pt.nasviz-{_dead_pid()}-0a1b2c3d.tmp"
    legacy = tmp_path / ".model.pt.k2j4h5g6.tmp"  # mkstemp name of nasviz <= 0.1
    alive = tmp_path / f".model.pt.nasviz-{os.getppid()}-0a1b2c3d.tmp"  # a save still running
    other = tmp_path / ".other.pt.k2j4h5g6.tmp"  # another target's
    for f in (dead, legacy, alive, other):
        f.write_bytes(b"half")
    old = os.path.getmtime(legacy) - 3600
    os.utime(legacy, (old, old))
    os.utime(other, (old, old))
    _saved(tmp_path)
    assert not dead.exists() and not legacy.exists()
    assert alive.exists() and other.exists()


@pytest.mark.parametrize("where", ["missing_dir/model.pt", "a_dir"])
def test_errors_name_the_target_not_the_temp_file(tmp_path: Path, where: str) -> None:
    (tmp_path / "a_dir").mkdir()
    target = tmp_path / where
    with pytest.raises(OSError, match="could not save") as info:
        nv.save(searchable_mlp()[0], target)
    assert info.value.filename == str(target)
    assert ".tmp" not in str(info.value)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_unpicklable_contents_name_the_target(tmp_path: Path) -> None:
    model, _ = searchable_mlp()
    model.__dict__["_nasviz_state"]["model_class"] = lambda: 0  # cannot be pickled
    target = tmp_path / "model.pt"
    with pytest.raises((AttributeError, pickle.PicklingError, TypeError)) as info:
        nv.save(model, target)
    assert str(target) in "\n".join([str(info.value), *getattr(info.value, "__notes__", [])])
    assert os.listdir(tmp_path) == []


def test_files_of_the_previous_format_are_still_read(tmp_path: Path) -> None:
    model, x = searchable_mlp()
    payload = {
        "modelopt_state": nv.state.modelopt_state(model),
        "model_state_dict": model.state_dict(),
        "model_class": f"{TinyMLP.__module__}.TinyMLP",
    }
    old = tmp_path / "old.pt"
    torch.save(payload, old)  # how nasviz 0.1 wrote it: no content hash, no file_version
    with pytest.warns(UserWarning, match=r"no content hash.*re-save it with nasviz\.save"):
        fresh = nv.restore(TinyMLP(), old)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_a_new_file_without_its_hash_is_refused(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    stripped = tmp_path / "stripped.pt"
    torch.save(payload, stripped)  # a current payload whose hash trailer was lost
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused, not read as a file of the previous format
        with pytest.raises(RestoreError, match="content hash"):
            nv.restore(TinyMLP(), stripped)


def test_weights_only_still_refuses_code(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save(nn.Linear(2, 2), evil)
    with pytest.raises(RestoreError, match=r"weights_only=True"):
        nv.restore(TinyMLP(), evil)
