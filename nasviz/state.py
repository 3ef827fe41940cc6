"""Model state: which modes were applied to a model, and saving/restoring it.

Every mode applied to a model is recorded on the model itself, in one attribute
(``model._nasviz_state``), as ``(mode name, {"config": config, "metadata": metadata})``. The
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
from collections.abc import Mapping, Sequence
from importlib import metadata as _metadata
from typing import Any, cast

import torch
from pydantic import ValidationError
from torch import nn

from nasviz import _state_helpers as _h
from nasviz._transaction import transaction
from nasviz._utils import atomic_torch_save, read_checked
from nasviz.config import ModeloptBaseConfig
from nasviz.errors import ApplyModeError, CorruptFileError, RestoreError
from nasviz.modes.base import ModeDescriptor, _ModeRegistry, get_mode

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
_STATE_ATTR = "_nasviz_state"
#: version of the file ``save`` writes: 2 adds ``file_version`` and the content hash; files of
#: version 1 (no ``file_version`` key, no hash, nasviz <= 0.1) are still read, with a warning
FILE_VERSION = 2
_FILE_KEYS_V1 = frozenset({"modelopt_state", "model_state_dict", "model_class"})
_FILE_KEYS = _FILE_KEYS_V1 | {"file_version"}

_ModeType = str | ModeDescriptor
_ConfigLike = ModeloptBaseConfig | Mapping[str, Any] | None
#: a mode, a list of modes, or a list of ``(mode, config)`` pairs
ModeLike = _ModeType | Sequence[_ModeType | tuple[_ModeType, _ConfigLike]]


# ------------------------------------------------------------------------------------------
# The record on the model
# ------------------------------------------------------------------------------------------


def _state(model: nn.Module) -> dict[str, Any] | None:
    state: dict[str, Any] | None = model.__dict__.get(_STATE_ATTR)
    return state


def is_converted(model: nn.Module) -> bool:
    """Whether at least one mode has been applied to ``model``."""
    state = _state(model)
    return bool(state and state["modes"])


def _mode_names(model: nn.Module) -> list[str]:
    state = _state(model)
    return [name for name, _ in state["modes"]] if state else []


def _export_stack(names: Sequence[str], registry: _ModeRegistry | None) -> list[str]:
    stack: list[str] = []
    for name in names:
        desc = get_mode(name, registry)
        if desc.is_export_mode and stack:
            stack.pop()
        if desc.export_mode is not None:
            stack.append(desc.export_mode)
    return stack


def pending_export_modes(model: nn.Module) -> list[str]:
    """Export modes still owed by the applied modes, innermost last (apply that one next)."""
    return _export_stack(_mode_names(model), None)


def _check_order(
    applied: Sequence[str], new: Sequence[ModeDescriptor], registry: _ModeRegistry | None
) -> None:
    """Raise ApplyModeError unless ``new`` may be applied, in order, after ``applied``."""
    stack = _export_stack(applied, registry)
    last: ModeDescriptor | None = get_mode(applied[-1], registry) if applied else None
    for desc in new:
        if last is not None:
            desc.assert_compatibility_as_next_mode_of(last)
        if desc.is_export_mode:
            if not stack or stack[-1] != desc.name:
                owed = f"the pending export mode is {stack[-1]!r}" if stack else "none is pending"
                msg = (
                    f"export mode {desc.name!r} cannot be applied here: it exports a mode whose "
                    f"export_mode is {desc.name!r}, and {owed}. Apply the mode it exports first."
                )
                raise ApplyModeError(msg)
            stack.pop()
        if desc.export_mode is not None:
            stack.append(desc.export_mode)
        last = desc


# ------------------------------------------------------------------------------------------
# apply_mode
# ------------------------------------------------------------------------------------------


def _make_config(desc: ModeDescriptor, config: Any) -> ModeloptBaseConfig:
    cls = desc.config_class
    if isinstance(config, cls):
        return config.model_copy(deep=True)
    if isinstance(config, ModeloptBaseConfig):
        msg = (
            f"mode {desc.name!r} takes a {cls.__name__}, got a {type(config).__name__}; pass "
            f"{cls.__name__}(...), a dict of its fields, or None for the defaults"
        )
        raise ApplyModeError(msg)
    if config is not None and not isinstance(config, Mapping):
        msg = (
            f"config of mode {desc.name!r} must be a {cls.__name__}, a dict or None, got "
            f"{type(config).__name__} {config!r}"
        )
        raise ApplyModeError(msg)
    try:
        return cls.model_validate(dict(config or {}))
    except ValidationError as e:
        msg = (
            f"invalid config for mode {desc.name!r} ({cls.__name__}): {_h.pydantic_message(e)}. "
            f"Fix these fields; {cls.__name__}.model_json_schema() lists them all."
        )
        raise ApplyModeError(msg) from e


def parse_modes(
    mode: ModeLike, registry: _ModeRegistry | None = None
) -> list[tuple[ModeDescriptor, Any]]:
    """``mode`` as a list of ``(registered descriptor, config or None)``; a malformed spec or an
    unknown mode raises :class:`~nasviz.errors.ApplyModeError`.
    """
    items: Sequence[Any] = [mode] if isinstance(mode, (str, ModeDescriptor)) else mode
    if isinstance(items, Mapping) or not isinstance(items, Sequence):
        msg = (
            f"mode must be a name, a ModeDescriptor, or a list of names or (name, config) pairs, "
            f"got {type(mode).__name__} {mode!r}"
        )
        raise ApplyModeError(msg)
    out: list[tuple[ModeDescriptor, Any]] = []
    for item in items:
        if isinstance(item, tuple):
            if len(item) != 2:
                msg = f"a mode entry is a (name, config) pair, got {item!r}"
                raise ApplyModeError(msg)
            name, config = item
        else:
            name, config = item, None
        desc = get_mode(name, registry)
        if get_mode(desc.name, registry) is not desc:
            msg = (
                f"{type(desc).__name__} is not the registered mode {desc.name!r}; register it "
                "with @register_mode so that save/restore can find it"
            )
            raise ApplyModeError(msg)
        out.append((desc, config))
    return out


def apply_mode(
    model: nn.Module,
    mode: ModeLike,
    registry: _ModeRegistry | None = None,
    init_state: bool | None = None,
    mode_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Apply one or more modes to ``model``, record them, and return the converted model.

    ``mode`` is a name, a descriptor, a list of them, or a list of ``(mode, config)`` pairs where
    the config is a config object, a dict or ``None`` (defaults). All configs and the order
    (``next_modes``, ``next_prohibited_modes``, export modes) are checked before any conversion.
    ``init_state=True`` requires an unconverted model, ``False`` a converted one, ``None`` either.
    ``mode_kwargs`` are passed to each ``convert`` as keyword arguments. If a conversion fails
    or is interrupted, ``model`` is left as it was (same Parameter objects, same values).
    """
    if not isinstance(model, nn.Module):
        msg = f"apply_mode needs an nn.Module, got {type(model).__name__}"
        raise ApplyModeError(msg)
    applied = _mode_names(model)
    if init_state is True and applied:
        msg = (
            f"init_state=True needs an unconverted model, but modes {applied} were applied; "
            "pass a fresh model or init_state=None"
        )
        raise ApplyModeError(msg)
    if init_state is False and not applied:
        msg = (
            "init_state=False needs a model that already carries modes; this one has none. "
            "Pass init_state=None to start a new state"
        )
        raise ApplyModeError(msg)
    planned = [(d, _make_config(d, c)) for d, c in parse_modes(mode, registry)]
    _check_order(applied, [d for d, _ in planned], registry)
    kwargs = dict(mode_kwargs or {})
    with transaction(model):  # a failed or interrupted conversion leaves the model as it was
        return _apply_planned(model, planned, registry, kwargs)


