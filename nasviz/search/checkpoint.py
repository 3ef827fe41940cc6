"""The search checkpoint format: one module reads and writes it.

A checkpoint is a searcher's state dict (``BaseSearcher.state_dict()``: every key of its
``default_state_dict``, plus ``"history"``, the event records, and what its scorer reports)
saved with ``torch.save`` atomically and with a content hash; it is read with
``torch.load(weights_only=True)``, so loading never runs code from the file. Next to the state,
the file holds

* the marker ``"nasviz_search_checkpoint"`` with the format version (:data:`FORMAT_VERSION`): a
  file without it (a model saved with ``nv.save``, any other torch file) is not a checkpoint and
  is never read as one or overwritten;
* a **fingerprint**: what the state was computed from, as the searcher describes it (the
  architecture, the search space, a hash of the weights and buffers at the start of the search,
  the settings the scores depend on; see :func:`module_fingerprint`). A searcher resumes from a
  checkpoint only when its fingerprint matches; otherwise :class:`~nasviz.errors.SearchError`
  says what differs and how to start fresh.

While a search runs, its checkpoint path is locked (:class:`CheckpointLock`: a ``path + ".lock"``
file created exclusively, holding the process id; a lock of a process that no longer runs is
removed), so two processes never interleave one file. Searchers resume from a checkpoint
(:class:`SearchCheckpoint`); anyone else - the widgets, a user's script - reads a finished or
interrupted search with :func:`load_search_state`. Example::

    >>> state = load_search_state("search.pt")
    >>> state["sensitivity_map"], SearchHistory.from_records(state["history"])
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasviz._utils import atomic_torch_save, read_checked
from nasviz.errors import CorruptFileError, SearchError
from nasviz.search._lock import CheckpointLock
from nasviz.search.events import SearchHistory

__all__ = [
    "FORMAT_VERSION",
    "MARKER",
    "CheckpointLock",
    "SearchCheckpoint",
    "as_history",
    "as_optional_score",
    "as_sensitivity_map",
    "checked_field",
    "like",
    "load_search_state",
    "module_fingerprint",
    "read_checkpoint",
    "write_checkpoint",
]

PathLike = str | os.PathLike[str]

#: the version of the checkpoint format written by this nasviz
FORMAT_VERSION = 1
#: the key that marks a nasviz search checkpoint (its value: the format version)
MARKER = "nasviz_search_checkpoint"
_FINGERPRINT = "fingerprint"
_FRESH = "delete the file or pass another config['checkpoint'] path to start a fresh search"


# -- fingerprints -------------------------------------------------------------------------------
def module_fingerprint(model: nn.Module, skip: Iterable[torch.Tensor] = ()) -> dict[str, str]:
    """``{"architecture": ..., "weights": ...}``: SHA-256 hashes of the module tree (names,
    classes, parameter and buffer names, shapes and dtypes) and of the values of every parameter
    and buffer except the tensors ``skip`` (those a search overwrites before it reads them).
    """
    skipped = {id(t) for t in skip}
    arch, weights = hashlib.sha256(), hashlib.sha256()
    for name, module in model.named_modules():
        arch.update(f"{name}:{type(module).__qualname__};".encode())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        arch.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if id(t) in skipped:
            continue
        weights.update(name.encode())
        data = t.detach().cpu().contiguous()
        weights.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return {"architecture": arch.hexdigest()[:16], "weights": weights.hexdigest()[:16]}


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # tensors, say: never equal to a fingerprint part computed now
        return False


def _differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints, one phrase per part (nested dicts key by key)."""
    out: list[str] = []
    for key in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(key, "<missing>"), now.get(key, "<missing>")
        if _equal(a, b):
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(f"{key}.{d}" for d in _differences(a, b))
        else:
            out.append(f"{key}: {_describe(a)} in the file, {_describe(b)} now")
    return out


# -- reading and writing ------------------------------------------------------------------------
def _load(path: PathLike) -> Any:
    try:
        data, _ = read_checked(path)
        return torch.load(io.BytesIO(data), weights_only=True)
    except CorruptFileError as e:
        msg = f"search checkpoint {str(path)!r}: {e}; {_FRESH}"
        raise SearchError(msg) from e
    except Exception as e:
        msg = (
            f"search checkpoint {str(path)!r} could not be read ({type(e).__name__}: {e}); it is "
            f"not a file written by a nasviz searcher: {_FRESH}"
        )
        raise SearchError(msg) from e


