"""Tracing: coupling groups and static reasons, on tiny models whose answer is known by hand."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasviz.config import LAYER_TYPES, ModeloptBaseRuleConfig
from nasviz.fastnas import FastNASConfig
from nasviz.models import REFERENCE_MODELS
from nasviz.tracing import Cat, Coupling, Plan, Rep, Sym, analyze, capture, make_plan
from nasviz.tracing.groups import expr_syms

# every layer type with divisor 4, so that even 8-channel layers have choices
SMALL: dict[str, Any] = {k: {"*": {LAYER_TYPES[k].divisor_field: 4}} for k in LAYER_TYPES}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def plan_of(model: nn.Module, x: Any, config: ModeloptBaseRuleConfig | None = None) -> Plan:
    config = config or FastNASConfig(**SMALL)
    return make_plan(model, analyze(model, capture(model, x)), config)


def group_names(plan: Plan) -> list[str]:
    return [g.name for g in plan.hparams]


def reason(plan: Plan, module: str, attr: str) -> str:
    rows = [r for r in plan.static if r["module"] == module and r["attr"] == attr]
    assert rows, f"{module}.{attr} is not static"
    return str(rows[0]["reason"])


def members(plan: Plan, name: str) -> set[tuple[str, str, str]]:
    return set(next(g for g in plan.hparams if g.name == name).members)


def cbr(cin: int, cout: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, groups=groups), nn.BatchNorm2d(cout), nn.ReLU()
    )


# -- per reference model: the group counts worked out by hand ------------------------------------

EXPECTED_GROUPS = {
    # stem+stage1 residual, 3x conv1 internals, stage2/3 residuals (downsample + conv2)
    "resnet_tiny": 6,
    # stem, 2 residual groups (downsample + conv3), 2 x (conv1, conv2) internals
    "resnet_bottleneck_tiny": 7,
    # the same structure; each grouped 3x3 conv keeps its 4 groups: conv1's width is 4 coupled
    # parts (a group of a quarter of the width), and so is conv2's
    "resnext_tiny": 7,
    # stem(+block0), 6 expand convs (each with its depthwise), SE fc1, 3 stage projections
    # (coupled by residual adds), head conv
    "mobilenetv2_like": 12,
    # stem, 6 dense layers x (bottleneck, growth), 2 transitions
    "densenet_like": 15,
    # 5 convs (the last one feeds flatten -> Linear), the hidden Linear
    "vgg_like": 6,
    # stem (feeds both branches of the first unit), 5 branch2 internals, head conv, and one
    # shuffled stream per stage (each a quarter of the stage width: the shuffle couples the two
    # halves, the next unit's chunk the two halves of each half)
    "shufflenet_like": 10,
    # the 4 MLP hidden widths and the 3 stage streams (the layer scale gamma follows them)
    "convnext_like": 7,
    # per block the MLP hidden width and the attention head width (heads kept whole, q, k and v
    # coupled), and the stream (cls_token and pos_embed follow it)
    "vit_like": 5,
    # the same, and the stream: the token and position embeddings' width (the LM head's weight,
    # tied to the token embedding, follows it by columns)
    "gpt_like": 5,
    "conv1d_net": 3,
    "conv3d_net": 2,
    # 3 encoder levels x 2 convs, 2 upsamples, 2 decoder levels x 2 convs
    "unet_like": 12,
    # only the traceable child 'features' has an inner group
    "data_dependent_net": 1,
    # stem (+ both residual blocks), res_conv1, ir_expand (+ depthwise)
    "digits_cnn": 3,
    # the stream (conv_proj; class token, position embedding and the MHA heads follow it) and
    # the 2 MLP widths
    "vit_mha": 3,
    # the 4 MLP widths and the 2 stage streams (through the nn.LayerNorm-subclass LayerNorm2d,
    # whose own forward's F.layer_norm is its call; the (C,1,1) layer scales follow them)
    "convnext_tv": 6,
    # the 2 MLP widths, the 2 attention head widths (q, k, v of every head coupled) and the
    # stream (torch.roll over the window dims passes the channels through)
    "swin_like": 5,
    # timm-style, every norm a BatchNormAct2d (traced through to its F.batch_norm): the stem
    # stream (with the first block), the stage-2 and stage-3 streams (each coupled by its skip),
    # 4 MBConv expansions (depthwise, BN-acts and SE gate follow), 3 SE reductions wide enough
    # for the small divisor, the head conv
    "efficientnet_like": 11,
}


def test_every_reference_model_has_an_expected_count() -> None:
    assert set(EXPECTED_GROUPS) == set(REFERENCE_MODELS)


@pytest.mark.parametrize("name", sorted(EXPECTED_GROUPS))
def test_reference_model_group_counts(name: str) -> None:
    model, x = REFERENCE_MODELS[name]()
    plan = plan_of(model, x)
    assert len(plan.hparams) == EXPECTED_GROUPS[name], group_names(plan)
    assert all(len(g.choices) > 1 for g in plan.hparams)
    assert all(row["reason"] for row in plan.static)


def test_vgg_flatten_linear_group_is_searchable() -> None:
    model, x = REFERENCE_MODELS["vgg_like"]()
    plan = plan_of(model, x)
    last = "features.15.out_channels"
    assert last in group_names(plan)
    assert ("classifier.0", "in_features", "repeat") in members(plan, last)
    assert plan.layers["classifier.0"]["in_features"] == {"rep": [{"hp": last}, 4]}  # 2 x 2


# -- coupling rules ------------------------------------------------------------------------------


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = cbr(3, 8), cbr(8, 8), nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        return self.head(y + self.b(y))


def test_residual_add_couples_producers_and_norms_follow() -> None:
    plan = plan_of(Residual(), torch.randn(1, 3, 8, 8))
    assert group_names(plan) == ["a.0.out_channels"]
    got = members(plan, "a.0.out_channels")
    assert {("a.0", "out_channels", "direct"), ("b.0", "out_channels", "direct")} <= got
    assert {("a.1", "num_features", "direct"), ("head", "in_channels", "direct")} <= got
    assert reason(plan, "head", "out_channels") == "output layer"
    assert reason(plan, "a.0", "in_channels") == "its input comes from the model input"


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = cbr(3, 8), cbr(3, 12), nn.Conv2d(20, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


def test_concat_keeps_each_input_and_the_consumer_follows_the_concatenation() -> None:
    plan = plan_of(Concat(), torch.randn(1, 3, 8, 8))
    assert group_names(plan) == ["a.0.out_channels", "b.0.out_channels"]
    assert ("head", "in_channels", "concat") in members(plan, "b.0.out_channels")
    layout = {"cat": [{"hp": "a.0.out_channels"}, {"hp": "b.0.out_channels"}]}
    assert plan.layers["head"]["in_channels"] == layout


class Flatten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = cbr(3, 8), nn.Linear(8 * 3 * 3, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(nn.functional.max_pool2d(self.conv(x), 2), 1))


def test_flatten_to_linear_repeats_each_channel_over_the_spatial_size() -> None:
    plan = plan_of(Flatten(), torch.randn(1, 3, 6, 6))
    assert plan.layers["fc"]["in_features"] == {"rep": [{"hp": "conv.0.out_channels"}, 9]}


def test_without_dummy_input_flatten_to_linear_stays_static_with_a_reason() -> None:
    plan = plan_of(Flatten(), None)
    assert group_names(plan) == []
    assert reason(plan, "conv.0", "out_channels") == "no dummy_input for the spatial size"


class Rolled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = cbr(3, 8), cbr(8, 8), nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c(torch.roll(self.b(self.a(x)), 1, dims=1))


def test_unknown_op_freezes_what_it_touches_with_a_reason() -> None:
    plan = plan_of(Rolled(), torch.randn(1, 3, 8, 8))
    assert group_names(plan) == ["a.0.out_channels"]  # untouched by the roll
    assert reason(plan, "b.0", "out_channels").startswith(
        "torch.roll shifts along the channel dimension"
    )
    assert "torch.roll" in reason(plan, "c", "in_channels")


class Shuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = cbr(3, 8), nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.b(y)


def test_channel_shuffle_couples_the_halves_and_interleaves_them() -> None:
    plan = plan_of(Shuffle(), torch.randn(1, 3, 8, 8))
    assert group_names(plan) == ["a.0.out_channels"]
    assert plan.hparams[0].original == 4  # a half: both halves keep the same channels
    half = {"hp": "a.0.out_channels"}
    assert plan.layers["a.0"]["out_channels"] == {"cat": [half, half]}
    # after view(n, 2, c/2) -> transpose -> reshape, each kept channel is two consecutive ones
    assert plan.layers["b"]["in_channels"] == {"rep": [half, 2]}


class LiteralShuffle(Shuffle):
    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        n, _, h, w = y.shape
        return self.b(y.view(n, 2, 4, h, w).transpose(1, 2).reshape(n, -1, h, w))


def test_a_shuffle_that_names_the_group_size_stays_static_with_the_reason() -> None:
    plan = plan_of(LiteralShuffle(), torch.randn(1, 3, 8, 8))
    assert group_names(plan) == []
    why = reason(plan, "a.0", "out_channels")
    assert "splits the channel dimension 8 into [2, 4] and names the last size (4)" in why


class Chunked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = cbr(3, 16), cbr(8, 8), nn.Conv2d(16, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        left, right = self.a(x).chunk(2, dim=1)
        return self.c(torch.cat([left, self.b(right)], dim=1))


def test_chunk_couples_its_pieces_and_split_by_size_is_refused() -> None:
    plan = plan_of(Chunked(), torch.randn(1, 3, 8, 8))
    assert group_names(plan) == ["a.0.out_channels", "b.0.out_channels"]
    assert plan.hparams[0].original == 8
    half = {"hp": "a.0.out_channels"}
    assert plan.layers["a.0"]["out_channels"] == {"cat": [half, half]}
    assert plan.layers["b.0"]["in_channels"] == half
    assert plan.layers["c"]["in_channels"] == {"cat": [half, {"hp": "b.0.out_channels"}]}

    class BySize(Chunked):
        def forward(self, x: Tensor) -> Tensor:
            left, right = self.a(x).split(8, dim=1)
            return self.c(torch.cat([left, self.b(right)], dim=1))

    plan = plan_of(BySize(), torch.randn(1, 3, 8, 8))
    assert "number would change with the width" in reason(plan, "a.0", "out_channels")


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.dw, self.b = cbr(3, 8), cbr(8, 8, groups=8), cbr(8, 8)
        self.g, self.c = cbr(8, 8, groups=2), nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c(self.g(self.b(self.dw(self.a(x)))))


def test_grouped_convs_keep_their_groups_and_depthwise_convs_pass_channels_through() -> None:
    plan = plan_of(Grouped(), torch.randn(1, 3, 8, 8))
    assert group_names(plan) == ["a.0.out_channels", "b.0.out_channels", "g.0.out_channels"]
    got = members(plan, "a.0.out_channels")
    assert {("dw.0", "in_channels", "direct"), ("dw.0", "out_channels", "direct")} <= got
    assert ("b.0", "in_channels", "direct") in got
    # each of the 2 groups keeps the same channels: b's output is two coupled halves
    b_half, g_half = {"hp": "b.0.out_channels"}, {"hp": "g.0.out_channels"}
    assert plan.layers["b.0"]["out_channels"] == {"cat": [b_half, b_half]}
    assert plan.layers["g.0"] == {
        "in_channels": {"cat": [b_half, b_half]},
        "out_channels": {"cat": [g_half, g_half]},
    }
    assert next(g for g in plan.hparams if g.name == "g.0.out_channels").original == 4


class ChannelsLast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 8, 1), nn.LayerNorm(8)
        self.fc, self.out = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.conv(x).permute(0, 2, 3, 1))
        return self.out(self.fc(y).mean(dim=(1, 2)))


def test_permute_to_channels_last_then_layernorm_and_linear() -> None:
    plan = plan_of(ChannelsLast(), torch.randn(2, 3, 4, 4))
    assert group_names(plan) == ["conv.out_channels", "fc.out_features"]
    got = members(plan, "conv.out_channels")
    assert {("norm", "normalized_shape", "direct"), ("fc", "in_features", "direct")} <= got


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = cbr(3, 8), nn.Conv2d(8, 2, 1)
        self.gamma = nn.Parameter(torch.ones(8, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.a(x) * self.gamma + 1.0)


def test_a_channel_parameter_follows_the_group() -> None:
    plan = plan_of(Scaled(), torch.randn(1, 3, 8, 8))
    assert group_names(plan) == ["a.0.out_channels"]
    assert plan.params == {"gamma": {"dim": 0, "layout": {"hp": "a.0.out_channels"}}}


class ScaledTwice(Scaled):
    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.a(x) * self.gamma + torch.roll(self.gamma, 1))


def test_a_channel_parameter_used_by_an_unknown_op_freezes_the_group() -> None:
    plan = plan_of(ScaledTwice(), torch.randn(1, 3, 8, 8))
    assert group_names(plan) == [] and plan.params == {}
    assert "torch.roll without dims" in reason(plan, "a.0", "out_channels")


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.shared = cbr(3, 8), cbr(3, 8), nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.shared(self.a(x)), self.shared(self.b(x))], 1).sum((2, 3))


def test_a_layer_called_twice_couples_both_inputs() -> None:
    plan = plan_of(Twice(), torch.randn(1, 3, 8, 8))
    assert "a.0.out_channels" in group_names(plan)
    assert ("b.0", "out_channels", "direct") in members(plan, "a.0.out_channels")


class TrainOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = cbr(3, 8), cbr(3, 8), nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        if self.training:  # a branch fx bakes in at trace time
            y = y + self.b(x)
        return self.c(y)


def test_couplings_of_the_train_mode_graph_are_not_missed() -> None:
    plan = plan_of(TrainOnly().eval(), torch.randn(1, 3, 8, 8))
    assert group_names(plan) == ["a.0.out_channels"]
    assert ("b.0", "out_channels", "direct") in members(plan, "a.0.out_channels")


class MyConv(nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * 2


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = cbr(3, 8), MyConv(8, 8, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c(self.b(self.a(x)))


def test_a_subclass_with_its_own_forward_is_traced_through_to_its_family_op() -> None:
    plan = plan_of(Custom(), torch.randn(1, 3, 8, 8))  # F.conv2d inside MyConv.forward is b
    assert group_names(plan) == ["a.0.out_channels", "b.out_channels"]


class DoubledWeight(nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * 2, self.bias)


class CustomOther(Custom):
    def __init__(self) -> None:
        super().__init__()
        self.b = DoubledWeight(8, 8, 1)  # type: ignore[assignment]  # another conv in its place


def test_a_subclass_computing_on_its_weight_stays_static_with_the_reason() -> None:
    plan = plan_of(CustomOther(), torch.randn(1, 3, 8, 8))
    assert group_names(plan) == []
    assert "DoubledWeight overrides forward" in reason(plan, "b", "out_channels")
    assert "no single F.conv2d call on its own weights" in reason(plan, "b", "out_channels")


def test_untraceable_model_is_handled_through_its_children() -> None:
    model, x = REFERENCE_MODELS["data_dependent_net"]()
    captured = capture(model, x)
    assert [g.prefix for g in captured.graphs] == ["features", "head"]
    plan = make_plan(model, analyze(model, captured), FastNASConfig(**SMALL))
    assert group_names(plan) == ["features.0.0.out_channels"]
    assert any("fx cannot trace" in n for n in plan.notes)
    assert "untraceable forward" in reason(plan, "features.1.0", "out_channels")


def test_attention_prunes_the_head_width_with_heads_kept_whole() -> None:
    model, x = REFERENCE_MODELS["vit_like"]()  # dim 64, 4 heads of 16
    plan = plan_of(model, x)
    head = {"hp": "blocks.0.attn.qkv.out_features"}
    group = next(g for g in plan.hparams if g.name == head["hp"])
    assert group.original == 16 and group.choices == [4, 8, 12, 16]
    # q, k and v of every head keep the same positions; proj reads the heads one after another
    assert plan.layers["blocks.0.attn.qkv"]["out_features"] == {"cat": [head] * 12}
    assert plan.layers["blocks.0.attn.proj"]["in_features"] == {"cat": [head] * 4}
    stream = {"dim": 2, "layout": {"hp": "patch_embed.out_channels"}}
    assert plan.params == {"cls_token": stream, "pos_embed": stream}


class HeadsByCount(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(8, 24), nn.Linear(8, 8)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, 2, 4).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


def test_a_head_split_that_names_the_head_size_stays_static() -> None:
    plan = plan_of(HeadsByCount(), torch.randn(2, 5, 8))
    assert group_names(plan) == []
    assert "names the last size (4)" in reason(plan, "qkv", "out_features")


def test_an_lm_head_tied_to_the_embedding_follows_the_stream() -> None:
    model, x = REFERENCE_MODELS["gpt_like"]()
    plan = plan_of(model, x)
    stream = {"hp": "tok_emb.embedding_dim"}
    assert plan.layers["lm_head"] == {"in_features": stream}
    assert plan.params["tok_emb.weight"] == {"dim": 1, "layout": stream}
    assert plan.params["pos_emb.weight"] == {"dim": 1, "layout": stream}
    assert "tied to 'tok_emb', whose rows are not pruned" in reason(plan, "lm_head", "out_features")


class TiedBoth(nn.Module):
    """A Linear tied to another Linear (not an embedding): both stay static."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.b.weight = self.a.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.b(self.a(x)))


