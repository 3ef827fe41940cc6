"""The demo's first hour (issue #15, item 9): arguments are checked before any work, progress
goes to stderr, and the files land in the output directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from nasviz import demo as demo_mod
from nasviz.__main__ import main


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the demo starts loading data or training."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the demo started working before checking its arguments")

    monkeypatch.setattr(demo_mod, "digits_loaders", forbidden)
    monkeypatch.setattr(demo_mod, "train_classifier", forbidden)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flops", "150%"], r"--flops .*150%.*at most 100%"),
        (["--flops", "60"], r"--flops .*60 FLOPs.*'60%'"),
        (["--flops", "lots"], r"--flops .*'lots'.*not a number"),
        (["--width", "0"], r"--width 0 .*at least"),
        (["--epochs", "0"], r"--epochs 0 .*at least 1"),
        (["--threads", "0"], r"--threads 0 .*at least 1"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(
    no_work: None, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_progress_on_stderr_and_files_in_the_output_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        code = main(["demo", "--epochs", "1", "--width", "8", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    captured = capsys.readouterr()
    for bar in ("training", "sensitivity map", "binary search"):
        assert bar in captured.err, bar
    out = tmp_path / "nasviz-demo"
    assert sorted(p.name for p in out.iterdir()) == ["check.pt", "digits_pruned.pt"]
    assert str(out / "digits_pruned.pt") in captured.out
