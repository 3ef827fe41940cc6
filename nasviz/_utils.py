"""Small helpers shared across the engine (one copy each)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["atomic_torch_save", "device_of", "parameter_users", "training_flags"]


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` atomically: a temp file in the same directory, flushed to disk,
    then moved into place, so an existing file survives any failure."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parameter_users(model: nn.Module) -> dict[int, list[tuple[str, str]]]:
    """``id(parameter)`` -> every ``(module name, parameter name)`` holding it (tied weights
    have several)."""
    users: dict[int, list[tuple[str, str]]] = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        for pname, p in m.named_parameters(recurse=False):
            users.setdefault(id(p), []).append((mname, pname))
    return users


@contextlib.contextmanager
def training_flags(*models: nn.Module, mode: bool | None = None) -> Iterator[None]:
    """Run the body with every module's ``training`` flag set to ``mode`` (``None``: as they are),
    then put every flag back, also after an exception.

    Flags are set directly, not through ``train()``, so a patched ``train`` (a mode's post-eval
    hook) never fires. Example::

        >>> with training_flags(model, mode=False):
        ...     model(x)          # eval-mode pass; model.training is what it was afterwards
    """
    flags = {m: m.training for model in models for m in model.modules()}
    try:
        if mode is not None:
            for m in flags:
                m.training = mode
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag
