"""Where a prune's CPU time goes: calibration, scoring, bookkeeping (cProfile), per form.

One prune (``nv.convert`` + ``nv.prune`` to ``{"flops": "60%"}``, demo widths, one thread) of a
``vs_settings`` setting (default ``digits32``: issue #16's residual digits CNN at 32x32, the whole
training split in batches of 16 as calibration data) under cProfile. The split:

* **calibration**: time inside BatchNorm re-calibration (``recalibrate_bn``: the full
  calibrations, the cache fill's calibration pass and every sub-graph re-calibration);
* **scoring**: time inside the scorer's ``prepare`` and ``score_active`` minus calibration and
  minus building graphs (tracing, planning, sub-graph modules): the score passes, feeding cached
  values, the memo;
* **convert**: ``nv.convert``; **bookkeeping**: the rest of ``nv.prune`` (graph building, cost
  model, map/bisection/candidate logic, events, checkpoints).

The same function names exist before and after issue #16, so the script also profiles an older
checkout (copy it and ``vs_settings.py`` elsewhere and run with ``PYTHONPATH=<checkout>``).

Run: ``PYTHONPATH=$PWD .venv/bin/python benchmarks/profile_split.py [--setting digits32]
[--form evaluator|score_func] [--weights /tmp/w.pt]`` (``--weights``: trained weights are saved
there on the first run and reused).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vs_settings import make_setting, train_setting

CALIB = [("patch.py", "recalibrate_bn")]
#: the outermost scoring calls per form (the cache fill is inside ``prepare``)
OUTER = {
    "evaluator": [("evaluator.py", "prepare"), ("evaluator.py", "score_active"),
                  ("_cached.py", "score_active")],
    "score_func": [("func.py", "prepare"), ("func.py", "score_active")],
}  # fmt: skip
#: building the graphs inside those calls (counted as bookkeeping)
SETUP = [
    ("fx.py", "trace_leaves"),
    ("_subgraph.py", "plan_subgraphs"),
    ("_subgraph.py", "capture_module"),
    ("_subgraph.py", "subgraph_module"),
    ("_calib.py", "calib_module"),
]


def _cum(stats: pstats.Stats, keys: list[tuple[str, str]]) -> float:
    total = 0.0
    for (file, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if any(file.endswith(f) and name == n for f, n in keys):
            total += ct
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="digits32")
    parser.add_argument("--form", default="evaluator", choices=["evaluator", "score_func"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--top", type=int, default=0, help="also print the top N by tottime")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import nasviz as nv
    from nasviz.datasets import evaluate_accuracy
    from nasviz.demo import demo_config

    path = Path(args.weights) if args.weights else None
    s = make_setting(args.setting, args.epochs)
    if path is not None and path.exists():
        s.model.load_state_dict(torch.load(path, weights_only=True))
    else:
        s.model.load_state_dict(train_setting(args.setting, args.epochs).state_dict())
        if path is not None:
            torch.save(s.model.state_dict(), path)
    trained = s.model.eval()
    x = next(iter(s.val))[0][:2]
    nv.profile(trained, x)
    config: dict[str, Any] = {"data_loader": s.calib}
    if s.max_iter is not None:
        config["max_iter_data_loader"] = s.max_iter
    if args.form == "evaluator":
        config.update(score_loader=s.val, metric="accuracy")
    else:
        config["score_func"] = lambda m: evaluate_accuracy(m, s.val)
    model = copy.deepcopy(trained)
    prof = cProfile.Profile(time.process_time)  # CPU time: wall time lies on a busy machine
    cpu0 = time.process_time()
    prof.enable()
    model = nv.convert(model, mode=[("fastnas", demo_config())], dummy_input=x)
    cpu1 = time.process_time()
    model, state = nv.prune(model, constraints={"flops": "60%"}, dummy_input=x, config=config)
    prof.disable()
    cpu2 = time.process_time()
    stats = pstats.Stats(prof)
    calib = _cum(stats, CALIB)
    score = _cum(stats, OUTER[args.form]) - calib - _cum(stats, SETUP)
    prune = cpu2 - cpu1
    small = nv.export(model).eval()
    kept = nv.profile(small, x).flops / nv.profile(trained, x).flops
    print(f"{args.setting}, {args.form} form: convert {cpu1 - cpu0:.2f} s, prune {prune:.2f} s CPU")
    print(
        f"  calibration {calib:.2f} s, scoring {score:.2f} s, bookkeeping "
        f"{prune - calib - score:.2f} s (cProfile times, overhead included)"
    )
    report = state.get("evaluator") or state.get("score_func") or {}
    print(f"  {report}")
    print(
        f"  val {evaluate_accuracy(small, s.val):.4f} (unpruned "
        f"{evaluate_accuracy(trained, s.val):.4f}), FLOPs kept {kept:.1%}"
    )
    if args.top:
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
