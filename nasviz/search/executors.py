"""Executors: where the sensitivity map's entries are scored (in process, or on a Dask cluster).

The sensitivity map is one independent evaluation per (channel group, width): embarrassingly
parallel. ``config["executor"]`` says where they run:

* absent, ``None`` or ``"local"``: in process, one after the other (:class:`LocalExecutor`);
* a ``dask.distributed.Client``, a scheduler address (``"tcp://127.0.0.1:8786"``) or a
  :class:`DaskExecutor` (to set ``retries``, ``threads``, ``timeout``): on that cluster.

The searcher's sweep asks the executor to run the entries and consumes the results as they
complete; every result becomes the same :class:`~nasviz.search.events.MapEntry` event, so a
``SensitivityHeatmap`` fills live from a remote sweep with no change (entries arrive in completion
order; ``MapEntry.index`` counts them). Everything else (bisection, growth, the final candidates)
stays in process: it is cheap, or a handful of scores.

**On a cluster.** The model (converted, at full width), the ``score_func`` and the calibration
loop (or the evaluator form's data and metric) and the seed are pickled once, with cloudpickle,
into one ``bytes`` payload and scattered to every worker; each entry is one task that unpickles
the payload once per worker process and then only selects and scores. Shipping bytes is a
choice: Dask's own serialisation tries stdlib pickle first, which writes a nasviz-patched model
(its ``forward``/``train`` are bound on the instance) but cannot load it back, and its
``nn.Module`` serialiser turns hook registries into plain dicts. Nothing that cannot be pickled
gets past the client: it raises :class:`~nasviz.errors.SearchError` naming the part (e.g.
``config['score_func']'s closure variable 'lock'``) before any task is sent. Workers use
``threads=1`` torch thread each unless told otherwise (``torch.set_num_threads`` in the worker
process), and score one entry at a time (give them ``threads_per_worker=1``).

**Same map.** Every scoring unit, in process or remote, starts from the same random state: torch's
RNG seeded with ``config["seed"]`` and every ``torch.Generator`` found in the data (e.g. a shuffled
``DataLoader``'s) put back to its state at the start of the sweep. So every entry is calibrated on
the same batches wherever and in whatever order it runs, and the distributed map equals the local
one (bit for bit when workers and client use the same number of torch threads; otherwise up to
floating-point rounding). The evaluator form builds its cache once per worker; its skip rules are
applied in each group's order as results arrive, and tasks a rule makes unnecessary are cancelled.
(The ``"evaluator"`` report in the search state counts only the scores made in process.)

**Faults.** A worker that dies costs only its running tasks: the scheduler runs them elsewhere
(the payload is on every worker), and tasks are submitted with ``retries``. The checkpoint is
written after every finished entry, so a sweep restarted after the client died skips every entry
already done.

**Safety.** Examples and tests bind everything to 127.0.0.1: :func:`local_cluster` makes a
``LocalCluster(host="127.0.0.1", dashboard_address=None, processes=True, threads_per_worker=1)``
(Dask's defaults listen on all interfaces and start a dashboard), and unsets the
``MALLOC_TRIM_THRESHOLD_`` Dask's nanny gives workers (it slows torch down by about a third).
Dask (``pip install 'nasviz[distributed]'``) is imported only when a cluster is used. Example::

    cluster = local_cluster(n_workers=2)
    client = distributed.Client(cluster)
    model, state = nv.prune(model, constraints={"flops": "60%"}, dummy_input=x,
                            config={"score_func": f, "data_loader": dl, "executor": client,
                                    "callbacks": [heatmap.callback], "checkpoint": "search.pt"})
    client.close(); cluster.close()
"""

from __future__ import annotations

import collections
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nasviz.errors import SearchError
from nasviz.search._remote import (
    EVALUATOR_KEYS,
    Payload,
    SeededUnits,
    dumps_payload,
    release,
    score_subnet,
    score_task,
)
from nasviz.search._schedule import Entry, FinalEntry, MapSchedule, SweepRun

__all__ = [
    "DaskExecutor",
    "FinalEntry",
    "LocalExecutor",
    "MapSchedule",
    "SweepRun",
    "local_cluster",
    "resolve_executor",
]

_INSTALL = "pip install 'nasviz[distributed]'"


def _searcher_parts(searcher: Any) -> tuple[dict[str, int], int, list[Any]]:
    cfg = searcher.config
    roots = [cfg[k] for k in ("score_func", "forward_loop", "data_loader", "score_loader")]
    return searcher._max_config(), int(cfg["seed"]), [*roots, cfg["metric"]]


def _members(searcher: Any, hps: dict[str, Any]) -> dict[str, list[str]]:
    members = {  # a channel parameter is named by its qualified name (the owner may be the root)
        g.name: [
            f"{m.module}.{m.attr}".lstrip(".") if m.how == "param" else m.module for m in g.members
        ]
        for g in searcher._space().groups
    }
    return {n: members[n] for n in hps}


# -- in process -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalExecutor:
    """Score the map in this process, one entry after the other (the default).

    Example::

        >>> BinarySearcher().search(model, {"flops": "60%"}, x,
        ...                         {"score_func": f, "executor": LocalExecutor()})["best"]
    """

    def open(self, searcher: Any, hps: dict[str, Any]) -> SweepRun:
        return _LocalRun(searcher, hps)


