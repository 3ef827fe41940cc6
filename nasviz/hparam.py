"""Hparams: the channel counts a subnet chooses, and how they index a tensor dimension.

An :class:`Hparam` is one searchable integer (a channel count, or a kernel size) shared by every
layer of a coupled group: a conv's ``out_channels``, the BatchNorm after it and the next conv's
``in_channels`` all hold the *same* ``Hparam`` object. Its ``choices`` are sorted and always
include the ``original`` value; ``active`` is the chosen one.

Which channels a smaller width keeps is decided by an importance *order*: without one, a width
``k`` keeps channels ``0..k-1`` (``active_slice`` is ``slice(0, k)``); after
``enforce_order(order)`` it keeps ``order[:k]`` (``active_slice`` is an index tensor).

A layer dimension that is not simply one hparam is described by a :class:`DimSource`:

* an :class:`Hparam` itself (a direct dimension);
* :class:`ConcatDim` - a ``torch.cat`` of several producers (each keeps its own hparam);
* :class:`RepeatDim` - every channel expands to ``inner`` consecutive features (flatten -> Linear).

Example::

    >>> hp = Hparam([16, 32, 64], name="layer1.conv.out_channels")
    >>> hp.active = 32
    >>> hp.active_slice
    slice(0, 32, None)
    >>> hp.active = 48
    Traceback (most recent call last):
    ...
    nasviz.errors.HparamError: layer1.conv.out_channels: 48 is not a valid choice; ...
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import torch

from nasviz.errors import HparamError

__all__ = ["ConcatDim", "DimSource", "Hparam", "Index", "RepeatDim", "index_size"]

#: A selection of positions along one tensor dimension: a slice or a 1-D int64 tensor.
Index = slice | torch.Tensor


def index_size(index: Index, full: int) -> int:
    """Number of positions an :data:`Index` selects in a dimension of size ``full``."""
    if isinstance(index, slice):
        return len(range(*index.indices(full)))
    return int(index.numel())


@runtime_checkable
class DimSource(Protocol):
    """Where the active size and active positions of one layer dimension come from."""

    @property
    def full(self) -> int:
        """Size of the dimension in the original model."""
        ...

    def active_size(self) -> int:
        """Size of the dimension in the active subnet."""
        ...

    def active_index(self) -> Index:
        """Positions kept in the active subnet (a slice, or an index tensor)."""
        ...

    def hparams(self) -> list[Hparam]:
        """The hparams this dimension depends on."""
        ...

    def version(self) -> tuple[int, ...]:
        """Changes whenever ``active_index()`` may have changed (for caching)."""
        ...


class Hparam:
    """A searchable integer shared by a group of coupled layer dimensions.

    Args:
        choices: allowed values; the original is added if missing.
        original: the value of the unpruned model (default: the largest choice).
        name: a stable, human-readable name (``"<module>.<attribute>"``).

    Example (a smaller width keeps the most important channels once an order is enforced)::

        >>> hp = Hparam([2, 4], name="conv.out_channels")
        >>> hp.importance = torch.tensor([0.1, 0.9, 0.5, 0.2])
        >>> hp.enforce_order()
        >>> hp.active = 2
        >>> hp.active_slice
        tensor([1, 2])
    """

    def __init__(self, choices: Iterable[int], original: int | None = None, name: str = "") -> None:
        vals = sorted({_as_int(c, name) for c in choices})
        if original is None:
            if not vals:
                msg = f"{name or 'hparam'}: needs at least one choice or an original"
                raise HparamError(msg)
            original = vals[-1]
        original = _as_int(original, name)
        if original < 1:
            msg = f"{name or 'hparam'}: original must be >= 1, got {original}"
            raise HparamError(msg)
        bad = [c for c in vals if c < 1 or c > original]
        if bad:
            msg = (
                f"{name or 'hparam'}: choices must lie in [1, {original}] (the original), got {bad}"
            )
            raise HparamError(msg)
        self._choices: tuple[int, ...] = tuple(sorted({*vals, original}))
        self._original = original
        self._active = original
        self.name = name
        self._importance: torch.Tensor | None = None
        self._order: torch.Tensor | None = None
        self._version = 0
        self._index_cache: tuple[int, Index] | None = None

    # -- values --------------------------------------------------------------------------------
    @property
    def choices(self) -> tuple[int, ...]:
        """The allowed values, sorted ascending; the original is always among them."""
        return self._choices

    @property
    def original(self) -> int:
        """The value of the unpruned model, which is also the largest choice."""
        return self._original

    @property
    def full(self) -> int:
        """The dimension's size in the original model: ``original`` (:class:`DimSource`)."""
        return self._original

    @property
    def min(self) -> int:
        """The smallest allowed value (the smallest subnet's choice)."""
        return self._choices[0]

    @property
    def max(self) -> int:
        """The largest allowed value: always ``original``, since no choice may exceed it."""
        return self._choices[-1]

    @property
    def is_configurable(self) -> bool:
        """Whether there is anything to choose (more than one choice)."""
        return len(self._choices) > 1

    @property
    def active(self) -> int:
        """The chosen value (setting one outside ``choices`` raises HparamError)."""
        return self._active

    @active.setter
    def active(self, value: int) -> None:
        v = _as_int(value, self.name)
        if v not in self._choices:
            msg = (
                f"{self.name or 'hparam'}: {value!r} is not a valid choice; "
                f"choose one of {list(self._choices)}"
            )
            raise HparamError(msg)
        if v != self._active:
            self._active = v
            self._bump()

    def restrict_choices(self, allowed: Iterable[int]) -> None:
        """Keep only the choices in ``allowed`` (the original always stays)."""
        keep = set(allowed) | {self._original}
        self._choices = tuple(c for c in self._choices if c in keep)
        if self._active not in self._choices:
            self._active = self._original
            self._bump()

    # -- channel order -------------------------------------------------------------------------
    @property
    def importance(self) -> torch.Tensor | None:
        """Per-channel importance (length ``original``), or ``None`` if never estimated."""
        return self._importance

    @importance.setter
    def importance(self, value: torch.Tensor | None) -> None:
        if value is not None:
            value = value.detach().flatten().to(torch.float32).cpu()
            if value.numel() != self._original:
                msg = (
                    f"{self.name or 'hparam'}: importance needs {self._original} entries "
                    f"(one per channel), got {value.numel()}"
                )
                raise HparamError(msg)
        self._importance = value

    @property
    def order(self) -> torch.Tensor | None:
        """The enforced channel order (most important first), or ``None`` (identity)."""
        return self._order

    def enforce_order(self, order: torch.Tensor | Sequence[int] | None = None) -> None:
        """Keep channels in ``order`` (most important first) when the width shrinks.

        Without an argument the order is derived from ``importance`` (descending, stable).
        ``None`` with no importance resets to the identity order.
        """
        if order is None:
            if self._importance is None:
                self._order = None
                self._bump()
                return
            order = torch.argsort(self._importance, descending=True, stable=True)
        t = torch.as_tensor(order, dtype=torch.long).flatten().cpu()
        if t.numel() != self._original or not torch.equal(
            torch.sort(t).values, torch.arange(self._original)
        ):
            msg = (
                f"{self.name or 'hparam'}: an order must be a permutation of "
                f"0..{self._original - 1}"
            )
            raise HparamError(msg)
        self._order = None if torch.equal(t, torch.arange(self._original)) else t
        self._bump()

    def reset_order(self) -> None:
        """Forget the enforced order (after parameters were physically sorted)."""
        self._order = None
        self._bump()

    # -- DimSource -----------------------------------------------------------------------------
    def active_size(self) -> int:
        """The active value: the dimension's size in the active subnet (:class:`DimSource`)."""
        return self._active

    def active_index(self) -> Index:
        """Same as :attr:`active_slice` (:class:`DimSource`)."""
        return self.active_slice

    @property
    def active_slice(self) -> Index:
        """``slice(0, active)``, or the first ``active`` entries of the enforced order."""
        cached = self._index_cache
        if cached is not None and cached[0] == self._version:
            return cached[1]
        idx: Index
        if self._order is None:
            idx = slice(0, self._active)
        else:
            idx = self._order[: self._active]
            if torch.equal(idx, torch.arange(self._active)):
                idx = slice(0, self._active)
        self._index_cache = (self._version, idx)
        return idx

    def hparams(self) -> list[Hparam]:
        """``[self]``: a direct dimension depends on this hparam only."""
        return [self]

    def version(self) -> tuple[int, ...]:
        """``(id(self), counter)``; the counter grows whenever the active value or the order
        changes.
        """
        return (id(self), self._version)

    def _bump(self) -> None:
        self._version += 1

    # -- merging -------------------------------------------------------------------------------
    def merge(self, other: Hparam) -> Hparam:
        """A new hparam for two coupled dimensions: common choices, summed importance."""
        if other.original != self.original:
            msg = (
                f"cannot couple {self.name or 'hparam'} (size {self.original}) with "
                f"{other.name or 'hparam'} (size {other.original}): coupled dimensions must have "
                "the same original size"
            )
            raise HparamError(msg)
        common = set(self.choices) & set(other.choices)
        merged = Hparam(common, original=self.original, name=self.name or other.name)
        if self._importance is not None and other._importance is not None:
            merged.importance = self._importance + other._importance
        else:
            merged.importance = (
                self._importance if self._importance is not None else other._importance
            )
        return merged

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        return (
            f"Hparam({name}active={self._active}, original={self._original}, "
            f"choices={list(self._choices)})"
        )