def _apply_planned(
    model: nn.Module,
    planned: list[tuple[ModeDescriptor, ModeloptBaseConfig]],
    registry: _ModeRegistry | None,
    kwargs: dict[str, Any],
) -> nn.Module:
    state = _state(model) or {"model_class": _h.class_name(type(model)), "modes": []}
    state = {"model_class": state["model_class"], "modes": list(state["modes"])}
    for desc, config in planned:
        if state["modes"]:
            last_name, last_entry = state["modes"][-1]
            get_mode(last_name, registry).update_for_new_mode(
                model, last_entry["config"], last_entry["metadata"]
            )
        result = desc.convert(model, config, **kwargs)
        if not (isinstance(result, tuple) and len(result) == 2):
            msg = f"mode {desc.name!r}: convert must return (model, metadata), got {result!r}"
            raise ApplyModeError(msg)
        new_model, metadata = result
        if not isinstance(new_model, nn.Module):
            msg = f"mode {desc.name!r} failed to convert the model"
            raise ApplyModeError(msg)
        if not isinstance(metadata, dict):
            msg = f"mode {desc.name!r}: convert must return a metadata dict, got {metadata!r}"
            raise ApplyModeError(msg)
        model = new_model
        state["modes"].append((desc.name, {"config": config, "metadata": metadata}))
        model.__dict__[_STATE_ATTR] = state
    return model


# ------------------------------------------------------------------------------------------
# modelopt_state
# ------------------------------------------------------------------------------------------


def modelopt_state(model: nn.Module) -> dict[str, Any]:
    """The model's modelopt state as primitives and tensors (a deep copy, safe to save).

    Calls ``update_for_save`` of the last applied mode first (like ``update_for_new_mode``, only
    the most recent mode may still refine its record).
    """
    state = _state(model)
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
    state = _state(model)
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
            f"restore needs an unconverted model, but modes {_mode_names(model)} were already "
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
        _check_order([], [d for d, _, _ in entries], None)
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
        record["modes"].append((desc.name, {"config": config, "metadata": metadata}))
        work.__dict__[_STATE_ATTR] = record
    return work
