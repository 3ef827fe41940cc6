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

from torch import nn

from nasviz._build import export_dynamic_modules, get_record
from nasviz.config import ExportConfig, ModeloptBaseConfig
from nasviz.errors import ApplyModeError
from nasviz.modes.base import (
    ConvertEntrypoint,
    ConvertReturnType,
    MetadataDict,
    ModeDescriptor,
    RestoreEntrypoint,
    register_mode,
)
from nasviz.patch import PatchManager

__all__ = ["ExportModeDescriptor", "export_searchspace", "restore_export"]


def export_searchspace(model: nn.Module, config: ModeloptBaseConfig, **_: Any) -> ConvertReturnType:
    """Replace the dynamic layers of ``model`` (in place) by plain ones of the active shape."""
    strict = bool(getattr(config, "strict", True))
    record = get_record(model)
    if record is None and strict:
        raise ApplyModeError(
            f"this {type(model).__name__} has no search space to export; convert it with "
            "mode 'fastnas' first (or pass ExportConfig(strict=False) to export whatever "
            "dynamic layers it has)"
        )
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
