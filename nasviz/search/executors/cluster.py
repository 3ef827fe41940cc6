"""Scoring the sensitivity map on a Dask cluster.

See :mod:`nasviz.search.executors` for the design (payload, seeds, faults, safety).
"""

from __future__ import annotations

import collections
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nasviz.errors import SearchError
from nasviz.search.executors._remote import Payload, dumps_payload, release, score_task
from nasviz.search.executors._schedule import Entry, SweepRun
from nasviz.search.executors.local import members_of, searcher_parts

__all__ = ["DaskExecutor", "is_client", "local_cluster"]

_INSTALL = "pip install 'nasviz[distributed]'"


# -- on a Dask cluster ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DaskExecutor:
    """Score the map on a Dask cluster (see the module docstring).

    ``client``: a ``distributed.Client`` (left open) or a scheduler address (connected with
    ``timeout`` seconds, closed after the sweep); ``retries``: times a failed task is retried;
    ``threads``: torch threads per worker process (``None``: leave the workers' setting).
    Example::

        >>> config = {"score_func": f, "executor": DaskExecutor("tcp://127.0.0.1:8786", retries=3)}
    """

    client: Any
    retries: int = 2
    threads: int | None = 1
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            msg = f"DaskExecutor(retries={self.retries!r}): give an int >= 0"
            raise SearchError(msg)
        t = self.threads
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            msg = f"DaskExecutor(threads={t!r}): give an int >= 1, or None"
            raise SearchError(msg)
        if not isinstance(self.timeout, (int, float)) or not self.timeout > 0:
            msg = f"DaskExecutor(timeout={self.timeout!r}): give seconds > 0"
            raise SearchError(msg)
        if not isinstance(self.client, str) and not is_client(self.client):
            msg = (
                "DaskExecutor needs a distributed.Client or a scheduler address such as "
                f"'tcp://127.0.0.1:8786', got {type(self.client).__name__}"
            )
            raise SearchError(msg)

    def connect(self) -> tuple[Any, bool]:
        """``(client, owned)``: the given client, or a new one to the address (``owned``)."""
        distributed = _import_distributed()
        if not isinstance(self.client, str):
            if self.client.status not in ("running", "newly-created", "connecting"):
                msg = (
                    f"the Dask client given in config['executor'] is {self.client.status}; "
                    "pass an open Client"
                )
                raise SearchError(msg)
            return self.client, False
        try:
            client = distributed.Client(self.client, timeout=self.timeout, set_as_default=False)
        except Exception as e:
            msg = (
                f"could not reach the Dask scheduler at {self.client!r} within timeout="
                f"{self.timeout:g} s ({type(e).__name__}: {e}); start one there (e.g. "
                "nasviz.search.executors.local_cluster()) or fix config['executor']"
            )
            raise SearchError(msg) from e
        return client, True

    def open(self, searcher: Any, hps: dict[str, Any]) -> SweepRun:
        """A sweep of ``searcher``'s map over ``hps`` on the cluster: pickles the model and scoring
        recipe once (SearchError if a part cannot be pickled), then connects (:meth:`connect`).
        """
        return _DaskRun(self, searcher, hps)


