"""The ``"fastnas"`` mode: turn a model into a searchable one (FastNAS structured pruning).

``convert`` traces the model, couples its channels into groups, converts the prunable layers to
their dynamic twins, physically sorts each group's channels by importance and checks itself
against the original outputs (see :mod:`nasviz.fastnas.convert`); the model is then patched by a
:class:`FastNASPatchManager`. The metadata records the search-space *plan* (layers, hparams,
layouts, static layers with their reasons), the active subnet and the fact that the weights are
sorted, so ``restore`` rebuilds the exact search space on a fresh model without tracing,
without sorting (the saved weights are the sorted ones) and without a dummy input.

Example::

    >>> model = apply_mode(model, "fastnas", mode_kwargs={"dummy_input": x})
    >>> get_mode("fastnas").search_algorithm.__name__
    'BinarySearcher'
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nasviz.config import ModeloptBaseConfig, ModeloptBaseRuleConfig
from nasviz.errors import RestoreError
from nasviz.fastnas.config import FastNASConfig
from nasviz.fastnas.convert import build_search_space, restore_search_space
from nasviz.fastnas.searcher import BinarySearcher
from nasviz.modes.base import (
    ConvertEntrypoint,
    ConvertReturnType,
    MetadataDict,
    ModeDescriptor,
    RestoreEntrypoint,
    UpdateEntrypoint,
    register_mode,
)
from nasviz.patch import AutoNASPatchManager
from nasviz.space import get_record
from nasviz.tracing import Plan

__all__ = [
    "FastNASModeDescriptor",
    "FastNASPatchManager",
    "convert_fastnas_searchspace",
    "restore_fastnas_searchspace",
    "update_fastnas_metadata",
]


class FastNASPatchManager(AutoNASPatchManager):
    """A patch manager for FastNAS (same as AutoNAS except no sampling during training).

    Example::

        >>> FastNASPatchManager(model).sample_during_training
        False
    """

    @property
    def sample_during_training(self) -> bool:
        """FastNAS trains the chosen subnet only: never sample during training."""
        return False


def _rule_config(config: ModeloptBaseConfig) -> ModeloptBaseRuleConfig:
    if not isinstance(config, ModeloptBaseRuleConfig):
        msg = f"fastnas needs a FastNASConfig, got {type(config).__name__}"
        raise TypeError(msg)
    return config


def _subnet(model: nn.Module) -> dict[str, int]:
    record = get_record(model)
    return {} if record is None else {n: hp.active for n, hp in record.hparams.items()}


def convert_fastnas_searchspace(
    model: nn.Module, config: ModeloptBaseConfig, dummy_input: Any | None = None, **_: Any
) -> ConvertReturnType:
    """Convert search space for FastNAS mode with correct patch manager.

    ``dummy_input`` (a tensor, a tuple of positional args or a dict of kwargs) gives tracing the
    tensor shapes and enables the self-check; without it the conversion is more conservative
    (see :func:`nasviz.space.convert`).
    """
    record = build_search_space(model, _rule_config(config), dummy_input)
    FastNASPatchManager(model).patch()
    metadata: MetadataDict = {
        "plan": record.plan.to_dict(),
        "subnet": _subnet(model),
        "channels_sorted": True,
    }
    return model, metadata


def restore_fastnas_searchspace(
    model: nn.Module, config: ModeloptBaseConfig, metadata: MetadataDict
) -> nn.Module:
    """Restore search space for FastNAS mode with correct patch manager.

    Rebuilds the stored plan (no tracing, no channel sorting: the weights loaded afterwards are
    the sorted ones) and selects the stored subnet.
    """
    _rule_config(config)
    if "plan" not in metadata:
        msg = (
            "the saved 'fastnas' state has no search-space plan; it was written by an "
            "incompatible nasviz version"
        )
        raise RestoreError(msg)
    plan = Plan.from_dict(metadata["plan"])
    restore_search_space(model, plan, dict(metadata.get("subnet") or {}))
    FastNASPatchManager(model).patch()
    return model


def update_fastnas_metadata(
    model: nn.Module, config: ModeloptBaseConfig, metadata: MetadataDict
) -> None:
    """Record the active subnet in the metadata (before saving or before the next mode)."""
    if get_record(model) is not None:
        metadata["subnet"] = _subnet(model)


@register_mode
class FastNASModeDescriptor(ModeDescriptor):
    """Class to describe the ``"fastnas"`` mode.

    Example::

        >>> mode = FastNASModeDescriptor()
        >>> mode.name, mode.export_mode, "export" in mode.next_modes
        ('fastnas', 'export', True)
    """

    @property
    def name(self) -> str:
        """Returns the value (str representation) of the mode."""
        return "fastnas"

    @property
    def config_class(self) -> type[ModeloptBaseConfig]:
        """Specifies the config class for the mode."""
        return FastNASConfig

    @property
    def next_modes(self) -> set[str] | None:
        """Modes that must immediately follow this mode."""
        return {"export", "kd_loss", "quantize", "sparse_magnitude", "sparse_gpt"}

    @property
    def export_mode(self) -> str | None:
        """The mode that corresponds to the export mode of this mode."""
        return "export"

    @property
    def search_algorithm(self) -> type[Any]:
        """Specifies the search algorithm to use for this mode (the BinarySearcher)."""
        return BinarySearcher

    @property
    def convert(self) -> ConvertEntrypoint:
        """The mode's entrypoint for converting a model."""
        return convert_fastnas_searchspace

    @property
    def restore(self) -> RestoreEntrypoint:
        """The mode's entrypoint for restoring a model."""
        return restore_fastnas_searchspace

    @property
    def update_for_save(self) -> UpdateEntrypoint:
        """The mode's entrypoint for updating the models state before saving."""
        return update_fastnas_metadata

    @property
    def update_for_new_mode(self) -> UpdateEntrypoint:
        """The mode's entrypoint for updating the models state before new mode."""
        return update_fastnas_metadata