def test_other_tied_weights_are_static_with_the_reason() -> None:
    plan = plan_of(TiedBoth(), torch.randn(2, 8))
    assert reason(plan, "b", "in_features") == "shares its weight with 'a' (tied weights)"


def test_switched_off_layers_show_the_rule_and_freeze_their_group() -> None:
    model, x = REFERENCE_MODELS["vit_like"]()
    config = FastNASConfig(**{**SMALL, "nn.Linear": {"*": {"feature_divisor": 4}, "*fc2*": None}})
    plan = plan_of(model, x, config)
    assert group_names(plan) == ["blocks.0.attn.qkv.out_features", "blocks.1.attn.qkv.out_features"]
    assert reason(plan, "blocks.0.mlp.fc2", "in_features") == "switched off by rule '*fc2*'"
    assert "switched off by rule '*fc2*'" in reason(plan, "blocks.0.mlp.fc1", "out_features")


def test_no_common_choices_is_a_reason() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 2, 1))
    config = FastNASConfig(**{"nn.Conv2d": {"channel_divisor": 4}})  # BN keeps divisor 32
    plan = plan_of(model, torch.randn(1, 3, 4, 4), config)
    assert group_names(plan) == []
    assert reason(plan, "0", "out_channels").startswith("no common choices (0.out_channels: [4, 8]")


