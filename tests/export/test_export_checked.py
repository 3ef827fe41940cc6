"""export_onnx / export_program: parity on real models, refusals, the missing-dependency message."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.demo import demo_config
from nasviz.errors import ExportError
from nasviz.models import DigitsCNN, ViTLike

pytestmark = pytest.mark.usefixtures("one_thread")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def digits_subnet() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8)
    model = nv.convert(DigitsCNN(width=16), mode=[("fastnas", demo_config(4))], dummy_input=x)
    nv.sample(model, "random", seed=3)
    return nv.export(model).eval(), x


class _Counter(nn.Module):
    """Python-side state a trace freezes: every call multiplies by its call count."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * float(self.calls)


class _Inf(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.zeros_like(x)


def test_onnx_parity_on_the_digits_subnet(digits_subnet: tuple[nn.Module, torch.Tensor],
                                          tmp_path: Path) -> None:  # fmt: skip
    small, x = digits_subnet
    path = tmp_path / "digits.onnx"
    report = nv.export_onnx(small, x, path)
    assert report.ok and report.max_abs_diff <= 1e-4 and report.format == "ONNX"
    assert path.is_file() and report.bytes == path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["digits.onnx"]  # no temporary file left
    # the file runs on its own, also at another batch size (dynamic batch axis)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.rand(7, 1, 8, 8)
    (out,) = session.run(None, {session.get_inputs()[0].name: x2.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(out), small(x2), atol=1e-4)
    assert "ONNX via" in repr(report) and "KiB" in repr(report)


def test_onnx_parity_on_a_vit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ViTLike(num_classes=5).eval()
    x = torch.rand(2, 3, 32, 32)
    report = nv.export_onnx(model, x, tmp_path / "vit.onnx")
    assert report.ok and report.max_abs_diff <= report.limit


def test_program_parity_and_reload(digits_subnet: tuple[nn.Module, torch.Tensor],
                                   tmp_path: Path) -> None:  # fmt: skip
    small, x = digits_subnet
    path = tmp_path / "digits.pt2"
    report = nv.export_program(small, x, path)
    assert report.ok and report.max_abs_diff <= 1e-5 and report.bytes == path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["digits.pt2"]
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        assert torch.allclose(loaded(x), small(x))


@pytest.mark.parametrize("fn", [nv.export_onnx, nv.export_program])
def test_a_mismatch_is_refused_and_nothing_is_written(fn: object, tmp_path: Path) -> None:
    path = tmp_path / "counter.bin"
    path.write_bytes(b"previous")
    with pytest.raises(ExportError, match=r"does not reproduce the module: max \|diff\|"):
        fn(_Counter(), torch.ones(2, 3), path)  # type: ignore[operator]
    assert path.read_bytes() == b"previous"  # the existing file survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter.bin"]


@pytest.mark.parametrize("fn", [nv.export_onnx, nv.export_program])
def test_non_finite_outputs_are_refused(fn: object, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="contain nan or inf"):
        fn(_Inf(), torch.ones(2, 3), tmp_path / "inf.bin")  # type: ignore[operator]
    assert list(tmp_path.iterdir()) == []


def test_bad_paths_and_inputs(digits_subnet: tuple[nn.Module, torch.Tensor],
                              tmp_path: Path) -> None:  # fmt: skip
    small, x = digits_subnet
    with pytest.raises(ExportError, match="does not exist"):
        nv.export_onnx(small, x, tmp_path / "no" / "such.onnx")
    with pytest.raises(ExportError, match="dummy_input must be a tensor"):
        nv.export_program(small, [x], tmp_path / "a.pt2")
    with pytest.raises(ExportError, match="tolerance=0 must be a positive"):
        nv.export_program(small, x, tmp_path / "a.pt2", tolerance=0)


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_missing_dependency_names_the_extra(
    missing: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` fail
    with pytest.raises(ExportError, match=rf"'{missing}' package.*pip install nasviz\[onnx\]"):
        nv.export_onnx(DigitsCNN(), torch.rand(1, 1, 8, 8), tmp_path / "a.onnx")


def test_import_nasviz_imports_no_onnx() -> None:
    import subprocess

    code = (
        "import sys, nasviz, nasviz.export\n"
        "print(','.join(m for m in ('onnx', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
