"""The scan's drawing: its body once, in the paper's repetition brackets, the time axis running over it.

The scanned inputs' and stacked outputs' time wire leaves its tensor at the box's edge and runs
along a track above the body (as a woven axis does); the states enter and leave on their own
wires; the brackets are labelled with the positions, ``t = 0`` below and ``T-1`` above.
"""

from __future__ import annotations

from ncd.ir.diagram import Box
from ncd.prims.scan import ScanOp
from ncd.render.layout import Frag, Layout, _bend_width, _boundary, flat
from ncd.render.model import Path
from ncd.render.pictograms import rule
from ncd.render.typeset import Piece, pieces


@rule("scan")
def draw_scan(ctx: Layout, box: Box) -> Frag:
    prim: ScanOp = box.prim  # type: ignore[assignment]
    c, k = prim.consts, prim.carry
    var = prim.axis.name
    low = (Piece(var, italic=len(var) == 1), Piece(" = 0"))
    inner = ctx.parens(ctx.lay(prim.body), low, pieces(prim.axis.size - 1))
    p, g = ctx.style.pitch, ctx.style.segment_gap
    dom_pos = [None] * (c + k) + list(prim.x_pos)
    cod_pos = [None] * k + list(prim.y_pos)
    ports = flat(inner.ins) + flat(inner.outs)
    track = min(inner.top - 0.45 * p, min(ports, default=inner.top) - p)
    left, left_internal = _boundary(inner.ins, dom_pos, track, p, g)
    right, right_internal = _boundary(inner.outs, cod_pos, track, p, g)
    bend_l = _bend_width(max((abs(a - b) for a, b in zip(flat(left), left_internal)), default=0.0), p) or p
    bend_r = _bend_width(max((abs(a - b) for a, b in zip(flat(right), right_internal)), default=0.0), p) or p
    w = bend_l + inner.w + bend_r
    frag = Frag(w, min(inner.top, track), max(inner.bottom, track), left, right)
    frag.place(inner, bend_l, 0.0)
    if prim.x_pos or prim.y_pos:
        frag.add(Path.through([(bend_l, track), (bend_l + inner.w, track)]))
    for y_out, y_in in zip(flat(left), left_internal):
        frag.add(Path.through([(0.0, y_out), (bend_l, y_in)]))
        frag.include(y_out, y_out)
    for y_in, y_out in zip(right_internal, flat(right)):
        frag.add(Path.through([(bend_l + inner.w, y_in), (w, y_out)]))
        frag.include(y_out, y_out)
    return frag
