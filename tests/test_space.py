"""The public search-space API: convert, search_space, sample, select, get_subnet_config, export."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import nasviz.space as nv
from nasviz.config import LAYER_TYPES
from nasviz.dynamic import DynamicModule
from nasviz.dynamic.params import sliced_params
from nasviz.errors import (
    ApplyModeError,
    HparamError,
    MissingDummyInputWarning,
    NasvizError,
    TracingError,
)
from nasviz.fastnas import FastNASConfig, build_search_space
from nasviz.models import REFERENCE_MODELS
from nasviz.patch import PatchManager
from nasviz.testing import FC1, FC2, searchable_mlp

SMALL: dict[str, Any] = {k: {"*": {LAYER_TYPES[k].divisor_field: 4}} for k in LAYER_TYPES}
NAMES = sorted(REFERENCE_MODELS)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def converted(name: str, config: dict[str, Any] | None = None) -> tuple[nn.Module, Tensor]:
    model, x = REFERENCE_MODELS[name]()
    nv.convert(model, mode=[("fastnas", config or SMALL)], dummy_input=x)
    return model, x


class _Cache(dict[str, tuple[nn.Module, Tensor, Tensor, int]]):
    """Converted models (with their full-size output and weight count), built on first use."""

    def __missing__(self, name: str) -> tuple[nn.Module, Tensor, Tensor, int]:
        model, x = REFERENCE_MODELS[name]()
        with torch.no_grad():
            full = model(x)
        weights = sum(p.numel() for p in model.parameters())
        nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=x)
        self[name] = (model, x, full, weights)
        return self[name]


@pytest.fixture(scope="module")
def cache() -> _Cache:
    return _Cache()


@pytest.mark.parametrize("name", NAMES)
def test_convert_keeps_outputs_and_describes_the_space(name: str, cache: _Cache) -> None:
    model, x, full, _ = cache[name]
    nv.select(model, {n: hp.max for n, hp in nv.search_space(model).hparams.items()})
    with torch.no_grad():
        torch.testing.assert_close(model(x), full, rtol=1e-4, atol=1e-5)
    space = nv.search_space(model)
    table = space.table()
    assert list(table.name) == list(space.hparams) and len(space.groups) == len(table)
    assert space.size() == math.prod(table.n_choices) > 1
    static = space.static_table()
    assert list(static.columns) == ["module", "type", "attr", "size", "reason"]
    assert static.reason.map(lambda r: isinstance(r, str) and len(r) > 3).all()
    assert space.static.equals(static)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_random_subnets_export_to_the_same_outputs_with_fewer_weights(
    name: str, seed: int, cache: _Cache
) -> None:
    model, x, _, full_weights = cache[name]
    config = nv.sample(model, "random", seed=seed)
    with torch.no_grad():
        expected = model(x)
    small = nv.export(model)
    assert not any(isinstance(m, DynamicModule) or sliced_params(m) for m in small.modules())
    assert nv.get_subnet_config(model) == config  # the searchable model is untouched
    with torch.no_grad():
        torch.testing.assert_close(small(x), expected, rtol=1e-5, atol=1e-5)
    weights = sum(p.numel() for p in small.parameters())
    hps = nv.search_space(model).hparams
    if any(config[n] < hp.original for n, hp in hps.items()):
        assert weights < full_weights
    else:
        assert weights == full_weights


def _out_widths(model: nn.Module, names: set[str]) -> int:
    return sum(
        int(getattr(m, "out_channels", getattr(m, "out_features", 0)))
        for n, m in model.named_modules()
        if n in names
    )


#: reference models where some layers stay static, with the reason (pinned in their own tests)
PARTLY_STATIC = {
    # its squeeze-excite reductions of 4 channels have one choice at this divisor
    "efficientnet_like": "SE reductions of 4 channels: no common choices",
}


@pytest.mark.parametrize("name", NAMES)
def test_every_reference_model_prunes_to_half_its_channels_with_identical_outputs(
    name: str, cache: _Cache
) -> None:
    model, x, _, _ = cache[name]
    space = nv.search_space(model)
    static = {(r.module, r.attr) for r in space.static_table().itertuples()}
    outs = {  # every conv/linear whose output width is searchable
        n
        for n, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
        and (n, "out_channels" if hasattr(m, "out_channels") else "out_features") not in static
    }
    half = {
        n: min(hp.choices, key=lambda c: abs(c - hp.original / 2))
        for n, hp in space.hparams.items()
    }
    nv.select(model, half)
    with torch.no_grad():
        expected = model(x)
    small = nv.export(model)
    with torch.no_grad():
        torch.testing.assert_close(small(x), expected, rtol=1e-5, atol=1e-5)
    if name in PARTLY_STATIC:  # pinned in tests/models/test_efficientnet.py
        return
    nv.sample(model, "max")
    kept = _out_widths(small, outs) / _out_widths(model, outs)
    assert 0.4 <= kept <= 0.6, kept
    # every conv/linear but the output layer has a searchable width (the data-dependent net's
    # top-level forward cannot be traced: what it uses stays static, with that reason)
    if name != "data_dependent_net":
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
        assert len(outs) == len(layers) - 1


def test_exported_min_subnet_needs_fewer_flops(cache: _Cache) -> None:
    model, x, _, _ = cache["resnet_tiny"]

    def flops(m: nn.Module) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            m(x)
        return int(counter.get_total_flops())

    nv.sample(model, "max")
    full = flops(nv.export(model))
    nv.sample(model, "min")
    assert flops(nv.export(model)) < full / 4


def test_sample_strategies_give_the_documented_configs(cache: _Cache) -> None:
    model, _, _, _ = cache["mobilenetv2_like"]
    hps = nv.search_space(model).hparams
    assert nv.sample(model, "min") == {n: hp.choices[0] for n, hp in hps.items()}
    assert nv.get_subnet_config(model) == {n: hp.choices[0] for n, hp in hps.items()}
    assert nv.sample(model, "max") == {n: hp.original for n, hp in hps.items()}
    centroid = nv.sample(model, "centroid")
    assert centroid == {n: hp.choices[len(hp.choices) // 2] for n, hp in hps.items()}
    assert nv.sample(model, seed=3) == nv.sample(model, "random", seed=3)
    with pytest.raises(NasvizError, match="use one of random, min, max, centroid"):
        nv.sample(model, "median")


def test_select_checks_names_and_values_and_allows_partial_configs(cache: _Cache) -> None:
    model, _, _, _ = cache["resnet_tiny"]
    nv.sample(model, "max")
    with pytest.raises(HparamError, match=r"unknown hparam 'conv1.out_channel'\. Did you mean "):
        nv.select(model, {"conv1.out_channel": 8})
    with pytest.raises(HparamError, match=r"Valid names: conv1\.out_channels, "):
        nv.select(model, {"nope": 8})
    with pytest.raises(HparamError, match=r"conv1.out_channels: 5 is not a valid choice; choose "):
        nv.select(model, {"conv1.out_channels": 5})
    with pytest.raises(HparamError, match=r"choose one of \[4, 8, 12, 16\]"):
        nv.select(model, {"layer1.0.conv1.out_channels": 8, "conv1.out_channels": 5})
    assert nv.get_subnet_config(model)["layer1.0.conv1.out_channels"] == 16  # nothing changed
    nv.select(model, {"conv1.out_channels": 8})
    config = nv.get_subnet_config(model)
    assert config["conv1.out_channels"] == 8 and config["layer1.0.conv1.out_channels"] == 16


def test_hparam_names_are_stable_across_runs() -> None:
    a, _ = converted("densenet_like")
    b, _ = converted("densenet_like")
    assert nv.search_space(a).table().equals(nv.search_space(b).table())
    assert list(nv.search_space(a).hparams)[:2] == [
        "stem.out_channels",
        "features.0.0.conv1.out_channels",
    ]


def test_switching_off_the_head_shows_the_rule() -> None:
    config = {**SMALL, "nn.Linear": {"*": {"feature_divisor": 4}, "*head*": None}}
    model, _ = converted("vit_like", config)
    static = nv.search_space(model).static_table().set_index(["module", "attr"])
    assert static.loc[("head", "in_features"), "reason"] == "switched off by rule '*head*'"
    assert static.loc[("head", "out_features"), "reason"] == "switched off by rule '*head*'"
    assert not isinstance(model.head, DynamicModule)


def test_without_dummy_input_the_head_group_is_static_with_the_reason() -> None:
    model, x = REFERENCE_MODELS["vgg_like"]()
    with pytest.warns(MissingDummyInputWarning, match=r"3 layer dimension\(s\) of VGGLike"):
        nv.convert(model, mode=[("fastnas", SMALL)])
    space = nv.search_space(model)
    assert "features.15.out_channels" not in space.hparams and len(space.hparams) == 5
    static = space.static_table().set_index(["module", "attr"])
    reason = static.loc[("features.15", "out_channels"), "reason"]
    assert reason == "no dummy_input for the spatial size"
    nv.sample(model, "min")
    with torch.no_grad():
        torch.testing.assert_close(nv.export(model)(x), model(x))


def test_a_failing_self_check_restores_the_model() -> None:
    model, x = REFERENCE_MODELS["resnet_tiny"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def corrupt(model: nn.Module, plan: Any, hparams: Any) -> None:
        with torch.no_grad():
            model.get_submodule("layer1.0.conv1").weight.mul_(2)

    with pytest.raises(TracingError, match="self-check failed: converting ResNet changed output"):
        build_search_space(model, FastNASConfig(**SMALL), x, sort=corrupt)
    assert not any(isinstance(m, DynamicModule) for m in model.modules())
    assert not PatchManager.is_patched(model)
    assert "_nasviz_space" not in model.__dict__ and "_nasviz_state" not in model.__dict__
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_dummy_input_and_double_conversion_are_refused() -> None:
    model, x = REFERENCE_MODELS["resnet_tiny"]()
    with pytest.raises(TracingError, match="does not run on the given dummy_input"):
        nv.convert(model, dummy_input=torch.zeros(1, 5, 8, 8))
    nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=x)
    with pytest.raises(ApplyModeError, match="cannot follow mode 'fastnas'"):
        nv.convert(model, dummy_input=x)
    with pytest.raises(NasvizError, match="has no search space: convert it first"):
        nv.search_space(nn.Linear(2, 2))


def test_export_copies_by_default_and_can_work_in_place() -> None:
    model, x = converted("digits_cnn")
    nv.sample(model, "min")
    copy_ = nv.export(model)
    assert copy_ is not model and any(isinstance(m, DynamicModule) for m in model.modules())
    same = nv.export(model, in_place=True)
    assert same is model and not any(isinstance(m, DynamicModule) for m in model.modules())
    assert not PatchManager.is_patched(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), copy_(x))
    with pytest.raises(NasvizError, match="has no search space"):
        nv.get_subnet_config(model)


def test_batchnorm_statistics_of_a_subnet_update_in_place() -> None:
    model, x = converted("resnet_tiny")
    nv.select(model, {"layer1.0.conv1.out_channels": 4})
    bn = model.get_submodule("layer1.0.bn1")
    before = bn.running_mean.clone()
    model.train()
    with torch.no_grad():
        model(x)
    assert not torch.equal(bn.running_mean[:4], before[:4])
    assert torch.equal(bn.running_mean[4:], before[4:])


def test_kernel_size_rules_add_one_hparam_per_conv() -> None:
    config = {**SMALL, "nn.Conv2d": {"*": {"channel_divisor": 4, "kernel_size": [1, 3]}}}
    model, x = converted("digits_cnn", config)
    table = nv.search_space(model).table()
    kernels = table[table.kind == "kernel"]
    names = {"stem.0", "res_conv1.0", "res_conv2.0", "ir_depthwise.0"}  # the 3x3 convs
    assert set(kernels.name) == {f"{n}.kernel_size" for n in names}
    assert all(c == [1, 3] for c in kernels.choices)
    nv.sample(model, "min")
    small = nv.export(model)
    assert small.get_submodule("stem.0").kernel_size == (1, 1)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x))


class DictNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 32), nn.Linear(32, 4)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: Tensor, scale: float = 1.0) -> dict[str, Tensor]:
        h = self.inp(x) * scale
        a, _ = self.attn(h, h, h)
        return {"out": self.fc2(torch.relu(self.fc1(a))), "aux": h.mean(-1)}


def test_keyword_inputs_dict_outputs_and_attention_on_the_stream() -> None:
    model, x = DictNet(), torch.randn(2, 5, 8)
    nv.convert(model, mode=[("fastnas", SMALL)], dummy_input={"x": x})
    space = nv.search_space(model)
    # nn.MultiheadAttention is a layer family: the stream passes through it (its heads follow)
    assert list(space.hparams) == ["inp.out_features", "fc1.out_features"]
    assert space.hparams["inp.out_features"].choices == (8, 16)  # whole heads of 8
    static = space.static_table()
    assert "attn.out_proj" not in set(static["module"])  # a part of attn, not a layer of its own
    nv.sample(model, "min")
    assert (model.attn.embed_dim, model.attn.num_heads) == (8, 1)
    with torch.no_grad():
        torch.testing.assert_close(nv.export(model)(x)["out"], model(x)["out"])


def test_the_table_says_how_many_producer_channels_one_unit_is(cache: _Cache) -> None:
    model, _, _, _ = cache["shufflenet_like"]
    table = nv.search_space(model).table().set_index("name")
    # stage 1's stream: the shuffle couples the two halves of the first unit's branch1 output,
    # the next unit's chunk the halves of each half: a unit is 2 of its 24 channels
    row = table.loc["stages.0.branch1.2.out_channels"]
    assert (row.original, row.per_unit) == (12, 2)
    assert table.loc["stem.0.out_channels"].per_unit == 1


def test_an_exported_language_model_keeps_its_tied_weights(cache: _Cache) -> None:
    model, x, _, _ = cache["gpt_like"]
    nv.select(model, {"tok_emb.embedding_dim": 32})
    with torch.no_grad():
        expected = model(x)
    small = nv.export(model)
    assert small.lm_head.weight is small.tok_emb.weight  # tied again, one tensor
    assert tuple(small.tok_emb.weight.shape) == (64, 32)  # type: ignore[arg-type]  # torch: Tensor | Module
    with torch.no_grad():
        torch.testing.assert_close(small(x), expected)
    nv.sample(model, "max")


def test_the_search_space_object_selects_and_prices_its_model() -> None:
    """What a searcher uses of a space: ``hparams``, ``select`` and ``cost_model``."""
    model, x = searchable_mlp()
    space = nv.search_space(model)
    space.select({FC1: 8, FC2: 12})
    assert nv.get_subnet_config(model) == {FC1: 8, FC2: 12}
    with pytest.raises(HparamError, match="not a valid choice"):
        space.select({FC1: 5})
    cost = space.cost_model(x)
    flops, params = cost.estimate({FC1: 4, FC2: 8})
    assert nv.get_subnet_config(model) == {FC1: 8, FC2: 12}  # estimating leaves the model as is
    space.select({FC1: 4, FC2: 8})
    small = nv.export(model)
    assert params == sum(p.numel() for p in small.parameters()) == (8 * 4 + 4) + (4 * 8 + 8) + 36
    with FlopCounterMode(display=False) as counter:
        small(x)
    assert flops == counter.get_total_flops()


def test_the_record_is_the_hook_generic_code_reads() -> None:

    model, _ = searchable_mlp()
    record = nv.get_record(model)
    assert record is not None and set(record.hparams) == set(nv.search_space(model).hparams)
    assert nv.get_record(nv.export(model)) is None and nv.get_record(nn.Linear(2, 2)) is None
