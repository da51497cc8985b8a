"""How building, lowering, costing, drawing and the viewer grow with the size of a diagram.

Three families of diagrams, each at about 10, 100, 1,000 and 10,000 boxes:

* **chain** — a flat chain of alternating ``Linear("m -> m")`` and ``ReLU`` boxes, built with
  ``>>`` one part at a time (what a loop over layers in user code does);
* **repeat** — ``ncd.repeat`` of a four-box layer (``LayerNorm >> Linear >> GELU >> Linear``)
  over 10, 100 and 1,000 layers (four times as many boxes), bound;
* **par** — a wide parallel composition: 3, 25, 250 and 2,500 branches (``Linear >> ReLU >> Linear >> ReLU``
  on a ``b m`` wire of its own), stacked with ``@`` one branch at a time.

Two more families, run when named (``--families distinct,widths``), give every branch or layer sizes of its own
(what a user's hand-sized model does; each size is bound to 8):

* **distinct** — ``par`` with branch ``i`` on a ``b m<i>`` wire (``Linear("m<i> -> m<i>")`` ...);
* **widths** — ``chain`` with layer ``i`` a ``Linear("m<i> -> m<i+1>")`` (every width its own size).

Their ``formulas`` stage is quadratic by its answer: the peak is a ``Max`` of one total per branch or layer, each
naming every size (``docs/internals.md``).

Stages, each the call a user makes: ``build`` (``>>``), ``lower`` (``d.to_torch(**sizes)``: the program lowered,
printed, compiled and its modules made), ``cost`` (``ncd.cost`` with every size bound: numbers),
``formulas`` (``ncd.cost`` with no size bound: sympy formulas in the sizes, peak included), ``draw`` (SVG),
``viewer`` (HTML with costs).
For each stage the tables print the CPU seconds this process spent (``time.process_time``: what
the code costs, whatever else the machine runs) and the wall-clock seconds of one call, each the least of
``--repeats`` timings (the noise of a loaded machine only ever adds time).  A timing calls the stage again until it
has run ``--min-time`` seconds and divides (a 10-box point is a millisecond: one call would time the clock).  The
repeats interleave the stages (repeat 1 of every stage, then repeat 2, ...), so every stage sees the same load and
the same process; each timing starts from a collected heap (``gc.collect()``) and a diagram built for it outside
the timing.  The last row is the growth exponent, the least-squares slope of ``log t`` against ``log n`` over the
sizes from 100 boxes up (so that fixed costs do not flatter it).  A last line checks the target on CPU time:
exponent ≤ 1.1 and at most 2 s at 10,000 boxes / 1,000 layers for every stage.

Run: ``.venv/bin/python benchmarks/bench_scaling.py [--max 10000] [--stages build,lower,cost] [--families par]
[--repeats 3] [--min-time 0.05]``.
A stage that exceeds ``--budget`` seconds at one size is not run at larger sizes (``>budget``).
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from collections.abc import Callable

import ncd
from ncd.analysis.cost import CostReport

STAGES = ("build", "lower", "cost", "formulas", "draw", "viewer")


def chain(n: int) -> ncd.Diagram:
    """``n`` boxes composed one at a time with ``>>``."""
    d: ncd.Diagram = ncd.Identity.of("b m")
    for i in range(n):
        d = d >> (ncd.Linear("m -> m", name=f"L{i}") if i % 2 == 0 else ncd.ReLU())
    return d


def repeated(layers: int) -> ncd.Diagram:
    """A four-box layer repeated ``layers`` times (``ncd.repeat``), inside a top block."""
    layer = (ncd.LayerNorm("m") >> ncd.Linear("m -> f", bias=True) >> ncd.GELU()
             >> ncd.Linear("f -> m", bias=True)).block("Layer")
    body = ncd.Identity.of("b m") >> ncd.repeat(layer, "i", 0, layers, name="Layers")
    return body.block("Model", defaults=(("b", 2), ("m", 8), ("f", 16)))


def wide(branches: int) -> ncd.Diagram:
    """``branches`` four-box branches stacked with ``@`` one at a time."""
    def branch() -> ncd.Diagram:
        return ncd.Identity.of("b m") >> ncd.Linear("m -> m") >> ncd.ReLU() >> ncd.Linear("m -> m") >> ncd.ReLU()

    d = branch()
    for _ in range(branches - 1):
        d = d @ branch()
    return d


def wide_distinct(branches: int) -> ncd.Diagram:
    """``par`` with branch ``i`` on a ``b m<i>`` wire of its own size."""
    def branch(i: int) -> ncd.Diagram:
        m = f"m{i}"
        return (ncd.Identity.of(f"b {m}") >> ncd.Linear(f"{m} -> {m}") >> ncd.ReLU() >> ncd.Linear(f"{m} -> {m}")
                >> ncd.ReLU())

    d = branch(0)
    for i in range(1, branches):
        d = d @ branch(i)
    return d


def chain_widths(n: int) -> ncd.Diagram:
    """``chain`` with every ``Linear`` of its own output width: ``m<i> -> m<i+1>``."""
    d: ncd.Diagram = ncd.Identity.of("b m0")
    for i in range(n):
        d = d >> (ncd.Linear(f"m{i // 2} -> m{i // 2 + 1}", name=f"L{i}") if i % 2 == 0 else ncd.ReLU())
    return d


SIZES = {"b": 2, "m": 8, "f": 16}


def stage_functions(make: Callable[[int], ncd.Diagram]) -> dict[str, Callable[[int], Callable[[], object]]]:
    """For each stage: given a size, the thunk to time (diagrams are built outside the timing)."""
    from ncd.render import to_svg
    from ncd.viewer import to_html

    def build(n: int) -> Callable[[], object]:
        return lambda: make(n)

    def on(fn: Callable[[ncd.Diagram], object]) -> Callable[[int], Callable[[], object]]:
        def prepare(n: int) -> Callable[[], object]:
            diagram = make(n)
            return lambda: fn(diagram)
        return prepare

    def bound(fn: Callable[..., object]) -> Callable[[int], Callable[[], object]]:
        """``fn(diagram, **sizes)`` timed; the sizes it binds are found outside the timing."""
        def prepare(n: int) -> Callable[[], object]:
            diagram = make(n)
            free = {str(s) for s in diagram.free_symbols}
            sizes = {k: SIZES.get(k, 8) for k in free}
            return lambda: fn(diagram, **sizes)
        return prepare

    return {
        "build": build,
        "lower": bound(lambda d, **sizes: d.to_torch(**sizes)),
        "cost": bound(lambda d, **sizes: ncd.cost(d, **sizes)),
        "formulas": on(lambda d: _formulas(ncd.cost(d))),
        "draw": on(lambda d: to_svg(d)),
        "viewer": on(lambda d: to_html(d, costs=True)),
    }


def _formulas(report: CostReport) -> object:
    """The symbolic totals and peak (what ``ncd.cost`` computes when no size is bound)."""
    return report.formulas, report.peak_formula


def measure(thunk: Callable[[], object], min_time: float) -> tuple[float, float]:
    """CPU and wall-clock seconds of one call: the thunk called until ``min_time`` CPU seconds have passed, the
    totals divided by the number of calls; the heap collected first."""
    gc.collect()
    calls = 0
    cpu, wall = time.process_time(), time.perf_counter()
    while True:
        thunk()
        calls += 1
        c = time.process_time() - cpu
        if c >= min_time:
            return c / calls, (time.perf_counter() - wall) / calls


def exponent(times: dict[int, float]) -> float | None:
    """The least-squares slope of ``log t`` against ``log n`` over the sizes from 100 boxes up."""
    points = [(math.log(n), math.log(t)) for n, t in sorted(times.items()) if n >= 100 and t == t and t > 0]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def run(family: str, make: Callable[[int], ncd.Diagram], counts: list[int], unit: int, stages: list[str],
        budget: float, repeats: int = 3, min_time: float = 0.05) -> list[str]:
    """Time every stage at every size (the least of ``repeats`` interleaved timings); print the tables; return the
    stages that miss the target."""
    functions = stage_functions(make)
    cpu: dict[str, dict[int, float]] = {s: {} for s in stages}
    wall: dict[str, dict[int, float]] = {s: {} for s in stages}
    skipped: dict[str, int] = {}
    for count in counts:
        live = [s for s in stages if s not in skipped]
        for stage in live:
            functions[stage](max(1, count // 10))()  # warm up caches and lazy imports at a small size
        for _ in range(repeats):
            for stage in live:
                thunk = functions[stage](count)  # a diagram of its own, built outside the timing
                c, w = measure(thunk, min_time)
                del thunk
                n = count * unit
                cpu[stage][n] = min(c, cpu[stage].get(n, math.inf))
                wall[stage][n] = min(w, wall[stage].get(n, math.inf))
        for stage in live:
            if cpu[stage][count * unit] > budget:
                skipped[stage] = count
    boxes = sorted({n for col in cpu.values() for n in col})
    for what, table in (("CPU", cpu), ("wall-clock", wall)):
        print(f"\n{family}: {what} seconds per stage (boxes = {unit} x count; least of {repeats})")
        print(f"{'boxes':>8} " + " ".join(f"{s:>9}" for s in stages))
        for n in boxes:
            cells = [f"{table[s][n]:9.3f}" if n in table[s] else f"{'>' + str(budget):>9}" for s in stages]
            print(f"{n:>8} " + " ".join(cells))
        cells = []
        for s in stages:
            e = exponent(table[s])
            cells.append(f"{e:9.2f}" if e is not None and s not in skipped else f"{'-':>9}")
        print(f"{'exponent':>8} " + " ".join(cells))
    largest = max(boxes)
    missed = []
    for s in stages:
        e = exponent(cpu[s])
        if s in skipped or (e is not None and e > 1.1) or cpu[s].get(largest, math.inf) > 2.0:
            missed.append(f"{s} ({family.split(' ')[0]})")
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=10000, help="largest number of boxes")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--families", default="chain,repeat,par")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds after which a stage stops growing")
    parser.add_argument("--repeats", type=int, default=3, help="timings per point (the least is printed)")
    parser.add_argument("--min-time", type=float, default=0.05, help="CPU seconds a timing runs its stage for")
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    families = args.families.split(",")
    missed: list[str] = []
    opts = (args.budget, args.repeats, args.min_time)
    if "chain" in families:
        counts = [n for n in (10, 100, 1000, 10000) if n <= args.max]
        missed += run("chain (>> one part at a time)", chain, counts, 1, stages, *opts)
    if "repeat" in families:
        layers = [n for n in (10, 100, 1000) if n * 4 <= max(args.max, 40)]
        missed += run("repeat (four-box layer; count = layers)", repeated, layers, 4, stages, *opts)
    if "par" in families:
        branches = [n for n in (3, 25, 250, 2500) if n * 4 <= max(args.max, 12)]
        missed += run("par (four-box branches stacked with @; count = branches)", wide, branches, 4, stages,
                      *opts)
    if "distinct" in families:
        branches = [n for n in (3, 25, 250, 2500) if n * 4 <= max(args.max, 12)]
        missed += run("distinct (par, branch i on sizes m<i>; count = branches)", wide_distinct, branches, 4,
                      stages, *opts)
    if "widths" in families:
        counts = [n for n in (10, 100, 1000, 10000) if n <= args.max]
        missed += run("widths (chain, layer i m<i> -> m<i+1>)", chain_widths, counts, 1, stages, *opts)
    print("\ntarget (CPU: exponent <= 1.1, <= 2 s at the largest size): "
          + ("met by every stage" if not missed else "missed by " + ", ".join(missed)))


if __name__ == "__main__":
    main()
