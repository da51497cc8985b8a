"""Shapes nobody benchmarked stay linear: Python calls counted at ``n`` and ``4 n`` (no timing).

Each case builds a diagram of a shape a user can write (a wide parallel composition whose branches use
distinct size names, ...) at two sizes and counts the Python calls one stage makes on each with
``cProfile`` (deterministic, whatever else the machine runs).  A linear stage makes about four times as
many calls at ``4 n``; a quadratic one sixteen.  The bound, 4.6x, leaves room for logarithmic factors
(sorting) and fixed costs.  ``benchmarks/bench_scaling.py --families distinct`` prints the times.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable

import pytest
import sympy
import torch

import ncd
from ncd.ir.size import symbol

GROWTH = 4.6


def par_distinct(n: int, prefix: str = "m") -> ncd.Diagram:
    """``n`` branches stacked with ``@``, branch ``i`` on a wire ``b m<i>`` of its own size."""
    def branch(i: int) -> ncd.Diagram:
        return ncd.Identity.of(f"b {prefix}{i}") >> ncd.Linear(f"{prefix}{i} -> {prefix}{i}") >> ncd.ReLU()

    d = branch(0)
    for i in range(1, n):
        d = d @ branch(i)
    return d


def calls(fn: Callable[[], object]) -> int:
    profile = cProfile.Profile()
    profile.enable()
    try:
        fn()
    finally:
        profile.disable()
    return pstats.Stats(profile).total_calls  # type: ignore[attr-defined, no-any-return]


def sizes(d: ncd.Diagram) -> dict[str, int]:
    return {str(s): 3 for s in d.free_symbols}


def growth(make: Callable[[int, str], ncd.Diagram], stage: Callable[[ncd.Diagram], object], n: int) -> float:
    """Calls of ``stage`` on ``make(4 n)`` over calls on ``make(n)`` (each with size names of its own, so that
    neither finds the other's results in a cache; a tiny run first pays for lazy imports)."""
    stage(make(2, "w"))
    small, large = make(n, "p"), make(4 * n, "q")
    return calls(lambda: stage(large)) / calls(lambda: stage(small))


STAGES: dict[str, Callable[[ncd.Diagram], object]] = {
    "bind": lambda d: d.bind(**sizes(d)),
    "cost": lambda d: ncd.cost(d, **sizes(d)),
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_par_with_distinct_sizes_is_linear(stage: str) -> None:
    ratio = growth(par_distinct, STAGES[stage], 100)
    assert ratio < GROWTH, f"{stage}: {ratio:.2f}x the calls at 4x the branches"


def test_bound_par_with_distinct_sizes_costs_what_each_branch_costs() -> None:
    n = 30
    d = par_distinct(n)
    report = ncd.cost(d, b=2, **{f"m{i}": i + 1 for i in range(n)})
    one = [ncd.cost(par_distinct(1, f"m{i}_"), b=2, **{f"m{i}_0": i + 1}) for i in range(n)]
    assert report.forward_flops == sum(r.forward_flops for r in one)
    assert report.params == sum(r.params for r in one)


def chain_distinct(n: int, prefix: str = "m") -> ncd.Diagram:
    """``n`` layers ``Linear(m<i> -> m<i+1>) >> ReLU`` of distinct widths, composed one at a time."""
    d: ncd.Diagram = ncd.Identity.of(f"b {prefix}0")
    for i in range(n):
        d = d >> ncd.Linear(f"{prefix}{i} -> {prefix}{i + 1}") >> ncd.ReLU()
    return d


@pytest.mark.parametrize("make", [chain_distinct, par_distinct], ids=["chain", "par"])
def test_peak_of_distinct_widths_is_the_max_sympy_builds(make: Callable[[int], ncd.Diagram]) -> None:
    """The peak's ``Max`` is built unevaluated (its totals are already the ones no other exceeds): it is the
    expression sympy's evaluation builds, and at sizes it is the peak of the bound diagram."""
    d = make(7)
    peak = ncd.cost(d).peak_formula
    assert isinstance(peak, sympy.Max) and len(peak.args) == 7  # one total per layer
    assert peak == sympy.Max(*peak.args) and str(peak) == str(sympy.Max(*peak.args))
    for seed in range(3):
        bound = {str(s): 1 + (5 * j + 3 * seed) % 7 for j, s in enumerate(sorted(d.free_symbols, key=str))}
        assert peak.xreplace({symbol(k): sympy.Integer(v) for k, v in bound.items()}) == ncd.cost(d, **bound).peak_bytes


class _Counted(list[int]):
    """Picks that count how many of them are read."""

    reads = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        for k in super().__iter__():
            type(self).reads += 1
            yield k


def test_a_wide_route_reads_its_picks_a_few_times() -> None:
    """``route`` (the copies, deletions and crossing backward rules wire with) over ``n`` and ``4 n`` segments,
    picked in reverse with two copies, reads its picks a fixed number of times (it read them once per segment:
    quadratic in a wide route, 2,000 segments 0.12 s); the swap it ends with gives the segments as picked."""
    from ncd.ir.axes import parse_type
    from ncd.prims.structure import route

    def reads(n: int) -> int:
        segments = list(parse_type(", ".join(f"b m{i}" for i in range(n))))
        picks = _Counted([*reversed(range(n)), 0, 1])
        _Counted.reads = 0
        routed = route(segments, picks)
        assert list(routed.cod) == [segments[k] for k in picks]
        return _Counted.reads - len(picks)  # the check above read them once more

    assert reads(800) / reads(200) < GROWTH


def repeated_layers(n: int, prefix: str = "m") -> ncd.Diagram:
    """``n`` repeated layers (a block each once counted) of a linear map with bias and a tanh."""
    layer = (ncd.Linear(f"{prefix} -> {prefix}", bias=True) >> ncd.Tanh()).block("Layer")
    return ncd.Identity.of(f"b {prefix}") >> ncd.repeat(layer, "i", 0, n, name="Layers")


@pytest.mark.parametrize("make", [chain_distinct, par_distinct, repeated_layers], ids=["chain", "par", "repeat"])
def test_backward_is_linear(make: Callable[[int, str], ncd.Diagram]) -> None:
    """``ncd.backward`` joins a composition's parts as a balanced tree of short runs: each join threads every
    stored value and weight gradient of its two sides, so joining one part at a time built ``O(n²)`` wires
    (10x the calls at 4x the layers; a 400-layer repetition ran past 60 s)."""
    ratio = growth(make, ncd.backward, 100)
    assert ratio < GROWTH, f"backward: {ratio:.2f}x the calls at 4x the parts"


@pytest.mark.parametrize("make", [chain_distinct, par_distinct, repeated_layers], ids=["chain", "par", "repeat"])
def test_backward_of_many_parts_equals_autograd(make: Callable[[int, str], ncd.Diagram]) -> None:
    """Nine parts: joined as a tree of runs, not one after another; the gradients are still autograd's."""
    from ncd.torch.verify import compare_gradients

    d = make(9, "m")
    pairs = compare_gradients(d, **{str(s): 3 for s in d.free_symbols})
    assert len(pairs) > 9
    for name, got, want in pairs:
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3, msg=lambda m, name=name: f"{name}: {m}")


def _depth(d: ncd.Diagram) -> int:
    """How deep compositions, blocks and weaves nest in ``d`` (walked without recursion)."""
    from ncd.ir.diagram import Block, Par, Seq, Weave

    best, stack = 0, [(d, 1)]
    while stack:
        node, k = stack.pop()
        best = max(best, k)
        kids = node.parts if isinstance(node, (Seq, Par)) else (node.body,) if isinstance(node, Block) else \
            (node.inner,) if isinstance(node, Weave) else ()
        stack.extend((kid, k + 1) for kid in kids)
    return best


def test_backward_of_many_layers_nests_logarithmically_and_draws() -> None:
    """Joined one part at a time, each layer's backward sat inside the next one's: a 100-layer repetition's backward
    nested 210 deep and drawing it raised RecursionError.  As a tree of runs it nests O(log n) deep."""
    from ncd.render import to_svg

    depths = {n: _depth(ncd.backward(repeated_layers(n))) for n in (25, 100, 400)}
    assert depths[400] - depths[100] <= depths[100] - depths[25] <= 6, depths
    assert to_svg(ncd.backward(repeated_layers(100))).startswith("<")


def test_backward_of_600_layers_is_within_the_limits() -> None:
    """The backward of a repetition carries every stored value in one type: 600 four-box layers store 4,201, past the
    old ``segments`` limit of 4,096 (1,000 layers, which build, lower and cost, could not be differentiated).  The
    limit is now 65,536; past it the error says it is the backward's.  Gradients are autograd's."""
    from ncd.limits import override
    from ncd.torch.verify import compare_gradients

    layer = (ncd.LayerNorm("m") >> ncd.Linear("m -> f", bias=True) >> ncd.GELU()
             >> ncd.Linear("f -> m", bias=True)).block("Layer")
    d = ncd.Identity.of("b m") >> ncd.repeat(layer, "i", 0, 600, name="Layers")
    assert len(ncd.backward(d).dom) == 7 * 600 + 1  # 4,200 stored values and weights, then the cotangent
    few = ncd.Identity.of("b m") >> ncd.repeat(layer, "i", 0, 3, name="Layers")  # the same joins, autograd's gradients
    for name, got, want in compare_gradients(few, b=2, m=3, f=4):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3, msg=lambda m, name=name: f"{name}: {m}")
    with override(segments=4_096), pytest.raises(ncd.LimitError, match=r"backward of .*more than the limit of 4096 "
                                                                        r"\(segments in ncd\.limits\).*derived diagram"):
        ncd.backward(d)
