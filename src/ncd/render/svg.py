"""The SVG painter: the primitives of a :class:`~ncd.render.model.Drawing` in order, no layout decisions: one element
per primitive, except that consecutive plain wires of one stroke share a ``<path>`` (a subpath each), and texts take
their colour from the root.

The SVG is self-contained: subsets of the bundled fonts (Computer Modern, as in the paper;
:mod:`ncd.render.fonts`) with just the characters the drawing uses are embedded as
``@font-face`` rules (``embed_fonts=False`` names them only, with a fallback stack).

>>> from ncd.render.model import Drawing, Rect, Text
>>> svg = paint_svg(Drawing(20, 10, [Rect(1, 1, 5, 5), Text.plain(2, 8, "m")]))
>>> svg.startswith('<svg') and '<rect' in svg and "@font-face{font-family:'NCD Sans'" in svg
True
>>> sorted(faces_used(svg)["sans"])
['m']
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import escape, unescape
from typing import Any

from ncd.render import fonts
from ncd.render.fonts import face_for
from ncd.render.frag import LABEL, PATH, RUN, Deferred, PathStyle
from ncd.render.model import Circle, Drawing, Footprint, Item, Path, Polygon, Port, Rect, Run, Text, Tree
from ncd.render.style import FONT_STACK, SERIF_STACK, SYMBOL_STACK

__all__ = ["paint_svg", "font_face_css", "faces_used"]

NBSP = "\u00a0"
#: the colour of every text: the root's fill, which the texts inherit (every other element names its own fill)
TEXT_FILL = "#111111"


_NUMBERS: dict[float, str] = {}


def _n(v: float) -> str:
    text = _NUMBERS.get(v)  # coordinates repeat (rows of a page share their x): format each once
    return text if text is not None else _new(v)


def _new(v: float) -> str:
    """``v`` formatted (2 decimals, no trailing zeros) and kept: the painters' look-ups call it where they miss."""
    text = f"{v:.2f}"
    if text[-1] == "0":  # (else neither strip changes it, and it is neither "-0" nor "")
        text = text.rstrip("0").rstrip(".")
        if text == "-0" or not text:
            text = "0"
    _NUMBERS[v] = text  # (the table is bounded where a painting starts: paint_svg)
    return text


def _d(commands: tuple[Any, ...], x: float, y: float) -> str:
    """The ``d`` attribute of a path of ``commands`` moved by ``(x, y)`` (:func:`_path_d`): the commonest shapes
    spelled out, a wire's run (M H), its bend (M C), a run and a bend (M H C), two runs (M H H)."""
    got, new = _NUMBERS.get, _new
    c = commands[0]
    if len(commands) == 2 and len(c) == 3:
        e = commands[1]
        x0, y0 = c[1] + x, c[2] + y
        if len(e) == 3 and e[2] == c[2] and e[0] == "L":  # (the same y: a run along x, as H)
            x1 = e[1] + x
            return f"{c[0]}{got(x0) or new(x0)} {got(y0) or new(y0)}H{got(x1) or new(x1)}"
        if len(e) == 7:
            x1, y1, x2, y2, x3, y3 = e[1] + x, e[2] + y, e[3] + x, e[4] + y, e[5] + x, e[6] + y
            return (f"{c[0]}{got(x0) or new(x0)} {got(y0) or new(y0)}{e[0]}{got(x1) or new(x1)} "
                    f"{got(y1) or new(y1)} {got(x2) or new(x2)} {got(y2) or new(y2)} {got(x3) or new(x3)} "
                    f"{got(y3) or new(y3)}")
    elif len(commands) == 3 and len(c) == 3:
        e, f = commands[1], commands[2]
        if len(e) == 3 and e[2] == c[2] and e[0] == "L" and len(f) == 7:
            x0, y0, x1 = c[1] + x, c[2] + y, e[1] + x
            x2, y2, x3, y3, x4, y4 = f[1] + x, f[2] + y, f[3] + x, f[4] + y, f[5] + x, f[6] + y
            return (f"{c[0]}{got(x0) or new(x0)} {got(y0) or new(y0)}H{got(x1) or new(x1)}{f[0]}"
                    f"{got(x2) or new(x2)} {got(y2) or new(y2)} {got(x3) or new(x3)} {got(y3) or new(y3)} "
                    f"{got(x4) or new(x4)} {got(y4) or new(y4)}")
        if len(e) == 3 and e[2] == c[2] and e[0] == "L" and len(f) == 3 and f[2] == c[2] and f[0] == "L":
            x0, y0, x1, x2 = c[1] + x, c[2] + y, e[1] + x, f[1] + x  # (two runs along x: M H H)
            return f"{c[0]}{got(x0) or new(x0)} {got(y0) or new(y0)}H{got(x1) or new(x1)}H{got(x2) or new(x2)}"
    return _path_d(commands, x, y)


