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

from nasviz.errors import ApplyModeError, ConstraintError
from nasviz.space import convert
from nasviz.state import ModeLike, is_converted, parse_modes

__all__ = ["prune"]


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
    malformed or unknown ``mode`` raises :class:`~nasviz.errors.ApplyModeError`.
    """
    if not constraints:
        raise ConstraintError(
            f"prune needs constraints, got {constraints!r}; pass e.g. "
            "constraints={'flops': '60%'} or {'params': 1e6}"
        )
    if dummy_input is None:
        raise ConstraintError(
            "prune needs dummy_input (an example batch) to trace the model and count the FLOPs "
            "the constraints refer to; pass dummy_input=x"
        )
    modes = parse_modes(mode)
    if not modes:
        raise ApplyModeError(f"prune needs a mode to search with, got {mode!r}; e.g. 'fastnas'")
    if not is_converted(model):
        model = convert(model, mode=mode, dummy_input=dummy_input)
    searcher = modes[0][0].search_algorithm()
    state: dict[str, Any] = searcher.search(
        model, constraints, dummy_input=dummy_input, config=config
    )
    return model, state
