"""How far can the sensitivity map be trusted? Predicted against measured score drops.

FastNAS predicts a subnet's score drop as the sum of its groups' single-group drops (the
additivity assumption, :func:`nasviz.fastnas.predict_drop`). This script measures how well that
prediction agrees with the real drop on two models trained on scikit-learn's digits:

* ``DigitsCNN`` (width 32) and ``resnet_tiny(in_channels=1)`` (residual streams couple groups);
* each is converted with ``nasviz.demo.demo_config()`` (widths in multiples of 4) and searched
  (``nv.prune``, 60% FLOPs) to get its map;
* ``--subnets`` subnets are evaluated for real (BatchNorm re-calibrated on two training batches,
  validation accuracy): points spread along the Pareto front of FLOPs against predicted drop,
  then seeded random subnets;
* reported: Spearman rank correlation and Pearson correlation between predicted and measured drop,
  mean absolute error, and the same for the monotone map; ``MAE<=0.1``: the mean absolute error
  over the subnets predicted to drop at most 0.1 (the region where one picks a subnet; the sum
  of drops overshoots where accuracy saturates near chance).

Run: ``.venv/bin/python benchmarks/predicted_vs_measured.py [--subnets 16] [--epochs 3]``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn


def _agreement(pred: list[float], meas: list[float]) -> dict[str, float]:
    p, m = pd.Series(pred), pd.Series(meas)
    near = p <= 0.1
    return {
        "spearman": float(p.rank().corr(m.rank())),
        "pearson": float(p.corr(m)),
        "mae": float((p - m).abs().mean()),
        "mae_near": float((p[near] - m[near]).abs().mean()),
        "n_near": int(near.sum()),
    }


def measure(
    name: str, factory: Callable[[], nn.Module], n_subnets: int, epochs: int, seed: int
) -> dict[str, Any]:
    import nasviz as nv
    from nasviz.datasets import digits_loaders, evaluate_accuracy, train_classifier
    from nasviz.demo import demo_config
    from nasviz.fastnas import pareto_front, predict_drop

    torch.manual_seed(seed)
    model = factory()
    loaders = digits_loaders(batch_size=64, seed=seed)
    train_classifier(model, loaders.train, epochs=epochs)
    x = next(iter(loaders.val))[0][:2]
    model = nv.convert(model, mode=[("fastnas", demo_config())], dummy_input=x)

    def score(m: nn.Module) -> float:
        return evaluate_accuracy(m, loaders.val)

    def calibrate(m: nn.Module) -> None:
        for i, (images, _) in enumerate(loaders.train):
            if i == 2:
                break
            m(images)

    t = time.perf_counter()
    model, state = nv.prune(
        model, mode="fastnas", constraints={"flops": "60%"}, dummy_input=x,
        config={"score_func": score, "forward_loop": calibrate, "final_candidates": 2},
    )  # fmt: skip
    search_s = time.perf_counter() - t
    smap, original = state["sensitivity_map"], float(state["original_score"])
    space = nv.search_space(model)
    hps = {n: hp for n, hp in space.hparams.items() if hp.is_configurable}
    front = pareto_front(smap, hps, space.cost_model(x))
    picks = [front["config"].iloc[int(i)] for i in np.linspace(0, len(front) - 1, n_subnets // 2)]
    rng = random.Random(seed)
    seen = {tuple(sorted(c.items())) for c in picks}
    while len(picks) < n_subnets:
        cfg = {n: rng.choice(hp.choices) for n, hp in hps.items()}
        if tuple(sorted(cfg.items())) not in seen:
            seen.add(tuple(sorted(cfg.items())))
            picks.append(cfg)
    rows = []
    for cfg in picks:
        nv.select(model, cfg)
        nv.prep_for_eval(model, calibrate)
        rows.append(
            {
                "predicted": predict_drop(smap, cfg),
                "monotone": predict_drop(smap, cfg, monotone=True),
                "measured": original - score(model),
            }
        )
    df = pd.DataFrame(rows)
    return {
        "model": name,
        "groups": len(hps),
        "original": original,
        "search_s": search_s,
        "n": len(df),
        "front_points": len(front),
        "raw": _agreement(list(df["predicted"]), list(df["measured"])),
        "mono": _agreement(list(df["monotone"]), list(df["measured"])),
        "table": df,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subnets", type=int, default=16, help="subnets evaluated per model")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", action="store_true", help="print every evaluated subnet")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from nasviz.models import DigitsCNN, resnet_tiny

    models: list[tuple[str, Callable[[], nn.Module]]] = [
        ("DigitsCNN", DigitsCNN),
        ("resnet_tiny", lambda: resnet_tiny(in_channels=1)),
    ]
    print(f"predicted (additive) vs measured drop, {args.subnets} subnets per model")
    print(f"{'model':<13}{'groups':>7}{'acc':>7}{'n':>4}  {'map':<9}{'spearman':>9}"
          f"{'pearson':>9}{'MAE':>8}{'MAE<=0.1':>10}")  # fmt: skip
    for name, model in models:
        r = measure(name, model, args.subnets, args.epochs, args.seed)
        for kind in ("raw", "mono"):
            a = r[kind]
            print(
                f"{r['model']:<13}{r['groups']:>7}{r['original']:>7.3f}{r['n']:>4}  {kind:<9}"
                f"{a['spearman']:>9.3f}{a['pearson']:>9.3f}{a['mae']:>8.4f}"
                f"{a['mae_near']:>8.4f} ({a['n_near']})"
            )
        if args.show:
            print(r["table"].to_string())
        print(f"  ({name}: search {r['search_s']:.1f} s, front of {r['front_points']} points)")


if __name__ == "__main__":
    main()
