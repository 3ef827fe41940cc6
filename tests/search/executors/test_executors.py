"""Executors: the sensitivity map in process and on a real Dask LocalCluster (127.0.0.1 only).

One 2-worker cluster (processes, one thread each) serves the module; the scores are known by
construction (``KnownScore``) or compared with the in-process map, entry by entry.
"""

from __future__ import annotations

import multiprocessing.resource_tracker
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nasviz as nv
from nasviz.errors import SearchError
from nasviz.fastnas import BinarySearcher
from nasviz.search.events import MapEntry, MapFinished, MapStarted
from nasviz.search.executors import (
    DaskExecutor,
    LocalExecutor,
    MapSchedule,
    SweepRun,
    local_cluster,
    resolve_executor,
)
from nasviz.testing import FC1, FC2, KNOWN_DROPS, TinyMLP, searchable_mlp

distributed = pytest.importorskip("distributed")

A, B = FC1, FC2
DROPS = KNOWN_DROPS
EXPECTED = {n: {c: d for c, d in v.items() if c != 16} for n, v in DROPS.items()}
MLP = TinyMLP


def _mlp() -> tuple[nn.Module, torch.Tensor]:
    return searchable_mlp()


class KnownScore:
    """score = 1 - drop(fc1) - drop(fc2); sleeps ``delay`` s; logs ``pid entry`` to ``log``."""

    def __init__(self, delay: float = 0.0, log: str | None = None) -> None:
        self.delay, self.log = delay, log

    def __call__(self, model: nn.Module) -> float:
        cfg = nv.get_subnet_config(model)
        time.sleep(self.delay)
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()} {cfg[A]},{cfg[B]}\n")
        return 1.0 - DROPS[A][cfg[A]] - DROPS[B][cfg[B]]


def _search(model: nn.Module, x: Any, **config: Any) -> tuple[dict[str, Any], list[Any]]:
    events: list[Any] = []
    config.setdefault("score_func", KnownScore())
    config["callbacks"] = [events.append, *config.get("callbacks", [])]
    state = BinarySearcher().search(model, {"flops": "60%"}, dummy_input=x, config=config)
    return state, events


def _cnn_and_data() -> tuple[nn.Module, torch.Tensor, DataLoader, DataLoader]:
    """A converted CNN with BatchNorm; a *shuffled* calibration loader with its own generator."""
    from nasviz.demo import demo_config
    from nasviz.models import DigitsCNN

    torch.manual_seed(0)
    images, labels = torch.rand(96, 1, 8, 8), torch.randint(0, 10, (96,))
    calib = DataLoader(TensorDataset(images[:64], labels[:64]), batch_size=16, shuffle=True,
                       generator=torch.Generator().manual_seed(3))  # fmt: skip
    val = DataLoader(TensorDataset(images[64:], labels[64:]), batch_size=16)
    x = images[:2]
    model = nv.convert(DigitsCNN(width=8), mode=[("fastnas", demo_config())], dummy_input=x)
    return model, x, calib, val


def neg_ce_on(val: DataLoader) -> Any:
    def score(model: nn.Module) -> float:
        return -sum(float(nn.functional.cross_entropy(model(x), y)) for x, y in val)

    return score


def _close(a: dict[str, dict[int, float]], b: dict[str, dict[int, float]]) -> bool:
    """The same map up to float rounding (1 - a - b is not exact)."""
    return a.keys() == b.keys() and all(
        a[n].keys() == b[n].keys() and all(abs(a[n][c] - b[n][c]) < 1e-9 for c in a[n]) for n in a
    )


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


pytestmark = pytest.mark.usefixtures("one_thread")  # as the workers have; conftest.py


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    # Python's resource tracker (one per interpreter, not part of any cluster) may be started by
    # the first spawn: start it first so that only the cluster's processes are compared below.
    multiprocessing.resource_tracker.ensure_running()
    before = _children()
    cluster = local_cluster(n_workers=2)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()
    assert _children() == before


# -- in process, no cluster ---------------------------------------------------------------------
def test_converted_model_pickles_with_cloudpickle_not_stdlib_pickle() -> None:
    model, x = _mlp()
    copy = pickle.loads(cloudpickle.dumps(model))
    nv.select(model, {A: 8, B: 4})
    nv.select(copy, {A: 8, B: 4})
    assert nv.PatchManager.is_patched(copy) and copy.forward.__self__ is copy
    assert torch.equal(model(x), copy(x))
    # stdlib pickle writes the patched instance methods by name and cannot read them back
    with pytest.raises(AttributeError, match="hooked_forward"):
        pickle.loads(pickle.dumps(model))


