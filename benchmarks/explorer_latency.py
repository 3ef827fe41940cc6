"""The time the SubnetExplorer takes to react to one slider change on ``resnet_tiny``.

One change = the slider's value observer: ``CostModel.estimate`` of the new subnet, the FLOPs /
params label, the kept-channels bar chart and the cost bars (two plotly ``FigureWidget`` updates).
The target is < 100 ms per change. It converts ``nasviz.models.resnet_tiny()`` with the FastNAS
defaults (divisor 32: 2 groups) and with ``nasviz.demo.demo_config()`` (divisor 4: 6 groups), then
times

* ``group``: moving one group slider to another random choice;
* ``threshold``: moving the tolerated-drop slider to another level (the map's drops are made up
  here: the cost of the UI does not depend on them), which moves every group at once.

``--kernel`` runs the same measurement inside a real IPython kernel (started with
``jupyter_client``), where every widget update is serialised and sent over ZMQ as in JupyterLab;
without it, it runs in this process, where ipywidgets has no kernel and sends nothing.

Run: ``.venv/bin/python benchmarks/explorer_latency.py [--changes N] [--kernel]``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

CASES = ("fastnas defaults", "demo_config (divisor 4)")


def measure(changes: int = 100, seed: int = 0) -> list[dict[str, Any]]:
    """Mean/median/p95/max milliseconds per change, per case and kind of change."""
    import nasviz as nv
    from nasviz.demo import demo_config
    from nasviz.models import resnet_tiny
    from nasviz.widgets.explorer import SubnetExplorer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    x = torch.randn(2, 3, 32, 32)
    rows = []
    modes: list[Any] = ["fastnas", [("fastnas", demo_config())]]
    for case, mode in zip(CASES, modes):
        model = nv.convert(resnet_tiny(), mode=mode, dummy_input=x)
        hps = {n: hp for n, hp in nv.search_space(model).hparams.items() if hp.is_configurable}
        smap = {n: {c: rng.random() for c in hp.choices[:-1]} for n, hp in hps.items()}
        t = time.perf_counter()
        ex = SubnetExplorer(model, x, constraints={"flops": "60%"}, sensitivity_map=smap)
        build = time.perf_counter() - t
        for kind in ("group", "threshold"):
            times = []
            for _ in range(changes):
                if kind == "group":
                    slider = ex.sliders[rng.choice(list(ex.sliders))]
                    options = [v for v in slider.options if v != slider.value]
                    new: Any = rng.choice(options)
                else:
                    slider = ex.threshold
                    options = [v for _, v in slider.options if v != slider.value]
                    new = rng.choice(options)
                t = time.perf_counter()
                slider.value = new
                times.append(1000 * (time.perf_counter() - t))
                assert ex.estimate == ex.cost_model.estimate(ex.value)
            times.sort()
            rows.append(
                {
                    "case": case,
                    "groups": len(hps),
                    "change": kind,
                    "mean_ms": statistics.fmean(times),
                    "median_ms": statistics.median(times),
                    "p95_ms": times[int(0.95 * (len(times) - 1))],
                    "max_ms": times[-1],
                    "build_s": build,
                }
            )
    return rows


def _in_kernel(changes: int) -> list[dict[str, Any]]:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    code = (
        f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import explorer_latency as b\n"
        f"print('RESULT' + json.dumps(b.measure({changes})))\n"
    )
    try:
        kc.execute_interactive(code, output_hook=hook, timeout=600)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(out)
    if "RESULT" not in text:
        msg = f"the kernel did not report a result:\n{text}"
        raise RuntimeError(msg)
    result: list[dict[str, Any]] = json.loads(text.split("RESULT", 1)[1].strip().splitlines()[0])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=100, help="slider changes per case")
    parser.add_argument("--kernel", action="store_true", help="measure inside an IPython kernel")
    args = parser.parse_args()
    rows = _in_kernel(args.changes) if args.kernel else measure(args.changes)
    where = "in an IPython kernel (comm messages sent)" if args.kernel else "in-process (no comm)"
    print(f"SubnetExplorer on resnet_tiny, {args.changes} changes per row, {where}")
    print(f"{'case':<26}{'groups':>7}  {'change':<10}{'mean':>8}{'median':>8}{'p95':>8}{'max':>8}")
    for r in rows:
        print(
            f"{r['case']:<26}{r['groups']:>7}  {r['change']:<10}{r['mean_ms']:>6.1f}ms"
            f"{r['median_ms']:>6.1f}ms{r['p95_ms']:>6.1f}ms{r['max_ms']:>6.1f}ms"
        )
    print("explorer construction (CostModel.from_model + widgets): " + ", ".join(
        f"{r['case']} {r['build_s']:.1f} s" for r in rows[::2]))  # fmt: skip
    worst = max(r["mean_ms"] for r in rows)
    verdict = "OK" if worst < 100 else "SLOW"
    print(f"worst mean per change: {worst:.1f} ms (target < 100 ms): {verdict}")
    sys.exit(0 if worst < 100 else 1)


if __name__ == "__main__":
    main()
