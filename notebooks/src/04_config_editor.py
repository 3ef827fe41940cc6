# %% [markdown]
# # 04 · The rule-config editor: build a `FastNASConfig` and see which rule wins where
#
# `RuleConfigEditor` edits the glob rules of each layer type (`nn.Conv2d`, `nn.BatchNorm2d`, ...):
# per rule a glob over qualified module names, a ratio range (slider + step, or an explicit list),
# a divisor, and a switch-off toggle; later rules win. Below the rules, a live table shows, for
# every module of the model, which globs match it and which rule wins (`config.rule_for`).
# A bad edit is refused inline (field, value, fix) and `editor.value` keeps the last valid config.
#
# Every step below sets widget values from code, exactly what clicking does, so the notebook runs
# headless too; in JupyterLab you can do the same by hand.

# %%
import copy
import json

import torch

import nasviz as nv
from nasviz.models import resnet_tiny
from nasviz.widgets.config_editor import RuleConfigEditor

torch.manual_seed(0)
model = resnet_tiny()
x = torch.randn(2, 3, 32, 32)
editor = RuleConfigEditor(model, dummy_input=x)
editor

# %% [markdown]
# The editor starts from the FastNAS defaults (ratios 0.05 ... 1.0, divisor 32), on the first layer
# type the model has. Now: convs in multiples of 8 with ratios 0.25 ... 1 in steps of 0.25, and
# the first stage (`layer1.*`) switched off. Norms and the classifier follow the convs they are
# coupled to, so they get divisor 8 too (otherwise no common width exists; see the preview below).

# %%
assert editor.value == nv.FastNASConfig() and editor.layer_type.value == "nn.Conv2d"

star = editor.rows()[0]  # the "*" rule of nn.Conv2d
star.divisor.value = 8
star.step.value = 0.25
star.ratio_slider.value = (0.25, 1.0)  # generates the list 0.25, 0.5, 0.75, 1

editor.new_glob.value = "layer1.*"
editor.add_button.click()
editor.rows()[-1].off.value = True  # switch the first stage off

for layer_type in ("nn.BatchNorm2d", "nn.Linear"):
    editor.layer_type.value = layer_type
    editor.rows()[0].divisor.value = 8
editor.layer_type.value = "nn.Conv2d"

cfg = editor.value
conv_rules = cfg.rules("nn.Conv2d")
print(json.dumps({g: r if r is None else r.model_dump() for g, r in conv_rules.items()}))
assert list(conv_rules) == ["*", "layer1.*"]  # globs in order
assert conv_rules["layer1.*"] is None  # switched off
assert conv_rules["*"].channels_ratio == [0.25, 0.5, 0.75, 1.0]
assert conv_rules["*"].channel_divisor == 8
assert cfg.rules("nn.BatchNorm2d")["*"].feature_divisor == 8
assert editor.error is None

# %% [markdown]
# ## Which rule wins for each module
#
# `editor.table()` is the data behind the live table: per module, the globs that match its name
# (in order) and the winner. Modules whose winner is switched off stay static.

# %%
table = editor.table("nn.Conv2d")
table

# %%
rows = table.set_index("module")
assert rows.loc["conv1", "matched_by"] == ["*"] and rows.loc["conv1", "winner"] == "*"
assert rows.loc["layer1.0.conv1", "matched_by"] == ["*", "layer1.*"]
assert rows.loc["layer1.0.conv1", "winner"] == "layer1.*"
assert not rows.loc["layer1.0.conv2", "pruned"]
assert rows.loc["layer3.0.conv1", "rule"] == "ratios 0.25-1 (4), divisor 8"
assert "matches 2 · wins 2" in editor.rows()[1].matches.value  # the layer1.* rule
assert "layer1.0.conv1" in editor.table_html.value

# %% [markdown]
# ## A bad edit is refused inline
#
# A ratio of 1.5 is not a fraction of the width: the config refuses it, the editor shows why in a
# red box (no traceback) and frames the rule, and `value` stays the last valid config.

