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

from nasviz.errors import ApplyModeError

__all__ = ["prune"]


def prune(
    model: nn.Module,
    mode: Any = "fastnas",
    constraints: dict[str, Any] | None = None,
    dummy_input: Any = None,
    config: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Prune ``model`` to meet ``constraints`` (``{"flops": "60%"}``, ``{"params": 1e5}``, both).

    A model that is not converted yet is converted with ``mode`` first (a name, or
    ``[("fastnas", config)]``). The model is modified in place and returned with the search state.
    """
    from nasviz.modes import get_mode
    from nasviz.space import convert
    from nasviz.state import is_converted

    if constraints is None or not constraints:
        raise ApplyModeError(
            "prune needs constraints, e.g. constraints={'flops': '60%'} or {'params': 1e6}"
        )
    if dummy_input is None:
        raise ApplyModeError(
            "prune needs dummy_input (an example batch) to trace the model and count FLOPs"
        )
    if not is_converted(model):
        model = convert(model, mode=mode, dummy_input=dummy_input)
    name = mode if isinstance(mode, str) else mode[0][0] if isinstance(mode[0], tuple) else mode[0]
    searcher_cls = get_mode(name).search_algorithm
    searcher = searcher_cls()
    state = searcher.search(model, constraints, dummy_input=dummy_input, config=config)
    return model, state