def _checked_file(state: Any, path: PathLike) -> dict[str, Any]:
    """``state`` if it is a nasviz search checkpoint of this format, else a SearchError."""
    if not isinstance(state, dict) or MARKER not in state:
        what = f"a {type(state).__name__}" if not isinstance(state, dict) else "a dict"
        msg = (
            f"{str(path)!r} is not a nasviz search checkpoint ({what} without the "
            f"{MARKER!r} marker: a saved model, say); it was left untouched. Pass another "
            "config['checkpoint'] path (or delete the file if it is no longer needed)"
        )
        raise SearchError(msg)
    version = state[MARKER]
    if not _equal(version, FORMAT_VERSION):
        msg = (
            f"search checkpoint {str(path)!r} has format version {_describe(version)}; this "
            f"nasviz reads version {FORMAT_VERSION}: {_FRESH}"
        )
        raise SearchError(msg)
    if not isinstance(state.get(_FINGERPRINT), dict):
        msg = (
            f"search checkpoint {str(path)!r}: field {_FINGERPRINT!r} is "
            f"{_describe(state.get(_FINGERPRINT))}, not a dict: the file is damaged; {_FRESH}"
        )
        raise SearchError(msg)
    return state


def _strip(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in (MARKER, _FINGERPRINT)}


def read_checkpoint(
    path: PathLike | None, fingerprint: Mapping[str, Any] | None = None, strict: bool = True
) -> dict[str, Any] | None:
    """The state dict saved at ``path``; ``None`` if there is no path or no file yet.

    Raises :class:`~nasviz.errors.SearchError` if the file cannot be read, is not a nasviz
    search checkpoint, has another format version, or (given a ``fingerprint``) was computed
    from something else: the message lists what differs. ``strict=False`` (for readers only,
    never before writing) also takes a dict without the marker: a hand-made state, or a
    checkpoint of nasviz <= 0.1.
    """
    if path is None or not Path(path).exists():
        return None
    raw = _load(path)
    if not strict and isinstance(raw, dict) and MARKER not in raw:
        return _strip(raw)
    state = _checked_file(raw, path)
    if fingerprint is not None:
        diff = _differences(state[_FINGERPRINT], fingerprint)
        if diff:
            msg = (
                f"search checkpoint {str(path)!r} was computed from something else, so it is "
                f"not reused: {'; '.join(diff)}. If the model was trained or changed since, "
                f"the saved scores are stale: {_FRESH}"
            )
            raise SearchError(msg)
    return _strip(state)


def write_checkpoint(
    state: Mapping[str, Any], path: PathLike, fingerprint: Mapping[str, Any] | None = None
) -> None:
    """Save ``state`` (with the marker and ``fingerprint``) at ``path`` atomically; makes the
    directory. An existing file that is not a nasviz search checkpoint is never overwritten.
    """
    if Path(path).exists():
        _checked_file(_load(path), path)
    _write(state, path, fingerprint)


def _write(state: Mapping[str, Any], path: PathLike, fingerprint: Mapping[str, Any] | None) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(
        {**dict(state), MARKER: FORMAT_VERSION, _FINGERPRINT: dict(fingerprint or {})}, path
    )


