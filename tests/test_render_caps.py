"""Contraction caps of a wiring box (einsum, meetings): inside the box, every contracted wire joined.

Found by ``benchmarks/measure_drawings.py --corpus all`` on jetmoe's traced MoE einsum (``p s, p s e, p s e m -> p m``):
a cap spanning many wires bulged past the box through the output labels, and the third wire of a three-way
contraction ended in the air.
"""

from __future__ import annotations

import pytest

import ncd
from ncd.render.check import problems
from ncd.render.model import Circle, Path

SPECS = ["p s, p s e, p s e m -> p m", "a b c d e f g, a h -> b c d e f g h", "s, s, s -> ", "a b, a b -> b",
         "p s e m, p s -> p e m"]


@pytest.mark.parametrize("spec", SPECS)
def test_a_contraction_is_drawn_without_problems(spec: str) -> None:
    assert problems(ncd.render.layout(ncd.Einsum(spec))) == []


@pytest.mark.parametrize("spec", SPECS)
def test_every_cap_stays_inside_its_box(spec: str) -> None:
    drawing = ncd.render.layout(ncd.Einsum(spec))
    box = next(f for f in drawing.footprints if f.kind == "wiring")
    right = max(x for p in drawing.of(Path) if p.owner == box.id for x, _ in p.samples(48))
    assert right <= box.x + box.w + 1e-6


def test_a_three_way_contraction_joins_every_wire_at_a_dot_on_the_cap() -> None:
    drawing = ncd.render.layout(ncd.Einsum("s, s, s -> "))
    box = next(f for f in drawing.footprints if f.kind == "wiring")
    cap = next(p for p in drawing.of(Path) if p.owner == box.id and p.commands[-1][0] == "C")
    (_, top), (_, bottom) = cap.ends
    middle = [p for p in drawing.of(Path) if p.owner == box.id and top < p.ends[0][1] < bottom]
    assert len(middle) == 1
    (x, y) = middle[0].ends[1]
    near = min(abs(cx - x) + abs(cy - y) for cx, cy in cap.samples(200))
    assert near < 0.5  # the middle wire ends on the cap ...
    assert any(abs(c.cx - x) < 1e-6 and abs(c.cy - y) < 1e-6 for c in drawing.of(Circle) if c.owner == box.id)  # at a dot
