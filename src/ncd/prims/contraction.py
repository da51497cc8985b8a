"""The order in which an einsum of three or more operands is contracted, one pair at a time.

Lowering writes one two-operand ``torch.einsum`` per pair of the plan and the cost analysis costs
exactly those pairs (:meth:`ncd.prims.linear.EinsumOp.pairs` is the one place both ask), so the
program that runs is the program costed.

* **Sizes known** (a bound diagram, or symbolic sizes inside :func:`planned_at`): the plan minimises the
  FLOPs at those sizes — opt_einsum's path finder is the planner (``optimal`` for few operands, its
  ``greedy`` search for many), run on the sizes; its pairs are the plan, not a replay of torch.
* **No sizes**: a plan read from the axis names alone (:func:`contraction_plan` without ``sizes``).

A cost *formula* of a symbolic diagram is therefore the cost of the plan chosen at the sizes it was
planned at (``ncd.cost`` plans at its bound sizes and the top block's defaults; with none, by names):
evaluated at other sizes it is exact for that plan, which need not be the plan lowering picks there.

>>> contraction_plan([["a", "b"], ["b", "c"], ["c", "d"]], ["a", "d"], {"a": 50, "b": 2, "c": 50, "d": 50})
((1, 2), (0, 1))
>>> contraction_plan([["a", "b"], ["b", "c"], ["c", "d"]], ["a", "d"])
((0, 1), (0, 1))
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Mapping, Sequence

import sympy

from ncd.ir.size import symbol

__all__ = ["contraction_plan", "kept_axes", "planned_at", "plan_sizes"]

Plan = tuple[tuple[int, int], ...]

_PLANNED_AT: contextvars.ContextVar[tuple[tuple[str, int], ...]] = contextvars.ContextVar("ncd_planned_at", default=())


@contextlib.contextmanager
def planned_at(sizes: Mapping[str, int]) -> Iterator[None]:
    """Inside this block an einsum whose sizes are symbolic is planned at ``sizes`` (when they bind all of
    its axes), e.g. the cost formulas of a diagram with defaults: the formula of the plan run at the defaults."""
    token = _PLANNED_AT.set(tuple(sorted((k, int(v)) for k, v in sizes.items())))
    try:
        yield
    finally:
        _PLANNED_AT.reset(token)


def plan_sizes(axes: Sequence[tuple[str, sympy.Expr]]) -> dict[str, int] | None:
    """The whole-number size of every named axis (substituting the sizes of :func:`planned_at`), or ``None``
    when one stays symbolic (the plan then reads names only)."""
    bind = {symbol(k): sympy.Integer(v) for k, v in _PLANNED_AT.get()}
    result: dict[str, int] = {}
    for name, value in axes:
        expr = sympy.sympify(value)
        if expr.free_symbols and bind:
            expr = expr.xreplace(bind)
        if expr.free_symbols or not expr.is_Integer:
            return None
        result[name] = int(expr)
    return result


def contraction_plan(operands: Sequence[Sequence[str]], output: Sequence[str],
                     sizes: Mapping[str, int] | None = None) -> Plan:
    """Pairs ``(i, j)``, ``i < j``, contracting ``operands`` (axis names) two at a time into ``output``.

    Each pair is taken from the current list of operands (both removed, their product appended
    last, as ``opt_einsum`` writes paths).  With ``sizes`` (every axis), the plan of fewest FLOPs at
    those sizes (opt_einsum's ``auto`` path finder).  Without, it reads the names only: greedily, the
    pair whose product has the fewest distinct axes (the lowest degree of its FLOP count), then the
    fewest axes kept, then the leftmost.  Fewer than three operands: ``()`` (one ``torch.einsum``).

    >>> contraction_plan([["a", "b"], ["c", "d"], ["b", "c"]], ["a", "d"])
    ((0, 2), (0, 1))
    """
    if len(operands) < 3:
        return ()
    ops = tuple(tuple(o) for o in operands)
    if sizes is not None:
        return _by_sizes(ops, tuple(output), tuple(sorted((n, sizes[n]) for o in ops for n in set(o))))
    return _by_names(ops, tuple(output))


@functools.lru_cache(maxsize=1024)
def _by_sizes(ops: tuple[tuple[str, ...], ...], output: tuple[str, ...], sizes: tuple[tuple[str, int], ...]) -> Plan:
    from opt_einsum import paths

    path = paths.auto([frozenset(o) for o in ops], frozenset(output), dict(sizes))
    plan: list[tuple[int, int]] = []
    left = len(ops)
    for step in path:
        pair = tuple(sorted(step))
        if len(pair) != 2 or not 0 <= pair[0] < pair[1] < left:  # not a pairwise path: keep the names' plan
            return _by_names(ops, output)
        plan.append((pair[0], pair[1]))
        left -= 1
    return tuple(plan) if left == 1 else _by_names(ops, output)


@functools.lru_cache(maxsize=1024)
def _by_names(operands: tuple[tuple[str, ...], ...], output: tuple[str, ...]) -> Plan:
    ops = list(operands)
    plan: list[tuple[int, int]] = []
    while len(ops) > 1:
        best: tuple[tuple[int, int, int, int], tuple[str, ...]] | None = None
        for i in range(len(ops)):
            for j in range(i + 1, len(ops)):
                kept = kept_axes(ops, i, j, output)
                key = (len(set(ops[i]) | set(ops[j])), len(kept), i, j)
                if best is None or key < best[0]:
                    best = (key, kept)
        assert best is not None
        (_, _, i, j), kept = best
        plan.append((i, j))
        ops = [o for k, o in enumerate(ops) if k not in (i, j)] + [kept]
    return tuple(plan)


def kept_axes(operands: Sequence[Sequence[str]], i: int, j: int, output: Sequence[str]) -> tuple[str, ...]:
    """The axes the product of operands ``i`` and ``j`` keeps: those another operand or the output still
    reads, in order of first appearance in ``i`` then ``j`` (the output's order when nothing else is left)."""
    rest = [o for k, o in enumerate(operands) if k not in (i, j)]
    if not rest:
        return tuple(output)
    needed = set(output) | {n for o in rest for n in o}
    kept: list[str] = []
    for n in (*operands[i], *operands[j]):
        if n in needed and n not in kept:
            kept.append(n)
    return tuple(kept)
