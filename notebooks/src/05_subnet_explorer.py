# %% [markdown]
# # 05 · The subnet explorer: choose widths by hand, or by a tolerated score drop
#
# A converted model has one *channel group* per set of coupled channels (a residual stream, a
# conv with its BatchNorm and the next layer's input, ...). `SubnetExplorer` gives each group a
# slider that snaps to its valid widths and, given a **sensitivity map** `{group: {width: drop}}`,
# one *tolerated drop* slider: every group takes its smallest width whose score drop is at most
# the threshold (the rule FastNAS's binary search bisects over). FLOPs and parameters follow every
# change at once (a `CostModel` estimate, the model is not run), drawn against the budget.
# *Evaluate* selects the subnet, re-calibrates BatchNorm and scores it; `export()` gives the plain
# smaller model.
#
# Widget values are set from code below (what dragging and clicking do), so this runs headless.

# %%
import time

import torch

import nasviz as nv
from nasviz.datasets import digits_loaders, evaluate_accuracy, train_classifier
from nasviz.demo import demo_config
from nasviz.models import DigitsCNN
from nasviz.profile import format_flops
from nasviz.widgets import SubnetExplorer

torch.set_num_threads(1)  # a tiny model: one thread is as fast, and immune to a busy CPU
torch.manual_seed(0)
loaders = digits_loaders(batch_size=64)
model = DigitsCNN()  # width 32
t = time.perf_counter()
train_classifier(model, loaders.train, epochs=2)
full_accuracy = evaluate_accuracy(model, loaders.val)
print(f"trained in {time.perf_counter() - t:.1f} s: val accuracy {full_accuracy:.3f}")
assert full_accuracy > 0.85

# %% [markdown]
# Make it searchable with the demo config (widths in multiples of 4), then let FastNAS build the
# sensitivity map on the way to a 60% FLOPs budget. Scoring = validation accuracy; BatchNorm is
# re-calibrated on two training batches before each score.

# %%
x = next(iter(loaders.val))[0][:2]
model = nv.convert(model, mode=[("fastnas", demo_config())], dummy_input=x)


def score(m: torch.nn.Module) -> float:
    return evaluate_accuracy(m, loaders.val)


def calibrate(m: torch.nn.Module) -> None:
    for i, (images, _) in enumerate(loaders.train):
        if i == 2:
            break
        m(images)


t = time.perf_counter()
model, state = nv.prune(
    model,
    mode="fastnas",
    constraints={"flops": "60%"},
    dummy_input=x,
    config={"score_func": score, "forward_loop": calibrate, "final_candidates": 2},
)
print(f"searched in {time.perf_counter() - t:.1f} s; best: {state['best']}")
{name: len(drops) for name, drops in state["sensitivity_map"].items()}

# %% [markdown]
# ## The explorer
#
# It starts at the subnet the search chose. The left chart shows kept vs original channels per
# group; the right one FLOPs and parameters as a share of the full model, the dotted line is the
# FLOPs limit (bars turn red when over).

# %%
explorer = SubnetExplorer.from_search_state(
    model, x, state, constraints={"flops": "60%"}, score_func=score, forward_loop=calibrate
)
explorer

# %%
assert explorer.value == state["best"]["config"]
assert explorer.feasible
flops, params = explorer.estimate
assert flops == state["best"]["flops"] and flops <= explorer.limits["flops"]
print(f"chosen subnet: {explorer.value}; {flops / explorer.full[0]:.1%} of the full FLOPs")

# %% [markdown]
# ## Tolerate more drop: every group shrinks where the map says it is cheap
#
# The threshold slider snaps to the drops in the map. Its lowest level takes only the reductions
# that cost nothing on this data (drop <= 0); as the threshold grows, groups shrink, and FLOPs with
# them. At the highest level every group is at its smallest width.

# %%
levels = [v for _, v in explorer.threshold.options]
seen = []
for level in (levels[0], levels[len(levels) // 2], levels[-1]):
    explorer.threshold.value = level
    seen.append((level, explorer.value, explorer.estimate[0]))
    assert explorer.estimate == explorer.cost_model.estimate(explorer.value)
    assert explorer.channels_fig.data[1].y == tuple(explorer.value.values())
for level, config, f in seen:
    print(f"tolerated drop {level:.4f}: {config} -> {f / explorer.full[0]:.1%} FLOPs")
assert seen[0][2] >= seen[1][2] >= seen[2][2]  # more tolerance, fewer FLOPs
assert seen[-1][1] == {n: hp.min for n, hp in explorer.hparams.items()}  # everything tolerated

# %% [markdown]
# ## Then fine-tune one group by hand
#
# Widen the residual stream (the stem's group) back to its full width: FLOPs jump, the FLOPs label
# and the bars follow, and the budget may break (red).

# %%
explorer.threshold.value = levels[len(levels) // 2]
before = explorer.estimate[0]
stem = explorer.sliders["stem.0.out_channels"]
stem.value = stem.options[-1]
after = explorer.estimate[0]
print(explorer.cost_label.value)
assert after > before
assert explorer.channels_fig.data[1].y[0] == stem.options[-1]
assert format_flops(after) in explorer.cost_label.value

# %% [markdown]
# ## Evaluate it
#
# *Evaluate* selects the subnet on the model, re-calibrates BatchNorm with the forward loop and
# scores it (the button is disabled while it runs; the bar shows the steps).

# %%
explorer.evaluate_button.click()
table = explorer.evaluations_table()
assert len(table) == 1 and table.loc[0, "stem.0.out_channels"] == stem.options[-1]
assert nv.get_subnet_config(model) == explorer.value
print(f"score {table.loc[0, 'score']:.4f} (full model {state['original_score']:.4f})")
assert 0.0 <= table.loc[0, "score"] <= 1.0
table

# %% [markdown]
# ## Export the chosen subnet
#
# `export()` returns a plain model (ordinary torch layers, fewer channels) whose outputs equal the
# subnet's.

# %%
explorer.value = state["best"]["config"]
small = explorer.export()
small.eval()
model.eval()
images = next(iter(loaders.test))[0]
with torch.no_grad():
    torch.testing.assert_close(small(images), model(images), rtol=0, atol=1e-5)
assert nv.profile(small, x).flops == explorer.estimate[0]
print(f"exported: {nv.profile(small, x).flops:,} FLOPs, test accuracy "
      f"{evaluate_accuracy(small, loaders.test):.3f}")
