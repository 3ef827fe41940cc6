# %% [markdown]
# # 08 · Recover the accuracy, then ship the model
#
# A hard prune costs accuracy: the digits CNN cut to at most **30% of its FLOPs** loses several
# points straight away. Two ways to win them back, from the same pruned weights and the same
# batches:
#
# * **plain fine-tuning**: cross-entropy on the labels (`nv.distill(..., alpha=0)`: the teacher's
#   soft term weighs nothing);
# * **distillation** from the unpruned model (`nv.distill`): the student matches the teacher's
#   softened logits (`nv.KDLoss`, temperature 4) and, with `features="auto"`, the teacher's
#   BatchNorm outputs **on exactly the channels the student kept**. nasviz knows them: `convert`
#   sorted every channel group by importance, so a subnet keeps a prefix of each group, and
#   the exported model keeps the module names.
#
# The `RecoveryMonitor` draws both runs live, against the unpruned model's line and the
# pruned-before-recovery line. Then the recovered model is exported to ONNX and `torch.export`,
# each file checked against the module before it is written.

# %%
import copy
import tempfile
import time
from pathlib import Path

import torch

import nasviz as nv
from nasviz.datasets import digits_loaders, evaluate_accuracy, train_classifier
from nasviz.demo import demo_config
from nasviz.models import DigitsCNN
from nasviz.recover import DistillStep, Distiller, kept_channels
from nasviz.widgets import ExportPanel, RecoveryMonitor

started = time.perf_counter()
torch.set_num_threads(1)  # a tiny model: one thread is fastest (and stays fast on a busy CPU)
torch.manual_seed(0)
loaders = digits_loaders(batch_size=64, seed=0)
x = next(iter(loaders.val))[0][:2]
model = DigitsCNN(width=32)
train_classifier(model, loaders.train, epochs=4, lr=1e-2)
model.eval()
val_full = evaluate_accuracy(model, loaders.val)
print(f"trained in {time.perf_counter() - started:.1f} s, val accuracy {val_full:.4f}")
assert val_full > 0.95

# %% [markdown]
# ## Prune hard
#
# Convert, keep a copy of the converted model **at full width** as the teacher (same channel
# order as the student, so features can be matched channel for channel), then prune to 30%.

# %%
model = nv.convert(model, mode=[("fastnas", demo_config(4))], dummy_input=x)
teacher = copy.deepcopy(model)
full_flops = nv.profile(teacher, x).flops
model, state = nv.prune(
    model, constraints={"flops": "30%"}, dummy_input=x,
    config={"data_loader": loaders.train, "max_iter_data_loader": 10,
            "score_loader": loaders.val, "metric": "accuracy"},
)  # fmt: skip
pruned = nv.export(model).eval()
kept = nv.profile(pruned, x).flops / full_flops
val_pruned = evaluate_accuracy(pruned, loaders.val)
print(f"subnet {nv.get_subnet_config(model)}")
print(f"{kept:.1%} of the FLOPs, val accuracy {val_full:.4f} -> {val_pruned:.4f}")
assert kept <= 0.30
assert val_pruned < val_full

# %% [markdown]
# Which teacher channels did the student keep? For every pruned BatchNorm: the first `k` of the
# teacher's (sorted) channels.

# %%
for name, (dim, index) in kept_channels(pruned, teacher, "auto").items():
    width = teacher.get_submodule(name).num_features
    print(f"{name:16s} keeps {'all' if index is None else len(index)} of {width} channels")

# %% [markdown]
# ## Fine-tuning vs distillation, live
#
# Show the monitor, then run both recoveries (3 epochs each, Adam, cosine learning rate, the
# same batches). The searchable model itself is the student here (a copy per run, the subnet
# selected): the export panel below exports the recovered weights.

# %%
monitor = RecoveryMonitor(title="Recovery of the 30%-FLOPs digits CNN")
monitor

# %%
common = {"epochs": 3, "lr": 1e-2, "schedule": "cosine", "score_loader": loaders.val,
          "metric": "accuracy"}  # fmt: skip
runs = {}
for label, kwargs in {
    "fine-tune": {"alpha": 0.0},
    "distill": {"alpha": 0.9, "temperature": 4.0, "features": "auto"},
}.items():
    student = copy.deepcopy(model)
    train = digits_loaders(batch_size=64, seed=0).train  # the same batches for both runs
    runs[label] = nv.distill(student, teacher, train, callbacks=[monitor.track(label)],
                             **common, **kwargs)  # fmt: skip
    print(label, runs[label])

# %%
import pandas as pd

table = pd.DataFrame({label: r.epochs.set_index("epoch")["score"] for label, r in runs.items()})
table.loc[0] = val_pruned
table = table.sort_index()
table["unpruned"] = val_full
table

# %%
distilled = runs["distill"]
assert abs(distilled.teacher_score - val_full) < 1e-6  # the metric runs in float32
assert abs(distilled.initial_score - val_pruned) < 1e-6
assert distilled.score >= val_full - 0.02  # back to within 2 points of the unpruned model
assert runs["fine-tune"].score > val_pruned + 0.03  # fine-tuning helps too
assert len(monitor.fig.data[monitor.trace_index("distill", "loss")].y) == len(distilled.history)
assert nv.get_subnet_config(distilled.model) == nv.get_subnet_config(model)  # same subnet

# %% [markdown]
# ## Stop and resume
#
# A `Distiller` is a run you can stop between two steps (the monitor's **Stop** button, or any
# thread) and resume with its optimizer state: here a callback stops it at step 10, and `run()`
# continues.

# %%
d = Distiller(copy.deepcopy(pruned), teacher, digits_loaders(batch_size=64, seed=0).train,
              epochs=1, lr=3e-3)  # fmt: skip
d.bus.subscribe(lambda e: d.stop() if isinstance(e, DistillStep) and e.step == 10 else None)
first = d.run()
print(first)
assert not first.finished and d.step == 10
second = d.run()
assert second.finished and second.history["step"].tolist() == list(range(1, d.step + 1))

# %% [markdown]
# ## Ship it
#
# The export panel exports the selected subnet of the recovered model, saves it atomically,
# checks that it reloads, and writes the ONNX and `torch.export` files, each only after it
# reproduced the module's outputs (file size and max abs difference in the table).

# %%
out_dir = Path(tempfile.mkdtemp(prefix="nasviz-08-"))
panel = ExportPanel(distilled.model, x, out_dir / "digits_recovered.pt",
                    factory=lambda: DigitsCNN(width=32), formats=["ONNX", "torch.export"])  # fmt: skip
small = panel.export()
panel

# %%
assert panel.check is not None and panel.check.ok
assert panel.report_errors == {}, panel.report_errors
for fmt, report in panel.reports.items():
    print(report)
    assert report.max_abs_diff <= report.limit and report.path.is_file()
assert abs(evaluate_accuracy(small, loaders.val) - distilled.score) <= 1 / 270  # one image
print(f"whole notebook: {time.perf_counter() - started:.1f} s")
