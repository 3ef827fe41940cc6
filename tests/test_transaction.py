"""Transactions (issue #15, case 5): an operation that fails or is interrupted leaves the model as
it was - the same Parameter and buffer objects holding the same values, the same modules, the same
training flags. ``nv.convert`` is one; ``nasviz._transaction`` is the helper behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz._transaction import transaction
from nasviz.errors import TracingError
from nasviz.fastnas import convert as fastnas_convert
from nasviz.models import resnet_tiny


def _fingerprint(model: nn.Module) -> dict[str, Any]:
    """Everything a failed operation must leave as it was, by identity and by value."""
    return {
        "modules": [(n, id(m), type(m)) for n, m in model.named_modules()],
        "training": [m.training for m in model.modules()],
        "params": [
            (n, id(p), p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()
        ],
        "buffers": [(n, id(b), b.clone()) for n, b in model.named_buffers()],
        "attrs": sorted(model.__dict__),
        "forward": model.__dict__.get("forward"),
    }


def _assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["modules"] == before["modules"]
    assert after["training"] == before["training"]
    assert after["attrs"] == before["attrs"]
    assert after["forward"] is before["forward"]
    for (n0, i0, v0, g0), (n1, i1, v1, g1) in zip(before["params"], after["params"], strict=True):
        assert (n1, i1, g1) == (n0, i0, g0), n0  # the same Parameter object
        assert torch.equal(v1, v0), n0
    for (n0, i0, v0), (n1, i1, v1) in zip(before["buffers"], after["buffers"], strict=True):
        assert (n1, i1) == (n0, i0) and torch.equal(v1, v0), n0


def _fail_in(monkeypatch: pytest.MonkeyPatch, name: str, exc: BaseException) -> None:
    real: Callable[..., Any] = getattr(fastnas_convert, name)

    def failing(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)  # the step runs (the model is half-converted), then fails
        raise exc

    monkeypatch.setattr(fastnas_convert, name, failing)


@pytest.mark.parametrize(
    "exc", [RuntimeError("boom"), KeyboardInterrupt()], ids=["error", "ctrl-c"]
)
@pytest.mark.parametrize("step", ["apply_plan", "sort_channels", "_self_check"])
def test_a_failed_convert_leaves_the_same_objects(
    monkeypatch: pytest.MonkeyPatch, step: str, exc: BaseException
) -> None:
    torch.manual_seed(0)
    model, x = resnet_tiny(), torch.randn(2, 3, 32, 32)
    model.layer1.train(False)  # mixed training flags must come back as they were
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # built before: must stay attached
    before = _fingerprint(model)
    _fail_in(monkeypatch, step, exc)
    cfg = {"nn.Conv2d": {"channel_divisor": 8}, "nn.BatchNorm2d": {"feature_divisor": 8}}
    with pytest.raises(TracingError if isinstance(exc, Exception) else KeyboardInterrupt):
        nv.convert(model, mode=[("fastnas", cfg)], dummy_input=x)
    _assert_same(before, _fingerprint(model))
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters()}
    monkeypatch.undo()
    nv.convert(model, mode=[("fastnas", cfg)], dummy_input=x)  # and it converts afterwards


def test_transaction_restores_objects_values_and_flags() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    before = _fingerprint(model)
    weight = model[0].weight

    def meddle() -> None:
        with transaction(model):
            with torch.no_grad():
                model[0].weight.mul_(0)  # in place
                model[0].weight.data = torch.ones(2, 2)  # new storage and shape
            model[1].running_mean.add_(5)
            model[2] = nn.Identity()  # a module swapped
            model[0].bias = nn.Parameter(torch.zeros(4))  # a Parameter replaced
            model.eval()
            model.extra = 1  # type: ignore[assignment]  # an attribute added; torch: Tensor | Module
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        meddle()
    assert model[0].weight is weight
    _assert_same(before, _fingerprint(model))


def test_transaction_keeps_a_successful_change() -> None:
    model = nn.Linear(2, 2)
    with transaction(model), torch.no_grad():
        model.weight.fill_(3)
    assert torch.equal(model.weight, torch.full((2, 2), 3.0))
