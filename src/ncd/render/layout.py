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

import gc
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Union

from ncd.ir.axes import Axis, Type
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat, Seq, Weave, unweave
from ncd.render.legend import closed_rows, indexed_symbols, legend_items
from ncd.render.model import Circle, Drawing, Item, Path, Polygon, Port, Rect, Text, frozen_record
from ncd.render.style import Style, fence_colour
from ncd.render.typeset import (
    DiagramAxes,
    Piece,
    as_item,
    axis_pieces,
    diagram_axes,
    legend_entry,
    name_pieces,
    pieces,
    symbol_pieces,
    typeset,
    typeset_text,
)

__all__ = ["Frag", "Layout", "layout", "Ports", "framed"]

Ports = list[list[float]]
Placed = tuple[float, float, "Frag"]


@dataclass
class Frag:
    """A laid-out piece: ports at ``x = 0`` (``ins``) and ``x = w`` (``outs``), extent ``top``…``bottom``."""

    w: float
    top: float
    bottom: float
    ins: Ports
    outs: Ports
    items: list[Union[Item, Placed]] = field(default_factory=list)
    #: Heights of the dashed lines between segments ``j`` and ``j+1`` at the left / right edge, when the
    #: fragment draws them itself (parallel parts); otherwise gaps put them between the neighbouring wires.
    seps_in: dict[int, float] = field(default_factory=dict)
    seps_out: dict[int, float] = field(default_factory=dict)
    #: the legend rows this fragment's own text needs (its placed fragments carry theirs): a drawing's legend is
    #: the rows of the fragments it places, so nothing a discarded layout tried reaches it
    rows: tuple[tuple[str, str], ...] = ()

    def add(self, *items: Item) -> None:
        self.items.extend(items)

    def place(self, frag: Frag, dx: float, dy: float) -> None:
        self.items.append((dx, dy, frag))

    def include(self, top: float, bottom: float) -> None:
        self.top, self.bottom = min(self.top, top), max(self.bottom, bottom)


def flat(ports: Ports) -> list[float]:
    return [y for seg in ports for y in seg]


def shifted(ports: Ports, dy: float) -> Ports:
    return [[y + dy for y in seg] for seg in ports]


