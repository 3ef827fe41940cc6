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

*The model* (:class:`LatencyTable`, built by :func:`build_latency_table`). Latency is not FLOPs:
small widths pay fixed per-op overheads and vector-width steps. The table measures, on the device,

* ``full``: every hparam at its original width; ``minimum``: every hparam at its smallest choice;
* ``delta[h][c]``: the latency of the full subnet with only hparam ``h`` at choice ``c``, minus
  ``full`` (at up to ``max_choices`` choices per hparam, evenly spread and always including the
  smallest; the others are interpolated linearly in the width).

Single-hparam deltas add up exactly for a cost that is a sum of per-hparam terms, but a layer
between two pruned groups costs about ``k * c_in * c_out``: summing its two deltas misses the
product ``k * (c_in - C_in) * (c_out - C_out)``. That interaction is known exactly in FLOPs from the
cost model, so the prediction adds it back converted to time::

    latency(c) = scale * (full + sum_h delta[h][c_h] + kappa * interaction_flops(c))
    interaction_flops(c) = flops(c) - (flops_full + sum_h (flops(full with h=c_h) - flops_full))

``kappa`` (seconds per FLOP) is fitted by least squares on the smallest subnet and
``calibration`` random whole subnets (with no interaction anywhere, on the table's own entries),
and bounded by the full model's average seconds per FLOP. Every subnet of the build is measured
*paired* with the full model right after it, and kept as that ratio times the quietest full
reading: on shared cores the load (and every reading) moved by 3x within a minute, the ratios by a
few %. ``scale`` (1.0 when built) is raised by
a search whose final real measurement came out over the predicted value (``tighten``).
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
import random
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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

Config = Mapping[str, int]
#: A function returning the measured seconds of one subnet ``{hparam name: value}``.
SubnetMeasure = Callable[[Config], float]
#: A function returning the exact FLOPs of one subnet.
SubnetFlops = Callable[[Config], float]


def parse_duration(text: str) -> float | None:
    """``"2.5ms" -> 0.0025`` (seconds); ``None`` when ``text`` is not a number with a time unit.
    Sign and range are the caller's to check."""
    match = _DURATION.match(text.strip())
    if match is None:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_latency(seconds: float) -> str:
    """``0.0025 -> "2.5 ms"``, ``8e-4 -> "800 us"`` (three significant digits)."""
    scale, unit = next(
        ((k, u) for k, u in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")) if abs(seconds) >= k),
        (1e-9, "ns"),
    )
    value = seconds / scale
    return f"{value:.0f} {unit}" if abs(value) >= 100 else f"{value:.3g} {unit}"


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
    tensor = next(iter(model.parameters()), None)
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
        raise NasvizError(f"min_run_time={min_run_time!r} must be a positive number of seconds")
    if statistic not in ("min", "median"):
        raise NasvizError(f"statistic={statistic!r}: use 'min' or 'median'")
    device = _device(model)
    if clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise NasvizError(
            f"clock='cpu' measures one CPU thread, but the model runs on {device} with "
            f"{torch.get_num_threads()} thread(s); use clock='wall', or "
            "torch.set_num_threads(1) on a CPU model"
        )
    if clock not in ("wall", "cpu"):
        raise NasvizError(f"clock={clock!r}: use 'wall' or 'cpu'")
    now = timer or (time.thread_time if clock == "cpu" else time.perf_counter)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
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
        raw = f"{self.device}|{self.threads}|{self.batch}|{self.fingerprint}"
        return f"latency-{hashlib.sha256(raw.encode()).hexdigest()[:16]}.json"


def latency_key(
    model: nn.Module, dummy_input: Any, choices: Mapping[str, Sequence[int]], extra: str = ""
) -> LatencyKey:
    """The cache key of ``model`` measured on ``dummy_input`` with these hparam choices: the
    architecture fingerprint covers the model's class, every parameter's name and shape, the
    hparams' names and choices, and ``extra`` (how the table is measured and fitted)."""
    h = hashlib.sha256(f"{type(model).__qualname__}|{extra}".encode())
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
    for name in sorted(choices):
        h.update(f"{name}={list(choices[name])};".encode())
    return LatencyKey(str(_device(model)), torch.get_num_threads(), batch_size(dummy_input),
                      h.hexdigest()[:24])


# -- the table ----------------------------------------------------------------------------------
@dataclass
class LatencyTable:
    """Measured latencies of single-hparam subnets, and the prediction they give (see module
    docstring). Seconds throughout; ``choices``/``original`` describe the hparams measured."""

    choices: dict[str, list[int]]
    original: dict[str, int]
    full: float
    minimum: float
    delta: dict[str, dict[int, float]]
    flops_full: float
    flops_delta: dict[str, dict[int, float]]
    kappa: float = 0.0
    scale: float = 1.0
    measurements: int = 0
    build_seconds: float = 0.0
    key: dict[str, Any] = field(default_factory=dict)

    def additive(self, config: Config) -> float:
        """``full + sum_h delta[h][c_h]`` (hparams missing from ``config`` at full width)."""
        total = self.full
        for name, value in config.items():
            row = self.delta.get(name)
            if row is not None and value != self.original[name]:
                total += row[int(value)]
        return total

    def interaction(self, config: Config, flops: float) -> float:
        """The FLOPs the additive sum misses (``flops`` is the subnet's exact FLOPs)."""
        summed = self.flops_full + sum(
            self.flops_delta[n][int(v)] for n, v in config.items() if n in self.flops_delta
        )
        return float(flops) - summed

    def raw(self, config: Config, flops: float) -> float:
        """The prediction before ``scale``."""
        return self.additive(config) + self.kappa * self.interaction(config, flops)

    def predict(self, config: Config, flops: float) -> float:
        """Predicted seconds of ``config`` whose exact FLOPs are ``flops``."""
        return self.scale * self.raw(config, flops)

    def predict_many(self, names: Sequence[str], values: Any, flops: Any) -> np.ndarray:
        """Row-wise :meth:`predict` over an ``(n, len(names))`` array of values."""
        grid = np.asarray(values, dtype=np.int64).reshape(-1, len(names))
        total = np.full(grid.shape[0], self.full - self.kappa * self.flops_full)
        for j, name in enumerate(names):
            if name not in self.delta:
                continue
            lut = {c: self.delta[name].get(c, 0.0) - self.kappa * self.flops_delta[name][c]
                   for c in self.choices[name]}
            total += np.array([lut[int(v)] for v in grid[:, j]])
        return self.scale * (total + self.kappa * np.asarray(flops, dtype=np.float64))

    def tighten(self, predicted: float, measured: float, margin: float = 0.02) -> float:
        """Raise ``scale`` after a subnet predicted at ``predicted`` seconds measured
        ``measured``: the next predictions of that subnet land ``margin`` above its measurement.
        Returns the new scale (never lowered)."""
        if predicted > 0 and measured > predicted:
            self.scale = max(self.scale, self.scale * measured / predicted * (1.0 + margin))
        return self.scale

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatencyTable:
        d = dict(data)
        for k in ("delta", "flops_delta"):
            d[k] = {n: {int(c): float(v) for c, v in row.items()} for n, row in d[k].items()}
        d["choices"] = {n: [int(c) for c in cs] for n, cs in d["choices"].items()}
        return cls(**d)

    def __repr__(self) -> str:
        return (
            f"LatencyTable({len(self.delta)} hparams, full={format_latency(self.full)}, "
            f"min={format_latency(self.minimum)}, {self.measurements} measurements in "
            f"{self.build_seconds:.1f}s, kappa={self.kappa:.3g} s/FLOP, scale={self.scale:.3g})"
        )


def _spread(choices: Sequence[int], k: int) -> list[int]:
    """Up to ``k`` choices evenly spread over ``choices`` (without the last, the original),
    always including the smallest."""
    reduced = list(choices[:-1])
    if len(reduced) <= k:
        return reduced
    idx = np.unique(np.round(np.linspace(0, len(reduced) - 1, k)).astype(int))
    return [reduced[i] for i in idx]


def _interpolate(points: Mapping[int, float], choices: Sequence[int]) -> dict[int, float]:
    xs = sorted(points)
    return {int(c): float(np.interp(c, xs, [points[x] for x in xs])) for c in choices}


def build_latency_table(
    choices: Mapping[str, Sequence[int]],
    original: Mapping[str, int],
    measure: SubnetMeasure,
    flops: SubnetFlops,
    *,
    max_choices: int = 5,
    calibration: int = 4,
    seed: int = 0,
    smooth: bool = True,
    noise_pairs: int = 3,
) -> LatencyTable:
    """Measure the table (see the module docstring).

    Args:
        choices: ``{hparam name: sorted choices}`` (the last is the original width).
        original: ``{hparam name: original width}``.
        measure: seconds of one subnet (``{name: value}``, every hparam given).
        flops: exact FLOPs of one subnet.
        max_choices: reduced choices measured per hparam (the rest interpolated); the build
            costs the measurements listed below.
        calibration: random whole subnets measured to fit ``kappa``.
        smooth: replace each hparam's measured deltas by one least-squares slope in that
            hparam's own FLOPs deltas (``delta[h][c] = s_h * flops_delta[h][c]``). A single
            reading on shared cores moves by tens of %, far more than most single-hparam deltas;
            one slope per hparam averages its readings and still keeps what FLOPs miss (a
            depthwise conv's seconds per FLOP are not a dense conv's). ``False`` keeps every
            measured delta and interpolates between them (for quiet, dedicated devices).

    Every subnet is measured *paired*: right after it, the full model is measured again, and
    the table keeps the ratio times the quietest full reading, so a machine whose load changes
    during the build (other processes on shared cores) moves the readings but not the ratios.
    The build makes ``2 * (1 + sum_h min(max_choices, len(choices_h) - 1) + calibration)``
    measurements (the smallest subnet, the entries, the calibration subnets, each paired).
    """
    if max_choices < 1:
        raise NasvizError(f"max_choices={max_choices!r} must be at least 1")
    if calibration < 0:
        raise NasvizError(f"calibration={calibration!r} must be 0 or more")
    t0 = time.perf_counter()
    names = list(choices)
    full_cfg = {n: int(original[n]) for n in names}
    min_cfg = {n: int(min(choices[n])) for n in names}
    fulls: list[float] = []

    def relative(cfg: Config) -> float:
        """``cfg``'s latency over the full model's, measured right after it."""
        t = measure(cfg)
        fulls.append(measure(full_cfg))
        return t / fulls[-1]

    rng = random.Random(seed)
    calib = [{n: int(rng.choice(list(choices[n]))) for n in names} for _ in range(calibration)]
    r_min = relative(min_cfg)
    r_entry = {
        name: {int(c): relative({**full_cfg, name: int(c)}) for c in _spread(choices[name],
                                                                              max_choices)}
        for name in names
    }
    r_calib = [relative(cfg) for cfg in calib]
    # the full model paired with itself: how far a ratio strays from 1 by noise alone
    r_self = [relative(full_cfg) for _ in range(noise_pairs)] if smooth else []
    full = min(fulls)  # the quietest reading: the ratios carry everything else
    flops_full = float(flops(full_cfg))
    flops_delta = {
        name: {int(c): float(flops({**full_cfg, name: int(c)})) - flops_full for c in choices[name]}
        for name in names
    }
    # whole subnets (the smallest and the calibration ones): seconds per FLOP, kappa
    whole = [(min_cfg, r_min), *zip(calib, r_calib)]
    dF = np.array([float(flops(cfg)) - flops_full for cfg, _ in whole])
    dL = np.array([(r - 1.0) * full for _, r in whole])
    kappa = float(dL @ dF) / float(dF @ dF) if float(dF @ dF) > 0 else 0.0
    kappa = float(np.clip(kappa, 0.0, full / flops_full if flops_full > 0 else 0.0))
    # noise of one measured latency difference: the whole subnets' residuals around kappa
    # (model misfit included: conservative), or the full model's self-pairs, if larger
    resid = dL - kappa * dF
    noise2 = float(resid @ resid) / max(len(whole) - 1, 1) if len(whole) > 1 else 0.0
    if r_self:
        noise2 = max(noise2, float(np.mean([(r - 1.0) ** 2 for r in r_self])) * full**2)
    delta: dict[str, dict[int, float]] = {}
    raw_slope: dict[str, float] = {}
    spread: dict[str, float] = {}
    for name in names:
        measured = {int(original[name]): 0.0}
        measured.update({c: (r - 1.0) * full for c, r in r_entry[name].items()})
        points = [(d, flops_delta[name][c]) for c, d in measured.items() if c != original[name]]
        d_arr, f_arr = np.array(points).reshape(-1, 2).T
        ff = float(f_arr @ f_arr)
        if not smooth or ff == 0:
            delta[name] = _interpolate(measured, choices[name])
            continue
        raw_slope[name] = float(d_arr @ f_arr) / ff
        spread[name] = noise2 / ff  # the variance of that slope from noise alone
    if raw_slope:
        # empirical Bayes: slopes vary around kappa by tau^2 beyond their noise; each is shrunk
        # towards kappa by its noise share (a quiet device keeps its LUT, a noisy one its FLOPs)
        excess = [(s - kappa) ** 2 - spread[n] for n, s in raw_slope.items()]
        tau2 = max(0.0, float(np.mean(excess)))
        for name, slope in raw_slope.items():
            keep = tau2 / (tau2 + spread[name]) if tau2 + spread[name] > 0 else 1.0
            s_h = kappa + keep * (slope - kappa)
            delta[name] = {c: s_h * flops_delta[name][c] for c in map(int, choices[name])}
    table = LatencyTable(
        choices={n: [int(c) for c in choices[n]] for n in names},
        original=dict(full_cfg),
        full=full,
        minimum=r_min * full,
        delta=delta,
        flops_full=flops_full,
        flops_delta=flops_delta,
        kappa=kappa,
    )
    if not smooth:  # the raw table: kappa is what its additive sum leaves on the whole subnets
        x = np.array([table.interaction(cfg, float(flops(cfg))) for cfg, _ in whole])
        y = np.array([r * full - table.additive(cfg) for cfg, r in whole])
        bound = full / flops_full if flops_full > 0 else 0.0
        table.kappa = float(np.clip(float(x @ y) / float(x @ x), 0.0, bound)) if x @ x else 0.0
    n_measured = 2 * (1 + sum(len(r) for r in r_entry.values()) + calibration + len(r_self))
    table.measurements = n_measured
    table.build_seconds = time.perf_counter() - t0
    return table


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
    with that search)."""
    hit = _CACHE.get(key)
    if hit is not None:
        return LatencyTable.from_json({**hit.to_json(), "scale": 1.0}), "memory"
    path = None if cache_dir is None else Path(cache_dir) / key.filename()
    if path is not None and path.exists():
        try:
            data = json.loads(path.read_text())
            table = LatencyTable.from_json({**data, "scale": 1.0})
        except (ValueError, TypeError, KeyError) as e:
            raise NasvizError(
                f"latency cache file {str(path)!r} could not be read ({e}); delete it to rebuild"
            ) from e
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
