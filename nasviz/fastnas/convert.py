"""Building a search space on a model: trace, plan, convert, sort channels, verify; restore; export.

:func:`build_search_space` is the convert pipeline of the ``"fastnas"`` mode:

a. run the dummy input through the model (eval mode, no grad) and keep the outputs;
b. keep a deep copy of the model, trace it and build the coupling groups;
c. convert the matched layers to their dynamic twins (rules from the config);
d. one :class:`~nasviz.hparam.Hparam` per configurable group, ``set_dim`` on every member;
e. rank each group's channels by importance (the members' ``importance``, normalised per member,
   summed; whole GroupNorm groups stay together) and **physically sort** the parameters and
   buffers of every member along that dimension, in place (same ``Parameter`` objects). The hparam
   keeps the identity order: a width ``k`` is always the cheap slice ``[:k]``, and BatchNorm
   running statistics of a subnet are views that update in place;
f. **self-check**: run the dummy input at full size and compare with (a) (an output whose width
   follows the pruned model, :mod:`nasviz.tracing.outputs`, holds the same values with its
   channels in importance order: compared as sorted values); run the smallest subnet once.
   If either fails, or anything is interrupted, the model is put back exactly as it was (the
   same Parameter objects with their values: :mod:`nasviz._transaction`) and a
   :class:`~nasviz.errors.TracingError` names the model: a broken model is never returned.

The search space lives on the model as a :class:`~nasviz.space.SpaceRecord` (attached with
:func:`~nasviz.space.attach_record`): the generic verbs, the export mode and the searchers read it
from there, so no generic module imports this package.
:func:`restore_search_space` rebuilds it from the stored plan alone: no tracing, no sorting (the
saved weights are the sorted ones), no dummy input.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from nasviz._transaction import ModelSnapshot
from nasviz._utils import training_flags
from nasviz.config import ModeloptBaseRuleConfig
from nasviz.dynamic import DynamicModule
from nasviz.dynamic.norm import group_order
from nasviz.dynamic.params import permute_param, sliced_params
from nasviz.errors import MissingDummyInputWarning, TracingError
from nasviz.fastnas.roles import rebind, tie_plan
from nasviz.hparam import ConcatDim, DimSource, Hparam, RepeatDim
from nasviz.space import SpaceRecord, attach_record, get_record
from nasviz.tracing import Plan, analyze, apply_plan, capture, example_args, make_plan
from nasviz.tracing.outputs import leaf_names
from nasviz.tracing.plan import static_for_lack_of_input

__all__ = ["ChannelSort", "build_search_space", "restore_search_space", "sort_channels"]

#: relative and absolute tolerance (times the output scale) of the self-check
_RTOL, _ATOL = 1e-4, 1e-5


def _run(model: nn.Module, dummy_input: Any) -> Any:
    """``model(dummy_input)`` in eval mode without grad; train flags are restored after."""
    args, kwargs = example_args(dummy_input)
    with training_flags(model, mode=False), torch.no_grad():
        return model(*args, **kwargs)


#: step (e): ``sort(model, plan, hparams)`` orders every group's channels in place
ChannelSort = Callable[[nn.Module, Plan, dict[str, Hparam]], None]


def build_search_space(
    model: nn.Module,
    config: ModeloptBaseRuleConfig,
    dummy_input: Any | None,
    sort: ChannelSort | None = None,
) -> SpaceRecord:
    """The convert pipeline (see the module docstring); converts ``model`` in place.

    ``sort`` replaces step (e), :func:`sort_channels` (e.g. another importance order); whatever
    it does is checked by the self-check (f), so a sort that changes the model's function leaves
    the model unchanged and raises :class:`~nasviz.errors.TracingError`.
    """
    if get_record(model) is not None or any(isinstance(m, DynamicModule) for m in model.modules()):
        msg = (
            f"this {type(model).__name__} already has dynamic layers; convert a model only once "
            "(start again from the original model)"
        )
        raise TracingError(msg)
    label = type(model).__name__
    try:
        reference = None if dummy_input is None else _run(model, dummy_input)
    except Exception as e:
        msg = (
            f"{label} does not run on the given dummy_input ({type(e).__name__}: {e}); pass an "
            "input the model accepts (a tensor, a tuple of positional args or a dict of kwargs)"
        )
        raise TracingError(msg) from e
    before = ModelSnapshot.take(model)
    try:
        keep = getattr(config, "keep_outputs", None)
        analysis = analyze(model, capture(model, dummy_input), keep)
        plan = make_plan(model, analysis, config)
        hparams = apply_plan(model, plan)
        (sort_channels if sort is None else sort)(model, plan, hparams)
        if getattr(config, "tie_roles", False) and tie_plan(plan):
            hparams = rebind(model, plan, hparams)
        if dummy_input is not None:
            _self_check(model, label, dummy_input, reference, hparams, set(analysis.free_outputs))
    except BaseException as e:
        before.restore()
        if isinstance(e, TracingError) or not isinstance(e, Exception):
            raise
        msg = (
            f"converting {label} failed ({type(e).__name__}: {e}); the model was left unchanged. "
            "Switch the involved layers off in the config to work around it"
        )
        raise TracingError(msg) from e
    record = attach_record(model, plan, hparams)
    lacking = static_for_lack_of_input(plan) if dummy_input is None else []
    if lacking:
        warnings.warn(
            f"{len(lacking)} layer dimension(s) of {label} stayed static only because no "
            f"dummy_input was given (e.g. {', '.join(lacking[:3])}); pass an example input to "
            'capture real shapes: nv.convert(model, mode="fastnas", dummy_input=x)',
            MissingDummyInputWarning,
            stacklevel=2,
        )
    return record


def restore_search_space(model: nn.Module, plan: Plan, subnet: dict[str, int]) -> SpaceRecord:
    """Rebuild a stored search space on a fresh model (no tracing, no sorting) and select."""
    hparams = apply_plan(model, plan)
    record = attach_record(model, plan, hparams)
    for name, value in subnet.items():
        if name not in hparams:
            msg = (
                f"the stored subnet names hparam {name!r}, which the restored search space does "
                f"not have (it has {sorted(hparams)})"
            )
            raise TracingError(msg)
        hparams[name].active = value
    return record


# -- (e) physical sort ---------------------------------------------------------------------------


def _full_perm(src: DimSource | None, hp: Hparam, order: torch.Tensor) -> torch.Tensor | None:
    """The permutation ``order`` of ``hp`` induces on a whole dimension backed by ``src``."""
    if src is hp:
        return order
    if isinstance(src, ConcatDim):
        pieces, offset, found = [], 0, False
        for part in src.parts:
            sub = _full_perm(part, hp, order)
            found = found or sub is not None
            pieces.append((torch.arange(part.full) if sub is None else sub) + offset)
            offset += part.full
        return torch.cat(pieces) if found else None
    if isinstance(src, RepeatDim):
        sub = _full_perm(src.source, hp, order)
        if sub is None:
            return None
        return (sub[:, None] * src.inner + torch.arange(src.inner)[None, :]).flatten()
    return None


def _channel_map(src: DimSource | None, hp: Hparam) -> torch.Tensor | None:
    """For every position of a dimension backed by ``src``: the channel of ``hp`` it holds, or
    -1 (``None`` if ``hp`` does not occur in it).
    """
    if src is hp:
        return torch.arange(hp.original)
    if isinstance(src, ConcatDim):
        maps = [_channel_map(part, hp) for part in src.parts]
        if all(m is None for m in maps):
            return None
        return torch.cat(
            [torch.full((p.full,), -1) if m is None else m for p, m in zip(src.parts, maps)]
        )
    if isinstance(src, RepeatDim):
        sub = _channel_map(src.source, hp)
        return None if sub is None else sub.repeat_interleave(src.inner)
    return None


def sort_channels(model: nn.Module, plan: Plan, hparams: dict[str, Hparam]) -> None:
    """Rank every channel group by importance and permute its members' tensors in place."""
    layers = {name: model.get_submodule(name) for name in plan.layers}
    params = [
        (model.get_submodule(qual.rpartition(".")[0]), qual.rpartition(".")[2])
        for qual in plan.params
    ]
    users: dict[int, list[DynamicModule]] = {}
    for m in layers.values():
        assert isinstance(m, DynamicModule)
        for hp_id in dict.fromkeys(id(hp) for _, hp in m.hparams()):
            users.setdefault(hp_id, []).append(m)
    for group in plan.hparams:
        if group.kind != "channels":
            continue
        hp = hparams[group.name]
        scores = []
        for module, attr, _how in group.members:
            layer = layers.get(module)
            if not isinstance(layer, DynamicModule):
                continue
            imp = layer.importance(attr)
            where = _channel_map(layer.dim(attr), hp)
            if imp is None or where is None or imp.numel() != where.numel():
                continue
            if bool((where < 0).any()):
                continue  # a concatenation with other groups: its own channels rank elsewhere
            total = float(imp.sum())
            if total > 0:
                per = torch.zeros(hp.original).index_add_(0, where, imp.float().cpu().flatten())
                scores.append(per / total)
        if not scores:
            continue
        importance = torch.stack(scores).sum(0)
        if group.block > 1:
            order = group_order(importance, group.block)
        else:
            order = torch.argsort(importance, descending=True, stable=True)
        hp.importance = importance[order]
        if torch.equal(order, torch.arange(hp.original)):
            continue
        done: set[tuple[int, int]] = set()  # (tensor, dim): a tied weight is permuted once
        for m in users.get(id(hp), []):
            _permute_module(m, hp, order, done)
        for owner, pname in params:
            dim, src = sliced_params(owner)[pname]
            perm = _full_perm(src, hp, order)
            full = owner._parameters.get(pname, owner._buffers.get(pname))
            if perm is not None and (id(full), dim) not in done:
                done.add((id(full), dim))
                permute_param(owner, pname, perm)