class Layout:
    """One layout run: the style, a box-id counter, and the block depth while descending."""

    def __init__(self, style: Style) -> None:
        self.style = style
        self.next_id = 0
        self.depth = 0
        self.path: list[str] = []  # names of the enclosing blocks (cost annotations are keyed by this path)
        self._rows: list[tuple[str, str]] = []  # legend rows of the fragment being made (see Frag.rows)
        #: symbols a definition's fresh size symbols must not take (set by the page layout)
        self.symbols: set[str] = set()
        #: the index of each list whose numbered blocks the page defines in several definitions (``blocks.2i`` and
        #: ``blocks.2i+1`` of a Swin stage): the list's family name → its letter, stride and count (ncd.render.wrap)
        self.lists: dict[str, tuple[str, int, int]] = {}
        #: the traced steps each side-by-side drawing of branches stands for, by its ``id`` (ncd.render.lanes)
        self.runs: dict[int, tuple[Diagram, list[Diagram]]] = {}
        #: the columns the page layout splits a node into (its chain with its lanes gathered, or a wide parallel
        #: part's branches one at a time), by ``("chain" | "branches", id)``, kept with the node (ncd.render.wrap)
        self.split: dict[tuple[str, int], tuple[Diagram, list[Diagram]]] = {}
        #: ``(name, size)`` → indexed symbol, for the names the legend would give several sizes (ncd.render.legend)
        self.indexed: dict[tuple[str, Any], str] = {}
        self.fences: list[str] = []  # colours of the enclosing fences, innermost last
        #: Blocks (by ``id``) drawn as component boxes whatever their depth: the page layout collapses a
        #: block that does not fit a row and draws its definition separately (:mod:`ncd.render.wrap`).
        self.collapse: set[int] = set()
        #: fragments already laid out, reused while the context they were laid out in is unchanged: set by the
        #: page layout, which measures, packs and places the same columns (``None``: no reuse)
        self.memo: dict[tuple[Any, ...], tuple[Any, ...]] | None = None
        #: notes on the gaps around nodes, keyed ``("after" | "before", id(node))``: per segment, subscripts for
        #: wire labels, and a glyph text (``ncd.distributed.draw`` puts mesh axes and collectives here)
        self.notes: dict[tuple[str, int], tuple[tuple[dict[str, str] | None, ...], str | None]] = \
            dict(style.extra).get("wire_notes", {})
        self._through: Diagram | None = None  # the inner weave of a chain being drawn by its outermost weave
        self._labels: dict[Axis, tuple[tuple[Piece, ...], tuple[str, str] | None]] = {}  # wire labels, legend rows
        #: labels for the axes whose sizes differ between the blocks one definition draws (ncd.render.generic)
        self.generic: dict[Axis, tuple[tuple[Piece, ...], tuple[str, str]]] | None = None
        #: the axes whose labels the column being laid out has read, with the generic label each had (``None``: its
        #: own): a memoised column is reused wherever those labels are the same (see :meth:`lay_group`)
        self._reads: dict[Axis, Any] | None = None
        #: the diagram's item axes (a wire keeps its overline through boxes built from plain names) and names by size
        self.axes: DiagramAxes | None = None
        #: per column (by ``id``): the ids of the blocks and scans inside it and its outermost fences' colours
        self._inside: dict[int, tuple[Diagram, frozenset[int], frozenset[str]]] = {}

    # -- helpers shared with the pictogram rules ----------------------------------------
    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def stack(self, typ: Type, start: float = 0.0) -> Ports:
        """Heights of the wires of ``typ``: one pitch apart, segments a little further apart."""
        p, g = self.style.pitch, self.style.segment_gap
        out: Ports = []
        y = start
        placed = False
        for seg in typ:
            ys = []
            for k in range(len(seg)):
                if placed:
                    y += p + (g if k == 0 else 0.0)
                ys.append(y)
                placed = True
            out.append(ys)
        return out

    def text(self, parts: Sequence[Piece], x: float, y: float, size: float, role: str = "text",
             owner: int | None = None, bold: bool = False) -> list[Item]:
        """Typeset text at ``(x, y)`` (baseline start), with its overlines."""
        t, overlines = _typeset_at_origin(tuple(parts), size, bold)
        items: list[Item] = [frozen_record(Text, {"x": x, "y": y, "runs": t.runs, "width": t.width, "ascent": t.ascent,
                                            "descent": t.descent, "role": role, "owner": owner})]
        for x0, x1, yo in overlines:
            items.append(Path((("M", x0 + x, yo + y), ("L", x1 + x, yo + y)), width=0.7, role="text", owner=owner))
        return items

    def axis_label(self, axis: Axis) -> tuple[Piece, ...]:
        """A wire's label: its size (``x̄/2``, ``k = 10``), or its name when the size is a compound expression,
        which then goes in the legend once (``s̄`` on the wires, ``s = x²/256 + 1`` in the legend)."""
        if self._reads is not None:
            self._reads[axis] = self.generic.get(axis) if self.generic is not None else None
        if self.generic is not None:
            label = self.generic.get(axis)
            if label is not None:
                self.add_legend(label[1])
                return label[0]
        if self.axes is not None:
            axis = as_item(axis, self.axes)
        hit = self._labels.get(axis)
        if hit is None:
            entry = legend_entry(axis)
            symbol = self.indexed.get(entry) if entry is not None else None
            if entry is None:
                hit = (axis_pieces(axis), None)
            elif symbol is not None:  # one name, several sizes in this drawing: n_b,1 = n₂/4, n_b,2 = n₃/4
                hit = (symbol_pieces(symbol, axis.role == "item"), (symbol, str(entry[1])))
            else:
                hit = (name_pieces(axis), (entry[0], str(entry[1])))
            self._labels[axis] = hit
        if hit[1] is not None:
            self.add_legend(hit[1])
        return hit[0]

    def add_legend(self, *rows: tuple[str, str]) -> None:
        """Rows for the legend, kept by the fragment being made (:attr:`Frag.rows`)."""
        for row in rows:
            if row not in self._rows:
                self._rows.append(row)

    @contextmanager
    def collecting(self) -> Iterator[list[tuple[str, str]]]:
        """The legend rows added while making one fragment (and not by the fragments it lays out itself)."""
        outer, self._rows = self._rows, []
        try:
            yield self._rows
        finally:
            self._rows = outer

    def label_rise(self, descent: float) -> float:
        """How far above its wire a wire label's baseline sits: its descent (``/``, ``(``, a subscript ``n₁`` reach
        below the baseline) and 1 pt clear of the wire's stroke, which survives a renderer's hinting."""
        return descent + 1.0

    def label_clearance(self) -> float:
        """How far above its wire a wire label reaches (its baseline, its ascent, an overline, a margin)."""
        return self.label_rise(0.25 * self.style.label_size) + 0.86 * self.style.label_size + 1.5

    def text_size(self, parts: Sequence[Piece], size: float, bold: bool = False) -> tuple[float, float, float]:
        text, _ = _typeset_at_origin(tuple(parts), size, bold)
        return text.width, text.ascent, text.descent

    # -- dispatch ------------------------------------------------------------------------
    def lay(self, node: Diagram) -> Frag:
        with self.collecting() as rows:
            frag = self._lay(node)
        if rows:
            frag.rows = tuple(dict.fromkeys(frag.rows + tuple(rows)))
        return frag

    def _lay(self, node: Diagram) -> Frag:
        if isinstance(node, Box):
            from ncd.render.pictograms import box_rule

            return box_rule(node.prim.op)(self, node)
        if isinstance(node, Seq):
            return self.seq(node.parts)
        if isinstance(node, Par):
            return self.par(node.parts)
        if isinstance(node, Weave):
            scalar = scalar_core(node)
            if scalar is not None:
                from ncd.render.pictograms import scalar_rule

                return scalar_rule(scalar.prim.op)(self, scalar, node.dom, node.cod)
            return self.weave(node)
        if isinstance(node, Block):
            return self.block(node)
        if isinstance(node, Repeat):
            return self.repeat(node)
        if isinstance(node, Identity):
            return self.identity(node.type)
        from ncd.render.pictograms import generic_box

        return generic_box(self, node.dom, node.cod, typeset_text(type(node).__name__))

    def identity(self, typ: Type) -> Frag:
        ys = self.stack(typ)
        values = flat(ys) or [0.0]
        return Frag(0.0, min(values), max(values), ys, [list(s) for s in ys])

    def note(self, side: str, node: Diagram) -> tuple[tuple[dict[str, str] | None, ...], str | None] | None:
        """The note (see ``notes``) for the gap ``side`` (``"after"`` or ``"before"``) of ``node``."""
        if not self.notes:
            return None
        step, offset = _step(node)
        found = self.notes.get((side, id(step)))
        if found and offset:
            found = ((None,) * offset + tuple(found[0]), found[1])  # None: wires the note is not about
        return found

    # -- gaps between columns ------------------------------------------------------------
    def gap(self, left: Ports, right: Ports, typ: Type, labels: bool, seps_left: dict[int, float] | None = None,
            seps_right: dict[int, float] | None = None,
            note: tuple[tuple[dict[str, str] | None, ...], str | None] | None = None) -> tuple[Frag, float]:
        """Wires from heights ``left`` to ``right``, labelled with the axes of ``typ``, dashed lines between segments.

        ``note`` (see ``notes``) adds a subscript to labels (the mesh axis a wire is split over) and a glyph.
        """
        memo = self.memo
        if memo is not None and note is None:  # a gap owns no boxes: equal gaps are one fragment, placed many times
            key = ("gap", typ, labels, self._generic_part(typ, labels and self.style.labels != "none"),
                   tuple(map(tuple, left)), tuple(map(tuple, right)),
                   tuple(sorted(seps_left.items())) if seps_left else None,
                   tuple(sorted(seps_right.items())) if seps_right else None)
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = self._gap(left, right, typ, labels, seps_left, seps_right, None)
            return hit
        return self._gap(left, right, typ, labels, seps_left, seps_right, note)

    def edge_width(self, ports: Ports, typ: Type, labels: bool) -> float:
        """The width of ``gap(ports, ports, typ, labels)`` (no note), measured without making its items: the page
        layout measures both edges of every column to pack its rows, and draws only the rows' own edges."""
        label_w = 0.0
        if labels and self.style.labels != "none":
            with self.collecting():  # the legend rows go with the gap drawn, not with a measurement
                for seg, ys in zip(typ, ports):
                    for axis, _ in zip(seg, ys):
                        w = self.text_size(self.axis_label(axis), self.style.label_size)[0]
                        label_w = max(label_w, w + 6.0)
        return max(label_w, 8.0) + _bend_width(0.0, self.style.pitch)  # the same wires in and out: no bend

    def _gap(self, left: Ports, right: Ports, typ: Type, labels: bool, seps_left: dict[int, float] | None,
             seps_right: dict[int, float] | None,
             note: tuple[tuple[dict[str, str] | None, ...], str | None] | None) -> tuple[Frag, float]:
        with self.collecting() as rows:
            made = self._gap_frag(left, right, typ, labels, seps_left, seps_right, note)
        made[0].rows = tuple(rows)
        return made

    def _gap_frag(self, left: Ports, right: Ports, typ: Type, labels: bool, seps_left: dict[int, float] | None,
                  seps_right: dict[int, float] | None,
                  note: tuple[tuple[dict[str, str] | None, ...], str | None] | None) -> tuple[Frag, float]:
        p = self.style.pitch
        frag = Frag(0.0, 0.0, 0.0, left, right)
        label_w = 0.0
        subscripts, glyph = note if note else ((), None)
        if labels and self.style.labels != "none":
            for j, (seg, ys) in enumerate(zip(typ, left)):
                for axis, y in zip(seg, ys):
                    parts = self.axis_label(axis)
                    sub = subscripts[j] if j < len(subscripts) else None
                    if sub and axis.name in sub:  # on the name: t̄_tp, f_tp = 4m
                        at = next((k for k, piece in enumerate(parts) if piece.text == " = "), len(parts))
                        parts = parts[:at] + (Piece(sub[axis.name], script=-1),) + parts[at:]
                    w, ascent, descent = self.text_size(parts, self.style.label_size)
                    lift = self.label_rise(descent)
                    frag.add(*self.text(parts, 3.0, y - lift, self.style.label_size, role="label"))
                    frag.include(y - lift - ascent, y)
                    label_w = max(label_w, w + 6.0)
        label_w = max(label_w, 8.0)
        glyph_items: list[Item] = []
        about = [y for j, ys in enumerate(left) for y in ys
                 if not subscripts or (j < len(subscripts) and subscripts[j] is not None)]
        if glyph and about:  # a collective: a small labelled tag across the wires it concerns, after the labels
            gw, ascent, descent = self.text_size(typeset_text(glyph), self.style.label_size * 0.8)
            top, bottom = min(about) - 0.45 * p, max(about) + 0.45 * p
            glyph_items.append(Rect(label_w, top, gw + 6.0, bottom - top, fill="#ffffff", stroke="#b03030", width=1.0,
                                    radius=3.0, role="glyph"))
            glyph_items += self.text(typeset_text(glyph), label_w + 3.0, (top + bottom) / 2 + (ascent - descent) / 2,
                                     self.style.label_size * 0.8, role="label")
            frag.include(top, bottom)
            label_w += gw + 10.0
        dys = [abs(a - b) for a, b in zip(flat(left), flat(right))]
        bend = _bend_width(max(dys, default=0.0), p)
        w = label_w + bend
        frag.w = w
        for a, b in zip(flat(left), flat(right)):
            frag.add(Path.through([(0.0, a), (label_w, a), (w, b)] if bend else [(0.0, a), (w, b)]))
            frag.include(min(a, b), max(a, b))
        frag.add(*glyph_items)
        for j in range(len(typ) - 1):
            ya = (seps_left or {}).get(j, _between(left, j, self.label_clearance()))
            yb = (seps_right or {}).get(j, _between(right, j, self.label_clearance()))
            if ya is not None and yb is not None:
                pts = [(0.0, ya), (label_w, ya), (w, yb)] if bend else [(0.0, ya), (w, yb)]
                frag.add(Path.through(pts, dashed=True, width=0.8, role="separator"))
        return frag, w

    # -- sequential composition ------------------------------------------------------------
    def seq(self, parts: Sequence[Diagram]) -> Frag:
        return self.seq_groups(self.groups(parts))

    def groups(self, parts: Sequence[Diagram]) -> list[tuple[Diagram, int]]:
        """The columns of a sequence: runs of identical blocks folded into one with a count (``fold``)."""
        return _fold(parts) if self.style.fold else [(p, 1) for p in parts]

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
                                                         for a, label in reads):
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
        entry[1].append((frag, tuple(reads.items()), any(label is not None for label in reads.values())))
        if outer is not None:
            outer.update(reads)
        return frag

    def _generic_part(self, typ: Type, labels: bool) -> tuple[Any, ...] | None:
        """The generic labels of ``typ``'s wires when a gap labels them (part of a memoised gap's key), recorded as
        read by the column being laid out."""
        if not labels:
            return None
        generic = self.generic
        if self._reads is not None:
            for seg in typ:
                for a in seg:
                    self._reads[a] = generic.get(a) if generic is not None else None
        if generic is None:
            return None
        part = tuple(generic.get(a) for seg in typ for a in seg)
        return part if any(label is not None for label in part) else None

    def _group_key(self, node: Diagram, count: int) -> tuple[Any, ...]:
        """What a column's layout depends on besides the node: the block depth (when ``style.depth`` collapses by
        it), the enclosing blocks' path (when costs are written), the enclosing fence's colour (when one of the
        node's outermost blocks would take it), and the collapsed blocks and scans inside the node.  The page layout
        lays the same columns out in the one-row drawing, in each definition and in its rows: equal keys (and equal
        labels of the wires the column read, see :meth:`lay_group`) reuse one fragment."""
        found = self._inside.get(id(node))
        if found is None or found[0] is not node:
            found = self._inside[id(node)] = (node, *_inside(node))
        _, ids, colours = found
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
        gap, w = self.gap(before.outs, shifted(frag.ins, dy), prev.cod, self.style.labels == "all", before.seps_out,
                          {j: v + dy for j, v in frag.seps_in.items()}, note)
        if memo is not None:
            memo[key] = (before, frag, prev, nxt, (gap, w, dy))
        return gap, w, dy

    # -- parallel composition --------------------------------------------------------------
    def par(self, parts: Sequence[Diagram]) -> Frag:
        frags = [self.lay_group(p, 1) for p in parts]  # memoised on a page: its branches are laid out once
        p, g = self.style.pitch, self.style.segment_gap
        width = max(f.w for f in frags)
        result = Frag(width, 0.0, 0.0, [], [])
        prev: tuple[float, float] | None = None  # bottom extent, last port
        placements = []
        for frag in frags:
            ports = flat(frag.ins) + flat(frag.outs)
            first = min(ports) if ports else frag.top
            if prev is None:
                dy = -frag.top
            else:  # below the part above, its wires a segment apart, room for the separator above the first label
                dy = max(prev[0] + 0.5 * p - frag.top, prev[1] + p + g - first,
                         prev[0] + self.label_clearance() + 3.0 - first)
            placements.append(dy)
            last = max(ports) if ports else frag.bottom
            prev = (frag.bottom + dy, last + dy)
        result.top = frags[0].top + placements[0]
        n_in = n_out = 0
        for k, (frag, dy) in enumerate(zip(frags, placements)):
            x0 = round((width - frag.w) / 2, 3)
            result.place(frag, x0, dy)
            result.include(frag.top + dy, frag.bottom + dy)
            result.ins.extend(shifted(frag.ins, dy))
            result.outs.extend(shifted(frag.outs, dy))
            if x0 > 0:
                for y in flat(frag.ins):
                    result.add(Path.through([(0.0, y + dy), (x0, y + dy)]))
                for y in flat(frag.outs):
                    result.add(Path.through([(x0 + frag.w, y + dy), (width, y + dy)]))
            if k > 0:
                above = frags[k - 1].bottom + placements[k - 1]
                ports_k = flat(frag.ins) + flat(frag.outs)
                below = frag.top + dy
                if ports_k:  # the label of the first wire sits above it: the separator runs above that label
                    below = min(below, min(ports_k) + dy - self.label_clearance())
                ymid = (above + max(below, above)) / 2
                if width > 0:
                    result.add(Path.through([(0.0, ymid), (width, ymid)], dashed=True, width=0.8, role="separator"))
                if n_in and frag.ins:
                    result.seps_in[n_in - 1] = ymid
                if n_out and frag.outs:
                    result.seps_out[n_out - 1] = ymid
            result.seps_in.update({n_in + j: y + dy for j, y in frag.seps_in.items()})
            result.seps_out.update({n_out + j: y + dy for j, y in frag.seps_out.items()})
            n_in, n_out = n_in + len(frag.ins), n_out + len(frag.outs)
        return result

    # -- broadcasting ------------------------------------------------------------------------
    def weave(self, node: Weave) -> Frag:
        """A chain of weaves drawn at once: the inner fragment, and each woven wire running past it on a track
        above it (a wire woven before the inner wires) or below it (after them), stacked in the order the wires
        have on the boundary — so wires cross only where the weave really moves an axis, as a transpose would."""
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
        colour = fence_colour(node.name, avoid=self.fences[-1] if self.fences else None)
        self.depth += 1
        self.fences.append(colour)
        self.path.append(node.name)
        note = dict(self.style.costs).get("/".join(self.path)) if self.style.costs else None
        try:
            body = self.lay(node.body)
        finally:
            self.depth -= 1
            self.fences.pop()
            self.path.pop()
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

    def component(self, node: Block) -> Frag:
        from ncd.render.pictograms import component_box

        return component_box(self, node)

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


