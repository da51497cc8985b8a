"""A finished drawing: a body fragment framed by its boundary labels, with its title and legend.

:func:`framed` adds the wire labels at both ends and the boundary ports; :func:`framing`
decides where the title and legend go and the drawing's size (the page layout compares
attempts by it); :func:`_finish` makes the :class:`~ncd.render.model.Drawing`.

>>> import ncd
>>> ncd.render.layout(ncd.Linear("m -> n"), title="T").items[0].role
'title'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ncd.ir.axes import Type
from ncd.ir.collector import no_collector
from ncd.render.context import LayoutContext
from ncd.render.extents import Memo, _any_hit, smallest_text
from ncd.render.frag import Frag, _rows, flat
from ncd.render.legend import closed_rows, legend_items
from ncd.render.model import Drawing, Item, Port, Text
from ncd.render.typeset import typeset_text

__all__ = ["Framing", "fitted", "framed", "framing", "no_collector"]


def framed(ctx: LayoutContext, body: Frag, dom: Type, cod: Type, note_in: Any = None, note_out: Any = None,
           mask_in: tuple[bool, ...] | None = None, mask_out: tuple[bool, ...] | None = None) -> Frag:
    """``body`` with its wire labels in a gap at each end and boundary ports: a whole drawing, or one row of a
    page (``note_in``/``note_out``: the notes of the gaps, see :meth:`LayoutContext.gap`; ``mask_in``/``mask_out``:
    per wire, whether its label is drawn at that end — every wire's when ``None``)."""
    frag = Frag(0.0, body.top, body.bottom, body.ins, body.outs)
    labels = ctx.style.labels != "none"
    left, lw = ctx.gap(body.ins, body.ins, dom, (mask_in if labels and mask_in is not None else labels), note=note_in)
    right, rw = ctx.gap(body.outs, body.outs, cod, (mask_out if labels and mask_out is not None else labels),
                        note=note_out)
    frag.place(left, 0.0, 0.0)
    frag.place(body, lw, 0.0)
    frag.place(right, lw + body.w, 0.0)
    for f in (left, right):
        frag.include(f.top, f.bottom)
    frag.w = lw + body.w + rw
    for y in flat(body.ins):
        frag.add(Port(0.0, y, -1))
    for y in flat(body.outs):
        frag.add(Port(frag.w, y, -1))
    return frag


@dataclass
class Framing:
    """What a finished drawing puts around its body fragment: the title, the legend and where it goes, and the
    drawing's size (the page layout compares attempts by these before it makes the chosen one's items)."""

    header: list[Item]
    head_h: float
    rows: list[tuple[str, str]]
    legend: list[Item]
    legend_w: float
    beside: bool
    top_h: float
    width: float
    height: float

    def smallest(self, frag: Frag, memo: Memo | None = None) -> float | None:
        """The smallest size of the drawing's visible text, ``None`` when it has none (``memo``: see
        :func:`~ncd.render.extents.smallest_text`)."""
        found = smallest_text(frag, float("inf"), memo)
        for it in self.header + self.legend:
            if isinstance(it, Text):
                found = min([found] + [run.size for run in it.runs if run.text.strip()])
        return None if found == float("inf") else found


def framing(ctx: LayoutContext, frag: Frag, legend_max: float = float("inf")) -> Framing:
    """The title, legend and size of the drawing of ``frag`` (:func:`_finish` without making the body's items);
    ``legend_max``: the widest the legend may be (its rows listing a value per instance wrap to fit,
    :func:`~ncd.render.legend.legend_items`)."""
    style = ctx.style
    m = style.margin
    header: list[Item] = []
    head_h = 0.0
    if style.title:
        parts = typeset_text(style.title)
        tw, ascent, descent = ctx.text_size(parts, style.text_size * 1.25, bold=True)
        header.extend(ctx.text(parts, max(0.0, (frag.w - tw) / 2), ascent, style.text_size * 1.25, role="title", bold=True))
        head_h = ascent + descent + 6
    rows = closed_rows(list(dict.fromkeys(style.legend + _rows(frag))), ctx.indexed)
    legend, legend_w, legend_h = legend_items(rows, ctx.text_size, ctx.text, style.label_size, legend_max)
    width = max(frag.w, legend_w) + 2 * m
    lx = m + max(frag.w - legend_w, 0.0) + 12.0
    # the legend sits in the top-right corner when that corner is empty (e.g. beside a definition's header),
    # above the drawing otherwise
    beside = bool(legend) and not _any_hit(frag, m, m + head_h - frag.top, (lx - 6, m + head_h, width, m + head_h + legend_h + 6),
                                            ctx.memo)
    top_h = head_h if beside or not legend else max(head_h, legend_h + 6)
    height = m + top_h + (frag.bottom - frag.top) + m
    return Framing(header, head_h, rows, legend, legend_w, beside, top_h, width, height)


def fitted(ctx: LayoutContext, frag: Frag, limit: Callable[[float | None], float]) -> Framing:
    """:func:`framing` of ``frag`` with its legend's long rows broken when the legend alone is wider than
    ``limit(smallest text)`` allows (a page: the width that prints that text at its smallest size)."""
    f = framing(ctx, frag)
    if f.legend:
        room = limit(f.smallest(frag, ctx.memo)) - 2 * ctx.style.margin
        if f.legend_w > room + 0.01:
            f = framing(ctx, frag, room)
    return f


def _finish(ctx: LayoutContext, frag: Frag, framed: Framing | None = None) -> Drawing:
    """The drawing of ``frag``: its title, legend and body items in place (``framed``: its :func:`framing`)."""
    f = framed or framing(ctx, frag)
    m = ctx.style.margin
    items: list[Item] = [it.moved(m, m) for it in f.header]
    lx = m + max(frag.w - f.legend_w, 0.0) + 12.0
    for it in f.legend:
        items.append(it.moved(lx - 12.0, m + (f.head_h if f.beside else 0.0)))
    # the body stays a tree of fragments: painters place its items as they paint (Drawing.items makes them)
    return Drawing(round(f.width, 2), round(f.height, 2), legend=tuple(f.rows), front=items,
                   tree=(frag, m, m + f.top_h - frag.top))
