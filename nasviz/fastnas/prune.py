"""``prune``: convert (if needed), search under constraints, leave the best subnet selected.

Mirrors Model Optimizer's ``mtp.prune``::

    model, search_state = nv.prune(model, mode="fastnas", constraints={"flops": "60%"},
                                   dummy_input=x, config={"data_loader": dl, "score_func": f})
    small = nv.export(model)

``search_state`` is the searcher's state dict: ``"sensitivity_map"``, ``"original_score"``,
``"best"`` (``config``, real ``score`` after BN re-calibration, ``flops``, ``params``) and
``"history"`` (every map entry and bisection step, as records; see
:class:`nasviz.search.SearchHistory`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nasviz._transaction import transaction
from nasviz.cost import profile
from nasviz.errors import ApplyModeError, ConstraintError
from nasviz.search.constraints import Constraints
from nasviz.space import convert, get_subnet_config, search_space
from nasviz.state import ModeLike, is_converted, parse_modes

__all__ = ["check_result", "prune"]


def prune(
    model: nn.Module,
    mode: ModeLike = "fastnas",
    constraints: dict[str, Any] | None = None,
    dummy_input: Any = None,
    config: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Prune ``model`` to meet ``constraints`` (``{"flops": "60%"}``, ``{"params": 1e5}``, both).

    A model that is not converted yet is converted with ``mode`` first (a name, or
    ``[("fastnas", config)]``); the searcher is that of the first mode given (its
    ``search_algorithm``). The model is modified in place and returned with the search state.
    Missing ``constraints`` or ``dummy_input`` raise :class:`~nasviz.errors.ConstraintError`; a
    malformed or unknown ``mode`` raises :class:`~nasviz.errors.ApplyModeError`. The subnet
    returned is checked against every FLOPs/params limit by its exact profile (``nv.profile``);
    one over a limit raises :class:`~nasviz.errors.ConstraintError`.
    """
    if not constraints:
        msg = (
            f"prune needs constraints, got {constraints!r}; pass e.g. "
            "constraints={'flops': '60%'} or {'params': 1e6}"
        )
        raise ConstraintError(msg)
    if dummy_input is None:
        msg = (
            "prune needs dummy_input (an example batch) to trace the model and count the FLOPs "
            "the constraints refer to; pass dummy_input=x"
        )
        raise ConstraintError(msg)
    modes = parse_modes(mode)
    if not modes:
        msg = f"prune needs a mode to search with, got {mode!r}; e.g. 'fastnas'"
        raise ApplyModeError(msg)
    # the hparams hold the selection: their active values are restored with the model
    hparams = list(search_space(model).hparams.values()) if is_converted(model) else []
    with transaction(model, also=hparams):
        if not is_converted(model):
            model = convert(model, mode=mode, dummy_input=dummy_input)
        searcher = modes[0][0].search_algorithm()
        state: dict[str, Any] = searcher.search(
            model, constraints, dummy_input=dummy_input, config=config
        )
        check_result(model, searcher.constraints, dummy_input)
    return model, state


def check_result(model: nn.Module, constraints: Constraints, dummy_input: Any) -> None:
    """Raise :class:`~nasviz.errors.ConstraintError` unless the active subnet of ``model`` meets
    every resolved FLOPs/params limit of ``constraints`` by its exact profile (one eval forward
    pass on ``dummy_input``; the searcher's choices rest on a cost model, this is the check).
    """
    exact = profile(model, dummy_input)
    values = {"flops": float(exact.flops), "params": float(exact.params)}
    over = [
        f"{lim.key} {values[lim.key]:.6g} > limit {limit:.6g}"
        for lim in constraints
        if lim.key in values and lim.absolute is not None
        for limit in [float(lim.absolute)]
        if values[lim.key] > limit
    ]
    if over:
        msg = (
            f"the subnet the search chose ({get_subnet_config(model)}) is over the limit by its "
            f"exact profile: {'; '.join(over)}. The search's cost estimate disagrees with "
            "nv.profile (please report it); the model was left as it was"
        )
        raise ConstraintError(msg)
