"""Diagrams no one would draw by hand still draw: 50 nested blocks, a segment of 1,000 wires, a tuple of 300 tensors,
a crossing of 300 wires.  No crash, no recursion error, a page the layout's own checks find nothing wrong with, and
a page whose size follows from what it holds (one wire's room per wire; a collapsed view as small as one box)."""

from __future__ import annotations

import pytest

import ncd
from ncd import Block, Identity, Linear, Transpose, parse_type
from ncd.errors import SizeError
from ncd.render import layout, to_png, to_svg
from ncd.render.check import problems
from ncd.render.model import Text
from ncd.render.style import Style


def _nested(n: int) -> ncd.Diagram:
    d = Linear("m -> m")
    for i in range(n):
        d = Block(d, f"b{i}")
    return d


def test_fifty_nested_blocks_draw_every_title_once_and_collapse_to_one_box() -> None:
    d = _nested(50)
    full = layout(d, Style.from_options())
    assert not problems(full)
    titles = [t.string for t in full.of(Text)]
    assert all(any(f"b{i}" in t.split(" = ") for t in titles) for i in range(50))  # every block named
    small = layout(d, Style.from_options(depth=1))
    assert not problems(small) and small.width < 150 and small.height < 100  # one component box
    assert to_png(d, scale=0.5)[:4] == b"\x89PNG"


@pytest.mark.parametrize(("diagram", "wires"), [
    (Identity(parse_type(" ".join(f"a{i}" for i in range(1000)))), 1000),
    (Identity(parse_type(", ".join(f"a{i}" for i in range(300)))), 300),
    (Transpose(" ".join(f"a{i}" for i in range(300)) + " -> " + " ".join(f"a{i}" for i in reversed(range(300)))), 300),
], ids=["segment-1000", "tuple-300", "crossing-300"])
def test_a_thousand_wires_draw_one_under_another(diagram: ncd.Diagram, wires: int) -> None:
    drawing = layout(diagram, Style.from_options())
    assert not problems(drawing)
    assert drawing.width < 200  # a column of wires, not a row
    assert 8.0 * wires < drawing.height < 40.0 * wires  # each wire its room, and no more than a few times it
    labels = [t.string for t in drawing.of(Text)]
    assert all(f"a{i}" in labels for i in (0, wires // 2, wires - 1))
    assert "<svg" in to_svg(diagram)


def test_a_size_zero_axis_is_refused_naming_it() -> None:
    with pytest.raises(SizeError, match="axis m has size 0"):
        Linear("m:0 -> k")
