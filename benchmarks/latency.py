"""Latency: the lookup-table model's prediction error, and a latency-constrained prune.

Everything runs with ``torch.set_num_threads(1)`` in one process. The machine this was written on
has 2 cores shared with other jobs, so every comparison interleaves its measurements and takes
medians, and the noise is reported: the full model measured at the start and at the end, and one
subnet measured several times.

1. *Prediction error.* For three reference models (``nasviz.models``: ``resnet_tiny``,
   ``mobilenetv2_like``, ``vit_like``) at input sizes where a forward takes milliseconds,
   converted with widths in multiples of 8: build the latency table
   (:func:`nasviz.search.latency.build_latency_model`; its measurements and build time are
   printed), then measure ``--subnets`` random subnets (exported, as they will run) and compare
   with the prediction: median and max absolute error in % (target: median <= 10%). The same
   sample's FLOPs-only "prediction" (latency proportional to FLOPs, through the full model) is
   printed for comparison, with Kendall's tau between FLOPs and measured latency.
2. *Latency prune vs FLOPs prune* on the digits CNN (``nasviz.datasets``, ``DigitsCNN(width=48)``
   trained ``--epochs``), latency measured at batch ``--batch``: ``{"latency": "60%"}``, then
   ``{"flops": p}`` for decreasing ``p`` (the sensitivity map is reused through the checkpoint)
   until the exported subnet's measured latency is at most the latency prune's; validation/test
   accuracy side by side (before fine-tuning). Target: the latency prune's exported subnet
   measures <= 0.66 of the full model in a fresh, interleaved measurement.

Run: ``.venv/bin/python benchmarks/latency.py [--subnets 20] [--epochs 8] [--batch 64]``.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import nasviz as nv
from nasviz.cost.latency import measure_latency
from nasviz.search.latency import build_latency_model, rank_disagreement, sample_latency

RUN_TIME = 0.2  # seconds of timing per measurement (and at least CALLS calls; the fastest counts)
CALLS = 30
#: Table, validation and search measure CPU time of the one thread: on this machine's shared
#: cores wall-clock readings of one model moved by 3x within a minute (see the module docstring)
OPTS = {"min_run_time": RUN_TIME, "min_calls": CALLS, "clock": "cpu"}


def conv_config(divisor: int = 8) -> Any:
    return nv.FastNASConfig(
        **{
            "nn.Conv2d": {"channel_divisor": divisor},
            "nn.BatchNorm2d": {"feature_divisor": divisor},
            "nn.Linear": {"feature_divisor": divisor},
            "nn.LayerNorm": {"feature_divisor": divisor},
        }
    )


def timed(module: nn.Module, x: Any, clock: str = "cpu") -> float:
    return measure_latency(module, x, min_run_time=RUN_TIME, min_calls=CALLS, clock=clock)


def interleaved(
    a: nn.Module, b: nn.Module, x: Any, rounds: int, clock: str = "cpu"
) -> tuple[list[float], list[float]]:
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(timed(a, x, clock))
        tb.append(timed(b, x, clock))
    return ta, tb


def prediction_error(name: str, batch: int, size: int, n: int) -> dict[str, Any]:
    from nasviz.models import REFERENCE_MODELS

    model, _ = REFERENCE_MODELS[name]()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    model = nv.convert(model, mode=[("fastnas", conv_config())], dummy_input=x)
    full_plain = nv.export(model)
    start = timed(full_plain, x)
    t0 = time.perf_counter()
    opts = {**OPTS, "max_choices": 4, "calibration": 4}
    lat, _ = build_latency_model(model, x, options=opts)
    build = time.perf_counter() - t0
    table = sample_latency(model, x, n, latency_model=lat, measure=timed, seed=1)
    end = timed(full_plain, x)
    err = table["error_pct"].abs()
    full_flops = lat.cost_model.full_flops
    flops_pred = table["flops"] / full_flops * lat.table.full
    flops_err = (100 * (flops_pred - table["measured"]) / table["measured"]).abs()
    ranked = rank_disagreement(table)
    hps = [h for h in nv.search_space(model).hparams.values() if h.is_configurable]
    return {
        "model": name,
        "input": f"{batch}x3x{size}x{size}",
        "hparams": len(hps),
        "space": int(torch.tensor([len(h.choices) for h in hps]).prod()),
        "full_ms": lat.table.full * 1e3,
        "build_n": lat.table.measurements,
        "build_s": build,
        "median_err": float(err.median()),
        "max_err": float(err.max()),
        "flops_median_err": float(flops_err.median()),
        "tau": ranked.attrs["tau"],
        "noise": 100 * abs(end - start) / start,
        "full_spread": 100
        * (table["full_raw"].max() - table["full_raw"].min())
        / table["full_raw"].median(),
        "start_ms": start * 1e3,
        "end_ms": end * 1e3,
    }


def train_digits(epochs: int) -> tuple[nn.Module, Any]:
    from nasviz.datasets import digits_loaders, train_classifier
    from nasviz.models import DigitsCNN

    torch.manual_seed(0)
    loaders = digits_loaders(batch_size=64, seed=0)
    model = DigitsCNN(width=48)
    train_classifier(model, loaders.train, epochs=epochs, lr=1e-2)
    return model.eval(), loaders


def prune(
    trained: nn.Module, loaders: Any, x: torch.Tensor, constraints: dict[str, Any], ckpt: Path
) -> tuple[nn.Module, dict[str, Any], float]:
    from nasviz.datasets import evaluate_accuracy
    from nasviz.demo import demo_config

    model = nv.convert(copy.deepcopy(trained), mode=[("fastnas", demo_config(4))], dummy_input=x)
    config = {
        "data_loader": loaders.train,
        "max_iter_data_loader": 8,
        "score_func": lambda m: evaluate_accuracy(m, loaders.val),
        "checkpoint": str(ckpt),
    }
    if "latency" in constraints:
        config["latency"] = {**OPTS, "calibration": 4, "rounds": 5}
    t0 = time.perf_counter()
    model, state = nv.prune(model, constraints=constraints, dummy_input=x, config=config)
    return nv.export(model).eval(), state, time.perf_counter() - t0


def latency_vs_flops(epochs: int, batch: int) -> None:
    from nasviz.datasets import evaluate_accuracy

    trained, loaders = train_digits(epochs)
    x = torch.cat([b[0] for b in loaders.val])[:batch]
    full = copy.deepcopy(trained).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "map.pt"
        small, state, seconds = prune(trained, loaders, x, {"latency": "60%"}, ckpt)
        checks = [e for e in state["history"] if e["event"] == "LatencyChecked"]
        built = next(e for e in state["history"] if e["event"] == "LatencyTableBuilt")
        t_small, t_full = interleaved(small, full, x, 7)
        ratio = statistics.median(t_small) / statistics.median(t_full)
        target = statistics.median(t_small)
        w_small, w_full = interleaved(small, full, x, 7, clock="wall")
        wall_ratio = statistics.median(w_small) / statistics.median(w_full)
        flops_rows = []
        for pct in range(90, 20, -5):
            fsmall, _, _ = prune(trained, loaders, x, {"flops": f"{pct}%"}, ckpt)
            tf, tfull = interleaved(fsmall, full, x, 5)
            rel = statistics.median(tf) / statistics.median(tfull)
            flops_rows.append((pct, fsmall, rel))
            if rel <= ratio:
                break
    print(f"\n== latency prune vs FLOPs prune: DigitsCNN(width=48), {epochs} epochs, batch {batch}")
    print(
        f"latency table: {built['measurements']} measurements in {built['seconds']:.1f} s; "
        f"full {built['full'] * 1e3:.2f} ms, smallest subnet {built['minimum'] * 1e3:.2f} ms"
    )
    for c in checks:
        print(
            f"  final check {c['attempt']}: predicted {c['predicted'] * 1e3:.2f} ms, measured "
            f"{c['measured'] * 1e3:.2f} ms vs limit {c['limit'] * 1e3:.2f} ms -> "
            f"{'ok' if c['ok'] else 'over, tighten and re-run'}"
        )
    spread = 100 * (max(t_full) - min(t_full)) / statistics.median(t_full)
    print(
        f"fresh measurement, CPU clock (7 interleaved rounds): full "
        f"{statistics.median(t_full) * 1e3:.2f} ms (spread {spread:.0f}% of median), "
        f"latency-pruned {target * 1e3:.2f} ms: ratio {ratio:.3f} (target <= 0.66: "
        f"{'ok' if ratio <= 0.66 else 'MISSED'}); prune {seconds:.1f} s"
    )
    w_spread = 100 * (max(w_full) - min(w_full)) / statistics.median(w_full)
    print(
        f"fresh measurement, wall clock (7 interleaved rounds): full "
        f"{statistics.median(w_full) * 1e3:.2f} ms (spread {w_spread:.0f}%), latency-pruned "
        f"{statistics.median(w_small) * 1e3:.2f} ms: ratio {wall_ratio:.3f} (target <= 0.66: "
        f"{'ok' if wall_ratio <= 0.66 else 'MISSED'})"
    )
    fl = nv.profile(full, x).flops
    print(f"{'prune':<22} {'FLOPs kept':>10} {'latency':>8} {'val acc':>8} {'test acc':>8}")
    acc = (evaluate_accuracy(full, loaders.val), evaluate_accuracy(full, loaders.test))
    print(f"{'unpruned':<22} {'100.0%':>10} {'1.000':>8} {acc[0]:>8.4f} {acc[1]:>8.4f}")
    rows = [("latency 60%", small, ratio)] + [(f"flops {p}%", m, r) for p, m, r in flops_rows]
    for label, m, rel in rows:
        kept = nv.profile(m, x).flops / fl
        va, te = evaluate_accuracy(m, loaders.val), evaluate_accuracy(m, loaders.test)
        print(f"{label:<22} {kept:>10.1%} {rel:>8.3f} {va:>8.4f} {te:>8.4f}")
    print(
        "(latency: measured / full model, medians of interleaved rounds; the FLOPs scan stops "
        "at the first FLOPs limit whose subnet is at least as fast as the latency prune's)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subnets", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--skip-prune", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    random.seed(0)
    print(f"== prediction error on {args.subnets} random subnets (1 thread)")
    print(
        f"{'model':<18} {'input':>11} {'hps':>4} {'full ms':>8} {'table':>12} "
        f"{'med |err|':>9} {'max |err|':>9} {'FLOPs-only med':>14} {'tau':>5} {'noise':>6} "
        f"{'spread':>6}"
    )
    for name, batch, size in (
        ("resnet_tiny", 8, 32),
        ("mobilenetv2_like", 8, 32),
        ("vit_like", 16, 32),
    ):
        r = prediction_error(name, batch, size, args.subnets)
        ok = "ok" if r["median_err"] <= 10 else "MISSED"
        print(
            f"{r['model']:<18} {r['input']:>11} {r['hparams']:>4} {r['full_ms']:>8.2f} "
            f"{r['build_n']:>3} in {r['build_s']:>4.0f}s {r['median_err']:>8.1f}% "
            f"{r['max_err']:>8.1f}% {r['flops_median_err']:>13.1f}% {r['tau']:>5.2f} "
            f"{r['noise']:>5.1f}% {r['full_spread']:>5.0f}% {ok}"
        )
    print(
        "(noise: the full model measured before and after the run, |difference| in %; spread: "
        "(max - min) / median of the full model's readings paired with the sampled subnets; "
        "errors are on paired ratios; target: median |err| <= 10%)"
    )
    if not args.skip_prune:
        latency_vs_flops(args.epochs, args.batch)


if __name__ == "__main__":
    main()