class ChannelsLastFlatten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 1), nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x).permute(0, 2, 3, 1).flatten(1))


def test_a_merge_before_the_channels_is_refused_even_if_the_dummy_dim_is_one() -> None:
    # with a 1x1 dummy image the flatten looks like a no-op, but at 4x4 the channels interleave
    plan = plan_of(ChannelsLastFlatten(), torch.randn(2, 3, 1, 1))
    assert group_names(plan) == []
    assert "merges the channels into a preceding dimension" in reason(plan, "conv", "out_channels")


def test_depthwise_channel_multiplier_repeats_the_group_and_its_norm_restricts() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 16, 1), nn.Conv2d(16, 32, 3, padding=1, groups=16), nn.BatchNorm2d(32),
        nn.Conv2d(32, 2, 1),
    )  # fmt: skip
    config = FastNASConfig(**{**SMALL, "nn.BatchNorm2d": {"feature_divisor": 16}})
    plan = plan_of(model, torch.randn(1, 3, 4, 4), config)
    assert group_names(plan) == ["0.out_channels"]
    # the conv allows 4, 8, 12, 16; the BN (2x as wide) only 16 and 32
    assert plan.hparams[0].choices == [8, 16]
    assert ("2", "num_features", "repeat") in members(plan, "0.out_channels")
    assert plan.layers["3"]["in_channels"] == {"rep": [{"hp": "0.out_channels"}, 2]}


