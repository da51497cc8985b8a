"""The legend: the sizes a drawing names instead of writing them on its wires, one row per symbol.

A wire whose size is a compound expression is labelled by its axis's name and the size goes in
the legend once (``s̄`` on the wires, ``s = x²/256 + 1`` in the legend).  A name that stands for
several sizes in one drawing (the bottleneck width ``n_b = n₂/4`` of one stage, ``n₃/4`` of the
next) is indexed, as the paper indexes ``x̄_i``: one symbol per size (``n_b,1``, ``n_b,2``), each with
one row.  The rows a drawing shows are the rows of the fragments it places (:class:`Frag.rows
<ncd.render.layout.Frag>`), so a layout tried and discarded leaves nothing behind;
:func:`legend_problems` checks a finished drawing: every symbol defined once, every symbol drawn.

>>> import ncd
>>> d = ncd.Identity.of("b y:x/2") >> ncd.Linear("y -> y2:x/4")
>>> sorted(indexed_symbols(d).items())
[]
>>> e = (ncd.Identity.of("b y:x/2") >> ncd.ReLU()) >> ncd.Linear("y:x/2 -> y:x/4")
>>> sorted((name, str(sz), s) for (name, sz), s in indexed_symbols(e).items())
[('y', 'x/2', 'y_1'), ('y', 'x/4', 'y_2')]
>>> legend_problems(ncd.render.layout(e))
[]
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import sympy

from ncd.ir.axes import Axis
from ncd.ir.diagram import Diagram
from ncd.ir.size import _monomial, size
from ncd.render.model import Drawing, Item, Path, Rect, Text
from ncd.render.typeset import _TRAILING_DIGITS, Piece, legend_entry, pieces, symbol_pieces, typeset_text, wire_axes_read

__all__ = ["Row", "closed_form", "closed_rows", "indexed_symbols", "indexed_name", "legend_items", "legend_problems",
           "row_symbol"]

#: subscripts that index a family of symbols (``c_i``, ``x̄_λ``)
_INDEX_LETTERS = "ijklmnλ"

#: a subscript that names mesh axes (two letters or more), not an index of the symbol it follows
_MESH_SUB = re.compile(r"^[A-Za-z]{2,}(,[A-Za-z]{2,})*$")
#: a family's indexed name (``c_i``, ``n_b,i``) and an identifier a row's symbol is typeset as (compiled here: a
#: first drawing with a legend compiled them, a quarter of a millisecond)
_FAMILY_NAME = re.compile(r"[^\W\d_](_\w+,)?i|[^\W\d_]_i")
_IDENTIFIER = re.compile(r"[^\W\d]\w*(,\w+)?")

#: A legend row: the symbol (as :func:`~ncd.render.typeset.symbol_pieces` writes it) and its value.
Row = tuple[str, str]


def indexed_name(name: str, k: int) -> str:
    """The ``k``-th indexed symbol of ``name``, written so that the wires typeset it with a subscript:
    ``y`` → ``y_1`` (y₁), ``n_b`` → ``n_b,1`` (n with subscript b,1), ``n2`` → ``n_2,1``, ``nb`` → ``nb1``.

    >>> [indexed_name(n, 2) for n in ("y", "n_b", "n2", "nb")]
    ['y_2', 'n_b,2', 'n_2,2', 'nb2']
    """
    if "_" in name and len(name.partition("_")[0]) == 1:
        return f"{name},{k}"
    trailing = _TRAILING_DIGITS.fullmatch(name)
    if trailing:
        return f"{trailing.group(1)}_{trailing.group(2)},{k}"
    if len(name) == 1:
        return f"{name}_{k}"
    return f"{name}{k}"


def indexed_symbols(diagram: Diagram, read: tuple[list[Axis], list[Axis]] | None = None) -> dict[tuple[str, sympy.Expr], str]:
    """The indexed symbol of each ``(name, size)`` whose name the legend would give several sizes in
    ``diagram`` (numbered in the order the sizes first appear); names with one size are not listed.
    ``read``: ``diagram``'s :func:`~ncd.render.typeset.wire_axes_read`, when made already."""
    sizes: dict[str, dict[sympy.Expr, None]] = {}
    names: set[str] = set()
    # the leaves' wires first, left to right, so that the indices follow the drawing (a sequence's own type, read
    # first by the walk, holds its last output)
    leaves, others = wire_axes_read(diagram) if read is None else read  # each axis object once
    for axis in itertools.chain(leaves, others):
        names.add(axis.name)
        entry = legend_entry(axis)
        if entry is not None:
            sizes.setdefault(entry[0], {})[entry[1]] = None
    out: dict[tuple[str, sympy.Expr], str] = {}
    for name, values in sizes.items():
        if len(values) < 2:
            continue
        k = 0
        for value in values:
            k += 1
            while indexed_name(name, k) in names:
                k += 1
            out[(name, value)] = indexed_name(name, k)
    return out


