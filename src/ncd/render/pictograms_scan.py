"""The scan's drawing: its body once, in the paper's repetition brackets, the time axis running over it.

The scanned inputs' and stacked outputs' time wire leaves its tensor at the box's edge and runs
along a track above the body (as a woven axis does); the states enter and leave on their own
wires; the brackets are labelled with the positions, ``t = 0`` below and ``T-1`` above; the track runs
above or below the body, wherever the time wire crosses fewer wires.  A body too
wide for a row of the page is drawn as a ``Step`` box in the brackets and defined below, wrapped
like any block (:mod:`ncd.render.wrap`).
"""

from __future__ import annotations

from ncd.ir.diagram import Block, Box
from ncd.prims.scan import ScanOp
from ncd.render.frag import _bend_width, _boundary
from ncd.render.layout import Frag, Layout, flat
from ncd.render.model import Path
from ncd.render.pictograms import rule
from ncd.render.typeset import Piece, pieces


def scan_step(box: Box) -> Block:
    """The block a page draws a scan's body as when it is too wide for a row: ``Step``, defined below (the same
    block object for the same scan box, so the page defines it once)."""
    step = _STEPS.get(id(box))
    if step is None or step[0] is not box:
        step = _STEPS[id(box)] = (box, Block(box.prim.body, "Step"))  # type: ignore[attr-defined]
        if len(_STEPS) > 4096:
            _STEPS.clear()
            _STEPS[id(box)] = step
    return step[1]


_STEPS: dict[int, tuple[Box, Block]] = {}


@rule("scan")
def draw_scan(ctx: Layout, box: Box) -> Frag:
    prim: ScanOp = box.prim  # type: ignore[assignment]
    c, k = prim.consts, prim.carry
    var = prim.axis.name
    low = (Piece(var, italic=len(var) == 1), Piece(" = 0"))
    # a body too wide for a row of the page is drawn as a step box, defined below (ncd.render.wrap)
    body = ctx.component(scan_step(box)) if id(box) in ctx.collapse else ctx.lay(prim.body)
    inner = ctx.parens(body, low, pieces(prim.axis.size - 1))
    p, g = ctx.style.pitch, ctx.style.segment_gap
    dom_pos = [None] * (c + k) + list(prim.x_pos)
    cod_pos = [None] * k + list(prim.y_pos)
    ports = flat(inner.ins) + flat(inner.outs)
    up, down = _sides(inner.ins, dom_pos), _sides(inner.outs, cod_pos)
    above = up[0] + down[0] <= up[1] + down[1]  # the track on the side where the time wire crosses fewest wires
    if above:
        track = min(inner.top - 0.45 * p, min(ports, default=inner.top) - p)
    else:
        track = max(inner.bottom + 0.45 * p, max(ports, default=inner.bottom) + p)
    # crossings the order of the axes forces (the time wire leaves the middle of its tensor): the scan's own wiring
    moves = ctx.new_id() if min(up[0] + down[0], up[1] + down[1]) > 0 else None
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
        frag.add(Path.through([(0.0, y_out), (bend_l, y_in)], owner=moves))
        frag.include(y_out, y_out)
    for y_in, y_out in zip(right_internal, flat(right)):
        frag.add(Path.through([(bend_l + inner.w, y_in), (w, y_out)], owner=moves))
        frag.include(y_out, y_out)
    return frag


def _sides(internal: list[list[float]], positions: list[int | None]) -> tuple[int, int]:
    """How many inner wires the time wire, inserted at ``positions[j]`` of segment ``j``, crosses to reach a track
    above the body and one below."""
    total = sum(len(seg) for seg in internal)
    up = down = before = 0
    for j, seg in enumerate(internal):
        pos = positions[j] if j < len(positions) else None
        if pos is not None:
            up, down = up + before + pos, down + total - before - pos
        before += len(seg)
    return up, down
