"""Which teacher channels a pruned student kept: the map that makes feature distillation exact.

``convert`` physically sorts every channel group by importance, so a subnet keeps a *prefix* of
each group (``Hparam.active_slice`` is ``slice(0, k)``; a concatenation keeps a prefix of each of
its parts), and ``export`` keeps every module's qualified name. Hence, for a teacher that is the
converted model at full width (or its full-width export), the student's channel ``j`` of module
``m`` *is* the teacher's channel ``kept[m][j]`` of the same module: no learned projection.

:func:`kept_channels` builds ``{module: (channel dim, teacher channel indices)}``:

* the **student** is a converted model with a subnet selected, or its ``nv.export``; its subnet
  and plan are read from its search space or from the modelopt state the export recorded;
* a **converted teacher** (``nv.convert``; any subnet selected) is asked directly: its subnet is
  set to the student's for a moment and every module's output dimension reports its active
  channels (:meth:`~nasviz.hparam.DimSource.active_index`; concatenations included), then its
  own subnet is selected again;
* an **exported teacher** must be a full-width export of the same conversion; a module whose
  output is one group's channels keeps the prefix of that group (anything else - a concatenation
  of groups - needs the converted teacher, and the error says so);
* the **original, unconverted** model cannot be a feature teacher: its channels are in the order
  before the sort, and the permutation the sort applied is not recorded (the hparam keeps only the
  sorted importance). :func:`kept_channels` refuses it and names the fix (keep a copy of the
  converted model at full width as the teacher). Logits distillation works with it.

Example::

    >>> teacher = copy.deepcopy(converted)            # full width
    >>> nv.select(converted, {"stem.0.out_channels": 8})
    >>> kept_channels(nv.export(converted), teacher, ["stem.1"])
    {'stem.1': (1, tensor([0, 1, 2, 3, 4, 5, 6, 7]))}
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from nasviz.dynamic import DynamicModule
from nasviz.errors import NasvizError
from nasviz.hparam import index_size
from nasviz.space import get_subnet_config, search_space, select
from nasviz.state import modelopt_state

__all__ = ["Lineage", "channel_dim", "kept_channels", "lineage", "output_attr"]

#: ``{module name: (channel dim, teacher channel indices or None for all)}``
KeptMap = dict[str, tuple[int, torch.Tensor | None]]


@dataclass(frozen=True)
class GroupView:
    """One channel group of a conversion: its hparam name, full width and member dimensions
    ``(module, attr, how)``.
    """

    name: str
    original: int
    members: tuple[tuple[str, str, str], ...]


_CHANNELS_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm)

_ORIGINAL_TEACHER_FIX = (
    "the teacher carries no nasviz record: it is the original, unconverted model, whose channels "
    "nv.convert re-ordered by importance, and that order is not recorded, so nasviz cannot tell "
    "which of its channels the student kept. Use the converted model at full width as the "
    "teacher: `teacher = copy.deepcopy(model)` right after nv.convert (before pruning), or "
    "`nv.sample(teacher, 'max')` on a copy of the converted model; or pass features=None "
    "(logits only)"
)


@dataclass(frozen=True)
class Lineage:
    """What nasviz knows about a model's channels.

    ``kind``: ``"searchable"`` (converted, a subnet selected), ``"exported"`` (``nv.export`` of
    one) or ``"foreign"`` (no record: never converted). ``plan`` and ``subnet`` are those of the
    conversion (``subnet``: the selection, or the one exported).
    """

    kind: Literal["searchable", "exported", "foreign"]
    plan: tuple[GroupView, ...] | None = None
    subnet: dict[str, int] = field(default_factory=dict)


def lineage(model: nn.Module) -> Lineage:
    """The :class:`Lineage` of ``model``."""
    try:
        space = search_space(model)
    except NasvizError:
        space = None
    if space is not None:
        plan = tuple(
            GroupView(g.name, g.original, tuple((m.module, m.attr, m.how) for m in g.members))
            for g in space.groups
            if g.kind == "channels"
        )
        return Lineage("searchable", plan, get_subnet_config(model))
    # the last conversion counts (an exported model may have been converted again), and an
    # export only if it came after it
    fastnas: Any = None
    exported: dict[str, int] = {}
    for name, entry in modelopt_state(model)["modes"]:
        if name == "fastnas":
            fastnas, exported = entry, {}
        elif name == "export" and fastnas is not None:
            exported = dict(entry["metadata"].get("subnet") or {})
    if fastnas is None or "plan" not in fastnas["metadata"]:
        return Lineage("foreign")
    subnet = {**dict(fastnas["metadata"].get("subnet") or {}), **exported}
    groups = tuple(
        GroupView(g["name"], int(g["original"]), tuple(tuple(m) for m in g["members"]))
        for g in fastnas["metadata"]["plan"]["hparams"]
        if g.get("kind", "channels") == "channels"
    )
    return Lineage("exported", groups, subnet)


def _out_attrs() -> set[str]:
    todo, out = list(DynamicModule.__subclasses__()), set()
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        out |= {a for a, kind in cls.__dict__.get("dynamic_attrs", {}).items() if kind == "out"}
    return out


def output_attr(module: nn.Module) -> str | None:
    """The attribute naming ``module``'s output channels (``out_channels``, ``num_features``,
    ...), or ``None`` for a module without one.
    """
    for attr in sorted(_out_attrs()):
        if hasattr(module, attr):
            return attr
    return None


def channel_dim(module: nn.Module) -> int:
    """The channel dimension of ``module``'s output: 1 for convs and channel norms (``N, C, ...``),
    -1 otherwise (linear, layer norm: channels last).
    """
    return 1 if isinstance(module, _CHANNELS_FIRST) else -1


def _width(module: nn.Module, attr: str) -> int:
    value: Any = getattr(module, attr)
    return int(value[-1]) if isinstance(value, tuple | list) else int(value)


def _direct_outputs(plan: Sequence[GroupView]) -> dict[str, list[tuple[str, str]]]:
    """``{module: [(group name, how)]}`` for every module whose output dimension is in a group."""
    outs = _out_attrs()
    found: dict[str, list[tuple[str, str]]] = {}
    for g in plan:
        for module, attr, how in g.members:
            if attr in outs:
                found.setdefault(module, []).append((g.name, how))
    return found


def _auto(plan: Sequence[GroupView], student: nn.Module, teacher: nn.Module) -> list[str]:
    groups = _direct_outputs(plan)
    t_names = dict(teacher.named_modules())
    cands = [
        name
        for name, m in student.named_modules()
        if name in groups and name in t_names and all(how == "direct" for _, how in groups[name])
    ]
    norms = [n for n in cands if "Norm" in type(dict(student.named_modules())[n]).__name__]
    return norms or cands


def _check_names(names: Sequence[str], student: nn.Module, teacher: nn.Module) -> None:
    for role, model in (("student", student), ("teacher", teacher)):
        known = dict(model.named_modules())
        for name in names:
            if not isinstance(name, str) or name not in known:
                close = difflib.get_close_matches(str(name), list(known), n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                msg = (
                    f"features: {name!r} is not a module of the {role} "
                    f"({type(model).__name__}){hint} Use qualified names from "
                    "model.named_modules(), or features='auto'"
                )
                raise NasvizError(msg)


def _as_index(index: torch.Tensor | slice | None, full: int) -> torch.Tensor | None:
    if index is None or (index_size(index, full) == full and isinstance(index, slice)):
        return None
    if isinstance(index, slice):
        return torch.arange(full)[index]
    return index.clone()


def kept_channels(
    student: nn.Module, teacher: nn.Module, features: Sequence[str] | Literal["auto"]
) -> KeptMap:
    """``{module: (channel dim, indices of the teacher channels the student kept)}`` (see the
    module docstring); ``features="auto"`` picks every norm layer (else every layer) whose output
    channels belong to one channel group.
    """
    if isinstance(features, str) and features != "auto":
        msg = f"features={features!r}: use 'auto', a list of module names or None"
        raise NasvizError(msg)
    s, t = lineage(student), lineage(teacher)
    if s.kind == "foreign" or s.plan is None:
        msg = (
            f"features: the student ({type(student).__name__}) carries no nasviz record, so "
            "nasviz cannot tell which teacher channels it kept; pass nv.export(model) of the "
            "converted model (or the converted model with its subnet selected)"
        )
        raise NasvizError(msg)
    if t.kind == "foreign" or t.plan is None:
        msg = f"features: {_ORIGINAL_TEACHER_FIX}"
        raise NasvizError(msg)
    if [g.name for g in t.plan] != [g.name for g in s.plan]:
        msg = (
            "features: the teacher and the student come from different conversions (their "
            "channel groups differ); use as teacher the converted model the student was "
            "exported from, at full width"
        )
        raise NasvizError(msg)
    if t.kind == "exported":
        narrow = {g.name: t.subnet[g.name] for g in t.plan
                  if t.subnet.get(g.name, g.original) != g.original}  # fmt: skip
        if narrow:
            msg = (
                f"features: the teacher is an export of a subnet ({narrow}), not of the full "
                "width; export the teacher at full width (nv.sample(model, 'max') first) or pass "
                "the converted model itself"
            )
            raise NasvizError(msg)
    names = _auto(s.plan, student, teacher) if features == "auto" else list(features)
    if not names:
        msg = (
            "features='auto' found no module whose output channels are pruned in both models; "
            "pass a list of module names"
        )
        raise NasvizError(msg)
    _check_names(names, student, teacher)
    s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
    if t.kind == "searchable":
        return _from_converted(names, s_mods, t_mods, teacher, s.subnet)
    return _from_prefix(names, s_mods, t_mods, s.plan, s.subnet)


def _from_converted(
    names: list[str],
    s_mods: dict[str, nn.Module],
    t_mods: dict[str, nn.Module],
    teacher: nn.Module,
    subnet: dict[str, int],
) -> KeptMap:
    saved = get_subnet_config(teacher)
    out: KeptMap = {}
    try:
        select(teacher, subnet)
        for name in names:
            tm = t_mods[name]
            attr = output_attr(tm)
            src = tm.dim(attr) if isinstance(tm, DynamicModule) and attr else None
            index = None if src is None else _as_index(src.active_index(), src.full)
            out[name] = (channel_dim(s_mods[name]), index)
    finally:
        select(teacher, saved)
    return out


def _from_prefix(
    names: list[str],
    s_mods: dict[str, nn.Module],
    t_mods: dict[str, nn.Module],
    plan: Sequence[GroupView],
    subnet: dict[str, int],
) -> KeptMap:
    groups = _direct_outputs(plan)
    originals = {g.name: g.original for g in plan}
    out: KeptMap = {}
    for name in names:
        sm, tm = s_mods[name], t_mods[name]
        attr = output_attr(sm)
        entry = groups.get(name, [])
        if not entry or attr is None:
            out[name] = (channel_dim(sm), None)  # static output: every channel kept, in order
            continue
        (group, how), *more = entry
        width, full = _width(sm, attr), _width(tm, attr)
        k = subnet.get(group, originals[group])
        if more or how != "direct" or width != k or full != originals[group]:
            msg = (
                f"features: the output channels of {name!r} are not one channel group's prefix "
                f"(a concatenation, or a layer whose width counts several parts); pass the "
                "converted model (at full width) as the teacher so nasviz can read its kept "
                "channels, or leave this module out of features"
            )
            raise NasvizError(msg)
        out[name] = (channel_dim(sm), None if k == full else torch.arange(k))
    return out
