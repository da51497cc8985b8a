"""The shapes drawing rules are built from (:mod:`ncd.render.pictograms`' building blocks): a box spanning its wires
(:func:`generic_box`), wires passing through under a glyph (:func:`glyph_through`), wires only, joined at dots and
contracted in caps (:func:`wiring`, :func:`meeting`), and the paper's arrowhead.  ``ncd.render.pictograms`` still
answers their names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ncd.ir.axes import Type
from ncd.render.layout import Frag, Layout, Ports, flat
from ncd.render.model import Circle, Footprint, Path, Polygon, Port, Rect
from ncd.render.typeset import Piece

__all__ = ["INK", "LEARNED_FILL", "generic_box", "arrowhead", "glyph_through", "wiring", "meeting"]

INK = "#222222"
LEARNED_FILL = "#e4e8ec"


def _centre(ctx: Layout, dom: Type, cod: Type, align: str = "center") -> tuple[Ports, Ports]:
    ins, outs = ctx.stack(dom), ctx.stack(cod)
    fi, fo = flat(ins), flat(outs)
    if fi and fo:
        shift = fi[0] - fo[0] if align == "top" else ((fi[0] + fi[-1]) - (fo[0] + fo[-1])) / 2
        outs = [[y + shift for y in seg] for seg in outs]
    return ins, outs


def _ports(frag: Frag, owner: int) -> None:
    for y in flat(frag.ins):
        frag.add(Port(0.0, y, owner))
    for y in flat(frag.outs):
        frag.add(Port(frag.w, y, owner))


def generic_box(ctx: Layout, dom: Type, cod: Type, parts: Sequence[Piece], *, size: float | None = None,
                bold_text: bool = False, fill: str | None = "#ffffff", stroke: str | None = INK, width: float = 0.9,
                kind: str = "box", name: str = "", min_w: float = 22.0, shape: str = "rect") -> Frag:
    """A box spanning its wires, with ``parts`` typeset in the middle.

    ``shape``: ``"rect"``; ``"trapezoid"`` (the convolution tensor: short input edge, tall output edge).
    """
    p = ctx.style.pitch
    size = size or ctx.style.text_size
    ins, outs = _centre(ctx, dom, cod)
    ys = flat(ins) + flat(outs) or [0.0]
    tw, ta, td = ctx.text_size(parts, size, bold_text)
    h = max(max(ys) - min(ys) + p, ta + td + 8.0)
    cy = (max(ys) + min(ys)) / 2
    w = max(tw + 12.0, min_w)
    top = cy - h / 2
    box_id = ctx.new_id()
    frag = Frag(w, top, top + h, ins, outs)
    if shape == "trapezoid":
        w += 6.0
        fi = flat(ins) or [cy]
        if max(fi) + 0.5 * p > top + h - 0.3 * p:  # inputs reach the bottom (pooling): a taller output edge
            h += 0.6 * p
            frag.bottom = top + h
        frag.w = w
        frag.add(Polygon(((0.0, top), (w, top), (w, top + h), (0.0, max(fi) + 0.5 * p)), fill=fill, stroke=stroke, width=width,
                         role="box", owner=box_id))
    else:
        frag.add(Rect(0.0, top, w, h, fill=fill, stroke=stroke, width=width, radius=2.0, role="box", owner=box_id))
    frag.add(*ctx.text(parts, (w - tw) / 2, cy + (ta - td) / 2, size, role="text", owner=box_id, bold=bold_text))
    frag.add(Footprint(0.0, top, w, h, box_id, kind, name or "".join(q.text for q in parts)))
    _ports(frag, box_id)
    return frag


def arrowhead(x: float, y: float, size: float, owner: int | None = None) -> Polygon:
    """The paper's fletched arrowhead ``➤`` with its tip at ``(x + 1.3·size, y)``."""
    return Polygon(((x, y - 0.62 * size), (x + 1.3 * size, y), (x, y + 0.62 * size), (x + 0.38 * size, y)),
                   fill=INK, stroke=None, owner=owner)


