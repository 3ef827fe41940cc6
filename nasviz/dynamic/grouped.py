"""``GroupedHparam``: a width that keeps the same number of channels in every group.

A grouped convolution (``1 < groups < in_channels``) computes each group from its own slice of
the input channels, so a subnet must keep whole, equal groups: ``k`` channels out of ``C`` in
``g`` groups means ``k / g`` channels of each block of ``C / g``. A plain
:class:`~nasviz.hparam.Hparam` keeps its first ``k`` channels (all in the first groups); this one
keeps them group by group. Public as :class:`nasviz.dynamic.GroupedHparam` (and from
:mod:`nasviz.dynamic.conv`, its former home).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from typing_extensions import override

from nasviz.errors import HparamError
from nasviz.hparam import Hparam, Index

__all__ = ["GroupedHparam"]


class GroupedHparam(Hparam):
    """An :class:`~nasviz.hparam.Hparam` that keeps the same number of channels in every group.

    The ``original`` channels form ``groups`` consecutive blocks; a width ``k`` (a multiple of
    ``groups``) keeps ``k / groups`` channels of each block, block after block, the most important
    first within a block (see ``enforce_order``). This is the source a grouped conv needs.

    Example::

        >>> hp = GroupedHparam([4, 8], groups=2)
        >>> hp.active = 4
        >>> hp.active_slice
        tensor([0, 1, 4, 5])
    """

    def __init__(
        self,
        choices: Iterable[int],
        original: int | None = None,
        name: str = "",
        *,
        groups: int,
    ) -> None:
        super().__init__(choices, original, name)
        label = name or "hparam"
        if groups < 1 or self.original % groups:
            msg = f"{label}: groups={groups} must be >= 1 and divide the original {self.original}"
            raise HparamError(msg)
        bad = [c for c in self.choices if c % groups]
        if bad:
            msg = (
                f"{label}: with groups={groups} every choice must be a multiple of {groups} (the "
                f"same number of channels per group); drop {bad}"
            )
            raise HparamError(msg)
        self.groups = groups

    @property
    @override
    def active_slice(self) -> Index:
        """The kept channels: ``active / groups`` of each group, most important first within a
        group (a ``slice`` when that is the first ``active`` channels).
        """
        cached = self._index_cache
        if cached is not None and cached[0] == self._version:
            return cached[1]
        n, kept = self.original // self.groups, self.active // self.groups
        idx: Index
        if self._order is None and kept == n:
            idx = slice(0, self.original)
        else:
            ranked = torch.arange(self.original) if self._order is None else self._order
            block = ranked // n  # stable sort by block keeps the importance order within a block
            ranked = ranked[torch.sort(block, stable=True).indices]
            idx = ranked.view(self.groups, n)[:, :kept].flatten()
            if torch.equal(idx, torch.arange(self.active)):
                idx = slice(0, self.active)
        self._index_cache = (self._version, idx)
        return idx

    def merge(self, other: Hparam) -> GroupedHparam:
        """Couple with ``other``: common choices that keep whole groups of both."""
        plain = Hparam.merge(self, other)
        groups = math.lcm(self.groups, other.groups if isinstance(other, GroupedHparam) else 1)
        if plain.original % groups:
            msg = (
                f"cannot couple {self.name or 'hparam'} with {other.name or 'hparam'}: their "
                f"groups need a multiple of {groups}, which does not divide {plain.original}"
            )
            raise HparamError(msg)
        merged = GroupedHparam(
            [c for c in plain.choices if c % groups == 0],
            original=plain.original,
            name=plain.name,
            groups=groups,
        )
        merged.importance = plain.importance
        return merged

    def __repr__(self) -> str:
        return super().__repr__()[:-1].replace("Hparam(", "GroupedHparam(", 1) + (
            f", groups={self.groups})"
        )
