"""The statistics of ``benchmarks/bench_lowering.py``: a distribution-free interval for the median of per-round ratios."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
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


def test_cycles_never_run_ncd_right_after_its_self_check_and_time_every_contender_once_per_cycle() -> None:
    bench = _bench()
    shuffle = random.Random(1)
    labels = ["ncd", "self-check", "hand-written", "nn.Module"]
    last = None
    for _ in range(200):  # within a cycle and across from the previous one
        order = bench.cycle_order(labels, shuffle, last)
        assert sorted(order) == sorted(labels)
        assert not any({a, b} == {"ncd", "self-check"} for a, b in zip([last, *order[:-1]], order))
        last = order[-1]
    ran: list[str] = []
    steps = {label: (lambda label=label: ran.append(label)) for label in labels}
    seconds = bench.interleaved_round(steps, 5, time.thread_time, shuffle)
    assert set(seconds) == set(labels) and sorted(ran) == sorted(labels * 5)
    assert all(set(ran[i:i + 4]) == set(labels) for i in range(0, 20, 4))  # each cycle runs every contender once


def test_saved_runs_of_one_pass_pool_their_rounds(tmp_path: Path) -> None:
    bench = _bench()
    first = bench.Row("case", "forward", "eager", {"ncd": [1.0, 1.1], "self-check": [1.0, 1.0], "a": [1.0, 1.0]}, ["a"])
    second = bench.Row("case", "forward", "eager", {"ncd": [1.2], "self-check": [1.0], "a": [1.0]}, ["a"])
    other = bench.Row("case", "forward+backward", "eager", {"ncd": [2.0], "self-check": [2.0], "a": [1.0]}, ["a"])
    paths = [tmp_path / "one.jsonl", tmp_path / "two.jsonl"]
    for path, rows in zip(paths, [[first, other], [second]]):
        path.write_text("".join(json.dumps(dataclasses.asdict(row)) + "\n" for row in rows))
    pooled = bench.merged([str(p) for p in paths])
    assert [(r.mode, r.times["ncd"]) for r in pooled] == [("forward", [1.0, 1.1, 1.2]), ("forward+backward", [2.0])]
    assert pooled[0].ratio() == pytest.approx((1.1, 1.0, 1.2))


def test_the_kernels_column_tells_the_same_ops_from_other_ops() -> None:
    """``ops_of`` lists the ATen ops of a pass (views apart) with their operands' shapes and strides, eager as
    dispatched and compiled as the graphs inductor receives; ``compare_kernels`` says ``same`` only for equal lists.
    The lowered multi-head attention (the bench's ``k h`` wiring) runs the hand-written module's ops in training, eager
    and compiled, with more view ops (``movedim`` of its ``k h`` views); an extra copy or another order is a difference."""
    bench = _bench()
    torch.manual_seed(0)
    m, h = 16, 4
    module = bench.mha_diagram().to_torch(check_inputs=False, t=6, m=m, h=h, k=m // h)
    hand = bench.HandMHA(m, h)
    x = torch.randn(2, 6, m)
    for how in ("eager", "compiled"):
        verdict = bench.compare_kernels(bench.ops_of(module, x, "forward+backward", how),
                                        bench.ops_of(hand, x, "forward+backward", how))
        assert verdict.startswith("same +") and verdict.endswith(" views"), (how, verdict)

    class Copied(nn.Module):  # the same ops and one copy more
        def __init__(self) -> None:
            super().__init__()
            self.inner = hand

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.inner(x.contiguous(memory_format=torch.preserve_format).clone())
            return out

    assert bench.compare_kernels(bench.ops_of(hand, x, "forward", "eager"), bench.ops_of(hand, x, "forward", "eager")) \
        == "same"
    assert bench.compare_kernels(bench.ops_of(Copied(), x, "forward", "eager"),
                                 bench.ops_of(hand, x, "forward", "eager")).startswith("differ: 1 ops")
    a, b = torch.ones(2, 3), torch.zeros(3, 2).t()  # a commutative op's operands in either order
    add = torch.ops.aten.add.Tensor
    assert bench._signature(add, (a, b), {}, lambda t: t) == bench._signature(add, (b, a), {}, lambda t: t)
    sub = torch.ops.aten.sub.Tensor
    assert bench._signature(sub, (a, b), {}, lambda t: t) != bench._signature(sub, (b, a), {}, lambda t: t)
    q = torch.randn(1, 2, 3, 4)
    default = bench._signature(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default, (q, q, q), {},
                               lambda a: a)
    assert bench._signature(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default, (q, q, q),
                            {"scale": 4 ** -0.5}, lambda a: a) == default  # SDPA's default scale, written out
    assert bench._signature(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default, (q, q, q),
                            {"scale": 0.3}, lambda a: a) != default
