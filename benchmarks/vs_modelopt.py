"""nasviz vs NVIDIA Model Optimizer's FastNAS on the same trained digits CNN, in one run.

Both tools prune the same trained ``DigitsCNN(width=48)`` (``--epochs`` epochs, default 8, seed
0; the demo's model, see ``prune_digits.py``) to ``{"flops": "60%"}`` with
``torch.set_num_threads(1)``. The model is trained once; every prune then runs in a **fresh
process** of the same interpreter (its own peak RSS, no allocator state left by another tool),
which loads the trained weights and rebuilds ``digits_loaders(batch_size=64, seed=0)`` with the
shuffling generator advanced past the ``--epochs`` training epochs, so every tool calibrates on
the same 8 training batches:

* the score function is the same for every run: top-1 accuracy on the 270 validation images,
  ``score(model) = nasviz.datasets.evaluate_accuracy(model, loaders.val)`` (the evaluator form
  computes exactly that from ``score_loader=loaders.val, metric="accuracy"``);
* BatchNorm calibration data, the same for both tools, in one of two settings:

  - ``--calib-batch-size 64 --calib-batches 8``: ``loaders.train``,
    ``max_iter_data_loader=8``. Model Optimizer re-calibrates BatchNorm for a scored subnet only
    from a data queue of 50 batches that its first calibration fills; 8 batches never fill it,
    so it warns "modelopt data queue not filled" and scores every subnet *without*
    re-calibration (fast, and its subnet loses ~25 points of accuracy);
  - documented, the default (``--calib-batch-size 16 --calib-batches 50``): 50 batches of 16
    training images (``digits_loaders(batch_size=16, seed=0).train``) fill the queue, so it
    re-calibrates BatchNorm on those 800 images for every subnet it scores - the behaviour the
    issue describes (12 re-calibrations, 9,600 images); nasviz calibrates on the same batches;
* search spaces: nasviz with ``nasviz.demo.demo_config()`` (widths in multiples of 4 for convs,
  BatchNorms and Linears); Model Optimizer with the same widths (``{"nn.Conv2d": {"*":
  {"channel_divisor": 4}}, ...}``) and, as it ships, with its default FastNAS config.

Printed side by side (best CPU time of ``--repeats`` interleaved runs, and the median): the
prune's CPU and wall time - for nasviz ``nv.convert`` + ``nv.prune`` (also ``nv.prune`` alone),
for Model Optimizer ``mtp.prune``, which converts inside - the FLOPs the exported subnet keeps
(``nv.profile`` on both exported models), its validation and test accuracy before any
fine-tuning, and the worker's peak RSS (``ru_maxrss``) with its RSS before the prune.
``nv.profile`` runs once before timing (one-time imports).

Model Optimizer is used if ``import modelopt.torch.prune`` works in the interpreter running this
script (see benchmarks/README.md for a separate venv that has it); otherwise nasviz runs alone and
the script says so.

Run: ``/tmp/mo/bin/python benchmarks/vs_modelopt.py [--repeats 3]`` (or ``.venv/bin/python`` for
nasviz alone).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vs_settings import SETTINGS, Setting, make_setting, train_setting

DEMO_WIDTHS = {
    "nn.Conv2d": {"*": {"channel_divisor": 4}},
    "nn.BatchNorm2d": {"*": {"feature_divisor": 4}},
    "nn.Linear": {"*": {"feature_divisor": 4}},
}


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null (rich and tqdm write there directly)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _config(s: Setting, score_func: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"data_loader": s.calib, "score_func": score_func}
    if s.max_iter is not None:
        config["max_iter_data_loader"] = s.max_iter
    return config


def prune_modelopt(trained: nn.Module, s: Setting, x: torch.Tensor, space: str) -> dict[str, Any]:
    """``mtp.prune`` on a copy of ``trained`` with Model Optimizer's FastNAS; then export."""
    import modelopt.torch.prune as mtp

    from nasviz.datasets import evaluate_accuracy

    model = copy.deepcopy(trained)
    mode: Any = [("fastnas", DEMO_WIDTHS)] if space == "demo widths" else "fastnas"
    config = _config(s, lambda m: evaluate_accuracy(m, s.val))
    config.update(checkpoint=None, verbose=False)
    with warnings.catch_warnings(), _silenced():  # Model Optimizer prints tables and bars
        warnings.simplefilter("ignore")
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            model, state = mtp.prune(
                model, mode=mode, constraints={"flops": "60%"}, dummy_input=x, config=config
            )
        except Exception as e:  # e.g. a constraint its search space cannot reach
            text = str(e).strip().splitlines()
            return {"refused": f"{type(e).__name__}: {text[-1] if text else ''}"}
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    small = model.eval()  # mtp.prune exports the best subnet in place
    best = state.get("best", {}).get("config", {})
    subnet = {k: v for k, v in best.items() if k.endswith(("out_channels", "out_features"))}
    return measure(trained, small, s, x) | {"wall": wall, "cpu": cpu, "subnet": subnet}


