"""Helpers of :mod:`nasviz.state` that know nothing about modes.

Making a record plain (only what ``torch.load(weights_only=True)`` accepts), formatting pydantic
errors, checking saved weights against a model, and transplanting a restored copy into the model
object the user holds. Kept apart so that ``state.py`` reads as the mode bookkeeping it is.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from nasviz.errors import NasvizError, RestoreError

__all__ = [
    "class_name",
    "load_weights",
    "plain",
    "pydantic_message",
    "transplant",
]


def class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def pydantic_message(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']} "
        f"(input {err.get('input')!r})"
        for err in e.errors()
    )


_ATOMS = (str, int, float, bool, type(None), torch.dtype, torch.device)


def plain(obj: Any, where: str) -> Any:
    """A deep copy of ``obj`` made only of types ``torch.load(weights_only=True)`` accepts."""
    if isinstance(obj, _ATOMS):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, torch.Size):
        return tuple(int(s) for s in obj)
    if isinstance(obj, BaseModel):
        return plain(obj.model_dump(), where)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)):
                msg = f"{where} has a key of type {type(k).__name__} ({k!r}); use str or int keys"
                raise NasvizError(msg)
            out[k] = plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    msg = (
        f"{where} is a {type(obj).__name__} ({obj!r:.80}); modelopt state may hold only "
        "str/int/float/bool/None, tensors, lists, tuples and dicts; convert it in the mode's "
        "convert or update_for_save"
    )
    raise NasvizError(msg)


def load_weights(work: nn.Module, saved: Any) -> None:
    if not isinstance(saved, Mapping):
        msg = f"model_state_dict must be a dict, got {type(saved).__name__}"
        raise RestoreError(msg)
    expected = work.state_dict()
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    if missing or unexpected:
        msg = (
            f"the saved weights do not fit the restored architecture: missing keys "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected keys "
            f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}; build the fresh model "
            "with the same constructor arguments as the saved one"
        )
        raise RestoreError(msg)
    for key, value in expected.items():
        other = saved[key]
        if (
            isinstance(value, torch.Tensor)
            and isinstance(other, torch.Tensor)
            and tuple(value.shape) != tuple(other.shape)
        ):
            msg = (
                f"weight {key!r} has shape {tuple(other.shape)} in the file but "
                f"{tuple(value.shape)} in the restored model; build the fresh model with "
                "the same constructor arguments as the saved one"
            )
            raise RestoreError(msg)
    try:
        work.load_state_dict(saved, strict=True)
    except RuntimeError as e:
        msg = f"loading the saved weights failed: {e}"
        raise RestoreError(msg) from e


def transplant(src: nn.Module, dst: nn.Module) -> None:
    """Make ``dst`` the object ``src`` is: same class, same attributes.

    The attributes are deep-copied with ``src`` mapped to ``dst`` and every parameter and buffer
    mapped to itself, so references to ``src`` (bound methods installed by patching, back
    references) now point at ``dst`` while no tensor is copied.
    """
    if src is dst:
        return
    memo: dict[int, Any] = {id(src): dst}
    for t in (*src.parameters(), *src.buffers()):
        memo[id(t)] = t
    new_dict = copy.deepcopy(src.__dict__, memo)
    if type(dst) is not type(src):
        try:
            dst.__class__ = type(src)
        except TypeError as e:
            msg = (
                f"cannot turn the given {type(dst).__name__} into a {type(src).__name__} in "
                f"place ({e}); use the model returned by the restored mode instead"
            )
            raise RestoreError(msg) from e
    dst.__dict__.clear()
    dst.__dict__.update(new_dict)
