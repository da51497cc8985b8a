"""The size checks of the slice, put and pad boxes decide on whole numbers as on the sympy numbers they are.

``SliceOp``, ``PutOp`` and ``PadOp`` check their sizes when built (a trace builds many of them, and sympy's first
comparisons and sums of new numbers cost ~5-50 µs each).  Each check is written once, by the helpers of
:mod:`ncd.ir.size` (``size_lt`` and the like, ``size_sum``, ``same_size``; ``as_whole`` for a put's last entry, and
``slice_size`` and ``_contradicts``), which compare and add Python ints where every side is a whole number
(:func:`ncd.ir.size.whole`) and leave the rest to sympy.  Here each box is built over a grid of sizes, starts, steps,
amounts and modes, symbolic sizes and amounts of other types among them, as built and with ``whole`` answering None
everywhere (sympy decides every check): the same boxes are built and the same errors raised, word for word.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable
from typing import Any

import pytest
import sympy

import ncd.prims.movement_specs as movement_specs
import ncd.prims.padding as padding
import ncd.prims.slicing as slicing
import ncd.prims.writes as writes
from ncd.errors import SizeError
from ncd.ir.axes import Axis, Segment

size_module = importlib.import_module("ncd.ir.size")  # (``ncd.ir.size`` as an attribute is the function ``size``)
T = sympy.Symbol("t", positive=True, integer=True)


def _outcome(make: Callable[[], Any]) -> str:
    try:
        return repr(make())
    except Exception as error:  # noqa: BLE001 - the error, compared word for word
        return f"{type(error).__name__}: {error}"


def _both(monkeypatch: pytest.MonkeyPatch, make: Callable[[], Any]) -> tuple[str, str]:
    """What ``make`` gives as built and with every whole number left to sympy (``whole`` answering None)."""
    fast = _outcome(make)
    with monkeypatch.context() as m:
        m.setattr(size_module, "whole", lambda _: None)
        for module in (movement_specs, padding, slicing):  # (the modules that import it)
            m.setattr(module, "whole", lambda _: None)
        slow = _outcome(make)
    return fast, slow


def test_the_sympy_path_is_taken_when_whole_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """(The test below compares two paths: with ``whole`` off, the helpers add and compare by sympy.)"""
    with monkeypatch.context() as m:
        m.setattr(size_module, "whole", lambda _: None)
        assert isinstance(size_module.size_sum(sympy.Integer(2), 3), sympy.Integer)
        assert isinstance(size_module.as_whole(sympy.Integer(2)), sympy.Integer)
    assert type(size_module.size_sum(sympy.Integer(2), 3)) is int and size_module.as_whole(sympy.Integer(2)) == 2


def test_slice_checks_decide_as_sympy_does(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = [sympy.Integer(v) for v in range(1, 6)]
    taken = 0
    for start, stop, step in itertools.product(range(-1, 5), range(-1, 6), range(0, 4)):
        for n, out in itertools.product(sizes + [T], sizes + [T]):
            def make() -> Any:
                return slicing.SliceOp(Axis("x", n), sympy.Integer(start), sympy.Integer(stop), sympy.Integer(step),
                                       Axis("x", out))
            fast, slow = _both(monkeypatch, make)
            assert fast == slow, (start, stop, step, n, out)
            taken += not fast.startswith(("SizeError", "ParseError"))
    assert taken > 50  # (the grid builds boxes, not only errors)


def test_put_checks_decide_as_sympy_does(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = [sympy.Integer(1), sympy.Integer(3), sympy.Integer(5), T, 2 * T, T + 3]
    starts = [sympy.Integer(v) for v in (-1, 0, 1, 2)] + [T]
    steps = [sympy.Integer(v) for v in (0, 1, 2)] + [T]
    for start, step, n in itertools.product(starts, steps, sizes):
        for out in [None, *sizes]:
            def make() -> Any:
                region = None if out is None else Axis("z", out)
                return writes.PutOp((Axis("x", n), Axis("y", sympy.Integer(4))), (start, 0), (step, 1),
                                    (region, Axis("y", sympy.Integer(4))))
            fast, slow = _both(monkeypatch, make)
            assert fast == slow, (start, step, n, out)


@pytest.mark.parametrize("mode", [*padding.PAD_MODES, "other"])
def test_pad_checks_decide_as_sympy_does(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    sizes = [sympy.Integer(v) for v in (1, 2, 4)] + [T, T + 1]
    outs = [None] + [sympy.Integer(v) for v in (0, 1, 3, 4, 6, 8)] + [T, T + 2, T + 3]
    amounts = [*range(-2, 4), True, 1.5]
    for n, before, after, out, value in itertools.product(sizes, amounts, amounts, outs, (0.0, float("nan"))):
        def make() -> Any:
            axes = Segment((Axis("x", n), Axis("y", sympy.Integer(3))))
            output = None if out is None else Segment((Axis("x", out), Axis("y", sympy.Integer(3))))
            return padding.PadOp(axes, (before, 0), (after, 0), mode, value, output)
        fast, slow = _both(monkeypatch, make)
        assert fast == slow, (n, before, after, out, value)


def test_slice_size_counts_as_sympy_does(monkeypatch: pytest.MonkeyPatch) -> None:
    for a, b, c in itertools.product(range(-3, 8), range(-3, 8), range(-1, 5)):
        fast, slow = _both(monkeypatch, lambda: slicing.slice_size(sympy.Integer(a), sympy.Integer(b), sympy.Integer(c)))
        assert fast == slow, (a, b, c)


def test_a_pad_by_amounts_other_than_ints_checks_its_padded_axes() -> None:
    """A pad by 1.5 and 1.5 of a size-1 axis into an output of 4 is refused by its padded axis (size 4.0), as it was
    before the int paths (which, skipping ``padded()`` where the sizes agree, once built it)."""
    axes, output = Segment((Axis("x", sympy.Integer(1)),)), Segment((Axis("x", sympy.Integer(4)),))
    with pytest.raises(SizeError, match="a size must be a positive whole number"):
        padding.PadOp(axes, (1.5,), (1.5,), "constant", 0.0, output)