def load_search_state(source: PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A searcher's state dict, from itself or from its checkpoint file (loaded weights-only).

    Raises :class:`~nasviz.errors.SearchError` if the file does not exist, cannot be read, or
    is not a search state (it has no ``"history"`` list of event records); a dict without the
    checkpoint marker is read too (reading changes nothing).
    """
    if isinstance(source, Mapping):
        state = _strip(source)
    else:
        found = read_checkpoint(source, strict=False)
        if found is None:
            msg = (
                f"search checkpoint {str(source)!r} does not exist; pass the path given as "
                "config['checkpoint'] to nv.prune / BinarySearcher.search"
            )
            raise SearchError(msg)
        state = found
    if "history" not in state:
        msg = (
            f"search state has no 'history' (keys: {sorted(map(str, state))}); pass the "
            "state returned by nv.prune / BinarySearcher.search or its checkpoint file"
        )
        raise SearchError(msg)
    path = None if isinstance(source, Mapping) else source
    checked_field(state, "history", path, as_history)
    return state


# -- the lock -----------------------------------------------------------------------------------
class SearchCheckpoint:
    """A searcher's checkpoint file for one search: locked while open, read only when its
    fingerprint matches, written with that fingerprint. ``path=None``: no checkpoint (reads
    give ``None``, writes do nothing).

    Example::

        with SearchCheckpoint("search.pt", fingerprint) as ckpt:
            state = ckpt.read()       # None, or the state if it was computed from the same
            ...
            ckpt.write(new_state)
    """

    def __init__(self, path: PathLike | None, fingerprint: Mapping[str, Any]) -> None:
        self.path = path
        self.fingerprint = dict(fingerprint)
        self.lock = CheckpointLock(path) if path is not None else None
        self._checked = False

    def open(self) -> SearchCheckpoint:
        """Lock the path and check that a file there is a checkpoint of this search."""
        if self.lock is not None:
            self.lock.acquire()
            try:
                read_checkpoint(self.path, self.fingerprint)
            except BaseException:
                self.lock.release()
                raise
            self._checked = True
        return self

    def close(self) -> None:
        """Release the path's lock (nothing to do without a path); the file stays on disk."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> SearchCheckpoint:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> dict[str, Any] | None:
        """The saved state if it was computed from the same fingerprint (else SearchError)."""
        state = read_checkpoint(self.path, self.fingerprint)
        self._checked = True
        return state

    def write(self, state: Mapping[str, Any]) -> None:
        """Save ``state`` atomically with this search's fingerprint (nothing without a path); the
        first write refuses to overwrite another search's checkpoint (SearchError).
        """
        if self.path is None:
            return
        if not self._checked:
            read_checkpoint(self.path, self.fingerprint)  # never overwrite another file
            self._checked = True
        _write(state, self.path, self.fingerprint)


def checked_field(state: Mapping[str, Any], key: str, path: PathLike | None, convert: Any) -> Any:
    """``convert(state[key])``; a missing key or a value ``convert`` rejects raises a SearchError
    naming the file and the field (for checkpoints that load but are malformed).
    """
    where = f"search checkpoint {str(path)!r}" if path is not None else "search state"
    if key not in state:
        msg = f"{where} has no field {key!r}: the file is damaged; {_FRESH}"
        raise SearchError(msg)
    try:
        return convert(state[key])
    except Exception as e:
        msg = (
            f"{where}: field {key!r} is malformed ({type(e).__name__}: {e}; value "
            f"{_describe(state[key])}): the file is damaged; {_FRESH}"
        )
        raise SearchError(msg) from e


def as_sensitivity_map(value: Any) -> dict[str, dict[int, float]]:
    """A checkpoint's ``sensitivity_map`` field, checked: ``{str: {int: finite float}}``."""
    if not isinstance(value, Mapping):
        msg = f"a dict of hparam -> {{choice: drop}} expected, got {type(value).__name__}"
        raise TypeError(msg)
    out: dict[str, dict[int, float]] = {}
    for name, entries in value.items():
        if not isinstance(name, str) or not isinstance(entries, Mapping):
            msg = f"entry {name!r}: {{choice: drop}} expected, got {entries!r}"
            raise TypeError(msg)
        out[name] = {}
        for c, d in entries.items():
            if isinstance(c, bool) or not isinstance(c, int) or not isinstance(d, (int, float)):
                msg = f"entry {name!r}: choice {c!r} -> drop {d!r} is not int -> float"
                raise TypeError(msg)
            if not math.isfinite(float(d)):
                msg = f"entry {name!r}: drop {d!r} at choice {c} is not finite"
                raise ValueError(msg)
            out[name][int(c)] = float(d)
    return out


def as_history(value: Any) -> list[dict[str, Any]]:
    """A ``history`` field, checked: a list of event records that rebuild their events."""
    if not isinstance(value, list):
        msg = f"a list of event records expected, got {type(value).__name__}"
        raise TypeError(msg)
    for i, rec in enumerate(value):
        try:
            if not isinstance(rec, dict) or not all(isinstance(k, str) for k in rec):
                msg = f"a dict with string keys expected, got {_describe(rec)}"
                raise TypeError(msg)
            SearchHistory.from_records([rec])
        except Exception as e:
            msg = f"record {i}: {type(e).__name__}: {e}"
            raise TypeError(msg) from e
    return value


def like(default: Any) -> Any:
    """A check for a state field whose default is ``default``: the value must be of the same
    kind (a dict for a dict, a number for a number, ...); returns the check.
    """

    def check(value: Any) -> Any:
        if isinstance(default, bool) or default is None:
            return value
        kinds: tuple[type, ...] = (
            (int, float) if isinstance(default, (int, float)) else (type(default),)
        )
        if isinstance(value, bool) or not isinstance(value, kinds):
            msg = f"a {type(default).__name__} expected, got {type(value).__name__}"
            raise TypeError(msg)
        number: Any = value
        if isinstance(default, int) and not float(number).is_integer():
            msg = f"a whole number expected, got {value!r}"
            raise ValueError(msg)
        return int(number) if isinstance(default, int) else value

    return check


def as_optional_score(value: Any) -> float | None:
    """A checkpoint's ``original_score`` field, checked: ``None`` or a finite float."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"a number expected, got {type(value).__name__}"
        raise TypeError(msg)
    if not math.isfinite(float(value)):
        msg = f"{value!r} is not finite"
        raise ValueError(msg)
    return float(value)