# -- module-level helpers -----------------------------------------------------------------------
_TYPESET: dict[tuple[tuple[Piece, ...], float, bool], tuple[Text, list[tuple[float, float, float]]]] = {}


def _typeset_at_origin(parts: tuple[Piece, ...], size: float, bold: bool) -> tuple[Text, list[tuple[float, float, float]]]:
    """``typeset`` at ``(0, 0)``, remembered: a drawing typesets the same few labels thousands of times."""
    key = (parts, size, bold)
    hit = _TYPESET.get(key)
    if hit is None:
        if len(_TYPESET) > 50_000:
            _TYPESET.clear()
        hit = _TYPESET[key] = typeset(parts, 0.0, 0.0, size, bold=bold)
    return hit


def _step(node: Diagram) -> tuple[Diagram, int]:
    """A step of a wrapped row and the segments before it: the page layout draws ``f @ g`` as
    ``(f @ id) >> (id @ g)``, and notes are keyed by ``f`` and ``g``."""
    if isinstance(node, Par):
        live = [k for k, p in enumerate(node.parts) if not isinstance(p, Identity)]
        if len(live) == 1:
            return node.parts[live[0]], sum(len(p.dom) for p in node.parts[: live[0]])
    return node, 0


def _merge_notes(after: Any, before: Any) -> Any:
    """The note of a gap: the left node's output subscripts, and the glyphs of both sides."""
    if not after or not before:
        return after or before
    glyphs = " ".join(g for g in (after[1], before[1]) if g)
    return (after[0] or before[0], glyphs or None)


