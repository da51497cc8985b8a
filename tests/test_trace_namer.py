"""The converter's namer hands out one axis and one segment object per value (equal wires are the very same object),
equal to those built directly, and an axis named after a role that changes (a name later claimed as an item) gets the
role it has when asked for."""

from __future__ import annotations

import sympy

from ncd.ir.axes import Axis, Segment
from ncd.trace.naming import Namer


def test_equal_segments_are_one_object_equal_to_a_direct_build() -> None:
    namer = Namer()
    a = namer.segment(["b", "t", "m"], (2, 5, 8))
    assert a is namer.segment(["b", "t", "m"], (2, 5, 8))
    assert a == Segment((Axis("b", sympy.Integer(2)), Axis("t", sympy.Integer(5)), Axis("m", sympy.Integer(8))))
    ids = namer.segment(["b", "t"], (2, 5), "index", 100)
    assert ids == Segment((Axis("b", sympy.Integer(2)), Axis("t", sympy.Integer(5))), "index", sympy.Integer(100))
    assert ids is not namer.segment(["b", "t"], (2, 5), "index", 99) and ids.axes[0] is a.axes[0]
    assert namer.segment(["m", "m"], (8, 8)).names == ("m", "mʹ")  # repeated names primed, as before


def test_an_axis_takes_the_role_its_name_has_when_asked() -> None:
    namer = Namer()
    before = namer.axis("s", 5)
    assert before.role == "feature"
    namer.claim("s", 5, "item")
    after = namer.axis("s", 5)
    assert after.role == "item" and after == Axis("s", sympy.Integer(5), "item")
    assert namer.segment(["s"], (5,)).axes[0] is after
