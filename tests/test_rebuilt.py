"""``ncd.ir.diagram.rebuilt`` (the trusted rebuild symbolize uses) against the checked public constructors."""

from __future__ import annotations

import pytest

import ncd
from ncd.errors import TypeMismatchError
from ncd.ir.diagram import Block, Box, Par, Seq, rebuilt


def _sized(k: int) -> tuple[Box, Box]:
    return ncd.Linear("m -> k").bind(m=4, k=k), ncd.Softmax("k").bind(k=k)  # type: ignore[return-value]


def test_rebuilt_nodes_equal_the_checked_constructors() -> None:
    old_linear, old_softmax = _sized(3)
    linear, softmax = _sized(5)
    seq = Seq((old_linear, old_softmax))
    par = Par((old_linear, old_softmax))
    block = Block(seq, "layer", (("legend", (("k", "classes"),)),))
    cases = [
        (rebuilt(old_linear, prim=linear.prim), Box(linear.prim, old_linear.label, old_linear.source)),
        (rebuilt(seq, parts=(linear, softmax)), Seq((linear, softmax))),
        (rebuilt(par, parts=(linear, softmax)), Par((linear, softmax))),
        (rebuilt(block, body=Seq((linear, softmax))), Block(Seq((linear, softmax)), "layer", block.meta)),
    ]
    for fast, checked in cases:
        assert type(fast) is type(checked)
        assert fast == checked
        assert fast.dom == checked.dom and fast.cod == checked.cod
        assert fast.nesting() == checked.nesting()


def test_a_junction_that_no_longer_meets_is_refused_as_by_the_constructor() -> None:
    # what makes a trace keep numeric sizes: after the rebuild, an output no longer fits the next input
    old_linear, old_softmax = _sized(3)
    linear, _ = _sized(5)
    with pytest.raises(TypeMismatchError) as checked:
        Seq((linear, old_softmax))
    with pytest.raises(TypeMismatchError) as fast:
        rebuilt(Seq((old_linear, old_softmax)), parts=(linear, old_softmax))
    assert str(fast.value) == str(checked.value)


def test_a_box_whose_tensor_names_an_axis_twice_is_refused() -> None:
    good = ncd.Linear("m -> k")
    prim = type(good.prim)(**{**good.prim.fields(), "dom_axes": ncd.Identity.of("m m").dom.segments[0]})  # type: ignore[attr-defined]
    with pytest.raises(TypeMismatchError, match="names axis m twice"):
        Box(prim)
    with pytest.raises(TypeMismatchError, match="names axis m twice"):
        rebuilt(good, prim=prim)
