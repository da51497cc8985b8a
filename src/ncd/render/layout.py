"""Layout: a diagram becomes a :class:`~ncd.render.model.Drawing`, left to right in columns.

Each node is laid out as a *fragment*: a width, a vertical extent, the heights of its
input ports (at ``x = 0``) and output ports (at ``x = w``), one list per segment, and its
primitives.  Sequential parts are joined by *gaps* that carry the wire labels and bend
wires smoothly between port heights; parallel parts are stacked with dashed separators;
a weave adds a wire running past its inner fragment (above or below), joined to its
ports by bends; blocks are fences, repeats are parentheses.  Boxes are drawn by the rule
table in :mod:`ncd.render.pictograms`.  Nothing here knows about SVG or TikZ.

>>> import ncd
>>> d = layout(ncd.Identity.of("b m") >> ncd.Linear("m -> n"))
>>> d.width > 0 and len(d.footprints)
1
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ncd.ir.axes import Axis
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat, Seq, Weave, unweave
from ncd.ir.interpreter import Fold
from ncd.render.folding import fold_runs
from ncd.render.frag import (
    Frag,
    Ports,
    _align,
    _bend_width,
    _edge_separators,
    _round3,
    _straight_wires,
    _woven_boundary,
    _woven_entries,
    flat,
    shifted,
)
from ncd.render.framing import _finish, framed, no_collector
from ncd.render.inside import _inside
from ncd.render.legend import indexed_symbols
from ncd.render.model import Circle, Drawing, Path, Rect
from ncd.render.probing import Probing
from ncd.render.style import Style, fence_colour
from ncd.render.typeset import Piece, diagram_axes, pieces, typeset_text, wire_axes_read
from ncd.render.wires import _merge_notes

__all__ = ["Frag", "Layout", "layout", "lay_out_with", "Ports", "framed", "flat", "shifted", "no_collector",
           "scalar_core", "Rule"]


class Layout(Probing, Fold[Frag]):
    """The drawing of each kind of node (boxes by the rule table of :mod:`ncd.render.pictograms`): sequences in
    columns joined by gaps, parallel parts stacked, weaves with their wires running past, fences and parentheses."""

    # -- the fold ------------------------------------------------------------------------------
    def lay(self, node: Diagram) -> Frag:
        """``node``'s fragment (:meth:`Fold.fold`), with the legend rows its own text needs (:attr:`Frag.rows`)."""
        rows: list[tuple[str, str]] = []  # self.collecting(), inline: one node per call, the layout's hottest path
        outer, self._rows = self._rows, rows
        try:
            frag = self.fold(node)
        finally:
            self._rows = outer
        if rows:
            frag.rows = tuple(dict.fromkeys(frag.rows + tuple(rows)))
        return frag

    # -- the override points of Fold: one per node kind ---------------------------------------
    def box(self, box: Box) -> Frag:
        """A primitive, drawn by its rule (:mod:`ncd.render.pictograms`)."""
        from ncd.render.pictograms import box_rule

        return box_rule(box.prim.op)(self, box)

    def identity(self, node: Identity) -> Frag:
        """Wires: no width, one port per wire."""
        ys = self.stack(node.type)
        values = flat(ys) or [0.0]
        return Frag(0.0, min(values), max(values), ys, [list(s) for s in ys])

    def unknown(self, node: Diagram) -> Frag:
        """A node of a kind the drawing does not know: a box named after its class."""
        from ncd.render.pictograms import generic_box

        return generic_box(self, node.dom, node.cod, typeset_text(type(node).__name__))

    # -- sequential composition ------------------------------------------------------------
    def seq(self, node: Seq) -> Frag:
        """The parts as columns (runs of identical blocks folded, see :meth:`groups`) joined by gaps."""
        return self.seq_groups(self.groups(node.parts))

    def groups(self, parts: Sequence[Diagram]) -> list[tuple[Diagram, int]]:
        """The columns of a sequence: runs of repeated blocks folded (``fold``, :func:`~ncd.render.folding.fold_runs`)."""
        return fold_runs(parts) if self.style.fold else [(p, 1) for p in parts]

    def lay_group(self, node: Diagram, count: int) -> Frag:
        """A column: ``node`` laid out, or ``count`` of it folded.  The page layout memoises columns (``memo``): a
        column is laid out again only where its context differs (:meth:`_group_key`) or where one of the wire
        labels it read is labelled otherwise (a shared definition's generic labels, :mod:`ncd.render.generic`)."""
        memo = self.memo
        if memo is None:
            return self.lay(node) if count == 1 else self.folded(node, count)
        key = self._group_key(node, count)
        entry = memo.get(key)
        generic = self.generic
        if entry is not None and entry[0] is node:
            for frag, reads, labelled in entry[1]:
                if (not labelled and not generic) or all((generic.get(a) if generic else None) == label
                                                         for a, label in reads.values()):
                    if self._reads is not None:
                        self._reads.update(reads)
                    return frag  # type: ignore[no-any-return]
        outer, self._reads = self._reads, {}
        try:
            frag = self.lay(node) if count == 1 else self.folded(node, count)
        finally:
            reads, self._reads = self._reads, outer
        if entry is None or entry[0] is not node:
            entry = memo[key] = (node, [])
        entry[1].append((frag, reads, any(label is not None for _, label in reads.values())))
        if outer is not None:
            outer.update(reads)
        return frag

    def _group_key(self, node: Diagram, count: int) -> tuple[Any, ...]:
        """What a column's layout depends on besides the node: the block depth (when ``style.depth`` collapses by
        it), the enclosing blocks' path (when costs are written), the enclosing fence's colour (when one of the
        node's outermost blocks would take it), and the collapsed blocks and scans inside the node.  The page layout
        lays the same columns out in the one-row drawing, in each definition and in its rows: equal keys (and equal
        labels of the wires the column read, see :meth:`lay_group`) reuse one fragment."""
        found = self._inside.get(id(node))
        ids, colours = found[1:] if found is not None and found[0] is node else _inside(node, self._inside)
        fence = self.fences[-1] if self.fences else None
        return ("group", id(node), count, self.depth if self.style.depth is not None else None,
                tuple(self.path) if self.style.costs else None, fence if fence in colours else None,
                (frozenset(self.collapse & ids) or None) if self.collapse and ids else None)

    def seq_groups(self, groups: Sequence[tuple[Diagram, int]]) -> Frag:
        return self.seq_frags([p for p, _ in groups], [self.lay_group(p, n) for p, n in groups])

    def seq_frags(self, nodes: Sequence[Diagram], frags: Sequence[Frag]) -> Frag:
        """Laid-out columns in sequence, each shifted to keep the most wires straight, joined by gaps."""
        first = frags[0]
        result = Frag(0.0, first.top, first.bottom, first.ins, first.outs, seps_in=dict(first.seps_in))
        result.place(first, 0.0, 0.0)
        x, y = first.w, 0.0
        for prev, nxt, before, frag in zip(nodes, nodes[1:], frags, frags[1:]):
            gap, w, dy = self.join(prev, nxt, before, frag)
            result.place(gap, x, y)
            result.include(gap.top + y, gap.bottom + y)
            x += w
            y += dy
            result.place(frag, x, y)
            result.include(frag.top + y, frag.bottom + y)
            x += frag.w
        last = frags[-1]
        result.w = x
        result.outs = shifted(last.outs, y)
        result.seps_out = {j: v + y for j, v in last.seps_out.items()}
        return result

    def join(self, prev: Diagram, nxt: Diagram, before: Frag, frag: Frag) -> tuple[Frag, float, float]:
        """The gap from column ``before`` (of node ``prev``) to the next column ``frag`` (of ``nxt``), in the
        frame of ``before``: the gap, its width, and the shift of ``frag`` that keeps the most wires straight."""
        memo = self.memo
        key = ("join", id(before), id(frag), id(prev), id(nxt),
               self._generic_part(prev.cod, self.style.labels == "all") if memo is not None else None)
        if memo is not None:
            hit = memo.get(key)
            if hit is not None and hit[0] is before and hit[1] is frag and hit[2] is prev and hit[3] is nxt:
                return hit[4]  # type: ignore[no-any-return]
        dy = _align(before.outs, frag.ins)
        note = _merge_notes(self.note("after", prev), self.note("before", nxt)) if self.notes else None
        gap, w = self.gap(before.outs, shifted(frag.ins, dy), prev.cod, self.gap_labels(prev, nxt), before.seps_out,
                          {j: v + dy for j, v in frag.seps_in.items()}, note)
        if memo is not None:
            memo[key] = (before, frag, prev, nxt, (gap, w, dy))
        return gap, w, dy

    # -- parallel composition --------------------------------------------------------------
    def par(self, node: Par) -> Frag:
        """The parts stacked, dashed separators between them."""
        frags = [self.lay_group(p, 1) for p in node.parts]  # memoised on a page: its branches are laid out once
        p, g = self.style.pitch, self.style.segment_gap
        width = max(f.w for f in frags)
        result = Frag(width, 0.0, 0.0, [], [])
        prev: tuple[float, float] | None = None  # bottom extent, last port
        placements = []
        clearance = self.label_clearance()
        flats = [(flat(frag.ins), flat(frag.outs)) for frag in frags]  # each part's ports, flattened once
        firsts: list[float | None] = []  # each part's highest port (None: it has none)
        for frag, (ins, outs) in zip(frags, flats):
            ports = ins + outs
            lowest = min(ports) if ports else None
            firsts.append(lowest)
            first = lowest if lowest is not None else frag.top
            if prev is None:
                dy = -frag.top
            else:  # below the part above, its wires a segment apart, room for the separator above the first label
                dy = max(prev[0] + 0.5 * p - frag.top, prev[1] + p + g - first,
                         prev[0] + clearance + 3.0 - first)
            placements.append(dy)
            last = max(ports) if ports else frag.bottom
            prev = (frag.bottom + dy, last + dy)
        result.top = frags[0].top + placements[0]
        n_in = n_out = 0
        for k, (frag, dy) in enumerate(zip(frags, placements)):
            x0 = _round3((width - frag.w) / 2)
            result.place(frag, x0, dy)
            result.include(frag.top + dy, frag.bottom + dy)
            result.ins.extend(shifted(frag.ins, dy))
            result.outs.extend(shifted(frag.outs, dy))
            if x0 > 0 and (frag.ins or frag.outs):  # its wires run on to both edges (made when painted)
                runs = _straight_wires([(0.0, x0, y + dy) for y in flats[k][0]] +
                                       [(x0 + frag.w, width, y + dy) for y in flats[k][1]])
                if runs is not None:
                    result.place(runs, 0.0, 0.0)
            if k > 0:
                above = frags[k - 1].bottom + placements[k - 1]
                below = frag.top + dy
                first_k = firsts[k]
                if first_k is not None:  # the label of the first wire sits above it: the separator runs above that label
                    below = min(below, first_k + dy - clearance)
                ymid = (above + max(below, above)) / 2
                if width > 0:
                    result.add(Path.through([(0.0, ymid), (width, ymid)], dashed=True, width=0.8, role="separator"))
                if n_in and frag.ins:
                    result.seps_in[n_in - 1] = ymid
                if n_out and frag.outs:
                    result.seps_out[n_out - 1] = ymid
            if frag.seps_in:
                result.seps_in.update({n_in + j: y + dy for j, y in frag.seps_in.items()})
            if frag.seps_out:
                result.seps_out.update({n_out + j: y + dy for j, y in frag.seps_out.items()})
            n_in, n_out = n_in + len(frag.ins), n_out + len(frag.outs)
        return result

    # -- broadcasting ------------------------------------------------------------------------
    def weave(self, node: Weave) -> Frag:
        """A chain of weaves drawn at once: a scalar map as one glyph on the wires (its rule in
        :mod:`ncd.render.pictograms`), otherwise the inner fragment, and each woven wire running past it on a track
        above it (a wire woven before the inner wires) or below it (after them), stacked in the order the wires
        have on the boundary — so wires cross only where the weave really moves an axis, as a transpose would."""
        scalar = scalar_core(node)
        if scalar is not None:
            from ncd.render.pictograms import scalar_rule

            return scalar_rule(scalar.prim.op)(self, scalar, node.dom, node.cod)
        if node is self._through:  # an inner weave of a chain that the outermost weave draws
            self._through = node.inner if isinstance(node.inner, Weave) else None
            return self.lay(node.inner)
        core, weaves = unweave(node)
        self._through = node.inner if isinstance(node.inner, Weave) else None
        try:
            inner = self.lay(node.inner)
        finally:
            self._through = None
        p, g = self.style.pitch, self.style.segment_gap
        dom, cod = _woven_entries(core.dom, weaves, "dom"), _woven_entries(core.cod, weaves, "cod")
        # each woven wire runs on the side where it crosses fewest inner wires on its way in and out
        cost: dict[int, list[int]] = {}
        for entries in (dom, cod):
            order = [k for seg in entries for k in seg]
            n_core, before = sum(1 for k in order if k >= 0), 0
            for k in order:
                if k >= 0:
                    before += 1
                else:
                    c = cost.setdefault(k, [0, 0])
                    c[0], c[1] = c[0] + before, c[1] + n_core - before
        above = [k for k, (up, down) in cost.items() if up <= down]
        below = [k for k, (up, down) in cost.items() if up > down]
        ports = flat(inner.ins) + flat(inner.outs)
        high = min(inner.top - 0.45 * p, min(ports, default=inner.top) - p)
        low = max(inner.bottom + 0.45 * p, max(ports, default=inner.bottom) + p)
        track = {k: high - (len(above) - 1 - n) * p for n, k in enumerate(above)}
        track.update({k: low + n * p for n, k in enumerate(below)})
        left, left_internal = _woven_boundary(dom, inner.ins, track, p, g)
        right, right_internal = _woven_boundary(cod, inner.outs, track, p, g)
        bend_l = _bend_width(max((abs(a - b) for a, b in zip(flat(left), left_internal)), default=0.0), p)
        bend_r = _bend_width(max((abs(a - b) for a, b in zip(flat(right), right_internal)), default=0.0), p)
        w = bend_l + inner.w + bend_r
        heights = list(track.values())
        frag = Frag(w, min([inner.top] + heights), max([inner.bottom] + heights), left, right)
        frag.place(inner, bend_l, 0.0)
        for k in above + below:
            frag.add(self.woven_wire(weaves[-k - 1].axis, Path.through([(bend_l, track[k]), (bend_l + inner.w, track[k])])))
        # a woven axis that changes its place among the inner wires between input and output crosses them on one
        # side or the other: the weave's own permutation, as a transpose's wiring (its bends are owned by the weave)
        moves = self.new_id() if any(min(c) > 0 for c in cost.values()) else None
        for y_out, y_in in zip(flat(left), left_internal):
            if bend_l:
                frag.add(Path.through([(0.0, y_out), (bend_l, y_in)], owner=moves))
            frag.include(y_out, y_out)
        for y_in, y_out in zip(right_internal, flat(right)):
            if bend_r:
                frag.add(Path.through([(bend_l + inner.w, y_in), (w, y_out)], owner=moves))
            frag.include(y_out, y_out)
        for entries, x in ((dom, bend_l), (cod, bend_l + inner.w)):
            if len(entries) > 1:
                woven = [k for seg in entries for k in seg if k < 0]
                for k in dict.fromkeys(woven):
                    if woven.count(k) > 1:  # a wire several segments carry: joined on its track (a copy, or a merge)
                        frag.add(Circle(x, track[k], 2.2))
        return frag

    def woven_wire(self, axis: Axis, path: Path) -> Path:
        """The wire of ``axis`` running past a weave's inner fragment (the viewer tags it with its axis)."""
        return path

    # -- blocks, components, repetition ------------------------------------------------------
    def block(self, node: Block, title: str | None = None) -> Frag:
        depth = self.style.depth
        if (depth is not None and self.depth >= depth) or id(node) in self.collapse:
            return self.component(node)
        colour, note = self._enter(node)
        try:
            body = self.lay(node.body)
        finally:
            self._leave()
        legend = node.get("legend")
        if legend:
            self.add_legend(*(tuple(legend.items()) if isinstance(legend, dict) else tuple(legend)))
        pad, size = 7.0, self.style.text_size
        name = title or node.name
        parts = typeset_text(name)
        tw, ascent, descent = self.text_size(parts, size)
        note_parts = typeset_text(note) if note else []
        nw, n_ascent, n_descent = self.text_size(note_parts, self.style.label_size) if note else (0.0, 0.0, 0.0)
        w = max(body.w + 2 * pad, tw + 2 * pad, nw + 2 * pad)
        x0 = (w - body.w) / 2
        top = body.top - ascent - descent - 2 * pad - (n_ascent + n_descent + 2 if note else 0.0)
        frag = Frag(w, top, body.bottom + pad, shifted(body.ins, 0.0), shifted(body.outs, 0.0),
                    seps_in=dict(body.seps_in), seps_out=dict(body.seps_out))
        frag.add(Rect(0.0, top, w, frag.bottom - top, fill=colour, stroke=None, radius=3.0, role="fence"))
        frag.add(*self.text(parts, (w - tw) / 2, top + pad + ascent, size, role="title"))
        if note:
            baseline = top + pad + ascent + descent + 2 + n_ascent
            frag.add(*self.text(note_parts, (w - nw) / 2, baseline, self.style.label_size, role="label"))
        frag.place(body, x0, 0.0)
        for y in flat(body.ins):
            frag.add(Path.through([(0.0, y), (x0, y)]))
        for y in flat(body.outs):
            frag.add(Path.through([(x0 + body.w, y), (w, y)]))
        _edge_separators(frag, body, x0, node.dom, node.cod)
        return frag

    def _enter(self, node: Block) -> tuple[str, str | None]:
        """Step into a block: its fence colour (unlike its parent's) and its cost note, if the style has one."""
        colour = fence_colour(node.name, avoid=self.fences[-1] if self.fences else None)
        self.depth += 1
        self.fences.append(colour)
        self.path.append(node.name)
        return colour, (dict(self.style.costs).get("/".join(self.path)) if self.style.costs else None)

    def _leave(self) -> None:
        """Step out of the block :meth:`_enter` stepped into."""
        self.depth -= 1
        self.fences.pop()
        self.path.pop()

    def component(self, node: Block, title: str | None = None) -> Frag:
        from ncd.render.pictograms import component_box

        return component_box(self, node, title)

    def folded(self, node: Diagram, count: int) -> Frag:
        return self.parens(self.lay(node), "", f"×{count}")

    def repeat(self, node: Repeat) -> Frag:
        body = self.lay(node.body)
        var = "λ" if node.var in ("lam", "lambda", "λ") else node.var
        low = (Piece(var, italic=len(var) == 1), Piece(" = ")) + pieces(node.start)
        high = pieces(node.stop - 1)
        return self.parens(body, low, high)

    def parens(self, body: Frag, low: Sequence[Piece] | str, high: Sequence[Piece] | str) -> Frag:
        low_parts = typeset_text(low) if isinstance(low, str) else tuple(low)
        high_parts = typeset_text(high) if isinstance(high, str) else tuple(high)
        p, size = self.style.pitch, self.style.label_size
        arc = 9.0
        top, bottom = body.top - 0.4 * p, body.bottom + 0.4 * p
        w = body.w + 2 * arc + 8.0
        x0 = arc + 4.0
        frag = Frag(w, top, bottom, body.ins, body.outs, seps_in=dict(body.seps_in), seps_out=dict(body.seps_out))
        mid = (top + bottom) / 2
        for xe, xb in ((arc, 0.0), (w - arc, w)):
            frag.add(Path((("M", xe, top), ("C", xb, top + (mid - top) * 0.35, xb, bottom - (bottom - mid) * 0.35, xe, bottom)),
                          width=2.4, role="paren"))
        frag.place(body, x0, 0.0)
        for y in flat(body.ins):
            frag.add(Path.through([(0.0, y), (x0, y)]))
        for y in flat(body.outs):
            frag.add(Path.through([(x0 + body.w, y), (w, y)]))
        if low_parts:
            lw, la, ld = self.text_size(low_parts, size)
            frag.add(*self.text(low_parts, 0.0, bottom + la + 2, size, role="title"))
            frag.include(top, bottom + la + ld + 2)
            frag.w = max(frag.w, lw)
        if high_parts:
            hw, ha, hd = self.text_size(high_parts, size)
            frag.add(*self.text(high_parts, w - arc, top - hd - 2, size, role="title"))
            frag.include(top - ha - hd - 2, bottom)
            frag.w = max(frag.w, w - arc + hw)
            if frag.w > w:  # outputs continue to the new right edge
                for y in flat(body.outs):
                    frag.add(Path.through([(w, y), (frag.w, y)]))
        return frag


