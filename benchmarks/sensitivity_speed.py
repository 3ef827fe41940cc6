"""How much faster the sensitivity map is with the evaluator form's activation cache.

Two models, one run, ``torch.set_num_threads(1)``:

* **digits**: ``nasviz.models.DigitsCNN(width=48)`` trained for ``--epochs`` (default 2, seed 0)
  epochs on scikit-learn's digits, the demo's search space (``nasviz.demo.demo_config()``: widths
  in multiples of 4, 41 map entries), calibration on the first 8 batches of 64 training images
  (not shuffled, so every mode sees the same batches), scored by top-1 accuracy on the 270
  validation images;
* **resnet**: ``nasviz.models.resnet_tiny()`` (untrained, seed 0) on random-but-fixed 3x32x32
  data with random labels (8 calibration batches of 32, 256 score images), widths in multiples
  of 8 (22 map entries), scored by minus the cross-entropy (a continuous score, so the map
  comparison below is a real test).

Each model is searched (``BinarySearcher``, ``{"flops": "60%"}``) in four modes, each in a fresh
process (so each has its own peak RSS):

* ``score_func``: the opaque ``score_func`` form (BN re-calibration on the loader, then a user
  loop over the score loader) - the map as nasviz computed it before the evaluator form;
* ``uncached``: the evaluator form with ``cache_bytes=0`` (nothing kept, loaders re-read, the
  model's own forward: the plain loop the evaluator form falls back to);
* ``cached``: the evaluator form with the default 1 GiB budget, ``skip="none"``;
* ``cached+skip``: the same with the default ``skip="negligible"`` rule.

Reported per mode: the map phase (from ``SearchStarted`` to ``MapFinished``: the original score,
the cache fill, every entry) in wall and CPU seconds (the best of ``--repeats`` runs), entries
actually scored, the bytes the cache held, and the worker's peak RSS (``ru_maxrss``); then the
speed-up of ``cached`` and ``cached+skip`` over ``score_func`` and over ``uncached``, and the
largest difference
between the ``cached`` and ``uncached`` maps (it must be ~0).

Run: ``.venv/bin/python benchmarks/sensitivity_speed.py [--repeats 1] [--epochs 2]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

MODES = ("score_func", "uncached", "cached", "cached+skip")
RESNET_CONFIG = {
    "nn.Conv2d": {"channel_divisor": 8},
    "nn.BatchNorm2d": {"feature_divisor": 8},
    "nn.Linear": {"feature_divisor": 8},
}


def digits_setup(weights: str) -> tuple[nn.Module, torch.Tensor, Any, DataLoader, DataLoader, str]:
    import nasviz as nv
    from nasviz.datasets import load_digits_splits
    from nasviz.demo import demo_config
    from nasviz.models import DigitsCNN

    splits = load_digits_splits(0)
    calib = DataLoader(splits.train.dataset(), batch_size=64, shuffle=False)
    score = DataLoader(splits.val.dataset(), batch_size=512, shuffle=False)
    model = DigitsCNN(width=48)
    model.load_state_dict(torch.load(weights, weights_only=True))
    x = splits.val.images[:2]
    model = nv.convert(model, mode=[("fastnas", demo_config())], dummy_input=x)  # type: ignore[assignment]  # convert returns nn.Module
    return model, x, demo_config(), calib, score, "accuracy"


def resnet_setup() -> tuple[nn.Module, torch.Tensor, Any, Any, DataLoader, str]:
    import nasviz as nv
    from nasviz.models import resnet_tiny

    torch.manual_seed(0)
    model = resnet_tiny()
    images = torch.randn(256 + 8 * 32, 3, 32, 32)
    labels = torch.randint(0, 10, (images.shape[0],))
    calib = [images[256 + 32 * i : 256 + 32 * (i + 1)] for i in range(8)]
    score = DataLoader(TensorDataset(images[:256], labels[:256]), batch_size=128)
    x = images[:2]
    model = nv.convert(model, mode=[("fastnas", RESNET_CONFIG)], dummy_input=x)  # type: ignore[assignment]  # convert returns nn.Module
    return model, x, RESNET_CONFIG, calib, score, "neg_cross_entropy"


def worker(name: str, mode: str, weights: str) -> dict[str, Any]:
    from nasviz.fastnas import BinarySearcher
    from nasviz.search.evaluator import METRICS
    from nasviz.search.events import MapFinished, SearchStarted

    torch.set_num_threads(1)
    if name == "digits":
        model, x, _, calib, score, metric = digits_setup(weights)
    else:
        model, x, _, calib, score, metric = resnet_setup()
    marks: dict[str, tuple[float, float]] = {}

    def on_event(e: Any) -> None:
        if isinstance(e, (SearchStarted, MapFinished)):
            marks[type(e).__name__] = (time.perf_counter(), time.process_time())

    config: dict[str, Any] = {"data_loader": calib, "callbacks": [on_event]}
    config["max_iter_data_loader"] = 8
    if mode == "score_func":
        fn = METRICS[metric]

        def score_func(m: nn.Module) -> float:
            outs, tgts = [], []
            for images, labels in score:
                outs.append(m(images))
                tgts.append(labels)
            return fn(torch.cat(outs), torch.cat(tgts))

        config["score_func"] = score_func
    else:
        config.update(score_loader=score, metric=metric)
        config["skip"] = "negligible" if mode == "cached+skip" else "none"
        if mode == "uncached":
            config["cache_bytes"] = 0
    searcher = BinarySearcher()
    t0 = time.perf_counter()
    state = searcher.search(model, {"flops": "60%"}, dummy_input=x, config=config)
    total = time.perf_counter() - t0
    (w0, c0), (w1, c1) = marks["SearchStarted"], marks["MapFinished"]
    finished = next(r for r in state["history"] if r["event"] == "MapFinished")
    report = state.get("evaluator", {})
    return {
        "map_wall": w1 - w0,
        "map_cpu": c1 - c0,
        "search_wall": total,
        "scored": finished["n_scored"],
        "entries": finished["entries"],
        "cache_bytes": report.get("cache_bytes", 0),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "map": {k: {str(c): d for c, d in v.items()} for k, v in state["sensitivity_map"].items()},
        "best": state["best"]["config"],
        "score": state["best"]["score"],
    }


def train_digits(path: Path, epochs: int) -> float:
    from nasviz.datasets import digits_loaders, evaluate_accuracy, train_classifier
    from nasviz.models import DigitsCNN

    torch.manual_seed(0)
    loaders = digits_loaders(batch_size=64)
    model = DigitsCNN(width=48)
    train_classifier(model, loaders.train, epochs=epochs)
    torch.save(model.state_dict(), path)
    return evaluate_accuracy(model, loaders.val)


def run_worker(name: str, mode: str, weights: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", name, mode, str(weights)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        msg = f"{name}/{mode} failed:\n{proc.stderr}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def max_map_diff(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> float:
    return max(abs(a[k][c] - b[k][c]) for k in a for c in a[k] if c in b.get(k, {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode (best is kept)")
    parser.add_argument("--epochs", type=int, default=2, help="digits CNN training epochs")
    parser.add_argument("--models", default="digits,resnet")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "digits48.pt"
        acc = train_digits(weights, args.epochs)
        print(f"digits CNN trained {args.epochs} epoch(s): val accuracy {acc:.4f}")
        for name in args.models.split(","):
            results: dict[str, dict[str, Any]] = {}
            for _ in range(args.repeats):
                for mode in MODES:  # interleaved, so load changes hit every mode alike
                    r = run_worker(name, mode, weights)
                    best = results.get(mode)
                    if best is None or r["map_cpu"] < best["map_cpu"]:
                        results[mode] = r
            print(f"\n== {name} ({results['cached']['entries']} map entries) ==")
            print(
                f"{'mode':<12} {'map wall s':>10} {'map CPU s':>10} {'scored':>7} "
                f"{'cache MiB':>10} {'peak RSS MiB':>13} {'search s':>9}"
            )
            for mode, r in results.items():
                print(
                    f"{mode:<12} {r['map_wall']:>10.2f} {r['map_cpu']:>10.2f} {r['scored']:>7} "
                    f"{r['cache_bytes'] / 2**20:>10.1f} {r['peak_rss'] / 2**20:>13.0f} "
                    f"{r['search_wall']:>9.2f}"
                )
            for ref in ("score_func", "uncached"):
                base = results[ref]
                for mode in ("cached", "cached+skip"):
                    r = results[mode]
                    print(
                        f"speed-up of {mode} over {ref}: {base['map_cpu'] / r['map_cpu']:.2f}x "
                        f"CPU, {base['map_wall'] / r['map_wall']:.2f}x wall (target >= 3x)"
                    )
            diff = max_map_diff(results["cached"]["map"], results["uncached"]["map"])
            diff_sf = max_map_diff(results["uncached"]["map"], results["score_func"]["map"])
            same = results["cached"]["best"] == results["uncached"]["best"]
            print(
                f"max |cached - uncached| map entry: {diff:.2e}; |uncached - score_func|: "
                f"{diff_sf:.2e}; same chosen subnet: {same} ({results['cached']['best']})"
            )


if __name__ == "__main__":
    main()
