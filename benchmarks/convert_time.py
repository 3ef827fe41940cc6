"""Convert time of the "fastnas" mode per reference model, and for a ResNet-50-sized net at 224x224.

Each measurement converts a fresh model (``nv.convert(model, dummy_input=x)``: tracing, shape
propagation, coupling analysis, conversion, channel sorting and the self-check, which runs the
model twice more). The reference models use their registry input (batch 2, tiny images) and a
config with divisor 4 for every layer type; ``resnet50_like`` uses the default FastNAS config and a
1x3x224x224 input. The time of one plain forward is shown for scale. Target: the ResNet-50-sized
net converts in under 2 s.

A BERT-base-sized encoder (``transformers.BertModel`` from ``BertConfig``: 12 layers, hidden 768,
12 heads, FFN 3072, random weights, a 1x128 ``input_ids`` dict) and the ResNet-50-sized net are
also converted with and without a dummy_input (with one, the model is captured with
``torch.export``; without, with ``torch.fx`` only, and fx cannot trace transformers' code).
Targets: BERT-base < 10 s, ResNet-50 < 2 s. Skipped if transformers is not installed.

Usage::

    .venv/bin/python benchmarks/convert_time.py [--repeat 3] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import nasviz.space as nv
from nasviz.config import LAYER_TYPES
from nasviz.errors import MissingDummyInputWarning
from nasviz.models import REFERENCE_MODELS, resnet50_like

SMALL: dict[str, Any] = {k: {"*": {LAYER_TYPES[k].divisor_field: 4}} for k in LAYER_TYPES}


def measure(
    factory: Callable[[], tuple[nn.Module, Any]],
    config: Any,
    repeat: int,
    with_input: bool = True,
) -> tuple[float, float, int]:
    """Median convert time, median forward time and the number of hparams."""
    converts, forwards, groups = [], [], 0
    for _ in range(repeat):
        model, x = factory()
        with torch.no_grad():
            start = time.perf_counter()
            model(**x) if isinstance(x, dict) else model(x)
            forwards.append(time.perf_counter() - start)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingDummyInputWarning)
            nv.convert(model, mode=[("fastnas", config)], dummy_input=x if with_input else None)
        converts.append(time.perf_counter() - start)
        groups = len(nv.search_space(model).hparams)
    return statistics.median(converts), statistics.median(forwards), groups


def _resnet50() -> tuple[nn.Module, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = resnet50_like().eval()
    return model, torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _bert_base() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    import transformers  # optional: only this benchmark row needs it

    config = transformers.BertConfig(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.BertModel(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, 128), generator=torch.Generator().manual_seed(0))
    return model, {"input_ids": ids}


def _with_without(
    name: str, factory: Callable[[], tuple[nn.Module, Any]], target: float, repeat: int
) -> None:
    for with_input in (True, False):
        convert, forward, groups = measure(factory, {}, repeat, with_input)
        label = f"{name} {'with' if with_input else 'without'} input"
        verdict = "OK" if convert < target else f"over the {target:g} s target"
        print(f"{label:<32}{groups:>8}{convert:>13.3f}{forward:>13.4f}  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per model (median shown)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # warm up imports and kernels once, outside the measurements
    measure(REFERENCE_MODELS["resnet_tiny"], SMALL, 1)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} thread(s), median of {args.repeat} runs")
    print(f"{'model':<24}{'hparams':>8}{'convert [s]':>13}{'forward [s]':>13}")
    for name, factory in REFERENCE_MODELS.items():
        convert, forward, groups = measure(factory, SMALL, args.repeat)
        print(f"{name:<24}{groups:>8}{convert:>13.3f}{forward:>13.4f}")
    print(f"{'model':<32}{'hparams':>8}{'convert [s]':>13}{'forward [s]':>13}")
    _with_without("resnet50_like @224", _resnet50, 2.0, args.repeat)
    if importlib.util.find_spec("transformers") is not None:
        _with_without("bert-base (12x768) @128", _bert_base, 10.0, args.repeat)
    else:
        print("bert-base: skipped (pip install transformers)")


if __name__ == "__main__":
    main()
