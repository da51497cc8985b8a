"""An opaque box's label stays about as wide as a few segments however many equal inputs it takes: mimi's stack of
31 frames was drawn with all 31 written out, a page 928 pt wide whose labels shrank to 3.9 pt in a 468 pt column."""

from __future__ import annotations

import re

from ncd.prims.opaque import Opaque
from ncd.render import to_svg


def _width(svg: str) -> float:
    match = re.search(r'<svg[^>]*\swidth="([\d.]+)"', svg)
    assert match
    return float(match.group(1))


def test_an_opaque_stack_of_many_equal_frames_writes_them_once_with_their_count() -> None:
    frames = ", ".join(["b:2 w:1"] * 31)
    many = Opaque("aten.stack.default", frames, "o:31 b:2 w:1", (tuple(("$in", j) for j in range(31)),))
    few = Opaque("aten.stack.default", "b:2 w:1, b:2 w:1", "o:2 b:2 w:1", ((("$in", 0), ("$in", 1)),))
    assert many.text() == "stack (31× b w → o b w)"
    assert few.text() == "stack (b w, b w → o b w)"
    # the drawing of 31 inputs is no wider than twice the one of 2 (all 31 written out it was over 4x)
    assert _width(to_svg(many)) <= 2 * _width(to_svg(few))
