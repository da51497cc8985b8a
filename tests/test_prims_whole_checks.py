"""The integer fast paths of the slice, put and pad boxes' checks decide as the checks themselves.

``SliceOp``, ``PutOp`` and ``PadOp`` check their sizes when built (a trace builds many of them, and sympy's first
comparisons of new numbers cost ~50 µs each); where every size is a whole number (or, for a put over a whole axis and a
pad, an axis symbolic but unchecked) the fast path (``_whole_slice``, ``_whole_region``, ``PadOp._whole``) says that
the checks pass without sympy.  Here each box is built over a grid of sizes, starts, steps, amounts and modes, symbolic
sizes among them, with the fast path and with it switched off: the same boxes are built and the same errors raised,
word for word.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import sympy

import ncd.prims.padding as padding
import ncd.prims.slicing as slicing
import ncd.prims.writes as writes
from ncd.ir.axes import Axis, Segment

T = sympy.Symbol("t", positive=True, integer=True)


def _outcome(make: Callable[[], Any]) -> str:
    try:
        return repr(make())
    except Exception as error:  # noqa: BLE001 - the error, compared word for word
        return f"{type(error).__name__}: {error}"


def _both(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, make: Callable[[], Any]) -> tuple[str, str]:
    """What ``make`` gives with the fast path ``owner.name`` and with it answering False (the checks decide)."""
    fast = _outcome(make)
    with monkeypatch.context() as m:
        m.setattr(owner, name, lambda *_: False)
        slow = _outcome(make)
    return fast, slow


def test_slice_checks_decide_as_without_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = [sympy.Integer(v) for v in range(1, 6)]
    taken = 0
    for start, stop, step in itertools.product(range(-1, 5), range(-1, 6), range(0, 4)):
        for n, out in itertools.product(sizes + [T], sizes + [T]):
            def make() -> Any:
                return slicing.SliceOp(Axis("x", n), sympy.Integer(start), sympy.Integer(stop), sympy.Integer(step),
                                       Axis("x", out))
            fast, slow = _both(monkeypatch, slicing, "_whole_slice", make)
            assert fast == slow, (start, stop, step, n, out)
            taken += not fast.startswith(("SizeError", "ParseError"))
    assert taken > 50  # (the grid builds boxes, not only errors)


def test_put_checks_decide_as_without_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = [sympy.Integer(1), sympy.Integer(3), sympy.Integer(5), T, 2 * T, T + 3]
    starts = [sympy.Integer(v) for v in (-1, 0, 1, 2)] + [T]
    steps = [sympy.Integer(v) for v in (0, 1, 2)] + [T]
    for start, step, n in itertools.product(starts, steps, sizes):
        for out in [None, *sizes]:
            def make() -> Any:
                region = None if out is None else Axis("z", out)
                return writes.PutOp((Axis("x", n), Axis("y", sympy.Integer(4))), (start, 0), (step, 1),
                                    (region, Axis("y", sympy.Integer(4))))
            fast, slow = _both(monkeypatch, writes, "_whole_region", make)
            assert fast == slow, (start, step, n, out)


@pytest.mark.parametrize("mode", [*padding.PAD_MODES, "other"])
def test_pad_checks_decide_as_without_the_fast_path(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    sizes = [sympy.Integer(v) for v in (1, 2, 4)] + [T, T + 1]
    outs = [None] + [sympy.Integer(v) for v in (0, 1, 3, 4, 6, 8)] + [T, T + 2, T + 3]
    for n, before, after, out, value in itertools.product(sizes, range(-2, 4), range(-2, 4), outs, (0.0, float("nan"))):
        def make() -> Any:
            axes = Segment((Axis("x", n), Axis("y", sympy.Integer(3))))
            output = None if out is None else Segment((Axis("x", out), Axis("y", sympy.Integer(3))))
            return padding.PadOp(axes, (before, 0), (after, 0), mode, value, output)
        fast, slow = _both(monkeypatch, padding.PadOp, "_whole", make)
        assert fast == slow, (n, before, after, out, value)
