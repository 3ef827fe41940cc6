"""Model state: which modes were applied to a model, and saving/restoring it.

Every mode applied to a model is recorded on the model itself, in one attribute
(``model._nasviz_state``), as ``(mode name, {"config": config, "metadata": metadata})``; applying
modes and keeping that record is :mod:`nasviz.modes.apply`'s (:func:`apply_mode`,
:func:`parse_modes`, :func:`is_converted`, re-exported here, their public path). The
*modelopt state* returned by :func:`modelopt_state` is that record made of primitives and tensors
only, versioned::

    {"nasviz_version": "0.1.0", "state_version": 1,
     "modes": [("fastnas", {"config": {...}, "metadata": {...}}), ...]}

It round-trips through ``torch.load(..., weights_only=True)``: loading never executes code.

:func:`save` writes the modelopt state, the weights and the original model class atomically.
:func:`restore` rebuilds the architecture on a fresh instance of that class by replaying each
mode's ``restore`` entry point, then loads the weights. The replay runs on a deep copy; only when
everything succeeded is the result transplanted into the given model object (its ``__dict__`` and
class are replaced, references to the copy are re-pointed at the given model), so the given model
is untouched by a failed restore and changed in place by a successful one. Example::

    model = apply_mode(MyNet(), "fastnas")
    save(model, "model.pt")
    fresh = MyNet()
    restore(fresh, "model.pt")   # fresh is now the converted model, with the saved weights
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from importlib import metadata as _metadata
from typing import Any, cast

import torch
from pydantic import ValidationError
from torch import nn

from nasviz import _state_helpers as _h
from nasviz._utils import atomic_torch_save, read_checked
from nasviz.config import ModeloptBaseConfig
from nasviz.errors import ApplyModeError, CorruptFileError, RestoreError
from nasviz.modes.apply import (
    ModeLike,
    apply_mode,
    check_order,
    is_converted,
    mode_names,
    parse_modes,
    pending_export_modes,
    record_mode,
    state_record,
)
from nasviz.modes.base import ModeDescriptor, get_mode

__all__ = [
    "STATE_VERSION",
    "ApplyModeError",
    "ModeLike",
    "apply_mode",
    "is_converted",
    "modelopt_state",
    "parse_modes",
    "pending_export_modes",
    "restore",
    "restore_from_modelopt_state",
    "save",
]

try:
    _NASVIZ_VERSION = _metadata.version("nasviz")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    _NASVIZ_VERSION = "unknown"

#: version of the modelopt-state format written by this nasviz (read: SUPPORTED_STATE_VERSIONS)
STATE_VERSION = 1
_SUPPORTED_STATE_VERSIONS = frozenset({1})
#: version of the file ``save`` writes: 2 adds ``file_version`` and the content hash; files of
#: version 1 (no ``file_version`` key, no hash, nasviz <= 0.1) are still read, with a warning
FILE_VERSION = 2
_FILE_KEYS_V1 = frozenset({"modelopt_state", "model_state_dict", "model_class"})
_FILE_KEYS = _FILE_KEYS_V1 | {"file_version"}


# ------------------------------------------------------------------------------------------
# modelopt_state
# ------------------------------------------------------------------------------------------


def modelopt_state(model: nn.Module) -> dict[str, Any]:
    """The model's modelopt state as primitives and tensors (a deep copy, safe to save).

    Calls ``update_for_save`` of the last applied mode first (like ``update_for_new_mode``, only
    the most recent mode may still refine its record).
    """
    state = state_record(model)
    modes = state["modes"] if state else []
    if modes:
        name, entry = modes[-1]
        get_mode(name).update_for_save(model, entry["config"], entry["metadata"])
    return {
        "nasviz_version": _NASVIZ_VERSION,
        "state_version": STATE_VERSION,
        "modes": [
            (
                name,
                {
                    "config": _h.plain(entry["config"], f"mode {name!r}: config"),
                    "metadata": _h.plain(entry["metadata"], f"mode {name!r}: metadata"),
                },
            )
            for name, entry in modes
        ],
    }


# ------------------------------------------------------------------------------------------
# save / restore
# ------------------------------------------------------------------------------------------


def save(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write the modelopt state, the weights and the original model class to ``path``.

    Atomic: the file is written to a temporary file in the same directory and moved into place,
    so an existing file survives any failure. The file carries a content hash that
    :func:`restore` checks; a symlink is written through, an existing file's mode is kept.
    """
    state = state_record(model)
    payload = {
        "file_version": FILE_VERSION,
        "modelopt_state": modelopt_state(model),
        "model_state_dict": model.state_dict(),
        "model_class": state["model_class"] if state else _h.class_name(type(model)),
    }
    atomic_torch_save(payload, path)


