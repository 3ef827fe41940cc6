"""Code that moved keeps its former import paths: each name there is the very same object.

The tidy-up of issue #13 split modules along their seams (``config`` into a package, the hook
life cycle into ``hooks``, BatchNorm calibration into ``calibrate``, applying modes into
``modes.apply``, ``GroupedHparam`` into ``dynamic.grouped``); the modules users imported from
re-export what left them.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

import nasviz as nv
from nasviz.recover import Distiller

#: (former module, name, module it lives in now)
MOVED = [
    ("nasviz.extension", "HooksHandle", "nasviz.hooks"),
    ("nasviz.patch", "ForwardLoop", "nasviz.calibrate"),
    ("nasviz.patch", "calibration_loop", "nasviz.calibrate"),
    ("nasviz.patch", "recalibrate_bn", "nasviz.calibrate"),
    ("nasviz.state", "ModeLike", "nasviz.modes.apply"),
    ("nasviz.state", "apply_mode", "nasviz.modes.apply"),
    ("nasviz.state", "is_converted", "nasviz.modes.apply"),
    ("nasviz.state", "parse_modes", "nasviz.modes.apply"),
    ("nasviz.state", "pending_export_modes", "nasviz.modes.apply"),
    ("nasviz.dynamic.conv", "GroupedHparam", "nasviz.dynamic.grouped"),
    ("nasviz.config", "ModeloptBaseConfig", "nasviz.config.base"),
    ("nasviz.config", "ExportConfig", "nasviz.config.base"),
    ("nasviz.config", "LAYER_TYPES", "nasviz.config.layers"),
    ("nasviz.config", "LayerConfig", "nasviz.config.layers"),
    ("nasviz.config", "layer_config_class", "nasviz.config.layers"),
    ("nasviz.config", "ModeloptBaseRuleConfig", "nasviz.config.rules"),
    ("nasviz.config", "RuleMatch", "nasviz.config.rules"),
    ("nasviz.config", "build_rule_config", "nasviz.config.rules"),
    ("nasviz.widgets.config_editor", "html_table", "nasviz.widgets._base"),
]


@pytest.mark.parametrize(("former", "name", "home"), MOVED)
def test_a_moved_name_is_the_same_object_at_its_former_path(
    former: str, name: str, home: str
) -> None:
    old, new = importlib.import_module(former), importlib.import_module(home)
    assert getattr(old, name) is getattr(new, name)
    assert name in old.__all__


def test_derived_layer_configs_keep_their_public_module() -> None:
    config = importlib.import_module("nasviz.config")
    cls = config.DynamicConv2dConfig
    assert cls.__module__ == "nasviz.config"
    assert getattr(config, cls.__name__) is cls
    assert nv.FastNASConfig.__module__ == "nasviz.fastnas.config"


def test_profile_re_exports_every_cost_name() -> None:
    cost, profile = (importlib.import_module(m) for m in ("nasviz.cost", "nasviz.profile"))
    assert profile.__all__ == cost.__all__
    assert all(getattr(profile, n) is getattr(cost, n) for n in cost.__all__)


def test_distill_takes_the_parameters_of_distiller() -> None:
    params = inspect.signature(nv.distill).parameters
    expected = list(inspect.signature(Distiller).parameters.values())
    assert list(params.values()) == expected
    assert params["epochs"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "DistillResult" in str(inspect.signature(nv.distill).return_annotation)
