"""The state of one layout run and what every node's drawing shares: text, wire labels, and the gaps between columns.

:class:`LayoutContext` holds the style, the box-id counter, the enclosing blocks while
descending, the memo of the page layout, and typesets text and wire labels; its :meth:`~LayoutContext.gap`
draws the wires between two columns with their labels and separators.  How each kind of
node is drawn is :class:`ncd.render.layout.Layout`, its subclass.

>>> from ncd.render.style import Style
>>> from ncd.ir.axes import parse_type
>>> ctx = LayoutContext(Style())
>>> ctx.stack(parse_type("b m, n"))
[[0.0, 16.0], [44.0]]
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ncd.ir.axes import Axis, Type
from ncd.ir.diagram import Block, Diagram
from ncd.ir.size import size_text
from ncd.render.frag import (
    LABEL,
    OVERLINE,
    PATH,
    RUN,
    SEPARATOR,
    WIRE,
    Deferred,
    Frag,
    Ports,
    Step,
    _bend_width,
    _betweens,
    _wire,
    flat,
    made,
)
from ncd.render.model import Item, Path, Rect, Text, frozen_record, through_commands
from ncd.render.style import Style
from ncd.render.typeset import (
    DiagramAxes,
    Piece,
    as_item,
    axis_pieces,
    legend_entry,
    name_pieces,
    symbol_pieces,
    typeset_text,
)
from ncd.render.wires import _distinct_axes, _followed, _Label, _own_reads, _step, _typeset_at_origin, _width, _wires_by_axis

__all__ = ["LayoutContext"]


class LayoutContext:
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
        #: the blocks of the diagram the page layout draws by their family (``layers.i``), each node once: which blocks
        #: a definition of a wrapper may open (ncd.render.definitions._opened)
        self.families: dict[str, list[Block]] = {}
        #: the most blocks of one family in the diagram the page layout draws, its boxes' bodies included (``None``:
        #: not known; ncd.render.wrap._most_kin)
        self.kin_bound: int | None = None
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
        #: the same by axis object (``id`` → the axis, its label, its legend row, the item axes it was read with): a
        #: layout reads the labels of a few axis objects tens of thousands of times, found without hashing them
        self._labels_by_id: dict[int, tuple[Axis, tuple[Piece, ...], tuple[str, str] | None, Any]] = {}
        #: labels for the axes whose sizes differ between the blocks one definition draws (ncd.render.generic)
        self.generic: dict[Axis, tuple[tuple[Piece, ...], tuple[str, str]]] | None = None
        #: the axes whose labels the column being laid out has read, with the generic label each had (``None``: its
        #: own), by the axis object's ``id``: a memoised column is reused wherever those labels are the same (see
        #: :meth:`lay_group`)
        self._reads: dict[int, tuple[Axis, Any]] | None = None
        #: the diagram's item axes (a wire keeps its overline through boxes built from plain names) and names by size
        self.axes: DiagramAxes | None = None
        #: the diagram these were read from and the distinct axis objects on its wires (ncd.render.layout._read_axes)
        self.wire_axes: tuple[Diagram, list[Axis]] | None = None
        #: per column (by ``id``): the ids of the blocks and scans inside it and its outermost fences' colours
        self._inside: dict[int, tuple[Diagram, frozenset[int], frozenset[str]]] = {}
        #: typeset wire labels by the pieces axis_label gave (kept with them): ``id`` → pieces, size, label
        self._wire_labels: dict[int, tuple[tuple[Piece, ...], float, _Label]] = {}

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
            self._reads[id(axis)] = (axis, self.generic.get(axis) if self.generic is not None else None)
        if self.generic is not None:
            label = self.generic.get(axis)
            if label is not None:
                self.add_legend(label[1])
                return label[0]
        known = self._labels_by_id.get(id(axis))  # this axis object's label found before (kept with it)
        if known is not None and known[0] is axis and known[3] is self.axes:
            if known[2] is not None:
                self.add_legend(known[2])
            return known[1]
        key = axis
        if self.axes is not None:
            axis = as_item(axis, self.axes)
        hit = self._labels.get(axis)
        if hit is None:
            entry = legend_entry(axis)
            symbol = self.indexed.get(entry) if entry is not None else None
            if entry is None:
                hit = (axis_pieces(axis), None)
            elif symbol is not None:  # one name, several sizes in this drawing: n_b,1 = n₂/4, n_b,2 = n₃/4
                hit = (symbol_pieces(symbol, axis.role == "item"), (symbol, size_text(entry[1])))
            else:
                hit = (name_pieces(axis), (entry[0], size_text(entry[1])))  # (kept: legend_entry printed it)
            self._labels[axis] = hit
        self._labels_by_id[id(key)] = (key, hit[0], hit[1], self.axes)
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
    def gap_labels(self, prev: Diagram, nxt: Diagram) -> bool | tuple[bool, ...]:
        """Which wires the gap from ``prev`` to ``nxt`` labels (``labels="all"``), as the paper labels them: a wire
        where a box of ``prev`` makes it or a box of ``nxt`` takes it, not where it runs untouched through both — its
        label is the one before ``prev``, which it kept, through a crossing or a copy's dot too (:func:`_followed`)
        (``True``: every wire; a tuple: per wire, in order)."""
        if self.style.labels != "all":
            return False
        hit = _GAP_LABELS.get((id(prev), id(nxt)))
        if hit is not None and hit[0] is prev and hit[1] is nxt:
            return hit[2]
        if len(_GAP_LABELS) > 50_000:
            _GAP_LABELS.clear()
        found: bool | tuple[bool, ...] = True
        ran = _followed(prev)  # (past a crossing or a copy's dot too: the same tensor, on the same line)
        if ran:
            takes = _followed(nxt)
            through = [k for ks in ran.values() for k in ks if k in takes]
            if through:
                mask = [True] * _width(prev.cod)
                for k in through:
                    mask[k] = False
                found = tuple(mask)
        _GAP_LABELS[(id(prev), id(nxt))] = (prev, nxt, found)
        return found

    def gap(self, left: Ports, right: Ports, typ: Type, labels: bool | tuple[bool, ...], seps_left: dict[int, float] | None = None,
            seps_right: dict[int, float] | None = None,
            note: tuple[tuple[dict[str, str] | None, ...], str | None] | None = None) -> tuple[Frag, float]:
        """Wires from heights ``left`` to ``right``, labelled with the axes of ``typ``, dashed lines between segments.

        ``note`` (see ``notes``) adds a subscript to labels (the mesh axis a wire is split over) and a glyph;
        ``labels`` is ``True`` (every wire), ``False`` (none) or, per wire, whether it is labelled (:meth:`gap_labels`).
        """
        memo = self.memo
        if memo is not None and note is None:  # a gap owns no boxes: equal gaps are one fragment, placed many times
            key = ("gap", typ, labels, self._generic_part(typ, bool(labels) and self.style.labels != "none"),
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
            outer, self._rows = self._rows, []  # the legend rows go with the gap drawn, not with a measurement
            try:  # (self.collecting(), inline: the page layout measures every column's edges)
                wires = _wires_by_axis(typ, ports)  # equal axes have equal labels: each measured once
                axes = [axis for axis, _ in wires] if wires is not None else \
                    dict.fromkeys(axis for seg, ys in zip(typ, ports) for axis, _ in zip(seg, ys))
                size = self.style.label_size
                for axis in axes:  # (a label's advance is its width + 6, typeset once per layout: _wire_label)
                    advance = self._wire_label(axis, None, size).advance
                    if advance > label_w:
                        label_w = advance
            finally:
                self._rows = outer
        return max(label_w, 8.0) + _bend_width(0.0, self.style.pitch)  # the same wires in and out: no bend

    def _gap(self, left: Ports, right: Ports, typ: Type, labels: bool | tuple[bool, ...], seps_left: dict[int, float] | None,
             seps_right: dict[int, float] | None,
             note: tuple[tuple[dict[str, str] | None, ...], str | None] | None) -> tuple[Frag, float]:
        outer, self._rows = self._rows, []  # (self.collecting(), inline)
        try:
            made = self._gap_frag(left, right, typ, labels, seps_left, seps_right, note)
        finally:
            rows, self._rows = self._rows, outer
        made[0].rows = tuple(rows)
        return made

    def _gap_frag(self, left: Ports, right: Ports, typ: Type, labels: bool | tuple[bool, ...], seps_left: dict[int, float] | None,
                  seps_right: dict[int, float] | None,
                  note: tuple[tuple[dict[str, str] | None, ...], str | None] | None) -> tuple[Frag, float]:
        """The gap's fragment: its size and extent now, its items when first read (:class:`Deferred`; a page layout
        discards most of the gaps it makes).  Each distinct wire label is looked up, typeset and measured once per
        gap: a gap carrying a wide composite's wires labels hundreds of wires with a few labels."""
        p = self.style.pitch
        top = bottom = 0.0  # Frag.include's running extent
        lo_x = lo_y = float("inf")  # the items' bounding box (_bounds of each), found without making them
        hi_x = hi_y = -float("inf")
        smallest = float("inf")
        label_w = 0.0
        placed: list[tuple[_Label, float]] = []  # each wire's label and baseline (a note's gap: made now)
        ins, outs = flat(left), flat(right)  # the wires' heights at both ends (read, never changed)
        by_axis_wires: list[tuple[_Label, tuple[int, ...]]] | None = None  # no note: each label's wires (by position)
        subscripts, glyph = note if note else ((), None)
        mask = labels if isinstance(labels, tuple) else None
        if labels and self.style.labels != "none":
            size = self.style.label_size
            wires = None if subscripts else _wires_by_axis(typ, left)
            if wires is not None:  # per distinct axis, its label and the lowest and highest of its wires' heights
                ys_left = ins
                by_axis_wires = []
                for axis, where in wires:  # (min and max spelt out, as below: a gap has a few axes, a layout
                    label = self._wire_label(axis, None, size)  # thousands of gaps)
                    if mask is not None:  # (its legend row kept: the wire is labelled where it was made)
                        where = tuple(k for k in where if mask[k])
                        if not where:
                            continue
                    if label.smallest < smallest:
                        smallest = label.smallest
                    by_axis_wires.append((label, where))
                    # (y - lift - ascent, y + y0, ... rise with y: the extremes of the wires are the extremes' own)
                    if len(where) == 1:
                        low = high = ys_left[where[0]]
                    else:
                        ys = [ys_left[k] for k in where]
                        low, high = min(ys), max(ys)
                    lift = label.lift
                    v = low - lift - label.ascent
                    if v < top:
                        top = v
                    if high > bottom:
                        bottom = high
                    if label.advance > label_w:
                        label_w = label.advance
                    if label.x0 < lo_x:
                        lo_x = label.x0
                    if label.x1 > hi_x:
                        hi_x = label.x1
                    v = low - lift + label.y0
                    if v < lo_y:
                        lo_y = v
                    v = high - lift + label.y1
                    if v > hi_y:
                        hi_y = v
            else:  # a note's subscripts: each wire's label looked up, its extent added up, now
                by_id: dict[tuple[int, str | None], _Label] = {}
                by_axis: dict[tuple[Axis, str | None], _Label] = {}
                k = -1
                for j, (seg, ys) in enumerate(zip(typ, left)):
                    sub = subscripts[j] if j < len(subscripts) else None
                    for axis, y in zip(seg, ys):
                        k += 1
                        if mask is not None and not mask[k]:
                            self.axis_label(axis)  # (its legend row kept, as above)
                            continue
                        mark = sub[axis.name] if sub and axis.name in sub else None
                        found = by_id.get((id(axis), mark))
                        if found is None:
                            found = by_axis.get((axis, mark))  # an equal axis: the same label (axis_label reads values)
                            if found is None:
                                found = by_axis[(axis, mark)] = self._wire_label(axis, mark, size)
                                smallest = min(smallest, found.smallest)
                            by_id[(id(axis), mark)] = found
                        base = y - found.lift
                        placed.append((found, base))
                        v = base - found.ascent  # (min and max spelt out: this runs once per wire)
                        if v < top:
                            top = v
                        if y > bottom:
                            bottom = y
                        if found.advance > label_w:
                            label_w = found.advance
                        if found.x0 < lo_x:
                            lo_x = found.x0
                        if found.x1 > hi_x:
                            hi_x = found.x1
                        v = base + found.y0
                        if v < lo_y:
                            lo_y = v
                        v = base + found.y1
                        if v > hi_y:
                            hi_y = v
        label_w = max(label_w, 8.0)
        glyph_items: list[Item] = []
        about = [y for j, ys in enumerate(left) for y in ys
                 if not subscripts or (j < len(subscripts) and subscripts[j] is not None)] if glyph else None
        if glyph and about:  # a collective: a small labelled tag across the wires it concerns, after the labels
            gw, ascent, descent = self.text_size(typeset_text(glyph), self.style.label_size * 0.8)
            g_top, g_bottom = min(about) - 0.45 * p, max(about) + 0.45 * p
            glyph_items.append(Rect(label_w, g_top, gw + 6.0, g_bottom - g_top, fill="#ffffff", stroke="#b03030",
                                    width=1.0, radius=3.0, role="glyph"))
            glyph_items += self.text(typeset_text(glyph), label_w + 3.0,
                                     (g_top + g_bottom) / 2 + (ascent - descent) / 2, self.style.label_size * 0.8,
                                     role="label")
            top, bottom = min(top, g_top), max(bottom, g_bottom)
            label_w += gw + 10.0
        bend = _bend_width(max(map(abs, map(operator.sub, ins, outs)), default=0.0), p)
        w = label_w + bend
        n = min(len(ins), len(outs))  # the wires: each from ins[k] to outs[k]
        if n:
            pair_ins, pair_outs = (ins, outs) if len(ins) == len(outs) else (ins[:n], outs[:n])
            low, high = min(min(pair_ins), min(pair_outs)), max(max(pair_ins), max(pair_outs))
            top, bottom = min(top, low), max(bottom, high)
            lo_y, hi_y = min(lo_y, low), max(hi_y, high)
        if ins and outs:
            lo_x, hi_x = min(lo_x, 0.0), max(hi_x, w)
        clearance = self.label_clearance()
        between_left, between_right = _betweens(left, len(typ) - 1, clearance), _betweens(right, len(typ) - 1, clearance)
        seps: list[list[tuple[float, float]]] = []
        for j in range(len(typ) - 1):
            ya = (seps_left or {}).get(j, between_left[j])
            yb = (seps_right or {}).get(j, between_right[j])
            if ya is not None and yb is not None:
                seps.append([(0.0, ya), (label_w, ya), (w, yb)] if bend else [(0.0, ya), (w, yb)])
                lo_x, hi_x = min(lo_x, 0.0), max(hi_x, w)
                lo_y, hi_y = min(lo_y, ya, yb), max(hi_y, ya, yb)
        wire_bend = label_w if bend else None

        def make() -> list[Step]:
            items: list[Step] = []
            if by_axis_wires is not None:  # each wire's label and baseline, in the wires' order
                by_wire: list[_Label] = [None] * len(ins)  # type: ignore[list-item]
                for label, where in by_axis_wires:
                    for k in where:
                        by_wire[k] = label
                placed.extend((label, y - label.lift) for label, y in zip(by_wire, ins) if label is not None)
            append = items.append
            for label, base in placed:
                append((LABEL, label.text, 3.0, base))
                for x0, x1, yo in label.overlines:
                    append((RUN, x0 + 3.0, x1 + 3.0, yo + base, OVERLINE))
            wide = float(w)
            for a, b in zip(ins, outs):  # (a straight wire as _wire makes it: M 0 a, L w b, b equal to a)
                append((RUN, 0.0, wide, float(a), WIRE) if a == b and wire_bend is None
                       else (PATH, _wire(a, b, wire_bend, w), WIRE))
            for pts in seps:
                append((PATH, through_commands(pts), SEPARATOR))
            return items

        if glyph_items:  # a collective's tag (rare): made now, and measured as any fragment is (after the wires)
            steps = make()
            k = len(steps) - len(seps)
            frag = Frag(w, top, bottom, left, right, made(steps[:k]) + glyph_items + made(steps[k:]))
        else:
            extent = (lo_x, lo_y, hi_x, hi_y) if lo_x <= hi_x else None
            frag = Deferred(w, top, bottom, left, right, make, extent, smallest)
        return frag, w

    def _wire_label(self, axis: Axis, mark: str | None, size: float) -> _Label:
        """A wire's label typeset at the origin (``mark``: a subscript on the axis's name, ``t̄_tp, f_tp = 4m``)."""
        parts = self.axis_label(axis)
        if mark is not None:
            at = next((k for k, piece in enumerate(parts) if piece.text == " = "), len(parts))
            parts = parts[:at] + (Piece(mark, script=-1),) + parts[at:]
        else:  # axis_label gives each label's pieces as one kept tuple: its _Label is made once per layout
            hit = self._wire_labels.get(id(parts))
            if hit is not None and hit[0] is parts and hit[1] == size:
                return hit[2]
        t, overlines = _typeset_at_origin(tuple(parts), size, False)
        label = _Label(t, overlines, self.label_rise(t.descent), t.width + 6.0)
        if mark is None:
            self._wire_labels[id(parts)] = (parts, size, label)
        return label

    def _generic_part(self, typ: Type, labels: bool) -> tuple[Any, ...] | None:
        """The generic labels of ``typ``'s wires when a gap labels them (part of a memoised gap's key), recorded as
        read by the column being laid out."""
        if not labels:
            return None
        generic = self.generic
        if generic is None:
            if self._reads is not None:  # each axis read with its own label
                self._reads.update(_own_reads(typ))
            return None
        axes = _distinct_axes(typ)
        if self._reads is not None:
            for a in axes:
                self._reads[id(a)] = (a, generic.get(a))
        part = tuple(generic.get(a) for a in axes)  # (typ is in every key this is part of: its distinct axes suffice)
        return part if any(label is not None for label in part) else None


_GAP_LABELS: dict[tuple[int, int], tuple[Diagram, Diagram, bool | tuple[bool, ...]]] = {}