def _edge_separators(frag: Frag, body: Frag, x0: float, dom: Type, cod: Type) -> None:
    """Dashed lines between segments across the margins between a fence's edge and its body."""
    for ports, seps, typ, xa, xb in ((body.ins, body.seps_in, dom, 0.0, x0), (body.outs, body.seps_out, cod, x0 + body.w, frag.w)):
        for j in range(len(typ) - 1):
            y = seps.get(j, _between(ports, j))
            if y is not None and xb > xa:
                frag.add(Path.through([(xa, y), (xb, y)], dashed=True, width=0.8, role="separator"))


def scalar_core(node: Weave) -> Box | None:
    """The box a chain of weaves broadcasts, if it is a scalar map (drawn as a glyph on the wires)."""
    inner = unweave(node)[0]
    if isinstance(inner, Box) and all(len(s) == 0 for s in inner.dom) and all(len(s) == 0 for s in inner.cod):
        return inner
    return None


def _bend_width(dy: float, pitch: float) -> float:
    if dy < 1e-6:
        return 0.0
    return round(min(max(1.6 * pitch, 0.9 * dy), 5.0 * pitch), 3)


def _between(ports: Ports, j: int, clearance: float = 0.0) -> float | None:
    """Where the dashed line between segments ``j`` and ``j+1`` runs: nearer the upper wire, and above the
    lower wire's label (``clearance``: how far a label reaches above its wire)."""
    above = [y for seg in ports[: j + 1] for y in seg]
    below = [y for seg in ports[j + 1:] for y in seg]
    if not above or not below:
        return None
    y_up, y_low = above[-1], below[0]
    y = y_up + 0.4 * (y_low - y_up)
    if clearance and y > y_low - clearance:
        y = max((y_up + y_low - clearance) / 2, y_up + 1.0)
    return y


