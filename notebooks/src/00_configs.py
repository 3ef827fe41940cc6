# %% [markdown]
# # 00 · Rule configs: which rule wins for which layer
#
# A `FastNASConfig` has one field per layer type (`"nn.Conv2d"`, `"nn.Linear"`, ... 16 in all).
# Each field maps **globs over qualified module names** to a layer rule; globs apply in order and a
# later match wins; `None` switches the matched layers off. This notebook builds a config, shows
# which rule wins for a few module names, and shows how a bad config is refused.

# %%
import pandas as pd
from pydantic import ValidationError

import nasviz as nv

cfg = nv.FastNASConfig(
    **{
        "nn.Conv2d": {
            "*": {"channel_divisor": 8},  # every conv: widths in multiples of 8
            "layer1.*": {"channel_divisor": 4, "channels_ratio": [0.25, 0.5, 1.0]},
            "*head*": None,  # never prune the head
        },
        "nn.Linear": {"feature_divisor": 16},  # unnested: short for {"*": {...}}
    }
)
cfg.rules("nn.Conv2d")

# %% [markdown]
# `rule_for(layer_type, module_name)` resolves one module: the effective rule (or `None` when the
# layer is switched off) and the glob that won. The config editor widget shows exactly this table.

# %%
names = ["stem.conv", "layer1.0.conv1", "layer2.0.conv1", "layer1.head", "head.conv"]
rows = []
for name in names:
    m = cfg.rule_for("nn.Conv2d", name)
    rows.append(
        {
            "module": name,
            "winning glob": m.pattern,
            "switched off": m.rule is None,
            "divisor": None if m.rule is None else m.rule.channel_divisor,
            "widths for 64 channels": None if m.rule is None else m.rule.choices_for(64),
        }
    )
table = pd.DataFrame(rows)
table

# %%
assert table.loc[0, "winning glob"] == "*" and table.loc[0, "divisor"] == 8
assert table.loc[1, "winning glob"] == "layer1.*" and table.loc[1, "widths for 64 channels"] == [16, 32, 64]
assert table.loc[3, "switched off"] and table.loc[3, "winning glob"] == "*head*"
assert cfg.rule_for("nn.Linear", "fc").rule.feature_divisor == 16

# %% [markdown]
# The default config equals the FastNAS reference: ratios 0.05 ... 1.0, divisor 32, no kernel sizes.

# %%
default = nv.FastNASConfig()
rule = default.rule_for("nn.Conv2d", "any.conv").rule
print(len(rule.channels_ratio), "ratios from", rule.channels_ratio[0], "to", rule.channels_ratio[-1])
print("divisor", rule.channel_divisor, "| kernel sizes", rule.kernel_size)
assert rule.channel_divisor == 32 and len(rule.channels_ratio) == 20

# %% [markdown]
# Bad configs are refused when they are built, with the field, the value and the fix:

# %%
try:
    nv.FastNASConfig(**{"nn.Conv2d": {"*": {"channels_ratio": [0.5, 1.5]}}})
except ValidationError as err:
    message = str(err)
    print(message.splitlines()[2])
else:
    raise AssertionError("a ratio of 1.5 must be refused")
assert "ratios in (0, 1]" in message and "1.5" in message

# %%
try:
    nv.FastNASConfig(**{"nn.Conv2D": {}})
except ValidationError as err:
    message = str(err)
    print(message.splitlines()[1])
assert "Did you mean 'nn.Conv2d'" in message

# %% [markdown]
# Configs are plain pydantic models: they round-trip through JSON.

# %%
text = cfg.model_dump_json()
assert nv.FastNASConfig.model_validate_json(text) == cfg
print(f"{len(text)} characters of JSON")