class TiedFunctional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.fc, self.out = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(self.a(x))
        return self.out(h + nn.functional.linear(h, self.fc.weight))


def test_a_layer_whose_weight_forward_reads_directly_stays_static() -> None:
    plan = plan_of(TiedFunctional(), torch.randn(2, 4))
    assert group_names(plan) == []
    assert reason(plan, "fc", "in_features") == "its weight is also used directly in forward"
    assert "coupled with 'fc' (its weight" in reason(plan, "a", "out_features")


def test_layers_with_hooks_or_parametrizations_are_opaque() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    model[1].register_forward_hook(lambda m, i, o: o * 2)
    nn.utils.parametrizations.weight_norm(model[2])
    plan = plan_of(model, torch.randn(2, 4))
    assert group_names(plan) == []
    assert "forward hooks" in reason(plan, "1", "out_features")
    assert "parametrized" in reason(plan, "2", "in_features")
    assert "consumed by Linear '1': unsupported op" in reason(plan, "0", "out_features")


class SdpaAttention(nn.Module):
    """The other common way to write attention: chunk into q, k, v, heads by view/transpose."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.inp, self.qkv, self.proj = (
            nn.Linear(4, dim),
            nn.Linear(dim, 3 * dim),
            nn.Linear(dim, 4),
        )

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(self.inp(x)).chunk(3, dim=-1)
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Unshuffled(Shuffle):
    """Split into groups and merged back in order: the groups are coupled, nothing interleaves."""

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        n, _, h, w = y.shape
        return self.b(y.view(n, 2, -1, h, w).reshape(n, -1, h, w))


@pytest.mark.parametrize(
    ("make", "x"),
    [(SdpaAttention, torch.randn(2, 5, 4)), (Unshuffled, torch.randn(2, 3, 4, 4))],
    ids=["sdpa", "unshuffled"],
)
def test_split_layouts_export_to_the_same_outputs(make: Any, x: Tensor) -> None:
    import nasviz.space as nv

    torch.manual_seed(0)
    model = make().eval()
    nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=x)
    assert len(nv.search_space(model).hparams) >= 1
    for seed in range(4):
        nv.sample(model, "random", seed=seed)
        with torch.no_grad():
            expected = model(x)
            torch.testing.assert_close(nv.export(model)(x), expected, rtol=1e-5, atol=1e-5)


def test_sdpa_attention_couples_q_k_v_per_head() -> None:
    plan = plan_of(SdpaAttention(), torch.randn(2, 5, 4))
    head = {"hp": "qkv.out_features"}
    assert plan.layers["qkv"]["out_features"] == {"cat": [head] * 6}  # 3 x 2 heads
    assert plan.layers["proj"]["in_features"] == {"cat": [head] * 2}
    assert group_names(plan) == ["inp.out_features", "qkv.out_features"]


# -- refinement of elements (the union-find behind chunk, shuffle, grouped convs, heads) ---------


def test_split_refines_an_element_into_coupled_parts() -> None:
    c = Coupling()
    a = c.new(8, ("a", "out"))
    pieces = c.split(Sym(a, 8), 2, "cannot split")
    assert pieces is not None and len(pieces) == 2
    assert c.resolve(pieces[0]) == c.resolve(pieces[1])  # coupled: the same channels
    (half,) = {s.elem for s in expr_syms(c.resolve(Sym(a, 8)))}
    assert c.resolve(Sym(a, 8)) == Cat((Sym(half, 4), Sym(half, 4)))
    assert c.split(Sym(c.new(6), 6), 4, "6 channels into 4") is None  # uneven: refused


def test_unify_refines_a_plain_width_into_repeated_pairs() -> None:
    c = Coupling()
    a, b = c.new(4, ("a", "out")), c.new(8, ("b", "out"))
    assert c.unify(Rep(Sym(a, 4), 2), Sym(b, 8), "x")  # b must keep channels in pairs
    resolved = c.resolve(Sym(b, 8))
    assert isinstance(resolved, Rep) and resolved.inner == 2
    assert c.find(resolved.src.elem) == c.find(a)


def test_reasons_reach_the_parts_and_a_failed_unify_fixes_both() -> None:
    c = Coupling()
    a = c.new(8, ("a", "out"))
    c.split(Sym(a, 8), 2, "x")
    c.fix(a, "output layer")
    assert all(c.is_fixed(s.elem) for s in expr_syms(c.resolve(Sym(a, 8))))
    f, g = c.new(6, ("f", "out")), c.new(4, ("g", "out"))
    assert not c.unify(Sym(f, 6), Sym(g, 4), "sizes differ")
    assert c.reasons(f) == ["sizes differ"] and c.reasons(g) == ["sizes differ"]