#: a geometric closed form as a row writes it: ``a·p^(e)`` (``512·2^(1 - i)``), typeset with ``e`` raised
_GEOMETRIC = re.compile(r"^(.+)·(\d+)\^\((.+)\)$")


def closed_form(values: Sequence[object], indices: Sequence[int] | None = None, var: str = "i") -> str | None:
    """The closed form of a size that follows a pattern over an index (the paper's ``x̄_i = 512·2^{1−i}``):
    ``values`` at ``indices`` (1, 2, … by default) of ``var``, geometric with a whole or unit-fraction ratio, or
    arithmetic; ``None`` for fewer than three values or no pattern.  Geometric forms are written ``a·p^(e)``.

    >>> closed_form([512, 256, 128]), closed_form([24, 48, 96], [1, 2, 3]), closed_form(["x/2", "x/4", "x/8"])
    ('512·2^(1 - i)', '24·2^(i - 1)', 'x·2^(-i)')
    >>> closed_form([16, 32, 48]), closed_form([3, 5, 11]), closed_form([4, 8])
    ('16*i', None, None)
    """
    if len(values) < 3:
        return None
    idx = list(indices) if indices is not None else list(range(1, len(values) + 1))
    if len(idx) != len(values) or any(b - a != 1 for a, b in zip(idx, idx[1:])):
        return None
    try:
        vs = [size(v) for v in values]
    except Exception:
        return None
    key = (tuple(vs), idx[0], var)
    if key not in _CLOSED:
        if len(_CLOSED) > 10_000:
            _CLOSED.clear()
        _CLOSED[key] = _closed_form(vs, idx[0], var)
    return _CLOSED[key]


#: closed forms found (a page asks for the same values as each block of a family joins its definition)
_CLOSED: dict[tuple[tuple[sympy.Expr, ...], int, str], str | None] = {}


def _same(vs: Sequence[sympy.Expr], step: Callable[[sympy.Expr, sympy.Expr], sympy.Expr],
          accept: Callable[[sympy.Expr], bool]) -> sympy.Expr | None:
    """The one simplified ``step`` between consecutive values when there is one and ``accept`` takes it.  Steps that
    differ in value somewhere differ simplified: those are told apart without :func:`sympy.simplify` (a symbolic
    size costs milliseconds to simplify, and the first call imports ``sympy.physics``)."""
    steps = [step(a, b) for a, b in zip(vs, vs[1:])]
    if any(_apart(steps[0], other) for other in steps[1:]):
        return None
    first = _simplified(steps[0])
    if not accept(first):
        return None
    return first if all(_simplified(other) == first for other in steps[1:]) else None


def _simplified(value: sympy.Expr) -> sympy.Expr:
    """``sympy.simplify(value)``, which gives a number times symbols to whole powers (``64*b``, ``3*x/t``: a
    size's usual form) back as it is: those are not passed to it (its first call on a compound expression imports
    ``sympy.physics.units``, ~130 ms of the first drawing of a legend with a closed form)."""
    return value if _monomial(value) else sympy.simplify(value)


#: the values :func:`_apart` gives the symbols (sizes are positive)
_POINT = (1009, 1013, 1019, 1021, 1031, 1033, 1039, 1049)


def _apart(a: sympy.Expr, b: sympy.Expr) -> bool:
    """Whether ``a`` and ``b`` are two different numbers where each symbol takes one of :data:`_POINT`'s values
    (then no simplification makes them equal); ``False`` when that does not tell."""
    free = sorted(a.free_symbols | b.free_symbols, key=str)
    if len(free) > len(_POINT):
        return False
    point = {s: sympy.Integer(v) for s, v in zip(free, _POINT)}
    try:
        x, y = a.xreplace(point), b.xreplace(point)
    except Exception:  # noqa: BLE001 - a size that does not evaluate there: simplify tells
        return False
    return bool(x.is_Rational and y.is_Rational and x != y)


