"""The fast paths that keep costing linear in the size of a diagram give exactly the slow paths' answers.

* peak memory: the formula (a sweep over ``{monomial: coefficient}`` totals) evaluated at sizes equals
  the peak computed on the bound diagram (a sweep over whole numbers), on every gallery model;
* totals: counting equal terms before ``sympy.Add`` gives the very expression ``sympy.Add`` gives;
* repetitions: a body whose sizes do not depend on the iteration variable is not substituted per
  iteration, one whose sizes do is (each iteration costed on its own sizes).
"""

from __future__ import annotations

import pytest
import sympy

import ncd
import ncd.zoo
from ncd.analysis.cost import _polynomial, _sum
from ncd.ir.diagram import Repeat
from ncd.ir.size import symbol
from tests.test_cost_zoo import SMALL


@pytest.mark.parametrize("name", sorted(ncd.zoo.MODELS), ids=str)
def test_peak_formula_at_sizes_equals_bound_peak(name: str) -> None:
    d = ncd.zoo.MODELS[name]()
    sizes = SMALL[name]
    counts = {str(s) for node in d.walk() if isinstance(node, Repeat) for s in node.start.free_symbols | node.stop.free_symbols}
    symbolic = d.bind(**{k: v for k, v in sizes.items() if k in counts})  # a peak formula needs counted repetitions
    formula = ncd.cost(symbolic).peak_formula
    bound = ncd.cost(d, **sizes).peak_bytes
    assert formula is not None and formula.free_symbols
    value = formula.xreplace({symbol(k): sympy.Integer(v) for k, v in {**dict(d.get("defaults", ())), **sizes}.items()})
    assert value == bound


def test_sum_counts_equal_terms_exactly_as_sympy_adds() -> None:
    b, m, k = sympy.symbols("b m k", positive=True)
    terms = [2 * b * m, b * m + 3, m * (k + 1), 2 * b * m, sympy.Rational(1, 2) * k, m * (k + 1), 7,
             b * m + 3, sympy.floor(k / 2) * m] * 5
    assert _sum(terms) == sympy.Add(*terms)
    assert _sum([]) == 0


def test_polynomials_are_recognised_and_the_rest_refused() -> None:
    b, m, k = sympy.symbols("b m k", positive=True)
    assert _polynomial(4 * b * m * (k + 1)) == {b * m * k: 4, b * m: 4}
    assert _polynomial(sympy.Integer(12)) == {sympy.Integer(1): 12}
    assert _polynomial(sympy.floor(k / 2) * m) is None  # the sweep then falls back to sympy


def test_peak_with_fractional_sizes_falls_back_and_agrees() -> None:
    d = ncd.Identity.of("b c x") >> ncd.Conv("c x -> d x", kernel=3, stride=3)
    formula = ncd.cost(d).peak_formula
    assert formula is not None
    sizes = dict(b=2, c=3, d=4, x=12)  # output x/3: a coefficient 4/3, no whole-number polynomial
    assert formula.xreplace({symbol(k): sympy.Integer(v) for k, v in sizes.items()}) == ncd.cost(d, **sizes).peak_bytes


def test_repeat_substitutes_a_body_only_when_it_depends_on_the_variable() -> None:
    fixed = ncd.repeat(ncd.Identity.of("b m") >> ncd.Linear("m -> m"), "i", 0, 3)
    assert fixed.iteration(1) is fixed.body
    grow = ncd.repeat(lambda i: ncd.Linear(f"m:2**{i} -> m:2**({i}+1)"), "i", 0, 3)
    assert [str(grow.iteration(i).dom) for i in range(3)] == ["m:1", "m:2", "m:4"]
    assert ncd.cost(grow).forward_matmul == 2 * (1 * 2 + 2 * 4 + 4 * 8)
    report = ncd.cost(ncd.Identity.of("b m") >> fixed, b=2, m=4)
    assert report.forward_matmul == 3 * 2 * 2 * 4 * 4
