"""The search space of a converted model, and the verbs that act on it.

``convert`` makes a model searchable; ``search_space`` describes what can be chosen (groups of
coupled channels, their choices, their member layers) and what cannot, with a reason per static
layer dimension; ``sample``/``select`` choose a subnet; ``get_subnet_config`` reads the choice;
``export`` freezes it into plain torch layers.

**The self-check.** With a ``dummy_input``, ``convert`` compares the converted model's outputs
at full size with the original's (tight tolerance) and runs the smallest subnet once; if either
fails, the model is restored exactly and a :class:`~nasviz.errors.TracingError` names it. A
converted model is therefore never silently wrong.

**Channel order.** ``convert`` physically sorts every group's channels by importance (same
``Parameter`` objects, permuted values), so a width ``k`` keeps the first ``k`` channels. Create
optimizers after converting (their state would not be permuted).

**Without a dummy_input**, tracing has no tensor shapes: every op whose effect on the channels
depends on a shape (flatten -> Linear needs the spatial size, views, broadcasting with another
tensor, positional ``dim`` arguments) leaves the layers involved static, with the reason
(e.g. ``"no dummy_input for the spatial size"``), and no self-check runs. Pass one whenever you can.

Example::

    >>> import nasviz as nv
    >>> model = nv.convert(model, mode="fastnas", dummy_input=x)
    >>> space = nv.search_space(model)
    >>> space.size() > 1, list(space.hparams)[:1]
    (True, ['conv1.out_channels'])
    >>> nv.select(model, {"conv1.out_channels": 8})
    >>> small = nv.export(model)          # a plain copy; ``model`` stays searchable
"""

from __future__ import annotations

import copy
import difflib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import pandas as pd
from torch import nn

from nasviz.cost import CostModel
from nasviz.dynamic import DynamicModule
from nasviz.errors import HparamError, NasvizError
from nasviz.hparam import Hparam
from nasviz.patch import PatchManager
from nasviz.state import ModeLike, apply_mode
from nasviz.tracing import Plan

__all__ = [
    "SPACE_ATTR",
    "STRATEGIES",
    "Group",
    "Member",
    "SearchSpace",
    "SpaceRecord",
    "attach_record",
    "convert",
    "export",
    "get_record",
    "get_subnet_config",
    "sample",
    "search_space",
    "select",
]

#: the sampling strategies of :func:`sample`
STRATEGIES = ("random", "min", "max", "centroid")
#: the attribute of a converted model that holds its :class:`SpaceRecord`
SPACE_ATTR = "_nasviz_space"


@dataclass
class SpaceRecord:
    """The search space attached to a converted model: its plan and its live hparams.

    A mode that makes a model searchable (``"fastnas"``) attaches one with :func:`attach_record`;
    the verbs of this module, the ``"export"`` mode and the searchers read it with
    :func:`get_record`, so none of them depends on the algorithm that built it.
    """

    plan: Plan
    hparams: dict[str, Hparam]


def get_record(model: nn.Module) -> SpaceRecord | None:
    """The :class:`SpaceRecord` attached to ``model`` (``None`` if it has no search space)."""
    record: SpaceRecord | None = model.__dict__.get(SPACE_ATTR)
    return record


def attach_record(model: nn.Module, plan: Plan, hparams: dict[str, Hparam]) -> SpaceRecord:
    """Attach the search space ``(plan, hparams)`` to ``model``; returns the record."""
    record = SpaceRecord(plan, hparams)
    model.__dict__[SPACE_ATTR] = record
    return record


class Member(NamedTuple):
    """A layer dimension driven by a group's hparam (``how``: direct, concat, repeat, kernel)."""

    module: str
    attr: str
    how: str


class Group(NamedTuple):
    """One configurable group: its hparam's name, choices, active value and member layers."""

    name: str
    kind: str
    original: int
    choices: tuple[int, ...]
    active: int
    members: tuple[Member, ...]


