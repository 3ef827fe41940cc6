# %% [markdown]
# # 01 · Quickstart: train, prune to 60% FLOPs, export, save, restore
#
# The whole FastNAS path on a real (small) task, in well under a minute on a CPU:
#
# 1. train `DigitsCNN` on scikit-learn's bundled 8x8 handwritten digits for three epochs;
# 2. `nv.convert` it: every prunable channel group gets one hparam (its choices of width);
# 3. `nv.prune` to at most **60% of the FLOPs**: the sensitivity map (shown live below, one cell per
#    group and width, coloured by the score drop), then a binary search over the tolerated drop;
# 4. `nv.export` the chosen subnet into plain torch layers, `nv.save` it, `nv.restore` it onto a
#    fresh `DigitsCNN` and check the outputs match (the export panel does all three);
# 5. compare before and after.

# %%
import itertools
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

import nasviz as nv
from nasviz.datasets import digits_loaders, evaluate_accuracy, train_classifier
from nasviz.models import DigitsCNN
from nasviz.widgets.export_panel import ExportPanel
from nasviz.widgets.heatmap import SensitivityHeatmap

torch.manual_seed(0)
torch.set_num_threads(1)  # a tiny model: one thread is as fast, and far faster on a busy machine
started = time.perf_counter()
loaders = digits_loaders(batch_size=64, seed=0)
x = next(iter(loaders.val))[0][:2]  # an example batch: traces the model and counts FLOPs

model = DigitsCNN(width=32)
train_classifier(model, loaders.train, epochs=3, lr=1e-2)
model.eval()
before = {
    "val accuracy": evaluate_accuracy(model, loaders.val),
    "test accuracy": evaluate_accuracy(model, loaders.test),
}
full_profile = nv.profile(model, x)
print(f"trained in {time.perf_counter() - started:.1f} s: {before}")
print(full_profile)
assert before["val accuracy"] > 0.9

# %% [markdown]
# ## Convert
#
# The rule config says which widths each layer type may take: here every conv, norm and linear
# in multiples of 8 channels. The search space lists one hparam per group of coupled channels
# (a residual add ties the stem and the residual block's output together) and the layer
# dimensions that stay static, with the reason.

# %%
config = nv.FastNASConfig(
    **{
        "nn.Conv2d": {"channel_divisor": 8},
        "nn.BatchNorm2d": {"feature_divisor": 8},
        "nn.Linear": {"feature_divisor": 8},
    }
)
model = nv.convert(model, mode=[("fastnas", config)], dummy_input=x)
space = nv.search_space(model)
print(space)
space.table()[["name", "original", "choices", "members"]]

# %%
space.static_table()

# %% [markdown]
# ## Prune to 60% of the FLOPs
#
# The score is the validation accuracy; before each score the BatchNorm statistics of the subnet
# are re-estimated on a few training batches (a fixed list: the train loader reshuffles, and the
# same batches every time make each score exactly what the exported model will score). The
# heatmap fills in while the map is computed.

# %%
def score(m):
    return evaluate_accuracy(m, loaders.val)


calibration = list(itertools.islice(loaders.train, 3))
heatmap = SensitivityHeatmap()
display(heatmap)
t = time.perf_counter()
model, search_state = nv.prune(
    model,
    mode="fastnas",
    constraints={"flops": "60%"},
    dummy_input=x,
    config={
        "data_loader": calibration,
        "score_func": score,
        "callbacks": [heatmap.callback],
    },
)
best = search_state["best"]
print(f"searched in {time.perf_counter() - t:.1f} s")
print(f"original score {search_state['original_score']:.4f}, best subnet {best['config']}")
print(f"its real score {best['score']:.4f} at {best['flops'] / full_profile.flops:.1%} of the FLOPs")
assert heatmap.n_cells == len(nv.SearchHistory.from_records(search_state["history"]).sensitivity_table())
assert nv.get_subnet_config(model) == best["config"]

# %% [markdown]
# ## Export, save, reload
#
# The export panel exports the selected subnet (the converted model stays searchable), saves it
# atomically, shows the file size and the cost against the full model, then restores the file
# onto a fresh `DigitsCNN(width=32)` and compares the outputs. Press *Export & save* to do it
# again (e.g. after choosing another subnet).

# %%
out_dir = Path(tempfile.mkdtemp(prefix="nasviz-quickstart-"))
panel = ExportPanel(model, x, out_dir / "digits_pruned.pt", factory=lambda: DigitsCNN(width=32))
small = panel.export()
panel

# %%
assert panel.path.is_file() and panel.check.ok, panel.check
print(small)

# %% [markdown]
# The saved file is all it takes: restore it onto a fresh model of the original class (loading
# runs no code from the file) and it is the pruned model again, with the same accuracy.

# %%
restored = nv.restore(DigitsCNN(width=32), panel.path).eval()
with torch.no_grad():
    images = next(iter(loaders.test))[0]
    assert torch.equal(restored(images), small(images))
small_profile = nv.profile(small, x)
after = {
    "val accuracy": evaluate_accuracy(small, loaders.val),
    "test accuracy": evaluate_accuracy(restored, loaders.test),
}
table = pd.DataFrame(
    {
        "full": [full_profile.flops, full_profile.params, before["val accuracy"],
                 before["test accuracy"]],
        "pruned": [small_profile.flops, small_profile.params, after["val accuracy"],
                   after["test accuracy"]],
    },
    index=["FLOPs", "params", "val accuracy", "test accuracy"],
)
table["pruned / full"] = table["pruned"] / table["full"]
print(f"file: {panel.path.name}, {panel.figures['bytes'] / 1024:.1f} KiB; "
      f"total time {time.perf_counter() - started:.1f} s")
table.round(4)

# %%
assert small_profile.flops <= 0.6 * full_profile.flops
assert small_profile.params < full_profile.params
assert before["val accuracy"] - after["val accuracy"] <= 0.05
assert before["test accuracy"] - after["test accuracy"] <= 0.05
assert abs(after["val accuracy"] - best["score"]) < 1e-9  # the exported model scores as searched
