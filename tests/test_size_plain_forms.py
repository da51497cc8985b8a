"""Sizes whose form alone tells what sympy's assumptions would (positive; their value at the traced sizes), checked
against sympy itself: the shortcuts skip its assumptions, they must never answer differently."""

import random

import pytest
import sympy

from ncd.errors import SizeError
from ncd.ir.axes import Axis
from ncd.ir.size import plainly_positive, size, symbol
from ncd.trace.symbolic_learn import _NotPlain, _value_at

b, t, k = symbol("b"), symbol("t"), symbol("k")
free = sympy.Symbol("x")  # no assumptions: its sign is unknown


def _random_plain(rng: random.Random, depth: int = 0) -> sympy.Expr:
    pick = rng.randrange(6 if depth < 3 else 2)
    if pick == 0:
        return sympy.Integer(rng.randrange(1, 9))
    if pick == 1:
        return rng.choice((b, t, k))
    if pick == 2:
        return _random_plain(rng, depth + 1) * _random_plain(rng, depth + 1)
    if pick == 3:
        return _random_plain(rng, depth + 1) + _random_plain(rng, depth + 1)
    if pick == 4:
        return _random_plain(rng, depth + 1) / _random_plain(rng, depth + 1)
    return _random_plain(rng, depth + 1) ** rng.choice((2, -1, sympy.Rational(1, 2), -sympy.Rational(1, 2)))


def test_plainly_positive_agrees_with_sympy():
    rng = random.Random(0)
    for _ in range(300):
        e = _random_plain(rng)
        assert plainly_positive(e) and e.is_positive is True, e
    for e in (b - t, -b, b - 1, free * b, sympy.floor(b / 2), sympy.Integer(0), sympy.Integer(-3) * b, b * (t - k)):
        assert not plainly_positive(e), e


def test_axes_and_sizes_still_checked():
    assert Axis("q", 2 * b).size == 2 * b and Axis("r", k**-sympy.Rational(1, 2)).size == k**-sympy.Rational(1, 2)
    assert size("2*b") == 2 * b and size("b*t/2") == b * t / 2
    for bad in (-b, -2 * b * t, sympy.Integer(-1), b - b):  # sympy's assumptions still decide these: refused
        with pytest.raises(SizeError):
            Axis("q", bad)


def test_value_at_equals_xreplace():
    rng = random.Random(1)
    values = {b: 3, t: 7, k: 5}
    for _ in range(300):
        e = _random_plain(rng)
        want = sympy.sympify(e.xreplace(values))  # (a bare symbol gives the int itself)
        if not want.is_Rational:  # a root that is not rational: the shortcut refuses it, xreplace decides
            with pytest.raises(_NotPlain):
                _value_at(e, values)
            continue
        try:
            got = _value_at(e, values)
        except _NotPlain:
            assert any(p.is_Pow and not p.exp.is_Integer for p in sympy.preorder_traversal(e)), e
            continue
        assert got == want and int(got) == int(want), e
    for e in (sympy.floor(b / 2), b + free):
        with pytest.raises(_NotPlain):
            _value_at(e, values)


@pytest.mark.parametrize("name", ["x", "d_k", "x2", "λ", "αβ", "_", "1", "2", "12", "x y", "2x", "x+1", "e′", "x̄", "sqrt", ""])
@pytest.mark.parametrize("value", [sympy.Integer(1), sympy.Integer(2), sympy.Integer(12), sympy.Rational(1, 2),
                                   symbol("x"), symbol("x") + 1])
def test_default_size_shortcut_agrees_with_the_parser(name: str, value: sympy.Expr) -> None:
    """An axis' text omits its size when its name reads as that size: a name that is one symbol is never a number,
    which the shortcut answers without parsing it; the parser itself answers every name and size alike."""
    from ncd.ir.axes import _default_size
    from ncd.ir.size import is_name, sizes_equal

    try:
        parsed = sizes_equal(size(name), value)
    except Exception:  # noqa: BLE001 - what _default_size says of a name the parser refuses
        parsed = False
    assert _default_size(name, value) == parsed
    if is_name(name):
        assert size(name) == symbol(name)
