"""The demo's prune, measured against its targets: accuracy kept, FLOPs kept, time.

The demo setup (``nasviz.demo``): ``DigitsCNN(width=48)`` trained ``--epochs`` epochs (default 8,
as the demo; seed 0) on ``digits_loaders(batch_size=64)``, converted with
``nasviz.demo.demo_config()`` and pruned to ``{"flops": "60%"}`` with BatchNorm calibration on
``max_iter_data_loader=8`` training batches, ``torch.set_num_threads(1)``, in two forms:

* ``score_func``: ``config={"data_loader": train, "score_func": val_accuracy, ...}`` (the demo);
* ``evaluator``: ``config={"data_loader": train, "score_loader": val, "metric": "accuracy", ...}``.

Printed per form, next to the targets: the exported subnet's validation accuracy before any
fine-tuning vs the unpruned model's (target: within 1 point), the FLOPs it keeps (target:
55-60%), and the whole prune's time (``nv.prune``: cost model, map, bisection, final candidates;
target: < 10 s), wall and CPU. ``nv.profile`` runs once before timing, as in the demo, so the
one-time import of torch's FLOP counter is not counted.

Run: ``.venv/bin/python benchmarks/prune_digits.py [--epochs 8]``.
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import torch
from torch import nn


def train_digits(epochs: int = 8, seed: int = 0) -> tuple[nn.Module, Any, torch.Tensor]:
    """The demo's trained DigitsCNN(width=48), its loaders and a dummy input."""
    from nasviz.datasets import digits_loaders, train_classifier
    from nasviz.models import DigitsCNN

    torch.manual_seed(seed)
    loaders = digits_loaders(batch_size=64, seed=seed)
    model = DigitsCNN(width=48)
    train_classifier(model, loaders.train, epochs=epochs, lr=1e-2)
    model.eval()
    x = next(iter(loaders.val))[0][:2]
    return model, loaders, x


def prune_nasviz(
    trained: nn.Module,
    loaders: Any,
    x: torch.Tensor,
    form: str,
    calib: Any = None,
    calib_batches: int = 8,
) -> dict[str, Any]:
    """Convert a copy of ``trained``, prune it in ``form``, export; time, FLOPs and accuracy.

    BatchNorm calibration: ``calib_batches`` batches of ``calib`` (default ``loaders.train``).
    """
    import nasviz as nv
    from nasviz.datasets import evaluate_accuracy
    from nasviz.demo import demo_config

    model = copy.deepcopy(trained)
    config: dict[str, Any] = {
        "data_loader": loaders.train if calib is None else calib,
        "max_iter_data_loader": calib_batches,
    }
    if form == "evaluator":
        config.update(score_loader=loaders.val, metric="accuracy")
    else:
        config["score_func"] = lambda m: evaluate_accuracy(m, loaders.val)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model = nv.convert(model, mode=[("fastnas", demo_config())], dummy_input=x)
    wall, cpu = time.perf_counter(), time.process_time()
    convert = {"convert_wall": wall - wall0, "convert_cpu": cpu - cpu0}
    model, state = nv.prune(model, constraints={"flops": "60%"}, dummy_input=x, config=config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    small = nv.export(model).eval()
    return (
        measure(trained, small, loaders, x)
        | convert
        | {
            "wall": wall,
            "cpu": cpu,
            "subnet": state["best"]["config"],
            "search_score": state["best"]["score"],
            "cache_bytes": state.get("evaluator", {}).get("cache_bytes", 0),
        }
    )


def measure(full: nn.Module, small: nn.Module, loaders: Any, x: torch.Tensor) -> dict[str, Any]:
    """FLOPs kept and val/test accuracy of ``small`` (next to ``full``'s)."""
    import nasviz as nv
    from nasviz.datasets import evaluate_accuracy

    return {
        "flops_kept": nv.profile(small, x).flops / nv.profile(full, x).flops,
        "val": evaluate_accuracy(small, loaders.val),
        "test": evaluate_accuracy(small, loaders.test),
        "val_full": evaluate_accuracy(full, loaders.val),
    }


def main() -> None:
    import nasviz as nv

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, loaders, x = train_digits(args.epochs)
    nv.profile(model, x)  # warm-up: the FLOP counter's one-time imports
    rows = {form: prune_nasviz(model, loaders, x, form) for form in ("score_func", "evaluator")}
    full = rows["score_func"]["val_full"]
    print(f"unpruned DigitsCNN(width=48), {args.epochs} epochs: val accuracy {full:.4f}")
    print(
        f"{'form':<11} {'val acc':>8} {'(target >= ' + format(full - 0.01, '.4f') + ')':>20} "
        f"{'FLOPs kept':>10} {'(55-60%)':>9} {'prune wall s':>12} {'CPU s':>6} {'(< 10 s)':>8}"
    )
    for form, r in rows.items():
        ok_acc = "ok" if r["val"] >= full - 0.01 else "MISSED"
        ok_flops = "ok" if 0.55 <= r["flops_kept"] <= 0.60 else "MISSED"
        ok_time = "ok" if r["wall"] < 10 else "MISSED"
        print(
            f"{form:<11} {r['val']:>8.4f} {ok_acc:>20} {r['flops_kept']:>10.1%} {ok_flops:>9} "
            f"{r['wall']:>12.2f} {r['cpu']:>6.2f} {ok_time:>8}"
        )
    for form, r in rows.items():
        print(f"{form}: subnet {r['subnet']}, test accuracy {r['test']:.4f}")


if __name__ == "__main__":
    main()