class ConcatDim:
    """A dimension made by concatenating several producers (``torch.cat(..., dim=1)``)."""

    def __init__(self, parts: Sequence[DimSource]) -> None:
        if not parts:
            msg = "ConcatDim needs at least one part"
            raise HparamError(msg)
        self.parts = list(parts)
        self._full = sum(p.full for p in self.parts)
        self._cache: tuple[tuple[int, ...], Index] | None = None

    @property
    def full(self) -> int:
        """The concatenated size in the original model: the sum of the parts' full sizes."""
        return self._full

    def active_size(self) -> int:
        """The sum of the parts' active sizes."""
        return sum(p.active_size() for p in self.parts)

    def active_index(self) -> Index:
        """The parts' active positions, each offset by the full sizes of the parts before it
        (``slice(0, full)`` when every part is at full size); cached per :meth:`version`.
        """
        key = self.version()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        pieces: list[torch.Tensor] = []
        offset = 0
        all_full = True
        for p in self.parts:
            idx = p.active_index()
            if not (isinstance(idx, slice) and index_size(idx, p.full) == p.full):
                all_full = False
            pieces.append(_to_tensor(idx, p.full) + offset)
            offset += p.full
        out: Index = slice(0, self._full) if all_full else torch.cat(pieces)
        self._cache = (key, out)
        return out

    def hparams(self) -> list[Hparam]:
        """Every part's hparams in part order (a hparam shared by two parts appears twice)."""
        return [h for p in self.parts for h in p.hparams()]

    def version(self) -> tuple[int, ...]:
        """The parts' versions, concatenated."""
        return tuple(v for p in self.parts for v in p.version())

    def __repr__(self) -> str:
        return f"ConcatDim({self.parts!r})"


