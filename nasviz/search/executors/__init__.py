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

from typing import Any

from nasviz.errors import SearchError
from nasviz.search.executors._schedule import Entry, FinalEntry, MapSchedule, SweepRun
from nasviz.search.executors.cluster import DaskExecutor, is_client, local_cluster
from nasviz.search.executors.local import LocalExecutor, members_of

__all__ = [
    "DaskExecutor",
    "Entry",
    "FinalEntry",
    "LocalExecutor",
    "MapSchedule",
    "SweepRun",
    "local_cluster",
    "members_of",
    "resolve_executor",
]


def resolve_executor(spec: Any) -> LocalExecutor | DaskExecutor:
    """The executor ``config["executor"]`` names (see the module docstring)."""
    if spec is None or (isinstance(spec, str) and spec == "local"):
        return LocalExecutor()
    if isinstance(spec, (LocalExecutor, DaskExecutor)):
        return spec
    if isinstance(spec, str) or is_client(spec):
        return DaskExecutor(spec)
    msg = (
        "config['executor'] must be 'local' (or None), a dask.distributed.Client, a scheduler "
        f"address such as 'tcp://127.0.0.1:8786', or DaskExecutor(...); got {spec!r}"
    )
    raise SearchError(msg)
