"""CostModel.estimate_many: many subnets priced at once, equal to estimate() row by row."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import nasviz as nv
from nasviz.demo import demo_config
from nasviz.errors import HparamError
from nasviz.models import DigitsCNN
from nasviz.profile import CostModel


def test_estimate_many_equals_estimate_row_by_row() -> None:
    torch.manual_seed(0)
    x = torch.zeros(2, 1, 8, 8)
    model = nv.convert(DigitsCNN(width=16), mode=[("fastnas", demo_config(4))], dummy_input=x)
    cm = CostModel.from_model(model, x)
    hps = {n: hp for n, hp in nv.search_space(model).hparams.items() if hp.is_configurable}
    names = list(hps)
    grid = np.array(list(itertools.product(*(hps[n].choices for n in names))))
    flops, params = cm.estimate_many(names, grid)
    assert len(flops) == len(grid) > 10
    for row, f, p in zip(grid, flops, params):
        assert cm.estimate(dict(zip(names, map(int, row)))) == (int(f), int(p))
    # a subset of the names: the others keep their active value
    f1, p1 = cm.estimate_many(names[:1], grid[:3, :1])
    for row, f, p in zip(grid[:3, :1], f1, p1):
        assert cm.estimate({names[0]: int(row[0])}) == (int(f), int(p))
    with pytest.raises(HparamError, match="not an hparam"):
        cm.estimate_many(["nope"], [[4]])
    with pytest.raises(HparamError, match="not a valid choice"):
        cm.estimate_many(names[:1], [[3]])
