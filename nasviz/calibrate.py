"""BatchNorm calibration: recompute running statistics of the active subnet from real data.

A subnet's BatchNorm statistics were gathered by the full model; before a subnet is scored or
exported they are re-estimated on a few batches. :func:`calibration_loop` makes the loop that
feeds those batches (the same batches on every call), :func:`recalibrate_bn` runs it with the
statistics reset, and restores everything if it fails. :func:`nasviz.prep_for_eval` (in
:mod:`nasviz.patch`, which re-exports these names) is the entry point for users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasviz._batch import call_model, model_input, to_device
from nasviz._utils import device_of

__all__ = ["ForwardLoop", "calibration_loop", "recalibrate_bn"]

#: ``forward_loop(model)`` runs real data through the model (the caller ignores its result)
ForwardLoop = Callable[[nn.Module], Any]


def recalibrate_bn(
    model: nn.Module, forward_loop: ForwardLoop, set_training: Callable[[bool], Any]
) -> None:
    """Recompute every BatchNorm's running statistics from ``forward_loop``; end in eval mode.

    Statistics are reset and accumulated as a cumulative average (``momentum=None``) over the
    loop's batches, in train mode under ``torch.no_grad()``. Momentum is restored afterwards;
    if the loop raises, the old statistics and every module's train/eval flag are restored too;
    a BatchNorm the loop never reached keeps its old statistics.
    """
    bns = [
        m
        for m in model.modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]
    backups = [
        (m, m.momentum, {k: v.clone() for k, v in m._buffers.items() if v is not None}) for m in bns
    ]

    def put_back(m: _BatchNorm, saved: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in saved.items():
                buf = m._buffers[k]
                if buf is not None:
                    buf.copy_(v)

    flags = [(module, module.training) for module in model.modules()]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        set_training(True)
        with torch.no_grad():
            forward_loop(model)
    except BaseException:
        for m, _, saved in backups:
            put_back(m, saved)
        for module, flag in flags:  # a failed calibration leaves the flags as they were
            module.training = flag
        raise
    finally:
        for m, momentum, _ in backups:
            m.momentum = momentum
    set_training(False)
    for m, _, saved in backups:
        if m.num_batches_tracked is not None and int(m.num_batches_tracked) == 0:
            put_back(m, saved)


def calibration_loop(
    data_loader: Iterable[Any] | None, max_batches: int | None = None
) -> ForwardLoop | None:
    """The BatchNorm calibration loop over ``data_loader`` (``None`` without a loader).

    Each batch's input (a batch ``(x, ...)`` gives ``x``; a mapping is called as ``model(**batch)``,
    see :mod:`nasviz._batch`) is moved to the model's device and run through the model. With
    ``max_batches``, the first ``max_batches`` batches are drawn once and reused on every call,
    so every subnet is calibrated on the same data (a shuffled loader would otherwise add noise
    to every score); without it every call is a full pass over the loader.
    The searcher and the widgets calibrate with this loop. Example::

        >>> nv.prep_for_eval(model, calibration_loop(train_loader, max_batches=8))
    """
    if data_loader is None:
        return None
    loader = data_loader
    fixed: list[Any] = []

    def inputs() -> Iterable[Any]:
        if max_batches is None:
            for batch in loader:
                yield model_input(batch)
            return
        if not fixed:
            for i, batch in enumerate(loader):
                if i >= max_batches:
                    break
                fixed.append(model_input(batch))
        yield from fixed

    def forward_loop(model: nn.Module) -> None:
        device = device_of(model)
        for x in inputs():
            call_model(model, to_device(x, device))

    return forward_loop
