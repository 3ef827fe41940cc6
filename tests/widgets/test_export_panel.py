"""ExportPanel without a browser: press the button, check the file, the costs and the reload."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.demo import demo_config
from nasviz.errors import NasvizError
from nasviz.models import DigitsCNN
from nasviz.widgets.export_panel import ExportPanel, ReloadCheck, max_abs_diff


@functools.cache
def _digits(width: int = 16) -> tuple[nn.Module, torch.Tensor]:
    """One converted model for all tests (the panel never changes its selection)."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8)
    model = nv.convert(DigitsCNN(width=width), mode=[("fastnas", demo_config())], dummy_input=x)
    nv.select(model, {"stem.0.out_channels": 8, "ir_expand.0.out_channels": 16})
    return model, x


def test_button_exports_saves_and_checks(tmp_path):
    model, x = _digits()
    path = tmp_path / "small.pt"
    panel = ExportPanel(model, x, path, factory=lambda: DigitsCNN(width=16))
    panel._on_click(panel.export_button)
    assert panel.error is None
    assert panel.path == path and path.is_file()
    small = panel.exported
    assert isinstance(small, DigitsCNN)
    assert small.stem[0].out_channels == 8 and small.ir_expand[0].out_channels == 16
    assert not any(type(m).__name__.startswith("Dynamic") for m in small.modules())
    with torch.no_grad():  # same outputs as the selected subnet
        assert torch.allclose(small.eval()(x), model.eval()(x), atol=1e-5)
    # the file restores onto a fresh model with the same outputs
    fresh = nv.restore(DigitsCNN(width=16), path)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), small(x), atol=1e-6)
    assert panel.check == ReloadCheck("ok", 0.0, "outputs on dummy_input", panel.check.message)
    f = panel.figures
    assert f["bytes"] == path.stat().st_size > 0
    assert f["flops_exported"] == nv.profile(small, x).flops < f["flops_full"]
    assert f["params_exported"] < f["params_full"] == nv.profile(DigitsCNN(width=16), x).params
    assert f["subnet"]["stem.0.out_channels"] == 8
    assert "OK" in panel.table.value and "KiB" in panel.table.value
    assert nv.get_subnet_config(model)["stem.0.out_channels"] == 8  # still searchable


def test_reload_check_without_dummy_input_compares_weights(tmp_path):
    model, _ = _digits()
    panel = ExportPanel(model, factory=lambda: DigitsCNN(width=16))
    panel.export(tmp_path / "w.pt")
    assert panel.check is not None and panel.check.ok
    assert panel.check.compared.startswith("weights")
    assert "flops_full" not in panel.figures and "flops" not in panel.table.value


def test_wrong_fresh_model_is_reported_not_raised(tmp_path):
    model, x = _digits()
    panel = ExportPanel(model, x, tmp_path / "a.pt")  # DigitsCNN() has width 32, not 16
    panel._on_click(None)
    assert panel.check is not None and panel.check.status == "error"
    assert "pass factory=lambda: DigitsCNN(...)" in panel.check.message
    assert "ERROR" in panel.table.value
    panel = ExportPanel(model, x, tmp_path / "b.pt", factory=lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    panel.export()
    assert panel.check is not None and not panel.check.ok
    assert "ZeroDivisionError" in panel.check.message and "factory" in panel.check.message


def test_mismatch_is_detected(tmp_path):
    model, x = _digits()

    def tampered() -> nn.Module:  # restores fine, but its forward differs
        fresh = DigitsCNN(width=16)
        fresh.forward = lambda inp: DigitsCNN.forward(fresh, inp) + 1.0  # type: ignore[method-assign]
        return fresh

    panel = ExportPanel(model, x, tmp_path / "m.pt", factory=tampered)
    panel.export()
    assert panel.check is not None and panel.check.status == "mismatch"
    assert panel.check.max_abs_diff == pytest.approx(1.0)
    assert "MISMATCH" in panel.table.value


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(NasvizError, match="convert it first"):
        ExportPanel(DigitsCNN(width=8))
    model, x = _digits()
    panel = ExportPanel(
        model, x, tmp_path / "missing" / "x.pt", factory=lambda: DigitsCNN(width=16)
    )
    with pytest.raises(NasvizError, match="does not exist"):
        panel.export()
    panel._on_click(None)  # the button shows the error instead of raising
    assert panel.error is not None and "does not exist" in panel.status.value
    assert panel.exported is None and not (tmp_path / "missing").exists()


def test_max_abs_diff():
    a = {"x": torch.ones(2), "y": (torch.zeros(1), torch.ones(3))}
    b = {"x": torch.ones(2) * 3, "y": (torch.zeros(1), torch.ones(3))}
    assert max_abs_diff(a, b) == 2.0
    assert max_abs_diff(torch.ones(2), torch.ones(3)) == float("inf")
    assert max_abs_diff(torch.ones(2), (torch.ones(2), torch.ones(2))) == float("inf")


def test_onnx_and_torch_export_next_to_the_plain_module(tmp_path):
    pytest.importorskip("onnxruntime")
    model, x = _digits()
    panel = ExportPanel(model, x, tmp_path / "small.pt", factory=lambda: DigitsCNN(width=16),
                        formats=["ONNX"])  # fmt: skip
    assert panel.format_boxes["ONNX"].value and not panel.format_boxes["torch.export"].value
    panel.format_boxes["torch.export"].value = True
    panel._on_click(panel.export_button)
    assert panel.error is None and panel.report_errors == {}
    onnx, program = panel.reports["ONNX"], panel.reports["torch.export"]
    assert onnx.path == tmp_path / "small.onnx" and program.path == tmp_path / "small.pt2"
    assert onnx.bytes == onnx.path.stat().st_size and program.bytes == program.path.stat().st_size
    assert onnx.max_abs_diff <= onnx.limit and program.max_abs_diff <= program.limit
    assert "small.onnx" in panel.table.value and "max |diff|" in panel.table.value


def test_a_missing_onnx_is_reported_per_format(tmp_path, monkeypatch):
    import sys

    model, x = _digits()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    panel = ExportPanel(model, x, tmp_path / "m.pt", factory=lambda: DigitsCNN(width=16))
    panel.export(formats=["ONNX", "torch.export"])
    assert "pip install nasviz[onnx]" in panel.report_errors["ONNX"]
    assert panel.reports["torch.export"].path.is_file()
    assert "REFUSED" in panel.table.value


def test_formats_need_a_dummy_input():
    model, _ = _digits()
    with pytest.raises(NasvizError, match="need a dummy_input"):
        ExportPanel(model, formats=["ONNX"])
    with pytest.raises(NasvizError, match="unknown"):
        ExportPanel(model, torch.zeros(1, 1, 8, 8), formats=["tflite"])