def _path_d(commands: tuple[Any, ...], dx: float = 0.0, dy: float = 0.0) -> str:
    """The ``d`` attribute of a path of ``commands`` moved by ``(dx, dy)`` (the same arithmetic as
    :meth:`Path.moved`), compact: no space after a command's letter, a straight run along ``x`` or ``y`` as
    ``H``/``V`` (the same segment)."""
    got, new = _NUMBERS.get, _new  # a drawing has tens of thousands of paths: numbers are looked up before formatting
    out = []
    last_x = last_y = None
    for c in commands:  # the common commands are spelled out
        k = len(c)
        if k == 3:
            x, y = c[1] + dx, c[2] + dy
            if c[0] == "L" and y == last_y:
                out.append(f"H{got(x) or new(x)}")
            elif c[0] == "L" and x == last_x:
                out.append(f"V{got(y) or new(y)}")
            else:
                out.append(f"{c[0]}{got(x) or new(x)} {got(y) or new(y)}")
            last_x, last_y = x, y
        elif k == 7:
            x1, y1, x2, y2, x, y = c[1] + dx, c[2] + dy, c[3] + dx, c[4] + dy, c[5] + dx, c[6] + dy
            out.append(f"{c[0]}{got(x1) or new(x1)} {got(y1) or new(y1)} {got(x2) or new(x2)} {got(y2) or new(y2)} "
                       f"{got(x) or new(x)} {got(y) or new(y)}")
            last_x, last_y = x, y
        else:  # ('Z',) (the pen goes back to the subpath's start: no H or V after it)
            out.append(c[0] + " ".join(_n(v + (dx if i % 2 == 0 else dy)) for i, v in enumerate(c[1:])))
            last_x = last_y = None
    return "".join(out)


_ESCAPED: dict[str, str] = {}


def _text_body(text: str) -> str:
    """A run's text as SVG character data (spaces kept as no-break spaces); texts repeat, each escaped once."""
    body = _ESCAPED.get(text)
    if body is None:
        if len(_ESCAPED) > 100_000:
            _ESCAPED.clear()
        body = _ESCAPED[text] = escape(text.replace(" ", NBSP))
    return body


def font_face_css(drawing: Drawing | None = None) -> str:
    """``@font-face`` rules embedding subsets of the bundled fonts with the characters ``drawing`` uses
    (every character of the bundled text faces when ``drawing`` is ``None``)."""
    used: dict[str, set[str]] = {}
    if drawing is None:
        used = {"sans": {chr(c) for c in range(0x20, 0x17F)}, "sans-bold": {chr(c) for c in range(0x20, 0x7F)},
                "serif-italic": {chr(c) for c in range(0x20, 0x17F)}}
    else:
        for t in drawing.of(Text):
            for run in t.runs:
                face = face_for(run.bold, run.italic, run.serif, run.symbol)
                used.setdefault(face, set()).update(run.text)
    return fonts.font_face_css(used)


_TEXT = re.compile(r"<text ([^>]*)>(?:<title>[^<]*</title>)?([^<]*)</text>")