def _align(outs: Ports, ins: Ports) -> float:
    """The vertical shift of the next column that keeps the most wires straight."""
    pairs = list(zip(flat(outs), flat(ins)))
    if not pairs:
        return 0.0
    first = round(pairs[0][0] - pairs[0][1], 3)
    if all(round(a - b, 3) == first for a, b in pairs):  # the usual case: one shift keeps every wire straight
        return first
    counts = Counter(round(a - b, 3) for a, b in pairs)
    best = max(counts.values())
    return min((o for o, c in counts.items() if c == best), key=lambda o: (abs(o), o))


def _woven_entries(typ: Type, weaves: Sequence[Weave], side: str) -> list[list[int]]:
    """The wires of a chain of weaves' boundary, per segment: ``k >= 0`` the inner fragment's ``k``-th port,
    ``-i - 1`` the axis of ``weaves[i]`` (outermost first)."""
    segs: list[list[int]] = []
    k = 0
    for seg in typ:
        segs.append(list(range(k, k + len(seg))))
        k += len(seg)
    for i in range(len(weaves) - 1, -1, -1):
        positions = weaves[i].dom_pos if side == "dom" else weaves[i].cod_pos
        for j, pos in enumerate(positions):
            if pos is not None:
                segs[j].insert(pos, -i - 1)
    return segs


