"""Shape ops around Swin's shifted windows: torch.roll, window partition, and attention whose
scores get an additive bias over the key positions.

``torch.roll`` over dims other than the channels moves whole channel vectors, so the channels
pass through (coupled with the residual stream); over the channel dim, or flattened, it fixes
them with a reason. For any set of rolled dims the rule is checked by hypothesis, and subnets
export with identical outputs.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import nasviz as nv
from nasviz.fastnas import FastNASConfig
from nasviz.tracing import analyze, capture, make_plan

SMALL = FastNASConfig.with_divisor(2)


class Rolled(nn.Module):
    """A channels-last residual stream rolled along ``dims`` (as Swin shifts its windows)."""

    def __init__(self, dims: tuple[int, ...] | None, shifts: tuple[int, ...] | int = 1) -> None:
        super().__init__()
        self.dims, self.shifts = dims, shifts
        self.a, self.b, self.c = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        z = torch.roll(y, self.shifts, self.dims) if self.dims is not None else torch.roll(y, 1)
        return self.c(y + self.b(z))


def _plan(model: nn.Module, x: Tensor | None) -> tuple[list[str], dict[tuple[str, str], str]]:
    plan = make_plan(model, analyze(model, capture(model, x)), SMALL)
    return [g.name for g in plan.hparams], {
        (r["module"], r["attr"]): r["reason"] for r in plan.static
    }


X = torch.randn(2, 4, 4, 3)  # (B, H, W, C)


@settings(max_examples=20, deadline=None)
@given(
    dims=st.lists(
        st.sampled_from([0, 1, 2, 3, -1, -2, -3, -4]), min_size=1, max_size=3, unique=True
    )
)
def test_roll_passes_channels_unless_it_shifts_along_them(dims: list[int]) -> None:
    if len({d % 4 for d in dims}) < len(dims):
        return  # the same dim twice
    model = Rolled(tuple(dims), tuple(1 for _ in dims))
    names, static = _plan(model, X)
    if any(d % 4 == 3 for d in dims):
        assert "a.out_features" not in names
        assert static[("a", "out_features")].startswith("torch.roll shifts along the channel")
    else:
        assert names == ["a.out_features"]  # one stream: a, b (added to it) and c's input
        assert ("a", "out_features") not in static


def test_roll_without_dims_shifts_the_flattened_tensor() -> None:
    names, static = _plan(Rolled(None), X)
    assert "a.out_features" not in names
    assert "without dims" in static[("a", "out_features")]


def test_roll_with_negative_dims_needs_no_shapes() -> None:
    names, _ = _plan(Rolled((-3, -2), (1, 1)), None)
    assert names == ["a.out_features"]
    names, static = _plan(Rolled((1, 2), (1, 1)), None)  # positive dims need the rank
    assert names == [] and "needs tensor shapes" in static[("a", "out_features")]


class BiasedAttention(nn.Module):
    """Window attention with a learned bias over the key positions, as Swin's."""

    def __init__(self, dim: int = 8, heads: int = 2, n: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.randn(heads, n, n))

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        t = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = t[0], t[1], t[2]
        attn = ((q @ k.transpose(-2, -1)) + self.bias).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


def test_an_additive_bias_over_key_positions_leaves_v_prunable() -> None:
    names, static = _plan(BiasedAttention(), torch.randn(2, 4, 8))
    assert "qkv.out_features" in names  # q, k and v of each head, coupled
    assert ("proj", "in_features") not in static


@pytest.mark.parametrize("with_input", [False, True])
@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_subnets_of_a_rolled_stream_export_identically(
    with_input: bool, data: st.DataObject
) -> None:
    torch.manual_seed(0)
    model = Rolled((-3, -2), (1, -1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nv.convert(model, mode=[("fastnas", SMALL)], dummy_input=X if with_input else None)
    hps = nv.search_space(model).hparams
    assert "a.out_features" in hps
    nv.select(
        model, {n: data.draw(st.sampled_from(list(hp.choices)), label=n) for n, hp in hps.items()}
    )
    with torch.no_grad():
        y = model(X)
        torch.testing.assert_close(nv.export(model)(X), y)
