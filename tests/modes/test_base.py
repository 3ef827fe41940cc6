"""Tests for nasviz.modes: ModeDescriptor defaults, ordering checks, the registry, reprs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from torch import nn

from nasviz.config import ModeloptBaseConfig
from nasviz.errors import ApplyModeError, NasvizError
from nasviz.modes import (
    ModeDescriptor,
    ModeRegistry,
    NoSearchAlgorithmError,
    get_mode,
    register_mode,
    registered_modes,
)
from nasviz.modes.base import _ModeRegistry


class TmConfig(ModeloptBaseConfig):
    value: int = 1


def _convert(model: nn.Module, config: ModeloptBaseConfig) -> tuple[nn.Module, dict[str, Any]]:
    return model, {}


def _restore(model: nn.Module, config: ModeloptBaseConfig, metadata: dict[str, Any]) -> nn.Module:
    return model


class _Base(ModeDescriptor):
    @property
    def config_class(self) -> type[ModeloptBaseConfig]:
        return TmConfig

    @property
    def convert(self) -> Any:
        return _convert

    @property
    def restore(self) -> Any:
        return _restore


class TmPlain(_Base):
    @property
    def name(self) -> str:
        return "tm_plain"


class TmSearch(_Base):
    """Must be followed by its export mode, and never by itself."""

    @property
    def name(self) -> str:
        return "tm_search"

    @property
    def export_mode(self) -> str | None:
        return "tm_export"

    @property
    def next_prohibited_modes(self) -> set[str] | None:
        return {"tm_search"}


class TmExport(_Base):
    @property
    def name(self) -> str:
        return "tm_export"

    @property
    def is_export_mode(self) -> bool:
        return True

    @property
    def next_modes(self) -> set[str] | None:
        return {"tm_plain", "tm_search"}


class TmFinal(_Base):
    @property
    def name(self) -> str:
        return "tm_final"

    @property
    def next_modes(self) -> set[str] | None:
        return set()


_OTHER = _ModeRegistry("tm_other_registry")


class TmElsewhere(_Base):
    @property
    def name(self) -> str:
        return "tm_elsewhere"


@pytest.fixture(scope="module", autouse=True)
def toy_modes() -> Iterator[None]:
    classes = [TmPlain, TmSearch, TmExport, TmFinal]
    for cls in classes:
        register_mode(cls)
    _OTHER.register_mode(TmElsewhere)
    yield
    for name in ["tm_plain", "tm_search", "tm_export", "tm_final"]:
        ModeRegistry.remove_mode(name)
    _OTHER.remove_mode("tm_elsewhere")


def test_defaults_of_a_minimal_mode() -> None:
    mode = get_mode("tm_plain")
    assert isinstance(mode, TmPlain)
    assert mode.name == "tm_plain"
    assert mode.config_class is TmConfig
    assert mode.export_mode is None
    assert mode.is_export_mode is False
    assert mode.next_modes is None
    assert mode.next_prohibited_modes is None
    assert mode.require_model_like is False
    config, metadata = TmConfig(value=3), {"a": [1]}
    assert mode.update_for_new_mode(nn.Linear(1, 1), config, metadata) is None
    assert mode.update_for_save(nn.Linear(1, 1), config, metadata) is None
    assert config == TmConfig(value=3)
    assert metadata == {"a": [1]}


def test_search_algorithm_of_a_mode_without_one_raises() -> None:
    with pytest.raises(NoSearchAlgorithmError, match="mode 'tm_plain' has no search algorithm"):
        _ = get_mode("tm_plain").search_algorithm
    assert issubclass(NoSearchAlgorithmError, NotImplementedError)
    assert issubclass(NoSearchAlgorithmError, NasvizError)


def test_abstract_members_must_be_implemented() -> None:
    with pytest.raises(TypeError):
        ModeDescriptor()  # type: ignore[abstract]

    class Incomplete(ModeDescriptor):
        @property
        def name(self) -> str:
            return "tm_incomplete"

    with pytest.raises(ApplyModeError, match=r"cannot register Incomplete: .*implement name"):
        register_mode(Incomplete)
    assert "tm_incomplete" not in registered_modes()


def test_register_mode_returns_the_class_and_refuses_duplicates() -> None:
    assert get_mode("tm_search") is get_mode("tm_search")  # one instance per mode

    class Again(TmPlain):
        pass

    with pytest.raises(ApplyModeError, match=r"mode 'tm_plain' is already registered .*by TmPlain"):
        register_mode(Again)
    # a name taken in another registry is refused too
    with pytest.raises(ApplyModeError, match="'tm_elsewhere' is already registered"):

        @register_mode
        class Elsewhere(TmElsewhere):
            pass


def test_register_mode_refuses_non_descriptors() -> None:
    with pytest.raises(ApplyModeError, match="decorates ModeDescriptor subclasses"):
        register_mode(int)  # type: ignore[type-var]

    class Nameless(TmPlain):
        @property
        def name(self) -> str:
            return ""

    with pytest.raises(ApplyModeError, match=r"Nameless.name must be a non-empty string"):
        register_mode(Nameless)


def test_register_mode_as_decorator_keeps_the_class() -> None:
    class TmDecorated(TmPlain):
        @property
        def name(self) -> str:
            return "tm_decorated"

    try:
        assert register_mode(TmDecorated) is TmDecorated
        assert type(get_mode("tm_decorated")) is TmDecorated
    finally:
        ModeRegistry.remove_mode("tm_decorated")
    assert "tm_decorated" not in registered_modes()


def test_unknown_mode_suggests_close_names_and_lists_registered() -> None:
    with pytest.raises(
        ApplyModeError,
        match=r"unknown mode 'tm_serch'\. Did you mean 'tm_search'( or '\w+')*\? Registered "
        r"modes: .*'tm_export', 'tm_final', 'tm_plain', 'tm_search'.*@register_mode",
    ):
        get_mode("tm_serch")
    with pytest.raises(ApplyModeError, match=r"unknown mode 'zzz'. Registered modes"):
        get_mode("zzz")
    with pytest.raises(ApplyModeError, match="by its name or its ModeDescriptor, got int 3"):
        get_mode(3)  # type: ignore[arg-type]


def test_get_mode_returns_descriptors_as_they_are_and_respects_a_registry() -> None:
    mode = TmPlain()
    assert get_mode(mode) is mode
    assert isinstance(get_mode("tm_elsewhere"), TmElsewhere)  # all registries are searched
    assert isinstance(get_mode("tm_elsewhere", registry=_OTHER), TmElsewhere)
    with pytest.raises(ApplyModeError, match=r"unknown mode 'tm_plain'.*Registered modes: "):
        get_mode("tm_plain", registry=_OTHER)
    assert registered_modes(_OTHER) == ["tm_elsewhere"]
    assert isinstance(_OTHER.get_mode("tm_elsewhere"), TmElsewhere)
    assert _OTHER.get("tm_plain") is None
    with pytest.raises(ApplyModeError, match="unknown mode 'tm_plain'"):
        _OTHER.get_mode("tm_plain")
    names = registered_modes()
    assert names == sorted(names)
    assert {"tm_plain", "tm_search", "tm_export", "tm_final", "tm_elsewhere"} <= set(names)


def test_compatibility_next_modes() -> None:
    get_mode("tm_search").assert_compatibility_as_next_mode_of("tm_export")
    get_mode("tm_plain").assert_compatibility_as_next_mode_of(get_mode("tm_export"))
    with pytest.raises(
        ApplyModeError,
        match=r"mode 'tm_final' cannot follow mode 'tm_export': 'tm_export' must be followed "
        r"immediately by 'tm_plain', 'tm_search'\.",
    ):
        get_mode("tm_final").assert_compatibility_as_next_mode_of("tm_export")
    with pytest.raises(ApplyModeError, match="no mode may follow 'tm_final'"):
        get_mode("tm_plain").assert_compatibility_as_next_mode_of("tm_final")


def test_compatibility_prohibited_modes_name_the_fix() -> None:
    get_mode("tm_plain").assert_compatibility_as_next_mode_of("tm_search")
    with pytest.raises(
        ApplyModeError,
        match=r"mode 'tm_search' cannot follow mode 'tm_search': 'tm_search' prohibits "
        r"'tm_search' right after it\. Apply 'tm_export' first",
    ):
        get_mode("tm_search").assert_compatibility_as_next_mode_of("tm_search")
    with pytest.raises(ApplyModeError, match="unknown mode 'nope'"):
        get_mode("tm_plain").assert_compatibility_as_next_mode_of("nope")


def test_reprs_are_for_people() -> None:
    assert repr(get_mode("tm_plain")) == "TmPlain(name='tm_plain', config_class=TmConfig)"
    assert repr(get_mode("tm_search")) == (
        "TmSearch(name='tm_search', config_class=TmConfig, export_mode='tm_export', "
        "next_prohibited_modes={'tm_search'})"
    )
    assert repr(get_mode("tm_export")) == (
        "TmExport(name='tm_export', config_class=TmConfig, is_export_mode=True, "
        "next_modes={'tm_plain', 'tm_search'})"
    )
    assert repr(get_mode("tm_final")).endswith("next_modes={})")
    assert repr(_OTHER) == "_ModeRegistry('tm_other_registry', modes=['tm_elsewhere'])"


def test_remove_mode_of_an_unknown_name_raises() -> None:
    with pytest.raises(ApplyModeError, match="mode 'tm_none' is not in registry 'nasviz'"):
        ModeRegistry.remove_mode("tm_none")
    assert "tm_elsewhere" in _OTHER
    assert "tm_plain" not in _OTHER
