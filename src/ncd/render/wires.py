"""What a layout reads again and again of the same objects, found once and kept with them: a wire label typeset at the
origin (:class:`_Label`, :func:`_typeset_at_origin`), a type's distinct axes (:func:`_distinct_axes`,
:func:`_own_reads`) and its wires by axis (:func:`_wires_by_axis`), how many wires it has (:func:`_width`), the wires a
node lets pass untouched (:func:`_passes`) and those a gap's labels follow (:func:`_followed`), a wrapped row's step
(:func:`_step`) and a gap's notes
(:func:`_merge_notes`).  :class:`~ncd.render.context.LayoutContext` reads them for every gap and join.
"""

from __future__ import annotations

from typing import Any

from ncd.ir.axes import Axis, Type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq
from ncd.render.frag import Ports
from ncd.render.model import Text
from ncd.render.typeset import Piece, typeset


class _Label:
    """A wire label typeset at the origin, with what a gap needs of it: how far its baseline sits above the wire
    (``lift``), the width it takes (``advance``), its smallest text size, and its bounding box from ``(3, 0)``."""

    __slots__ = ("text", "overlines", "lift", "advance", "ascent", "smallest", "x0", "y0", "x1", "y1")

    def __init__(self, text: Text, overlines: list[tuple[float, float, float]], lift: float, advance: float) -> None:
        self.text, self.overlines, self.lift, self.advance, self.ascent = text, overlines, lift, advance, text.ascent
        sizes = [run.size for run in text.runs if run.text.strip()]
        self.smallest = min(sizes, default=float("inf"))
        # the boxes frag._bounds gives the text at (3, base) and its overlines, less ``base``
        self.x0 = min([3.0] + [x0 + 3.0 for x0, _, _ in overlines] + [x1 + 3.0 for _, x1, _ in overlines])
        self.x1 = max([3.0 + text.width] + [x0 + 3.0 for x0, _, _ in overlines] + [x1 + 3.0 for _, x1, _ in overlines])
        self.y0 = min([-text.ascent] + [yo for _, _, yo in overlines])
        self.y1 = max([text.descent] + [yo for _, _, yo in overlines])


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


_DISTINCT: dict[int, tuple[Type, tuple[Axis, ...]]] = {}


def _distinct_axes(typ: Type) -> tuple[Axis, ...]:
    """The distinct axes of ``typ``'s wires, in order, found once per type (kept with it, as ids are reused): a
    wide composite's type is read by every gap and join it is part of."""
    hit = _DISTINCT.get(id(typ))
    if hit is not None and hit[0] is typ:
        return hit[1]
    if len(_DISTINCT) > 50_000:
        _DISTINCT.clear()
    axes = tuple(dict.fromkeys(a for seg in typ for a in seg))
    _DISTINCT[id(typ)] = (typ, axes)
    return axes


_OWN_READS: dict[int, tuple[Type, dict[int, tuple[Axis, None]]]] = {}


def _own_reads(typ: Type) -> dict[int, tuple[Axis, None]]:
    """What reading the labels of ``typ``'s wires records when no label is generic (``LayoutContext._reads``: each
    distinct axis by ``id``, with ``None``), made once per type (kept with it)."""
    hit = _OWN_READS.get(id(typ))
    if hit is not None and hit[0] is typ:
        return hit[1]
    if len(_OWN_READS) > 50_000:
        _OWN_READS.clear()
    reads: dict[int, tuple[Axis, None]] = {id(a): (a, None) for a in _distinct_axes(typ)}
    _OWN_READS[id(typ)] = (typ, reads)
    return reads


_BY_AXIS: dict[int, tuple[Type, tuple[int, ...], tuple[tuple[Axis, tuple[int, ...]], ...]]] = {}


def _wires_by_axis(typ: Type, ports: Ports) -> tuple[tuple[Axis, tuple[int, ...]], ...] | None:
    """``typ``'s distinct axes, in order, each with the positions of its wires among ``flat(ports)``, found once per
    type (kept with it); ``None`` when ``ports`` does not give each of ``typ``'s wires one height."""
    hit = _BY_AXIS.get(id(typ))
    if hit is None or hit[0] is not typ:
        if len(_BY_AXIS) > 50_000:
            _BY_AXIS.clear()
        where: dict[Axis, list[int]] = {}
        k = 0
        segments = typ.segments  # (the fields read: a type's and a segment's own iterators are Python calls)
        for seg in segments:
            for axis in seg.axes:
                where.setdefault(axis, []).append(k)
                k += 1
        hit = _BY_AXIS[id(typ)] = (typ, tuple([len(seg.axes) for seg in segments]),
                                   tuple([(axis, tuple(ks)) for axis, ks in where.items()]))
    if tuple(map(len, ports)) != hit[1]:
        return None
    return hit[2]


