"""The timm-style EfficientNet: every norm a ``BatchNormAct2d`` subclass, SE, SiLU, drop-path.

With a dummy_input the whole net prunes (stem, stage streams, expansions, SE reductions, head);
without one, the SE's ``mean`` and the stream behind drop-path need shapes. Random subnets export
with identical outputs, and the exported norms are still ``BatchNormAct2d``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.fastnas import FastNASConfig
from nasviz.models import REFERENCE_MODELS, BatchNormAct2d
from nasviz.space import get_record

_CACHE: dict[bool, tuple[nn.Module, torch.Tensor]] = {}


def _converted(with_input: bool) -> tuple[nn.Module, torch.Tensor]:
    if with_input not in _CACHE:
        model, x = REFERENCE_MODELS["efficientnet_like"]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = FastNASConfig.with_divisor(4)
            nv.convert(model, mode=[("fastnas", cfg)], dummy_input=x if with_input else None)
        _CACHE[with_input] = (model, x)
    return _CACHE[with_input]


def _static(model: nn.Module) -> dict[tuple[str, str], str]:
    record = get_record(model)
    assert record is not None
    return {(r["module"], r["attr"]): str(r["reason"]) for r in record.plan.static}


def test_with_a_dummy_input_every_stream_and_expansion_prunes() -> None:
    model, _ = _converted(True)
    hps = nv.search_space(model).hparams
    assert {
        "conv_stem.out_channels",
        "blocks.1.conv_pwl.out_channels",
        "conv_head.out_channels",
    } <= set(hps)
    assert {f"blocks.{i}.conv_pw.out_channels" for i in range(1, 5)} <= set(hps)
    reasons = _static(model)
    # what stays static: the input, the output, and the SE reductions of 4 (one choice)
    assert all(
        key in {("conv_stem", "in_channels"), ("classifier", "out_features")}
        or "no common choices" in why
        for key, why in reasons.items()
    )


def test_without_a_dummy_input_the_squeeze_excite_mean_needs_shapes() -> None:
    model, _ = _converted(False)
    assert "conv_head.out_channels" in nv.search_space(model).hparams
    assert (
        "needs tensor shapes (no dummy_input)" in _static(model)[("blocks.1.bn1", "num_features")]
    )


@pytest.mark.parametrize("with_input", [True, False], ids=["dummy_input", "no_input"])
@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_subnets_export_identically(with_input: bool, data: st.DataObject) -> None:
    model, x = _converted(with_input)
    hps = nv.search_space(model).hparams
    nv.select(
        model, {n: data.draw(st.sampled_from(list(hp.choices)), label=n) for n, hp in hps.items()}
    )
    with torch.no_grad():
        y = model(x)
        small = nv.export(model)
        torch.testing.assert_close(small(x), y, atol=1e-5, rtol=1e-5)
    assert isinstance(small.bn1, BatchNormAct2d) and isinstance(small.blocks[1].bn3, BatchNormAct2d)


def test_a_training_step_on_a_subnet_updates_the_statistics_its_export_carries() -> None:
    model, x = REFERENCE_MODELS["efficientnet_like"]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nv.convert(model, mode=[("fastnas", FastNASConfig.with_divisor(4))], dummy_input=x)
    hps = nv.search_space(model).hparams
    nv.select(model, {n: hp.choices[len(hp.choices) // 2] for n, hp in hps.items()})
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))  # drop-path draws, BatchNormAct2d updates statistics
    model.eval()
    with torch.no_grad():
        y = model(x)
        small = nv.export(model)
        torch.testing.assert_close(small(x), y, atol=1e-5, rtol=1e-5)
    assert isinstance(small.bn1, BatchNormAct2d)
    assert small.bn1.num_batches_tracked is not None and int(small.bn1.num_batches_tracked) == 1
