"""Symbolic totals for the cost model: sums of many size expressions, and the peak of live storages over a sweep.

:func:`_sum` adds terms with whole numbers as Python integers and equal terms counted first (a repeated layer adds the
same terms many times); :func:`_peak_of_polynomials` finds the peak of a sweep over the lowered program's steps (bytes
born and freed at each step) with the live totals kept as polynomials in the sizes, and writes it as a ``Max``
(:func:`_max`) of the totals no other one provably exceeds (:func:`_dominates`).  Used by :mod:`ncd.analysis.cost`.
"""

from __future__ import annotations

import sympy

from ncd.ir.size import power_product

__all__ = ["ZERO", "Polynomial"]

ZERO = sympy.Integer(0)

Polynomial = dict[sympy.Expr, int]  # monomial (a product of size symbols, or 1) -> whole coefficient


def _peak_of_polynomials(born: dict[int, list[sympy.Expr]], dies: dict[int, list[sympy.Expr]], end: int
                         ) -> sympy.Expr | None:
    """The peak sweep with live totals kept as ``{monomial: coefficient}`` (linear in the steps; sympy
    builds only the final candidates).  ``None`` when a size is no polynomial (``floor`` ...)."""
    memo: dict[sympy.Expr, Polynomial | None] = {}
    for exprs in (*born.values(), *dies.values()):
        for e in exprs:
            if e not in memo:
                memo[e] = _polynomial(e)
                if memo[e] is None:
                    return None
    total: Polynomial = {}
    candidates: dict[frozenset[tuple[sympy.Expr, int]], tuple[Polynomial, int]] = {}  # -> (total, first step)
    for t in range(0, end):
        for sign, group in ((1, born.get(t, ())), (-1, dies.get(t, ()))):
            for e in group:
                for m, c in memo[e].items():  # type: ignore[union-attr]
                    total[m] = total.pop(m, 0) + sign * c  # moved last: the total lists monomials by last change
        if t + 1 < end and not dies.get(t + 1):  # the next step only adds storages: its total holds this one
            continue
        poly = {m: c for m, c in total.items() if c}
        key = frozenset(poly.items())
        if key not in candidates:
            candidates[key] = (poly, t)
    frontier: list[tuple[Polynomial, int]] = []  # candidates no other one provably exceeds (sizes are positive)
    for c in candidates.values():
        if any(_dominates(f[0], c[0]) for f in frontier):
            continue
        frontier = [f for f in frontier if not _dominates(c[0], f[0])] + [c]
    # each one written as the sum of the storages live at its step (the sizes as the diagram writes them)
    at: dict[int, sympy.Expr] = {}
    expr, last = ZERO, -1
    for t in sorted(t for _, t in frontier):  # one pass: each storage's bytes added (and removed) once
        steps = range(last + 1, t + 1)
        expr = _sum([expr, *(e for s in steps for e in born.get(s, ())), *(-e for s in steps for e in dies.get(s, ()))])
        at[t], last = expr, t
    exprs = [at[t] for _, t in frontier]
    return _max(exprs)


def _max(exprs: list[sympy.Expr]) -> sympy.Expr:
    """``Max`` of totals no one of which provably exceeds another.  sympy's evaluation would compare every pair
    again with its assumptions (a chain of 20 layers of distinct widths: 190 pairs, 4.8 s CPU) and finds nothing
    to drop (sizes are positive reals; a total's coefficients are whole numbers): it is skipped, so the expression
    is the one it builds (``tests/test_scaling_calls.py`` compares them).  The peak of layers of distinct widths
    is a ``Max`` of one total per layer, each naming every size: its size grows as the square of the layers."""
    return sympy.Max(*exprs, evaluate=False) if len(exprs) > 1 else exprs[0]


def _polynomial(expr: sympy.Expr) -> Polynomial | None:
    """``expr`` as ``{monomial: whole coefficient}``, or ``None`` when it is no such polynomial."""
    for candidate in (expr, sympy.expand(expr)):
        terms: Polynomial = {}
        for term in sympy.Add.make_args(candidate):
            c, rest = term.as_coeff_Mul()
            if not (c.is_Integer and power_product(rest)):
                break
            terms[rest] = terms.get(rest, 0) + int(c)
        else:
            return terms
    return None


def _dominates(a: Polynomial, b: Polynomial) -> bool:
    """Whether ``a >= b`` for every positive value of the sizes (no coefficient of ``a - b`` is negative).

    ``b``'s monomials are read from the one changed last: two totals of a sweep differ most often in the
    storages born or freed last (layers of distinct widths: each total has its own newest activation), so
    most answers come after a few look-ups, not one per monomial."""
    return all(a.get(m, 0) >= c for m, c in reversed(b.items())) and all(c >= 0 for m, c in a.items() if m not in b)


def _sum(terms: list[sympy.Expr]) -> sympy.Expr:
    """``sympy.Add(*terms)``, with whole numbers added as Python integers and equal terms counted first
    (a repeated layer adds the same terms many times; sympy then combines a few distinct ones)."""
    number = 0
    counts: dict[sympy.Expr, int] = {}
    for t in terms:
        for leaf in sympy.Add.make_args(t):
            if leaf.is_Integer:
                number += int(leaf)
            else:
                counts[leaf] = counts.get(leaf, 0) + 1
    return sympy.Add(sympy.Integer(number), *(leaf if k == 1 else k * leaf for leaf, k in counts.items()))