def glyph_through(ctx: Layout, typ: Type, parts: Sequence[Piece], *, arrows: bool = True, name: str = "") -> Frag:
    """Wires passing straight through, with a glyph (``➤R➤``, ``∗k^−1/2``) above the top wire."""
    size = ctx.style.label_size * 1.2
    ins = ctx.stack(typ)
    ys = flat(ins)
    top_wire = ys[0] if ys else 0.0
    tw, ta, td = ctx.text_size(parts, size)
    a = 4.2
    pad = (1.3 * a + 3.0) if arrows else 0.0
    w = tw + 2 * pad + 8.0
    base = top_wire - 4.0 - td
    gid = ctx.new_id()
    frag = Frag(w, base - ta - 1.0, max(ys) if ys else top_wire, ins, [list(s) for s in ins])
    x = 4.0
    if arrows:
        frag.add(arrowhead(x, base - 0.33 * size, a, gid))
        x += pad
    frag.add(*ctx.text(parts, x, base, size, role="text", owner=gid))
    if arrows:
        frag.add(arrowhead(x + tw + 3.0, base - 0.33 * size, a, gid))
    # 1 pt of room around the text: the ink of (, √ and / reaches the box's edge, and hinting may push it out
    frag.add(Footprint(2.0, base - ta - 1.0, w - 4.0, ta + td + 2.0, gid, "glyph", name))
    for y in ys:
        frag.add(Path.through([(0.0, y), (w, y)]))
    if not ys:
        frag.add(Path.through([(0.0, top_wire), (w, top_wire)]))
    return frag


def wiring(ctx: Layout, dom: Type, cod: Type, sources: Sequence[Sequence[int]], caps: Sequence[Sequence[int]] = (), *,
           fill: str | None = None, sign: Sequence[Piece] = (), align: str = "center", name: str = "wiring",
           width: float | None = None, end: str = "bar") -> Frag:
    """Wires only: output wire ``o`` comes from input wires ``sources[o]`` (joined at a dot when several);
    each group in ``caps`` is contracted (joined in a cap and ended); inputs used twice split at a copy dot;
    an output with no source is born at a tail (a size-1 axis), a lone capped input ends at a bar (``end="bar"``)
    or an arrowhead (``end="arrow"``: a size-1 axis removed)."""
    p = ctx.style.pitch
    ins, outs = _centre(ctx, dom, cod, align)
    fi, fo = flat(ins), flat(outs)
    ys = fi + fo or [0.0]
    w = width if width is not None else 2.6 * p
    xm = w / 2
    wid = ctx.new_id()
    top, bottom = min(ys) - 0.5 * p, max(ys) + 0.5 * p
    frag = Frag(w, top, bottom, ins, outs)
    if fill:
        frag.add(Rect(0.0, top, w, bottom - top, fill=fill, stroke=None, radius=3.0, role="box", owner=wid))
    uses = Counter(i for srcs in sources for i in srcs)
    dots: list[tuple[float, float]] = []
    for o, srcs in enumerate(sources):
        yo = fo[o]
        if not srcs:
            frag.add(Path.through([(xm, yo), (w, yo)], owner=wid))
            frag.add(arrowhead(xm - 0.38 * 3.6, yo, 3.6, wid))
        elif len(srcs) == 1:
            i = srcs[0]
            if uses[i] > 1:
                frag.add(Path.through([(0.0, fi[i]), (xm, fi[i]), (w, yo)], owner=wid))
                dots.append((xm, fi[i]))
            else:
                frag.add(Path.through([(0.0, fi[i]), (w, yo)], owner=wid))
        else:
            for i in srcs:
                frag.add(Path.through([(0.0, fi[i]), (xm, yo)], owner=wid))
            frag.add(Path.through([(xm, yo), (w, yo)], owner=wid))
            dots.append((xm, yo))
    r = 0.45 * p
    joins: list[tuple[float, float]] = []
    for group in caps:
        gy = sorted(fi[i] for i in group)
        if len(gy) == 1:
            frag.add(Path.through([(0.0, gy[0]), (xm, gy[0])], owner=wid))
            if end == "arrow":
                frag.add(arrowhead(xm - 0.38 * 3.6, gy[0], 3.6, wid))
            else:
                frag.add(Path((("M", xm, gy[0] - 3.0), ("L", xm, gy[0] + 3.0)), width=1.4, role="glyph", owner=wid))
                frag.add(Port(xm, gy[0], wid))
            continue
        x0 = xm - r
        # the cap's rightmost point (x0 + 3/4 of the bulge) stays inside the box: past it are the output labels
        # (further in when middle wires meet it at dots, which should not sit on the box's edge)
        inside = 1.0 if len(gy) == 2 else 0.3 * p
        bulge = min(x0 + r + 0.35 * (gy[-1] - gy[0]), x0 + (w - inside - x0) / 0.75)
        for k, y in enumerate(gy):
            if 0 < k < len(gy) - 1:  # a wire contracted with the two ends of the cap meets it at a dot
                xc = _cap_x(x0, bulge, gy[0], gy[-1], y)
                frag.add(Path.through([(0.0, y), (xc, y)], owner=wid))
                joins.append((xc, y))
            else:
                frag.add(Path.through([(0.0, y), (x0, y)], owner=wid))
        frag.add(Path((("M", x0, gy[0]), ("C", bulge, gy[0], bulge, gy[-1], x0, gy[-1])), owner=wid))
    seen = set()
    for x, y in dots + joins:
        if (x, y) not in seen:
            seen.add((x, y))
            frag.add(Circle(x, y, 2.3, owner=wid))
    if sign and dots:
        tw, ta, td = ctx.text_size(sign, ctx.style.text_size)
        ytop = min(y for _, y in dots)
        frag.add(*ctx.text(sign, xm - tw / 2, ytop - 5.0, ctx.style.text_size, role="text", owner=wid, bold=True))
        frag.include(ytop - 5.0 - ta, bottom)
        top = min(top, ytop - 5.0 - ta)
    frag.add(Footprint(0.0, top, w, frag.bottom - top, wid, "wiring", name))
    _ports(frag, wid)
    return frag


