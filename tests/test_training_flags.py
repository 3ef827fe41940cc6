"""Training flags (issue #15, item 8): ``grabber.stump()`` and a failing ``prep_for_eval`` leave
the model's train/eval flags as they were.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasviz.extension import ActivationMapGrabber
from nasviz.patch import AutoNASPatchManager, prep_for_eval


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))


def _flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_stump_evaluates_without_switching_the_model_to_eval() -> None:
    model = _model()
    model[2].eval()  # mixed flags
    before = _flags(model)
    x = torch.randn(5, 3)
    stump = ActivationMapGrabber(model, ["0"]).stump("2")
    assert _flags(model) == before and not stump.training
    out = stump(x)
    assert _flags(model) == before
    model.eval()
    with torch.no_grad():
        expected = model[2](model[1](model[0](x)))
    assert torch.allclose(out, expected)  # the stump ran the model in eval mode


@pytest.mark.parametrize("patched", [False, True], ids=["plain", "patched"])
def test_a_failing_calibration_restores_the_training_flags(patched: bool) -> None:
    model = _model()
    model[3].eval()
    if patched:
        AutoNASPatchManager(model).patch()
    before, stats = _flags(model), model[1].running_mean.clone()

    def broken_loop(m: nn.Module) -> None:
        m(torch.randn(4, 3))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prep_for_eval(model, broken_loop)
    assert _flags(model) == before
    assert torch.equal(model[1].running_mean, stats)
