"""The ``"export"`` mode: freeze the active subnet into plain torch layers.

``convert`` unpatches the model and replaces every dynamic layer, in place, by its ``export()``:
an ordinary ``nn.Conv2d``/``nn.Linear``/... with the active number of channels and the active
weights, so the model's outputs are those of the subnet and it holds no dynamic module any
more. ``restore`` does the same after the earlier modes were restored (the ``"fastnas"`` restore
has selected the subnet recorded when the export was applied), so the saved, smaller weights load.

Example::

    >>> model = apply_mode(model, "export")     # after "fastnas" and a subnet selection
    >>> any(isinstance(m, DynamicModule) for m in model.modules())
    False
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nasviz._utils import parameter_users
from nasviz.config import ExportConfig, ModeloptBaseConfig
from nasviz.dynamic import DynamicModule
from nasviz.dynamic.fastpath import restore_fastpaths
from nasviz.dynamic.params import export_params, followed_attrs, sliced_params
from nasviz.errors import ApplyModeError, NasvizError
from nasviz.export.hf import sync_hf_config
from nasviz.modes.base import (
    ConvertEntrypoint,
    ConvertReturnType,
    MetadataDict,
    ModeDescriptor,
    RestoreEntrypoint,
    register_mode,
)
from nasviz.patch import PatchManager
from nasviz.space import SPACE_ATTR, get_record

__all__ = [
    "ExportModeDescriptor",
    "export_dynamic_modules",
    "export_searchspace",
    "restore_export",
]


# -- replacing the dynamic layers ------------------------------------------------------------------


def export_dynamic_modules(model: nn.Module) -> nn.Module:
    """Replace every dynamic layer of ``model`` (in place) by its plain ``export()``."""
    if isinstance(model, DynamicModule):
        msg = "the model itself is a dynamic layer; export() it directly"
        raise NasvizError(msg)
    tied = parameter_users(model)
    for m in list(model.modules()):
        if sliced_params(m) or followed_attrs(m):
            export_params(m)
            if isinstance(m, nn.Embedding):  # its weight was sliced: the attribute follows
                m.embedding_dim = m.weight.shape[1]
    done: dict[int, nn.Module] = {}
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, DynamicModule):
                if id(child) not in done:
                    done[id(child)] = child.export()
                setattr(parent, child_name, done[id(child)])
    for users in tied.values():
        if len(users) > 1:
            _retie(model, users)
    restore_fastpaths(model)
    model.__dict__.pop(SPACE_ATTR, None)
    sync_hf_config(model)  # a transformers model's config carries the new widths
    return model


def _retie(model: nn.Module, users: list[tuple[str, str]]) -> None:
    """Tie a weight the original model shared (an LM head and its embedding) again, if every
    exported copy is the same slice of it.
    """
    owners = [(model.get_submodule(mname), pname) for mname, pname in users]
    first = getattr(owners[0][0], owners[0][1])
    if not isinstance(first, nn.Parameter):
        return
    for owner, pname in owners[1:]:
        other = getattr(owner, pname)
        if other is first:
            continue
        if not isinstance(other, torch.Tensor) or other.shape != first.shape:
            return
        if not torch.equal(other, first):
            return
    for owner, pname in owners[1:]:
        setattr(owner, pname, first)


# -- the mode --------------------------------------------------------------------------------------


def export_searchspace(model: nn.Module, config: ModeloptBaseConfig, **_: Any) -> ConvertReturnType:
    """Replace the dynamic layers of ``model`` (in place) by plain ones of the active shape."""
    strict = bool(getattr(config, "strict", True))
    record = get_record(model)
    if record is None and strict:
        msg = (
            f"this {type(model).__name__} has no search space to export; convert it with "
            "mode 'fastnas' first (or pass ExportConfig(strict=False) to export whatever "
            "dynamic layers it has)"
        )
        raise ApplyModeError(msg)
    subnet = {} if record is None else {n: hp.active for n, hp in record.hparams.items()}
    if PatchManager.is_patched(model):
        PatchManager.get_manager(model).unpatch()
    export_dynamic_modules(model)
    return model, {"subnet": subnet}


def restore_export(
    model: nn.Module, config: ModeloptBaseConfig, metadata: MetadataDict
) -> nn.Module:
    """Export again after the earlier modes were restored (the saved subnet is selected)."""
    record = get_record(model)
    if record is not None:
        for name, value in dict(metadata.get("subnet") or {}).items():
            if name in record.hparams:
                record.hparams[name].active = value
    export_searchspace(model, config)
    return model


@register_mode
class ExportModeDescriptor(ModeDescriptor):
    """Class to describe the ``"export"`` mode (the export mode of ``"fastnas"``).

    Example::

        >>> ExportModeDescriptor().is_export_mode
        True
    """

    @property
    def name(self) -> str:
        """Returns the value (str representation) of the mode."""
        return "export"

    @property
    def config_class(self) -> type[ModeloptBaseConfig]:
        """Specifies the config class for the mode."""
        return ExportConfig

    @property
    def is_export_mode(self) -> bool:
        """Whether the mode is an export mode."""
        return True

    @property
    def convert(self) -> ConvertEntrypoint:
        """The mode's entrypoint for converting a model."""
        return export_searchspace

    @property
    def restore(self) -> RestoreEntrypoint:
        """The mode's entrypoint for restoring a model."""
        return restore_export
