"""The speed of ``CostModel.estimate`` on a ResNet-50-sized net, next to an exact profile.

Builds ``nasviz.models.resnet50_like()`` and makes it searchable: with ``nasviz.space.convert``
(FastNAS defaults), or, with ``--by-hand`` or when that is missing, by turning every conv and
BatchNorm into its dynamic twin with one shared hparam per bottleneck inner width
(``conv1.out = bn1 = conv2.in``, ``conv2.out = bn2 = conv3.in``; FastNAS default choices). Then
it times

* ``CostModel.from_model`` (one full-size profile plus formula checks),
* ``estimate(config)`` on random candidate configs (cold: first time each config is seen;
  warm: the same configs again),
* ``profile(model, x)`` of the same subnets (an exact forward pass under FlopCounterMode),

and checks that every estimate equals the exact profile of the active subnet.

Run: ``.venv/bin/python benchmarks/estimate_speed.py [--queries N] [--exact N] [--by-hand]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from torch import nn

from nasviz.dynamic import DynamicModule
from nasviz.dynamic.conv import DynamicConv2d
from nasviz.dynamic.norm import DynamicBatchNorm2d
from nasviz.fastnas import FastNASConfig
from nasviz.hparam import Hparam
from nasviz.models import Bottleneck, resnet50_like
from nasviz.profile import CostModel, profile


def convert_by_hand(model: nn.Module) -> dict[str, Hparam]:
    """Dynamic twins everywhere; shared hparams on the bottleneck inner widths."""
    cfg = FastNASConfig()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            DynamicConv2d.convert(m)
        elif isinstance(m, nn.BatchNorm2d):
            DynamicBatchNorm2d.convert(m)
    hparams: dict[str, Hparam] = {}
    for name, block in model.named_modules():
        if not isinstance(block, Bottleneck):
            continue
        for conv, bn, nxt in (("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3")):
            c = block.get_submodule(conv)
            assert isinstance(c, DynamicConv2d)
            width = c.out_channels
            rule = cfg.rule_for("nn.Conv2d", f"{name}.{conv}").rule
            choices = rule.choices_for(width) if rule is not None else [width]
            hp = Hparam(choices, original=width, name=f"{name}.{conv}.out_channels")
            c.set_dim("out_channels", hp)
            for sub, attr in ((bn, "num_features"), (nxt, "in_channels")):
                dyn = block.get_submodule(sub)
                assert isinstance(dyn, DynamicModule)
                dyn.set_dim(attr, hp)
            hparams[hp.name] = hp
    return hparams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--exact", type=int, default=5, help="exact profiles to time")
    parser.add_argument("--by-hand", action="store_true", help="skip nasviz.space.convert")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = random.Random(0)
    model: nn.Module = resnet50_like(num_classes=1000)
    x = torch.randn(1, 3, 224, 224)
    try:
        from nasviz.space import convert
    except ImportError:  # the tracing/search-space layer is not there yet
        convert = None  # type: ignore[assignment]
    if convert is not None and not args.by_hand:
        model = convert(model, mode="fastnas", dummy_input=x)
        how = "with nasviz.space.convert (FastNAS defaults)"
    else:
        convert_by_hand(model)
        how = "by hand (shared hparams on the bottleneck inner widths)"
    n_dyn = sum(isinstance(m, DynamicModule) for m in model.modules())

    t0 = time.perf_counter()
    cm = CostModel.from_model(model, x)
    build = time.perf_counter() - t0
    hps = {n: hp for n, hp in cm.hparams.items() if hp.is_configurable}
    configs = [{n: rng.choice(hp.choices) for n, hp in hps.items()} for _ in range(args.queries)]

    def timed(batch: list[dict[str, int]]) -> float:
        t = time.perf_counter()
        for c in batch:
            cm.estimate(c)
        return (time.perf_counter() - t) / len(batch)

    cold = timed(configs)
    warm = timed(configs)
    t0 = time.perf_counter()
    for _ in range(args.queries):
        cm.estimate()
    current = (time.perf_counter() - t0) / args.queries

    exact_times = []
    mismatches = 0
    for c in configs[: args.exact]:
        for n, v in c.items():
            hps[n].active = v  # what nv.select does
        t = time.perf_counter()
        p = profile(model, x)
        exact_times.append(time.perf_counter() - t)
        mismatches += (p.flops, p.params) != cm.estimate(c)
    for hp in hps.values():
        hp.active = hp.original

    print(f"model: resnet50_like, input {tuple(x.shape)}, converted {how}")
    print(f"  {n_dyn} dynamic modules, {len(hps)} configurable hparams")
    print(f"  {cm!r}")
    print(f"CostModel.from_model:              {build * 1e3:9.1f} ms (once)")
    print(f"estimate(config), first time seen: {cold * 1e3:9.3f} ms/query ({args.queries} configs)")
    print(f"estimate(config), again (warm):    {warm * 1e3:9.3f} ms/query")
    print(f"estimate() of the active subnet:   {current * 1e3:9.3f} ms/query")
    print(
        f"exact profile(model, x):           {statistics.mean(exact_times) * 1e3:9.1f} ms/query "
        f"({len(exact_times)} subnets; speed-up x{statistics.mean(exact_times) / warm:,.0f})"
    )
    print(f"estimate == exact profile: {len(exact_times) - mismatches}/{len(exact_times)}")


if __name__ == "__main__":
    main()
