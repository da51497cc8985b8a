"""Comparisons a model makes in Python of its inputs' sizes (``kv_length >= sliding_window``, ``if x.shape[1] > k``,
``max(t, 4)``): the branch it took holds only where each comparison comes out as it did when traced.

While recording, a comparison of a :class:`~ncd.trace.shapes.SizeInt` (or ``SizeFloat``) on the model's own line (not
torch's or ncd's code) is noted (:class:`Compared`).  After the conversion each becomes a *guard*: its two sides as size
expressions of the diagram's symbols (``t``, ``b``) and the line (:func:`guards_of`), kept in the traced block's
``meta`` under ``guards`` (so a pickle and a JSON read-back have them).  A guard whose outcome cannot change
(``kv_length == q_length``: both ``t``) or that reads no symbolized size is dropped; one of a wire the trace cannot
name is held as a ``len(x)`` is (a ``fixed`` entry, checked by running the model).  Lowering at other sizes
(``to_torch(t=...)``, ``to_source``, a read-back, each step of a decoding) asks :func:`flipped`: where a guard comes
out otherwise, the model takes another branch than traced, which only a run of the model at those sizes can check;
without the model it is refused, naming the line.

"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

from ncd.errors import SchemaError

__all__ = ["GUARDS", "COMPARED_HELD", "Compared", "guards_of", "symbols_of", "flipped"]

#: the meta key of a traced block's guards: ``((left, op, right, line), ...)``, each side a size's text
GUARDS = "guards"
#: how a ``fixed`` entry of a comparison of a wire the trace cannot name says it (checked by running the model)
COMPARED_HELD = "compared in Python ("
_OPS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


class Compared(NamedTuple):
    """A comparison of sizes the model made on its own line (noted in :attr:`ncd.trace.shapes.Shapes.escaped`)."""

    left: Any  # the expression trees (ncd.trace.shapes.Tree)
    op: str  # "<", "<=", ">", ">=", "==", "!="
    right: Any
    line: str


def guards_of(conv: Any, escaped: list[Any]) -> tuple[tuple[tuple[str, str, str, str], ...],
                                                       list[tuple[tuple[str, ...], str]]]:
    """The guards of the comparisons among ``escaped`` (each once), and the ``fixed`` entries of those whose sides
    cannot be written as sizes (a wire the trace cannot name)."""
    from ncd.trace.shape_expressions import _follows, _numbers_only, expression

    guards: list[tuple[str, str, str, str]] = []
    fixed: list[tuple[tuple[str, ...], str]] = []
    seen: set[tuple[str, str, str]] = set()
    atoms: dict[tuple[int, int], Any] = {}
    met: set[tuple[Any, str, Any]] = set()  # the comparisons read so far, their wires' sizes read (:func:`_read`)
    for entry in escaped:
        if not isinstance(entry, Compared):
            continue
        read = (_read(conv, entry.left, atoms), entry.op, _read(conv, entry.right, atoms))
        if read in met:  # the same expressions compared again (xlstm: 321 comparisons, 30 apart): as before, skipped
            continue
        met.add(read)
        if _numbers_only(conv, entry.left) and _numbers_only(conv, entry.right):
            continue
        a, b = expression(conv, entry.left), expression(conv, entry.right)
        held = _follows(conv, a) | _follows(conv, b)
        if not held or (a - b).is_number:  # reads no symbolized size, or comes out the same at every size
            continue
        key = (str(a), entry.op, str(b))
        if key in seen:
            continue
        seen.add(key)
        if _written(a) and _written(b):
            guards.append((*key, entry.line))
        else:
            fixed.append((tuple(sorted(held)), f"at {entry.line} the model {COMPARED_HELD}{' '.join(key)}) a size"
                                                " of a tensor the trace does not name: the branch it took is not followed"))
    return tuple(guards), fixed


def _read(conv: Any, tree: Any, atoms: dict[tuple[int, int], Any]) -> Any:
    """``tree`` (:data:`ncd.trace.shapes.Tree`) with each wire's size read as the expression
    :func:`~ncd.trace.shape_expressions.expression` reads it (``atoms``: those read already, by node and dimension):
    two trees read alike have one expression, so one comparison's guard is the other's.  (xlstm compares the same
    sizes block after block: 321 comparisons, 13 ms of sympy building, printing and subtracting the same ones.)"""
    from ncd.trace.shape_expressions import _atom

    head = tree[0]
    if head == "atom":
        key = (id(tree[1]), tree[2])
        found = atoms.get(key)
        if found is None:
            found = atoms[key] = _atom(conv, tree[1], tree[2])
        return found
    if head == "num":
        return type(tree[1]), tree[1]
    return (head, *(_read(conv, part, atoms) for part in tree[1:]))


def _written(expr: Any) -> bool:
    """Whether ``expr`` is made only of what the size reader reads back (:func:`ncd.ir.size.size`: named sizes, whole
    and rational numbers, sums, products, powers by a number, floor and ceiling), checked on its tree (parsing its
    text back cost ~1 ms a guard on a first call)."""
    import sympy

    plain = (sympy.Symbol, sympy.Integer, sympy.Rational, sympy.Add, sympy.Mul, sympy.floor, sympy.ceiling)
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Symbol) and node.name == "?" or isinstance(node, sympy.Float):
            return False
        if isinstance(node, sympy.Pow) and node.exp.is_Rational or isinstance(node, plain):
            continue
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _side(text: str) -> Any:
    from ncd.ir.size import size

    return size(text)


def symbols_of(guard: tuple[str, str, str, str]) -> set[str]:
    """The names of the sizes ``guard`` reads (the names in its text: the reader's names are words)."""
    import re

    return set(re.findall(r"[^\W\d]\w*", guard[0] + " " + guard[2])) - {"floor", "ceiling", "sqrt"}


def _outcome(left: Any, op: str, right: Any, sizes: Mapping[str, int]) -> bool | None:
    """Whether ``left op right`` holds at ``sizes`` (``None``: a size it reads is not given)."""
    import sympy

    from ncd.ir.size import substitute, symbol

    difference = substitute(left - right, {symbol(k): sympy.Integer(v) for k, v in sizes.items()})
    if not difference.is_number:
        return None
    sign = int(bool(difference > 0)) - int(bool(difference < 0))
    return {"<": sign < 0, "<=": sign <= 0, ">": sign > 0, ">=": sign >= 0, "==": sign == 0, "!=": sign != 0}[op]


def flipped(guards: Any, defaults: Mapping[str, Any], sizes: Mapping[str, int]) -> list[str]:
    """What each guard of ``guards`` (a block's ``meta["guards"]``) that comes out otherwise at ``sizes`` than at the
    traced ``defaults`` (a block's ``defaults``: its whole-number entries are the traced sizes) says (``[]``: the
    traced branch holds there).  A guard that changes only because one of its
    sizes is 1 there (transformers' ``q_length == 1``, ``batch_size != position_ids.shape[0]``, sdpa's ``is_causal``
    for one query: each the same result by another way) is not listed: a diagram without its model lowered there is
    warned about as at any other size (``read_back.guard``), one with it is checked by running the model."""
    if not guards:
        return []
    if not isinstance(guards, tuple) or not all(isinstance(g, tuple) and len(g) == 4 and all(isinstance(s, str) for s in g)
                                                and g[1] in _OPS.values() for g in guards):
        raise SchemaError(f"meta guards={guards!r:.80} is not a tuple of (left, op, right, line) texts")
    defaults = {k: v for k, v in defaults.items() if isinstance(v, int)}
    at = {**defaults, **sizes}
    out = []
    for left, op, right, line in guards:
        a, b = _side(left), _side(right)
        was, now = _outcome(a, op, b, defaults), _outcome(a, op, b, at)
        ones = {str(s): defaults[str(s)] for s in (a - b).free_symbols
                if at.get(str(s)) == 1 != defaults.get(str(s)) and str(s) in defaults}
        if was is not None and now is not None and was != now and ones \
                and _outcome(a, op, b, {**at, **ones}) == was:
            # a size of 1 (q_length == 1, batch_size != 1): a degenerate case models special-case alike; only when the
            # size of 1 is what changes it (b*t < 12 traced at b=2, t=4 flips at b=1, t=20 by t: refused)
            continue
        if was is None or now is None or was != now:
            changed = ", ".join(f"{k}={v}" for k, v in sorted(sizes.items()) if defaults.get(k) != v)
            out.append(f"at {line} the model compared {left} {op} {right} ({was} when traced, {now} at {changed})")
    return out
