"""Shape and point-wise ops through the whole convert: the physical channel sort plus the
self-check prove every coupling (a wrong one would permute mismatched channels and change the
outputs), and random subnets must export to the same outputs.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nasviz.space as nv
from nasviz.config import LAYER_TYPES

SMALL: dict[str, Any] = {k: {"*": {LAYER_TYPES[k].divisor_field: 4}} for k in LAYER_TYPES}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 4, 1)
        self.fc, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 3)


class EllipsisIndex(Base):
    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)[..., 1:, :]
        return self.c(self.b(y[:, :, None].squeeze(2)))


class Stack(Base):
    def forward(self, x: Tensor) -> Tensor:
        y = torch.stack([self.a(x), self.a(x * 2)], 0).sum(0)
        return self.c(self.b(y))


class Chunk(Base):
    def forward(self, x: Tensor) -> Tensor:
        u, v = self.a(x).chunk(2, dim=2)
        return self.c(self.b(torch.cat([u, v], dim=2)))


class Unbind(Base):
    def forward(self, x: Tensor) -> Tensor:
        return self.c(self.b(torch.stack(self.a(x).unbind(2), 2)))


class Transposes(Base):
    def forward(self, x: Tensor) -> Tensor:
        return self.c(self.a(x).transpose(1, 3).transpose(-1, -3))


class ExpandRepeat(Base):
    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        p = y.mean((2, 3), keepdim=True).expand(-1, -1, y.size(2), y.size(3))
        return self.c(self.b(y + p + y.repeat(1, 1, 1, 1)))


class PadInterp(Base):
    def forward(self, x: Tensor) -> Tensor:
        y = F.interpolate(F.pad(self.a(x), (1, 1, 1, 1)), size=(8, 8))
        return self.c(self.b(F.max_pool2d(y, 2)))


class Unflatten(Base):
    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x).flatten(2).unflatten(2, (x.shape[2], x.shape[3]))
        return self.c(self.b(y))


class Where(Base):
    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        z = self.b(y)
        w = torch.where(z > 0, z, y).masked_fill(y < -5, 0.0)
        return self.c(w) + y.sum(1, keepdim=True)


class Linear2D(Base):
    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(self.a(x).mean((2, 3))).t().t()
        return self.fc2(torch.relu(h).unsqueeze(1)).squeeze(1)


class ViewKeep(Base):
    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        b, _, h, w = y.shape
        return self.c(self.b(y.view(b, -1, h * w).view(b, -1, h, w)))


CASES: list[tuple[type[Base], list[str]]] = [
    (EllipsisIndex, ["a.out_channels", "b.out_channels"]),
    (Stack, ["a.out_channels", "b.out_channels"]),
    (Chunk, ["a.out_channels", "b.out_channels"]),
    (Unbind, ["a.out_channels", "b.out_channels"]),
    (Transposes, ["a.out_channels"]),
    (ExpandRepeat, ["a.out_channels", "b.out_channels"]),
    (PadInterp, ["a.out_channels", "b.out_channels"]),
    (Unflatten, ["a.out_channels", "b.out_channels"]),
    (Where, ["a.out_channels"]),  # where() couples a and b
    (Linear2D, ["a.out_channels", "fc.out_features"]),
    (ViewKeep, ["a.out_channels", "b.out_channels"]),
]


@pytest.mark.parametrize(("cls", "names"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_op_couplings_survive_the_sort_and_export(cls: type[Base], names: list[str]) -> None:
    torch.manual_seed(0)
    model, x = cls().eval(), torch.randn(2, 3, 6, 6)
    nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=x)  # self-check at full size
    assert list(nv.search_space(model).hparams) == names
    for seed in range(3):
        nv.sample(model, seed=seed)
        with torch.no_grad():
            torch.testing.assert_close(nv.export(model)(x), model(x), rtol=1e-5, atol=1e-5)


class UnflattenShuffle(nn.Module):
    """A channel shuffle written with unflatten/transpose/flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x).unflatten(1, (2, -1)).transpose(1, 2)
        return self.b(y.flatten(1, 2))


def test_unflatten_into_groups_is_a_channel_split() -> None:
    model, x = UnflattenShuffle().eval(), torch.randn(2, 3, 4, 4)
    nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=x)
    assert list(nv.search_space(model).hparams) == ["a.0.out_channels"]
    nv.select(model, {"a.0.out_channels": 2})
    with torch.no_grad():
        torch.testing.assert_close(nv.export(model)(x), model(x))
    assert nv.export(model).b.in_channels == 4  # 2 kept channels of each half
