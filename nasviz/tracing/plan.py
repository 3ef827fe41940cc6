"""The search-space plan: which layers become dynamic, their hparams, and why the rest is static.

The module is one piece (over the house ~400 lines): :func:`make_plan` writes the plan's JSON
layouts and :func:`apply_plan` reads them back on restore; writer and reader of each field are kept
side by side so that they cannot drift apart.

:func:`make_plan` turns an :class:`~nasviz.tracing.analyze.Analysis` and a rule config into a
:class:`Plan`, pure data that round-trips through the modelopt state:

1. layers switched off by the config (``None`` rules), layers sharing a parameter with another
   module, and layers tracing could not follow stay static, and so does every group they belong to;
2. the remaining layers are converted to their dynamic twins (in place) so they can say which
   widths their rule allows (``choices_for``); a group's choices are the intersection over its
   members, and a group with nothing but its original width is static ("no common choices");
3. each configurable group gets an hparam named ``<module>.<attribute>`` after its first producer
   in topological order; every layer dimension is written as a layout of hparams
   (``{"hp": name}``, ``{"cat": [...]}``, ``{"rep": [src, inner]}``, ``{"fixed": n}``);
4. every static layer dimension gets a row with its reason;
5. channel parameters (a layer scale, a class token) coupled with a configurable group are
   sliced along their channel dimension (:func:`~nasviz.dynamic.params.slice_params`).

:func:`apply_plan` rebuilds the hparams and the dynamic layers from a plan alone (this is how a
restore rebuilds the exact search space without tracing).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from nasviz._utils import parameter_users
from nasviz.config import LayerConfig, ModeloptBaseRuleConfig
from nasviz.dynamic import DynamicModule, dynamic_class_for
from nasviz.dynamic.fastpath import block_fastpaths
from nasviz.dynamic.params import follow_attrs, slice_params
from nasviz.errors import TracingError
from nasviz.hparam import ConcatDim, DimSource, Hparam, RepeatDim
from nasviz.tracing.analyze import Analysis, ChannelParam, LayerUse
from nasviz.tracing.groups import Cat, Coupling, Expr, Sym, expr_size, expr_syms
from nasviz.tracing.rules import layer_spec

__all__ = [
    "NO_INPUT",
    "GroupInfo",
    "Plan",
    "apply_layout",
    "apply_plan",
    "make_plan",
    "static_for_lack_of_input",
]

#: the words every reason caused only by a missing dummy_input contains
NO_INPUT = "no dummy_input"


@dataclass
class GroupInfo:
    """One configurable hparam: its choices and the layer dimensions it drives.

    ``members`` are ``(module, attribute, how)`` with ``how`` one of ``"direct"`` (the dimension
    is the hparam), ``"concat"`` (part of a concatenation), ``"repeat"`` (flatten -> Linear),
    ``"kernel"``, or ``"param"`` (a channel parameter ``attribute`` of the ordinary ``module``).
    ``block`` is the number of channels kept or dropped together (GroupNorm).
    """

    name: str
    original: int
    choices: list[int]
    members: list[tuple[str, str, str]]
    block: int = 1
    kind: str = "channels"


@dataclass
class Plan:
    """Everything needed to rebuild a search space (see the module docstring)."""

    hparams: list[GroupInfo] = field(default_factory=list)
    #: converted layer -> {attribute: layout json}
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: one row per static layer dimension: module, type, attr, size, reason
    static: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: channel parameter (qualified name) -> {"dim": int, "layout": layout json}
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: int attribute of an ordinary module (qualified name) -> {"layout": layout json}: it reads
    #: as the layout's active size (``follow_attrs``)
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data (lists, dicts, strings, ints) for the model's saved state."""
        d = asdict(self)
        d["hparams"] = [{**g, "members": [list(m) for m in g["members"]]} for g in d["hparams"]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        """The plan from :meth:`to_dict` data; :class:`~nasviz.errors.TracingError` if it is
        malformed (written by an incompatible nasviz version).
        """
        try:
            groups = [
                GroupInfo(**{**g, "members": [tuple(m) for m in g["members"]]})
                for g in d["hparams"]
            ]
            return cls(
                groups,
                dict(d["layers"]),
                list(d["static"]),
                list(d.get("notes", [])),
                {k: dict(v) for k, v in d.get("params", {}).items()},
                {k: dict(v) for k, v in d.get("attrs", {}).items()},
            )
        except (KeyError, TypeError) as e:
            msg = (
                f"the stored search-space plan is malformed ({e}); it was written by an "
                "incompatible nasviz version"
            )
            raise TracingError(msg) from e


def _rule(config: ModeloptBaseRuleConfig, layer_type: str, name: str) -> tuple[Any, str]:
    if layer_type not in config.layer_types():
        return None, f"{layer_type} has no rule in {type(config).__name__}"
    match = config.rule_for(layer_type, name)
    if match.rule is not None:
        return match.rule, ""
    if match.pattern is not None:
        return None, f"switched off by rule '{match.pattern}'"
    if config.rules(layer_type) is None:
        return None, f"switched off: the {layer_type} rule is None"
    return None, f"no {layer_type} rule matches '{name}'"


def _shared(users: dict[int, list[tuple[str, str]]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pairs in users.values():
        if len({mn for mn, _ in pairs}) > 1:
            for mn, pn in pairs:
                other = next(o for o, _ in pairs if o != mn)
                out.setdefault(mn, f"shares its {pn} with '{other}' (tied weights)")
    return out


def _unused_embedding(
    analysis: Analysis, model: nn.Module, mname: str, pname: str
) -> ChannelParam | None:
    """An embedding forward never calls (BART's ``shared``, tied to the embeddings it calls)
    as a channel parameter of its own, so its copy of the tied weight is sliced too.
    """
    m = model.get_submodule(mname)
    if not isinstance(m, nn.Embedding) or pname != "weight" or m.weight.dim() != 2:
        return None
    if any(n.startswith(f"{mname}.") or n == mname for n in analysis.layers):
        return None
    qual = f"{mname}.{pname}"
    elem = analysis.coupling.new(int(m.weight.shape[1]), (mname, "embedding_dim"), f"'{mname}'")
    analysis.params[qual] = cp = ChannelParam(qual, mname, pname, 1, elem)
    return cp


def _tie(
    users: dict[int, list[tuple[str, str]]], analysis: Analysis, name: str, model: nn.Module
) -> bool:
    """Whether a Linear whose weight is tied to an embedding's (a language model's head) can be
    pruned with it: its inputs then follow the embedding width (coupled here) and its outputs
    (the embedding's rows, never pruned) stay static.
    """
    use = analysis.layers[name]
    m = use.module
    if not isinstance(m, nn.Linear) or "in_features" not in use.dims:
        return False
    partners = [(mname, pname) for mname, pname in users[id(m.weight)] if mname != name]
    if any(p is not None and p is m.weight for n, p in m.named_parameters() if n != "weight"):
        return False
    params = [
        analysis.params.get(f"{mname}.{pname}") or _unused_embedding(analysis, model, mname, pname)
        for mname, pname in partners
    ]
    if not partners or any(cp is None or cp.dim != 1 for cp in params):
        return False
    c = analysis.coupling
    for cp in params:
        assert cp is not None
        c.unify(use.dims["in_features"], Sym(cp.elem, c.elements[cp.elem].size), "tied weights")
    out = use.dims.get("out_features")
    if out is not None:
        c.fix_expr(out, f"its weight is tied to '{partners[0][0]}', whose rows are not pruned")
    return True


def make_plan(model: nn.Module, analysis: Analysis, config: ModeloptBaseRuleConfig) -> Plan:
    """Decide the search space (see the module docstring); converts layers in place."""
    c = analysis.coupling
    modules = dict(model.named_modules())
    reasons = dict(analysis.layer_reasons)
    rules: dict[str, LayerConfig] = {}
    users = parameter_users(model)
    shared = _shared(users)
    for name in list(shared):
        if name in analysis.layers and _tie(users, analysis, name, model):
            del shared[name]
    for name, use in analysis.layers.items():
        twin = dynamic_class_for(use.module)
        assert twin is not None
        rule, why = _rule(config, twin.layer_type, name)
        if name in reasons:  # already static (and its groups fixed) by the analysis
            continue
        if rule is None or name in shared:
            reasons[name] = why or shared[name]
            for expr in use.dims.values():
                c.fix_expr(expr, f"coupled with '{name}' ({reasons[name]})")
        else:
            rules[name] = rule
    dyn: dict[str, DynamicModule] = {}
    for name in rules:
        twin = dynamic_class_for(modules[name])
        assert twin is not None
        dyn[name] = twin.convert(modules[name])
    roots = _choose(analysis, c, dyn, rules)
    names = _names(c, list(roots))
    plan = Plan(notes=list(analysis.notes))
    for r in sorted(roots):
        choices, block = roots[r]
        plan.hparams.append(GroupInfo(names[r], c.elements[r].size, choices, [], block))
    by_name = {g.name: g for g in plan.hparams}
    for name, m in dyn.items():
        use = analysis.layers[name]
        dims = _layer_json(use, c, names, by_name)
        if "kernel_size" in m.dynamic_attrs:
            ks = m.choices_for("kernel_size", rules[name])
            if ks is not None and len(ks) > 1:
                hp_name = f"{name}.kernel_size"
                full = m.original_size("kernel_size")
                plan.hparams.append(
                    GroupInfo(hp_name, full, ks, [(name, "kernel_size", "kernel")], 1, "kernel")
                )
                dims["kernel_size"] = {"hp": hp_name}
        if dims:
            plan.layers[name] = dims
        else:
            m.unconvert()
    for qual, cp in analysis.params.items():
        sym = Sym(cp.elem, c.elements[cp.elem].size)
        layout = _to_json(sym, c, names)
        if "fixed" in layout:
            continue
        plan.params[qual] = {"dim": cp.dim, "layout": layout}
        for s in expr_syms(c.resolve(sym)):
            group = by_name.get(names.get(c.find(s.elem), ""))
            if group is not None and (cp.owner, cp.attr, "param") not in group.members:
                group.members.append((cp.owner, cp.attr, "param"))
    for qual, au in analysis.attrs.items():
        layout = _to_json(au.expr, c, names)
        if "fixed" not in layout:
            plan.attrs[qual] = {"layout": layout}
    plan.static = _static_rows(model, analysis, c, plan, reasons)
    return plan


def _single_root(c: Coupling, expr: Expr) -> tuple[int, int] | None:
    """``(root, multiplicity)`` if the resolved layout is made of one group only (a plain
    width, a repeat, copies of a split group), else ``None``.
    """
    roots = {s.elem for s in expr_syms(expr)}
    if len(roots) != 1:
        return None
    root = roots.pop()
    return root, expr_size(expr) // c.elements[root].size


def _choose(
    analysis: Analysis, c: Coupling, dyn: dict[str, DynamicModule], rules: dict[str, LayerConfig]
) -> dict[int, tuple[list[int], int]]:
    """Choices and channel block of every configurable group, by root element.

    A layer dimension made of one group only (``mult`` copies or repeats of it) constrains the
    group's widths to its rule's widths divided by ``mult``; a dimension that mixes groups (a
    concatenation) constrains none of them.
    """
    members: dict[int, list[tuple[str, str, int]]] = {}
    for name in dyn:
        for attr, raw in analysis.layers[name].dims.items():
            expr = c.resolve(raw)
            single = _single_root(c, expr)
            if single is not None and not c.is_fixed(single[0]):
                members.setdefault(single[0], []).append((name, attr, single[1]))
            elif single is None:
                for s in expr_syms(expr):
                    if not c.is_fixed(s.elem):
                        members.setdefault(s.elem, []).append((name, attr, 0))
    out: dict[int, tuple[list[int], int]] = {}
    for root, mem in members.items():
        size = c.elements[root].size
        allowed: set[int] | None = None
        shown: list[str] = []
        block = 1
        for name, attr, mult in mem:
            m = dyn[name]
            if mult == 0:  # part of a mix of groups: no constraint
                continue
            ch = m.choices_for(attr, rules[name])
            if mult > 1:  # this dimension is ``mult`` times the group's width
                ch = None if ch is None else [v // mult for v in ch if v % mult == 0]
                if m.channel_block(attr) > 1:
                    c.fix(root, f"'{name}' normalizes channel groups of a split or repeated width")
            else:
                block = math.lcm(block, m.channel_block(attr))
            if ch is None:
                continue
            shown.append(f"{name}.{attr}: {ch}")
            allowed = set(ch) if allowed is None else allowed & set(ch)
        if c.is_fixed(root):
            continue
        allowed = (allowed or {size}) | {size}
        allowed = {a for a in allowed if a % block == 0 or a == size}
        if len(allowed) < 2:
            detail = "; ".join(shown[:3]) + (" ..." if len(shown) > 3 else "")
            c.fix(root, f"no common choices ({detail})")
            continue
        out[root] = (sorted(allowed), block)
    return out


def _names(c: Coupling, roots: list[int]) -> dict[int, str]:
    """``<module>.<attribute>`` of each group's first producer; the parts of one split producer
    are told apart by ``#1``, ``#2`` ... after the first.
    """
    first: dict[int, int] = {}
    wanted = set(roots)
    for el in c.elements:
        root = c.find(el.index)
        if root in wanted and el.producer is not None and root not in first:
            first[root] = el.index
    names: dict[int, str] = {}
    used: dict[str, int] = {}
    for r in sorted(roots, key=lambda r: first.get(r, r)):
        base = "{}.{}".format(*(c.elements[first.get(r, r)].producer or ("?", "?")))
        k = used.get(base, 0)
        used[base] = k + 1
        names[r] = base if k == 0 else f"{base}#{k}"
    return names


def _to_json(e: Expr, c: Coupling, names: dict[int, str]) -> dict[str, Any]:
    e = c.resolve(e)
    if isinstance(e, Sym):
        root = c.find(e.elem)
        return {"hp": names[root]} if root in names else {"fixed": e.size}
    if isinstance(e, Cat):
        parts = [_to_json(p, c, names) for p in e.parts]
        if all("fixed" in p for p in parts):
            return {"fixed": expr_size(e)}
        return {"cat": parts}
    src = _to_json(e.src, c, names)
    return {"fixed": expr_size(e)} if "fixed" in src else {"rep": [src, e.inner]}


def _layer_json(
    use: LayerUse, c: Coupling, names: dict[int, str], by_name: dict[str, GroupInfo]
) -> dict[str, Any]:
    dims: dict[str, Any] = {}
    depthwise = use.spec.kind == "conv" and 1 < use.spec.groups == int(
        getattr(use.module, use.spec.in_attr)
    )
    for attr, expr in use.dims.items():
        j = _to_json(expr, c, names)
        if "fixed" in j:
            continue
        how = "direct" if "hp" in j else "concat" if "cat" in j else "repeat"
        for s in expr_syms(c.resolve(expr)):
            root = c.find(s.elem)
            if root in names:
                member = (use.name, attr, how)
                if member not in by_name[names[root]].members:
                    by_name[names[root]].members.append(member)
        if not (depthwise and attr == use.spec.out_attr):  # a depthwise out follows its in
            dims[attr] = j
    return dims


def _static_rows(
    model: nn.Module, analysis: Analysis, c: Coupling, plan: Plan, reasons: dict[str, str]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    layers = set(analysis.layers)
    for name, m in model.named_modules():
        spec = layer_spec(m)
        twin = dynamic_class_for(m)
        if spec is None or twin is None or _inside(name, layers):
            continue  # (a child of a prunable layer, e.g. attention's out_proj, is its part)
        use = analysis.layers.get(name)
        for attr in dict.fromkeys((spec.in_attr, spec.out_attr)):
            configurable = any(attr == a for _, a, _ in _members_of(plan, name))
            if configurable:
                continue
            size = _size(m, attr)
            if name in reasons:
                why = reasons[name]
            elif use is not None and attr in use.dims:
                found = [r for s in expr_syms(c.resolve(use.dims[attr])) for r in c.reasons(s.elem)]
                why = "; ".join(dict.fromkeys(found)) or "no configurable channels"
            elif use is not None and attr in use.static:
                why = use.static[attr]
            else:
                why = "not reached by tracing"
            rows.append(
                {"module": name, "type": twin.layer_type, "attr": attr, "size": size, "reason": why}
            )
    return rows


def static_for_lack_of_input(plan: Plan) -> list[str]:
    """``module.attr`` of every static layer dimension whose reason is only a missing
    dummy_input (tensor shapes or ranks tracing did not have).
    """
    return [f"{r['module']}.{r['attr']}" for r in plan.static if NO_INPUT in str(r["reason"])]


def _inside(name: str, layers: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:k]) in layers for k in range(1, len(parts)))


def _members_of(plan: Plan, module: str) -> list[tuple[str, str, str]]:
    return [m for g in plan.hparams for m in g.members if m[0] == module]


def _size(m: nn.Module, attr: str) -> int:
    if isinstance(m, DynamicModule):
        return m.original_size(attr)
    value = getattr(m, attr)
    return int(value[-1]) if isinstance(value, (tuple, list)) else int(value)


# -- applying a plan -----------------------------------------------------------------------------


def _source(j: dict[str, Any], hps: dict[str, Hparam]) -> DimSource:
    if "hp" in j:
        return hps[j["hp"]]
    if "fixed" in j:
        return Hparam([int(j["fixed"])])
    if "cat" in j:
        return ConcatDim([_source(p, hps) for p in j["cat"]])
    src, inner = j["rep"]
    return RepeatDim(_source(src, hps), int(inner))


def apply_layout(j: dict[str, Any], hps: dict[str, Hparam]) -> DimSource:
    """The dimension source a layout json describes, over the hparams ``hps`` (by name)."""
    return _source(j, hps)


def apply_plan(model: nn.Module, plan: Plan) -> dict[str, Hparam]:
    """Convert the plan's layers and back their dimensions by fresh hparams (by name); slice
    its channel parameters.
    """
    hps = {g.name: Hparam(g.choices, g.original, g.name) for g in plan.hparams}
    for name, dims in plan.layers.items():
        m = _module(model, name)
        twin = dynamic_class_for(m)
        if twin is None:
            msg = f"layer {name!r} ({type(m).__name__}) has no dynamic twin"
            raise TracingError(msg)
        dm = twin.convert(m)
        for attr, j in dims.items():
            dm.set_dim(attr, _source(j, hps))
    by_owner: dict[str, dict[str, tuple[int, DimSource]]] = {}
    for qual, spec in plan.params.items():
        owner, _, attr = qual.rpartition(".")
        by_owner.setdefault(owner, {})[attr] = (int(spec["dim"]), _source(spec["layout"], hps))
    for owner, dims_ in by_owner.items():
        slice_params(_module(model, owner), dims_)
    followers: dict[str, dict[str, DimSource]] = {}
    for qual, spec in plan.attrs.items():
        owner, _, attr = qual.rpartition(".")
        followers.setdefault(owner, {})[attr] = _source(spec["layout"], hps)
    for owner, attrs in followers.items():
        follow_attrs(_module(model, owner), attrs)
    block_fastpaths(model)  # no fused kernel may read a dynamic child's full weights
    return hps


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as e:
        msg = (
            f"the search space names module {name!r}, which this {type(model).__name__} does "
            "not have; restore onto a fresh instance built with the same arguments"
        )
        raise TracingError(msg) from e