def _closed_form(vs: Sequence[sympy.Expr], start: int, var: str) -> str | None:
    """:func:`closed_form` of the sizes ``vs`` at ``start``, ``start + 1``, …"""
    if _no_pattern(vs):
        return None
    i = sympy.Symbol(var, positive=True)
    r = _same(vs, lambda a, b: b / a, lambda r: bool(r.is_Rational and r not in (0, 1) and (r.q == 1 or r.p == 1)))
    if r is not None:
        p, exponent = (int(r.p), i - start) if r.q == 1 else (int(r.q), start - i)
        a = vs[0]
        base = _simplified(a / r ** start)  # the value at i = 0, when it is simpler (x·2^{−i}, not x/2·2^{1−i})
        if sympy.count_ops(base) < sympy.count_ops(a):
            a, exponent = base, (i if r.q == 1 else -i)
        return f"{a}·{p}^({exponent})"
    d = _same(vs, lambda a, b: b - a, lambda d: bool(d != 0))
    if d is not None:
        return str(sympy.expand(vs[0] + d * (i - start)))
    return None


def _no_pattern(vs: Sequence[sympy.Expr]) -> bool:
    """Whether whole positive sizes ``vs`` have neither one ratio nor one difference between consecutive values,
    told in Python's numbers (:func:`_closed_form` finds no form then: its steps are these same rationals, and
    :func:`_apart` tells two of them apart); ``False`` when that does not tell (a symbolic size, or a pattern).

    >>> _no_pattern([sympy.Integer(n) for n in (3, 5, 11)]), _no_pattern([sympy.Integer(n) for n in (4, 8, 16)])
    (True, False)
    """
    if not all(getattr(v, "is_Integer", False) for v in vs):
        return False
    ns = [int(v.p) for v in vs]
    if min(ns) <= 0:
        return False
    a0, b0 = ns[0], ns[1]
    if all(b * a0 == a * b0 for a, b in zip(ns, ns[1:])):  # one ratio b0/a0
        return False
    return any(b - a != b0 - a0 for a, b in zip(ns, ns[1:]))


def closed_rows(rows: Sequence[Row], indexed: dict[tuple[str, sympy.Expr], str]) -> list[Row]:
    """``rows`` with each family of indexed symbols (``y_1 = x/2``, ``y_2 = x/4``, ``y_3 = x/8``; ``indexed`` as
    :func:`indexed_symbols` gives) written as one row in closed form when it has one (``y_i = x/2·2^{1−i}``),
    in the place of its first member."""
    members: dict[str, dict[int, tuple[str, sympy.Expr]]] = {}
    for (name, value), symbol in indexed.items():
        for k in range(1, len(indexed) + 2):
            if indexed_name(name, k) == symbol:
                members.setdefault(name, {})[k] = (symbol, value)
                break
    merged: dict[str, Row] = {}  # first member's symbol -> the family's row
    dropped: set[str] = set()
    shown = {key for key, _ in rows}
    for name, family in members.items():
        ks = sorted(family)
        family_name = indexed_name(name, 0).replace("0", "i")
        if ks != list(range(1, len(ks) + 1)) or not all(family[k][0] in shown for k in ks) or family_name in shown:
            continue
        if not _FAMILY_NAME.fullmatch(family_name):
            continue  # a multi-letter name (nb → nbi) would not read as indexed
        form = closed_form([family[k][1] for k in ks])
        if form is not None:
            merged[family[1][0]] = (family_name, form)
            dropped.update(family[k][0] for k in ks)
    if not merged:
        return list(rows)
    out: list[Row] = []
    for key, value in rows:
        if key in merged:
            out.append(merged[key])
        elif key not in dropped:
            out.append((key, value))
    return out


def row_symbol(key: str) -> tuple[Piece, ...]:
    """How a row's symbol is typeset (an identifier as the wires write it, other text as text)."""
    return symbol_pieces(key) if _IDENTIFIER.fullmatch(key) else typeset_text(key)


