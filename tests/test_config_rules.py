"""Rule fields vs globs (issue #15, item 8): a mistyped layer-config field is not read as a glob
silently; the error names the field it was probably meant to be.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nasviz as nv
from nasviz.config import LAYER_TYPES


def test_a_field_typo_suggests_the_field() -> None:
    with pytest.raises(
        ValueError,
        match=r"nn\.Conv2d: 'channel_divisr' is not a field of DynamicConv2dConfig.*"
        r"did you mean 'channel_divisor'\?",
    ):
        nv.FastNASConfig(**{"nn.Conv2d": {"channel_divisr": 8}})


def test_a_typo_next_to_a_correct_field_suggests_the_field() -> None:
    with pytest.raises(ValueError, match=r"'channels_ratios' .*did you mean 'channels_ratio'\?"):
        nv.FastNASConfig(**{"nn.Conv2d": {"channel_divisor": 8, "channels_ratios": [0.5, 1.0]}})


def test_globs_with_rules_are_still_globs() -> None:
    cfg = nv.FastNASConfig(**{"nn.Conv2d": {"channel_divisr": {"channel_divisor": 8}}})
    assert "channel_divisr" in cfg.model_dump()["nn.Conv2d"]  # a legal (if odd) glob


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_field_with_one_letter_dropped_is_suggested(data: st.DataObject) -> None:
    layer_type = data.draw(st.sampled_from(sorted(LAYER_TYPES)))
    fields = list(LAYER_TYPES[layer_type].model_fields)
    field = data.draw(st.sampled_from(fields))
    cut = data.draw(st.integers(1, len(field) - 1))
    typo = field[:cut] + field[cut + 1 :]
    if typo in fields:
        return
    with pytest.raises(ValueError, match=rf"did you mean '{field}'\?"):
        nv.FastNASConfig(**{layer_type: {typo: 8}})
