"""``symbolize`` reads a loop's state as a junction: the sizes it learns do not depend on the wire order inside.

A scan whose state enters its body as ``z:3`` (the zeros the model made with ``torch.zeros(b, ...)``, traced as a
number) is renamed to ``b`` by a view inside and renamed back to ``z`` at the end (Mamba's selective scan).  When a
crossing follows the last view, the junction ``z:b`` against ``z:3`` teaches ``z`` = ``b``; when the view's output is
the body's output (a wire order with one crossing fewer), only the scan's own check saw the mismatch, nothing was
learned, and the passes fell back to no renames: the state stayed ``z:3`` and ``ncd.decode`` refused the model.
A folded repetition of layers (each layer's output its next input) is the same junction.
"""

from __future__ import annotations

import importlib

import pytest
import sympy

import ncd
from ncd.ir.axes import as_type
from ncd.ir.diagram import Block, Box, Repeat
from ncd.prims.opaque import ConstantOp, ViewOp
from ncd.prims.scan import ScanOp

symbolic = importlib.import_module("ncd.trace.symbolic")


def _seg(text: str):  # type: ignore[no-untyped-def]
    return as_type(text)[0]


def _body(crossing: bool) -> ncd.Diagram:
    body = ((Box.make(ViewOp(_seg("z:3 n:2"), _seg("b:3 n:2"))) @ ncd.Identity.of("b:3 n:2")) >> ncd.Add()
            >> ncd.Copy("b:3 n:2") >> (Box.make(ViewOp(_seg("b:3 n:2"), _seg("z:3 n:2"))) @ ncd.Identity.of("b:3 n:2")))
    if crossing:
        body = body >> ncd.Swap("z:3 n:2, b:3 n:2") >> ncd.Swap("b:3 n:2, z:3 n:2")
    return body


def _scan(crossing: bool) -> ncd.Diagram:
    scan = ncd.Scan(_body(crossing), "t:6", carry=1, x_pos=(1,), y_pos=(1,))
    return (Box.make(ConstantOp(_seg("z:3 n:2"))) @ ncd.Identity.of("b:3 t:6 n:2")) >> scan


def _layers(crossing: bool) -> ncd.Diagram:
    layers = Repeat(Block(_body(crossing), "l.i: L"), "i", sympy.Integer(0), sympy.Integer(2), "l.i: L")
    return (Box.make(ConstantOp(_seg("z:3 n:2"))) @ ncd.Identity.of("b:3 n:2")) >> layers


def _types(d: ncd.Diagram) -> list[str]:
    """The types of every box but the crossings, also inside the scan's body."""
    found = []
    for box in d.boxes():
        if isinstance(box.prim, ScanOp):
            found += _types(box.prim.body)
        if box.prim.op != "swap":
            found.append(f"{box.prim.op}: {box.dom} -> {box.cod}")
    return found


@pytest.mark.parametrize("crossing", [True, False])
def test_a_scans_state_renamed_inside_is_sized_by_the_batch(crossing: bool) -> None:
    new, fixed = symbolic.symbolize(_scan(crossing), {"b": 3, "t": 6})
    assert str(new.cod) == "z:b n:2, b t n:2"
    assert fixed == [(("b",), "constant const 'z:b n:2'")]  # the zeros, made at the traced batch


def test_the_wire_order_inside_the_loop_does_not_change_the_result() -> None:
    with_crossing, without = (symbolic.symbolize(_scan(c), {"b": 3, "t": 6}) for c in (True, False))
    assert _types(with_crossing[0]) == _types(without[0])
    assert with_crossing[1] == without[1]


@pytest.mark.parametrize("crossing", [True, False])
def test_a_repetitions_state_renamed_inside_is_sized_by_the_batch(crossing: bool) -> None:
    new, fixed = symbolic.symbolize(_layers(crossing), {"b": 3})
    assert str(new.cod) == "z:b n:2, b n:2"
    assert fixed == [(("b",), "constant const 'z:b n:2'")]