def faces_used(svg: str) -> dict[str, set[str]]:
    """The characters each face draws in SVG text written by :func:`paint_svg` (for one shared ``@font-face``
    block over many drawings, e.g. the viewer's views)."""
    used: dict[str, set[str]] = {}
    for attrs, body in _TEXT.findall(svg):
        symbol = _SYMBOL_CLASS in attrs
        serif = _SERIF_CLASS in attrs
        face = face_for('font-weight="bold"' in attrs, 'font-style="italic"' in attrs, serif, symbol)
        used.setdefault(face, set()).update(unescape(body).replace(NBSP, " "))
    return used


def paint_svg(drawing: Drawing, *, embed_fonts: bool = True, scale: float = 1.0,
              placed: list[Placed] | None = None) -> str:
    """The SVG text of ``drawing`` (``scale`` multiplies the nominal width and height).

    With ``placed``, every item painted (and every footprint and port, which are not) is appended to it in painting
    order as ``(item, dx, dy, d)``: the item as laid out, the offset it is painted at and, for a path, the ``d``
    it is painted with (``None`` otherwise) — what the viewer's hit overlay needs, without a moved copy per item."""
    if len(_NUMBERS) > 200_000:  # (kept across paintings: a drawing's coordinates repeat in the next one's)
        _NUMBERS.clear()
    w, h = drawing.width, drawing.height
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(w * scale)}" height="{_n(h * scale)}" '
        f'viewBox="0 0 {_n(w)} {_n(h)}" font-family="{escape(FONT_STACK)}" fill="{TEXT_FILL}">',
        "<defs><marker id=\"ncd-arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" "
        "orient=\"auto\"><path d=\"M0 0 L10 5 L0 10 L3 5 Z\" fill=\"#222222\"/></marker></defs>",
    ]
    out.append(f'<rect x="0" y="0" width="{_n(w)}" height="{_n(h)}" fill="#ffffff"/>')
    runs: dict[int, tuple[Run, ...]] = {}  # the texts' runs, each tuple once (labels share their typeset runs)
    if drawing.made or drawing.tree is None:
        _paint_tree(_Node(drawing.items), 0.0, 0.0, out, runs, placed)
    else:
        _paint_tree(_Node(drawing.front), 0.0, 0.0, out, runs, placed)
        _paint_tree(*drawing.tree, out, runs, placed)
    serif = symbol = False  # the text faces other than the root's, named by a class each (see _run_rest)
    for text_runs in runs.values():
        for run in text_runs:
            if run.symbol:
                symbol = True
            elif run.serif:
                serif = True
    css = (_SERIF_RULE if serif else "") + (_SYMBOL_RULE if symbol else "")
    if embed_fonts:
        used: dict[str, set[str]] = {}
        for text_runs in runs.values():
            for run in text_runs:
                used.setdefault(face_for(run.bold, run.italic, run.serif, run.symbol), set()).update(run.text)
        css = fonts.font_face_css(used) + css
    if css:
        out.insert(2, f"<style>{css}</style>")
    out.append("</svg>\n")  # (the closing newline here: adding it to the joined text would copy that text again)
    return "\n".join(out)


#: An item as laid out, the offset it is painted at and, for a path, its ``d`` (:func:`paint_svg`'s ``placed``).
Placed = tuple[Item, float, float, "str | None"]


