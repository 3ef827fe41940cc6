"""The search checkpoint format: one module reads and writes it.

A checkpoint is a searcher's state dict (``BaseSearcher.state_dict()``: every key of its
``default_state_dict``, plus ``"history"``, the event records, and what its scorer reports)
saved with ``torch.save`` atomically; it is read with ``torch.load(weights_only=True)``, so
loading never runs code from the file. Searchers resume from it (:func:`read_checkpoint`);
anyone else - the widgets, a user's script - reads a finished or interrupted search with
:func:`load_search_state`. Example::

    >>> state = load_search_state("search.pt")
    >>> state["sensitivity_map"], SearchHistory.from_records(state["history"])
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nasviz._utils import atomic_torch_save
from nasviz.errors import SearchError

__all__ = ["load_search_state", "read_checkpoint", "write_checkpoint"]

PathLike = str | os.PathLike[str]


def read_checkpoint(path: PathLike | None) -> dict[str, Any] | None:
    """The state dict saved at ``path``; ``None`` if there is no path or no file yet."""
    if path is None or not Path(path).exists():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:
        raise SearchError(
            f"search checkpoint {str(path)!r} could not be read: {e}; pass a file written by a "
            "searcher (config['checkpoint'])"
        ) from e
    if not isinstance(state, dict):
        raise SearchError(
            f"search checkpoint {str(path)!r} holds a {type(state).__name__}, not a searcher's "
            "state dict"
        )
    return state


def write_checkpoint(state: Mapping[str, Any], path: PathLike) -> None:
    """Save ``state`` at ``path`` atomically (temp file, then rename); makes the directory."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(dict(state), path)


def load_search_state(source: PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A searcher's state dict, from itself or from its checkpoint file (loaded weights-only).

    Raises :class:`~nasviz.errors.SearchError` if the file does not exist, cannot be read, or
    is not a search state (it has no ``"history"``).
    """
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        found = read_checkpoint(source)
        if found is None:
            raise SearchError(
                f"search checkpoint {str(source)!r} does not exist; pass the path given as "
                "config['checkpoint'] to nv.prune / BinarySearcher.search"
            )
        state = found
    if "history" not in state:
        raise SearchError(
            f"search state has no 'history' (keys: {sorted(state)}); pass the state returned by "
            "nv.prune / BinarySearcher.search or its checkpoint file"
        )
    return state