def scalar_core(node: Weave) -> Box | None:
    """The box a chain of weaves broadcasts, if it is a scalar map (drawn as a glyph on the wires)."""
    inner = node.inner
    while isinstance(inner, Weave):
        inner = inner.inner
    if (isinstance(inner, Box) and not any(s.axes for s in inner.dom.segments)
            and not any(s.axes for s in inner.cod.segments)):
        return inner
    return None


def layout(diagram: Diagram, style: Style | None = None, **options: Any) -> Drawing:
    """Lay ``diagram`` out as a backend-free :class:`Drawing` (options as for :func:`ncd.draw`)."""
    style = style or Style.from_options(**options)
    with no_collector():
        return _layout(diagram, style)


def _layout(diagram: Diagram, style: Style) -> Drawing:
    from ncd.distributed.draw import wire_notes  # a sharded diagram: mesh axes on its wires, collectives tagged
    from ncd.render.wrap import page_layout

    ctx = Layout(wire_notes(diagram, style))
    _read_axes(ctx, diagram)
    return page_layout(ctx, diagram) or lay_out_with(ctx, diagram)


def _read_axes(ctx: Layout, diagram: Diagram) -> None:
    """``ctx``'s item axes and indexed symbols of ``diagram``, from one walk of its wires."""
    read = wire_axes_read(diagram)
    ctx.wire_axes = (diagram, read[0] + read[1])
    ctx.axes = diagram_axes(diagram, ctx.wire_axes[1])
    ctx.indexed = indexed_symbols(diagram, read)


def lay_out_with(ctx: Layout, diagram: Diagram) -> Drawing:
    """Lay ``diagram`` out with a given layout context (a :class:`Layout` or a subclass, e.g. the viewer's)."""
    if ctx.axes is None:
        _read_axes(ctx, diagram)
    return _finish(ctx, framed(ctx, ctx.lay(diagram), diagram.dom, diagram.cod))


#: A drawing rule: the layout and a box in, a fragment out.
Rule = Callable[[Layout, Box], Frag]
