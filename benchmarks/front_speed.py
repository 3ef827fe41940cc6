"""The time the Pareto front and a lock change take in the explorer, on ``resnet_tiny``.

Converts ``nasviz.models.resnet_tiny()`` with ``nasviz.demo.demo_config()`` (6 groups,
262,144 subnets, so the front is computed over a seeded sample), makes up a sensitivity map (the
cost of the front does not depend on the drops) and times

* ``pareto_front`` with the engine's default 50,000 candidates and with the explorer's
  ``FRONT_CANDIDATES``;
* one lock toggle in ``SubnetExplorer`` (the front recomputed with the pin, redrawn);
* one slider move (which does not recompute the front), for comparison.

Run: ``.venv/bin/python benchmarks/front_speed.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import nasviz as nv
    from nasviz.demo import demo_config
    from nasviz.fastnas import pareto_front
    from nasviz.models import resnet_tiny
    from nasviz.widgets._decide import FRONT_CANDIDATES
    from nasviz.widgets.explorer import SubnetExplorer

    torch.manual_seed(0)
    rng = random.Random(0)
    x = torch.randn(2, 3, 32, 32)
    model = nv.convert(resnet_tiny(), mode=[("fastnas", demo_config())], dummy_input=x)
    space = nv.search_space(model)
    hps = {n: hp for n, hp in space.hparams.items() if hp.is_configurable}
    smap = {n: {c: rng.random() for c in hp.choices[:-1]} for n, hp in hps.items()}
    cm = space.cost_model(x)

    def timed(fn: object, n: int) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t))
        return statistics.median(times)

    print(f"resnet_tiny, demo_config: {len(hps)} groups, {space.size()} subnets")
    for k in (50_000, FRONT_CANDIDATES):
        ms = timed(lambda k=k: pareto_front(smap, hps, cm, max_candidates=k), args.repeats)
        print(f"pareto_front over {k:>6} candidates: {ms:7.1f} ms (median)")
    ex = SubnetExplorer(model, x, constraints={"flops": "60%"}, sensitivity_map=smap)
    name = next(iter(ex.sliders))
    lock = ex.decide.locks[name]
    toggle_ms = timed(lambda: setattr(lock, "value", not lock.value), args.repeats)
    print(f"lock toggle in the explorer:        {toggle_ms:7.1f} ms (median)")
    slider = ex.sliders[name]
    moves = iter(list(slider.options) * args.repeats * 4)
    move_ms = timed(lambda: setattr(slider, "value", next(moves)), args.repeats * 4)
    print(f"slider move in the explorer:        {move_ms:7.1f} ms (median)")


if __name__ == "__main__":
    main()
