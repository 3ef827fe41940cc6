"""Applying modes to a model: parse a mode spec, check the order, convert, record.

Every mode applied to a model is recorded on the model itself, in one attribute
(``model._nasviz_state``, :data:`STATE_ATTR`), as ``(mode name, {"config": config, "metadata":
metadata})``. :func:`apply_mode` checks every config and the order of the modes (``next_modes``,
export modes) before converting anything, and converts inside a transaction, so a failed or
interrupted conversion leaves the model as it was. Saving and restoring that record is
:mod:`nasviz.state`'s (which re-exports these names, their public path).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from torch import nn

from nasviz import _state_helpers as _h
from nasviz._transaction import transaction
from nasviz.config import ModeloptBaseConfig
from nasviz.errors import ApplyModeError
from nasviz.modes.base import ModeDescriptor, _ModeRegistry, get_mode

__all__ = [
    "STATE_ATTR",
    "ModeLike",
    "apply_mode",
    "check_order",
    "is_converted",
    "mode_names",
    "parse_modes",
    "pending_export_modes",
    "record_mode",
    "state_record",
]

#: the attribute of a model that holds its record of applied modes
STATE_ATTR = "_nasviz_state"

_ModeType = str | ModeDescriptor
_ConfigLike = ModeloptBaseConfig | Mapping[str, Any] | None
#: a mode, a list of modes, or a list of ``(mode, config)`` pairs
ModeLike = _ModeType | Sequence[_ModeType | tuple[_ModeType, _ConfigLike]]


# ------------------------------------------------------------------------------------------
# The record on the model
# ------------------------------------------------------------------------------------------


def state_record(model: nn.Module) -> dict[str, Any] | None:
    """The record of the modes applied to ``model`` (``None``: none ever were)."""
    state: dict[str, Any] | None = model.__dict__.get(STATE_ATTR)
    return state


def record_mode(
    model: nn.Module, record: dict[str, Any], name: str, config: Any, metadata: dict[str, Any]
) -> None:
    """Append mode ``name`` with its config and metadata to ``record``, the record that
    ``model`` then carries.
    """
    record["modes"].append((name, {"config": config, "metadata": metadata}))
    model.__dict__[STATE_ATTR] = record


def is_converted(model: nn.Module) -> bool:
    """Whether at least one mode has been applied to ``model``."""
    state = state_record(model)
    return bool(state and state["modes"])


def mode_names(model: nn.Module) -> list[str]:
    """The names of the modes applied to ``model``, in order."""
    state = state_record(model)
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
    return _export_stack(mode_names(model), None)


def check_order(
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
    applied = mode_names(model)
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
    check_order(applied, [d for d, _ in planned], registry)
    kwargs = dict(mode_kwargs or {})
    with transaction(model):  # a failed or interrupted conversion leaves the model as it was
        return _apply_planned(model, planned, registry, kwargs)


def _apply_planned(
    model: nn.Module,
    planned: list[tuple[ModeDescriptor, ModeloptBaseConfig]],
    registry: _ModeRegistry | None,
    kwargs: dict[str, Any],
) -> nn.Module:
    state = state_record(model) or {"model_class": _h.class_name(type(model)), "modes": []}
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
        record_mode(model, state, desc.name, config, metadata)
    return model
