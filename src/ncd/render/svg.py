"""The SVG painter: one element per primitive of a :class:`~ncd.render.model.Drawing`, no layout decisions.

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
from html import escape, unescape

from ncd.render import fonts
from ncd.render.fonts import face_for
from ncd.render.model import Circle, Drawing, Item, Path, Polygon, Rect, Run, Text, Tree, placements
from ncd.render.style import FONT_STACK, SERIF_STACK, SYMBOL_STACK

__all__ = ["paint_svg", "font_face_css", "faces_used"]

NBSP = "\u00a0"


_NUMBERS: dict[float, str] = {}


def _n(v: float) -> str:
    try:
        return _NUMBERS[v]  # coordinates repeat (rows of a page share their x): format each once
    except KeyError:
        pass
    if len(_NUMBERS) > 200_000:
        _NUMBERS.clear()
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    text = _NUMBERS[v] = "0" if text in ("-0", "") else text
    return text


def _path_d(p: Path, dx: float = 0.0, dy: float = 0.0) -> str:
    """The ``d`` attribute of ``p`` moved by ``(dx, dy)`` (the same arithmetic as :meth:`Path.moved`)."""
    n = _n
    out = []
    for c in p.commands:  # a drawing has tens of thousands of paths: the common commands are spelled out
        k = len(c)
        if k == 3:
            out.append(f"{c[0]} {n(c[1] + dx)} {n(c[2] + dy)}")
        elif k == 7:
            out.append(f"{c[0]} {n(c[1] + dx)} {n(c[2] + dy)} {n(c[3] + dx)} {n(c[4] + dy)} {n(c[5] + dx)} {n(c[6] + dy)}")
        else:
            out.append(c[0] + (" " + " ".join(n(v + (dx if i % 2 == 0 else dy)) for i, v in enumerate(c[1:]))
                               if k > 1 else ""))
    return " ".join(out)


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


_TEXT = re.compile(r"<text ([^>]*)>([^<]*)</text>")


def faces_used(svg: str) -> dict[str, set[str]]:
    """The characters each face draws in SVG text written by :func:`paint_svg` (for one shared ``@font-face``
    block over many drawings, e.g. the viewer's views)."""
    used: dict[str, set[str]] = {}
    symbol_stack, serif_stack = escape(SYMBOL_STACK), escape(SERIF_STACK)
    for attrs, body in _TEXT.findall(svg):
        symbol = symbol_stack in attrs
        serif = serif_stack in attrs
        face = face_for('font-weight="bold"' in attrs, 'font-style="italic"' in attrs, serif, symbol)
        used.setdefault(face, set()).update(unescape(body).replace(NBSP, " "))
    return used


def paint_svg(drawing: Drawing, *, embed_fonts: bool = True, scale: float = 1.0,
              placed: list[Placed] | None = None) -> str:
    """The SVG text of ``drawing`` (``scale`` multiplies the nominal width and height).

    With ``placed``, every item painted (and every footprint and port, which are not) is appended to it in painting
    order as ``(item, dx, dy, d)``: the item as laid out, the offset it is painted at and, for a path, the ``d``
    it is painted with (``None`` otherwise) — what the viewer's hit overlay needs, without a moved copy per item."""
    w, h = drawing.width, drawing.height
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(w * scale)}" height="{_n(h * scale)}" '
        f'viewBox="0 0 {_n(w)} {_n(h)}" font-family="{escape(FONT_STACK)}">',
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
    if embed_fonts:
        used: dict[str, set[str]] = {}
        for text_runs in runs.values():
            for run in text_runs:
                used.setdefault(face_for(run.bold, run.italic, run.serif, run.symbol), set()).update(run.text)
        css = fonts.font_face_css(used)
        if css:
            out.insert(2, f"<style>{css}</style>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


#: An item as laid out, the offset it is painted at and, for a path, its ``d`` (:func:`paint_svg`'s ``placed``).
Placed = tuple[Item, float, float, "str | None"]


class _Node:
    """Items to paint in place (a tree of one node)."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items


def _paint_tree(node: Tree, dx: float, dy: float, out: list[str], runs: dict[int, tuple[Run, ...]],
                placed: list[Placed] | None = None) -> None:
    """One element per visible item of the tree ``node`` placed at ``(dx, dy)``, in the order and at the offsets of
    :func:`ncd.render.model.placements` (the walk :func:`~ncd.render.model.flatten` makes, without its moved copies);
    the runs of its texts go into ``runs``, and every item with its offset into ``placed`` (see :func:`paint_svg`)."""
    n = _n
    for it, x, y in placements(node, dx, dy):
        if isinstance(it, Path):  # the commonest first
            extra = ' stroke-dasharray="4 3"' if it.dashed else ""
            if it.arrow:
                extra += ' marker-end="url(#ncd-arrow)"'
            d = _path_d(it, x, y)
            out.append(f'<path d="{d}" {_paint(it.fill, it.stroke, it.width)}{extra}/>')
            if placed is not None:
                placed.append((it, x, y, d))
            continue
        if placed is not None:
            placed.append((it, x, y, None))
        if isinstance(it, Text):
            runs[id(it.runs)] = it.runs
            tx, ty = it.x + x, it.y + y
            for run in it.runs:
                attrs = f'x="{n(tx + run.dx)}" y="{n(ty + run.dy)}" font-size="{n(run.size)}"'
                if run.symbol:
                    attrs += _SYMBOL_FAMILY
                elif run.serif:
                    attrs += _SERIF_FAMILY
                if run.italic:
                    attrs += ' font-style="italic"'
                if run.bold:
                    attrs += ' font-weight="bold"'
                out.append(f'<text {attrs} fill="#111111">{_text_body(run.text)}</text>')
        elif isinstance(it, Rect):
            attrs = f'x="{n(it.x + x)}" y="{n(it.y + y)}" width="{n(it.w)}" height="{n(it.h)}"'
            if it.radius:
                attrs += f' rx="{n(it.radius)}"'
            out.append(f"<rect {attrs} {_paint(it.fill, it.stroke, it.width)}/>")
        elif isinstance(it, Polygon):
            pts = " ".join(f"{n(px + x)},{n(py + y)}" for px, py in it.points)
            out.append(f'<polygon points="{pts}" {_paint(it.fill, it.stroke, it.width)}/>')
        elif isinstance(it, Circle):
            out.append(f'<circle cx="{n(it.cx + x)}" cy="{n(it.cy + y)}" r="{n(it.r)}" '
                       f'{_paint(it.fill, it.stroke, it.width)}/>')


_PAINTS: dict[tuple[str | None, str | None, float], str] = {}
_SYMBOL_FAMILY = f' font-family="{escape(SYMBOL_STACK)}"'
_SERIF_FAMILY = f' font-family="{escape(SERIF_STACK)}"'


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
