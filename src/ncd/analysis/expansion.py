"""How many terms a cost formula has once expanded, bounded before sympy expands it.

Costs are polynomials in the sizes, and ``ncd.cost`` expands them (``sympy.expand``) to sum like terms.  Sizes
read from a file are text the file chose: four axes each sized by a sum of 60 symbols make one einsum's FLOPs a
product of four sums, 13 million terms once expanded (hours of CPU and gigabytes for a file of one kilobyte).
:func:`check_expansion` counts, without expanding, an upper bound of the terms each product and power of a formula
expands to, and raises :class:`~ncd.errors.LimitError` past ``terms`` of :mod:`ncd.limits` (1,000: a model's
formulas have a few terms each; sizes are symbols, numbers and short sums such as ``t + 1``).

>>> import sympy
>>> a, b, c = sympy.symbols("a b c", positive=True)
>>> expanded_terms((a + b) * (a + c) * 3), expanded_terms((a + b + c) ** 4), expanded_terms(a * b + c)
(4, 15, 2)
>>> from ncd.limits import override
>>> with override(terms=10):
...     check_expansion((a + b + c) ** 4, "the FLOPs of box E")  # doctest: +ELLIPSIS
Traceback (most recent call last):
ncd.errors.LimitError: the FLOPs of box E would expand to 15 terms, more than the limit of 10 (terms in ncd.limits)...
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sympy

from ncd.errors import LimitError
from ncd.limits import limits

if TYPE_CHECKING:
    from ncd.analysis.metrics import BoxCost, Metrics

__all__ = ["expanded_terms", "check_expansion", "check_metrics"]


def expanded_terms(expr: object, cap: int | None = None) -> int:
    """An upper bound of the terms of ``sympy.expand(expr)`` (capped at ``cap + 1`` once it is past ``cap``):
    a sum has its parts' terms, a product the product of its factors', an integer power ``p`` of ``t`` terms the
    multinomial count ``C(p + t - 1, t - 1)``; anything else (a symbol, a number, ``floor``, a symbolic power) is one
    term, with its arguments bounded too (``expand`` expands inside them)."""
    return _terms(expr, limits().terms if cap is None else cap) if isinstance(expr, sympy.Basic) else 1


@functools.lru_cache(maxsize=8192)
def _terms(expr: sympy.Basic, cap: int) -> int:
    if expr.is_Atom:
        return 1
    counts = [_terms(arg, cap) for arg in expr.args]
    if max(counts) > cap:
        return cap + 1
    if expr.is_Add:
        found = sum(counts)
    elif expr.is_Mul:
        found = 1
        for n in counts:
            found = min(found * n, cap + 1)
    elif expr.is_Pow and expr.exp.is_Rational:
        power, parts = abs(int(expr.exp)), counts[0]
        found = 1 if power == 0 or parts == 1 else cap + 1 if power > cap else math.comb(power + parts - 1, parts - 1)
    else:
        found = 1
    return min(found, cap + 1)


def check_expansion(expr: object, where: str) -> None:
    """Raise :class:`~ncd.errors.LimitError` if ``expr`` may expand to more terms than ``terms`` of
    :mod:`ncd.limits`; ``where`` names the formula (``the FLOPs of box E``)."""
    cap = limits().terms
    found = expanded_terms(expr, 10 * cap)
    if found > cap:
        many = str(found) if found <= 10 * cap else f"more than {10 * cap}"
        raise LimitError(f"{where} would expand to {many} terms, more than the limit of {cap} (terms in"
                         " ncd.limits): its sizes are sums or powers of many symbols; bind them to numbers first")


def check_metrics(total: Metrics, boxes: Sequence[BoxCost]) -> None:
    """Before ``total`` (the sum of the ``boxes``' metrics) is expanded: each of its formulas within ``terms`` of
    :mod:`ncd.limits`, else :class:`~ncd.errors.LimitError` naming the first box whose own formula is past it."""
    cap = limits().terms
    for f in dataclasses.fields(total):
        formula = getattr(total, f.name)
        if expanded_terms(formula, cap) <= cap:
            continue
        culprit = next((b for b in boxes if expanded_terms(getattr(b.metrics, f.name), cap) > cap), None)
        check_expansion(getattr(culprit.metrics, f.name) if culprit is not None else formula,
                        f"the {f.name.replace('_', ' ')} of {culprit.text if culprit is not None else 'the diagram'}")
