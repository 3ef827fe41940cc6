"""Rule configs: defaults equal the reference, glob rules resolve in order, bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from nasviz.config import (
    LAYER_TYPES,
    DynamicConv2dConfig,
    DynamicGroupNormConfig,
    DynamicLinearConfig,
    ExportConfig,
    ModeloptBaseConfig,
    RuleMatch,
    layer_config_class,
)
from nasviz.fastnas import FastNASConfig

REFERENCE = Path(__file__).parent / "data" / "fastnas_default_config.json"


def test_default_config_equals_reference_json() -> None:
    """The 16 reference layer types keep the reference defaults exactly; nasviz's further layer
    families (attention, RMSNorm, transformers' Conv1D) follow them.
    """
    reference = json.loads(REFERENCE.read_text())
    dump = FastNASConfig().model_dump()
    assert {k: dump[k] for k in reference} == reference


def test_sixteen_layer_types_in_reference_order() -> None:
    reference = list(json.loads(REFERENCE.read_text()))
    assert len(reference) == 16
    assert list(FastNASConfig().model_dump())[:16] == reference
    assert list(LAYER_TYPES)[:16] == reference
    assert FastNASConfig.layer_types() == list(LAYER_TYPES)


def test_json_round_trip_and_schema() -> None:
    cfg = FastNASConfig(**{"nn.Conv2d": {"*": {"channel_divisor": 8}, "*head*": None}})
    back = FastNASConfig.model_validate_json(cfg.model_dump_json())
    assert back == cfg
    schema = FastNASConfig.model_json_schema()
    assert "nn.Conv2d" in schema["properties"]


def test_unnested_layer_config_is_short_for_star() -> None:
    cfg = FastNASConfig(**{"nn.Linear": {"feature_divisor": 4}})
    rules = cfg.rules("nn.Linear")
    assert rules is not None
    assert list(rules) == ["*"]
    rule = rules["*"]
    assert isinstance(rule, DynamicLinearConfig)
    assert rule.feature_divisor == 4  # type: ignore[attr-defined]  # LayerConfig fields are generated
    # unset fields take the layer type's defaults
    assert rule.features_ratio == DynamicLinearConfig().features_ratio  # type: ignore[attr-defined]  # LayerConfig fields are generated


def test_later_glob_wins_and_none_switches_off() -> None:
    cfg = FastNASConfig(
        **{
            "nn.Conv2d": {
                "*": {"channel_divisor": 8},
                "layer1.*": {"channel_divisor": 4},
                "*head*": None,
            }
        }
    )
    m = cfg.rule_for("nn.Conv2d", "layer1.0.conv1")
    assert m.pattern == "layer1.*"
    assert m.rule is not None and m.rule.channel_divisor == 4  # type: ignore[attr-defined]  # LayerConfig fields are generated
    m = cfg.rule_for("nn.Conv2d", "layer2.0.conv1")
    assert m.pattern == "*"
    assert m.rule is not None and m.rule.channel_divisor == 8  # type: ignore[attr-defined]  # LayerConfig fields are generated
    m = cfg.rule_for("nn.Conv2d", "layer1.head")
    assert m == RuleMatch(None, "*head*")
    assert not m.enabled


def test_order_matters() -> None:
    cfg = FastNASConfig(**{"nn.Conv2d": {"*head*": None, "*": {"channel_divisor": 8}}})
    assert cfg.rule_for("nn.Conv2d", "head").pattern == "*"
    assert cfg.rule_for("nn.Conv2d", "head").rule is not None


def test_whole_type_switched_off_and_no_match() -> None:
    cfg = FastNASConfig(**{"nn.Linear": None, "nn.Conv2d": {"layer1.*": {}}})
    assert cfg.rule_for("nn.Linear", "fc") == RuleMatch(None, None)
    assert cfg.rule_for("nn.Conv2d", "stem") == RuleMatch(None, None)
    assert cfg.rule_for("nn.Conv2d", "layer1.conv").enabled


def test_assignment_is_validated() -> None:
    cfg = FastNASConfig()
    cfg.nn_conv2d = {"*": {"channel_divisor": 16}}  # type: ignore[attr-defined]
    assert cfg.rule_for("nn.Conv2d", "x").rule.channel_divisor == 16
    with pytest.raises(ValidationError, match="channel_divisor must be an integer >= 1"):
        cfg.nn_conv2d = {"*": {"channel_divisor": 0}}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"nn.Conv2d": {"*": {"channels_ratio": [1.5]}}}, r"channels_ratio.*ratios in \(0, 1\]"),
        ({"nn.Conv2d": {"*": {"channels_ratio": [0.0]}}}, r"got 0\.0"),
        ({"nn.Conv2d": {"*": {"channels_ratio": []}}}, "at least one ratio"),
        ({"nn.Linear": {"*": {"features_ratio": ["half"]}}}, "features_ratio"),
        ({"nn.Linear": {"*": {"feature_divisor": 0}}}, r"feature_divisor must be an integer >= 1"),
        ({"nn.Conv2d": {"*": {"kernel_size": [2]}}}, "odd positive"),
        ({"nn.Conv2d": {"*": {"kernel_size": [-3]}}}, "odd positive"),
        ({"nn.conv2d": {}}, r"unknown layer type 'nn.conv2d'.*Did you mean 'nn.Conv2d'"),
        ({"nn.Conv2d": {"[ab": {}}}, "unbalanced brackets"),
        ({"nn.Conv2d": {"": {}}}, "malformed"),
        ({"nn.Conv2d": {" x ": {}}}, "malformed"),
        ({"nn.Conv2d": {"*": {"channel_ratio": [0.5]}}}, "channel_ratio"),
        ({"nn.Conv2d": 3}, "must be a layer config, None"),
        ({"bogus": 1}, "unknown config key 'bogus'"),
    ],
)
def test_bad_configs_are_refused_with_field_and_fix(bad: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FastNASConfig(**bad)


def test_unknown_layer_type_lists_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        FastNASConfig(**{"nn.Conv4d": {}})
    assert "nn.GroupNorm" in str(info.value)
    with pytest.raises(KeyError, match="Known layer types"):
        layer_config_class("nn.Foo")


def test_choices_for() -> None:
    rule = DynamicConv2dConfig(channel_divisor=8)  # type: ignore[call-arg]  # LayerConfig fields are generated
    assert rule.choices_for(64) == [8, 16, 24, 32, 40, 48, 56, 64]
    # never 0, never above the original, original kept
    assert rule.choices_for(5) == [5]
    assert DynamicConv2dConfig(channel_divisor=32).choices_for(48) == [32, 48]  # type: ignore[call-arg]  # LayerConfig fields are generated
    gn = DynamicGroupNormConfig(channel_divisor=1, channels_ratio=[0.25, 0.5, 1.0])  # type: ignore[call-arg]  # LayerConfig fields are generated
    assert gn.choices_for(32, multiple_of=8) == [8, 16, 32]


@settings(max_examples=60, deadline=None)
@given(
    original=st.integers(1, 512),
    divisor=st.integers(1, 64),
    ratios=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=8),
)
def test_choices_property(original: int, divisor: int, ratios: list[float]) -> None:
    rule = DynamicConv2dConfig(channel_divisor=divisor, channels_ratio=ratios)  # type: ignore[call-arg]  # LayerConfig fields are generated
    ch = rule.choices_for(original)
    assert ch == sorted(set(ch))
    assert ch[-1] == original
    assert all(0 < c <= original for c in ch)
    assert all(c % divisor == 0 for c in ch if c != original)


def test_dict_style_access_and_base_config_forbids_extra() -> None:
    cfg = FastNASConfig()
    assert cfg["nn.Linear"] == cfg.get("nn.Linear")
    assert "nn.Conv2d" in list(cfg.keys())
    assert isinstance(ExportConfig(), ModeloptBaseConfig)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ExportConfig(foo=1)  # type: ignore[call-arg]
