"""A layer family declared in one file becomes a config field, a rule and a tracer layer spec.

The family below (a made-up per-channel scale) exists only in this test file: registering its
dynamic class is all it takes for nasviz to derive its per-layer config, a rule-config field, its
layer spec, and to prune it inside a traced model.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from nasviz.config import (
    LAYER_TYPES,
    ModeloptBaseRuleConfig,
    build_rule_config,
    layer_config_class,
)
from nasviz.dynamic import DynamicModule, register_dynamic, registered_layer_types
from nasviz.dynamic.base import unregister_dynamic
from nasviz.dynamic.family import LayerSpec, RuleSpec
from nasviz.fastnas import FastNASConfig
from nasviz.tracing import analyze, apply_plan, capture, make_plan
from nasviz.tracing.rules import layer_spec

REFERENCE_16 = [
    "nn.Conv1d", "nn.Conv2d", "nn.Conv3d", "nn.ConvTranspose1d", "nn.ConvTranspose2d",
    "nn.ConvTranspose3d", "nn.Linear", "nn.BatchNorm1d", "nn.BatchNorm2d", "nn.BatchNorm3d",
    "nn.SyncBatchNorm", "nn.InstanceNorm1d", "nn.InstanceNorm2d", "nn.InstanceNorm3d",
    "nn.LayerNorm", "nn.GroupNorm",
]  # fmt: skip


class ChannelScale(nn.Module):
    """``x * weight`` over dim 1 of an ``(N, C, *)`` tensor (any rank)."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.weight = nn.Parameter(torch.randn(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(-1, *([1] * (x.dim() - 2)))


class DynamicChannelScale(DynamicModule, ChannelScale):
    """The whole declaration of the family: rule key and fields, roles, axes, slicing, export."""

    torch_cls = ChannelScale
    layer_type = "test.ChannelScale"
    rule = RuleSpec("channels", ratios=(0.5, 1.0), divisor=2)
    trace_kind = "norm"
    channel_axis = None
    channel_pos_axis = 1
    dynamic_attrs = {"num_channels": "out"}
    param_dims = {"weight": {0: "num_channels"}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.sliced("weight", self.weight, self.param_dims["weight"])
        return x * w.view(-1, *([1] * (x.dim() - 2)))

    def export(self) -> nn.Module:
        plain = ChannelScale(self.num_channels)
        with torch.no_grad():
            plain.weight.copy_(self.sliced("weight", self.weight.detach(), {0: "num_channels"}))
        return self._export_finish(plain)


@pytest.fixture
def family() -> Iterator[type[DynamicChannelScale]]:
    register_dynamic(DynamicChannelScale)
    try:
        yield DynamicChannelScale
    finally:
        unregister_dynamic(DynamicChannelScale)
    assert "test.ChannelScale" not in LAYER_TYPES


def test_builtin_layer_types_start_with_the_reference_sixteen() -> None:
    assert list(LAYER_TYPES)[:16] == REFERENCE_16
    assert list(registered_layer_types()) == list(LAYER_TYPES)
    assert FastNASConfig.layer_types() == list(LAYER_TYPES)


def test_the_family_becomes_a_per_layer_config(family: type[DynamicChannelScale]) -> None:
    cfg_cls = layer_config_class("test.ChannelScale")
    assert cfg_cls.__name__ == "DynamicChannelScaleConfig"
    assert cfg_cls().model_dump() == {"channels_ratio": [0.5, 1.0], "channel_divisor": 2}
    assert cfg_cls().choices_for(8) == [4, 8]
    with pytest.raises(ValueError, match="channel_divisor must be an integer >= 1"):
        cfg_cls(channel_divisor=0)


def test_the_family_becomes_a_rule_config_field(family: type[DynamicChannelScale]) -> None:
    cfg_cls = build_rule_config(
        "ScaleConfig", "rules incl. the test family", ModeloptBaseRuleConfig
    )
    assert "test.ChannelScale" in cfg_cls.layer_types()
    cfg = cfg_cls(**{"test.ChannelScale": {"*": {"channel_divisor": 1}, "head*": None}})
    assert cfg.rule_for("test.ChannelScale", "body.scale").rule.channel_divisor == 1
    assert cfg.rule_for("test.ChannelScale", "head.scale").rule is None
    # a config built before the family was registered does not know it, and says so
    with pytest.raises(ValueError, match=r"unknown config key 'test\.ChannelScale'"):
        FastNASConfig(**{"test.ChannelScale": None})


def test_the_family_becomes_a_layer_spec(family: type[DynamicChannelScale]) -> None:
    assert layer_spec(ChannelScale(4)) == LayerSpec("norm", "num_channels", "num_channels", None, 1)
    assert layer_spec(nn.Conv2d(2, 4, 3)) == LayerSpec("conv", "in_channels", "out_channels", -3)


def test_a_traced_model_prunes_the_family(family: type[DynamicChannelScale]) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), ChannelScale(8), nn.Conv2d(8, 4, 1))
    x = torch.randn(2, 3, 5, 5)
    cfg_cls = build_rule_config(
        "ScaleConfig", "rules incl. the test family", ModeloptBaseRuleConfig
    )
    cfg = cfg_cls(**{"nn.Conv2d": {"channel_divisor": 2}})
    plan = make_plan(model, analyze(model, capture(model, (x,))), cfg)
    group = next(g for g in plan.hparams if g.name == "0.out_channels")
    assert ("1", "num_channels", "direct") in group.members
    # the conv allows every even width, the scale 4 or 8: the group takes what both allow
    assert group.choices == [4, 8]
    hps = apply_plan(model, plan)
    hps["0.out_channels"].active = 4
    assert isinstance(model[1], DynamicChannelScale)
    y = model(x)
    small = nn.Sequential(*(m.export() for m in model))  # type: ignore[operator]
    assert small[1].num_channels == 4 and type(small[1]) is ChannelScale
    torch.testing.assert_close(small(x), y)