def test_resolve_executor_values() -> None:
    assert resolve_executor(None) == resolve_executor("local") == LocalExecutor()
    ex = DaskExecutor("tcp://127.0.0.1:8786", retries=3)
    assert resolve_executor(ex) is ex
    assert resolve_executor("tcp://127.0.0.1:8786") == DaskExecutor("tcp://127.0.0.1:8786")
    with pytest.raises(SearchError, match=r"config\['executor'\] must be 'local'"):
        resolve_executor(42)
    with pytest.raises(SearchError, match="retries=-1"):
        DaskExecutor("tcp://127.0.0.1:8786", retries=-1)
    with pytest.raises(SearchError, match="threads=0"):
        DaskExecutor("tcp://127.0.0.1:8786", threads=0)


class FakeRun(SweepRun):
    """Returns the given scores in the given order; records cancellations."""

    def __init__(self, arrivals: list[tuple[str, int, float]]) -> None:
        self.arrivals, self.cancelled, self.started = arrivals, [], None

    def start(self, entries: list[tuple[str, int]], need_original: bool) -> float | None:
        self.started = list(entries)
        return None

    def results(self) -> Iterator[tuple[str, int, float]]:
        for name, choice, score in self.arrivals:
            if (name, choice) not in self.cancelled:
                yield name, choice, score

    def cancel(self, entries: list[tuple[str, int]]) -> None:
        self.cancelled.extend(entries)

    def close(self) -> None:
        pass


def test_schedule_orders_out_of_order_results_and_applies_skip_rules() -> None:
    from nasviz.search.evaluator import SkipRule

    order = {"a": [4, 8, 12], "b": [4, 8, 12]}
    known = {"b": {4: 0.5}}  # from a checkpoint
    sched = MapSchedule(order, known, SkipRule("negligible", 1e-3))
    sched.original_score = 1.0
    assert sched.todo() == [("a", 4), ("a", 8), ("a", 12), ("b", 8), ("b", 12)]
    # b=8 is negligible: b=12 is implied (0.0) and cancelled; a arrives out of order
    run = FakeRun([("a", 8), ("b", 8), ("a", 12), ("a", 4), ("b", 12)])
    run.arrivals = [(n, c, {("a", 4): 0.7, ("a", 8): 0.9, ("a", 12): 0.95, ("b", 8): 1.0,
                            ("b", 12): 0.2}[(n, c)]) for n, c in run.arrivals]  # fmt: skip
    final = [(e.hparam, e.choice, round(e.drop, 6), e.skipped) for e in sched.run(run)]
    assert final == [
        ("b", 4, 0.5, True),  # known: final at once
        ("b", 8, 0.0, False),
        ("b", 12, 0.0, True),  # implied by the rule, never scored
        ("a", 4, 0.3, False),  # a=8 and a=12 waited for a=4
        ("a", 8, 0.1, False),
        ("a", 12, 0.05, False),
    ]
    assert run.cancelled == [("b", 12)]
    assert _close(known, {"a": {4: 0.3, 8: 0.1, 12: 0.05}, "b": {4: 0.5, 8: 0.0, 12: 0.0}})
    assert sched.todo() == []


def test_local_sweep_is_seeded_and_leaves_the_callers_random_state() -> None:
    model, x, calib, val = _cnn_and_data()
    gen_state = calib.generator.get_state()
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    after_map: dict[str, torch.Tensor] = {}

    def at_map_end(event: Any) -> None:
        if isinstance(event, MapFinished):
            after_map.update(rng=torch.get_rng_state(), gen=calib.generator.get_state())

    config = {"score_func": neg_ce_on(val), "data_loader": calib, "executor": "local"}
    first, _ = _search(model, x, callbacks=[at_map_end], **config)
    # the map drew every unit from its own seeded state: the caller's state is as before
    assert torch.equal(after_map["rng"], rng) and torch.equal(after_map["gen"], gen_state)
    model2, _, calib2, val2 = _cnn_and_data()  # fresh loaders: the search advanced the others
    torch.manual_seed(7)  # another caller state: the same map
    second, _ = _search(model2, x, score_func=neg_ce_on(val2), data_loader=calib2)
    assert second["sensitivity_map"] == first["sensitivity_map"]