def _value_pieces(value: object) -> tuple[Piece, ...]:
    geometric = _GEOMETRIC.match(value) if isinstance(value, str) else None
    if geometric:  # a·p^(e): the exponent raised
        a, p, e = geometric.groups()
        raised = tuple(replace(piece, script=1) for piece in pieces(size(e)))
        return _value_pieces(a) + (Piece("·"), Piece(p)) + tuple(replace(x, text=x.text.strip()) for x in raised)
    if isinstance(value, str) and ", " in value:  # one value per instance of a shared definition
        out: tuple[Piece, ...] = ()
        for k, part in enumerate(value.split(", ")):
            out += ((Piece(", "),) if k else ()) + _value_pieces(part)
        return out
    try:
        return pieces(size(value))
    except Exception:
        return typeset_text(str(value))


def legend_items(rows: Sequence[Row], typeset: object, text: object, label_size: float,
                 max_w: float = float("inf")) -> tuple[list[Item], float, float]:
    """The legend box of ``rows`` at the origin, its width (with a 12 pt margin) and height; ``typeset`` and
    ``text`` are the layout's :meth:`~ncd.render.layout.Layout.text_size` and :meth:`~ncd.render.layout.Layout.text`.
    A row listing one value per instance (``m_i = 1600, 800, 200``) wider than ``max_w`` (the box's width with its
    margin) goes on over the lines below, each under its first value (:func:`_wrapped`); a row of one long value
    (``m = k₀·k₁·…·k₄₉``) breaks after its outermost products and sums (:func:`_broken`)."""
    if not rows:
        return [], 0.0, 0.0
    text_size, put = typeset, text
    room = max_w - 12.0 - 16.0  # (the margin and the box's padding)
    lines: list[tuple[float, tuple[Piece, ...]]] = []
    for k, v in rows:
        head = row_symbol(k) + (Piece(" = "),)
        row = head + _value_pieces(v)
        if room < float("inf") and isinstance(v, str) and ", " in v and text_size(row, label_size)[0] > room:  # type: ignore[operator]
            lines.extend(_wrapped(head, [_value_pieces(part) for part in v.split(", ")], text_size, label_size, room))
        elif room < float("inf") and text_size(row, label_size)[0] > room:  # type: ignore[operator]
            lines.extend(_broken(head, _value_pieces(v), text_size, label_size, room))
        else:
            lines.append((0.0, row))
    title = typeset_text("Legend")
    widths = [indent + text_size(r, label_size)[0] for indent, r in lines] + [text_size(title, label_size)[0]]  # type: ignore[operator]
    w = max(widths) + 16
    line = label_size * 1.35
    h = line * (len(lines) + 1) + 10
    items: list[Item] = [Rect(0.0, 0.0, w, h, fill="#eef0ee", stroke="#999999", radius=2.0, role="legend")]
    items.extend(put(title, (w - widths[-1]) / 2, 5 + label_size, label_size, role="title"))  # type: ignore[operator]
    items.append(Path((("M", 6.0, line + 5), ("L", w - 6, line + 5)), width=0.7, role="text"))
    for n, (indent, row) in enumerate(lines):
        items.extend(put(row, 8.0 + indent, 5 + line * (n + 1) + label_size, label_size, role="title"))  # type: ignore[operator]
    return items, w + 12, h


def _wrapped(head: tuple[Piece, ...], parts: list[tuple[Piece, ...]], text_size: Any, label_size: float,
             room: float) -> list[tuple[float, tuple[Piece, ...]]]:
    """The lines of a row ``head`` (``m_i = ``) listing ``parts`` that fit ``room`` where they can: each line as many
    values as fit, a comma after each but the last; the lines after the first indented under the first value (each
    at least one value, however wide).  A line's width is its pieces' widths summed (as :func:`typeset` places them:
    the separators are plain text, so no script stacks across them), each piece measured once."""
    def width(pieces: tuple[Piece, ...]) -> float:
        return float(text_size(pieces, label_size)[0])

    indent, sep, comma = width(head), width((Piece(", "),)), width((Piece(","),))
    out: list[tuple[float, tuple[Piece, ...]]] = []
    current, wide = parts[0], width(parts[0])
    for part in parts[1:]:
        w = width(part)
        if indent + wide + sep + w + comma <= room:  # (with the comma a line goes on after)
            current, wide = current + (Piece(", "),) + part, wide + sep + w
            continue
        out.append((indent if out else 0.0, (current if out else head + current) + (Piece(","),)))
        current, wide = part, w
    out.append((indent if out else 0.0, current if out else head + current))
    return out


