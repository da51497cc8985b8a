"""Layout + SVG time for diagrams of 10 … 10,000 boxes, the growth exponent, and a GPT-2-small-sized diagram.

    .venv/bin/python benchmarks/bench_render.py            # full table (10 … 10,000 boxes)
    .venv/bin/python benchmarks/bench_render.py --quick    # up to 1,000 boxes

The chain is made of distinct residual blocks (copy, L₊, ➤R➤, L₊, +: five boxes each), so
folding does not shrink it.  The exponent is the least-squares slope of log(time) against
log(boxes); 1.0 is linear.
"""

from __future__ import annotations

import argparse
import math
import time

import ncd
from ncd.ir.diagram import Seq
from ncd.render import layout
from ncd.render.svg import paint_svg


def chain(n_boxes: int) -> ncd.Diagram:
    blocks = []
    for k in range(max(1, n_boxes // 5)):
        body = ncd.Linear("m -> n:4*m", bias=True) >> ncd.ReLU() >> ncd.Linear("n:4*m -> m", bias=True)
        blocks.append(ncd.residual(body).block(f"Layer {k}"))  # distinct names: no folding
    return blocks[0] if len(blocks) == 1 else Seq(tuple(blocks))


def gpt2_like(layers: int = 12) -> ncd.Diagram:
    """A GPT-2-small-shaped diagram (12 layers of attention + MLP) written with the public DSL."""
    scores = ncd.Einsum("~y k h, ~x k h -> ~y ~x h") >> ncd.Scale("k**-0.5") >> ncd.Softmax("~x")
    attend = (scores @ ncd.Identity.of("~x k h")) >> ncd.Einsum("~y ~x h, ~x k h -> ~y k h")
    qkv = ncd.Copy("~y m", 3) >> (ncd.Linear("m -> k h", name="Q") @ (ncd.Identity.of("~y m") >> ncd.Rename("y -> x")
                                   >> ncd.Linear("m -> k h", name="K"))
                                   @ (ncd.Identity.of("~y m") >> ncd.Rename("y -> x") >> ncd.Linear("m -> k h", name="V")))
    out = ncd.Linear("k h -> m", bias=True, name="O")
    attention = (ncd.Identity.of("~y m") >> ncd.LayerNorm("m") >> qkv >> attend >> out).block("Attention")
    hidden = ncd.Linear("m -> n:4*m", bias=True) >> ncd.GELU() >> ncd.Linear("n:4*m -> m", bias=True)
    mlp = (ncd.Identity.of("~y m") >> ncd.LayerNorm("m") >> hidden).block("MLP")
    layer = (ncd.residual(ncd.Identity.of("~y m") >> attention) >> ncd.residual(ncd.Identity.of("~y m") >> mlp))
    blocks = [layer.block("Transformer layer") for _ in range(layers)]  # equal layers, each with its own weights
    body = ncd.Identity.of("~y [v]") >> ncd.Embedding("v", "m") >> Seq(tuple(blocks))
    return (body >> ncd.LayerNorm("m") >> ncd.Unembed("v", "m")).block("GPT-2")


def timed(diagram: ncd.Diagram, repeats: int, **options: object) -> tuple[float, float, int]:
    best_layout = best_total = math.inf
    n_items = 0
    for _ in range(repeats):
        start = time.process_time()  # CPU time: the machine may be shared
        drawing = layout(diagram, **options)  # type: ignore[arg-type]
        middle = time.process_time()
        paint_svg(drawing)
        end = time.process_time()
        best_layout, best_total = min(best_layout, middle - start), min(best_total, end - start)
        n_items = len(drawing.items)
    return best_layout, best_total, n_items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [10, 100, 1000] + ([] if args.quick else [10000])
    print("CPU seconds (best of 3; 1 run at 10,000 boxes)")
    print(f"{'boxes':>7} {'items':>8} {'layout s':>10} {'layout+svg s':>13} {'µs/box':>8}")
    points = []
    for n in sizes:
        diagram = chain(n)
        boxes = sum(1 for _ in diagram.boxes())
        lay, total, items = timed(diagram, 3 if n <= 1000 else 1)
        points.append((boxes, total))
        print(f"{boxes:>7} {items:>8} {lay:>10.4f} {total:>13.4f} {1e6 * total / boxes:>8.1f}")
    xs = [math.log(b) for b, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    print(f"growth exponent (log time / log boxes): {slope:.2f}   (1.00 = linear)")
    print()
    gpt = gpt2_like()
    boxes = sum(1 for _ in gpt.boxes())
    for options in ({}, {"depth": 1}, {"fold": False}):
        lay, total, items = timed(gpt, 3, **options)
        drawing = layout(gpt, **options)  # type: ignore[arg-type]
        label = ", ".join(f"{k}={v}" for k, v in options.items()) or "default (identical layers fold)"
        print(f"GPT-2-small-sized ({boxes} boxes), {label}: layout+svg {total:.3f} s, "
              f"{drawing.width:.0f}×{drawing.height:.0f} pt")


if __name__ == "__main__":
    main()
