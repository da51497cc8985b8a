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
