"""Scored subnets remembered by the evaluator form: each subnet is scored once per search.

Private to :mod:`.evaluator`. A :class:`ScoreMemo` maps a subnet (the tuple of its
hparams' active values) to its score and, while a byte budget allows, to the BatchNorm
statistics its calibration produced - only for the BatchNorms that calibration changed (the
others hold the full subnet's statistics). A final candidate that is also a map entry is then
not scored again, and the searcher leaves the model calibrated for the chosen subnet by copying
its statistics back instead of calibrating it once more.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import torch
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["BNState", "ScoreMemo", "load_bn_state", "snapshot_bn"]

#: BatchNorm -> its buffers (running_mean, running_var, num_batches_tracked)
BNState = dict[_BatchNorm, dict[str, torch.Tensor]]


def snapshot_bn(bns: Iterable[_BatchNorm]) -> BNState:
    """A copy of the buffers of every BatchNorm in ``bns``."""
    return {bn: {k: v.clone() for k, v in bn._buffers.items() if v is not None} for bn in bns}


def load_bn_state(state: BNState) -> None:
    """Copy ``state`` back into its BatchNorms' buffers."""
    with torch.no_grad():
        for bn, buffers in state.items():
            for k, v in buffers.items():
                bn._buffers[k].copy_(v)  # type: ignore[union-attr]


def _nbytes(state: BNState) -> int:
    return sum(v.element_size() * v.nelement() for b in state.values() for v in b.values())


class ScoreMemo:
    """Scores by subnet, with the BatchNorm statistics of each while they fit in the budget.

    Example::

        >>> memo = ScoreMemo()
        >>> memo.put((8, 16), 0.93, [model.bn], room=1 << 20)
        >>> memo.score((8, 16)), memo.statistics((8, 16)) is not None
        (0.93, True)
    """

    def __init__(self) -> None:
        self._scores: dict[Hashable, float] = {}
        self._states: dict[Hashable, BNState] = {}
        self.nbytes = 0
        self.peak = 0
        self.hits = 0

    def score(self, key: Hashable) -> float | None:
        """The remembered score of ``key`` (counted as a hit), or ``None``."""
        score = self._scores.get(key)
        if score is not None:
            self.hits += 1
        return score

    def put(self, key: Hashable, score: float, bns: Iterable[_BatchNorm], room: int) -> None:
        """Remember ``score``, and the statistics of ``bns`` if they take at most ``room`` bytes
        beyond what the memo holds already.
        """
        self._scores[key] = score
        state = snapshot_bn(bns)
        size = _nbytes(state)
        if key not in self._states and self.nbytes + size <= room:
            self._states[key] = state
            self.nbytes += size
            self.peak = max(self.peak, self.nbytes)

    def statistics(self, key: Hashable) -> BNState | None:
        """The BatchNorm statistics remembered for ``key`` (only those its calibration changed)."""
        return self._states.get(key)

    def clear_statistics(self) -> None:
        """Forget the statistics (the scores stay)."""
        self._states = {}
        self.nbytes = 0