Kept = dict[int, tuple[int, ...]]  # input wire position → its output positions (one, or a copy's several)
_PASSES: dict[int, tuple[Diagram, Kept]] = {}
_FOLLOWED: dict[int, tuple[Diagram, Kept]] = {}


def _passes(node: Diagram) -> Kept:
    """The wires that run through ``node`` untouched (its wires past the boxes of a parallel part, chains of them):
    each one's position among the input wires → its position among the output wires (a one-tuple); found once per
    node (kept with it).  :func:`_through` with no box keeping a wire."""
    hit = _PASSES.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    return _through(node, _none, _PASSES)


def _followed(node: Diagram) -> Kept:
    """The wires whose label a gap after ``node`` follows from before it (:meth:`~ncd.render.context.LayoutContext.
    gap_labels`): each one's position among the input wires → its positions among the output wires.  Those of
    :func:`_passes`, and a crossing's (a ``SwapOp`` box: each wire to its segment's new place) and a copy's (a
    ``CopyOp`` box: each wire to each of its copies) — the same tensor on the same axes, drawn by the same line
    through a crossing or a dot; found once per node (kept with it).  :func:`_through` with :func:`_kept` for a box."""
    hit = _FOLLOWED.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    return _through(node, _kept, _FOLLOWED)


def _none(box: Box) -> Kept:
    """No box keeps a wire (:func:`_passes`)."""
    return {}


def _through(node: Diagram, leaf: Any, memo: dict[int, tuple[Diagram, Kept]]) -> Kept:
    """The wires ``node`` keeps, input position → output positions: an identity's wires, a parallel part's (each
    part's, shifted to its place), a sequence's (each part's, chained), a box's by ``leaf`` (``Box -> Kept``); no
    other node (a block, a weave) keeps a wire.  Found once per node and leaf rule: kept in ``memo``."""
    hit = memo.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    if len(memo) > 50_000:
        memo.clear()
    found: Kept = {}
    if isinstance(node, Box):
        found = leaf(node)
    elif isinstance(node, Par):
        i = o = 0
        for part in node.parts:
            if isinstance(part, Identity):  # (its wires, each past)
                n = _width(part.dom)
                found.update(zip(range(i, i + n), _ones(o + n)[o:o + n]))
                i, o = i + n, o + n
                continue
            if isinstance(part, (Par, Seq, Box)):  # (no other kind of node keeps a wire: a block, a weave)
                step = _through(part, leaf, memo)
                if step:
                    ones = _ones(o + _width(part.cod))
                    for a, bs in step.items():
                        found[i + a] = ones[o + bs[0]] if len(bs) == 1 else tuple(o + b for b in bs)
            i += _width(part.dom)
            o += _width(part.cod)
    elif isinstance(node, Seq):
        found = _through(node.parts[0], leaf, memo)
        for part in node.parts[1:]:
            if not found:
                break
            if not isinstance(part, (Identity, Par, Seq, Box)):  # (it keeps no wire)
                found = {}
                break
            step = _through(part, leaf, memo)
            chained: Kept = {}
            get = step.get
            for a, bs in found.items():
                if len(bs) == 1:
                    c = get(bs[0])
                else:
                    c = tuple(x for b in bs for x in get(b, ()))
                if c:
                    chained[a] = c
            found = chained
    elif isinstance(node, Identity):
        n = _width(node.dom)
        found = dict(zip(range(n), _ones(n)))
    memo[id(node)] = (node, found)
    return found


_ONES: list[tuple[int]] = []


def _ones(n: int) -> list[tuple[int]]:
    """``[(0,), (1,), …]``, at least ``n`` of them (one tuple per position, shared: :func:`_followed`'s values)."""
    while len(_ONES) < n:
        _ONES.append((len(_ONES),))
    return _ONES


def _kept(box: Box) -> dict[int, tuple[int, ...]]:
    """The wires a crossing of segments (``SwapOp``) or a copy (``CopyOp``) box keeps, input position → output
    positions (:func:`_followed`); ``{}`` for any other box."""
    from ncd.prims.structure import CopyOp, SwapOp

    prim = box.prim
    if isinstance(prim, CopyOp):
        n = _width(box.dom)
        return {a: tuple(range(a, n * prim.n, n)) for a in range(n)}
    if not isinstance(prim, SwapOp):
        return {}
    segments = box.dom.segments
    starts, k = [], 0
    for seg in segments:
        starts.append(k)
        k += len(seg.axes)
    found: dict[int, tuple[int, ...]] = {}
    ones = _ones(k)
    o = 0
    for j in prim.perm:  # (output segment k is input segment perm[k])
        for a in range(starts[j], starts[j] + len(segments[j].axes)):
            found[a] = ones[o]
            o += 1
    return dict(sorted(found.items()))


def _width(typ: Type) -> int:
    """How many wires ``typ`` has (its segments' axes, read as fields; added up in a loop: most types have a few)."""
    n = 0
    for seg in typ.segments:
        n += len(seg.axes)
    return n


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