class RepeatDim:
    """Each channel of ``source`` expands to ``inner`` consecutive features (flatten)."""

    def __init__(self, source: DimSource, inner: int) -> None:
        if inner < 1:
            msg = f"RepeatDim needs inner >= 1, got {inner}"
            raise HparamError(msg)
        self.source = source
        self.inner = inner
        self._cache: tuple[tuple[int, ...], Index] | None = None

    @property
    def full(self) -> int:
        """The size in the original model: ``source.full * inner``."""
        return self.source.full * self.inner

    def active_size(self) -> int:
        """``source.active_size() * inner``: each kept channel keeps all its ``inner`` features."""
        return self.source.active_size() * self.inner

    def active_index(self) -> Index:
        """For each kept source channel ``c``, features ``c*inner .. c*inner + inner - 1`` (a
        slice when the source keeps a prefix); cached per :meth:`version`.
        """
        key = self.version()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        idx = self.source.active_index()
        out: Index
        if isinstance(idx, slice) and idx.start in (0, None) and idx.step in (1, None):
            out = slice(0, index_size(idx, self.source.full) * self.inner)
        else:
            base = _to_tensor(idx, self.source.full)
            out = (base[:, None] * self.inner + torch.arange(self.inner)[None, :]).flatten()
        self._cache = (key, out)
        return out

    def hparams(self) -> list[Hparam]:
        """The source's hparams (``inner`` is fixed)."""
        return self.source.hparams()

    def version(self) -> tuple[int, ...]:
        """The source's version (``inner`` never changes)."""
        return self.source.version()

    def __repr__(self) -> str:
        return f"RepeatDim({self.source!r}, inner={self.inner})"


def _to_tensor(idx: Index, full: int) -> torch.Tensor:
    if isinstance(idx, slice):
        return torch.arange(full)[idx]
    return idx


def _as_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        msg = f"{name or 'hparam'}: {value!r} is not an integer"
        raise HparamError(msg)
    return int(value)  # type: ignore[call-overload,unused-ignore]
