"""Attributes that follow a width are chosen by name, not by value alone.

In a ``torch.export`` graph every size is an int, so ``view(b, s, self.embed_dim)`` shows the
literal 64; the module's int attributes equal to 64 are candidates to follow the pruned width.
Only one whose name says it holds a width or a head count follows; an unrelated attribute of the
same value (``max_tokens``) keeps its value in the subnet and in the export.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.tracing.shapeops import _names_a_width

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {"nn.Linear": {"feature_divisor": 4}}


class Mixer(nn.Module):
    """Flattens the positions with ``reshape(b * s, self.embed_dim)``; ``len(x)`` makes fx
    fail, so the model is captured with ``torch.export``.
    """

    def __init__(self, unrelated: str = "max_tokens") -> None:
        super().__init__()
        self.fc = nn.Linear(8, 64)
        self.out = nn.Linear(64, 3)
        self.embed_dim = 64
        setattr(self, unrelated, 64)  # same value, another meaning
        self.unrelated = unrelated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``out(fc(x))`` over every position, as ``(b * s, 3)``."""
        b, s = len(x), x.shape[1]
        return self.out(self.fc(x).relu().reshape(b * s, self.embed_dim))


@pytest.mark.parametrize("unrelated", ["max_tokens", "layer_idx", "vocab_size", "seed"])
def test_an_unrelated_attribute_of_equal_value_is_not_followed(unrelated: str) -> None:
    torch.manual_seed(0)
    model, x = Mixer(unrelated), torch.randn(2, 5, 8)
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    assert "fc.out_features" in nv.search_space(model).hparams
    nv.select(model, {"fc.out_features": 32})
    assert model.embed_dim == 32  # follows the width
    assert getattr(model, unrelated) == 64  # not changed
    y = model(x)
    small = nv.export(model)
    assert small.embed_dim == 32 and getattr(small, unrelated) == 64
    torch.testing.assert_close(small(x), y, atol=1e-6, rtol=0)


@given(st.sampled_from(["embed_dim", "split_size", "num_heads", "n_heads", "hidden_size",
                        "num_attention_heads", "inner_dim", "all_head_size"]))  # fmt: skip
def test_width_names_are_recognised(name: str) -> None:
    assert _names_a_width(name)


@given(st.sampled_from(["max_tokens", "layer_idx", "vocab_size", "seed", "max_position_embeddings",
                        "window_size", "patch_size", "num_layers", "kernel_size"]))  # fmt: skip
def test_other_names_are_not(name: str) -> None:
    assert not _names_a_width(name)
