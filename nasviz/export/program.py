"""``export_program``: a ``torch.export`` program saved with ``torch.export.save``, reloaded and
checked against the module before it is written.

Example::

    >>> report = nv.export_program(small, x, "small.pt2")
    >>> program = torch.export.load("small.pt2")   # run it: program.module()(x)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasviz.errors import ExportError
from nasviz.export._check import ExportReport, as_args, checked_export, flat_tensors, target_path

__all__ = ["export_program"]


def export_program(
    model: nn.Module,
    dummy_input: Any,
    path: str | os.PathLike[str],
    *,
    tolerance: float = 1e-5,
) -> ExportReport:
    """Export ``model`` (eval mode) with ``torch.export.export`` on ``dummy_input``, save it to
    ``path`` (``torch.export.save``; load with ``torch.export.load``), reload it and compare its
    outputs with the module's; returns an :class:`~nasviz.export.ExportReport`.

    Raises :class:`~nasviz.errors.ExportError` (nothing written) if the model cannot be
    exported, or the reloaded program's outputs differ by more than ``tolerance`` times the
    output scale.
    """
    target = target_path(path, ".pt2")
    args, kwargs = as_args(dummy_input)

    def write(tmp: Path) -> None:
        was_training = model.training
        model.eval()
        try:
            program = torch.export.export(model, args, kwargs=kwargs or None)
        except Exception as e:
            msg = f"torch.export.export failed on {type(model).__name__}: {type(e).__name__}: {e}"
            raise ExportError(msg) from e
        finally:
            model.train(was_training)
        torch.export.save(program, str(tmp))

    @torch.no_grad()
    def run(tmp: Path) -> list[torch.Tensor]:
        loaded = torch.export.load(str(tmp)).module()
        return [t.detach().cpu() for t in flat_tensors(loaded(*args, **kwargs))]

    return checked_export("torch.export", "torch.export", model, dummy_input, target, tolerance,
                          write, run)  # fmt: skip
