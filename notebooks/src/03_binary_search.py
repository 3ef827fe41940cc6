# %% [markdown]
# # 03 · The binary search, step by step
#
# Once the sensitivity map is known (notebook 02), FastNAS's `BinarySearcher` looks for the
# largest **tolerated score drop** that still meets the budget. For a tolerated drop `mid`, every
# channel group takes its smallest width whose map drop is within `mid`; that candidate's FLOPs
# are counted with the cost model:
#
# * it fits the budget: the search tolerates less next time (`hi = mid`);
# * it does not fit: the search tolerates more (`lo = mid`).
#
# The interval `[lo, hi]` halves at every step. Then the result is **grown** into the unused
# budget (groups widened while the FLOPs stay under the limit), a few candidates near the budget
# are **scored for real**, and the best real score is the **final choice**.
#
# `BisectionAnimation` shows all of it on one timeline: the interval and `mid` (green = fits,
# red = too big) on top; each candidate's FLOPs against the constraint line below; the grow
# steps (blue), the scored candidates (purple, labelled with their score) and the final choice
# (orange star). Play, the slider and the step buttons move through the frames.

# %%
import tempfile
import time
from pathlib import Path

import torch

import nasviz as nv
from nasviz.datasets import digits_loaders, evaluate_accuracy, train_classifier
from nasviz.demo import demo_config
from nasviz.models import DigitsCNN
from nasviz.search.events import (
    BisectionStep,
    CandidateScored,
    FinalScore,
    GrowStep,
    SearchHistory,
    SearchStarted,
)
from nasviz.widgets.bisection import BisectionAnimation

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
model = nv.convert(model, mode=[("fastnas", demo_config())], dummy_input=x)

# %% [markdown]
# ## Live
#
# Show the animation, then run the search in the next cell. While the map is computed the status
# line counts its entries; then every bisection step, grow step and scored candidate adds a
# frame, and the animation follows the newest one.

# %%
anim = BisectionAnimation()
anim

# %%
checkpoint = Path(tempfile.mkdtemp(prefix="nasviz-03-")) / "search.pt"


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
        "callbacks": [anim.callback],
    },
)
print(anim)
print(f"final choice {anim.final_config}: score {state['best']['score']:.4f}")

# %% [markdown]
# The animation holds what the search did, frame for frame: one frame per bisection step, grow
# step and scored candidate, plus the final choice; one interval per bisection step.

# %%
def trace(name, view=anim):
    """The figure's trace called ``name`` ("mid", "bisection", "grow", "scored", "final", ...)."""
    return next(t for t in view.fig.data if t.name == name)


history = SearchHistory.from_records(state["history"])
bisection = history.bisection_table()
n_grow = len(history.grow_table())
n_scored = len(history.candidate_table())
assert len(bisection) == state["iter_num"] == len(anim.steps) == len(trace("mid").x)
assert anim.n_frames == anim.slider.max == anim.play.max == len(bisection) + n_grow + n_scored + 1
limit = next(e for e in history.events if isinstance(e, SearchStarted)).limits["flops"]
limit_line = next(s for s in anim.fig.layout.shapes if s.name == "limit")
assert limit_line.y0 == limit == anim.limit
assert anim.final_config == state["best"]["config"]
assert state["best"]["flops"] <= limit
print(f"{len(bisection)} bisection steps, {n_grow} grow steps, {n_scored} scored candidates; "
      f"FLOPs limit {limit:,.0f}, final {state['best']['flops']:,.0f}")

# %% [markdown]
# Bisection in numbers: the interval halves at every step, a step is feasible exactly when its
# candidate's FLOPs are under the limit, and a feasible step moves `hi` down to its `mid` (an
# infeasible one moves `lo` up).

# %%
width = bisection["hi"] - bisection["lo"]
assert all(abs(w1 - w0 / 2) < 1e-12 for w0, w1 in zip(width, width[1:]))
assert ((bisection["flops"] <= limit) == bisection["feasible"]).all()
for (_, a), (_, b) in zip(bisection.iterrows(), bisection.iloc[1:].iterrows()):
    assert (b["hi"] == a["mid"]) if a["feasible"] else (b["lo"] == a["mid"])
bisection[["step", "lo", "hi", "mid", "flops", "feasible"]].round(5)

# %% [markdown]
# ## Step through it
#
# Back to the first frame, then one step forward: only the first bisection step is drawn, and
# the text under the figure explains it. (In the notebook, press ▶ to play it all.)

# %%
anim.first_button.click()
assert anim.frame == 0 and not trace("mid").x
anim.next_button.click()
assert anim.frame == 1 and len(trace("mid").x) == 1
first = bisection.iloc[0]
assert trace("mid").y[0] == first["mid"] and trace("bisection").y[0] == first["flops"]
print(anim.detail.value)
anim

# %% [markdown]
# The grow steps only widen, and every one stays under the limit; the final choice is the
# scored candidate with the best real score.

# %%
grows = [e for e in history.events if isinstance(e, GrowStep)]
cands = [e for e in history.events if isinstance(e, CandidateScored)]
final = next(e for e in history.events if isinstance(e, FinalScore))
assert all(g.new > g.old and g.flops <= limit for g in grows)
assert final.score == max(c.score for c in cands)
anim.last_button.click()
assert anim.frame == anim.n_frames and trace("final").y[0] == final.flops
history.candidate_table()[["rank", "score", "predicted_drop", "flops"]]

# %% [markdown]
# ## Replay from the checkpoint
#
# The searcher wrote its state (with the history) to `search.pt`; the animation replays from the
# file alone, frame for frame the same.

# %%
replay = BisectionAnimation.from_checkpoint(checkpoint)
assert replay.n_frames == anim.n_frames and replay.slider.max == anim.slider.max
for a, b in zip(replay.fig.data, anim.fig.data):
    assert (a.x, a.y) == (b.x, b.y)
replay.frame = len(bisection)  # the last bisection step
assert [e for e in replay.steps if isinstance(e, BisectionStep)] == anim.steps
replay

# %%
elapsed = time.perf_counter() - started
print(f"notebook ran in {elapsed:.1f} s")
