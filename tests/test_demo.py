"""The headless demo end to end, at a small size (the full demo is `make demo`)."""

from __future__ import annotations

from pathlib import Path

import torch

from nasviz.__main__ import main
from nasviz.demo import demo_config, format_report, run_demo


def test_small_demo_prunes_exports_saves_and_restores_in_a_fresh_process(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        r = run_demo(epochs=1, width=16, calib_batches=2, threads=1, out_dir=tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert r["restore_ok"]
    assert r["restore_max_abs_diff"] <= 1e-5
    assert r["flops_pruned"] <= 0.6 * r["flops_full"]
    assert r["params_pruned"] < r["params_full"]
    assert (tmp_path / "digits_pruned.pt").exists()
    report = format_report(r)
    assert "val accuracy" in report
    assert "OK" in report


def test_demo_config_divisor() -> None:
    rule = demo_config(2).rule_for("nn.Conv2d", "res_conv1.0").rule
    assert rule is not None
    assert rule.channel_divisor == 2


def test_cli_rejects_unknown_command(capsys) -> None:
    import pytest

    with pytest.raises(SystemExit):
        main(["nonsense"])
    assert "invalid choice" in capsys.readouterr().err
