"""Lowered ncd modules against hand-written PyTorch and torch.nn, side by side in one process.

Every case runs forward (eval, no grad) and forward+backward (training), eager and under
torch.compile. Each pass times the contenders in interleaved rounds (shuffled order, one block each)
on the calling thread's CPU clock with one torch thread, and prints the median over rounds of the
ratio ncd / faster baseline within a round, a 95% confidence interval for it, and a self-check (ncd
timed against itself, which must be 1.00 within its interval).  Target: ratio <= 1.02.
Run: ``nice .venv/bin/python benchmarks/bench_lowering.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import ncd


# -- the diagrams ---------------------------------------------------------------------------
def mha_diagram(heads_first: bool = False) -> ncd.Diagram:
    """Self-attention: L^Q, L^K, L^V : m -> k h (the gallery's wiring; ``heads_first``: m -> h k), scores,
    softmax over keys, values, L^O."""
    heads = "h k" if heads_first else "k h"
    q = ncd.Identity.of("t m") >> ncd.Linear(f"m -> {heads}", bias=True, name="Q")
    k = ncd.Identity.of("t m") >> ncd.Rename("t -> x") >> ncd.Linear(f"m -> {heads}", bias=True, name="K")
    v = ncd.Identity.of("t m") >> ncd.Rename("t -> x") >> ncd.Linear(f"m -> {heads}", bias=True, name="V")
    scores = ncd.Einsum(f"t {heads}, x {heads} -> h t x") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
    attend = (scores @ ncd.Identity.of(f"x {heads}")) >> ncd.Einsum(f"h t x, x {heads} -> t {heads}")
    out = ncd.Linear(f"{heads} -> m", bias=True, name="O")
    return (ncd.Copy("t m", 3) >> (q @ k @ v) >> attend >> out).block("MultiHeadAttention")


class HandMHA(nn.Module):
    """What an engineer would write by hand: separate projections and SDPA."""

    def __init__(self, m: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.q, self.k, self.v, self.o = (nn.Linear(m, m) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, m = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.h, m // self.h).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        out: torch.Tensor = self.o(y.transpose(1, 2).reshape(b, t, m))
        return out


class TorchMHA(nn.Module):
    def __init__(self, m: int, h: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(m, h, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.attn(x, x, x, need_weights=False)[0]
        return out


def gallery_mha_diagram() -> ncd.Diagram:
    """The gallery's own multi-head attention (``ncd.zoo.heads_attention``): the projections in a ``Linear`` block,
    the attention in a ``ScaledDotProductAttention`` block, ``L^O`` after them."""
    from ncd.zoo.heads import heads_attention

    return heads_attention(self_attention=True, tokens="t").block("MultiHeadAttention")


def gallery_encoder_layer_diagram() -> ncd.Diagram:
    """The transformer's encoder layer as ``ncd.zoo.transformer`` builds it (post-norm sublayers, no dropout)."""
    from ncd.zoo.heads import heads_attention
    from ncd.zoo.transformers import add_norm, feed_forward

    return (add_norm(heads_attention(self_attention=True, tokens="t"), "t", 0.0)
            >> add_norm(feed_forward(ncd.ReLU()), "t", 0.0)).block("EncoderLayer")


def encoder_layer_diagram() -> ncd.Diagram | None:
    if not hasattr(ncd, "LayerNorm"):
        return None
    attn = mha_diagram()
    ff = ncd.Linear("m -> f", bias=True, name="1") >> ncd.ReLU() >> ncd.Linear("f -> m", bias=True, name="2")
    first = (ncd.residual(attn) >> ncd.LayerNorm("m")).block("AttentionSublayer")
    second = (ncd.residual(ff) >> ncd.LayerNorm("m")).block("FeedForwardSublayer")
    return (first >> second).block("EncoderLayer")


class HandEncoderLayer(nn.Module):
    def __init__(self, m: int, h: int, f: int) -> None:
        super().__init__()
        self.attn = HandMHA(m, h)
        self.n1, self.n2 = nn.LayerNorm(m), nn.LayerNorm(m)
        self.l1, self.l2 = nn.Linear(m, f), nn.Linear(f, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.n1(x + self.attn(x))
        out: torch.Tensor = self.n2(x + self.l2(torch.relu(self.l1(x))))
        return out


class TorchEncoderLayer(nn.Module):
    def __init__(self, m: int, h: int, f: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(m, h, f, dropout=0.0, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layer(x)
        return out


def conv_block_diagram() -> ncd.Diagram | None:
    if not hasattr(ncd, "Conv"):
        return None
    conv = ncd.Conv("c x y -> d x y", kernel=3, padding=1, bias=True)
    return (conv >> ncd.ReLU() >> ncd.Conv("d x y -> d x y", kernel=3, padding=1, bias=True) >> ncd.ReLU()).block("ConvBlock")


class HandConvBlock(nn.Module):
    def __init__(self, c: int, d: int) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c, d, 3, padding=1), nn.Conv2d(d, d, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.c2(torch.relu(self.c1(x))))


class TorchConvBlock(nn.Sequential):
    def __init__(self, c: int, d: int) -> None:
        super().__init__(nn.Conv2d(c, d, 3, padding=1), nn.ReLU(), nn.Conv2d(d, d, 3, padding=1), nn.ReLU())


# -- the method: paired, interleaved rounds on the thread's CPU clock --------------------------
# On a machine shared by other jobs, wall time mostly measures how long the process waited for a core. With one torch
# thread every kernel, the autograd engine's CPU work and inductor's generated code run on the calling thread, so
# its CPU clock (time.thread_time) counts only this process's work. What is left (cache and memory bandwidth taken
# by other jobs, frequency) drifts slowly: every round times each contender once, in a shuffled order, one block
# right after the other, and the ratio is taken within the round; the median over rounds comes with a
# distribution-free confidence interval. A contender timed against itself (the same module, a second time in every
# round) must come out at 1.00 within its interval: the self-check row shows the resolution of the run.
#: a second, deep-copied ncd module: the same code in other memory (its ratio to ncd shows what placement alone does)
COPY = "ncd copy"
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.thread_time, "wall": time.perf_counter}


def block_time(step: Callable[[], object], calls: int, clock: Callable[[], float], stat: str = "min") -> float:
    """Seconds per call of ``step``: the fastest (``stat="min"``) or the mean of ``calls`` calls, each timed on its own,
    after one untimed call (which brings this contender's weights back into cache after the previous one ran).
    The fastest call is the one least disturbed by other jobs (caches, memory bandwidth, a shared core)."""
    step()
    seconds = []
    for _ in range(calls):
        start = clock()
        step()
        seconds.append(clock() - start)
    return min(seconds) if stat == "min" else sum(seconds) / calls


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """The median of ``values`` and a distribution-free confidence interval for it: the order statistics
    ``(j, n + 1 - j)`` whose binomial(n, 1/2) coverage is at least ``level`` (the widest, min and max, if n is small).

    >>> median_interval([1.0, 2.0, 3.0])
    (2.0, 1.0, 3.0)
    >>> med, low, high = median_interval([1.0 + 0.01 * i for i in range(21)])
    >>> round(med, 2), round(low, 2), round(high, 2)
    (1.1, 1.05, 1.15)
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values")
    j = 0  # 0-based index of the lower order statistic
    while j + 1 < n - j - 1 and 1 - 2 * sum(math.comb(n, i) for i in range(j + 2)) / 2**n >= level:
        j += 1
    return statistics.median(ordered), ordered[j], ordered[n - 1 - j]


@dataclass
class Row:
    """One pass of one case: per-round times of every contender, and the ratios read off them."""

    case: str
    mode: str  # "forward" (eval, no grad) or "forward+backward" (training)
    how: str  # "eager" or "compiled"
    times: dict[str, list[float]]
    baselines: list[str]
    #: per baseline: how ncd's ATen ops compare with its (:func:`compare_kernels`; empty when not compared)
    kernels: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def faster(self) -> str:
        """The baseline with the smaller median time."""
        return min(self.baselines, key=lambda label: statistics.median(self.times[label]))

    def ratio(self, label: str = "ncd", against: str | None = None) -> tuple[float, float, float]:
        """Median over rounds of ``label``'s time / ``against``'s (the faster baseline) in the same round, with its CI."""
        base = self.times[against or self.faster]
        return median_interval([a / b for a, b in zip(self.times[label], base)])

    def verdict(self, target: float = 1.02) -> str:
        """``meets`` if the whole interval is at most ``target``, ``misses`` if it is all above, else ``undecided``."""
        _, low, high = self.ratio()
        return "meets" if high <= target else "misses" if low > target else "undecided"


def cycle_order(labels: Sequence[str], shuffle: random.Random, last: str | None) -> list[str]:
    """A shuffled order of ``labels`` in which ``ncd`` and its ``self-check`` (the same object) never run one right
    after the other, within the cycle or across from the previous one (whose last label is ``last``): the second
    would find the first's weights in cache, an advantage no baseline has."""
    twins = {"ncd", "self-check"}
    while True:
        order = list(labels)
        shuffle.shuffle(order)
        pairs = zip([last, *order[:-1]], order)
        if len(twins & set(order)) < 2 or not any({a, b} == twins for a, b in pairs):
            return order


def interleaved_round(steps: dict[str, Callable[[], object]], calls: int, clock: Callable[[], float],
                      shuffle: random.Random, stat: str = "min") -> dict[str, float]:
    """Seconds per call of every step in one round timed call by call: ``calls`` cycles, each running every step
    once in a new shuffled order (:func:`cycle_order`), so that the contenders share every moment of the round
    (a job starting, a frequency step, a cold cache after another contender); the fastest call (or the mean)."""
    seconds: dict[str, list[float]] = {label: [] for label in steps}
    last: str | None = None
    for _ in range(calls):
        order = cycle_order(list(steps), shuffle, last)
        for label in order:
            step = steps[label]
            start = clock()
            step()
            seconds[label].append(clock() - start)
        last = order[-1]
    return {label: min(s) if stat == "min" else sum(s) / calls for label, s in seconds.items()}


def time_pass(contenders: list[tuple[str, nn.Module]], x: torch.Tensor, mode: str, rounds: int, block: float,
              clock: Callable[[], float], seed: int, stat: str = "min", interleave: str = "call",
              warmup: float = 0.0) -> dict[str, list[float]]:
    """Per-round seconds per call of every contender (the first is also timed a second time as ``self-check``).

    ``interleave="call"``: each round runs the contenders call by call in shuffled cycles
    (:func:`interleaved_round`); ``"block"``: one block of calls per contender, in a shuffled order. ``warmup``:
    seconds of the clock spent calling every contender before the first round (after three calls each)."""
    train = mode != "forward"
    steps: dict[str, Callable[[], object]] = {}
    for label, module in contenders:
        module.train(train)
        steps[label] = forward_backward(module, x) if train else forward(module, x)
    steps["self-check"] = steps[contenders[0][0]]
    with torch.set_grad_enabled(train):
        for step in steps.values():  # warm up: compiles, allocator caches, one-time dispatch work
            for _ in range(3):
                step()
        per_call = max(block_time(step, 1, clock) for step in steps.values())
        calls = max(2, round(block / max(per_call, 1e-6)))
        order = list(steps)
        shuffle = random.Random(seed)
        start = clock()
        while clock() - start < warmup:
            interleaved_round(steps, 1, clock, shuffle)
        times: dict[str, list[float]] = {label: [] for label in order}
        for _ in range(rounds):
            if interleave == "call":
                for label, seconds in interleaved_round(steps, calls, clock, shuffle, stat).items():
                    times[label].append(seconds)
                continue
            shuffle.shuffle(order)
            for label in order:
                times[label].append(block_time(steps[label], calls, clock, stat))
    return times


# -- what runs: the ATen ops of a pass, to tell a difference of code from noise of the machine ------------------------
def _signature(func: object, args: Sequence[object], kwargs: dict[str, object], meta: Callable[[object], object]
               ) -> str:
    """One op as compared: its name, its tensor operands' shapes and strides (``meta`` reads an operand: a tensor, or
    an FX node's value) in a canonical order for a commutative op, and its other arguments. SDPA's ``scale`` equal
    to its default (``E**-0.5``) is the default: the kernel computes the same number."""
    name = str(func)
    operands: list[str] = []
    others: list[str] = []
    for a in [*args, *kwargs.values()]:
        t = meta(a)
        if isinstance(t, torch.Tensor):
            operands.append(f"{tuple(t.shape)}:{tuple(t.stride())}")
        elif not isinstance(a, (list, tuple)):
            others.append(f"{a:.6g}" if isinstance(a, float) else repr(a))
    if "scaled_dot_product" in name and "scale" in kwargs:
        q = meta(args[0])
        scale = kwargs["scale"]
        if isinstance(q, torch.Tensor) and isinstance(scale, float) and abs(scale * q.shape[-1] ** 0.5 - 1) < 1e-9:
            others.remove(f"{scale:.6g}")
    if name in ("aten.add.Tensor", "aten.mul.Tensor", "aten.add_.Tensor") and not others:
        operands.sort()
    return f"{name}({', '.join(operands + others)})"


class _Ops(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Records the ATen ops run under it (views apart: they move no data)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ops: list[str] = []
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func.is_view:
            self.views += 1
        else:
            self.ops.append(_signature(func, args, kwargs, lambda a: a))
        return func(*args, **kwargs)


def ops_of(module: nn.Module, x: torch.Tensor, mode: str, how: str) -> tuple[list[str], int]:
    """The ATen ops (in order) and the number of view ops of one call of a pass: eager, as dispatched (forward and,
    in training, backward); compiled, the forward and backward graphs ``torch.compile`` hands to inductor (after
    AOT autograd), which generates its kernels from them."""
    train = mode != "forward"
    module.train(train)
    step = forward_backward if train else forward
    if how != "compiled":
        with torch.set_grad_enabled(train):
            step(module, x)()  # first-call work (packing, caches) is not the pass
            with _Ops() as seen:
                step(module, x)()
        return seen.ops, seen.views
    from functorch.compile import make_boxed_func  # type: ignore[import-untyped]
    from torch._dynamo.backends.common import aot_autograd

    graphs: list[torch.fx.GraphModule] = []

    def keep(gm: torch.fx.GraphModule, _: object) -> Callable[..., object]:
        graphs.append(gm)
        boxed: Callable[..., object] = make_boxed_func(gm.forward)
        return boxed

    torch._dynamo.reset()
    capture: nn.Module = torch.compile(  # type: ignore[assignment]  # an OptimizedModule
        module, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep))
    with torch.set_grad_enabled(train):
        step(capture, x)()
    torch._dynamo.reset()
    ops, views = [], 0
    for gm in graphs:
        for node in gm.graph.nodes:
            if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
                continue
            if node.target.is_view:
                views += 1
                continue
            ops.append(_signature(node.target, node.args, dict(node.kwargs),
                                  lambda a: a.meta.get("val") if isinstance(a, torch.fx.Node) else a))
    return ops, views


def compare_kernels(mine: tuple[list[str], int], theirs: tuple[list[str], int]) -> str:
    """``same`` when the two ran the same ATen ops in the same order, on operands of the same shapes and strides
    (with ``+n views`` when one ran more view ops); else how many ops differ."""
    (a, va), (b, vb) = mine, theirs
    if a == b:
        return "same" + (f" {va - vb:+d} views" if va != vb else "")
    import difflib

    differ = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b).get_opcodes()
                 if tag != "equal")
    return f"differ: {differ} ops ({len(a)} vs {len(b)})"