class _DaskRun(SweepRun):
    def __init__(self, options: DaskExecutor, searcher: Any, hps: dict[str, Any]) -> None:
        self.options, self.searcher = options, searcher
        full, seed, _ = searcher_parts(searcher)
        payload = Payload(
            model=searcher.model,
            full=full,
            seed=seed,
            threads=options.threads,
            scoring=searcher.scorer.spec(),
            members=members_of(searcher, hps),
        )
        searcher._select(full)
        self.blob = dumps_payload(payload)  # raises before anything is sent
        self.client, self.owned = options.connect()
        self.token = uuid.uuid4().hex
        self.futures: dict[str, Entry | None] = {}  # task key -> entry (None: the full model)
        self.by_entry: dict[Entry, Any] = {}
        self.cancelled: set[str] = set()
        self.done: collections.deque[Any] = collections.deque()
        self.ac: Any = None
        self.data: Any = None

    def start(self, entries: list[Entry], need_original: bool) -> float | None:
        if not entries and not need_original:
            return None
        distributed = _import_distributed()
        c, o = self.client, self.options
        try:
            c.wait_for_workers(1, timeout=o.timeout)
        except Exception as e:
            msg = (
                f"no Dask worker joined the scheduler at {c.scheduler.address} within "
                f"{o.timeout:g} s ({type(e).__name__}: {e}); start workers or raise timeout"
            )
            raise SearchError(msg) from e
        self.data = c.scatter(self.blob, broadcast=True, hash=False)
        todo: list[Entry | None] = [None] if need_original else []
        futures = []
        for i, entry in enumerate([*todo, *entries]):
            name, choice = entry if entry is not None else (None, None)
            key = f"nasviz-map-{self.token}-{i}"
            fut = c.submit(score_task, self.token, self.data, name, choice, key=key,
                           retries=o.retries, pure=False, priority=-i)  # fmt: skip
            self.futures[key] = entry
            if entry is not None:
                self.by_entry[entry] = fut
            futures.append(fut)
        self.ac = distributed.as_completed(futures, loop=c.loop)
        if not need_original:
            return None
        for fut in self.ac:  # wait for the full model's score; keep what finished meanwhile
            if self.futures[fut.key] is None:
                score: float = self._value(fut, "the full model")
                return score
            self.done.append(fut)
        msg = "the full model's score never came back from the Dask cluster"
        raise SearchError(msg)

    def _value(self, fut: Any, context: str) -> Any:
        s = self.searcher
        try:
            ok, value, events = fut.result()
        except Exception as e:
            msg = f"scoring {context} on the Dask cluster failed: {type(e).__name__}: {e}"
            raise SearchError(msg) from e
        for event in events:  # e.g. the evaluator's plan, made on the worker
            s.emit(event)
        if not ok:

            def fail() -> float:
                raise value

            return s.scorer.checked(fail, context)
        return s.scorer.checked(lambda: value, context)

    def results(self) -> Iterator[tuple[str, int, float]]:
        if self.ac is None:
            return
        while self.done or not self.ac.is_empty():
            fut = self.done.popleft() if self.done else next(self.ac)
            entry = self.futures[fut.key]
            if entry is None or fut.key in self.cancelled:
                continue
            name, choice = entry
            yield name, choice, self._value(fut, f"{name}={choice}")

    def cancel(self, entries: list[Entry]) -> None:
        futs = [self.by_entry[e] for e in entries if e in self.by_entry]
        self.cancelled.update(f.key for f in futs)
        if futs:
            self.client.cancel(futs)

    def close(self) -> None:
        c = self.client
        try:
            # the client may be gone already: closing must not mask the error that got us here
            with contextlib.suppress(Exception):
                pending = [f for f in self.by_entry.values() if not f.done()]
                if pending:
                    c.cancel(pending)
                if self.data is not None:
                    c.cancel([self.data])
                    c.run(release, self.token)
        finally:
            self.by_entry, self.futures, self.data, self.ac = {}, {}, None, None
            if self.owned:
                c.close()


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        msg = f"a Dask executor needs dask.distributed, which is not installed: {_INSTALL}"
        raise SearchError(msg) from e
    return distributed


def is_client(obj: Any) -> bool:
    """Whether ``obj`` is a ``distributed.Client`` (Dask is imported only for objects from it)."""
    module = type(obj).__module__ or ""
    if not module.startswith("distributed"):
        return False
    return isinstance(obj, _import_distributed().Client)


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1, **kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` on 127.0.0.1 only, no dashboard, worker processes.

    The nanny's ``MALLOC_TRIM_THRESHOLD_`` is unset for the workers (torch runs ~35% faster).
    Other keyword arguments go to ``LocalCluster``. Close it (``cluster.close()``) when done.
    """
    _import_distributed()
    import dask
    from distributed import LocalCluster

    options: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        **kwargs,
    }
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(**options)
