# %% [markdown]
# # 06 · Activations: what pruning does to the feature maps, layer by layer
#
# Pruning keeps a subnet's accuracy close to the full model's, but *inside* the network the
# features change. `ActivationViewer` puts them side by side: for a chosen input and layer, the
# first channels of the **full** model's output next to the **pruned** model's (channels the
# subnet no longer has stay blank; conversion sorts channels by importance, so tile *i* is the
# same channel on both sides), or the channel-mean maps, and below the drift of every layer over
# the whole batch (`nv.compare_activations`: relative L2 distance and cosine similarity).
#
# The same module ids work on the original model, the converted model and the exported one.

# %%
import copy
import itertools
import time

import numpy as np
import pandas as pd
import torch

import nasviz as nv
from nasviz.datasets import digits_loaders, evaluate_accuracy, train_classifier
from nasviz.models import DigitsCNN
from nasviz.widgets.activations import ActivationViewer, default_module_ids

torch.set_num_threads(1)  # a tiny model: one thread is as fast, and far faster on a busy machine
torch.manual_seed(0)
loaders = digits_loaders(batch_size=64, seed=0)
x = next(iter(loaders.val))[0][:2]
t = time.perf_counter()
model = DigitsCNN(width=32)
train_classifier(model, loaders.train, epochs=3, lr=1e-2)
model.eval()
original = copy.deepcopy(model)  # the unpruned model, kept as it is
print(f"trained in {time.perf_counter() - t:.1f} s: val {evaluate_accuracy(model, loaders.val):.4f}")

# %% [markdown]
# Convert (widths in multiples of 8), keep a copy of the converted model at full width, then prune
# to 60% of the FLOPs (BatchNorm re-calibrated on three fixed training batches before each score)
# and export the chosen subnet.
#
# Why a copy of the *converted* model, taken *before* the search: conversion sorts each group's
# channels by importance (so that a width `k` keeps the first `k`), so channel `i` of the
# original model is not channel `i` of a subnet; and the search re-calibrates BatchNorm for each
# subnet it scores, in the full-size buffers.

# %%
config = nv.FastNASConfig(
    **{
        "nn.Conv2d": {"channel_divisor": 8},
        "nn.BatchNorm2d": {"feature_divisor": 8},
        "nn.Linear": {"feature_divisor": 8},
    }
)
model = nv.convert(model, mode=[("fastnas", config)], dummy_input=x)
full = copy.deepcopy(model)  # converted, at full width, before any search
calibration = list(itertools.islice(loaders.train, 3))
model, state = nv.prune(
    model,
    constraints={"flops": "60%"},
    dummy_input=x,
    config={"data_loader": calibration, "score_func": lambda m: evaluate_accuracy(m, loaders.val)},
)
best = state["best"]
small = nv.export(model).eval()
print("chosen subnet:", best["config"])
print(f"val accuracy: original {state['original_score']:.4f}, pruned {evaluate_accuracy(small, loaders.val):.4f}")

# %% [markdown]
# The sort in numbers: the converted full model computes the same function as the original (the
# logits agree), but its feature maps are the original's channels in another order.

# %%
images = next(iter(loaders.test))[0][:16]
order = nv.compare_activations(original, full, images, ["stem.0", "fc"]).set_index("module_id")
order[["compared", "rel_l2", "cosine"]]

# %%
assert order.loc["fc", "rel_l2"] < 1e-5  # same outputs
assert order.loc["stem.0", "rel_l2"] > 0.1  # same channels, permuted
with torch.no_grad():
    a, b = nv.ModelStump(original, "stem.0")(images), nv.ModelStump(full, "stem.0")(images)
    assert torch.allclose(a.mean(1), b.mean(1), atol=1e-5)  # the channel mean ignores the order

# %% [markdown]
# ## The full model against the exported one
#
# The default layers are the prunable convs (from the converted full model's search space); the
# final `Linear` (the logits, drawn as bars) is added by hand. The exported model is a plain
# `DigitsCNN` with fewer channels: the same module ids work on it. Pick a layer in the dropdown,
# move the sample slider, switch to the channel mean, or click a bar of the drift chart.

# %%
module_ids = [*default_module_ids(full, small), "fc"]
viewer = ActivationViewer(full, small, images, module_ids=module_ids, n_channels=8)
viewer

