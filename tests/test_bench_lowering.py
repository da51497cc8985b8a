"""The statistics of ``benchmarks/bench_lowering.py``: a distribution-free interval for the median of per-round ratios."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn


def _bench() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_lowering.py"
    spec = importlib.util.spec_from_file_location("bench_lowering", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_lowering", bench)  # dataclasses look their module up
    spec.loader.exec_module(sys.modules["bench_lowering"])
    return sys.modules["bench_lowering"]


@pytest.mark.parametrize(("n", "ranks"), [(6, (1, 6)), (9, (2, 8)), (20, (6, 15)), (21, (6, 16)), (31, (10, 22))])
def test_median_interval_takes_the_order_statistics_of_the_binomial_table(n: int, ranks: tuple[int, int]) -> None:
    # the ranks (1-based) of the usual 95 % interval for a median (sign-test tables), and its coverage computed here
    values = [float(v) for v in random.Random(n).sample(range(1000), n)]
    _, low, high = _bench().median_interval(values)
    ordered = sorted(values)
    assert (low, high) == (ordered[ranks[0] - 1], ordered[ranks[1] - 1])

    def coverage(r: int, s: int) -> float:  # P(r <= Bin(n, 1/2) < s)
        return float(sum(math.comb(n, i) for i in range(r, s)) / 2**n)

    assert coverage(*ranks) >= 0.95 or ranks == (1, n)
    assert coverage(ranks[0] + 1, ranks[1] - 1) < 0.95  # the narrowest such interval


def test_median_interval_covers_the_true_median_at_its_level() -> None:
    # independent check by simulation: ratios drawn around 1.0, the interval holds 1.0 in >= 95 % of runs
    median_interval = _bench().median_interval
    rng = random.Random(0)
    hits = 0
    for _ in range(2000):
        _, low, high = median_interval([rng.lognormvariate(0.0, 0.05) for _ in range(21)])
        hits += low <= 1.0 <= high
    assert hits / 2000 >= 0.95


def test_rows_read_ratios_within_rounds_and_the_verdict_from_the_whole_interval() -> None:
    bench = _bench()
    drift = [1.0 + 0.5 * i for i in range(9)]  # the machine slows down round by round: ratios within a round cancel it
    row = bench.Row("case", "forward", "eager", {"ncd": [1.01 * d for d in drift], "self-check": drift,
                                                 "a": [1.0 * d for d in drift], "b": [2.0 * d for d in drift]}, ["a", "b"])
    assert row.faster == "a" and row.ratio() == pytest.approx((1.01, 1.01, 1.01))
    assert row.verdict() == "meets" and row.verdict(1.0) == "misses"
    row.times["ncd"][:4] = [0.98 * d for d in drift[:4]]  # ratios 0.98 x4, 1.01 x5: the interval holds 1.0
    assert row.verdict(1.0) == "undecided"


def test_a_pass_times_every_contender_in_every_round_on_the_thread_clock() -> None:
    bench = _bench()
    modules = [("ncd", nn.Linear(8, 8)), ("hand-written", nn.Linear(8, 8))]
    times = bench.time_pass(modules, torch.randn(4, 8), "forward+backward", 3, 1e-4, time.thread_time, seed=0)
    assert set(times) == {"ncd", "hand-written", "self-check"}
    assert all(len(v) == 3 and all(t > 0 for t in v) for v in times.values())