def _broken(head: tuple[Piece, ...], value: tuple[Piece, ...], text_size: Any, label_size: float,
            room: float) -> list[tuple[float, tuple[Piece, ...]]]:
    """The lines of a row ``head`` (``m = ``) whose ``value`` is wider than ``room``: broken after a ``·``, ``+`` or
    ``−`` outside parentheses and scripts, as many terms on a line as fit (at least one), the lines after the
    first indented under the value.

    >>> lines = _broken((Piece("m = "),), tuple(Piece(t) for t in "a·b·(c+d)·e"), lambda p, s: (10.0 * len(p), 0, 0),
    ...                 10.0, 90.0)
    >>> [(indent, "".join(p.text for p in line)) for indent, line in lines]
    [(0.0, 'm = a·b·'), (10.0, '(c+d)·e')]
    """
    def width(pieces: tuple[Piece, ...]) -> float:
        return float(text_size(pieces, label_size)[0])

    terms: list[tuple[Piece, ...]] = [()]
    depth = 0
    for piece in value:
        terms[-1] += (piece,)
        depth += piece.text.count("(") - piece.text.count(")")
        if depth == 0 and piece.script == 0 and piece.text.strip() in ("·", "+", "−"):
            terms.append(())
    terms = [t for t in terms if t]
    indent = width(head)
    out: list[tuple[float, tuple[Piece, ...]]] = []
    current = head + terms[0]
    for term in terms[1:]:
        if (indent if out else 0.0) + width(current + term) > room:
            out.append((indent if out else 0.0, current))
            current = term
        else:
            current += term
    out.append((indent if out else 0.0, current))
    return out


def _joined(parts: Iterable[str]) -> str:
    return "".join(parts).replace(" ", "")


def legend_problems(drawing: Drawing) -> list[str]:
    """What is wrong with ``drawing``'s legend: a symbol given two values, or a symbol the drawing does not show
    (outside the legend box, as a wire label or in any other text)."""
    found: list[str] = []
    values: dict[str, list[str]] = {}
    for key, value in drawing.legend:
        values.setdefault(key, [])
        if value not in values[key]:
            values[key].append(value)
    for key, vs in values.items():
        if len(vs) > 1:
            found.append(f"legend symbol {key!r} has {len(vs)} definitions: {', '.join(vs)}")
    boxes = [(r.x, r.y, r.x + r.w, r.y + r.h) for r in drawing.of(Rect) if r.role == "legend"]

    def in_legend(t: Text) -> bool:
        return any(b[0] <= t.x <= b[2] and b[1] <= t.y <= b[3] for b in boxes)

    # each text as its runs' characters, a mesh axis's subscript (f_tp: f split over tp, ncd.distributed) left out
    shown = ["".join(_MESH_SUB.sub("", r.text) if r.dy > 0 and prev.dy == 0 else r.text
                     for prev, r in zip((t.runs[0], *t.runs), t.runs)).replace(" ", "")
             for t in drawing.of(Text) if not in_legend(t)]
    every = "\n".join(shown)  # one search per symbol over every text (a newline is no letter of a symbol)
    for key in values:
        symbol = _joined(p.text for p in row_symbol(key))
        if not _drawn(symbol, every):
            found.append(f"legend symbol {key!r} is not drawn")
    return found


def _drawn(symbol: str, text: str) -> bool:
    """Whether ``symbol`` occurs in ``text`` as a whole symbol (``n`` is not drawn by ``n₂``, nor ``y`` by ``y₁``);
    an indexed symbol (``c_i = 64·2^i``) is drawn by any of its instances (``c₀``, ``c₁``)."""
    if len(symbol) == 2 and symbol[1] in _INDEX_LETTERS:
        return re.search(rf"(?<![^\W\d_]){re.escape(symbol[0])}[\w,]", text) is not None
    if len(symbol) > 2 and symbol[-2] == "," and symbol[-1] in _INDEX_LETTERS:  # n_b,i is drawn by n_b,1
        return re.search(rf"(?<![^\W\d_]){re.escape(symbol[:-1])}\w", text) is not None
    for m in re.finditer(re.escape(symbol), text):
        after = text[m.end():m.end() + 1]
        before = text[m.start() - 1:m.start()] if m.start() else ""
        # a number before the symbol is its coefficient (the index 2i of blocks.2i+1 draws i)
        if not (after.isalnum() or after in ",'ʹ" and after) and not before.isalpha():
            return True
    return False
