"""Tying one role across blocks: one hparam for every block's FFN width, one for every
block's head count.

The *role* of an hparam is its name with every block index replaced by ``*``:
``bert.encoder.layer.3.intermediate.dense.out_features`` has the role
``bert.encoder.layer.*.intermediate.dense.out_features``. With ``tie_roles=True`` in a
:class:`~nasviz.fastnas.FastNASConfig`, the groups of one role become one hparam named by the
role, so every block keeps the same width: the result a Hugging Face config (one
``intermediate_size``, one ``num_attention_heads``) can describe.

Channel order: each block's channels are sorted by that block's own importance *before* the
groups are tied (:func:`tie_plan` runs after the sort), so "keep the first k" keeps each
block's k most important channels; blocks need not agree on an order because no tensor is
shared between them. Groups of one role with different full widths (a model that is already
non-uniform) or no common choice stay untied, with a note in the plan.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from nasviz.dynamic import DynamicModule
from nasviz.dynamic.params import follow_attrs, slice_params
from nasviz.hparam import DimSource, Hparam
from nasviz.tracing import Plan
from nasviz.tracing.plan import GroupInfo, apply_layout

__all__ = ["rebind", "role_of", "tie_plan"]

_INDEX = re.compile(r"(?<=\.)\d+(?=\.)")


def role_of(name: str) -> str:
    """``name`` with every numeric path component (a block index) replaced by ``*``."""
    return _INDEX.sub("*", name)


def tie_plan(plan: Plan) -> dict[str, str]:
    """Merge, in place, the groups of ``plan`` that share a role; returns old name -> new name."""
    by_role: dict[str, list[GroupInfo]] = {}
    for g in plan.hparams:
        by_role.setdefault(role_of(g.name), []).append(g)
    renamed: dict[str, str] = {}
    merged: dict[str, GroupInfo] = {}
    for role, groups in by_role.items():
        if len(groups) < 2 or role in {g.name for g in groups}:
            continue
        shape = {(g.original, g.kind, g.block) for g in groups}
        choices = set.intersection(*(set(g.choices) for g in groups))
        if len(shape) > 1 or len(choices) < 2:
            why = "different full widths" if len(shape) > 1 else "no common choices"
            plan.notes.append(f"tie_roles: {role} left untied ({why})")
            continue
        g0 = groups[0]
        members = [m for g in groups for m in g.members]
        merged[role] = GroupInfo(role, g0.original, sorted(choices), members, g0.block, g0.kind)
        renamed.update({g.name: role for g in groups})
    if not renamed:
        return renamed
    out: list[GroupInfo] = []
    for g in plan.hparams:
        new = renamed.get(g.name)
        if new is None:
            out.append(g)
        elif new in merged:
            out.append(merged.pop(new))
    plan.hparams = out
    plan.layers = {
        k: {a: _rename(j, renamed) for a, j in d.items()} for k, d in plan.layers.items()
    }
    plan.params = {
        k: {**v, "layout": _rename(v["layout"], renamed)} for k, v in plan.params.items()
    }
    plan.attrs = {k: {**v, "layout": _rename(v["layout"], renamed)} for k, v in plan.attrs.items()}
    return renamed


def _rename(j: dict[str, Any], renamed: dict[str, str]) -> dict[str, Any]:
    if "hp" in j:
        return {"hp": renamed.get(j["hp"], j["hp"])}
    if "cat" in j:
        return {"cat": [_rename(p, renamed) for p in j["cat"]]}
    if "rep" in j:
        return {"rep": [_rename(j["rep"][0], renamed), j["rep"][1]]}
    return j


def rebind(model: nn.Module, plan: Plan, old: dict[str, Hparam]) -> dict[str, Hparam]:
    """Back the already dynamic layers of ``model`` by the hparams of the (tied) ``plan``; a
    tied hparam's importance is the sum over its blocks' sorted importances.
    """
    hps = {g.name: Hparam(g.choices, g.original, g.name) for g in plan.hparams}
    for name, hp in hps.items():
        parts = [
            imp
            for n, o in old.items()
            if role_of(n) == name and n != name and (imp := o.importance) is not None
        ]
        if name in old:
            hp.importance = old[name].importance
        elif parts and all(p.shape == parts[0].shape for p in parts):
            hp.importance = sum(parts[1:], parts[0])
    for lname, dims in plan.layers.items():
        layer = model.get_submodule(lname)
        if isinstance(layer, DynamicModule):
            for attr, j in dims.items():
                layer.set_dim(attr, apply_layout(j, hps))
    by_owner: dict[str, dict[str, tuple[int, DimSource]]] = {}
    for qual, spec in plan.params.items():
        owner, _, attr = qual.rpartition(".")
        by_owner.setdefault(owner, {})[attr] = (int(spec["dim"]), apply_layout(spec["layout"], hps))
    for owner, dims_ in by_owner.items():
        slice_params(model.get_submodule(owner), dims_)
    followers: dict[str, dict[str, DimSource]] = {}
    for qual, spec in plan.attrs.items():
        owner, _, attr = qual.rpartition(".")
        followers.setdefault(owner, {})[attr] = apply_layout(spec["layout"], hps)
    for owner, attrs in followers.items():
        follow_attrs(model.get_submodule(owner), attrs)
    return hps