def _load_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked payload of a file written by :func:`save` (see ``FILE_VERSION``)."""
    where = repr(os.fspath(path))
    try:
        data, hashed = read_checked(path)
    except CorruptFileError as e:
        raise RestoreError(str(e)) from e
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        msg = (
            f"{where} could not be loaded with torch.load(weights_only=True) "
            f"({type(e).__name__}: {e}); nasviz reads only files written by nasviz.save and "
            "never executes code from a file"
        )
        raise RestoreError(msg) from e
    found = set(payload) if isinstance(payload, dict) else None
    if found is None or found not in (_FILE_KEYS_V1, _FILE_KEYS):
        shown = sorted(map(str, found)) if found is not None else type(payload).__name__
        msg = (
            f"{where} is not a nasviz checkpoint: expected keys {sorted(_FILE_KEYS)}, found "
            f"{shown}; write checkpoints with nasviz.save(model, path)"
        )
        raise RestoreError(msg)
    if found == _FILE_KEYS_V1:
        warnings.warn(
            f"{where} was written by nasviz <= 0.1 and has no content hash, so damage to it "
            "cannot be detected; re-save it with nasviz.save after this restore",
            UserWarning,
            stacklevel=3,
        )
    elif payload["file_version"] != FILE_VERSION:
        msg = (
            f"{where} has file version {payload['file_version']!r}; this nasviz reads versions "
            f"1 and {FILE_VERSION}. Restore it with the nasviz that wrote it, or upgrade nasviz"
        )
        raise RestoreError(msg)
    elif not hashed:
        msg = (
            f"{where} has no valid content hash although nasviz.save wrote it (its last bytes "
            "were changed or cut off), so it may be damaged; use another copy or save again"
        )
        raise RestoreError(msg)
    return cast(dict[str, Any], payload)


def restore(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild the saved architecture on ``model`` (a fresh instance) and load the weights.

    ``model`` is changed in place and returned; if anything fails it is left untouched and a
    :class:`~nasviz.errors.RestoreError` says why. The file's content hash is checked first: a
    file changed after it was saved is refused.
    """
    payload = _load_file(path)
    saved_cls, actual_cls = payload["model_class"], _h.class_name(type(model))
    if saved_cls != actual_cls:
        msg = (
            f"{os.fspath(path)!r} was saved from a {saved_cls} but the model is a {actual_cls}; "
            f"restore onto a fresh instance of {saved_cls}, built with the same arguments"
        )
        raise RestoreError(msg)
    work = _replay(model, payload["modelopt_state"])
    _h.load_weights(work, payload["model_state_dict"])
    _h.transplant(work, model)
    return model


def restore_from_modelopt_state(model: nn.Module, modelopt_state: dict[str, Any]) -> nn.Module:
    """Replay a modelopt state on ``model`` (no weights); in place, untouched on failure."""
    _h.transplant(_replay(model, modelopt_state), model)
    return model


def _replay(model: nn.Module, state: Any) -> nn.Module:
    """Validate ``state`` and replay its modes on a deep copy of ``model``; return the copy."""
    if not isinstance(model, nn.Module):
        msg = f"restore needs an nn.Module, got {type(model).__name__}"
        raise RestoreError(msg)
    if is_converted(model):
        msg = (
            f"restore needs an unconverted model, but modes {mode_names(model)} were already "
            f"applied to this {type(model).__name__}; restore onto a fresh instance"
        )
        raise RestoreError(msg)
    if not isinstance(state, dict) or not isinstance(state.get("modes"), (list, tuple)):
        msg = (
            "not a nasviz modelopt state: expected a dict with 'nasviz_version', 'state_version' "
            "and a 'modes' list; build it with nasviz.state.modelopt_state(model)"
        )
        raise RestoreError(msg)
    version = state.get("state_version")
    if version not in _SUPPORTED_STATE_VERSIONS:
        msg = (
            f"modelopt state version {version!r} (written by nasviz "
            f"{state.get('nasviz_version')!r}) is not readable by nasviz {_NASVIZ_VERSION}, which "
            f"reads versions {sorted(_SUPPORTED_STATE_VERSIONS)}; restore it with the nasviz "
            "version that wrote it, or upgrade nasviz"
        )
        raise RestoreError(msg)
    entries: list[tuple[ModeDescriptor, ModeloptBaseConfig, dict[str, Any]]] = []
    for i, item in enumerate(state["modes"]):
        ok = isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], dict)
        if not ok or not isinstance(item[1].get("config"), dict):
            msg = f"modelopt state entry {i} is malformed: {item!r:.200}"
            raise RestoreError(msg)
        name, entry = item
        try:
            desc = get_mode(name)
        except ApplyModeError as e:
            msg = (
                f"the state uses mode {name!r}, which is not registered ({e}); import the module "
                "that registers it before restoring"
            )
            raise RestoreError(msg) from e
        try:
            config = desc.config_class.model_validate(entry["config"])
        except ValidationError as e:
            msg = (
                f"saved config of mode {name!r} is invalid for {desc.config_class.__name__}: "
                f"{_h.pydantic_message(e)}; the file was written by an incompatible version"
            )
            raise RestoreError(msg) from e
        entries.append((desc, config, copy.deepcopy(dict(entry.get("metadata") or {}))))
    try:
        check_order([], [d for d, _, _ in entries], None)
    except ApplyModeError as e:
        msg = f"the saved modes are in an invalid order: {e}"
        raise RestoreError(msg) from e

    work = copy.deepcopy(model)
    record: dict[str, Any] = {"model_class": _h.class_name(type(model)), "modes": []}
    for i, (desc, config, metadata) in enumerate(entries):
        try:
            result = desc.restore(work, config, metadata)
        except RestoreError:
            raise
        except Exception as e:
            msg = (
                f"restoring mode {desc.name!r} (entry {i}) failed: {type(e).__name__}: {e}; "
                "the given model was left untouched"
            )
            raise RestoreError(msg) from e
        if not isinstance(result, nn.Module):
            msg = f"mode {desc.name!r} failed to restore the model (got {result!r})"
            raise RestoreError(msg)
        work = result
        record_mode(work, record, desc.name, config, metadata)
    return work
