"""Typesetting sizes and axis labels as the paper writes them.

A size becomes a list of styled pieces: symbols in italic (overlined for item axes),
subscripts from ``_`` (``c_i`` → c with subscript i), exponents raised (``k**2`` → k²),
quotients with a slash (``x/s``), products of a number and symbols juxtaposed (``2c``).

>>> from ncd.ir.size import size
>>> [p.text for p in pieces(size("x/s"), item=True)]
['x', '/', 's']
>>> [(p.text, p.script) for p in pieces(size("k**-0.5"))]
[('k', 0), ('−1/2', 1)]
>>> label_text(__import__("ncd").parse_axis("k:10"))
'k = 10'
>>> [(p.text, p.script) for p in pieces(sympy.Float(0.353553390593274))], pieces(sympy.Float(0.1234567))[0].text
([('8', 0), ('−1/2', 1)], '0.1235')
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import sympy

from ncd.ir.axes import Axis
from ncd.ir.size import size_text
from ncd.render.fonts import advance, face_for, ink_extent, italic_overhang, text_face_characters
from ncd.render.model import Run, Text

if TYPE_CHECKING:
    from ncd.ir.diagram import Diagram

__all__ = ["Piece", "TEXT_LIMIT", "NAME_LIMIT", "WIDTH_LIMIT", "ELIDED_WIDTH", "elided",
           "pieces", "axis_pieces", "label_text", "legend_entry", "name_pieces", "symbol_pieces", "typeset",
           "typeset_text", "DiagramAxes", "diagram_axes", "as_item", "factor_pieces", "wire_axes",
           "wire_axes_read"]


@dataclass(frozen=True)
class Piece:
    """One styled fragment: ``script`` is 0 (baseline), 1 (superscript) or -1 (subscript)."""

    text: str
    italic: bool = False
    script: int = 0
    overline: bool = False
    #: the whole text when ``text`` is part of an elided one (drawn as the SVG's ``<title>``: a tooltip)
    title: str = ""


#: a piece of text wider than this (points) is drawn elided in the middle (``head…tail``) to about
#: :data:`ELIDED_WIDTH`, its whole text kept as the SVG's ``<title>`` (a tooltip): a 300-character label made the
#: page 1,800 pt wide (a column page is 640 pt; the widest text of the corpus's drawings is 552 pt, a legend's list)
WIDTH_LIMIT = 600.0
ELIDED_WIDTH = 480.0
#: the most characters of a text :func:`typeset_text` reads in full (a text in many short pieces, ``a_b c_d …``,
#: that no one piece makes too wide)
TEXT_LIMIT = 250
#: the most characters of a size variable's (an axis's) name drawn in full: a longer name is elided the same way
NAME_LIMIT = 32


def elided(text: str, limit: int) -> str:
    """``text`` cut in the middle to ``limit`` characters (``head…tail``) when it is longer.

    >>> elided("abcdefghij", 6), elided("abc", 6)
    ('abc…ij', 'abc')
    """
    if len(text) <= limit:
        return text
    head = limit // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


#: prime marks an axis name may end with (a second copy of an axis: ``tʹ``)
_PRIMES = "'ʹ"


def _symbol(name: str, item: bool, script: int) -> list[Piece]:
    if len(name) > NAME_LIMIT:  # drawn elided as written, the whole name a tooltip
        return [Piece(elided(name, NAME_LIMIT), italic=True, script=script, overline=item and script == 0, title=name)]
    base, _, sub = name.partition("_")
    if len(base) > 1 and sub:  # a Python identifier (self_attn, num_heads): printed as written
        base, sub = name, ""
    # a name in a size is a variable: italic whether it has one letter or several (n, ch, row)
    letters = base.rstrip(_PRIMES)
    primes = base[len(letters):] if letters else ""
    if primes:  # tʹ (a second copy of t): the overline is over the letter, the prime after it
        base = letters
    trailing = _TRAILING_DIGITS.fullmatch(base) if not sub else None
    if trailing:  # c0, n1, x1, n8ʹ: the paper writes c₀, n₁, x₁, n′₈
        base, sub = trailing.group(1), trailing.group(2)
    out = [Piece(base, italic=base.isalpha(), script=script, overline=item and script == 0)]
    if primes:
        out.append(Piece(primes, italic=True, script=script))
    if sub:
        out.append(Piece(sub.replace("_", ","), italic=len(sub) == 1 and sub.isalpha(), script=-1))
    return out


def symbol_pieces(name: str, item: bool = False) -> tuple[Piece, ...]:
    """A size variable's name as the wires write it (``n_b`` → n with subscript b; ``self_attn`` as written);
    ``item``: overlined, as an item axis's wire writes it.  A primed name with a number is typeset as the
    unprimed one is, the prime after the letter (``n8ʹ`` → italic n′ with subscript 8, as ``n8`` → n₈).

    >>> [(p.text, p.italic, p.script) for p in symbol_pieces("n8ʹ")]
    [('n', True, 0), ('ʹ', True, 0), ('8', False, -1)]
    """
    return tuple(_symbol(name, item, 0))


def _exponent_text(e: sympy.Expr) -> str:
    return str(e).replace(" ", "").replace("-", "−").replace("**", "^").replace("*", "·")


def _root(v: float) -> tuple[int, str] | None:
    """``(n, "−1/2")`` or ``(n, "1/2")`` when ``v > 0`` is ``n^{−1/2}`` or ``√n`` of an ``n`` that is no square: a
    number no one writes out (0.35355339 is 8^{−1/2}).  None for any other number, a rational one included (1/3 is
    not 9^{−1/2}, 2 is not 4^{1/2}: a number as written stays itself)."""
    if not v > 0 or not math.isfinite(v):
        return None
    for n, power, e in ((round(1 / (v * v)), "−1/2", -0.5), (round(v * v), "1/2", 0.5)):
        if 2 <= n <= 1 << 20 and abs(n ** e - v) <= 1e-9 * v and math.isqrt(n) ** 2 != n:
            return n, power
    return None


def _float_pieces(value: float, script: int) -> list[Piece]:
    """A float as the paper would write it: ``n^{−1/2}`` or ``√n`` when it is one, else 4 significant digits."""
    sign = "−" if value < 0 else ""
    v = abs(value)
    root = _root(v)
    if root is not None:
        n, power = root
        if script:
            return [Piece(f"{sign}{n}^{power}", script=script)]
        return [Piece(f"{sign}{n}", script=script), Piece(power, script=1)]
    text = f"{v:.4g}"
    if "e" in text:
        mantissa, exp = text.split("e")
        text = f"{mantissa}·10^{int(exp)}".replace("-", "−") if script else mantissa
        if not script:
            return [Piece(sign + text + "·10", script=script), Piece(str(int(exp)).replace("-", "−"), script=1)]
    return [Piece(sign + text, script=script)]


def _pieces(expr: sympy.Expr, item: bool, script: int, outer: bool = True) -> list[Piece]:
    if isinstance(expr, sympy.Float) or (isinstance(expr, sympy.Rational) and expr.q > 10_000):
        return _float_pieces(float(expr), script)  # Scale(0.3536) is stored as an exact fraction of 10^15
    if isinstance(expr, sympy.Integer) or expr.is_Number:
        return [Piece(size_text(expr).replace("-", "−"), script=script)]  # (str, kept: sympy's printer is slow)
    if isinstance(expr, sympy.Symbol):
        return _symbol(expr.name, item, script)
    if isinstance(expr, sympy.Pow):
        base, e = expr.as_base_exp()
        if e == sympy.Rational(1, 2):
            return [Piece("√", script=script)] + _wrap(base, item, script)
        inner = _wrap(base, item, script)
        if script == 0:  # the exponent typeset like any size, raised: 2^{1−l} with an italic l
            return inner + _pieces(e, False, 1)
        return inner + [Piece("^" + _exponent_text(e), script=script)]
    if isinstance(expr, sympy.Mul):
        num, den = sympy.fraction(expr)
        if den != 1:
            return _wrap(num, item, script) + [Piece("/", script=script)] + _wrap(den, False, script)
        coeff, rest = expr.as_coeff_Mul()
        out: list[Piece] = []
        if coeff == -1:
            out.append(Piece("−", script=script))
        elif coeff != 1:
            out.extend(_pieces(coeff, item, script))
        factors = list(rest.as_ordered_factors()) if isinstance(rest, sympy.Mul) else [rest]
        for k, f in enumerate(factors):
            if k > 0 or (coeff != 1 and coeff != -1 and not isinstance(f, sympy.Symbol)):
                out.append(Piece("·", script=script))
            out.extend(_wrap(f, item, script))
        return out
    if isinstance(expr, sympy.Add):
        out = []
        for k, term in enumerate(expr.as_ordered_terms()):
            negative = term.could_extract_minus_sign()
            body = -term if negative else term
            if k > 0:
                sign = "−" if negative else "+"
                out.append(Piece(f" {sign} " if script == 0 else sign, script=script))
            elif negative:
                out.append(Piece("−", script=script))
            out.extend(_pieces(body, item, script, outer=False))
        return out
    return [Piece(str(expr), script=script)]


def _wrap(expr: sympy.Expr, item: bool, script: int) -> list[Piece]:
    inner = _pieces(expr, item, script, outer=False)
    if isinstance(expr, (sympy.Add, sympy.Mul)) and len(expr.args) > 1:
        return [Piece("(", script=script)] + inner + [Piece(")", script=script)]
    return inner


@functools.lru_cache(maxsize=8192)
def pieces(expr: sympy.Expr, item: bool = False) -> tuple[Piece, ...]:
    """The styled pieces of a size expression (cached: sizes repeat a lot)."""
    return tuple(_pieces(sympy.sympify(expr), item, 0))


@functools.lru_cache(maxsize=8192)
def axis_pieces(axis: Axis) -> tuple[Piece, ...]:
    """The label of a wire: its size (``x̄``, ``28²``, ``x̄/s``), or ``name = size`` when the name says more."""
    item = axis.role == "item"
    if axis.parts:
        sizes = [p.size for p in axis.parts]
        if all(s == sizes[0] for s in sizes):
            return pieces(sizes[0], item) + (Piece(str(len(sizes)), script=1),)
        out: list[Piece] = []
        for k, p in enumerate(axis.parts):
            if k:
                out.append(Piece("·"))
            out.extend(axis_pieces(p))
        return tuple(out)
    if axis.size.is_Number:  # (no symbol in it: the name is not made one)
        plain = size_text(axis.size) == axis.name
    else:
        named = sympy.Symbol(axis.name, positive=True)
        plain = axis.size == named or size_text(axis.size) == axis.name or named in axis.size.free_symbols
    if plain:
        return pieces(axis.size, item)  # x̄/2 says more than x̄ = x/2
    if axis.name.isidentifier():
        return tuple(_symbol(axis.name, item, 0)) + (Piece(" = "),) + pieces(axis.size, False)
    return pieces(axis.size, item)


@functools.lru_cache(maxsize=8192)  # a drawing asks for the same few axes thousands of times
def legend_entry(axis: Axis) -> tuple[str, sympy.Expr] | None:
    """``(name, size)`` when a wire is better labelled by its name with the size in the legend: a named axis
    whose size is a compound expression not mentioning the name (``s = x²/256 + 1``, ``x_i = 512·2^{1−i}``)."""
    if axis.parts or not axis.name.isidentifier():
        return None
    sz = axis.size
    if sz.is_Number or sz.is_Symbol:
        return None
    named = sympy.Symbol(axis.name, positive=True)
    if sz == named or size_text(sz) == axis.name or named in sz.free_symbols:
        return None
    return axis.name, sz


@functools.lru_cache(maxsize=8192)
def name_pieces(axis: Axis) -> tuple[Piece, ...]:
    """The wire label that names ``axis`` (its size is in the legend): ``s̄``."""
    return tuple(_symbol(axis.name, axis.role == "item", 0))


@dataclass(frozen=True)
class DiagramAxes:
    """What a drawing needs to know about the axes of the whole diagram (see :func:`diagram_axes`)."""

    #: ``(name, size)`` of every axis some node marks as an item axis
    items: frozenset[tuple[str, sympy.Expr]] = frozenset()
    #: the names of the axes of each whole-number size
    by_size: tuple[tuple[int, frozenset[str]], ...] = ()

    def named(self, value: int) -> str | None:
        """The one axis name of size ``value`` (``None`` when there is none or several)."""
        names = dict(self.by_size).get(value, frozenset())
        return next(iter(names)) if len(names) == 1 else None


def wire_axes(diagram: Diagram, leaves: bool = False) -> Iterator[Axis]:
    """The distinct axis objects on the wires of ``diagram``'s nodes (``leaves``: of the nodes without children):
    :func:`wire_axes_read`'s two lists, the leaves' first.

    >>> import ncd
    >>> sorted({a.name for a in wire_axes(ncd.Linear("m -> k h"))})
    ['h', 'k', 'm']
    """
    on_leaves, on_others = wire_axes_read(diagram)
    yield from on_leaves
    if not leaves:
        yield from on_others


def wire_axes_read(diagram: Diagram) -> tuple[list[Axis], list[Axis]]:
    """The distinct axis objects of :func:`wire_axes` in one walk: those on the wires of the nodes without children
    (``wire_axes(diagram, leaves=True)``), then the others' not among them (the rest of ``wire_axes(diagram)``),
    each in the order first met.

    >>> import ncd
    >>> [[a.name for a in axes] for axes in wire_axes_read(ncd.Linear("m -> k") >> ncd.ReLU())]
    [['m', 'k'], []]
    """
    leaf_seen: set[int] = set()  # the ids of the types and segments read, for the leaves and for the others
    other_seen: set[int] = set()
    leaves: dict[int, Axis] = {}
    others: dict[int, Axis] = {}
    for node in diagram.walk():
        seen, out = (other_seen, others) if node.children() else (leaf_seen, leaves)
        for typ in (node.dom, node.cod):
            ident = id(typ)
            if ident in seen:
                continue
            seen.add(ident)
            for seg in typ.segments:  # (the fields, not the types' iterators: a Python call per type and segment)
                ident = id(seg)
                if ident not in seen:
                    seen.add(ident)
                    for a in seg.axes:
                        out.setdefault(id(a), a)
    return list(leaves.values()), [a for k, a in others.items() if k not in leaves]


def diagram_axes(diagram: Diagram, axes: Iterable[Axis] | None = None) -> DiagramAxes:
    """The item axes of ``diagram`` and its axis names by size.

    Roles are drawing hints (:meth:`Axis.same` ignores them), so a box built from plain names
    (``CausalMask("y", "x")``, ``Softmax("x")``) outputs feature wires even when it receives ``ȳ x̄``.
    The paper's overline belongs to the axis, not to one box: the wire labels keep it (:func:`as_item`).

    >>> import ncd
    >>> axes = diagram_axes(ncd.Einsum("~y k:8, ~x k:8 -> ~y ~x") >> ncd.CausalMask("y", "x"))
    >>> sorted(n for n, _ in axes.items), axes.named(8)
    (['x', 'y'], 'k')
    """
    items: set[tuple[str, sympy.Expr]] = set()
    by_size: dict[int, set[str]] = {}
    seen: set[int] = set()  # an axis object read again adds nothing
    for a in wire_axes(diagram) if axes is None else axes:
        if id(a) in seen:
            continue
        seen.add(id(a))
        if a.parts:
            continue
        if a.role == "item":
            items.add((a.name, a.size))
        if a.size.is_Integer:
            by_size.setdefault(int(a.size), set()).add(a.name)
    return DiagramAxes(frozenset(items), tuple((n, frozenset(names)) for n, names in sorted(by_size.items())))


def as_item(axis: Axis, axes: DiagramAxes) -> Axis:
    """``axis`` drawn as an item (overlined) when the diagram marks its name and size as one anywhere."""
    if axis.role == "item" or axis.parts or (axis.name, axis.size) not in axes.items:
        return axis
    return replace(axis, role="item")


def factor_pieces(factor: sympy.Expr, axes: DiagramAxes) -> tuple[Piece, ...]:
    """A constant factor written with the size symbol it is a power of, as the paper does: ``k^{−1/2}``, not
    ``8^{−1/2}`` or 0.3536, when the diagram has exactly one axis of that size and the number is one no one writes
    out (an irrational ``n^{±1/2}``, :func:`_root`); otherwise as :func:`pieces`.  A number as written stays itself:
    ``∗2`` on a wire of size 4 is not ``m^{1/2}``, ``∗0.25`` is not ``m^{−1}`` (the factor does not follow ``m``).

    >>> from ncd.ir.size import size
    >>> axes = diagram_axes(__import__("ncd").Identity.of("~x k:8"))
    >>> [(p.text, p.script) for p in factor_pieces(sympy.Float(8 ** -0.5), axes)]
    [('k', 0), ('−1/2', 1)]
    >>> [p.text for p in factor_pieces(size("k**-0.5"), axes)]
    ['k', '−1/2']
    >>> [p.text for p in factor_pieces(sympy.Integer(2), diagram_axes(__import__("ncd").Identity.of("~x m:4")))]
    ['2']
    """
    if factor.is_number and factor.is_real and factor > 0:
        root = _root(float(factor))
        name = axes.named(root[0]) if root is not None else None
        if root is not None and name is not None:
            return tuple(_symbol(name, False, 0)) + (Piece(root[1], script=1),)
    return pieces(factor)


def label_text(axis: Axis) -> str:
    """The label of ``axis`` as plain text (for messages and tests)."""
    return "".join(p.text for p in axis_pieces(axis))


def typeset(parts: tuple[Piece, ...], x: float, y: float, size: float, role: str = "label",
            owner: int | None = None, bold: bool = False) -> tuple[Text, list[tuple[float, float, float]]]:
    """Place pieces on a baseline at ``(x, y)``; returns the text and the overlines as ``(x0, x1, y)``."""
    runs: list[Run] = []
    overlines: list[tuple[float, float, float]] = []
    dx = 0.0
    ascent = 0.72 * size
    descent = 0.25 * size
    last_script, last_start, last_width = 0, 0.0, 0.0
    for p in parts:
        s = size * (0.7 if p.script else 1.0)
        dy = -0.42 * size if p.script == 1 else (0.22 * size if p.script == -1 else 0.0)
        chunks = _split_symbols(p.text)
        widths = [_chunk_width(chunk, sym, s, bold, p.italic) for chunk, sym in chunks]
        w = sum(widths)
        if w > WIDTH_LIMIT and len(p.text) > 8:  # elided to about ELIDED_WIDTH, the whole text a tooltip
            p = Piece(elided(p.text, max(8, int(len(p.text) * ELIDED_WIDTH / w))), p.italic, p.script, p.overline,
                      p.title or p.text)
            chunks = _split_symbols(p.text)
            widths = [_chunk_width(chunk, sym, s, bold, p.italic) for chunk, sym in chunks]
            w = sum(widths)
        if p.italic and chunks and not chunks[-1][1]:  # italic correction before what follows
            w += italic_overhang(chunks[-1][0], "serif-italic", s)
        if p.script and last_script == -p.script:  # a subscript and a superscript stack (L₊^Q)
            dx = last_start
            start, dx = dx, dx + max(w, last_width)
        else:
            start, dx = dx, dx + w
        offset = start
        for (chunk, is_symbol), cw in zip(chunks, widths):
            runs.append(Run(chunk, offset, dy, s, p.italic and not is_symbol, bold, serif=p.italic and not is_symbol,
                            symbol=is_symbol, title=p.title))
            offset += cw
            up, down = ink_extent(chunk, face_for(bold, p.italic and not is_symbol, p.italic and not is_symbol,
                                                  is_symbol), s)
            ascent, descent = max(ascent, up - dy), max(descent, down + dy)  # (, / and √ reach past 0.72 and 0.25
        if p.overline:
            slant = 0.12 * s if p.italic else 0.0
            overlines.append((x + start + 0.06 * s + slant, x + start + w + slant - 0.04 * s, y - 0.78 * size))
            ascent = max(ascent, 0.86 * size)
        if p.script == 1:
            ascent = max(ascent, 0.42 * size + 0.72 * s)
        if p.script == -1:
            descent = max(descent, 0.22 * size + 0.25 * s)
        last_script, last_start, last_width = p.script, start, w
    return Text(x, y, tuple(runs), dx, ascent, descent, role, owner), overlines  # type: ignore[arg-type]


def _chunk_width(chunk: str, symbol: bool, size: float, bold: bool, italic: bool) -> float:
    return advance(chunk, face_for(bold, italic and not symbol, italic and not symbol, symbol), size)


def is_symbol(ch: str) -> bool:
    """Whether ``ch`` is missing from the text font (Computer Modern Sans): it is drawn from the symbols face."""
    return ord(ch) not in text_face_characters()


def _split_symbols(text: str) -> list[tuple[str, bool]]:
    characters = text_face_characters()
    if characters.issuperset(map(ord, text)):  # (most texts: none from the symbols face)
        return [(text, False)]
    out: list[tuple[str, bool]] = []
    for ch in text:
        flag = ord(ch) not in characters
        if out and out[-1][1] == flag:
            out[-1] = (out[-1][0] + ch, flag)
        else:
            out.append((ch, flag))
    return out or [("", False)]


_WORD_END = re.compile(r"\w*$")
_TRAILING_DIGITS = re.compile(r"([A-Za-z]+?)(\d+)")  # (c0, n1: a name ending in digits)


@functools.lru_cache(maxsize=8192)  # block names and labels repeat (a layer's name in every instance)
def typeset_text(text: str) -> tuple[Piece, ...]:
    """Plain text with ``_x`` subscripts and ``^x`` superscripts (single tokens), e.g. ``C_λ``, ``L^Q``.

    An underscore after a lower-case word of several letters is part of a Python name and printed as written:

    >>> [p.text for p in typeset_text("self_attn: C_λ AR_tp")]
    ['self_attn: C', 'λ', ' AR', 'tp']

    A text over :data:`TEXT_LIMIT` characters is elided in the middle, each piece titled with the whole text.
    An ``_`` or ``^`` before no token is printed as written: ``[p.text for p in typeset_text("a $_%")] == ['a $_%']``.
    """
    if len(text) > TEXT_LIMIT:
        return tuple(replace(p, title=text) for p in typeset_text(elided(text, TEXT_LIMIT)))
    out: list[Piece] = []
    buf = ""
    k = 0
    while k < len(text):
        ch = text[k]
        identifier = False
        if ch == "_":  # self_attn, q_proj: a Python name, printed as written (but C_λ, n_b, AR_tp: a subscript)
            word = _WORD_END.search(buf).group(0)  # type: ignore[union-attr]
            identifier = len(word) > 1 and any(c.islower() for c in word) and text[k + 1:k + 2] != "{"
        if ch in "_^" and k + 1 < len(text) and not identifier and (text[k + 1].isalnum() or text[k + 1] in "{−-+"):
            if buf:
                out.append(Piece(buf))
                buf = ""
            end = k + 1
            if text[end] == "{":
                close = text.find("}", end)
                close = len(text) if close < 0 else close
                token, k = text[end + 1:close], close + 1
            else:
                while end < len(text) and (text[end].isalnum() or text[end] in "−-+"):
                    end += 1
                token, k = text[k + 1:end], end
            out.append(Piece(token, script=1 if ch == "^" else -1))
            continue
        buf += ch
        k += 1
    if buf:
        out.append(Piece(buf))
    return tuple(out)
