"""Tests for nasviz.state: apply_mode, ordering, modelopt_state, atomic save, restore.

One file on purpose (longer than ~400 lines): the toy modes at the top are what every test below
applies, saves and restores.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field
from torch import nn

from nasviz import state as state_mod
from nasviz.config import ModeloptBaseConfig
from nasviz.errors import ApplyModeError, NasvizError, RestoreError
from nasviz.modes import ModeDescriptor, ModeRegistry, register_mode
from nasviz.patch import AutoNASPatchManager, PatchManager
from nasviz.state import (
    apply_mode,
    is_converted,
    modelopt_state,
    pending_export_modes,
    restore,
    restore_from_modelopt_state,
    save,
)

# ------------------------------------------------------------------------------------------
# A tiny model and toy modes with known answers
# ------------------------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, width)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class OtherNet(Net):
    pass


_MOD = re.escape(Net.__module__)


class LeakyConfig(ModeloptBaseConfig):
    slope: float = Field(default=0.1, gt=0, lt=1)


class TagConfig(ModeloptBaseConfig):
    value: int = 0


def _leaky(model: nn.Module, slope: float, names: list[str]) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, nn.LeakyReLU(slope))
    model.register_buffer("ts_slope", torch.tensor(slope))


def leaky_convert(
    model: nn.Module, config: Any, *, tag: str | None = None, extra: Any = None
) -> tuple[nn.Module, dict[str, Any]]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    _leaky(model, config.slope, names)
    metadata: dict[str, Any] = {"replaced": names, "tag": tag}
    if extra is not None:
        metadata["extra"] = extra
    return model, metadata


def leaky_restore(model: nn.Module, config: Any, metadata: dict[str, Any]) -> nn.Module:
    _leaky(model, config.slope, metadata["replaced"])
    return model


def mark_followed(model: nn.Module, config: Any, metadata: dict[str, Any]) -> None:
    metadata["followed"] = True


class LeakyMode(ModeDescriptor):
    """Replace ReLUs by LeakyReLU(slope); must be exported by 'ts_export' before it recurs."""

    name = property(lambda self: "ts_leaky")
    config_class = property(lambda self: LeakyConfig)
    convert = property(lambda self: leaky_convert)
    restore = property(lambda self: leaky_restore)
    export_mode = property(lambda self: "ts_export")
    next_prohibited_modes = property(lambda self: {"ts_leaky"})
    update_for_new_mode = property(lambda self: mark_followed)


def export_convert(model: nn.Module, config: Any) -> tuple[nn.Module, dict[str, Any]]:
    del model._buffers["ts_slope"]
    return model, {}


class ExportMode(ModeDescriptor):
    name = property(lambda self: "ts_export")
    config_class = property(lambda self: TagConfig)
    convert = property(lambda self: export_convert)
    restore = property(lambda self: lambda m, c, md: export_convert(m, c)[0])
    is_export_mode = property(lambda self: True)


def tag_convert(model: nn.Module, config: Any) -> tuple[nn.Module, dict[str, Any]]:
    model.register_buffer("ts_tag", torch.tensor(float(config.value)))
    return model, {"value": config.value}


def mark_saved(model: nn.Module, config: Any, metadata: dict[str, Any]) -> None:
    metadata["saved"] = True


class TagMode(ModeDescriptor):
    """Adds a buffer; nothing may follow it."""

    name = property(lambda self: "ts_tag")
    config_class = property(lambda self: TagConfig)
    convert = property(lambda self: tag_convert)
    restore = property(lambda self: lambda m, c, md: tag_convert(m, c)[0])
    next_modes = property(lambda self: set())
    update_for_save = property(lambda self: mark_saved)


def fragile_restore(model: nn.Module, config: Any, metadata: dict[str, Any]) -> nn.Module:
    model.extra = nn.Linear(1, 1)  # mutate, then fail
    model.fc1.weight.data.zero_()
    raise RuntimeError("disk on fire")


class FragileMode(ModeDescriptor):
    name = property(lambda self: "ts_fragile")
    config_class = property(lambda self: TagConfig)
    convert = property(lambda self: lambda m, c: (m, {}))
    restore = property(lambda self: fragile_restore)


def patch_convert(model: nn.Module, config: Any) -> tuple[nn.Module, dict[str, Any]]:
    AutoNASPatchManager(model).patch()
    return model, {}


class PatchMode(ModeDescriptor):
    name = property(lambda self: "ts_patch")
    config_class = property(lambda self: TagConfig)
    convert = property(lambda self: patch_convert)
    restore = property(lambda self: lambda m, c, md: patch_convert(m, c)[0])


class Wrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.inner(x)


class WrapMode(ModeDescriptor):
    """Returns a new model object of another class (convert need not work in place)."""

    name = property(lambda self: "ts_wrap")
    config_class = property(lambda self: TagConfig)
    convert = property(lambda self: lambda m, c: (Wrapper(m), {}))
    restore = property(lambda self: lambda m, c, md: Wrapper(m))


_MODES = [LeakyMode, ExportMode, TagMode, FragileMode, PatchMode, WrapMode]


@pytest.fixture(scope="module", autouse=True)
def toy_modes() -> Iterator[None]:
    for cls in _MODES:
        register_mode(cls)
    yield
    for cls in _MODES:
        ModeRegistry.remove_mode(cls().name)  # type: ignore[abstract]  # _MODES holds concrete modes


def _net(seed: int = 0, width: int = 4) -> Net:
    torch.manual_seed(seed)
    return Net(width)


X = torch.linspace(-1, 1, 15).reshape(5, 3)


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, Any]]:
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    return sd, model(X).detach(), dict(model.__dict__)


def _assert_untouched(model: nn.Module, snap: tuple[Any, Any, Any]) -> None:
    sd, out, attrs = snap
    now = model.state_dict()
    assert now.keys() == sd.keys()
    assert all(torch.equal(now[k], sd[k]) for k in sd)
    assert torch.equal(model(X), out)
    assert model.__dict__.keys() == attrs.keys()
    assert all(model.__dict__[k] is attrs[k] for k in attrs)
    assert not is_converted(model)


# ------------------------------------------------------------------------------------------
# apply_mode
# ------------------------------------------------------------------------------------------


def test_apply_mode_by_name_records_config_and_metadata() -> None:
    model = _net()
    assert not is_converted(model)
    out = apply_mode(model, "ts_leaky")
    assert out is model
    assert isinstance(model.act, nn.LeakyReLU)
    assert model.act.negative_slope == pytest.approx(0.1)
    assert is_converted(model)
    state = modelopt_state(model)
    assert state["state_version"] == 1
    assert isinstance(state["nasviz_version"], str)
    assert state["modes"] == [
        ("ts_leaky", {"config": {"slope": 0.1}, "metadata": {"replaced": ["act"], "tag": None}})
    ]
    assert pending_export_modes(model) == ["ts_export"]


@pytest.mark.parametrize(
    "mode",
    [
        [("ts_leaky", {"slope": 0.25})],
        [("ts_leaky", LeakyConfig(slope=0.25))],
        [(LeakyMode.__new__(LeakyMode), {"slope": 0.25})],
    ],
)
def test_apply_mode_accepts_dicts_config_objects_and_descriptors(mode: Any) -> None:
    if isinstance(mode[0][0], ModeDescriptor):  # an unregistered twin of a registered mode
        with pytest.raises(ApplyModeError, match="LeakyMode is not the registered mode"):
            apply_mode(_net(), mode)
        return
    model = apply_mode(_net(), mode)
    assert model.act.negative_slope == pytest.approx(0.25)


def test_apply_mode_copies_the_config_object() -> None:
    config = LeakyConfig(slope=0.25)
    model = apply_mode(_net(), [("ts_leaky", config)])
    config.slope = 0.5
    assert modelopt_state(model)["modes"][0][1]["config"] == {"slope": 0.25}


def test_invalid_configs_name_the_field_and_leave_the_model_alone() -> None:
    model = _net()
    with pytest.raises(
        ApplyModeError,
        match=r"invalid config for mode 'ts_leaky' \(LeakyConfig\): slope: Input should be less "
        r"than 1 \(input 2\.0\)",
    ):
        apply_mode(model, [("ts_leaky", {"slope": 2.0})])
    with pytest.raises(ApplyModeError, match=r"slop: Extra inputs are not permitted"):
        apply_mode(model, [("ts_leaky", {"slop": 0.1})])
    with pytest.raises(
        ApplyModeError, match="mode 'ts_leaky' takes a LeakyConfig, got a TagConfig"
    ):
        apply_mode(model, [("ts_leaky", TagConfig())])
    with pytest.raises(ApplyModeError, match=r"must be a LeakyConfig, a dict or None, got int 3"):
        apply_mode(model, [("ts_leaky", 3)])  # type: ignore[list-item]  # deliberately malformed spec
    with pytest.raises(ApplyModeError, match=r"a \(name, config\) pair"):
        apply_mode(model, [("ts_leaky", None, None)])  # type: ignore[list-item]  # deliberately malformed spec
    with pytest.raises(ApplyModeError, match=r"unknown mode 'ts_leeky'. Did you mean 'ts_leaky'"):
        apply_mode(model, "ts_leeky")
    assert isinstance(model.act, nn.ReLU)
    assert not is_converted(model)


def test_a_mode_prohibited_after_itself_needs_its_export_first() -> None:
    model = apply_mode(_net(), "ts_leaky")
    with pytest.raises(
        ApplyModeError,
        match=r"mode 'ts_leaky' cannot follow mode 'ts_leaky': 'ts_leaky' prohibits 'ts_leaky' "
        r"right after it\. Apply 'ts_export' first",
    ):
        apply_mode(model, "ts_leaky")
    apply_mode(model, "ts_export")
    assert pending_export_modes(model) == []
    assert "ts_slope" not in dict(model.named_buffers())
    apply_mode(model, [("ts_leaky", {"slope": 0.5})])  # allowed again once exported
    assert [name for name, _ in modelopt_state(model)["modes"]] == [
        "ts_leaky",
        "ts_export",
        "ts_leaky",
    ]


def test_an_export_mode_needs_a_mode_to_export() -> None:
    model = _net()
    with pytest.raises(
        ApplyModeError,
        match=r"export mode 'ts_export' cannot be applied here: .*none is pending\. Apply the "
        "mode it exports first",
    ):
        apply_mode(model, "ts_export")
    model = apply_mode(model, ["ts_leaky", "ts_export"])  # type: ignore[assignment]  # convert returns nn.Module
    with pytest.raises(ApplyModeError, match="export mode 'ts_export' cannot be applied here"):
        apply_mode(model, "ts_export")


def test_nothing_may_follow_a_final_mode() -> None:
    model = apply_mode(_net(), "ts_tag")
    with pytest.raises(
        ApplyModeError, match=r"mode 'ts_leaky' cannot follow mode 'ts_tag': no mode may follow"
    ):
        apply_mode(model, "ts_leaky")


def test_a_bad_list_is_refused_before_any_conversion() -> None:
    model = _net()
    snap = _snapshot(model)
    with pytest.raises(ApplyModeError, match="mode 'ts_leaky' cannot follow mode 'ts_leaky'"):
        apply_mode(model, ["ts_leaky", "ts_leaky"])
    _assert_untouched(model, snap)


def test_update_hooks_and_mode_kwargs() -> None:
    model = apply_mode(_net(), "ts_leaky", mode_kwargs={"tag": "run-1"})
    assert modelopt_state(model)["modes"][0][1]["metadata"] == {"replaced": ["act"], "tag": "run-1"}
    model = apply_mode(model, ["ts_export", "ts_tag"])
    modes = modelopt_state(model)["modes"]
    # update_for_new_mode runs on the last mode only, each time a mode is added
    assert modes[0][1]["metadata"]["followed"] is True
    assert modes[2][1]["metadata"] == {"value": 0, "saved": True}  # update_for_save


def test_init_state_flag() -> None:
    model = apply_mode(_net(), "ts_leaky", init_state=True)
    with pytest.raises(
        ApplyModeError,
        match=r"init_state=True needs an unconverted model, but "
        r"modes \['ts_leaky'\] were applied",
    ):
        apply_mode(model, "ts_export", init_state=True)
    with pytest.raises(ApplyModeError, match="init_state=False needs a model that already"):
        apply_mode(_net(), "ts_leaky", init_state=False)
    apply_mode(model, "ts_export", init_state=False)
    assert pending_export_modes(model) == []


def test_apply_mode_refuses_non_modules_and_odd_mode_arguments() -> None:
    with pytest.raises(ApplyModeError, match=r"apply_mode needs an nn.Module, got int"):
        apply_mode(3, "ts_leaky")  # type: ignore[arg-type]
    with pytest.raises(ApplyModeError, match="mode must be a name, a ModeDescriptor, or a list"):
        apply_mode(_net(), {"ts_leaky": None})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# modelopt_state
# ------------------------------------------------------------------------------------------


def test_modelopt_state_is_a_plain_deep_copy_that_loads_with_weights_only() -> None:
    model = apply_mode(_net(), "ts_leaky", mode_kwargs={"extra": {"t": torch.ones(2), 3: (1, "a")}})
    state = modelopt_state(model)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert loaded["modes"][0][0] == "ts_leaky"
    assert torch.equal(loaded["modes"][0][1]["metadata"]["extra"]["t"], torch.ones(2))
    assert loaded["modes"][0][1]["metadata"]["extra"][3] == (1, "a")
    state["modes"][0][1]["metadata"]["replaced"].append("x")
    state["modes"][0][1]["metadata"]["extra"]["t"].zero_()
    again = modelopt_state(model)["modes"][0][1]["metadata"]
    assert again["replaced"] == ["act"]
    assert torch.equal(again["extra"]["t"], torch.ones(2))


def test_modelopt_state_refuses_objects_that_would_need_code_to_load() -> None:
    model = apply_mode(_net(), "ts_leaky", mode_kwargs={"extra": {"obj": object()}})
    with pytest.raises(
        NasvizError, match=r"mode 'ts_leaky': metadata\['extra'\]\['obj'\] is a object"
    ):
        modelopt_state(model)
    assert modelopt_state(_net())["modes"] == []


# ------------------------------------------------------------------------------------------
# save / restore
# ------------------------------------------------------------------------------------------


def test_save_restore_round_trip_onto_a_fresh_instance(tmp_path: Path) -> None:
    model = apply_mode(_net(seed=1), [("ts_leaky", {"slope": 0.3}), ("ts_export", None)])
    model = apply_mode(model, [("ts_tag", {"value": 7})])
    path = tmp_path / "model.pt"
    save(model, path)
    fresh = _net(seed=2)
    fresh_id = id(fresh)
    assert not torch.equal(fresh(X), model(X))
    out = restore(fresh, path)
    assert out is fresh and id(fresh) == fresh_id
    assert type(fresh) is Net
    assert isinstance(fresh.act, nn.LeakyReLU)
    assert fresh.act.negative_slope == pytest.approx(0.3)
    assert float(fresh.ts_tag) == 7.0  # type: ignore[arg-type]  # torch: Tensor | Module
    assert "ts_slope" not in dict(fresh.named_buffers())
    assert torch.equal(fresh(X), model(X))
    assert modelopt_state(fresh) == modelopt_state(model)


@settings(max_examples=10, deadline=None)
@given(slope=st.floats(0.01, 0.99), width=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_round_trip_property(slope: float, width: int, seed: int) -> None:
    model = apply_mode(_net(seed, width), [("ts_leaky", {"slope": slope})])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.pt"
        save(model, path)
        fresh = restore(Net(width), path)
    assert fresh.act.negative_slope == pytest.approx(slope)
    assert torch.equal(fresh(X), model(X))


def test_restore_re_points_patched_methods_at_the_given_model(tmp_path: Path) -> None:
    model = apply_mode(_net(), "ts_patch")
    save(model, tmp_path / "m.pt")
    fresh = restore(_net(seed=3), tmp_path / "m.pt")
    assert PatchManager.is_patched(fresh)
    assert fresh.forward.__self__ is fresh  # type: ignore[attr-defined]
    assert PatchManager.get_manager(fresh).model is fresh
    assert torch.equal(fresh(X), model(X))
    assert not any(p is q for p in fresh.parameters() for q in model.parameters())


def test_restore_of_a_mode_that_returns_a_new_object(tmp_path: Path) -> None:
    net = _net(seed=1)
    model = apply_mode(net, ["ts_leaky", "ts_wrap"])
    assert isinstance(model, Wrapper) and model.inner is net
    assert torch.equal(model(X), -net(X))
    save(model, tmp_path / "m.pt")
    fresh = _net(seed=2)
    assert restore(fresh, tmp_path / "m.pt") is fresh
    assert type(fresh) is Wrapper  # the given object took the restored class
    assert torch.equal(fresh(X), model(X))
    save(fresh, tmp_path / "again.pt")  # still recorded as saved from a Net
    assert torch.equal(restore(_net(seed=3), tmp_path / "again.pt")(X), model(X))


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pt"
    save(apply_mode(_net(seed=1), "ts_leaky"), path)
    before = path.read_bytes()

    def broken_save(obj: Any, f: Any) -> None:
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(state_mod.torch, "save", broken_save)  # type: ignore[attr-defined]  # patching the module-level torch
    with pytest.raises(OSError, match="disk full"):
        save(apply_mode(_net(seed=2), "ts_tag"), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pt"]  # no temp file left behind
    assert isinstance(restore(_net(), path).act, nn.LeakyReLU)


def test_restore_onto_another_class_names_both(tmp_path: Path) -> None:
    save(apply_mode(_net(), "ts_leaky"), tmp_path / "m.pt")
    other = OtherNet()
    snap = _snapshot(other)
    with pytest.raises(
        RestoreError,
        match=rf"was saved from a {_MOD}\.Net but the model is a {_MOD}\.OtherNet; "
        rf"restore onto a fresh instance of {_MOD}\.Net",
    ):
        restore(other, tmp_path / "m.pt")
    _assert_untouched(other, snap)


def test_a_shape_mismatch_names_the_key_and_leaves_the_model_untouched(tmp_path: Path) -> None:
    save(apply_mode(_net(width=4), "ts_leaky"), tmp_path / "m.pt")
    wider = _net(width=5)
    snap = _snapshot(wider)
    with pytest.raises(
        RestoreError,
        match=r"weight 'fc1\.weight' has shape \(4, 3\) in the file but \(5, 3\) in the restored "
        "model; build the fresh model with the same constructor arguments",
    ):
        restore(wider, tmp_path / "m.pt")
    _assert_untouched(wider, snap)
    assert isinstance(wider.act, nn.ReLU)


def test_a_failing_mode_restore_leaves_the_model_untouched(tmp_path: Path) -> None:
    save(apply_mode(_net(), "ts_fragile"), tmp_path / "m.pt")
    fresh = _net(seed=4)
    snap = _snapshot(fresh)
    with pytest.raises(
        RestoreError,
        match=r"restoring mode 'ts_fragile' \(entry 0\) failed: RuntimeError: disk "
        "on fire; the given model was left untouched",
    ):
        restore(fresh, tmp_path / "m.pt")
    _assert_untouched(fresh, snap)


def _write(path: Path, payload: Any) -> Path:
    torch.save(payload, path)
    return path


def _payload(modes: Any, version: int = 1) -> dict[str, Any]:
    return {
        "modelopt_state": {"nasviz_version": "9.9", "state_version": version, "modes": modes},
        "model_state_dict": _net().state_dict(),
        "model_class": f"{Net.__module__}.Net",
    }


def test_unknown_versions_modes_and_files_are_refused_with_the_fix(tmp_path: Path) -> None:
    fresh = _net()
    snap = _snapshot(fresh)
    with pytest.raises(
        RestoreError,
        match=r"modelopt state version 99 \(written by nasviz '9\.9'\) is not readable by nasviz "
        r".*reads versions \[1\]; restore it with the nasviz version that wrote it, or upgrade",
    ):
        restore(fresh, _write(tmp_path / "v.pt", _payload([], version=99)))
    with pytest.raises(
        RestoreError,
        match=r"the state uses mode 'ts_nope', which is not registered .*import the module "
        "that registers it",
    ):
        restore(fresh, _write(tmp_path / "u.pt", _payload([("ts_nope", {"config": {}})])))
    bad = [("ts_leaky", {"config": {"slope": 5.0}, "metadata": {"replaced": []}})]
    with pytest.raises(RestoreError, match=r"saved config of mode 'ts_leaky' is invalid .*slope"):
        restore(fresh, _write(tmp_path / "c.pt", _payload(bad)))
    with pytest.raises(RestoreError, match=r"is not a nasviz checkpoint: expected keys"):
        restore(fresh, _write(tmp_path / "n.pt", {"weights": 1}))
    with pytest.raises(RestoreError, match=r"could not be loaded with torch\.load\(weights_only"):
        restore(fresh, _write(tmp_path / "p.pt", _net()))  # a pickled module: code, refused
    with pytest.raises(FileNotFoundError):
        restore(fresh, tmp_path / "missing.pt")
    _assert_untouched(fresh, snap)


def test_restore_needs_an_unconverted_model(tmp_path: Path) -> None:
    save(apply_mode(_net(), "ts_leaky"), tmp_path / "m.pt")
    converted = apply_mode(_net(), "ts_tag")
    with pytest.raises(RestoreError, match=r"needs an unconverted model, but modes \['ts_tag'\]"):
        restore(converted, tmp_path / "m.pt")


def test_restore_from_modelopt_state_rebuilds_the_architecture_only() -> None:
    model = apply_mode(_net(seed=1), [("ts_leaky", {"slope": 0.2})])
    fresh = _net(seed=2)
    weight = fresh.fc1.weight.detach().clone()
    assert restore_from_modelopt_state(fresh, modelopt_state(model)) is fresh
    assert fresh.act.negative_slope == pytest.approx(0.2)
    assert torch.equal(fresh.fc1.weight, weight)
    assert pending_export_modes(fresh) == ["ts_export"]
    with pytest.raises(RestoreError, match="not a nasviz modelopt state"):
        restore_from_modelopt_state(_net(), {"modes": "oops"})
    bad_order = {"state_version": 1, "modes": [("ts_export", {"config": {}, "metadata": {}})]}
    with pytest.raises(RestoreError, match="saved modes are in an invalid order: export mode"):
        restore_from_modelopt_state(_net(), bad_order)
