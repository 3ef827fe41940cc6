"""RuleConfigEditor without a browser: set widget values, assert on the FastNASConfig produced,
the inline error, the match table and the JSON round trip.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nasviz as nv
from nasviz.config import LayerConfig
from nasviz.errors import NasvizError
from nasviz.widgets._rule_row import format_numbers, parse_numbers, ratio_range
from nasviz.widgets.config_editor import RuleConfigEditor


class Tiny(nn.Module):
    """Modules ``stem``, ``bn``, ``block.0`` (conv), ``block.1`` (BN), ``head`` (Linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.block = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(torch.relu(self.bn(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


def _rule(editor: RuleConfigEditor, module: str) -> LayerConfig:
    rule = editor.value.rule_for("nn.Conv2d", module).rule
    assert rule is not None
    return rule


@pytest.fixture
def editor() -> RuleConfigEditor:
    return RuleConfigEditor(Tiny(), dummy_input=torch.randn(2, 3, 8, 8))


def test_default_value_is_the_default_config(editor: RuleConfigEditor) -> None:
    assert editor.value == nv.FastNASConfig()
    assert editor.error is None
    assert editor.layer_type.value == "nn.Conv2d"  # the first layer type the model has
    assert [r.glob.value for r in editor.rows()] == ["*"]


def test_rules_in_order_and_none_for_switched_off(editor: RuleConfigEditor) -> None:
    editor.rows()[0].divisor.value = 8
    editor.new_glob.value = "block.*"
    editor.add_button.click()
    editor.rows()[-1].off.value = True
    stem = editor.add_rule("nn.Conv2d", "stem")
    stem.ratio_text.value = "0.25, 0.5, 1"
    stem.divisor.value = 4
    rules = editor.value.rules("nn.Conv2d")
    assert rules is not None
    assert list(rules) == ["*", "block.*", "stem"]
    assert rules["block.*"] is None
    assert rules["*"] is not None and rules["*"].divisor == 8
    assert rules["stem"] is not None and rules["stem"].ratios == [0.25, 0.5, 1.0]
    assert _rule(editor, "stem").divisor == 4
    assert editor.value.rule_for("nn.Conv2d", "block.0").rule is None
    # the other layer types are untouched
    assert editor.value.rules("nn.Linear") == nv.FastNASConfig().rules("nn.Linear")


def test_move_and_remove_change_the_winner(editor: RuleConfigEditor) -> None:
    editor.add_rule("nn.Conv2d", "block.*", off=True)
    assert editor.value.rule_for("nn.Conv2d", "block.0").pattern == "block.*"
    editor.rows()[1].up.click()  # "block.*" before "*": "*" wins again
    assert list(editor.value.rules("nn.Conv2d") or {}) == ["block.*", "*"]
    assert editor.value.rule_for("nn.Conv2d", "block.0").pattern == "*"
    editor.rows()[0].down.click()
    assert list(editor.value.rules("nn.Conv2d") or {}) == ["*", "block.*"]
    editor.rows()[1].remove.click()
    assert list(editor.value.rules("nn.Conv2d") or {}) == ["*"]
    assert len(editor.rules_box.children) == 1


def test_slider_and_step_generate_the_ratio_list(editor: RuleConfigEditor) -> None:
    row = editor.rows()[0]
    row.step.value = 0.25
    row.ratio_slider.value = (0.5, 1.0)
    assert row.ratio_text.value == "0.5, 0.75, 1"
    assert _rule(editor, "stem").ratios == [0.5, 0.75, 1.0]
    row.ratio_text.value = "0.3, 0.6"  # an explicit list moves the slider to its bounds
    assert row.ratio_slider.value == (0.3, 0.6)
    assert _rule(editor, "stem").ratios == [0.3, 0.6]


def test_bad_ratio_shows_an_inline_error_and_keeps_the_value(editor: RuleConfigEditor) -> None:
    seen: list[object] = []
    editor.on_change(seen.append)
    before = editor.value
    row = editor.rows()[0]
    row.ratio_text.value = "0.5, 1.5"
    assert editor.value is before
    assert editor.error is not None
    assert (editor.error.layer_type, editor.error.glob) == ("nn.Conv2d", "*")
    assert editor.error.field == "channels_ratio"
    assert "got 1.5" in editor.error.message and "(0, 1]" in editor.error.message
    assert "channels_ratio" in editor.error_box.value and "1.5" in editor.error_box.value
    assert "Traceback" not in editor.error_box.value
    assert row.widget.layout.border.startswith("2px solid")
    assert seen == []
    row.ratio_text.value = "0.5, 1"
    assert editor.error is None and editor.error_box.value == ""
    assert _rule(editor, "stem").ratios == [0.5, 1.0]
    assert len(seen) == 1 and seen[0] is editor.value
    assert row.widget.layout.border.startswith("1px")


@pytest.mark.parametrize(
    ("widget", "text", "field", "words"),
    [
        ("divisor", 0, "channel_divisor", ">= 1"),
        ("ratio_text", "0.5, abc", "channels_ratio", "'abc' is not a number"),
        ("kernel_text", "3, 4", "kernel_size", "odd positive"),
        ("glob", "a[", "glob", "unbalanced brackets"),
        ("glob", " x", "glob", "malformed"),
    ],
)
def test_each_kind_of_bad_edit_names_its_field(
    editor: RuleConfigEditor, widget: str, text: object, field: str, words: str
) -> None:
    before = editor.value
    getattr(editor.rows()[0], widget).value = text
    assert editor.error is not None
    assert editor.error.field == field
    assert words in editor.error.message
    assert editor.value is before


def test_duplicate_globs_are_refused(editor: RuleConfigEditor) -> None:
    editor.add_rule("nn.Conv2d", "*")
    assert editor.error is not None and "used twice" in editor.error.message


def test_match_table_shows_matches_and_winners(editor: RuleConfigEditor) -> None:
    editor.add_rule("nn.Conv2d", "block.*", off=True)
    table = editor.table("nn.Conv2d")
    assert list(table["module"]) == ["stem", "block.0"]
    block = table.set_index("module").loc["block.0"]
    assert block["matched_by"] == ["*", "block.*"]
    assert block["winner"] == "block.*" and not block["pruned"]
    assert block["rule"] == "switched off"
    stem = table.set_index("module").loc["stem"]
    assert stem["winner"] == "*" and stem["pruned"]
    assert stem["rule"] == "ratios 0.05-1 (20), divisor 32"
    assert "block.0" in editor.table_html.value and "stem" in editor.table_html.value
    assert "head" not in editor.table_html.value  # only the selected layer type
    assert editor.rows()[0].matches.value.count("matches 2 · wins 1") == 1
    assert "matches 1 · wins 1" in editor.rows()[1].matches.value
    editor.all_types.value = True
    assert "head" in editor.table_html.value and "bn" in editor.table_html.value
    full = editor.table()
    assert set(full["layer_type"]) == {"nn.Conv2d", "nn.BatchNorm2d", "nn.Linear"}


def test_switching_a_layer_type_off_gives_none(editor: RuleConfigEditor) -> None:
    editor.layer_type.value = "nn.Linear"
    editor.enabled.value = False
    assert editor.value.rules("nn.Linear") is None
    assert editor.rules_box.children == ()
    row = editor.table("nn.Linear").iloc[0]
    assert row["winner"] is None and row["rule"] == "type switched off"
    editor.enabled.value = True  # back on: it gets its rules again
    assert list(editor.value.rules("nn.Linear") or {}) == ["*"]


def test_json_round_trip(editor: RuleConfigEditor) -> None:
    editor.rows()[0].divisor.value = 8
    editor.add_rule("nn.Conv2d", "block.*", rule={"channels_ratio": [0.5, 1.0], "kernel_size": [1]})
    editor.layer_type.value = "nn.Linear"
    editor.enabled.value = False
    text = editor.to_json()
    assert json.loads(text)["nn.Conv2d"]["block.*"]["kernel_size"] == [1]
    other = RuleConfigEditor(Tiny())
    loaded = other.load_json(text)
    assert other.value == editor.value == loaded
    assert other.rows("nn.Conv2d")[1].kernel_text.value == "1"
    assert nv.FastNASConfig(**json.loads(text)) == editor.value
    # the buttons do the same through the text area
    editor.export_button.click()
    assert editor.json_text.value == text
    other.json_text.value = '{"nn.Conv2d": {"*": {"channel_divisor": 0}}}'
    other.load_button.click()  # refused inline, no exception
    assert other.value == editor.value
    assert other.error is not None and other.error.field == "channel_divisor"
    assert other.error.glob == "*" and other.error.layer_type == "nn.Conv2d"
    with pytest.raises(NasvizError, match="not a valid FastNASConfig"):
        other.load_json("{not json")


def test_constructor_config_and_value_setter(editor: RuleConfigEditor) -> None:
    cfg = nv.FastNASConfig(**{"nn.Conv2d": {"*": {"channel_divisor": 8}, "*head*": None}})
    assert RuleConfigEditor(config=cfg).value == cfg
    assert RuleConfigEditor(config=cfg.model_dump()).value == cfg
    editor.value = cfg
    assert [r.glob.value for r in editor.rows("nn.Conv2d")] == ["*", "*head*"]
    assert editor.rows("nn.Conv2d")[1].off.value
    with pytest.raises(NasvizError, match="channel_divisor"):
        RuleConfigEditor(config={"nn.Conv2d": {"channel_divisor": -1}})


def test_preview_converts_a_copy_and_shows_reasons(editor: RuleConfigEditor) -> None:
    editor.rows()[0].divisor.value = 4  # convs only: their BNs (divisor 32) allow no common width
    space = editor.preview()
    assert space.hparams == {}
    reasons = space.static_table().set_index(["module", "attr"])["reason"]
    assert reasons["stem", "out_channels"].startswith("no common choices")
    editor.layer_type.value = "nn.BatchNorm2d"
    editor.rows()[0].divisor.value = 4
    editor.layer_type.value = "nn.Linear"
    editor.enabled.value = False  # the head stays whole, so does the block feeding it
    space = editor.preview()
    assert list(space.hparams) == ["stem.out_channels"]
    assert space.hparams["stem.out_channels"].choices == (4, 8, 12, 16)
    assert {"block.0", "head"} <= set(space.static_table()["module"])
    assert not nv.search_space.__module__.startswith("nasviz.widgets")
    with pytest.raises(NasvizError):
        nv.search_space(Tiny() if editor.model is None else editor.model)  # stays unconverted
    editor.preview_button.click()
    assert "Static layer dimensions" in editor.preview_html.value
    assert "stem.out_channels" in editor.preview_html.value
    assert not editor.preview_button.disabled


def test_helpers() -> None:
    assert ratio_range(0.25, 1.0, 0.25) == [0.25, 0.5, 0.75, 1.0]
    assert ratio_range(0.05, 1.0, 0.05)[-1] == 1.0 and len(ratio_range(0.05, 1.0, 0.05)) == 20
    assert parse_numbers("0.25, 0.5 1", "ratios") == [0.25, 0.5, 1.0]
    assert format_numbers([0.25, 1.0]) == "0.25, 1"
    with pytest.raises(ValueError, match="'x' is not an integer"):
        parse_numbers("1, x", "kernel sizes", int)


_ratios = st.lists(
    st.integers(1, 20).map(lambda i: i / 20), min_size=1, max_size=5, unique=True
).map(sorted)
_rules = st.none() | st.fixed_dictionaries(
    {"channels_ratio": _ratios, "channel_divisor": st.integers(1, 64)}
)
_globs = st.sampled_from(["*", "stem", "block.*", "*head*", "layer[12].*", "a?b"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_globs, _rules, max_size=4), st.booleans())
def test_any_config_round_trips_through_the_widgets(rules: dict, linear_off: bool) -> None:
    cfg = nv.FastNASConfig(**{"nn.Conv2d": rules, **({"nn.Linear": None} if linear_off else {})})
    editor = _shared_editor()
    editor.value = cfg
    assert editor.value == cfg
    assert editor.error is None
    assert [r.glob.value for r in editor.rows("nn.Conv2d")] == list(rules)


_EDITOR: list[RuleConfigEditor] = []


def _shared_editor() -> RuleConfigEditor:
    if not _EDITOR:
        _EDITOR.append(RuleConfigEditor(Tiny()))
    return _EDITOR[0]
