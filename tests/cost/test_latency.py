"""Latency: parsing and formatting, the measurement with a fake clock, the lookup table's
arithmetic on a model whose latency is known exactly, and the cache.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from nasviz.cost.latency import (
    LatencyKey,
    LatencyTable,
    batch_size,
    build_latency_table,
    cached_table,
    clear_cache,
    format_latency,
    latency_key,
    measure_latency,
    parse_duration,
)
from nasviz.errors import NasvizError

H1, H2 = "fc1.out_features", "fc2.out_features"
CHOICES = {H1: [4, 8, 12, 16], H2: [4, 8, 12, 16]}
ORIGINAL = {H1: 16, H2: 16}
BASE, A, B, G = 1e-3, 2e-5, 3e-5, 1e-6  # latency = BASE + A*h1 + B*h2 + G*h1*h2 (seconds)


def known_latency(cfg: Mapping[str, int]) -> float:
    h1, h2 = cfg[H1], cfg[H2]
    return BASE + A * h1 + B * h2 + G * h1 * h2


def known_flops(cfg: Mapping[str, int]) -> float:
    """TinyMLP 8 -> h1 -> h2 -> 4 at batch 2 (2 FLOPs per multiply-add)."""
    h1, h2 = cfg[H1], cfg[H2]
    return 4.0 * (8 * h1 + h1 * h2 + h2 * 4)


class Counting:
    def __init__(self) -> None:
        self.calls: list[dict[str, int]] = []

    def __call__(self, cfg: Mapping[str, int]) -> float:
        self.calls.append(dict(cfg))
        return known_latency(cfg)


# -- parsing and formatting ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2.5ms", 2.5e-3),
        ("800us", 8e-4),
        ("800 µs", 8e-4),
        ("0.01s", 0.01),
        ("1.5e-3 s", 1.5e-3),
        ("250ns", 2.5e-7),
        (" 3 ms ", 3e-3),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["2.5 parsecs", "2.5", "ms", "2.5 msec", "60%", ""])
def test_parse_duration_refuses_what_is_not_a_time(text: str) -> None:
    assert parse_duration(text) is None


@given(st.floats(min_value=1e-9, max_value=100.0))
def test_format_then_parse_round_trips_to_three_digits(seconds: float) -> None:
    text = format_latency(seconds).replace(" ", "")
    assert parse_duration(text) == pytest.approx(seconds, rel=6e-3)


def test_batch_size_of_every_input_form() -> None:
    x = torch.zeros(5, 3)
    assert batch_size(x) == 5
    assert batch_size((x, 3)) == 5
    assert batch_size({"input_ids": torch.zeros(7, 2)}) == 7
    assert batch_size(3.0) == 1


# -- measurement with a fake clock --------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ClockedMLP(nn.Module):
    """Each forward advances a fake clock by ``known_latency`` of its widths (no sleeping)."""

    def __init__(self, clock: FakeClock, h1: int = 16, h2: int = 16) -> None:
        super().__init__()
        self.clock = clock
        self.fc1, self.fc2 = nn.Linear(8, h1), nn.Linear(h1, h2)
        self.seen_grad: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.now += known_latency({H1: self.fc1.out_features, H2: self.fc2.out_features})
        self.seen_grad.append(torch.is_grad_enabled() or self.training)
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize(("h1", "h2"), [(16, 16), (4, 12)])
def test_measure_latency_returns_the_time_per_call_of_the_clock(h1: int, h2: int) -> None:
    clock = FakeClock()
    model = ClockedMLP(clock, h1, h2).train()
    seconds = measure_latency(model, torch.zeros(2, 8), min_run_time=0.05, timer=clock)
    assert seconds == pytest.approx(known_latency({H1: h1, H2: h2}), rel=1e-9)
    assert not any(model.seen_grad)  # eval mode, no grad while timed
    assert model.training  # restored


def test_measure_latency_refuses_bad_options() -> None:
    lin, x = nn.Linear(2, 2), torch.zeros(1, 2)
    with pytest.raises(NasvizError, match=r"min_run_time=0 must be a positive number"):
        measure_latency(lin, x, min_run_time=0)
    with pytest.raises(NasvizError, match=r"statistic='mean': use 'min' or 'median'"):
        measure_latency(lin, x, statistic="mean")
    with pytest.raises(NasvizError, match=r"clock='gpu': use 'wall' or 'cpu'"):
        measure_latency(lin, x, clock="gpu")


def test_cpu_clock_needs_one_thread() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(
            NasvizError,
            match=r"clock='cpu' measures one CPU thread, but the "
            r"model runs on cpu with 2 thread\(s\); .*set_num_threads\(1\)",
        ):
            measure_latency(nn.Linear(2, 2), torch.zeros(1, 2), clock="cpu")
        torch.set_num_threads(1)
        assert (
            measure_latency(nn.Linear(2, 2), torch.zeros(1, 2), clock="cpu", min_run_time=1e-4) > 0
        )
    finally:
        torch.set_num_threads(threads)


def test_median_statistic_and_min_calls() -> None:
    clock = FakeClock()
    model = ClockedMLP(clock)
    seconds = measure_latency(
        model, torch.zeros(2, 8), min_run_time=1e-9, min_calls=3, timer=clock, statistic="median"
    )
    assert seconds == pytest.approx(known_latency({H1: 16, H2: 16}))
    assert len(model.seen_grad) == 2 + 3  # two warm-up calls, then min_calls


# -- the table ----------------------------------------------------------------------------------
def test_table_arithmetic_is_exact_on_a_bilinear_latency() -> None:
    measure = Counting()
    table = build_latency_table(
        CHOICES, ORIGINAL, measure, known_flops, calibration=2, smooth=False
    )
    full = {H1: 16, H2: 16}
    assert table.full == known_latency(full)
    assert table.minimum == pytest.approx(known_latency({H1: 4, H2: 4}))
    for c in CHOICES[H1]:
        assert table.delta[H1][c] == pytest.approx(known_latency({H1: c, H2: 16}) - table.full)
        assert table.flops_delta[H2][c] == known_flops({H1: 16, H2: c}) - known_flops(full)
    # the product term G*h1*h2 is what the additive sum misses; in FLOPs it is 4*h1*h2
    assert table.kappa == pytest.approx(G / 4, rel=1e-6)
    for h1 in CHOICES[H1]:
        for h2 in CHOICES[H2]:
            cfg = {H1: h1, H2: h2}
            assert table.predict(cfg, known_flops(cfg)) == pytest.approx(known_latency(cfg))
    # (min + 3 + 3 single-hparam entries + 2 calibration subnets), each paired with the full
    assert table.measurements == len(measure.calls) == 2 * 9
    assert measure.calls[1::2] == [full] * 9


def test_table_without_kappa_under_predicts_by_exactly_the_product_term() -> None:
    table = build_latency_table(
        CHOICES, ORIGINAL, known_latency, known_flops, calibration=0, smooth=False
    )
    table.kappa = 0.0
    cfg = {H1: 8, H2: 4}
    missed = G * (8 - 16) * (4 - 16)
    assert table.predict(cfg, known_flops(cfg)) == pytest.approx(known_latency(cfg) - missed)


def test_fewer_measured_choices_are_interpolated_linearly() -> None:
    measure = Counting()
    table = build_latency_table(
        CHOICES, ORIGINAL, measure, known_flops, max_choices=2, calibration=0, smooth=False
    )
    measured_h1 = {c[H1] for c in measure.calls if c[H2] == 16 and c[H1] != 16}
    assert measured_h1 == {4, 12}  # the smallest and an evenly spread one; 8 is interpolated
    assert table.delta[H1][8] == pytest.approx((table.delta[H1][4] + table.delta[H1][12]) / 2)
    assert table.measurements == 2 * (1 + 2 + 2)


def test_smoothing_on_a_flops_linear_latency_is_exact() -> None:
    def linear(cfg: Mapping[str, int]) -> float:
        return 1e-3 + 1e-7 * known_flops(cfg)

    table = build_latency_table(CHOICES, ORIGINAL, linear, known_flops, calibration=3)
    assert table.kappa == pytest.approx(1e-7)
    for h1 in CHOICES[H1]:
        for h2 in CHOICES[H2]:
            cfg = {H1: h1, H2: h2}
            assert table.predict(cfg, known_flops(cfg)) == pytest.approx(linear(cfg))


def test_smoothing_shrinks_each_slope_towards_kappa_by_its_noise_share() -> None:
    # a step the FLOPs do not have: h1 = 8 costs 0.5 ms more than the bilinear formula
    def stepped(cfg: Mapping[str, int]) -> float:
        return known_latency(cfg) + (5e-4 if cfg[H1] == 8 else 0.0)

    raw = build_latency_table(CHOICES, ORIGINAL, stepped, known_flops, smooth=False)
    table = build_latency_table(CHOICES, ORIGINAL, stepped, known_flops, smooth=True)
    assert raw.delta[H1][8] == pytest.approx(stepped({H1: 8, H2: 16}) - raw.full)  # kept raw
    # the same arithmetic by hand: kappa and the noise from the whole subnets ...
    rng = __import__("random").Random(0)
    calib = [{n: rng.choice(CHOICES[n]) for n in (H1, H2)} for _ in range(4)]
    whole = [{H1: 4, H2: 4}, *calib]
    full = stepped(ORIGINAL)
    d_f = [known_flops(c) - known_flops(ORIGINAL) for c in whole]
    d_l = [stepped(c) - full for c in whole]
    kappa = sum(a * b for a, b in zip(d_l, d_f)) / sum(b * b for b in d_f)
    assert table.kappa == pytest.approx(kappa)
    noise2 = sum((a - kappa * b) ** 2 for a, b in zip(d_l, d_f)) / (len(whole) - 1)
    # ... then one raw slope per hparam, shrunk by tau^2 / (tau^2 + its noise variance)
    slopes, var = {}, {}
    for h in (H1, H2):
        pts = [(raw.delta[h][c], raw.flops_delta[h][c]) for c in (4, 8, 12)]
        ff = sum(f * f for _, f in pts)
        slopes[h], var[h] = sum(d * f for d, f in pts) / ff, noise2 / ff
    tau2 = max(0.0, sum((slopes[h] - kappa) ** 2 - var[h] for h in slopes) / 2)
    for h in (H1, H2):
        s_h = kappa + tau2 / (tau2 + var[h]) * (slopes[h] - kappa)
        for c in CHOICES[h]:
            assert table.delta[h][c] == pytest.approx(s_h * table.flops_delta[h][c])


def test_predict_many_equals_predict_row_by_row() -> None:
    table = build_latency_table(CHOICES, ORIGINAL, known_latency, known_flops, calibration=3)
    table.scale = 1.25
    grid = [[h1, h2] for h1 in CHOICES[H1] for h2 in CHOICES[H2]]
    flops = [known_flops({H1: a, H2: b}) for a, b in grid]
    many = table.predict_many([H1, H2], grid, flops)
    one = [table.predict({H1: a, H2: b}, f) for (a, b), f in zip(grid, flops)]
    assert list(many) == pytest.approx(one)


def test_tighten_raises_the_scale_past_the_measurement_and_never_lowers_it() -> None:
    table = build_latency_table(CHOICES, ORIGINAL, known_latency, known_flops, calibration=0)
    cfg = {H1: 8, H2: 8}
    predicted = table.predict(cfg, known_flops(cfg))
    table.tighten(predicted, 1.5 * predicted, margin=0.02)
    assert table.scale == pytest.approx(1.5 * 1.02)
    assert table.predict(cfg, known_flops(cfg)) == pytest.approx(1.5 * 1.02 * predicted)
    table.tighten(predicted, 0.5 * predicted)
    assert table.scale == pytest.approx(1.5 * 1.02)


def test_bad_build_options_are_refused() -> None:
    with pytest.raises(NasvizError, match="max_choices=0 must be at least 1"):
        build_latency_table(CHOICES, ORIGINAL, known_latency, known_flops, max_choices=0)
    with pytest.raises(NasvizError, match="calibration=-1 must be 0 or more"):
        build_latency_table(CHOICES, ORIGINAL, known_latency, known_flops, calibration=-1)


# -- cache --------------------------------------------------------------------------------------
def test_cache_key_depends_on_threads_batch_and_architecture() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    key = latency_key(model, torch.zeros(2, 8), CHOICES)
    assert key.batch == 2 and key.device == "cpu" and key.threads == torch.get_num_threads()
    assert latency_key(model, torch.zeros(2, 8), CHOICES) == key
    assert latency_key(model, torch.zeros(4, 8), CHOICES) != key
    other = nn.Sequential(nn.Linear(8, 32), nn.Linear(32, 4))
    assert latency_key(other, torch.zeros(2, 8), CHOICES).fingerprint != key.fingerprint
    fewer = {H1: [8, 16], H2: CHOICES[H2]}
    assert latency_key(model, torch.zeros(2, 8), fewer).fingerprint != key.fingerprint


def test_cache_in_memory_then_on_disk(tmp_path: Path) -> None:
    clear_cache()
    key = LatencyKey("cpu", 1, 2, "abc")
    builds: list[int] = []

    def build() -> LatencyTable:
        builds.append(1)
        return build_latency_table(CHOICES, ORIGINAL, known_latency, known_flops, calibration=0)

    table, where = cached_table(key, build, tmp_path)
    assert where == "built" and len(builds) == 1
    table.scale = 3.0  # a search's correction does not leak into the cache
    again, where = cached_table(key, build, tmp_path)
    assert where == "memory" and again.scale == 1.0 and again.delta == table.delta
    clear_cache()
    from_disk, where = cached_table(key, build, tmp_path)
    assert where == "disk" and len(builds) == 1
    assert from_disk.delta == table.delta and from_disk.kappa == table.kappa
    file = tmp_path / key.filename()
    assert json.loads(file.read_text())["key"]["fingerprint"] == "abc"
    clear_cache()
    file.write_text("{not json")
    with pytest.raises(NasvizError, match=r"latency cache file .* could not be read .* delete it"):
        cached_table(key, build, tmp_path)
    clear_cache()
