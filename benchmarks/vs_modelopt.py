"""nasviz vs NVIDIA Model Optimizer's FastNAS on the same trained digits CNN, in one run.

Both tools prune the same trained ``DigitsCNN(width=48)`` (``--epochs`` epochs, default 8, seed
0; the demo's model, see ``prune_digits.py``) to ``{"flops": "60%"}``, each starting from its own
deep copy, with ``torch.set_num_threads(1)``:

* the score function is the same for every run: top-1 accuracy on the 270 validation images,
  ``score(model) = nasviz.datasets.evaluate_accuracy(model, loaders.val)`` (the evaluator form
  computes exactly that from ``score_loader=loaders.val, metric="accuracy"``);
* BatchNorm calibration data: ``loaders.train`` (batches of 64), ``max_iter_data_loader=8``;
* search spaces: nasviz with ``nasviz.demo.demo_config()`` (widths in multiples of 4 for convs,
  BatchNorms and Linears); Model Optimizer with the same widths (``{"nn.Conv2d": {"*":
  {"channel_divisor": 4}}, ...}``) and, as it ships, with its default FastNAS config.

Printed side by side: the prune's wall and CPU time (``nv.prune`` / ``mtp.prune``, conversion
included for Model Optimizer, which converts inside ``prune``), the FLOPs the exported subnet
keeps (``nv.profile`` on both exported models) and its validation and test accuracy before any
fine-tuning. ``nv.profile`` runs once before timing (one-time imports).

Model Optimizer is used if ``import modelopt.torch.prune`` works in the interpreter running this
script (see benchmarks/README.md for a separate venv that has it); otherwise nasviz runs alone and
the script says so.

Run: ``/tmp/mo/bin/python benchmarks/vs_modelopt.py`` (or ``.venv/bin/python`` for nasviz alone).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prune_digits import measure, prune_nasviz, train_digits

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


def prune_modelopt(trained: nn.Module, loaders: Any, x: torch.Tensor, space: str) -> dict[str, Any]:
    """``mtp.prune`` on a copy of ``trained`` with Model Optimizer's FastNAS; then export."""
    import modelopt.torch.prune as mtp

    from nasviz.datasets import evaluate_accuracy

    model = copy.deepcopy(trained)
    mode: Any = [("fastnas", DEMO_WIDTHS)] if space == "demo widths" else "fastnas"
    config = {
        "data_loader": loaders.train,
        "max_iter_data_loader": 8,
        "score_func": lambda m: evaluate_accuracy(m, loaders.val),
        "checkpoint": None,
        "verbose": False,
    }
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
    return measure(trained, small, loaders, x) | {"wall": wall, "cpu": cpu, "subnet": subnet}


def main() -> None:
    import nasviz as nv

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        import modelopt.torch.prune  # noqa: F401

        have_modelopt = True
    except ImportError as e:
        have_modelopt = False
        print(f"Model Optimizer is not importable here ({e}); running nasviz alone.")
    model, loaders, x = train_digits(args.epochs)
    nv.profile(model, x)  # warm-up: the FLOP counter's one-time imports
    rows: dict[str, dict[str, Any]] = {}
    rows["nasviz, evaluator form"] = prune_nasviz(model, loaders, x, "evaluator")
    rows["nasviz, score_func form"] = prune_nasviz(model, loaders, x, "score_func")
    if have_modelopt:
        for space in ("demo widths", "its default config"):
            rows[f"modelopt, {space}"] = prune_modelopt(model, loaders, x, space)
    full = rows["nasviz, evaluator form"]["val_full"]
    print(f"unpruned DigitsCNN(width=48), {args.epochs} epochs: val accuracy {full:.4f}")
    print(
        f"{'run':<30} {'wall s':>7} {'CPU s':>6} {'FLOPs kept':>10} {'val acc':>8} {'test acc':>8}"
    )
    for name, r in rows.items():
        if "refused" in r:
            print(f"{name:<30} refused the constraint: {r['refused']}")
            continue
        print(
            f"{name:<30} {r['wall']:>7.2f} {r['cpu']:>6.2f} {r['flops_kept']:>10.1%} "
            f"{r['val']:>8.4f} {r['test']:>8.4f}"
        )
    for name, r in rows.items():
        if "subnet" in r:
            print(f"{name}: {r['subnet']}")
    ours = rows["nasviz, evaluator form"]
    for name, r in rows.items():
        if name.startswith("modelopt") and "wall" in r:
            print(
                f"nasviz (evaluator form) / {name}: time {ours['wall'] / r['wall']:.2f}x wall, "
                f"{ours['cpu'] / r['cpu']:.2f}x CPU; val accuracy {ours['val'] - r['val']:+.4f}"
            )


if __name__ == "__main__":
    main()
