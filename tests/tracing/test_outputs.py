"""Which model outputs keep their width (nasviz.tracing.outputs), on models with known answers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.errors import TracingError
from nasviz.tracing.outputs import BY_PRODUCTS, OutputNames, leaf_names, pinned_outputs

CFG = {"nn.Linear": {"feature_divisor": 4}}


class TwoHeads(nn.Module):
    """Returns ``(logits, features)``: ``features`` is ``body``'s output, ``logits`` the head's."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 16)
        self.body = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, features)``."""
        f = self.body(torch.relu(self.stem(x)))
        return self.head(torch.relu(f)), f


def test_names_follow_the_output_structure() -> None:
    names, leaves = leaf_names((1, {"a": 2, "b": [3, 4]}))
    assert names.names == ["0", "1.a", "1.b.0", "1.b.1"] and leaves == [1, 2, 3, 4]
    assert leaf_names(torch.ones(1))[0].names == ["output"]
    assert not names.model_output


FIELDS = [*sorted(BY_PRODUCTS), "logits", "loss", "pred_boxes", "0"]


@given(names=st.lists(st.sampled_from(FIELDS), unique=True, min_size=1))
def test_the_default_frees_only_by_products_of_a_model_output_with_logits(names: list[str]) -> None:
    assert pinned_outputs(OutputNames(names, False), None) == set(names)  # not a ModelOutput
    pinned = pinned_outputs(OutputNames(names, True), None)
    if "logits" in names:
        assert pinned == {n for n in names if n not in BY_PRODUCTS}
    else:
        assert pinned == set(names)


def test_keep_outputs_globs_cover_sub_paths() -> None:
    out = OutputNames(["logits", "hidden_states.0", "hidden_states.1", "x"], True)
    assert pinned_outputs(out, ["hidden_states"]) == {"hidden_states.0", "hidden_states.1"}
    assert pinned_outputs(out, ["*s.1", "x"]) == {"hidden_states.1", "x"}
    assert pinned_outputs(out, []) == set()
    with pytest.raises(TracingError, match=r"\['nope'\] names no output.*'hidden_states.0'"):
        pinned_outputs(out, ["logits", "nope"])


def test_a_tuple_output_keeps_both_widths_by_default() -> None:
    torch.manual_seed(0)
    model, x = TwoHeads(), torch.randn(4, 8)
    nv.convert(model, mode=[("fastnas", CFG)], dummy_input=x)
    space = nv.search_space(model)
    assert "body.out_features" not in space.hparams
    assert "output layer ('1')" in set(space.static["reason"])
    assert "stem.out_features" in space.hparams


def test_an_output_left_out_of_keep_outputs_follows_the_pruned_width() -> None:
    torch.manual_seed(0)
    model, x = TwoHeads(), torch.randn(4, 8)
    nv.convert(model, mode=[("fastnas", {**CFG, "keep_outputs": ["0"]})], dummy_input=x)
    hp = nv.search_space(model).hparams["body.out_features"]
    assert hp.original == 16
    nv.select(model, {"body.out_features": 8})
    logits, feats = model(x)
    assert feats.shape == (4, 8) and logits.shape == (4, 3)
    small = nv.export(model)
    got = small(x)
    torch.testing.assert_close(got[0], logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1], feats, atol=1e-6, rtol=0)
    assert any("['1']" in n and "keep_outputs" in n for n in nv.search_space(model).notes)


def test_keep_outputs_must_be_a_list_of_names() -> None:
    with pytest.raises(ValueError, match="keep_outputs"):
        nv.FastNASConfig.model_validate({"keep_outputs": "logits"})
    with pytest.raises(ValueError, match="empty name"):
        nv.FastNASConfig.model_validate({"keep_outputs": [" "]})