def _boundary(internal: Ports, positions: Sequence[int | None], track: float, pitch: float,
              gap: float) -> tuple[Ports, list[float]]:
    """Boundary heights for ports with one woven wire inserted at ``positions[j]`` of segment ``j`` (``None``: not
    there), running on ``track``, and the height where each meets the inside (see :func:`_woven_boundary`)."""
    entries: list[list[int]] = []
    k = 0
    for j, seg in enumerate(internal):
        ids = list(range(k, k + len(seg)))
        k += len(seg)
        pos = positions[j] if j < len(positions) else None
        if pos is not None:
            ids.insert(pos, -1)
        entries.append(ids)
    return _woven_boundary(entries, internal, {-1: track}, pitch, gap)


def _woven_boundary(entries: list[list[int]], internal: Ports, track: dict[int, float], pitch: float,
                    gap: float) -> tuple[Ports, list[float]]:
    """Boundary heights for a weave's ports (``entries`` as :func:`_woven_entries` gives them) and the height
    where each meets the inside: an inner port's own height, or a woven wire's track.  A woven wire enters one
    pitch from its neighbour, so the boundary stays compact, and bends to its track (unless that is near)."""
    inside = flat(internal)
    wires = [(k, j) for j, seg in enumerate(entries) for k in seg]
    targets = [inside[k] if k >= 0 else track[k] for k, _ in wires]
    first = next((n for n, (k, _) in enumerate(wires) if k >= 0), None)
    ys: list[float] = []
    for n, (k, j) in enumerate(wires):
        step = 0.0 if n == 0 else pitch + (gap if wires[n - 1][1] != j else 0.0)
        if k >= 0:
            want = inside[k]
        else:  # compact, or straight on to its track when that is near
            want = ys[-1] + step if n > 0 else (inside[wires[first][0]] - first * pitch if first is not None
                                                  else targets[0])
            if abs(targets[n] - want) <= 0.5 * pitch:
                want = targets[n]
        ys.append(round(want if n == 0 else max(want, ys[-1] + step), 3))
    out: Ports = []
    n = 0
    for seg in entries:
        out.append(ys[n:n + len(seg)])
        n += len(seg)
    return out, targets