def test_unreachable_scheduler_names_address_and_timeout() -> None:
    model, x = _mlp()
    t = time.perf_counter()
    with pytest.raises(SearchError, match=r"'tcp://127\.0\.0\.1:1' within timeout=1 s"):
        _search(model, x, executor=DaskExecutor("tcp://127.0.0.1:1", timeout=1))
    assert time.perf_counter() - t < 15


def test_unpicklable_score_func_raises_before_anything_is_sent() -> None:
    model, x = _mlp()
    lock = threading.Lock()

    def score(m: nn.Module) -> float:
        with lock:
            return 1.0

    # the address is unreachable: the pickling error comes first, before any connection
    with pytest.raises(SearchError, match=r"config\['score_func'\]'s closure variable 'lock'"):
        _search(model, x, score_func=score, executor=DaskExecutor("tcp://127.0.0.1:1", timeout=1))


def test_unpicklable_metric_is_named() -> None:
    model, x = _mlp()
    loader = [(torch.randn(4, 8), torch.randint(0, 4, (4,)))]
    handle = threading.Lock()  # cannot be pickled

    def metric(out: torch.Tensor, y: torch.Tensor) -> float:
        return 0.0 if handle.locked() else 1.0

    with pytest.raises(SearchError, match=r"config\['metric'\]'s closure variable 'handle'"):
        _search(model, x, score_func=None, score_loader=loader, metric=metric,
                executor=DaskExecutor("tcp://127.0.0.1:1", timeout=1))  # fmt: skip