class SearchSpace:
    """What a converted model lets you choose, and what stays static (with reasons).

    * ``hparams``: ``{name: Hparam}`` of the configurable groups, in topological order;
    * ``groups``: the same groups with their member layers, choices and active value;
    * ``table()``: the groups as a DataFrame; ``static`` / ``static_table()``: one row per
      static layer dimension (module, type, attr, size, reason);
    * ``size()``: the number of subnets (the product of the choice counts).

    Example::

        >>> space = search_space(model)
        >>> space.static_table().loc[0, "reason"]
        'its input comes from the model input'
    """

    def __init__(self, model: nn.Module, record: SpaceRecord) -> None:
        self._model = model
        self._record = record

    @property
    def hparams(self) -> dict[str, Hparam]:
        """``{name: Hparam}`` of the configurable groups, in topological order (a new dict of the
        model's live hparams: setting ``active`` selects a subnet).
        """
        return dict(self._record.hparams)

    @property
    def groups(self) -> list[Group]:
        """One :class:`Group` per configurable hparam, in the plan's order: its choices, active
        value and member layers (a snapshot).
        """
        hps = self._record.hparams
        return [
            Group(
                g.name,
                g.kind,
                g.original,
                hps[g.name].choices,
                hps[g.name].active,
                tuple(Member(*m) for m in g.members),
            )
            for g in self._record.plan.hparams
        ]

    @property
    def notes(self) -> list[str]:
        """Tracing notes (e.g. modules fx could not trace, handled through their children)."""
        return list(self._record.plan.notes)

    def size(self) -> int:
        """Number of subnets: the product of every hparam's number of choices."""
        return math.prod(len(hp.choices) for hp in self._record.hparams.values())

    def table(self) -> pd.DataFrame:
        """One row per hparam: name, kind, original, active, choices, members and ``per_unit``:
        how many channels of its producer one unit stands for (1, except for a producer whose
        width is several coupled parts: the halves before a channel shuffle, the groups of a
        grouped conv, attention heads - there the hparam counts the channels of one part).
        """
        rows = [
            {
                "name": g.name,
                "kind": g.kind,
                "original": g.original,
                "active": g.active,
                "choices": list(g.choices),
                "n_choices": len(g.choices),
                "members": [f"{m.module}.{m.attr}" + ("" if m.how == "direct" else f" ({m.how})")
                            for m in g.members],
                "per_unit": self._per_unit(g),
            }
            for g in self.groups
        ]  # fmt: skip
        cols = ["name", "kind", "original", "active", "choices", "n_choices", "members"]
        return cast(pd.DataFrame, pd.DataFrame(rows, columns=[*cols, "per_unit"]))

    def _per_unit(self, group: Group) -> int:
        module, _, attr = group.name.split("#")[0].rpartition(".")
        try:
            layer = self._model.get_submodule(module)
        except AttributeError:
            return 1
        if not isinstance(layer, DynamicModule) or attr not in layer.dynamic_attrs:
            return 1
        return max(1, layer.original_size(attr) // group.original)

    def static_table(self) -> pd.DataFrame:
        """One row per static layer dimension: module, type, attr, size, reason."""
        cols = ["module", "type", "attr", "size", "reason"]
        return cast(
            pd.DataFrame, pd.DataFrame([dict(r) for r in self._record.plan.static], columns=cols)
        )

    def select(self, config: Mapping[str, int]) -> None:
        """Choose a subnet of this space's model (see :func:`select`)."""
        select(self._model, config)

    def cost_model(self, dummy_input: Any) -> CostModel:
        """A :class:`~nasviz.cost.CostModel` of this space's model (profiled once at full size)."""
        return CostModel.from_model(self._model, dummy_input)

    @property
    def static(self) -> pd.DataFrame:
        """The static layer dimensions with their reasons (same as :meth:`static_table`)."""
        return self.static_table()

    def __repr__(self) -> str:
        return (
            f"SearchSpace({len(self._record.hparams)} hparams, {self.size():,} subnets, "
            f"{len(self._record.plan.static)} static layer dims)"
        )


def _record(model: nn.Module) -> SpaceRecord:
    if not isinstance(model, nn.Module):
        msg = f"expected an nn.Module, got {type(model).__name__}"
        raise NasvizError(msg)
    record = get_record(model)
    if record is None:
        msg = (
            f"this {type(model).__name__} has no search space: convert it first with "
            "nv.convert(model, mode='fastnas', dummy_input=x) (an exported model has none left)"
        )
        raise NasvizError(msg)
    return record


def convert(model: nn.Module, mode: ModeLike = "fastnas", dummy_input: Any = None) -> nn.Module:
    """Make ``model`` searchable, in place; returns it.

    ``mode`` is ``"fastnas"`` or a list such as ``[("fastnas", FastNASConfig(...) | dict)]``.
    ``dummy_input`` (a tensor, a tuple of positional args, or a dict of kwargs) gives tracing the
    tensor shapes and enables the self-check (see the module docstring). Raises
    :class:`~nasviz.errors.TracingError` (model left unchanged) if the conversion cannot be made
    safely.
    """
    kwargs = {} if dummy_input is None else {"dummy_input": dummy_input}
    return apply_mode(model, mode, mode_kwargs=kwargs)


def search_space(model: nn.Module) -> SearchSpace:
    """The :class:`SearchSpace` of a converted model."""
    return SearchSpace(model, _record(model))


def get_subnet_config(model: nn.Module) -> dict[str, int]:
    """``{hparam name: active value}`` of the current subnet."""
    return {name: hp.active for name, hp in _record(model).hparams.items()}


def _reset_before_sample(model: nn.Module) -> None:
    if PatchManager.is_patched(model):
        PatchManager.get_manager(model).reset_before_sample()


def select(model: nn.Module, config: Mapping[str, int]) -> None:
    """Choose a subnet: ``{hparam name: value}``; names not given keep their value.

    Every name and value is checked before anything changes; an unknown name or a value that is
    not a choice raises :class:`~nasviz.errors.HparamError` listing the valid ones.
    """
    hps = _record(model).hparams
    if not isinstance(config, Mapping):
        msg = (
            f"select needs a dict {{hparam name: value}}, got {type(config).__name__}; e.g. "
            f"{ {n: hp.max for n, hp in list(hps.items())[:1]} }"
        )
        raise HparamError(msg)
    for name, value in config.items():
        if name not in hps:
            close = difflib.get_close_matches(str(name), list(hps), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            msg = f"unknown hparam {name!r}.{hint} Valid names: {', '.join(hps) or 'none'}"
            raise HparamError(msg)
        hp = hps[name]
        if isinstance(value, bool) or not isinstance(value, int) or value not in hp.choices:
            msg = f"{name}: {value!r} is not a valid choice; choose one of {list(hp.choices)}"
            raise HparamError(msg)
    _reset_before_sample(model)
    for name, value in config.items():
        hps[name].active = value


def _pick(hp: Hparam, strategy: str, rng: random.Random) -> int:
    if strategy == "min":
        return hp.min
    if strategy == "max":
        return hp.max
    if strategy == "centroid":
        return hp.choices[len(hp.choices) // 2]
    return rng.choice(hp.choices)


def sample(model: nn.Module, strategy: str = "random", seed: int | None = None) -> dict[str, int]:
    """Select a subnet by ``strategy`` and return its config.

    * ``"random"``: each hparam uniformly among its choices (``seed`` makes it reproducible);
    * ``"min"`` / ``"max"``: the smallest choice / the original width of every hparam;
    * ``"centroid"``: the middle choice, ``choices[len(choices) // 2]`` (the upper median).
    """
    if strategy not in STRATEGIES:
        msg = f"unknown sampling strategy {strategy!r}; use one of {', '.join(STRATEGIES)}"
        raise NasvizError(msg)
    rng = random.Random(seed)
    config = {n: _pick(hp, strategy, rng) for n, hp in _record(model).hparams.items()}
    select(model, config)
    return config


def export(model: nn.Module, *, in_place: bool = False) -> nn.Module:
    """The active subnet as a plain model (no dynamic layers, same outputs as the subnet).

    By default ``model`` is deep-copied first and stays searchable; ``in_place=True`` exports
    ``model`` itself (as ``mtn.export`` does). The result records the ``"export"`` mode, so
    ``save``/``restore`` round-trip it.
    """
    _record(model)
    target = model if in_place else copy.deepcopy(model)
    return apply_mode(target, "export")
