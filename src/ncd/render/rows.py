"""The rows of a wrapped page (:mod:`ncd.render.wrap`): columns packed into rows, a row drawn, and the wires each row
labels at its two ends.

A section's columns are packed greedily into rows no wider than the page allows (:func:`pack`); each row is drawn
as its columns in sequence with the wire labels at both ends (:func:`draw_row`).  A wire that runs through rows
untouched is labelled where it comes in and where a box takes it, not again at every row's ends
(:func:`row_masks`, from :func:`row_passes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ncd.render.definitions import Group
from ncd.render.wires import _followed, _passes, _width

if TYPE_CHECKING:
    from ncd.render.layout import Frag, Layout

__all__ = ["pack", "draw_row", "row_passes", "row_masks"]


def pack(ctx: Layout, groups: Sequence[Group], target: float) -> list[list[Group]]:
    """Columns into rows no wider than ``target`` (greedily; a column wider than a row gets a row of its own).

    A row's width is its columns', the gaps' between them and its wire labels' at both ends; the columns and
    gaps are laid out once (the context's memo) and the widths added up, so packing is linear in the columns; the gap
    before a column that starts a row is not made where a lower bound of its width settles the break."""
    from ncd.render.layout import Layout

    labels = ctx.style.labels != "none"
    frags = [ctx.lay_group(node, count) for node, count in groups]
    nodes = [node for node, _ in groups]
    memo = ctx.memo if ctx.memo is not None else {}
    generic = ctx.generic

    def edge(k: int, side: str) -> float:
        node, frag = nodes[k], frags[k]
        ports, typ = (frag.ins, node.dom) if side == "in" else (frag.outs, node.cod)
        note = ctx.note("before" if side == "in" else "after", node)
        if note is None:  # measured only (most columns start or end no row)
            # the width depends on the wires' labels alone: equal types (with their wires' ports) measure alike
            key = ("edge", typ, tuple(map(len, ports)), labels, id(generic))
            hit = memo.get(key)
            if hit is None or hit[0] is not generic:
                hit = memo[key] = (generic, ctx.edge_width(ports, typ, labels))
            return hit[1]  # type: ignore[no-any-return]
        return ctx.gap(ports, ports, typ, labels, note=note)[1]

    # a gap is 8 points wide or more (LayoutContext.gap): a column too wide for the row after a gap of 8 points starts
    # the next row, the gap before it (never placed) not made.  Exact: the bound adds up as ``grown`` does, a smaller
    # term for a larger one, so it exceeds ``target`` only where ``grown`` would.  Only for Layout itself (a subclass
    # may make its gaps otherwise, or note every gap it makes: the viewer tags them)
    bounded = type(ctx) is Layout
    rows: list[list[Group]] = []
    start, width = 0, 0.0  # the row's width so far, without its right-hand labels
    for k in range(len(groups)):
        if k == start:
            width = edge(k, "in") + frags[k].w
            continue
        out = edge(k, "out")
        if bounded and width + 8.0 + frags[k].w + out > target:
            rows.append(list(groups[start:k]))
            start, width = k, edge(k, "in") + frags[k].w
            continue
        grown = width + ctx.join(nodes[k - 1], nodes[k], frags[k - 1], frags[k])[1] + frags[k].w
        if grown + out > target:
            rows.append(list(groups[start:k]))
            start, width = k, edge(k, "in") + frags[k].w
        else:
            width = grown
    if groups:
        rows.append(list(groups[start:]))
    return rows


def draw_row(ctx: Layout, groups: Sequence[Group], mask_in: tuple[bool, ...] | None = None,
         mask_out: tuple[bool, ...] | None = None) -> Frag:
    """One row: its columns in sequence, with the wire labels at both ends (those of :func:`row_masks`) and
    boundary ports."""
    from ncd.render.layout import framed

    first, last = groups[0][0], groups[-1][0]
    return framed(ctx, ctx.seq_groups(groups), first.dom, last.cod, ctx.note("before", first), ctx.note("after", last),
                  mask_in, mask_out)


def row_passes(groups: Sequence[Group]) -> dict[int, int]:
    """The wires that run through a whole row untouched: each one's position among the row's input wires → its
    position among its output wires (:func:`~ncd.render.wires._passes` of each column, chained)."""
    found: dict[int, int] | None = None
    for node, count in groups:
        step = _passes(node)
        for _ in range(count):
            found = {a: bs[0] for a, bs in step.items()} if found is None else \
                {a: step[b][0] for a, b in found.items() if b in step}
            if not found:
                return {}
    return found or {}


def row_masks(rows: Sequence[Sequence[Group]]) -> list[tuple[tuple[bool, ...] | None, tuple[bool, ...] | None]]:
    """Which wires each row of a section labels at its two ends, as the paper labels a wire: where it comes in,
    where a box makes or takes it, where the section ends — not again on every row it runs through untouched.

    A row's last column that lets a wire through does not label it where it leaves the row: its label is earlier on
    the row (in the gap after the box that made it, where it came in) or on a row before.  A row's first column
    that lets a wire through does not label it where it comes in when the whole row before let it through: a bundle
    passing several rows is labelled once, on the first of them, and again where a box takes it (that gap labels
    it) or at the section's end.  ``None``: every wire labelled."""
    passes = [row_passes(groups) for groups in rows]
    out: list[tuple[tuple[bool, ...] | None, tuple[bool, ...] | None]] = []
    for k, groups in enumerate(rows):
        mask_in: tuple[bool, ...] | None = None
        mask_out: tuple[bool, ...] | None = None
        if k > 0 and passes[k - 1]:
            first = _followed(groups[0][0]) if groups[0][1] == 1 else {}
            before = set(passes[k - 1].values())  # the wires the row before let through, by position here
            if first:
                mask_in = tuple(not (j in first and j in before) for j in range(_width(groups[0][0].dom)))
        if k < len(rows) - 1:
            last = _followed(groups[-1][0]) if groups[-1][1] == 1 else {}
            if last:
                kept = {j for js in last.values() for j in js}
                mask_out = tuple(j not in kept for j in range(_width(groups[-1][0].cod)))
        out.append((None if mask_in is None or all(mask_in) else mask_in,
                    None if mask_out is None or all(mask_out) else mask_out))
    return out