# %%
drift = viewer.drift[["module_id", "shape_a", "shape_b", "compared", "rel_l2", "cosine"]]
drift

# %%
assert module_ids == ["stem.0", "res_conv1.0", "res_conv2.0", "ir_expand.0", "ir_depthwise.0",
                      "ir_project.0", "fc"]
kept = best["config"]["res_conv1.0.out_channels"]
assert drift.set_index("module_id").loc["res_conv1.0", "shape_b"][1] == kept
# the logits stay close: the pruned model still classifies like the original
assert drift.set_index("module_id").loc["fc", "cosine"] > 0.8
with torch.no_grad():
    agree = (full(images).argmax(1) == small(images).argmax(1)).float().mean().item()
print(f"the two models agree on {agree:.0%} of these {len(images)} test images")
assert agree >= 0.8
# tile 0 of the subnet's mosaic is channel 0 of the exported model's output (read with a stump)
viewer.layer.value, viewer.sample.value = "res_conv1.0", 5
with torch.no_grad():
    channel0 = nv.ModelStump(small, "res_conv1.0")(images)[5, 0].numpy()
z_sub = np.array(viewer.maps.data[1].z, dtype=float)  # blank tiles arrive as None (JSON)
np.testing.assert_allclose(z_sub[:8, :8], channel0, rtol=1e-5, atol=1e-6)
# show all 32 channels of that layer: the ones the subnet dropped are blank tiles
viewer.n_channels.value = 32
z_full, z_sub = (np.array(t.z, dtype=float) for t in viewer.maps.data[:2])
blank_tiles = (np.isnan(z_sub).sum() - np.isnan(z_full).sum()) // (8 * 8)
print(f"res_conv1.0 keeps {kept} of 32 channels; blank tiles: {blank_tiles}")
assert blank_tiles == 32 - kept
if best["config"]["stem.0.out_channels"] == 32:  # the stem conv kept its width: same output
    assert drift.set_index("module_id").loc["stem.0", "rel_l2"] < 1e-6

# %% [markdown]
# ## The converted model, subnet by subnet
#
# The converted model runs whichever subnet is selected. Its chosen subnet gives exactly the
# exported model's activations; select the smallest subnet (and re-calibrate BatchNorm), press
# *Refresh*, and the drift grows.

# %%
live = ActivationViewer(full, model, images, module_ids=module_ids)
np.testing.assert_allclose(live.drift["rel_l2"], viewer.drift["rel_l2"], rtol=1e-4, atol=1e-6)
drift_best = live.drift.set_index("module_id")["rel_l2"]

nv.sample(model, "min")
nv.prep_for_eval(model, lambda m: [m(xb) for xb, _ in calibration])
live.refresh_button.click()
drift_min = live.drift.set_index("module_id")["rel_l2"]
print(f"val accuracy of the smallest subnet: {evaluate_accuracy(model, loaders.val):.4f}")
print(pd.DataFrame({"chosen subnet": drift_best, "smallest subnet": drift_min}).round(3).to_string())
assert drift_min["fc"] > drift_best["fc"]
assert (drift_min.drop("stem.0") > drift_best.drop("stem.0")).all()
live

# %% [markdown]
# ## Everything in one place
#
# The `Dashboard` puts the views over this model and this search in tabs: the rules it was
# converted with, the search replayed (sensitivity map and binary search), the explorer at the
# chosen subnet, these activations, and the export panel.

# %%
import tempfile
from pathlib import Path

from nasviz.widgets.dashboard import TABS, Dashboard

nv.select(model, best["config"])  # back to the chosen subnet
nv.prep_for_eval(model, lambda m: [m(xb) for xb, _ in calibration])
dash = Dashboard(
    model, x, score_func=lambda m: evaluate_accuracy(m, loaders.val), data_loader=calibration,
    inputs=images, full_model=full, search_state=state,
    path=Path(tempfile.mkdtemp()) / "pruned.pt", factory=lambda: DigitsCNN(width=32),
)
dash.tabs.selected_index = TABS.index("Activations")
dash

# %%
assert dash.explorer.value == best["config"]
convs = viewer.drift.set_index("module_id")["rel_l2"].drop("fc")  # the dashboard shows the convs
np.testing.assert_allclose(dash.activations.drift["rel_l2"], convs, rtol=1e-4, atol=1e-6)
assert dash.heatmap.n_cells == sum(len(v) for v in state["sensitivity_map"].values())
