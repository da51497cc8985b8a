"""``ncd.ir.size.is_zero`` (behind ``sizes_equal``) decides a size difference without ``sympy.simplify`` where it can:
checked against ``simplify`` itself on sums, products, quotients and powers of sizes, and on ones it must hand on."""

from __future__ import annotations

import itertools
import random

import sympy

from ncd.ir.size import is_zero, size, sizes_equal, symbol


def test_is_zero_agrees_with_simplify_on_random_size_expressions() -> None:
    m, n, k = symbol("m"), symbol("n"), symbol("k")
    pieces = [m, n, k, sympy.Integer(2), sympy.Rational(1, 2), m * n, n / k, (m + n) ** 2, k**-1]
    rng = random.Random(0)
    checked = 0
    for a, b in itertools.product(pieces, repeat=2):
        for op in (sympy.Add, sympy.Mul, lambda x, y: x / y, lambda x, y: x - y):
            e = op(a, b)
            twin = sympy.expand(e) if rng.random() < 0.5 else sympy.factor(e)  # the same size written otherwise
            for d in (e - twin, e - twin + rng.choice(pieces)):
                assert is_zero(d) == (sympy.simplify(d) == 0), d
                checked += 1
    assert checked > 500


def test_expressions_beyond_rational_functions_still_ask_simplify() -> None:
    m = symbol("m")
    assert is_zero(sympy.floor(m / 2) * 2 - 2 * sympy.floor(m / 2))
    assert not is_zero(sympy.floor(m / 2) * 2 - m)
    assert is_zero(sympy.log(8) / sympy.log(2) - 3)  # a number that only simplify sees is 3
    assert sizes_equal(size("m*n/n"), size("m")) and not sizes_equal(size("m*n"), size("m+n"))


def test_contradicts_agrees_with_cancel_on_random_size_pairs() -> None:
    """A movement box's size check (``_contradicts``: provably different) answers sums of distinct monomials
    (``t + 32`` against ``40``) without ``sympy.cancel``: the same answer as the check through ``simplified``."""
    from ncd.ir.size import simplified
    from ncd.prims.movement_specs import _contradicts

    def reference(a: sympy.Expr, b: sympy.Expr) -> bool:
        if sizes_equal(a, b):
            return False
        diff = simplified(a - b)
        return not diff.free_symbols and diff != 0

    b, t, m = symbol("b"), symbol("t"), symbol("m")
    pieces = [b, t, m, sympy.Integer(8), sympy.Integer(40), sympy.Rational(3, 2), b * t, t / m, (t + 1) ** 2, m**-1,
              t + 32, 2 * t - 8, sympy.floor(t / 2), sympy.Mod(t, 4) + 4]
    rng = random.Random(1)
    checked = shortcut = 0
    for x, y in itertools.product(pieces, repeat=2):
        for op in (sympy.Add, sympy.Mul, lambda p, q: p / q, lambda p, q: p - q):
            a = op(x, y)
            for other in (sympy.expand(a), sympy.factor(a), a + rng.choice(pieces), sympy.Integer(rng.randint(1, 64))):
                assert _contradicts(a, other) == reference(a, other), (a, other)
                assert _contradicts(other, a) == reference(other, a), (other, a)
                checked += 2
                shortcut += bool((a - other).free_symbols) and not sizes_equal(a, other)
    assert checked > 1000 and shortcut > 300
    assert not _contradicts(t + 32, sympy.Integer(40)) and _contradicts(t + 32, t + 31)
