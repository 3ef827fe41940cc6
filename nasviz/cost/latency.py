"""Latency measured on the model's device, and a lookup-table model that predicts it.

*Measurement.* :func:`measure_latency` times ``model(dummy_input)`` under ``torch.no_grad()`` in
eval mode at the current thread count, one call at a time (an accelerator is synchronised around
each call), and returns the fastest call. One call at a time, and not
``torch.utils.benchmark.Timer.blocked_autorange``: for a forward of a few milliseconds its blocks
hold ten calls or more, so even its fastest block averages in every preemption by the other
processes on shared cores; the fastest single call does not. Other processes only ever *add*
time, so the minimum is the default statistic. ``clock="cpu"`` (one CPU thread only) times CPU
time instead of wall time: on a loaded machine even the fastest wall-clock call was 2x its CPU
time, which moved by ~5% between runs.

*The model* (:class:`~nasviz.cost.latency_table.LatencyTable`, built by
:func:`~nasviz.cost.latency_table.build_latency_table`; re-exported here) predicts any subnet's
latency from measured single-hparam subnets and a few whole subnets.
Tables are cached per ``(device, threads, batch size, architecture fingerprint)`` in memory and,
with ``cache_dir``, as JSON files on disk (written atomically; reading JSON executes nothing).

Example::

    >>> table = build_latency_table(choices, original, measure, flops)   # see the tests
    >>> table.predict({"fc1.out_features": 16}, flops={"fc1.out_features": 16})
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nasviz.cost.latency_table import (
    LatencyTable,
    build_latency_table,
    format_latency,
)
from nasviz.errors import NasvizError

__all__ = [
    "LATENCY_FORMS",
    "LatencyKey",
    "LatencyTable",
    "batch_size",
    "build_latency_table",
    "cached_table",
    "clear_cache",
    "format_latency",
    "latency_key",
    "measure_latency",
    "parse_duration",
]

#: How to write a latency limit (used in error messages).
LATENCY_FORMS = (
    "write a time with a unit ('2.5ms', '800us', '0.01s', '1.5e-3s') or a percentage of the full "
    "model's latency ('60%')"
)
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION = re.compile(r"^([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(s|ms|us|µs|ns)$")


def parse_duration(text: str) -> float | None:
    """``"2.5ms" -> 0.0025`` (seconds); ``None`` when ``text`` is not a number with a time unit.
    Sign and range are the caller's to check.
    """
    match = _DURATION.match(text.strip())
    if match is None:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)]


def batch_size(dummy_input: Any) -> int:
    """The batch size of ``dummy_input``: the first dimension of its first tensor (1 if none)."""
    if isinstance(dummy_input, torch.Tensor):
        return int(dummy_input.shape[0]) if dummy_input.dim() else 1
    items: Sequence[Any] = ()
    if isinstance(dummy_input, Mapping):
        items = list(dummy_input.values())
    elif isinstance(dummy_input, (tuple, list)):
        items = dummy_input
    for item in items:
        if isinstance(item, torch.Tensor):
            return batch_size(item)
    return 1


def _split(dummy_input: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(dummy_input, tuple):
        return dummy_input, {}
    if isinstance(dummy_input, Mapping):
        return (), dict(dummy_input)
    return (dummy_input,), {}


def _device(model: nn.Module) -> torch.device:
    tensor: torch.Tensor | None = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def measure_latency(
    model: nn.Module,
    dummy_input: Any,
    *,
    min_run_time: float = 0.2,
    min_calls: int = 10,
    clock: str = "wall",
    timer: Callable[[], float] | None = None,
    statistic: str = "min",
) -> float:
    """Seconds per ``model(dummy_input)`` call on the model's device.

    Eval mode and ``torch.no_grad()`` (the training flags are restored), the current thread
    count, two warm-up calls, then single calls, each timed on its own (an accelerator is
    synchronised before and after each), until ``min_run_time`` seconds and ``min_calls`` calls
    are spent. Returns the fastest call (``statistic="min"``) or the median one.

    ``clock="wall"`` times with ``time.perf_counter``. ``clock="cpu"`` times the calling
    thread's CPU time (``time.thread_time``): on cores shared with other processes, a forward
    is preempted again and again and even its fastest wall-clock call includes waiting; its CPU
    time does not. It is refused unless the model runs on the CPU with one thread
    (``torch.set_num_threads(1)``), where CPU time *is* the latency of an unloaded core.
    ``timer`` replaces the clock (for tests).
    """
    if not math.isfinite(min_run_time) or min_run_time <= 0:
        msg = f"min_run_time={min_run_time!r} must be a positive number of seconds"
        raise NasvizError(msg)
    if statistic not in ("min", "median"):
        msg = f"statistic={statistic!r}: use 'min' or 'median'"
        raise NasvizError(msg)
    device = _device(model)
    if clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        msg = (
            f"clock='cpu' measures one CPU thread, but the model runs on {device} with "
            f"{torch.get_num_threads()} thread(s); use clock='wall', or "
            "torch.set_num_threads(1) on a CPU model"
        )
        raise NasvizError(msg)
    if clock not in ("wall", "cpu"):
        msg = f"clock={clock!r}: use 'wall' or 'cpu'"
        raise NasvizError(msg)
    now = timer or (time.thread_time if clock == "cpu" else time.perf_counter)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    args, kwargs = _split(dummy_input)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    times: list[float] = []
    try:
        with torch.no_grad():
            for _ in range(2):  # warm-up (lazy init, allocator, caches)
                model(*args, **kwargs)
            sync()
            while sum(times) < min_run_time or len(times) < min_calls:
                t0 = now()
                model(*args, **kwargs)
                sync()
                times.append(now() - t0)
    finally:
        for m, training in flags:
            m.training = training
    return float(min(times) if statistic == "min" else np.median(times))


# -- cache keys ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyKey:
    """What a latency table depends on: device, thread count, batch size, architecture."""

    device: str
    threads: int
    batch: int
    fingerprint: str

    def filename(self) -> str:
        """The cache file name of this key: ``latency-<16 hex digits>.json``, a SHA-256 prefix over
        all four fields.
        """
        raw = f"{self.device}|{self.threads}|{self.batch}|{self.fingerprint}"
        return f"latency-{hashlib.sha256(raw.encode()).hexdigest()[:16]}.json"


def latency_key(
    model: nn.Module, dummy_input: Any, choices: Mapping[str, Sequence[int]], extra: str = ""
) -> LatencyKey:
    """The cache key of ``model`` measured on ``dummy_input`` with these hparam choices: the
    architecture fingerprint covers the model's class, every parameter's name and shape, the
    hparams' names and choices, and ``extra`` (how the table is measured and fitted).
    """
    h = hashlib.sha256(f"{type(model).__qualname__}|{extra}".encode())
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
    for name in sorted(choices):
        h.update(f"{name}={list(choices[name])};".encode())
    return LatencyKey(
        str(_device(model)), torch.get_num_threads(), batch_size(dummy_input), h.hexdigest()[:24]
    )


# -- cache --------------------------------------------------------------------------------------
_CACHE: dict[LatencyKey, LatencyTable] = {}


def clear_cache() -> None:
    """Forget every table cached in memory (files on disk stay)."""
    _CACHE.clear()


def cached_table(
    key: LatencyKey,
    build: Callable[[], LatencyTable],
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[LatencyTable, str]:
    """The table for ``key``: from memory, else from ``cache_dir``, else ``build()`` (and stored
    in both). Returns ``(table, where)`` with ``where`` in ``"memory"``, ``"disk"``, ``"built"``.
    A cached table is returned as a copy with ``scale`` reset to 1 (a search's corrections stay
    with that search).
    """
    hit = _CACHE.get(key)
    if hit is not None:
        return LatencyTable.from_json({**hit.to_json(), "scale": 1.0}), "memory"
    path = None if cache_dir is None else Path(cache_dir) / key.filename()
    if path is not None and path.exists():
        try:
            data = json.loads(path.read_text())
            table = LatencyTable.from_json({**data, "scale": 1.0})
        except (ValueError, TypeError, KeyError) as e:
            msg = f"latency cache file {str(path)!r} could not be read ({e}); delete it to rebuild"
            raise NasvizError(msg) from e
        if table.key == asdict(key):
            _CACHE[key] = table
            return LatencyTable.from_json(table.to_json()), "disk"
    table = build()
    table.key = asdict(key)
    _CACHE[key] = table
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(table.to_json(), fh)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return LatencyTable.from_json(table.to_json()), "built"
