"""Exports that check themselves: ONNX and ``torch.export`` programs.

Each export writes a temporary file, loads it back, runs it on the dummy input and compares with
the module's outputs; only then is the file moved onto the target path. The result is an
:class:`ExportReport` (file size, max abs difference). The plain-module export (``nv.export``)
lives in :mod:`nasviz.space` for now.
"""

from nasviz.export._check import ExportReport
from nasviz.export.hf import save_pretrained
from nasviz.export.onnx import export_onnx
from nasviz.export.program import export_program

__all__ = ["ExportReport", "export_onnx", "export_program", "save_pretrained"]
