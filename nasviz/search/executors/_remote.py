"""What a sensitivity-map entry needs to be scored anywhere: the payload, its pickling, the seeds.

Private to :mod:`nasviz.search.executors` (which documents the design). Three pieces:

* :class:`Payload`: the model (converted, at full width), the scorer's picklable recipe
  (:class:`~nasviz.search.scoring.ScorerSpec`), the hparams' members and the seed, in one plain
  object.
  :func:`dumps_payload` pickles it whole with cloudpickle (a patched model's instance methods are
  pickled by value that way; stdlib pickle writes them by name and cannot load them back) and,
  when that fails, names the part that could not be pickled.
* :class:`SeededUnits`: every scoring unit starts from the same random state (torch's global RNG
  seeded with ``seed``, every ``torch.Generator`` found in the data put back to its state at the
  start of the sweep), so a score depends neither on the order nor on the process that computes it.
* :func:`score_subnet` scores one subnet exactly as the searcher does in process;
  :func:`score_task` is the task a Dask worker runs (the payload is unpickled once per worker
  process and kept under its token until :func:`release`).
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasviz.errors import SearchError
from nasviz.hparam import Hparam
from nasviz.search.events import SearchEvent
from nasviz.search.scoring import Scorer, ScorerSpec
from nasviz.space import search_space, select

__all__ = [
    "Payload",
    "SeededUnits",
    "dumps_payload",
    "find_generators",
    "release",
    "score_subnet",
    "score_task",
]


@dataclass
class Payload:
    """Everything a worker needs to score map entries (a plain object: pickled whole)."""

    model: nn.Module
    full: dict[str, int]
    seed: int
    threads: int | None
    scoring: ScorerSpec
    members: dict[str, list[str]] = field(default_factory=dict)

    def parts(self) -> dict[str, Any]:
        """The user-supplied parts by the name the user knows them by (for error messages)."""
        return {"the model": self.model, **self.scoring.parts()}

    def data_roots(self) -> list[Any]:
        """Where the data's random generators can be found."""
        return self.scoring.data_roots()


# -- pickling -------------------------------------------------------------------------------------
def dumps_payload(payload: Payload) -> bytes:
    """``cloudpickle.dumps(payload)``; a SearchError naming what cannot be pickled otherwise."""
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps(payload))
    except Exception as whole:
        for label, part in payload.parts().items():
            found = _unpicklable(part, label, depth=3)
            if found is not None:
                path, obj, err = found
                msg = (
                    f"{path} ({type(obj).__name__}) cannot be pickled, so it cannot be sent to "
                    f"the Dask workers: {type(err).__name__}: {err}. Make it picklable (define "
                    "functions at module level or in the notebook, do not capture locks, open "
                    "files, sockets or threads), or run the sweep in process "
                    "(config['executor']='local')"
                )
                raise SearchError(msg) from err
        msg = (
            f"the sweep's payload cannot be pickled for the Dask workers: "
            f"{type(whole).__name__}: {whole}"
        )
        raise SearchError(msg) from whole


def _try_pickle(obj: Any) -> BaseException | None:
    import cloudpickle

    try:
        cloudpickle.dumps(obj)
    except Exception as e:
        return e
    return None


def _unpicklable(obj: Any, label: str, depth: int) -> tuple[str, Any, BaseException] | None:
    """The deepest ``(path, object, error)`` under ``obj`` that does not pickle, or ``None``."""
    err = _try_pickle(obj)
    if err is None:
        return None
    if depth > 0:
        for sub_label, sub in _children(obj, label):
            found = _unpicklable(sub, sub_label, depth - 1)
            if found is not None:
                return found
    return label, obj, err


def _children(obj: Any, label: str) -> Iterator[tuple[str, Any]]:
    """The objects ``obj`` refers to, each with a readable path."""
    if isinstance(obj, functools.partial):
        yield f"{label}.func", obj.func
        for i, a in enumerate(obj.args):
            yield f"{label} argument {i}", a
        for k, v in obj.keywords.items():
            yield f"{label} argument {k!r}", v
    elif isinstance(obj, types.MethodType):
        yield f"{label}.__self__", obj.__self__
    elif isinstance(obj, types.FunctionType):
        for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or ()):
            with contextlib.suppress(ValueError):  # an empty cell
                yield f"{label}'s closure variable {name!r}", cell.cell_contents
        for name in obj.__code__.co_names:
            if name in obj.__globals__ and not isinstance(obj.__globals__[name], types.ModuleType):
                yield f"{label}'s global {name!r}", obj.__globals__[name]
    elif isinstance(obj, dict):
        for k, v in list(obj.items())[:100]:
            yield f"{label}[{k!r}]", v
    elif isinstance(obj, (list, tuple, set)):
        for i, v in enumerate(list(obj)[:100]):
            yield f"{label}[{i}]", v
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for k, v in vars(obj).items():
            yield f"{label}.{k}", v