# -- on the cluster -----------------------------------------------------------------------------
def test_cluster_is_local_only_without_dashboard(client: Any) -> None:
    cluster = client.cluster
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    assert all(w.startswith("tcp://127.0.0.1:") for w in client.scheduler_info()["workers"])
    listening = [
        c.laddr.ip
        for p in [psutil.Process(), *psutil.Process().children(recursive=True)]
        for c in p.net_connections("inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening and set(listening) == {"127.0.0.1"}
    assert "distributed.dashboard" not in sys.modules  # the bokeh dashboard was never loaded
    trim = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert set(trim.values()) == {None}


def test_distributed_map_equals_local_map(client: Any) -> None:
    def run(**executor: Any) -> tuple[dict[str, Any], list[Any]]:
        model, x, calib, val = _cnn_and_data()  # fresh: a search advances its loaders
        config = {"score_func": neg_ce_on(val), "data_loader": calib, "max_iter_data_loader": 3}
        return _search(model, x, **config, **executor)

    local, _ = run()
    remote, events = run(executor=client)
    assert remote["original_score"] == local["original_score"]
    assert remote["sensitivity_map"] == local["sensitivity_map"]  # bit for bit
    assert remote["best"] == local["best"]
    entries = [e for e in events if isinstance(e, MapEntry)]
    assert sorted(e.index for e in entries) == list(range(len(entries)))
    assert set(client.run(torch.get_num_threads).values()) == {1}


def test_distributed_evaluator_form_equals_local_with_skip_rule(client: Any) -> None:
    model, x = _mlp()
    with torch.no_grad():  # fc1's weakest half is dead: widths >= 8 lose nothing
        model.fc1.weight[8:] = 0.0
        model.fc1.bias[8:] = -1.0
    data = [(torch.randn(16, 8), torch.randint(0, 4, (16,))) for _ in range(2)]
    config = {"score_func": None, "score_loader": data, "metric": "neg_cross_entropy"}
    local, local_events = _search(model, x, **config)
    model2, _ = _mlp()
    with torch.no_grad():
        model2.fc1.weight[8:] = 0.0
        model2.fc1.bias[8:] = -1.0
    remote, events = _search(model2, x, executor=client, **config)
    assert remote["sensitivity_map"] == local["sensitivity_map"]
    assert local["sensitivity_map"][A][12] == 0.0  # implied by the "negligible" rule

    def flags(evs: list[Any]) -> dict[tuple[str, int], bool]:
        return {(e.hparam, e.choice): e.skipped for e in evs if isinstance(e, MapEntry)}

    assert flags(events) == flags(local_events)
    assert flags(events)[(A, 4)] is False and flags(events)[(A, 12)] is True

    def n_scored(evs: list[Any]) -> int:
        return next(e.n_scored for e in evs if isinstance(e, MapFinished))

    assert n_scored(events) == n_scored(local_events) < 6


def test_a_score_func_failing_on_a_worker_names_the_entry(client: Any) -> None:
    def failing(model: nn.Module) -> float:
        if nv.get_subnet_config(model)[A] == 4:
            raise ValueError("no good at 4")
        return 1.0

    model, x = _mlp()
    match = r"score_func raised ValueError while scoring fc1\.out_features=4: no good at 4"
    with pytest.raises(SearchError, match=match):
        _search(model, x, score_func=failing, executor=client)


def test_heatmap_fills_live_from_a_remote_sweep(client: Any) -> None:
    from nasviz.widgets.heatmap import SensitivityHeatmap

    heatmap = SensitivityHeatmap()
    cells: list[int] = []
    times: dict[str, float] = {}

    def watch(event: Any) -> None:
        if isinstance(event, MapEntry):
            cells.append(heatmap.n_cells)
            times.setdefault("first", time.perf_counter())
        elif isinstance(event, MapFinished):
            times["finished"] = time.perf_counter()

    model, x = _mlp()
    state, _ = _search(model, x, score_func=KnownScore(delay=0.3), executor=client,
                       callbacks=[heatmap.callback, watch])  # fmt: skip
    assert cells == [1, 2, 3, 4, 5, 6]  # one more cell per remote result, as it arrived
    assert times["finished"] - times["first"] > 0.5  # results streamed, not delivered at once
    assert heatmap.sensitivity_map == state["sensitivity_map"]
    assert _close(state["sensitivity_map"], EXPECTED)


def test_killed_worker_costs_only_its_tasks(client: Any, tmp_path: Path) -> None:
    log, ckpt = tmp_path / "scored.log", tmp_path / "search.pt"
    pids = client.run(os.getpid)  # worker address -> process id
    killed: list[int] = []
    held: list[Any] = []

    def kill_one(event: Any) -> None:  # at the first result: kill a worker that holds tasks
        if isinstance(event, MapEntry) and not killed:
            busy = {w: keys for w, keys in client.processing().items() if keys}
            victim = next(iter(busy))
            os.kill(pids[victim], signal.SIGKILL)
            killed.append(pids[victim])
            held.extend(busy[victim])

    model, x = _mlp()
    state, _ = _search(model, x, score_func=KnownScore(delay=0.4, log=str(log)),
                            executor=DaskExecutor(client, retries=2), checkpoint=str(ckpt),
                            callbacks=[kill_one])  # fmt: skip
    assert killed and held and not psutil.pid_exists(killed[0])  # it died holding tasks
    assert _close(state["sensitivity_map"], EXPECTED)
    saved = torch.load(ckpt, weights_only=True)["sensitivity_map"]
    assert saved == state["sensitivity_map"]
    remote = [
        ln.split()[1] for ln in log.read_text().splitlines() if int(ln.split()[0]) != os.getpid()
    ]
    # the full model and the 6 entries, each scored on the cluster...
    assert set(remote) == {"16,16", "4,16", "8,16", "12,16", "16,4", "16,8", "16,12"}
    # ...once, except what the killed worker held: its running task (one thread) and a result
    # finished but not yet fetched
    assert len(remote) <= 7 + 2
    print(f"scored on the cluster: {len(remote)} for 7 tasks; killed worker held {len(held)}")


def test_sweep_resumes_after_the_client_died(client: Any, tmp_path: Path) -> None:
    """A client process killed mid-sweep; the sweep restarted from its checkpoint skips the done."""
    ckpt, log = tmp_path / "search.pt", tmp_path / "scored.log"
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parents[2])!r})
from search.executors.test_executors import KnownScore, _mlp, _search
model, x = _mlp()
_search(model, x, score_func=KnownScore(delay=0.5, log={str(log)!r}),
        executor={client.scheduler.address!r}, checkpoint={str(ckpt)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.exists():
                smap = torch.load(ckpt, weights_only=True)["sensitivity_map"]
                if sum(len(v) for v in smap.values()) >= 2:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the client finished (or failed) before it was killed"
        proc.kill()
    finally:
        proc.wait(10)
    saved = torch.load(ckpt, weights_only=True)
    done = {(n, c) for n, v in saved["sensitivity_map"].items() for c in v}
    assert 2 <= len(done) < 6
    model, x = _mlp()
    log.write_text("")
    state, events = _search(model, x, score_func=KnownScore(log=str(log)), executor=client,
                            checkpoint=str(ckpt), final_candidates=1)  # fmt: skip
    started = next(e for e in events if isinstance(e, MapStarted))
    assert started.done == len(done)
    rescored = [e for e in events if isinstance(e, MapEntry) and not e.skipped]
    assert {(e.hparam, e.choice) for e in rescored} == {
        (n, c) for n, v in EXPECTED.items() for c in v
    } - done
    assert _close(state["sensitivity_map"], EXPECTED)
