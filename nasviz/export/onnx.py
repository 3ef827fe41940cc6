"""``export_onnx``: an ONNX file that is checked in onnxruntime before it is written.

onnx and onnxruntime are an optional extra (``pip install nasviz[onnx]``), imported only here
and only when called. With ``onnxscript`` installed the ``torch.export``-based exporter is used
(``exporter="dynamo"``), else the TorchScript exporter (``exporter="torchscript"``, with a
dynamic batch dimension); ``exporter="auto"`` picks.

Example::

    >>> report = nv.export_onnx(small, x, "small.onnx")
    >>> report.max_abs_diff <= report.limit, report.bytes > 0
    (True, True)
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

from nasviz.errors import ExportError
from nasviz.export._check import (
    ExportReport,
    as_args,
    checked_export,
    flat_tensors,
    target_path,
)

__all__ = ["export_onnx"]

Exporter = Literal["auto", "dynamo", "torchscript"]


def _require(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        msg = (
            f"export_onnx needs the {name!r} package, which is not installed: "
            "pip install nasviz[onnx]  (onnx and onnxruntime)"
        )
        raise ExportError(msg) from e


def _pick(exporter: str) -> str:
    if exporter not in ("auto", "dynamo", "torchscript"):
        msg = f"exporter={exporter!r}: use 'auto', 'dynamo' or 'torchscript'"
        raise ExportError(msg)
    if exporter == "auto":
        return "dynamo" if importlib.util.find_spec("onnxscript") is not None else "torchscript"
    return exporter


def export_onnx(
    model: nn.Module,
    dummy_input: Any,
    path: str | os.PathLike[str],
    *,
    tolerance: float = 1e-4,
    opset: int | None = None,
    exporter: Exporter = "auto",
) -> ExportReport:
    """Export ``model`` (eval mode) to ONNX at ``path``, run the file in onnxruntime on
    ``dummy_input`` and compare with the module's outputs; returns an
    :class:`~nasviz.export.ExportReport` (file size, max abs difference).

    Raises :class:`~nasviz.errors.ExportError` - and writes nothing - if the outputs differ by
    more than ``tolerance`` times the output scale, if the module's own outputs are not finite,
    or if onnx/onnxruntime are missing.
    """
    onnx = _require("onnx")
    ort = _require("onnxruntime")
    target = target_path(path, ".onnx")
    how = _pick(exporter)
    args, kwargs = as_args(dummy_input)
    inputs = flat_tensors((args, kwargs))

    def write(tmp: Path) -> None:
        names = [f"input_{i}" for i in range(len(args))] + list(kwargs)
        was_training = model.training
        model.eval()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                if how == "dynamo":
                    torch.onnx.export(
                        model, args, str(tmp), kwargs=kwargs or None, opset_version=opset,
                        dynamo=True, external_data=False,
                    )  # fmt: skip
                else:
                    torch.onnx.export(
                        model, args, str(tmp), kwargs=kwargs or None, opset_version=opset,
                        dynamo=False, input_names=names,
                        dynamic_axes={n: {0: "batch"} for n in names},
                    )  # fmt: skip
        except Exception as e:
            msg = (
                f"torch.onnx.export ({how}) failed on {type(model).__name__}: "
                f"{type(e).__name__}: {e}"
            )
            raise ExportError(msg) from e
        finally:
            model.train(was_training)
        try:
            onnx.checker.check_model(str(tmp))
        except Exception as e:
            msg = f"the exported ONNX file is not valid: {e}"
            raise ExportError(msg) from e

    def run(tmp: Path) -> list[torch.Tensor]:
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        wanted = session.get_inputs()
        if len(wanted) != len(inputs):
            msg = (
                f"the ONNX graph takes {len(wanted)} inputs but dummy_input has {len(inputs)} "
                "tensors (an unused input is dropped by the exporter); pass only what the model "
                "uses"
            )
            raise ExportError(msg)
        feed = {w.name: t.detach().cpu().numpy() for w, t in zip(wanted, inputs)}
        return [torch.from_numpy(o) for o in session.run(None, feed)]

    return checked_export("ONNX", how, model, dummy_input, target, tolerance, write, run)