def _inside(node: Diagram) -> tuple[frozenset[int], frozenset[str]]:
    """The ids of the blocks and scan boxes inside ``node`` (a scan's body too: the layout may collapse any of
    them), and the colours its outermost fences and component boxes take next to no fence (``fence_colour``
    avoids the enclosing fence's colour only when it is one of these)."""
    ids: set[int] = set()
    colours: set[str] = set()
    stack: list[tuple[Diagram, bool]] = [(node, True)]
    while stack:
        current, outer = stack.pop()
        if isinstance(current, Block):
            ids.add(id(current))
            if outer:
                colours.add(fence_colour(current.name))
            stack.append((current.body, False))
            continue
        if isinstance(current, Box):
            body = getattr(current.prim, "body", None)
            if isinstance(body, Diagram):  # a scan: drawn with its body inside, or as a Step box defined below
                ids.add(id(current))
                if outer:
                    colours.add(fence_colour("Step"))
                stack.append((body, outer))
            continue
        stack.extend((child, outer) for child in current.children())
    return frozenset(ids), frozenset(colours)


def _fold(parts: Sequence[Diagram]) -> list[tuple[Diagram, int]]:
    """Runs of identical blocks (woven or not) become one block with a count."""
    groups: list[tuple[Diagram, int]] = []
    for part in parts:
        core = unweave(part)[0]
        if groups and isinstance(core, Block) and groups[-1][0] == part:
            groups[-1] = (part, groups[-1][1] + 1)
        else:
            groups.append((part, 1))
    return groups