class _Node:
    """Items to paint in place (a tree of one node)."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items


def _paint_tree(node: Tree, dx: float, dy: float, out: list[str], runs: dict[int, tuple[Run, ...]],
                placed: list[Placed] | None = None) -> None:
    """The visible items of the tree ``node`` placed at ``(dx, dy)``, in the order and at the offsets of
    :func:`ncd.render.model.placements` (the walk :func:`~ncd.render.model.flatten` makes, without its moved copies);
    the runs of its texts go into ``runs``, and every item with its offset into ``placed`` (see :func:`paint_svg`).

    Consecutive stroked paths with the same stroke, width and dashes and neither fill nor arrowhead (most of a
    drawing's wires) are painted as one ``<path>``, a subpath each: the same strokes in the same order, with the
    attributes written once (a renderer restarts the dashes at each subpath, and without a fill the subpaths cannot
    cancel each other out)."""
    n, got, new = _n, _NUMBERS.get, _new
    append = out.append
    texts: dict[int, list[tuple[float, float, str]]] = {}  # each runs tuple's pieces, once (labels share runs)
    joined: list[str] = []  # the subpaths of the <path> being gathered, painted with the stroke below
    j_stroke: str = ""
    j_width = 0.0
    j_dashed = False
    j_style: PathStyle | None = None  # a deferred fragment's style of those subpaths (None: a record's)
    stack: list[tuple[Iterator[Any], float, float]] = [(iter(node.items), dx, dy)]
    while stack:  # the walk of placements(), spelled out: a generator's resumption per item is the dearer part
        items, x, y = stack.pop()
        for it in items:  # (a node's own iterator: resumed where it stopped when a subtree is done)
            kind = type(it)
            if kind is not Path and kind is not Port and kind is not Text and kind is not tuple:
                kind = _BASES.get(kind) or _base(kind)
            if kind is Path:  # the commonest first
                commands = it.commands
                c = commands[0]
                # the commonest shapes inline (as _d writes them: a call per path is a tenth of the painting)
                if len(commands) == 2 and len(c) == 3:
                    e = commands[1]
                    x0, y0 = c[1] + x, c[2] + y
                    if len(e) == 3 and e[2] == c[2] and e[0] == "L":  # (the same y: a run along x, as H)
                        x1 = e[1] + x
                        d = f"{c[0]}{got(x0) or new(x0)} {got(y0) or new(y0)}H{got(x1) or new(x1)}"
                    elif len(e) == 7:
                        x1, y1, x2, y2, x3, y3 = e[1] + x, e[2] + y, e[3] + x, e[4] + y, e[5] + x, e[6] + y
                        d = (f"{c[0]}{got(x0) or new(x0)} {got(y0) or new(y0)}{e[0]}{got(x1) or new(x1)} "
                             f"{got(y1) or new(y1)} {got(x2) or new(x2)} {got(y2) or new(y2)} {got(x3) or new(x3)} "
                             f"{got(y3) or new(y3)}")
                    else:
                        d = _path_d(commands, x, y)
                else:
                    d = _d(commands, x, y)
                if placed is not None:
                    placed.append((it, x, y, d))
                if it.fill is None and not it.arrow:
                    stroke, width, dashed = it.stroke, it.width, it.dashed
                    if joined and stroke == j_stroke and width == j_width and dashed == j_dashed:
                        joined.append(d)
                        continue
                    if joined:
                        append(_joined(joined, j_stroke, j_width, j_dashed))
                    joined = [d]
                    j_stroke, j_width, j_dashed = stroke, width, dashed
                    j_style = None
                    continue
                if joined:
                    append(_joined(joined, j_stroke, j_width, j_dashed))
                    joined = []
                key = (it.fill, it.stroke, it.width, it.dashed, it.arrow)
                append(f'<path d="{d}" {_PATH_PAINTS.get(key) or _path_paint(key)}/>')
                continue
            if kind is Port or kind is Footprint:  # not painted: (the viewer's) hit areas and wire ends
                if placed is not None:
                    placed.append((it, x, y, None))
                continue
            if kind is tuple:
                sub = it[2]
                steps = sub.unread_steps() if placed is None and type(sub) is Deferred else None
                if steps is not None:  # its items as its maker gives them, painted as their records would be
                    ox, oy = x + it[0], y + it[1]
                    run_a = run_b = None  # the ends of the last run and their text (a gap's wires share their ends)
                    for s in steps:
                        tag = s[0]
                        if tag == RUN or tag == PATH:
                            if tag == RUN:  # a straight run along x (M H)
                                if s[1] != run_a or s[2] != run_b:
                                    run_a, run_b = s[1], s[2]
                                    x0, x1 = run_a + ox, run_b + ox
                                    run_x0, run_x1 = got(x0) or new(x0), got(x1) or new(x1)
                                y0 = s[3] + oy
                                d = f"M{run_x0} {got(y0) or new(y0)}H{run_x1}"
                                st = s[4]
                            else:
                                commands = s[1]
                                c = commands[0]
                                e = commands[1] if len(commands) == 2 and len(c) == 3 else None
                                if e is not None and len(e) == 7:  # a bend (M C), as _d writes it
                                    x0, y0 = c[1] + ox, c[2] + oy
                                    x1, y1, x2, y2 = e[1] + ox, e[2] + oy, e[3] + ox, e[4] + oy
                                    x3, y3 = e[5] + ox, e[6] + oy
                                    d = (f"{c[0]}{got(x0) or new(x0)} {got(y0) or new(y0)}{e[0]}"
                                         f"{got(x1) or new(x1)} {got(y1) or new(y1)} {got(x2) or new(x2)} "
                                         f"{got(y2) or new(y2)} {got(x3) or new(x3)} {got(y3) or new(y3)}")
                                else:
                                    d = _d(commands, ox, oy)
                                st = s[2]
                            if st is j_style and joined:  # (the style of the subpaths gathered: one of them)
                                joined.append(d)
                                continue
                            if st.fill is None and not st.arrow:
                                if joined and st.stroke == j_stroke and st.width == j_width and st.dashed == j_dashed:
                                    joined.append(d)
                                    j_style = st
                                    continue
                                if joined:
                                    append(_joined(joined, j_stroke, j_width, j_dashed))
                                joined = [d]
                                j_stroke, j_width, j_dashed = st.stroke, st.width, st.dashed
                                j_style = st
                                continue
                            if joined:
                                append(_joined(joined, j_stroke, j_width, j_dashed))
                                joined = []
                            key = (st.fill, st.stroke, st.width, st.dashed, st.arrow)
                            append(f'<path d="{d}" {_PATH_PAINTS.get(key) or _path_paint(key)}/>')
                        elif tag == LABEL:
                            if joined:
                                append(_joined(joined, j_stroke, j_width, j_dashed))
                                joined = []
                            text_runs = s[1].runs
                            ident = id(text_runs)
                            pieces = texts.get(ident)
                            if pieces is None:
                                runs[ident] = text_runs
                                pieces = texts[ident] = [(run.dx, run.dy, _run_rest(run)) for run in text_runs]
                            tx, ty = s[2] + ox, s[3] + oy
                            base = got(ty) or new(ty)
                            for rx, ry, rest in pieces:
                                rx += tx
                                if ry:
                                    ry += ty
                                    append(f'<text x="{got(rx) or new(rx)}" y="{got(ry) or new(ry)}" {rest}')
                                else:
                                    append(f'<text x="{got(rx) or new(rx)}" y="{base}" {rest}')
                    continue
                stack.append((items, x, y))
                stack.append((iter(it[2].items), x + it[0], y + it[1]))
                break
            if placed is not None:
                placed.append((it, x, y, None))
            if kind is Text:
                if joined:
                    append(_joined(joined, j_stroke, j_width, j_dashed))
                    joined = []
                ident = id(it.runs)
                pieces = texts.get(ident)
                if pieces is None:
                    runs[ident] = it.runs
                    pieces = texts[ident] = [(run.dx, run.dy, _run_rest(run)) for run in it.runs]
                tx, ty = it.x + x, it.y + y
                base = got(ty) or new(ty)  # the baseline, shared by the runs that are not scripts
                for rx, ry, rest in pieces:
                    rx += tx
                    if ry:
                        ry += ty
                        append(f'<text x="{got(rx) or new(rx)}" y="{got(ry) or new(ry)}" {rest}')
                    else:  # (ty + 0.0 is ty)
                        append(f'<text x="{got(rx) or new(rx)}" y="{base}" {rest}')
                continue
            if kind is Rect:
                if joined:
                    append(_joined(joined, j_stroke, j_width, j_dashed))
                    joined = []
                attrs = f'x="{n(it.x + x)}" y="{n(it.y + y)}" width="{n(it.w)}" height="{n(it.h)}"'
                if it.radius:
                    attrs += f' rx="{n(it.radius)}"'
                append(f"<rect {attrs} {_paint(it.fill, it.stroke, it.width)}/>")
            elif kind is Polygon:
                if joined:
                    append(_joined(joined, j_stroke, j_width, j_dashed))
                    joined = []
                pts = " ".join(f"{n(px + x)},{n(py + y)}" for px, py in it.points)
                append(f'<polygon points="{pts}" {_paint(it.fill, it.stroke, it.width)}/>')
            elif kind is Circle:
                if joined:
                    append(_joined(joined, j_stroke, j_width, j_dashed))
                    joined = []
                append(f'<circle cx="{n(it.cx + x)}" cy="{n(it.cy + y)}" r="{n(it.r)}" '
                       f'{_paint(it.fill, it.stroke, it.width)}/>')
    if joined:
        append(_joined(joined, j_stroke, j_width, j_dashed))


def _joined(ds: list[str], stroke: str, width: float, dashed: bool) -> str:
    """One ``<path>`` of the subpaths ``ds``, stroked (no fill, no arrowhead)."""
    key = (None, stroke, width, dashed, False)
    return f'<path d="{"".join(ds)}" {_PATH_PAINTS.get(key) or _path_paint(key)}/>'


def _run_rest(run: Run) -> str:
    """A run's ``<text>`` element after its position: its size, face and characters."""
    attrs = f'font-size="{_n(run.size)}"'
    if run.symbol:
        attrs += f' class="{_SYMBOL_CLASS}"'
    elif run.serif:
        attrs += f' class="{_SERIF_CLASS}"'
    if run.italic:
        attrs += ' font-style="italic"'
    if run.bold:
        attrs += ' font-weight="bold"'
    if run.title:  # an elided label: its whole text a tooltip (a <title> is not drawn, in browsers nor cairosvg)
        return f'{attrs}><title>{escape(run.title)}</title>{_text_body(run.text)}</text>'
    return f'{attrs}>{_text_body(run.text)}</text>'


_BASES: dict[type, type] = {}


def _base(kind: type) -> type:
    """The painted kind a type of item is drawn as (a subclass, e.g. the viewer's tagged paths, as its base)."""
    for base in (tuple, Path, Text, Rect, Polygon, Circle, Port, Footprint):
        if issubclass(kind, base):
            _BASES[kind] = base
            return base
    _BASES[kind] = kind
    return kind


_PATH_PAINTS: dict[tuple[str | None, str, float, bool, bool], str] = {}


def _path_paint(key: tuple[str | None, str, float, bool, bool]) -> str:
    """A path's attributes after its ``d``: its paint, dashes and arrowhead (a drawing has a handful)."""
    fill, stroke, width, dashed, arrow = key
    text = _paint(fill, stroke, width) + (' stroke-dasharray="4 3"' if dashed else "")
    if arrow:
        text += ' marker-end="url(#ncd-arrow)"'
    if len(_PATH_PAINTS) < 10_000:
        _PATH_PAINTS[key] = text
    return text


_PAINTS: dict[tuple[str | None, str | None, float], str] = {}
#: the classes of the serif and symbol texts, and their rules in the drawing's ``<style>``: one rule each instead of
#: the font stack repeated on every text (a tenth of a large drawing's SVG); the other texts take the root's sans stack
_SERIF_CLASS, _SYMBOL_CLASS = "ncd-s", "ncd-y"
_SERIF_RULE = f".{_SERIF_CLASS}{{font-family:{SERIF_STACK}}}"
_SYMBOL_RULE = f".{_SYMBOL_CLASS}{{font-family:{SYMBOL_STACK}}}"


def _paint(fill: str | None, stroke: str | None, width: float) -> str:
    key = (fill, stroke, width)
    text = _PAINTS.get(key)  # a drawing uses a handful of paints
    if text is None:
        text = f'fill="{fill or "none"}"'
        if stroke:
            text += f' stroke="{stroke}" stroke-width="{_n(width)}"'
        if len(_PAINTS) < 10_000:
            _PAINTS[key] = text
    return text
