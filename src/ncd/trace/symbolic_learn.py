"""What :func:`ncd.trace.symbolic.symbolize`'s passes learn: which sizes of a traced diagram are expressions of the
symbols ``b``, ``t``.

A view's target axes that start where source axes sized by symbols do hold their product (:func:`_merged`), or only
rename one (:func:`_aligned`); a junction that does not hold (:func:`_learn`) and a box refusing its traced sizes
(:func:`_derived`) teach the names and ranges to follow as expressions on the next pass (a :data:`Follow`); the merges
the converter recorded give the same for the wires they name (:func:`_merged_sizes`).  :func:`_value_at` evaluates a
plain size exactly at the traced values.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

import sympy

from ncd.errors import SizeError
from ncd.ir.axes import Axis, Type
from ncd.ir.size import symbol

__all__: list[str] = []


def _base(name: str) -> str:
    return name.rstrip("ʹ")


Follow = tuple[dict[tuple[str, int], Any], dict[int, Any]]


def _aligned(source: tuple[Axis, ...], target: tuple[Axis, ...], traced: Any) -> list[tuple[Axis, Axis]]:
    """The pairs of a view's source and target axes that hold the same entries (one starts and ends where the other
    does, row-major, at the traced sizes): the view only renames them (``b n t -> b n y:6``)."""
    starts: dict[tuple[int, int], Axis] = {}
    end = 1
    for a in source:
        start, end = end, end * traced(a.size)
        if end > start:
            starts[(start, end)] = a
    pairs = []
    end = 1
    for b in target:
        start, end = end, end * traced(b.size)
        same = starts.get((start, end))
        if same is not None:
            pairs.append((same, b))
    return pairs


def _merged(source: tuple[Axis, ...], target: tuple[Axis, ...], traced: Any, renames: bool = True,
            renamed: list[bool] | None = None) -> tuple[Axis, ...]:
    """The target axes of a view (row-major) with sizes in symbols where one starts where a source axis does and
    holds whole source axes sized by symbols, and maybe the leading part of a next source axis of a fixed size
    (``(t, b, m) -> (t, b*h, m/h)``: ``4*b``), and with ``renames`` an axis sized by a symbol only renamed (``b n t̅ ->
    b n y̅:6``: ``y̅:t``; ``renamed`` gets a ``True`` then); other axes as they were (a symbol split is not followed)."""
    prefix = [1]
    for a in source:
        prefix.append(prefix[-1] * traced(a.size))
    out = list(target)
    end = 1
    for j, b in enumerate(target):
        start, end = end, end * traced(b.size)
        if b.size.free_symbols or start not in prefix:
            continue
        i = k = prefix.index(start)
        while k < len(source) and prefix[k + 1] <= end and end % prefix[k + 1] == 0 and (prefix[k + 1] > start or k == i):
            k += 1
        group, rest = source[i:k], end // prefix[k]
        if rest != 1 and (k >= len(source) or source[k].size.free_symbols or traced(source[k].size) % rest):
            continue
        if all(traced(a.size) == 1 for a in group if a.size.free_symbols):
            continue  # only symbols traced at 1 (a batch of one): where the target starts says nothing of them
        if len(group) == 1 and rest == 1:
            if not (renames and group[0].size.is_Symbol):
                continue
            if renamed is not None:  # only renamed: followed as the symbol (the wire it is renamed from)
                renamed.append(True)
        if any(a.size.free_symbols for a in group):
            out[j] = dataclasses.replace(b, size=sympy.Mul(*[a.size for a in group]) * rest)
    return tuple(out)


def _learn(left: Type, right: Type, traced: Any, learned: Follow) -> None:
    """From a junction that does not hold: the names (and ranges) sized by a symbol on one side and by the number it
    has at the traced sizes on the other."""
    names, ranges = learned
    for x, y in zip(left.segments, right.segments):
        if len(x.axes) != len(y.axes) or any(a.name != b.name for a, b in zip(x.axes, y.axes)):
            continue
        for a, b in zip(x.axes, y.axes):
            if a.size != b.size and (a.size.is_Integer or b.size.is_Integer):
                sym, num = (b.size, a.size) if a.size.is_Integer else (a.size, b.size)
                if sym.free_symbols and traced(sym) == int(num):
                    names.setdefault((_base(a.name), int(num)), sym)
        if x.range is not None and y.range is not None and x.range != y.range and (x.range.is_Integer or y.range.is_Integer):
            sym, num = (y.range, x.range) if x.range.is_Integer else (x.range, y.range)
            if sym.free_symbols and traced(sym) == int(num):
                ranges.setdefault(int(num), sym)


def _fed_back(changes: dict[str, Any], traced: Any, learned: Follow) -> None:
    """From a loop refusing to be rebuilt (a scan whose state leaves its body as ``z:b`` but enters as ``z:3``, a
    repetition whose output is not its next input): the names each fed-back junction holds as a symbol on one side
    and as its traced number on the other, as :func:`_learn` reads a junction of a sequence.  The loop is a junction
    too: which side the walk rebuilds first (a crossing after the state's view, or none) does not change what is
    learned (a pass that fails there teaches, as one failing at a sequence's junction)."""
    body = changes.get("body")
    if body is None or not hasattr(body, "dom"):
        return
    if "carry" in changes and "consts" in changes:  # a scan: its states
        c, k = changes["consts"], changes["carry"]
        for j in range(min(k, len(body.cod), len(body.dom) - c)):
            _learn(Type((body.cod[j],)), Type((body.dom[c + j],)), traced, learned)
    elif "var" in changes and len(body.cod) == len(body.dom):  # a repetition: its output is its next input
        _learn(body.cod, body.dom, traced, learned)


def _derived(error: SizeError, traced: Any, learned: Follow, given: set[tuple[str, int]]) -> None:
    """From a box refusing the sizes it holds once its inputs are symbols: the names (and ranges) it holds at the
    traced sizes and derives as expressions of the symbols (a convolution's output ``t:11`` from an input ``t``
    padded by 3 on each side: ``t + 3``; an argmax's positions ``[8]`` gathered along ``t``: ``[t]``)."""
    names, ranges = learned
    for name, held, want in error.derived:
        if not held.is_Integer or not want.free_symbols or traced(want) != int(held):
            continue
        if name is not None and (_base(name), int(held)) in given:
            continue  # a wire of an input's name and size (generic names are shared per size): not sized by b, t
        if name is None:
            ranges.setdefault(int(held), want)
        else:
            names.setdefault((_base(name), int(held)), want)


def _merged_sizes(merges: dict[str, list[tuple[str, int]]], sizes: dict[str, int]) -> dict[tuple[str, int], Any]:
    """(name, traced size) -> the product of the symbols and numbers it merges, for the merges holding a symbol's
    wire (directly or through another such merge)."""
    found: dict[tuple[str, int], Any] = {}

    def size_of(name: str, size: int, seen: frozenset[str]) -> Any:
        base = _base(name)
        if base in sizes and sizes[base] == size:
            return symbol(base)
        parts = merges.get(base)
        if parts is None or base in seen:
            return sympy.Integer(size)
        product: Any = sympy.Integer(1)
        for wire, n in parts:
            product *= size_of(wire, n, seen | {base})
        return product if _traced_product(parts) == size else sympy.Integer(size)

    for name, parts in merges.items():
        size = _traced_product(parts)
        if name in sizes:
            continue
        expr = size_of(name, size, frozenset())
        if expr.free_symbols:
            found[(name, size)] = expr
    return found


def _traced_product(parts: list[tuple[str, int]]) -> int:
    product = 1
    for _, n in parts:
        product *= n
    return product


class _NotPlain(Exception):
    pass


def _value_at(size: sympy.Expr, values: dict[sympy.Symbol, int]) -> int | Fraction:
    """The exact value of a size made of numbers and ``values``' symbols by sums, products and whole powers (as
    ``size.xreplace(values)``, whose new numbers cost sympy's assumptions a tenth of a millisecond each); raises
    :class:`_NotPlain` for anything else."""
    if size.is_Integer:
        return size.p  # type: ignore[no-any-return]
    if size.is_Symbol:
        value = values.get(size)
        if value is None:
            raise _NotPlain
        return value
    if size.is_Rational:
        return Fraction(size.p, size.q)
    if size.is_Mul:
        product: int | Fraction = 1
        for arg in size.args:
            product *= _value_at(arg, values)
        return product
    if size.is_Add:
        return sum((_value_at(arg, values) for arg in size.args), 0)
    if size.is_Pow and size.exp.is_Integer:
        base, exponent = _value_at(size.base, values), int(size.exp)
        return base ** exponent if exponent >= 0 else Fraction(base) ** exponent
    raise _NotPlain
