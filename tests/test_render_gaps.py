"""The gap between two columns, as the layout makes it (``LayoutContext.gap``).

A gap without a note finds its size and bounding box once per distinct wire label (the wires of one label
counted by their lowest and highest heights); a gap with a note looks every wire's label up and adds up every
wire's extent.  Both are checked against each other, and the bounding box a gap declares before its items exist
against the box of the items it then makes (``frag._bounds`` of each, as the page's overlap test reads them).
"""

from __future__ import annotations

import pytest

from ncd.ir.axes import parse_type
from ncd.render.context import LayoutContext
from ncd.render.frag import Deferred, _bounds, _extent
from ncd.render.style import Style

TYPES = ["b n m, n, b", "s d, s d, s d, h", "x̄/2 k, n", "b t (h*d)", "a"]


def _box(items: list) -> tuple[float, float, float, float]:
    boxes = [b for b in map(_bounds, items) if b is not None]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


@pytest.mark.parametrize("text", TYPES)
@pytest.mark.parametrize("shift", [0.0, 7.25, -31.5])
@pytest.mark.parametrize("labels", [True, False])
def test_a_gap_measured_per_label_equals_one_measured_per_wire(text: str, shift: float, labels: bool) -> None:
    ctx = LayoutContext(Style())
    typ = parse_type(text, n=64, m=8, b=2, s=128, d=32, h=4, t=16, k=10, x=256, a=3)
    left = ctx.stack(typ)
    right = ctx.stack(typ, shift)
    per_label, w = ctx.gap(left, right, typ, labels)
    # a note whose subscripts are all None labels every wire as before, through the per-wire path
    per_wire, w2 = ctx.gap(left, right, typ, labels, note=((None,) * len(typ), None))
    assert isinstance(per_label, Deferred) and isinstance(per_wire, Deferred)
    assert (w, per_label.top, per_label.bottom, per_label.smallest) == (w2, per_wire.top, per_wire.bottom,
                                                                        per_wire.smallest)
    assert per_label.extent == per_wire.extent
    items = per_label.items
    assert items == per_wire.items
    assert per_label.extent == _box(items)  # declared before the items were made: the items' own box
    assert _extent(per_label, {}) == per_label.extent
    texts = [it for it in items if type(it).__name__ == "Text"]
    assert len(texts) == (sum(len(seg) for seg in typ) if labels else 0)  # one label per wire