class _LocalRun(SweepRun):
    def __init__(self, searcher: Any, hps: dict[str, Any]) -> None:
        self.searcher, self.hps = searcher, hps
        self.full, seed, roots = _searcher_parts(searcher)
        self.units = SeededUnits(seed, roots)
        self.entries: list[Entry] = []
        self.cancelled: set[Entry] = set()

    def start(self, entries: list[Entry], need_original: bool) -> float | None:
        s, ev = self.searcher, self.searcher.evaluator
        self.entries = list(entries)
        if ev is None and not need_original:
            return None
        with self.units.unit():
            s._select(self.full)
            if ev is not None:  # the evaluator form: build the cache (and score the full model)
                members = _members(s, self.hps)
                score: float = s.checked_score(
                    lambda: ev.prepare(members, self.hps), "the full model"
                )
                return score
            return s.checked_score(self._scorer(None, None), "the full model")

    def _scorer(self, name: str | None, choice: int | None) -> Any:
        s = self.searcher
        subnet = self.full if name is None else {**self.full, name: int(choice or 0)}
        return lambda: score_subnet(
            s.model,
            subnet,
            name,
            evaluator=s.evaluator,
            score_func=s.config["score_func"],
            forward_loop=s.forward_loop,
        )

    def results(self) -> Iterator[tuple[str, int, float]]:
        for name, choice in self.entries:
            if (name, choice) in self.cancelled:
                continue
            with self.units.unit():
                score = self.searcher.checked_score(self._scorer(name, choice), f"{name}={choice}")
            yield name, choice, score

    def cancel(self, entries: list[Entry]) -> None:
        self.cancelled.update(entries)

    def close(self) -> None:
        ev = self.searcher.evaluator
        if ev is not None:  # the cache stays for the final candidates; released by the searcher
            ev.reset_calibration()
        self.units.restore()


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
            raise SearchError(f"DaskExecutor(retries={self.retries!r}): give an int >= 0")
        t = self.threads
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            raise SearchError(f"DaskExecutor(threads={t!r}): give an int >= 1, or None")
        if not isinstance(self.timeout, (int, float)) or not self.timeout > 0:
            raise SearchError(f"DaskExecutor(timeout={self.timeout!r}): give seconds > 0")
        if not isinstance(self.client, str) and not _is_client(self.client):
            raise SearchError(
                "DaskExecutor needs a distributed.Client or a scheduler address such as "
                f"'tcp://127.0.0.1:8786', got {type(self.client).__name__}"
            )

    def connect(self) -> tuple[Any, bool]:
        """``(client, owned)``: the given client, or a new one to the address (``owned``)."""
        distributed = _import_distributed()
        if not isinstance(self.client, str):
            if self.client.status not in ("running", "newly-created", "connecting"):
                raise SearchError(
                    f"the Dask client given in config['executor'] is {self.client.status}; "
                    "pass an open Client"
                )
            return self.client, False
        try:
            client = distributed.Client(self.client, timeout=self.timeout, set_as_default=False)
        except Exception as e:
            raise SearchError(
                f"could not reach the Dask scheduler at {self.client!r} within timeout="
                f"{self.timeout:g} s ({type(e).__name__}: {e}); start one there (e.g. "
                "nasviz.search.executors.local_cluster()) or fix config['executor']"
            ) from e
        return client, True

    def open(self, searcher: Any, hps: dict[str, Any]) -> SweepRun:
        return _DaskRun(self, searcher, hps)


class _DaskRun(SweepRun):
    def __init__(self, options: DaskExecutor, searcher: Any, hps: dict[str, Any]) -> None:
        self.options, self.searcher = options, searcher
        full, seed, _ = _searcher_parts(searcher)
        cfg = searcher.config
        evaluator = searcher.evaluator is not None
        payload = Payload(
            model=searcher.model,
            full=full,
            seed=seed,
            threads=options.threads,
            score_func=None if evaluator else cfg["score_func"],
            forward_loop=None if evaluator else searcher.forward_loop,
            evaluator_config={k: cfg[k] for k in EVALUATOR_KEYS} if evaluator else None,
            members=_members(searcher, hps) if evaluator else {},
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
            raise SearchError(
                f"no Dask worker joined the scheduler at {c.scheduler.address} within "
                f"{o.timeout:g} s ({type(e).__name__}: {e}); start workers or raise timeout"
            ) from e
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
        raise SearchError("the full model's score never came back from the Dask cluster")

    def _value(self, fut: Any, context: str) -> Any:
        s = self.searcher
        try:
            ok, value, events = fut.result()
        except Exception as e:
            raise SearchError(
                f"scoring {context} on the Dask cluster failed: {type(e).__name__}: {e}"
            ) from e
        for event in events:  # e.g. the evaluator's plan, made on the worker
            s.emit(event)
        if not ok:

            def fail() -> float:
                raise value

            return s.checked_score(fail, context)
        return s.checked_score(lambda: value, context)

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
        raise SearchError(
            f"a Dask executor needs dask.distributed, which is not installed: {_INSTALL}"
        ) from e
    return distributed


def _is_client(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    if not module.startswith("distributed"):
        return False
    return isinstance(obj, _import_distributed().Client)


def resolve_executor(spec: Any) -> LocalExecutor | DaskExecutor:
    """The executor ``config["executor"]`` names (see the module docstring)."""
    if spec is None or (isinstance(spec, str) and spec == "local"):
        return LocalExecutor()
    if isinstance(spec, (LocalExecutor, DaskExecutor)):
        return spec
    if isinstance(spec, str) or _is_client(spec):
        return DaskExecutor(spec)
    raise SearchError(
        "config['executor'] must be 'local' (or None), a dask.distributed.Client, a scheduler "
        f"address such as 'tcp://127.0.0.1:8786', or DaskExecutor(...); got {spec!r}"
    )


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