# %%
before = editor.value
star.ratio_text.value = "0.25, 1.5"
print(editor.error)
assert editor.value is before
assert editor.error.field == "channels_ratio" and "got 1.5" in editor.error.message
assert "channels_ratio" in editor.error_box.value

star.ratio_text.value = "0.25, 0.5, 0.75, 1"  # fixed: accepted again
assert editor.error is None and editor.value == before

# %% [markdown]
# ## JSON export and import
#
# *Export JSON* writes the config into the text area; *Load JSON* reads it back. The JSON is the
# config itself: `nv.FastNASConfig(**json.loads(text))` rebuilds it.

# %%
editor.export_button.click()
text = editor.json_text.value
assert text == editor.to_json()
assert nv.FastNASConfig(**json.loads(text)) == editor.value

other = RuleConfigEditor(model)
other.json_text.value = text
other.load_button.click()
assert other.value == editor.value
assert [r.glob.value for r in other.rows("nn.Conv2d")] == ["*", "layer1.*"]
print(text[:300], "...")

# %% [markdown]
# ## Convert a model with the config
#
# The editor's `value` is an ordinary `FastNASConfig`. With `layer1.*` off, the first stage and
# everything coupled to it through the residual adds stays static; the other stages get widths in
# multiples of 8.

# %%
searchable = nv.convert(copy.deepcopy(model), mode=[("fastnas", editor.value)], dummy_input=x)
space = nv.search_space(searchable)
print(space)
space.table()[["name", "original", "choices"]]

# %%
choices = {g.name: g.choices for g in space.groups}
assert choices == {
    "layer2.0.downsample.0.out_channels": (8, 16, 24, 32),
    "layer2.0.conv1.out_channels": (8, 16, 24, 32),
    "layer3.0.downsample.0.out_channels": (16, 32, 48, 64),
    "layer3.0.conv1.out_channels": (16, 32, 48, 64),
}
static = space.static_table()
assert {"layer1.0.conv1", "layer1.0.conv2"} <= set(static["module"])
static[static["module"].str.startswith("layer1")]

# %% [markdown]
# *Preview search space* does the same conversion on a copy from inside the editor and shows the
# groups and the static layers with their reasons.

# %%
editor.preview_button.click()
assert "Static layer dimensions" in editor.preview_html.value
assert "layer3.0.conv1.out_channels" in editor.preview_html.value
print(editor.preview_status.value)

# %% [markdown]
# ## What nasviz can search beyond plain convs
#
# The same conversion on two harder reference models. **ShuffleNet**: the channel shuffle
# (`view` into two groups, `transpose`, `view` back) and the `chunk` that splits each unit's input
# leave prunable groups whose parts keep the same channels; `per_unit` says how many channels of
# the producer one step of the hparam stands for. **ViT**: each attention block prunes its head
# width (all heads keep the same positions, q, k and v coupled), and the class token and position
# embedding are sliced with the stream. In both, only the input and output layers stay static.

# %%
from nasviz.config import LAYER_TYPES
from nasviz.models import REFERENCE_MODELS

small_rules = {t: {"*": {LAYER_TYPES[t].divisor_field: 4}} for t in LAYER_TYPES}
shuffle, shuffle_x = REFERENCE_MODELS["shufflenet_like"]()
nv.convert(shuffle, mode=[("fastnas", small_rules)], dummy_input=shuffle_x)
shuffle_space = nv.search_space(shuffle)
assert len(shuffle_space.static_table()) == 2  # the stem's input and the classifier's output
shuffle_space.table()[["name", "original", "choices", "per_unit"]]

# %%
vit, vit_x = REFERENCE_MODELS["vit_like"]()
nv.convert(vit, mode=[("fastnas", small_rules)], dummy_input=vit_x)
vit_space = nv.search_space(vit)
assert "blocks.0.attn.qkv.out_features" in vit_space.hparams  # the head width
nv.select(vit, {"patch_embed.out_channels": 32})  # half the stream
assert tuple(vit.cls_token.shape) == (1, 1, 32) and vit.state_dict()["cls_token"].shape[-1] == 64
vit_space.table()[["name", "original", "choices", "per_unit"]]