@contextmanager
def no_collector() -> Iterator[None]:
    """The cyclic garbage collector paused: laying out and painting allocate many small acyclic records, and
    collector passes over them (and over everything else the process holds) made large drawings superlinear."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def layout(diagram: Diagram, style: Style | None = None, **options: Any) -> Drawing:
    """Lay ``diagram`` out as a backend-free :class:`Drawing` (options as for :func:`ncd.draw`)."""
    style = style or Style.from_options(**options)
    with no_collector():
        return _layout(diagram, style)


def _layout(diagram: Diagram, style: Style) -> Drawing:
    from ncd.distributed.draw import wire_notes  # a sharded diagram: mesh axes on its wires, collectives tagged
    from ncd.render.wrap import page_layout

    ctx = Layout(wire_notes(diagram, style))
    ctx.axes = diagram_axes(diagram)
    ctx.indexed = indexed_symbols(diagram)
    return page_layout(ctx, diagram) or lay_out_with(ctx, diagram)


def lay_out_with(ctx: Layout, diagram: Diagram) -> Drawing:
    """Lay ``diagram`` out with a given layout context (a :class:`Layout` or a subclass, e.g. the viewer's)."""
    if ctx.axes is None:
        ctx.axes = diagram_axes(diagram)
        ctx.indexed = indexed_symbols(diagram)
    return _finish(ctx, framed(ctx, ctx.lay(diagram), diagram.dom, diagram.cod))


def framed(ctx: Layout, body: Frag, dom: Type, cod: Type, note_in: Any = None, note_out: Any = None) -> Frag:
    """``body`` with its wire labels in a gap at each end and boundary ports: a whole drawing, or one row of a
    page (``note_in``/``note_out``: the notes of the gaps, see :meth:`Layout.gap`)."""
    frag = Frag(0.0, body.top, body.bottom, body.ins, body.outs)
    labels = ctx.style.labels != "none"
    left, lw = ctx.gap(body.ins, body.ins, dom, labels, note=note_in)
    right, rw = ctx.gap(body.outs, body.outs, cod, labels, note=note_out)
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

    def smallest(self, frag: Frag) -> float | None:
        """The smallest size of the drawing's visible text, ``None`` when it has none."""
        found = smallest_text(frag, float("inf"))
        for it in self.header + self.legend:
            if isinstance(it, Text):
                found = min([found] + [run.size for run in it.runs if run.text.strip()])
        return None if found == float("inf") else found


def framing(ctx: Layout, frag: Frag) -> Framing:
    """The title, legend and size of the drawing of ``frag`` (:func:`_finish` without making the body's items)."""
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
    legend, legend_w, legend_h = legend_items(rows, ctx.text_size, ctx.text, style.label_size)
    width = max(frag.w, legend_w) + 2 * m
    lx = m + max(frag.w - legend_w, 0.0) + 12.0
    # the legend sits in the top-right corner when that corner is empty (e.g. beside a definition's header),
    # above the drawing otherwise
    beside = bool(legend) and not _any_hit(frag, m, m + head_h - frag.top, (lx - 6, m + head_h, width, m + head_h + legend_h + 6))
    top_h = head_h if beside or not legend else max(head_h, legend_h + 6)
    height = m + top_h + (frag.bottom - frag.top) + m
    return Framing(header, head_h, rows, legend, legend_w, beside, top_h, width, height)


def _finish(ctx: Layout, frag: Frag, framed: Framing | None = None) -> Drawing:
    """The drawing of ``frag``: its title, legend and body items in place (``framed``: its :func:`framing`)."""
    f = framed or framing(ctx, frag)
    m = ctx.style.margin
    items: list[Item] = [it.moved(m, m) for it in f.header]
    lx = m + max(frag.w - f.legend_w, 0.0) + 12.0
    body: list[Item] = []
    _flatten(frag, m, m + f.top_h - frag.top, body)
    for it in f.legend:
        items.append(it.moved(lx - 12.0, m + (f.head_h if f.beside else 0.0)))
    items.extend(body)
    return Drawing(round(f.width, 2), round(f.height, 2), items, tuple(f.rows))


def _rows(frag: Frag) -> tuple[tuple[str, str], ...]:
    """The legend rows of the fragments ``frag`` places, in drawing order, then its own (each fragment once)."""
    out: list[tuple[str, str]] = []
    seen: set[int] = set()
    stack: list[tuple[Frag, bool]] = [(frag, False)]
    while stack:
        current, done = stack.pop()
        if done:
            out.extend(current.rows)
            continue
        if id(current) in seen:
            continue
        seen.add(id(current))
        stack.append((current, True))
        stack.extend((it[2], False) for it in reversed(current.items) if isinstance(it, tuple))
    return tuple(dict.fromkeys(out))


def _any_hit(frag: Frag, dx: float, dy: float, box: tuple[float, float, float, float]) -> bool:
    """Whether a visible item of ``frag`` placed at ``(dx, dy)`` meets ``box``: the items :func:`_flatten` would give,
    tested with the same arithmetic without making them (a drawing is flattened once, where its legend leaves it)."""
    stack: list[tuple[Frag, float, float]] = [(frag, dx, dy)]
    while stack:
        current, x, y = stack.pop()
        for it in current.items:
            if isinstance(it, tuple):
                stack.append((it[2], x + it[0], y + it[1]))
            elif _hits_at(it, x, y, box):
                return True
    return False


def _hits_at(item: Item, dx: float, dy: float, box: tuple[float, float, float, float]) -> bool:
    """Whether ``item.moved(dx, dy)``'s bounding box meets ``box`` (invisible records never do)."""
    if isinstance(item, Text):
        x, y = item.x + dx, item.y + dy
        b = (x, y - item.ascent, x + item.width, y + item.descent)
    elif isinstance(item, Rect):
        x, y = item.x + dx, item.y + dy
        b = (x, y, x + item.w, y + item.h)
    elif isinstance(item, Path):
        xs = [c[k] + dx for c in item.commands for k in range(1, len(c), 2)]
        ys = [c[k] + dy for c in item.commands for k in range(2, len(c), 2)]
        b = (min(xs), min(ys), max(xs), max(ys))
    elif isinstance(item, Circle):
        x, y = item.cx + dx, item.cy + dy
        b = (x - item.r, y - item.r, x + item.r, y + item.r)
    elif isinstance(item, Polygon):
        points = [(x + dx, y + dy) for x, y in item.points]
        b = (min(x for x, _ in points), min(y for _, y in points), max(x for x, _ in points), max(y for _, y in points))
    else:
        return False
    return b[0] < box[2] and box[0] < b[2] and b[1] < box[3] and box[1] < b[3]



def smallest_text(frag: Frag, default: float) -> float:
    """The smallest size of any text run in ``frag`` (``default`` when it has no text)."""
    smallest = default
    stack = [frag]
    while stack:
        for it in stack.pop().items:
            if isinstance(it, tuple):
                stack.append(it[2])
            elif isinstance(it, Text):
                for run in it.runs:
                    if run.size < smallest and run.text.strip():
                        smallest = run.size
    return smallest


def _flatten(frag: Frag, dx: float, dy: float, out: list[Item]) -> None:
    stack: list[tuple[Frag, float, float, int]] = [(frag, dx, dy, 0)]
    while stack:
        current, x, y, start = stack.pop()
        for k in range(start, len(current.items)):
            it = current.items[k]
            if isinstance(it, tuple):
                stack.append((current, x, y, k + 1))
                stack.append((it[2], x + it[0], y + it[1], 0))
                break
            out.append(it.moved(x, y))


#: A drawing rule: the layout and a box in, a fragment out.
Rule = Callable[[Layout, Box], Frag]