def _cap_x(x0: float, bulge: float, y0: float, y1: float, y: float) -> float:
    """Where the cap ``M x0,y0 C bulge,y0 bulge,y1 x0,y1`` is at height ``y`` (``y0 < y < y1``): its height
    ``y0 + (y1 - y0)(3t² - 2t³)`` rises with ``t``, so ``t`` is found by bisection.

    >>> round(_cap_x(0.0, 4.0, 0.0, 10.0, 5.0), 6)  # half way: x = 3t(1 - t)·bulge at t = 1/2
    3.0
    """
    lo, hi = 0.0, 1.0
    for _ in range(40):
        t = (lo + hi) / 2
        if y0 + (y1 - y0) * (3 * t * t - 2 * t * t * t) < y:
            lo = t
        else:
            hi = t
    t = (lo + hi) / 2
    return x0 + 3 * t * (1 - t) * (bulge - x0)


def _by_name(dom: Type, cod: Type) -> tuple[list[list[int]], list[list[int]]]:
    """Sources of each output wire and contraction groups, matching wires by axis name."""
    names = [a.name for seg in dom for a in seg]
    sources = [[i for i, n in enumerate(names) if n == a.name] for seg in cod for a in seg]
    kept = {a.name for seg in cod for a in seg}
    caps: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        if n not in kept:
            caps.setdefault(n, []).append(i)
    return sources, list(caps.values())


def meeting(ctx: Layout, dom: Type, cod: Type, sign: tuple[Piece, ...], name: str) -> Frag:
    """Equal wires of the inputs meet at dots under ``sign`` (``+``, ``⊙``, ``÷``, ``max``, …); the others end in caps."""
    sources, caps = _by_name(dom, cod)
    return wiring(ctx, dom, cod, sources, caps, sign=sign, align="top", name=name)
