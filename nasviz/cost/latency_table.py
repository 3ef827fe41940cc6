"""The latency lookup table: measured single-hparam subnets, combined with the FLOPs model.

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
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nasviz.errors import NasvizError

__all__ = ["LatencyTable", "SubnetFlops", "SubnetMeasure", "build_latency_table", "format_latency"]

Config = Mapping[str, int]
#: A function returning the measured seconds of one subnet ``{hparam name: value}``.
SubnetMeasure = Callable[[Config], float]
#: A function returning the exact FLOPs of one subnet.
SubnetFlops = Callable[[Config], float]


def format_latency(seconds: float) -> str:
    """``0.0025 -> "2.5 ms"``, ``8e-4 -> "800 us"`` (three significant digits)."""
    scale, unit = next(
        ((k, u) for k, u in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")) if abs(seconds) >= k),
        (1e-9, "ns"),
    )
    value = seconds / scale
    return f"{value:.0f} {unit}" if abs(value) >= 100 else f"{value:.3g} {unit}"


@dataclass
class LatencyTable:
    """Measured latencies of single-hparam subnets, and the prediction they give (see module
    docstring). Seconds throughout; ``choices``/``original`` describe the hparams measured.
    """

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
            lut = {
                c: self.delta[name].get(c, 0.0) - self.kappa * self.flops_delta[name][c]
                for c in self.choices[name]
            }
            total += np.array([lut[int(v)] for v in grid[:, j]])
        return self.scale * (total + self.kappa * np.asarray(flops, dtype=np.float64))

    def tighten(self, predicted: float, measured: float, margin: float = 0.02) -> float:
        """Raise ``scale`` after a subnet predicted at ``predicted`` seconds measured
        ``measured``: the next predictions of that subnet land ``margin`` above its measurement.
        Returns the new scale (never lowered).
        """
        if predicted > 0 and measured > predicted:
            self.scale = max(self.scale, self.scale * measured / predicted * (1.0 + margin))
        return self.scale

    def to_json(self) -> dict[str, Any]:
        """The table's fields as a dict for ``json.dump`` (which turns the integer choice keys into
        strings; :meth:`from_json` turns them back).
        """
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatencyTable:
        """The table from :meth:`to_json`'s dict, also after a JSON round trip (choice keys and
        choices back to ints, deltas to floats).
        """
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
    always including the smallest.
    """
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
        msg = f"max_choices={max_choices!r} must be at least 1"
        raise NasvizError(msg)
    if calibration < 0:
        msg = f"calibration={calibration!r} must be 0 or more"
        raise NasvizError(msg)
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
        name: {
            int(c): relative({**full_cfg, name: int(c)})
            for c in _spread(choices[name], max_choices)
        }
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
    d_flops = np.array([float(flops(cfg)) - flops_full for cfg, _ in whole])
    d_lat = np.array([(r - 1.0) * full for _, r in whole])
    kappa = (
        float(d_lat @ d_flops) / float(d_flops @ d_flops) if float(d_flops @ d_flops) > 0 else 0.0
    )
    kappa = float(np.clip(kappa, 0.0, full / flops_full if flops_full > 0 else 0.0))
    # noise of one measured latency difference: the whole subnets' residuals around kappa
    # (model misfit included: conservative), or the full model's self-pairs, if larger
    resid = d_lat - kappa * d_flops
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