def compiled(module: nn.Module) -> nn.Module:
    out: nn.Module = torch.compile(module)  # type: ignore[assignment]  # an OptimizedModule
    return out


def forward(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    return lambda: module(x)


def forward_backward(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def step() -> None:
        module(x).sum().backward()

    return step


def print_table(rows: list[Row], target: float) -> None:
    header = (f"{'pass':26} {'ncd ms':>9} {'faster baseline':>32} {'ratio':>6} {'95% CI':>13}  {'verdict':9}"
              f" {'self-check':>6} {'95% CI':>13} {'copy-check':>6} {'95% CI':>13}  {'kernels':16}  other baseline")

    def ms(row: Row, label: str) -> float:
        return statistics.median(row.times[label]) * 1e3

    for case in dict.fromkeys(row.case for row in rows):
        print(f"\n{case}\n{header}\n{'-' * len(header)}")
        for row in (r for r in rows if r.case == case):
            best = row.faster
            ratio, low, high = row.ratio()
            same, s_low, s_high = row.ratio("self-check", "ncd")
            copy = f"{'':6} {'':13}"
            if COPY in row.times:
                c, c_low, c_high = row.ratio(COPY, "ncd")
                copy = f"{c:6.3f} [{c_low:5.3f},{c_high:5.3f}]"
            others = "  ".join(f"{label} {ms(row, label):.3f} ms ({row.ratio(label, best)[0]:.3f})"
                               for label in row.baselines if label != best)
            print(f"{row.mode + ' ' + row.how:26} {ms(row, 'ncd'):9.3f} {best + f' {ms(row, best):8.3f}':>32} {ratio:6.3f}"
                  f" [{low:5.3f},{high:5.3f}]  {row.verdict(target):9} {same:6.3f} [{s_low:5.3f},{s_high:5.3f}] {copy}"
                  f"  {row.kernels.get(best, ''):16}  {others}")


def cases(quick: bool) -> list[tuple[str, ncd.Diagram, dict[str, int], torch.Tensor, list[tuple[str, nn.Module]]]]:
    b, t, m, h, f = (2, 16, 32, 4, 64) if quick else (8, 128, 256, 8, 1024)
    c, d, px = (3, 8, 16) if quick else (32, 64, 56)
    heads = dict(t=t, m=m, h=h, k=m // h)
    mha = [("hand-written", HandMHA(m, h)), ("nn.MultiheadAttention", TorchMHA(m, h))]
    encoders = [("hand-written", HandEncoderLayer(m, h, f)), ("nn.TransformerEncoderLayer", TorchEncoderLayer(m, h, f))]
    found = [
        ("multi-head attention (k h)", mha_diagram(), heads, torch.randn(b, t, m), mha),
        ("multi-head attention (h k)", mha_diagram(heads_first=True), heads, torch.randn(b, t, m), mha),
        ("gallery multi-head attention", gallery_mha_diagram(), heads, torch.randn(b, t, m), mha),
        ("gallery encoder layer", gallery_encoder_layer_diagram(), dict(heads, f=f), torch.randn(b, t, m), encoders),
    ]
    enc = encoder_layer_diagram()
    if enc is not None:
        found.insert(3, ("transformer encoder layer", enc, dict(heads, f=f), torch.randn(b, t, m), encoders))
    conv = conv_block_diagram()
    if conv is not None:
        found.append(("convolution block", conv, dict(c=c, d=d, x=px, y=px), torch.randn(b, c, px, px),
                      [("hand-written", HandConvBlock(c, d)), ("nn.Sequential", TorchConvBlock(c, d))]))
    return found


def pin(cpu: int) -> str:
    """Pin this process to one core (``-1``: the last one allowed; ``-2``: no pin): no migration between cores, so
    no timed call starts on a core whose caches hold another job's data because the process moved."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cpu == -2 or not allowed:
        return "not pinned"
    chosen = allowed[-1] if cpu == -1 else cpu
    os.sched_setaffinity(0, {chosen})
    return str(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, few short rounds (smoke test)")
    parser.add_argument("--rounds", type=int, default=31, help="interleaved rounds per pass (default 31)")
    parser.add_argument("--block", type=float, default=0.05, help="seconds per timed block (default 0.05)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: the calling thread's CPU time (default; needs --threads 1); wall: elapsed time")
    parser.add_argument("--stat", choices=("min", "mean"), default="min",
                        help="a block's time: its fastest call (default) or the mean of its calls")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--eager-only", action="store_true", help="skip the torch.compile passes")
    parser.add_argument("--cases", default="", help="comma-separated substrings of the case names to run")
    parser.add_argument("--modes", default="forward,forward+backward", help="passes to run (default both)")
    parser.add_argument("--how", default="eager,compiled", help="eager, compiled or both (default)")
    parser.add_argument("--no-copy", action="store_true", help="do not time a deep copy of the ncd module (copy-check)")
    parser.add_argument("--target", type=float, default=1.02, help="the ratio to meet (default 1.02)")
    parser.add_argument("--no-kernels", action="store_true",
                        help="do not compare the ATen ops ncd and each baseline run (the kernels column)")
    parser.add_argument("--interleave", choices=("call", "block"), default="call",
                        help="call: every round runs the contenders call by call in shuffled cycles (default);"
                             " block: one block of calls per contender per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of calls before a pass's first round")
    parser.add_argument("--save", default="", help="append every pass's per-round times to this JSON-lines file")
    parser.add_argument("--report", nargs="+", default=[], metavar="FILE",
                        help="time nothing: print the table of passes saved with --save (runs of one pass pooled)")
    parser.add_argument("--cpu", type=int, default=-1,
                        help="pin the process to this core (os.sched_setaffinity; default: the last core; -2: no pin)")
    args = parser.parse_args()
    if args.report:
        pooled = merged(args.report)
        print(f"{len(pooled)} passes read from {', '.join(args.report)} (rounds of runs of the same pass pooled)")
        summary(pooled, args.target)
        return
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu counts the calling thread only: use it with --threads 1")
    torch.set_num_threads(args.threads)
    pinned = pin(args.cpu)
    rounds, block, warmup = (5, 0.005, 0.0) if args.quick else (args.rounds, args.block, args.warmup)
    chosen = [c for c in cases(args.quick) if not args.cases or any(key in c[0] for key in args.cases.split(","))]
    how = "call by call in shuffled cycles" if args.interleave == "call" else "one block each, shuffled"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, clock {args.clock}, {rounds} rounds of"
          f" {block * 1e3:.0f} ms per contender ({how}), {warmup:.1f} s warm-up, core {pinned};"
          f" load {os.getloadavg()[0]:.1f}")
    rows: list[Row] = []
    for seed, (name, diagram, sizes, x, baselines) in enumerate(chosen):
        module = diagram.to_torch(check_inputs=False, **sizes)
        twin = [] if args.no_copy else [(COPY, copy.deepcopy(module))]
        for how in [h for h in args.how.split(",") if not (args.eager_only and h == "compiled")]:
            for mode in args.modes.split(","):
                if how == "compiled":
                    torch._dynamo.reset()  # a fresh cache per pass (accumulated graphs crashed inductor here once)
                contenders = [(label, compiled(mod) if how == "compiled" else mod)
                              for label, mod in [("ncd", module), *twin, *baselines]]
                times = time_pass(contenders, x, mode, rounds, block, CLOCKS[args.clock], seed, args.stat,
                                  args.interleave, warmup)
                kernels = {} if args.no_kernels else {
                    label: compare_kernels(ops_of(module, x, mode, how), ops_of(base, x, mode, how))
                    for label, base in baselines}
                rows.append(Row(name, mode, how, times, [label for label, _ in baselines], kernels))
                if args.save:
                    with open(args.save, "a") as out:
                        out.write(json.dumps(dataclasses.asdict(rows[-1])) + "\n")
                print_table(rows[-1:], args.target)
    summary(rows, args.target)


def merged(paths: Sequence[str]) -> list[Row]:
    """The passes saved by ``--save`` in ``paths``, the rounds of every run of the same pass pooled (each round's
    ratio is taken within the round, so rounds of runs at other loads are samples of the same ratio)."""
    rows: dict[tuple[str, str, str], Row] = {}
    for path in paths:
        with open(path) as lines:
            for line in lines:
                row = Row(**json.loads(line))
                key = (row.case, row.mode, row.how)
                if key not in rows:
                    rows[key] = row
                    continue
                pooled = rows[key]
                shared = set(pooled.times) & set(row.times)
                pooled.times = {label: pooled.times[label] + row.times[label] for label in pooled.times if label in shared}
    return list(rows.values())


def summary(rows: list[Row], target: float) -> None:
    print(f"\n=== summary (ratio = median over rounds of ncd / the faster baseline, same round; target <= {target})")
    print_table(rows, target)
    met = sum(row.verdict(target) == "meets" for row in rows)
    missed = sum(row.verdict(target) == "misses" for row in rows)
    print(f"\n{met}/{len(rows)} passes meet the target with their whole 95% interval, {missed} miss it (the whole interval"
          f" above), {len(rows) - met - missed} undecided; self-check = ncd timed again"
          " against itself (1.00 within its interval when the method resolves the difference); copy-check = a deep"
          " copy of ncd (other memory, same code) against ncd")


if __name__ == "__main__":
    main()
