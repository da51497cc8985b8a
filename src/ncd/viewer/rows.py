"""A long panel in rows: the body of a block too wide for a window, wrapped as the paper wraps a diagram.

A definition panel is one block's contents. When those contents — the columns of the block's
top-level sequence, identical neighbours folded — are wider than :data:`WRAP_AFTER` times
:data:`ROW_WIDTH`, they are packed greedily into rows of at most :data:`ROW_WIDTH`; each later
row starts with its wire labels and arrows coming in, each earlier one ends with its labels and
arrows going on, and the last row's outputs run on to the right edge so the fence closes around
all rows. The block's fence, title and wires are then drawn around the rows by the renderer's
own ``Layout.block``.

Each column is laid out once: the fragments measured for packing are the ones placed, so the
panel costs what the one-row drawing costs (block keys are numbered in drawing order, as in one row).

>>> import ncd
>>> from ncd.viewer.views import explore
>>> wide = ncd.Identity.of("~t m")
>>> for k in range(24):
...     wide = wide >> (ncd.Linear("m -> m", name=f"W{k}") >> ncd.ReLU()).block(f"Step{k}")
>>> views = explore((ncd.Identity.of("~t m") >> wide.block("Wide")).block("Net"), costs=False)
>>> panel = views.views[1]  # the panel of Wide: its 24 steps in rows
>>> panel.width <= ROW_WIDTH + 200 and panel.svg.count('marker-end') >= 2
True
"""

from __future__ import annotations

from typing import Any

from ncd.ir.diagram import Diagram, Seq
from ncd.render.layout import Frag, flat, shifted
from ncd.render.model import Path

__all__ = ["ROW_WIDTH", "WRAP_AFTER", "wrap_rows"]

#: The widest row of a panel (points): a panel fits a laptop window at about its natural size.
ROW_WIDTH = 960.0

#: One row is kept up to this many row widths (a drawing a little too wide is better whole than split).
WRAP_AFTER = 1.25

#: Continuation arrows between rows: horizontal run and drop (points), as the renderer's page layout.
_RUN, _DROP = 16.0, 7.0
_GAP_GUESS = 40.0  # the width of the labelled gap between two columns, before it is laid out


def wrap_rows(ctx: Any, body: Diagram, width: float = ROW_WIDTH) -> Frag | None:
    """``body`` laid out in rows no wider than ``width`` by ``ctx`` (a viewer layout), or ``None`` if one row fits."""
    groups = ctx.groups(list(body.parts) if isinstance(body, Seq) else [body])
    if len(groups) < 2:
        return None
    frags = [ctx.lay_group(node, count) for node, count in groups]  # laid out once, measured, then placed
    if sum(f.w for f in frags) + _GAP_GUESS * (len(frags) - 1) <= WRAP_AFTER * width:
        return ctx.seq_frags([node for node, _ in groups], frags)  # type: ignore[no-any-return]
    rows: list[list[tuple[Diagram, Frag]]] = [[]]
    run = 0.0
    for (node, _), frag in zip(groups, frags):
        if rows[-1] and run + _GAP_GUESS + frag.w > width:
            rows.append([])
            run = 0.0
        run += (_GAP_GUESS if rows[-1] else 0.0) + frag.w
        rows[-1].append((node, frag))
    return _stack(ctx, rows)


def _stack(ctx: Any, rows: list[list[tuple[Diagram, Frag]]]) -> Frag:
    p = ctx.style.pitch
    labels = ctx.style.labels != "none"
    page = Frag(0.0, 0.0, 0.0, [], [])
    y, last = 0.0, len(rows) - 1
    placed: list[tuple[Frag, float, float]] = []
    for k, groups in enumerate(rows):
        body = ctx.seq_frags([node for node, _ in groups], [frag for _, frag in groups])
        row = Frag(0.0, body.top, body.bottom, body.ins, body.outs, seps_in=dict(body.seps_in),
                   seps_out=dict(body.seps_out))
        lw = rw = 0.0
        if k > 0:
            left, lw = ctx.gap(body.ins, body.ins, groups[0][0].dom, labels)
            row.place(left, 0.0, 0.0)
            row.include(left.top, left.bottom)
        row.place(body, lw, 0.0)
        if k < last:
            right, rw = ctx.gap(body.outs, body.outs, groups[-1][0].cod, labels)
            row.place(right, lw + body.w, 0.0)
            row.include(right.top, right.bottom)
        row.w = lw + body.w + rw
        x0 = _RUN + 4.0 if k > 0 else 0.0
        dy = y - row.top + (0.6 * p if k else 0.0)
        page.place(row, x0, dy)
        if k > 0:  # arrows coming in from the previous row
            for wy in flat(row.ins):
                page.add(Path.through([(x0 - _RUN, wy + dy - _DROP), (x0, wy + dy)], arrow=True))
        right_end = x0 + row.w
        if k < last:  # arrows going on to the next row
            for wy in flat(row.outs):
                page.add(Path.through([(right_end, wy + dy), (right_end + _RUN, wy + dy + _DROP)], arrow=True))
            right_end += _RUN + 2.0
        bottom = row.bottom + dy + (_DROP if k < last else 0.0)
        page.include(row.top + dy, bottom)
        page.w = max(page.w, right_end)
        placed.append((row, x0, dy))
        y = bottom + 0.6 * p
    first, _, dy0 = placed[0]
    row, x0, dy = placed[-1]
    page.ins, page.seps_in = shifted(first.ins, dy0), {j: v + dy0 for j, v in first.seps_in.items()}
    page.outs, page.seps_out = shifted(row.outs, dy), {j: v + dy for j, v in row.seps_out.items()}
    for wy in flat(page.outs):  # the last row's outputs run on to the right edge
        if x0 + row.w < page.w:
            page.add(Path.through([(x0 + row.w, wy), (page.w, wy)]))
    return page
