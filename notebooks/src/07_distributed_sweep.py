# %% [markdown]
# # 07 · The sensitivity sweep on a Dask cluster, streaming into the live heatmap
#
# The sensitivity map is one independent evaluation per (channel group, width): it parallelises
# perfectly. Give the search a Dask `Client` as `config["executor"]` and every entry becomes one
# task on the cluster; results come back **as they complete**, as the same `MapEntry` events
# the heatmap already listens to, so it fills in live from a remote sweep with no change.
#
# * The model (converted, at full width), the `score_func` and the calibration data are pickled
#   **once** (cloudpickle) and sent to every worker; each task then only selects a subnet and
#   scores it. Each worker uses one torch thread.
# * Every entry is scored from the same seeded random state, so the distributed map **equals**
#   the local one (checked below).
# * A worker that dies costs only its running task (Dask reruns it elsewhere); the checkpoint
#   holds every finished entry, so a sweep restarted after the notebook itself died skips them.
#
# Here the "cluster" is two worker processes on this machine. **Everything listens on
# 127.0.0.1 only** and the dashboard is off (Dask's defaults listen on all interfaces).

# %%
import os
import tempfile
import time
from pathlib import Path

import dask
import pandas as pd
import psutil
import torch
from distributed import Client, LocalCluster

import nasviz as nv
from nasviz.datasets import digits_loaders, evaluate_accuracy, train_classifier
from nasviz.demo import demo_config
from nasviz.models import DigitsCNN
from nasviz.search.events import MapEntry, MapFinished
from nasviz.widgets.heatmap import SensitivityHeatmap

started = time.perf_counter()
torch.set_num_threads(1)  # a tiny model: one thread is fastest (and stays fast on a busy CPU)
torch.manual_seed(0)
loaders = digits_loaders(batch_size=64, seed=0)
x = next(iter(loaders.val))[0][:2]
model = DigitsCNN(width=24)
train_classifier(model, loaders.train, epochs=2, lr=1e-2)
model.eval()
weights = {k: v.clone() for k, v in model.state_dict().items()}  # for the local run below
model = nv.convert(model, mode=[("fastnas", demo_config())], dummy_input=x)
print(f"trained and converted in {time.perf_counter() - started:.1f} s: {nv.search_space(model)}")

# %% [markdown]
# ## Start a local cluster
#
# Two worker processes, one thread each, bound to 127.0.0.1, no dashboard. Unsetting the
# `MALLOC_TRIM_THRESHOLD_` that Dask's nanny gives its workers makes torch about a third faster.
# (`nasviz.search.executors.local_cluster(n_workers=2)` makes exactly this cluster.)

# %%
children_before = {p.pid for p in psutil.Process().children(recursive=True)}
with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
client = Client(cluster)
client.run(__import__, "nasviz.search.executors")  # what each worker's first task would import
workers = client.scheduler_info()["workers"]
print(cluster.scheduler_address, "workers:", list(workers))
assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)

# %% [markdown]
# ## The heatmap, filled from the cluster
#
# Show the empty heatmap, then run the search in the next cell with `"executor": client`. The
# cells fill in the order the workers finish them (not row by row), and the bar counts them.

# %%
heatmap = SensitivityHeatmap()
heatmap

# %%
checkpoint = Path(tempfile.mkdtemp(prefix="nasviz-07-")) / "search.pt"
shuffle_state = loaders.train.generator.get_state()  # to start the local run from the same data
arrivals = []
t0 = time.perf_counter()


def record(event):
    if isinstance(event, MapEntry):
        arrivals.append((time.perf_counter() - t0, event.hparam, event.choice, heatmap.n_cells))


def score(m):
    return evaluate_accuracy(m, loaders.val)


config = {
    "data_loader": loaders.train,
    "max_iter_data_loader": 4,
    "score_func": score,
    "checkpoint": checkpoint,
    "executor": client,
    "callbacks": [heatmap.callback, record],
}
model, state = nv.prune(model, constraints={"flops": "60%"}, dummy_input=x, config=config)
print(heatmap)
print(f"best subnet {state['best']['config']}: score {state['best']['score']:.4f}")

# %% [markdown]
# Every remote result was one more cell, in the order it arrived:

# %%
table = pd.DataFrame(arrivals, columns=["seconds", "hparam", "choice", "cells filled"])
entries = sum(len(hp.choices) - 1 for hp in nv.search_space(model).hparams.values())
assert list(table["cells filled"]) == list(range(1, entries + 1))
assert heatmap.n_cells == entries and heatmap.sensitivity_map == state["sensitivity_map"]
assert table["seconds"].iloc[-1] > table["seconds"].iloc[0]  # streamed, not all at the end
table.head(8)

# %% [markdown]
# ## The same map as in process
#
# The same trained weights, converted again and searched in this process (`"executor": "local"`,
# the default) on the same data (the training loader's shuffle put back where the sweep found
# it): every entry is equal, bit for bit (one torch thread here and on the workers).

# %%
local_model = DigitsCNN(width=24)
local_model.load_state_dict(weights)
local_model = nv.convert(local_model.eval(), mode=[("fastnas", demo_config())], dummy_input=x)
loaders.train.generator.set_state(shuffle_state)
t = time.perf_counter()
local_model, local_state = nv.prune(
    local_model,
    constraints={"flops": "60%"},
    dummy_input=x,
    config={
        "data_loader": loaders.train,
        "max_iter_data_loader": 4,
        "score_func": score,
    },
)
print(f"local search: {time.perf_counter() - t:.1f} s")
assert local_state["sensitivity_map"] == state["sensitivity_map"]
assert local_state["best"]["config"] == state["best"]["config"]

# %% [markdown]
# ## Restarting from the checkpoint
#
# The checkpoint was written after every entry. A search started again with it (say, after the
# kernel died mid-sweep) scores no map entry again: all of them come from the file.

# %%
again = []
config_again = {**config, "callbacks": [again.append]}
_, state_again = nv.prune(model, constraints={"flops": "50%"}, dummy_input=x, config=config_again)
finished = next(e for e in again if isinstance(e, MapFinished))
assert finished.n_scored == 0 and state_again["sensitivity_map"] == state["sensitivity_map"]
print(f"map from the checkpoint: {finished.entries} entries, {finished.n_scored} scored")

# %% [markdown]
# ## Shut down
#
# Close the client and the cluster: no worker process is left behind.

# %%
client.close()
cluster.close()
time.sleep(0.5)
left = {p.pid for p in psutil.Process().children(recursive=True)} - children_before
left = {pid for pid in left if "resource_tracker" not in " ".join(psutil.Process(pid).cmdline())}
assert not left, left
print(f"cluster closed, no worker process left; notebook ran in {time.perf_counter() - started:.0f} s")
