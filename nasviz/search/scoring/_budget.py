"""Which hparams' frontier activations the evaluator's cache keeps within ``cache_bytes``.

Private to the evaluator (:mod:`.evaluator`). :func:`estimate_bytes` sizes every frontier node from
one probe batch; :func:`choose_cached` then takes, greedily, the hparam whose frontier adds the
fewest new bytes while the budget (inputs included) holds; the others are scored from the inputs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import nn

from nasviz._utils import training_flags
from nasviz.search.scoring._evalconfig import batch_size
from nasviz.search.scoring._subgraph import SubgraphPlan, capture_module, value_bytes

__all__ = ["choose_cached", "estimate_bytes"]


def estimate_bytes(
    model: nn.Module,
    plan: SubgraphPlan,
    calib: list[Any],
    score: list[tuple[Any, Any]],
    names: list[str],
) -> dict[fx.Node, float]:
    """Bytes each frontier node of ``names`` would take over all batches (a probe of two samples
    in eval mode, scaled; the modules' train/eval flags are restored).
    """
    nodes = [n for n in plan.nodes if any(n in plan.frontier[h] for h in names)]
    probe = calib[0] if calib else score[0][0]
    if isinstance(probe, torch.Tensor) and probe.dim() > 0 and probe.shape[0] > 2:
        probe = probe[:2]  # sizes scale with the batch; an eval-mode pass treats samples alone
    with training_flags(model, mode=False), torch.no_grad():
        _, vals = capture_module(model, plan, nodes)(probe)
    samples = sum(batch_size(x) for x in calib) + sum(batch_size(x) for x, _ in score)
    scale = samples / batch_size(probe)
    return {n: value_bytes(v) * scale for n, v in zip(nodes, vals)}


def choose_cached(
    plan: SubgraphPlan, names: list[str], est: dict[fx.Node, float], used: int, budget: int
) -> tuple[list[str], dict[str, str]]:
    """The hparams to cache (fewest new bytes first, while ``used`` + their frontiers fit in
    ``budget``) and, for the others, why they are not.
    """
    chosen: list[str] = []
    have: set[fx.Node] = set()
    total = float(used)
    remaining = list(names)

    def cost(h: str) -> float:
        return sum(est[n] for n in plan.frontier[h] if n not in have and n.op != "placeholder")

    while remaining:
        best = min(remaining, key=cost)
        if total + cost(best) > budget:
            break
        total += cost(best)
        have |= set(plan.frontier[best])
        chosen.append(best)
        remaining.remove(best)
    reasons = {
        h: (
            f"its cached activations (~{cost(h) / 2**20:.1f} MiB more) do not fit in "
            f"cache_bytes={budget:,}; it is recomputed from the inputs"
        )
        for h in remaining
    }
    return chosen, reasons
