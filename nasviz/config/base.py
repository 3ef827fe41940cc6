"""The base of every nasviz config: strict pydantic models, readable like a dict.

:class:`ModeloptBaseConfig` refuses unknown keys and validates on assignment; a mode's config
subclasses it (:class:`ExportConfig` is the ``"export"`` mode's).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ExportConfig", "ModeloptBaseConfig"]


class ModeloptBaseConfig(BaseModel):
    """Base of every nasviz config: strict (unknown keys refused), validated on assignment.

    Round-trips through JSON (``model_dump_json`` / ``model_validate_json``) and publishes a JSON
    Schema (``model_json_schema``).

    Example (a per-layer config reads like a dict and refuses a bad value on assignment)::

        >>> rule = FastNASConfig().rule_for("nn.Linear", "fc1").rule
        >>> rule["feature_divisor"], rule.get("kernel_size", "n/a"), rule.keys()
        (32, 'n/a', ['features_ratio', 'feature_divisor'])
        >>> rule.feature_divisor = 0
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for DynamicLinearConfig
        ...
    """

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        validate_default=True,
        populate_by_name=True,
        serialize_by_alias=True,
    )

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style read by field name or alias."""
        try:
            return self[key]
        except KeyError:
            return default

    def __getitem__(self, key: str) -> Any:
        for name, field in type(self).model_fields.items():
            if key in (name, field.alias):
                return getattr(self, name)
        raise KeyError(key)

    def keys(self) -> list[str]:
        """The field keys as a dict has them: each field's alias where it has one (a rule config's
        layer types such as ``"nn.Conv2d"``), else its name.
        """
        return [field.alias or name for name, field in type(self).model_fields.items()]

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` pairs in :meth:`keys` order, as ``dict.items`` gives them."""
        for key in self.keys():
            yield key, self[key]


class ExportConfig(ModeloptBaseConfig):
    """Config of the ``"export"`` mode (no options: it freezes the active subnet)."""

    strict: bool = Field(
        default=True,
        description="Refuse to export a model that has no searchable layers.",
    )
