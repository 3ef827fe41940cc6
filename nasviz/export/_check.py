"""What every checked export shares: the reference outputs, the comparison, the atomic file and
the report.

An export is written to a temporary file next to the target, loaded back and run on the dummy
input; only when its outputs match the module's (max abs difference within ``tolerance`` times
the output scale, ``max(1, max |output|)``) is the file moved onto ``path`` (``os.replace``). A
failed check raises :class:`~nasviz.errors.ExportError` and leaves ``path`` as it was.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasviz.errors import ExportError

__all__ = [
    "ExportReport",
    "as_args",
    "atomic_target",
    "checked_export",
    "compare",
    "flat_tensors",
    "reference_outputs",
    "target_path",
]


@dataclass(frozen=True)
class ExportReport:
    """A checked export: the file, its size, and how closely it reproduces the module.

    ``max_abs_diff`` is over every output tensor on the dummy input; ``limit`` is the largest
    difference accepted (``tolerance * max(1, max |output|)``).

    Example::

        >>> report = nv.export_onnx(nv.export(model), x, "mlp.onnx")
        >>> report.ok, report.format, report.path.name
        (True, 'ONNX', 'mlp.onnx')
    """

    format: str
    path: Path
    bytes: int
    max_abs_diff: float
    limit: float
    exporter: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.limit

    def __repr__(self) -> str:
        return (
            f"ExportReport({self.format} via {self.exporter}: {str(self.path)!r}, "
            f"{self.bytes / 1024:.1f} KiB, max |diff| {self.max_abs_diff:.3g} <= {self.limit:.3g})"
        )


def target_path(path: str | os.PathLike[str], suffix: str) -> Path:
    """``path`` as a ``Path`` whose directory exists (refused otherwise, with the fix)."""
    if not isinstance(path, str | os.PathLike):
        msg = f"path={path!r} must be a file path such as 'model{suffix}'"
        raise ExportError(msg)
    target = Path(path).expanduser()
    if not target.name or target.is_dir():
        msg = f"path {str(target)!r} is not a file name; e.g. 'model{suffix}'"
        raise ExportError(msg)
    if not target.parent.is_dir():
        msg = (
            f"path {str(target)!r}: the directory {str(target.parent)!r} does not exist; create "
            "it first or pick another path"
        )
        raise ExportError(msg)
    return target


def as_args(dummy_input: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` of a dummy input: a tensor, a tuple of args or a dict of kwargs."""
    if isinstance(dummy_input, Mapping):
        return (), dict(dummy_input)
    if isinstance(dummy_input, tuple):
        return dummy_input, {}
    if isinstance(dummy_input, torch.Tensor):
        return (dummy_input,), {}
    msg = (
        f"dummy_input must be a tensor, a tuple of positional args or a dict of kwargs, got "
        f"{type(dummy_input).__name__}"
    )
    raise ExportError(msg)


def flat_tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor of a nested output, in order (dict values in key order for a plain dict)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in flat_tensors(v)]
    if isinstance(obj, tuple | list):
        return [t for o in obj for t in flat_tensors(o)]
    return []


@torch.no_grad()
def reference_outputs(model: nn.Module, dummy_input: Any) -> list[torch.Tensor]:
    """The module's outputs on ``dummy_input`` in eval mode (its mode restored); refuses
    non-finite outputs, against which no export could be checked.
    """
    if not isinstance(model, nn.Module):
        msg = f"model must be an nn.Module, got {type(model).__name__}"
        raise ExportError(msg)
    args, kwargs = as_args(dummy_input)
    was_training = model.training
    model.eval()
    try:
        outs = [t.detach().cpu() for t in flat_tensors(model(*args, **kwargs))]
    finally:
        model.train(was_training)
    if not outs:
        msg = f"{type(model).__name__} returned no tensor on dummy_input"
        raise ExportError(msg)
    bad = [i for i, t in enumerate(outs) if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        msg = (
            f"{type(model).__name__}'s output(s) {bad} on dummy_input contain nan or inf, so an "
            "export cannot be checked against them; fix the model or pass a dummy_input it "
            "handles"
        )
        raise ExportError(msg)
    return outs


def compare(
    reference: list[torch.Tensor], got: list[torch.Tensor], tolerance: float, what: str
) -> tuple[float, float]:
    """``(max abs diff, limit)``; raises :class:`ExportError` on a structural mismatch."""
    if len(reference) != len(got):
        msg = f"{what} returned {len(got)} outputs, the module {len(reference)}"
        raise ExportError(msg)
    diff, scale = 0.0, 1.0
    for i, (a, b) in enumerate(zip(reference, got)):
        if tuple(a.shape) != tuple(b.shape):
            msg = f"{what}: output {i} has shape {tuple(b.shape)}, the module's {tuple(a.shape)}"
            raise ExportError(msg)
        if not a.numel():
            continue
        d = (a.double() - b.double().to(a.device)).abs().max().item()
        diff = max(diff, math.inf if math.isnan(d) else d)
        scale = max(scale, a.double().abs().max().item())
    return diff, tolerance * scale


@contextmanager
def atomic_target(target: Path) -> Iterator[Path]:
    """A temporary path next to ``target``; moved onto ``target`` when the block succeeds,
    deleted otherwise (an existing ``target`` survives any failure).
    """
    # the temporary name ends like the target: torch.export.save/load insist on ".pt2"
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    path = Path(tmp)
    try:
        yield path
        os.replace(path, target)
    finally:
        path.unlink(missing_ok=True)


def checked_export(
    fmt: str,
    exporter: str,
    model: nn.Module,
    dummy_input: Any,
    path: Path,
    tolerance: float,
    write: Callable[[Path], None],
    run: Callable[[Path], list[torch.Tensor]],
) -> ExportReport:
    """Reference outputs, ``write`` to a temp file, ``run`` it, compare, move into place."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not tolerance > 0:
        msg = f"tolerance={tolerance!r} must be a positive number (e.g. 1e-4)"
        raise ExportError(msg)
    t0 = time.perf_counter()
    reference = reference_outputs(model, dummy_input)
    with atomic_target(path) as tmp:
        write(tmp)
        diff, limit = compare(reference, run(tmp), float(tolerance), f"the {fmt} file")
        if not diff <= limit:
            msg = (
                f"the {fmt} export does not reproduce the module: max |diff| = {diff:.3g} > "
                f"{limit:.3g} (tolerance {tolerance:g} x output scale); {str(path)!r} was not "
                "written. The model may use ops the exporter does not translate faithfully, or "
                "Python-side state that a trace freezes"
            )
            raise ExportError(msg)
        size = tmp.stat().st_size
    return ExportReport(fmt, path, size, diff, limit, exporter, time.perf_counter() - t0)
