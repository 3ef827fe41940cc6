"""The "fastnas" and "export" modes: descriptors, patching, and save/restore round trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import nasviz.fastnas.convert
import nasviz.space as nv
from nasviz.config import LAYER_TYPES, ExportConfig
from nasviz.dynamic import DynamicModule
from nasviz.errors import ApplyModeError
from nasviz.fastnas import FastNASConfig, FastNASModeDescriptor, FastNASPatchManager
from nasviz.models import REFERENCE_MODELS
from nasviz.modes import get_mode
from nasviz.modes.export import ExportModeDescriptor, export_searchspace
from nasviz.patch import PatchManager
from nasviz.state import modelopt_state, restore, save

SMALL: dict[str, Any] = {k: {"*": {LAYER_TYPES[k].divisor_field: 4}} for k in LAYER_TYPES}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_fastnas_descriptor() -> None:
    mode = get_mode("fastnas")
    assert isinstance(mode, FastNASModeDescriptor)
    assert mode.config_class is FastNASConfig
    assert mode.export_mode == "export"
    assert mode.next_modes is not None and "export" in mode.next_modes
    assert mode.search_algorithm.__name__ == "BinarySearcher"
    assert mode.convert.__name__ == "convert_fastnas_searchspace"
    assert mode.restore.__name__ == "restore_fastnas_searchspace"


def test_export_descriptor() -> None:
    mode = get_mode("export")
    assert isinstance(mode, ExportModeDescriptor)
    assert mode.is_export_mode and mode.config_class is ExportConfig


def test_convert_patches_with_the_fastnas_manager_that_never_samples() -> None:
    model, x = REFERENCE_MODELS["digits_cnn"]()
    nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=x)
    manager = PatchManager.get_manager(model)
    assert isinstance(manager, FastNASPatchManager) and not manager.sample_during_training
    nv.sample(model, "min")
    manager.sample_func = lambda m: nv.sample(m, "max")
    model.train()
    model(x)
    assert nv.get_subnet_config(model) == nv.sample(model, "min")


def test_metadata_records_the_plan_and_the_active_subnet() -> None:
    model, x = REFERENCE_MODELS["resnet_tiny"]()
    nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=x)
    config = nv.sample(model, "random", seed=0)
    name, entry = modelopt_state(model)["modes"][0]
    assert name == "fastnas"
    meta = entry["metadata"]
    assert meta["subnet"] == config and meta["channels_sorted"] is True
    assert [g["name"] for g in meta["plan"]["hparams"]] == list(config)


def _roundtrip(name: str, tmp_path: Path, stage: str) -> None:
    model, x = REFERENCE_MODELS[name]()
    nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=x)
    if stage != "converted":
        nv.sample(model, "random", seed=7)
    if stage == "exported":
        model = nv.export(model)
    with torch.no_grad():
        expected = model(x)
    path = tmp_path / f"{name}.pt"
    save(model, path)
    fresh, _ = REFERENCE_MODELS[name]()
    restore(fresh, path)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=1e-6)
    dynamic = any(isinstance(m, DynamicModule) for m in fresh.modules())
    assert dynamic == (stage != "exported" and bool(nv.search_space(fresh).hparams))
    if stage != "exported":
        assert nv.get_subnet_config(fresh) == nv.get_subnet_config(model)
        assert nv.search_space(fresh).table().equals(nv.search_space(model).table())
        assert isinstance(PatchManager.get_manager(fresh), FastNASPatchManager)


@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_save_restore_selected_and_exported(name: str, tmp_path: Path) -> None:
    _roundtrip(name, tmp_path, "selected")
    _roundtrip(name, tmp_path, "exported")


@pytest.mark.parametrize("name", ["resnet_tiny", "unet_like", "vgg_like"])
def test_save_restore_converted(name: str, tmp_path: Path) -> None:
    _roundtrip(name, tmp_path, "converted")


def test_restore_neither_traces_nor_sorts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = REFERENCE_MODELS["densenet_like"]()
    nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=x)
    nv.sample(model, "centroid")
    save(model, tmp_path / "m.pt")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("restore must not trace or sort")

    monkeypatch.setattr(nasviz.fastnas.convert, "capture", refuse)
    monkeypatch.setattr(nasviz.fastnas.convert, "sort_channels", refuse)
    fresh, _ = REFERENCE_MODELS["densenet_like"]()
    restore(fresh, tmp_path / "m.pt")
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k  # the sorted weights, loaded as they are
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


def test_export_mode_refuses_a_model_without_search_space() -> None:
    with pytest.raises(ApplyModeError, match="has no search space to export"):
        export_searchspace(nn.Linear(2, 2), ExportConfig())
    model, cfg = nn.Linear(2, 2), ExportConfig(strict=False)
    assert export_searchspace(model, cfg)[0] is model