def _permute_module(
    m: DynamicModule, hp: Hparam, order: torch.Tensor, done: set[tuple[int, int]]
) -> None:
    with torch.no_grad():
        for name, dims in m.param_dims.items():
            t = getattr(m, name, None)
            if not isinstance(t, torch.Tensor):
                continue
            for d, attr in dims.items():
                if (id(t), d) in done:
                    continue
                perm = _full_perm(m.dim(attr), hp, order)
                if perm is not None and t.shape[d] != perm.numel():
                    perm = _within_group(perm, t.shape[d])
                if perm is None:
                    continue  # e.g. a depthwise conv's weight dim 1 (in / groups = 1)
                t.data.copy_(t.data.index_select(d, perm.to(t.device)))
                done.add((id(t), d))
    m._nv_cache.clear()


def _within_group(perm: torch.Tensor, size: int) -> torch.Tensor | None:
    """The permutation of one group's ``size`` positions when ``perm`` moves channels within
    their groups, the same way in every group (a grouped conv's weight dim 1); else ``None``.
    """
    if size < 2 or perm.numel() % size:
        return None
    rows = perm.view(-1, size)
    local = rows - rows[:, :1].div(size, rounding_mode="floor") * size
    if not bool((local == local[0]).all()) or not bool((rows // size == rows[:, :1] // size).all()):
        return None
    return local[0]


# -- (f) self-check ------------------------------------------------------------------------------


def _self_check(
    model: nn.Module,
    label: str,
    dummy_input: Any,
    reference: Any,
    hparams: dict[str, Hparam],
    free: set[str],
) -> None:
    out = _run(model, dummy_input)
    ref_leaves, ref_spec = tree_flatten(reference)
    names = leaf_names(reference)[0].names if free else []
    out_leaves, out_spec = tree_flatten(out)
    if ref_spec != out_spec:
        msg = (
            f"self-check failed: converting {label} changed the structure of its output; the "
            "model was left unchanged (please report this model)"
        )
        raise TracingError(msg)
    for i, (a, b) in enumerate(zip(ref_leaves, out_leaves)):
        if not isinstance(a, torch.Tensor):
            continue
        if names and names[i] in free and a.shape == b.shape:  # channels sorted: same values
            a, b = a.flatten().sort().values, b.flatten().sort().values
        scale = float(a.detach().abs().max()) if a.numel() and a.is_floating_point() else 1.0
        same = a.shape == b.shape and (
            torch.allclose(a, b, rtol=_RTOL, atol=_ATOL * max(1.0, scale))
            if a.is_floating_point()
            else torch.equal(a, b)
        )
        if not same:
            diff = (a - b).abs().max().item() if a.shape == b.shape else "shape"
            msg = (
                f"self-check failed: converting {label} changed output {i} at full size (max "
                f"abs diff {diff}); the model was left unchanged. This is an op nasviz misreads: "
                "please report the model, and switch the involved layers off meanwhile"
            )
            raise TracingError(msg)
    active = {name: hp.active for name, hp in hparams.items()}
    try:
        for hp in hparams.values():
            hp.active = hp.min
        _run(model, dummy_input)
    except Exception as e:
        msg = (
            f"self-check failed: the smallest subnet of {label} does not run "
            f"({type(e).__name__}: {e}); the model was left unchanged (please report this model)"
        )
        raise TracingError(msg) from e
    finally:
        for name, value in active.items():
            hparams[name].active = value