def prune_nasviz(trained: nn.Module, s: Setting, x: torch.Tensor, form: str) -> dict[str, Any]:
    """``nv.convert`` + ``nv.prune`` on a copy of ``trained`` in ``form``; then export."""
    import nasviz as nv
    from nasviz.datasets import evaluate_accuracy
    from nasviz.demo import demo_config

    model = copy.deepcopy(trained)
    config = _config(s, lambda m: evaluate_accuracy(m, s.val))
    if form == "evaluator":
        del config["score_func"]
        config.update(score_loader=s.val, metric="accuracy")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model = nv.convert(model, mode=[("fastnas", demo_config())], dummy_input=x)
    wall, cpu = time.perf_counter(), time.process_time()
    convert = {"convert_wall": wall - wall0, "convert_cpu": cpu - cpu0}
    model, state = nv.prune(model, constraints={"flops": "60%"}, dummy_input=x, config=config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    small = nv.export(model).eval()
    report = state.get("evaluator") or state.get("score_func") or {}
    scored = sum(1 for h in state["history"] if h.get("event") in ("MapEntry", "CandidateScored")
                 and not h.get("skipped"))  # fmt: skip
    return (
        measure(trained, small, s, x)
        | convert
        | {
            "wall": wall,
            "cpu": cpu,
            "subnet": state["best"]["config"],
            "scored": scored,
            "report": {k: report.get(k) for k in ("cached_scores", "full_scores",
                                                  "remembered_scores", "skipped_candidates")},
        }
    )  # fmt: skip


def measure(full: nn.Module, small: nn.Module, s: Setting, x: torch.Tensor) -> dict[str, Any]:
    """FLOPs kept and val/test accuracy of ``small`` (next to ``full``'s)."""
    import nasviz as nv
    from nasviz.datasets import evaluate_accuracy

    return {
        "flops_kept": nv.profile(small, x).flops / nv.profile(full, x).flops,
        "val": evaluate_accuracy(small, s.val),
        "test": evaluate_accuracy(small, s.test),
        "val_full": evaluate_accuracy(full, s.val),
    }


def _rss() -> int:
    """The current resident set size in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(run: str, setting: str, weights: str, epochs: int, calib_bs: int, calib_batches: int
           ) -> dict[str, Any]:  # fmt: skip
    """One prune in this (fresh) process: the trained model and loaders as the parent had them."""
    import nasviz as nv

    torch.set_num_threads(1)
    s = make_setting(setting, epochs, calib_bs, calib_batches)
    model = s.model
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    x = next(iter(s.val))[0][:2]
    nv.profile(model, x)  # warm-up: the FLOP counter's one-time imports
    before = _rss()
    if run.startswith("nasviz"):
        form = "evaluator" if "evaluator" in run else "score_func"
        r = prune_nasviz(model, s, x, form)
        r = r | {"prune_cpu": r["cpu"], "prune_wall": r["wall"]}
        r["cpu"], r["wall"] = r["cpu"] + r["convert_cpu"], r["wall"] + r["convert_wall"]
    else:
        r = prune_modelopt(model, s, x, run.removeprefix("modelopt, "))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return r | {"rss_before": before, "peak_rss": peak}


def run_worker(
    run: str, setting: str, weights: Path, epochs: int, calib: tuple[int, int]
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", run, setting, str(weights), str(epochs)]
    proc = subprocess.run([*cmd, *map(str, calib)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = f"{run} failed:\n{proc.stderr}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per tool")
    parser.add_argument(
        "--calib-batch-size", type=int, default=16, help="16 x 50 fills Model Optimizer's queue"
    )
    parser.add_argument("--calib-batches", type=int, default=50)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated")
    parser.add_argument("--no-default-config", action="store_true",
                        help="skip Model Optimizer's default config")  # fmt: skip
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run, setting, weights, epochs, bs, n = args.worker
        print(json.dumps(worker(run, setting, weights, int(epochs), int(bs), int(n))))
        return
    torch.set_num_threads(1)
    try:
        import modelopt.torch.prune  # noqa: F401

        have_modelopt = True
    except ImportError as e:
        have_modelopt = False
        print(f"Model Optimizer is not importable here ({e}); running nasviz alone.")
    runs = ["nasviz, evaluator form", "nasviz, score_func form"]
    if have_modelopt:
        runs += ["modelopt, demo widths"]
        runs += [] if args.no_default_config else ["modelopt, its default config"]
    print(f"load average at start: {os.getloadavg()}")
    for setting in args.settings.split(","):
        report(setting, runs, args)
    print(f"load average at end: {os.getloadavg()}")


def report(setting: str, runs: list[str], args: Any) -> None:
    """Train the setting's model, run every tool ``args.repeats`` times interleaved, print."""
    all_results: dict[str, list[dict[str, Any]]] = {r: [] for r in runs}
    calib = (args.calib_batch_size, args.calib_batches)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.pt"
        torch.save(train_setting(setting, args.epochs).state_dict(), weights)
        for _ in range(args.repeats):
            for run in runs:  # interleaved, so load changes hit every tool alike
                r = run_worker(run, setting, weights, args.epochs, calib)
                all_results[run].append(r)
                brief = {k: r[k] for k in ("cpu", "flops_kept", "val", "refused") if k in r}
                print(f"  ({setting}: {run}: {brief})", flush=True)
    rows = {r: min(v, key=lambda x: x.get("cpu", 0.0)) for r, v in all_results.items()}
    full = rows["nasviz, evaluator form"]["val_full"]
    desc = make_setting(setting, args.epochs, *calib).describe
    print(f"\n== {setting}: {desc}; {args.epochs} epochs: unpruned val accuracy {full:.4f}")
    print(
        f"best of {args.repeats} (CPU); nasviz = convert + prune; "
        "median CPU in brackets; peak RSS = the worker's (RSS before the prune)"
    )
    print(
        f"{'run':<30} {'CPU s':>6} {'(median)':>9} {'wall s':>7} {'FLOPs kept':>10} "
        f"{'val acc':>8} {'test acc':>8} {'peak RSS MiB':>16}"
    )
    for name, r in rows.items():
        if "refused" in r:
            print(f"{name:<30} refused the constraint: {r['refused']}")
            continue
        med = statistics.median(x["cpu"] for x in all_results[name])
        print(
            f"{name:<30} {r['cpu']:>6.2f} {f'({med:.2f})':>9} {r['wall']:>7.2f} "
            f"{r['flops_kept']:>10.1%} {r['val']:>8.4f} {r['test']:>8.4f} "
            f"{r['peak_rss'] / 2**20:>7.0f} ({r['rss_before'] / 2**20:.0f})"
        )
    for name, r in rows.items():
        if name.startswith("nasviz"):
            print(
                f"{name}: nv.prune alone {r['prune_cpu']:.2f} s CPU, {r['prune_wall']:.2f} s "
                f"wall; nv.convert {r['convert_cpu']:.2f} s CPU; {r['scored']} subnets scored "
                f"(map entries + candidates); {r['report']}"
            )
    for name, r in rows.items():
        if "subnet" in r:
            print(f"{name}: {r['subnet']}")
    for name, runs_ in all_results.items():
        if "cpu" in runs_[0]:
            print(f"{name}: CPU s per run {', '.join(format(x['cpu'], '.2f') for x in runs_)}")
    targets = {"nasviz, evaluator form": 0.20, "nasviz, score_func form": 0.5}
    for ours_name, target in targets.items():
        ours = rows[ours_name]
        ours_med = statistics.median(x["cpu"] for x in all_results[ours_name])
        for name, r in rows.items():
            if name.startswith("modelopt") and "wall" in r:
                med = statistics.median(x["cpu"] for x in all_results[name])
                ratio = ours["cpu"] / r["cpu"]
                print(
                    f"{setting}: {ours_name} / {name}: {ratio:.2f}x CPU (best/best; "
                    f"median/median {ours_med / med:.2f}x; target <= {target:.2f}x: "
                    f"{'met' if ratio <= target else 'MISSED'}), {ours['wall'] / r['wall']:.2f}x "
                    f"wall; val accuracy {ours['val'] - r['val']:+.4f}"
                )
    for ours_name in targets:
        r = rows[ours_name]
        acc_ok = r["val"] >= full - 0.01
        flops_ok = 0.55 <= r["flops_kept"] <= 0.60
        print(
            f"{setting}: {ours_name}: val {r['val']:.4f} vs unpruned {full:.4f} "
            f"({'ok' if acc_ok else 'MISSED'}: within 1 point), FLOPs kept "
            f"{r['flops_kept']:.1%} ({'ok' if flops_ok else 'MISSED'}: 55-60%)"
        )


if __name__ == "__main__":
    main()