# -- random state ---------------------------------------------------------------------------------
def find_generators(roots: list[Any], depth: int = 5) -> list[torch.Generator]:
    """Every ``torch.Generator`` reachable from ``roots`` (loaders, samplers, closures, globals)."""
    found: dict[int, torch.Generator] = {}
    seen: set[int] = set()
    skip = (nn.Module, torch.Tensor, type, types.ModuleType, str, bytes, int, float, bool)

    def walk(obj: Any, left: int) -> None:
        if obj is None or id(obj) in seen or left < 0:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Generator):
            found[id(obj)] = obj
            return
        if isinstance(obj, (*skip, types.BuiltinFunctionType)):
            return
        for _, child in _children(obj, ""):
            walk(child, left - 1)
        if isinstance(obj, torch.utils.data.DataLoader):  # its dataset is data, not state
            for attr in ("generator", "sampler", "batch_sampler"):
                walk(getattr(obj, attr, None), left - 1)

    for root in roots:
        walk(root, depth)
    return list(found.values())


class SeededUnits:
    """Runs each scoring unit from the same random state (see the module docstring).

    Example::

        >>> units = SeededUnits(0, [train_loader])
        >>> with units.unit():
        ...     a = next(iter(train_loader))[0]
        >>> with units.unit():
        ...     b = next(iter(train_loader))[0]
        >>> torch.equal(a, b)
        True
    """

    def __init__(self, seed: int, roots: list[Any]) -> None:
        self.seed = seed
        self.generators = find_generators(roots)
        self.states = [g.get_state() for g in self.generators]

    def restore(self) -> None:
        """Put every found generator back to its state at construction."""
        for g, s in zip(self.generators, self.states):
            g.set_state(s)

    @contextlib.contextmanager
    def unit(self) -> Iterator[None]:
        """Restore the generators, seed torch's RNG; the caller's RNG state is kept."""
        self.restore()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            yield


# -- scoring --------------------------------------------------------------------------------------
def configurable(model: nn.Module) -> dict[str, Hparam]:
    """The configurable hparams of a converted model, by name."""
    return {n: hp for n, hp in search_space(model).hparams.items() if hp.is_configurable}


def score_subnet(model: nn.Module, subnet: dict[str, int], scorer: Scorer) -> Any:
    """Select ``subnet`` and score it as the searcher does (the raw value of the scorer)."""
    select(model, subnet)
    return scorer.score_active()


class WorkerSweep:
    """A worker's unpickled payload; scores one entry at a time (its lock serialises threads).

    The scorer is built and prepared at the full subnet once per worker, inside the first
    task's seeded unit (a scorer whose preparation scores the full model keeps that score).
    """

    def __init__(self, payload: Payload) -> None:
        self.payload = payload
        self.units = SeededUnits(payload.seed, payload.data_roots())
        self.lock = threading.Lock()
        self.events: list[SearchEvent] = []
        self.scorer = payload.scoring.build(payload.model, self.events.append)
        self.prepared = False
        self.original: float | None = None
        if payload.threads is not None:
            torch.set_num_threads(payload.threads)

    def _prepare(self) -> None:
        if not self.prepared:
            p = self.payload
            select(p.model, p.full)
            hps = configurable(p.model)
            self.original = self.scorer.prepare(p.members, {n: hps[n] for n in p.members})
            self.prepared = True

    def score(self, name: str | None, choice: int | None) -> tuple[bool, Any, list[SearchEvent]]:
        """``(ok, score or exception, events)`` for ``name=choice`` (``None``: the full model)."""
        p = self.payload
        with self.lock, self.units.unit():
            try:
                self._prepare()
                if name is None and self.original is not None:
                    return True, self.original, list(self.events)
                subnet = p.full if name is None else {**p.full, name: int(choice or 0)}
                return True, score_subnet(p.model, subnet, self.scorer), []
            except Exception as e:
                return False, _portable(e), []


def _portable(e: Exception) -> Exception:
    """``e`` if it survives pickling, else a RuntimeError with its type and message."""
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")
    return e


_STATES: dict[str, WorkerSweep] = {}
_STATES_LOCK = threading.Lock()
_KEEP = 2  # payloads kept per worker process (older sweeps are dropped first)


def score_task(
    token: str, blob: bytes, name: str | None, choice: int | None
) -> tuple[bool, Any, list[SearchEvent]]:
    """The Dask task: score ``name=choice`` with the payload ``blob`` (unpickled once)."""
    with _STATES_LOCK:
        state = _STATES.get(token)
        if state is None:
            state = WorkerSweep(pickle.loads(blob))
            _STATES[token] = state
            while len(_STATES) > _KEEP:
                _STATES.pop(next(iter(_STATES)))
    return state.score(name, choice)


def release(token: str) -> bool:
    """Drop the payload of sweep ``token`` from this worker process."""
    with _STATES_LOCK:
        return _STATES.pop(token, None) is not None
