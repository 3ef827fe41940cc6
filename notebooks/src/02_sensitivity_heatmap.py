# %% [markdown]
# # 02 · The sensitivity map, live
#
# FastNAS starts every search by measuring how much each channel group matters: for every group
# and every narrower width it scores the subnet in which **only that group** is narrowed (all
# others at full width). The score drop of each such subnet is one entry of the
# **sensitivity map**; the binary search that follows (notebook 03) only reads this map.
#
# `SensitivityHeatmap` draws the map while it is computed:
#
# * one **row** per channel group (hparam), one **column** per fraction of the group's channels
#   kept (so groups of different widths line up; grey = that group has no such width);
# * **colour** = score drop (original - subnet score): red = worse, white = unchanged,
#   blue = better;
# * hover a cell for the width, the kept channels ("12/32"), the score and the FLOPs it saves.
#
# It is a search callback (`config={"callbacks": [heatmap]}`), and it renders again from the
# search checkpoint alone, without the model.

# %%
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

import nasviz as nv
from nasviz.datasets import digits_loaders, evaluate_accuracy, train_classifier
from nasviz.demo import demo_config
from nasviz.models import DigitsCNN
from nasviz.search.events import MapEntry, SearchHistory
from nasviz.widgets.heatmap import SensitivityHeatmap

started = time.perf_counter()
torch.set_num_threads(1)  # a tiny model: one thread is fastest (and stays fast on a busy CPU)
torch.manual_seed(0)
loaders = digits_loaders(batch_size=64, seed=0)
x = next(iter(loaders.val))[0][:2]  # an example batch: traces the model and counts FLOPs
model = DigitsCNN(width=32)
train_classifier(model, loaders.train, epochs=3, lr=1e-2)
model.eval()
val_full = evaluate_accuracy(model, loaders.val)
print(f"trained in {time.perf_counter() - started:.1f} s, val accuracy {val_full:.4f}")
assert val_full > 0.9

# %% [markdown]
# Convert with the demo's rules (convs, norms and linears in multiples of 4 channels). Each
# channel group becomes one hparam; its choices are the widths the search may give it.

# %%
model = nv.convert(model, mode=[("fastnas", demo_config())], dummy_input=x)
space = nv.search_space(model)
space.table()[["name", "original", "choices"]]

# %% [markdown]
# ## The heatmap, filled in by the search
#
# Show the (still empty) heatmap, then start the search in the next cell: every map entry
# updates the figure in place while the cell runs, and the bar counts the entries.

# %%
heatmap = SensitivityHeatmap()
heatmap

# %%
checkpoint = Path(tempfile.mkdtemp(prefix="nasviz-02-")) / "search.pt"


def score(m):
    return evaluate_accuracy(m, loaders.val)


model, state = nv.prune(
    model,
    mode="fastnas",
    constraints={"flops": "60%"},
    dummy_input=x,
    config={
        "data_loader": loaders.train,
        "score_func": score,
        "max_iter_data_loader": 4,  # BatchNorm re-calibration batches per scored subnet
        "checkpoint": checkpoint,
        "callbacks": [heatmap.callback],
    },
)
print(heatmap)
print(f"best subnet {state['best']['config']}: score {state['best']['score']:.4f}")

# %% [markdown]
# What the heatmap shows is exactly the search's map: one filled cell per map entry, with the
# drop the searcher stored.

# %%
history = SearchHistory.from_records(state["history"])
entries = [e for e in history.events if isinstance(e, MapEntry)]
expected_cells = sum(len(hp.choices) - 1 for hp in space.hparams.values() if hp.is_configurable)
assert heatmap.n_cells == len(entries) == expected_cells
assert heatmap.sensitivity_map == state["sensitivity_map"]
assert heatmap.progress.value == heatmap.progress.total == len(entries)
z, text = heatmap.fig.data[0].z, heatmap.fig.data[0].text
for e in entries:  # each entry's cell: found by its hover text, holds its drop
    row = heatmap.groups.index(e.hparam)
    full = max(space.hparams[e.hparam].choices)
    col = next(j for j, t in enumerate(text[row]) if f"kept channels {e.choice}/{full}<" in t)
    assert z[row][col] == e.drop
assert sum(v is not None for r in z for v in r) == len(entries)

# %% [markdown]
# The same numbers as a table (`SearchHistory.sensitivity_table()`): for each group, the drop at
# each width. The reddest cell of the heatmap is the largest drop in the table. The binary search
# (notebook 03) gives each group its narrowest width whose drop is within a tolerated drop, so a
# group with red cells at narrow widths stays wide.

# %%
table = history.sensitivity_table()
table["kept"] = [
    f"{c}/{max(space.hparams[h].choices)}" for h, c in zip(table["hparam"], table["choice"])
]
pivot = table.pivot(index="hparam", columns="choice", values="drop")
most_sensitive = table.loc[table["drop"].idxmax()]
print(f"largest drop: {most_sensitive['hparam']} at {most_sensitive['kept']} channels "
      f"({most_sensitive['drop']:+.4f})")
assert max(v for r in z for v in r if v is not None) == most_sensitive["drop"]
pivot.round(4)

# %% [markdown]
# ## From the checkpoint alone
#
# The searcher checkpointed its state (map, original score, history) to `search.pt`. The
# heatmap renders from that file without the model (`torch.load(..., weights_only=True)`), and
# it is the same picture.

# %%
saved = SensitivityHeatmap.from_checkpoint(checkpoint)
assert saved.z == heatmap.z
assert saved.fig.data[0].text == heatmap.fig.data[0].text
saved

# %% [markdown]
# With `columns="width"` the columns are absolute channel counts instead of kept fractions.

# %%
by_width = SensitivityHeatmap.from_state(state, columns="width")
assert by_width.n_cells == heatmap.n_cells
by_width

# %%
elapsed = time.perf_counter() - started
print(f"notebook ran in {elapsed:.1f} s")
