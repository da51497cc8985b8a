"""Walks of a finished fragment that read every item it would flatten to, without making them: its bounding box
(:func:`_extent`), whether a visible item meets a box (:func:`_any_hit`, the page's overlap test) and its smallest
text (:func:`smallest_text`), each placed fragment's summary found once and kept in a :data:`Memo` (the page layout
measures many attempts that place the same columns)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ncd.render.frag import Deferred, Frag, Placed
from ncd.render.model import Circle, Footprint, Item, Path, Polygon, Port, Rect, Text

__all__ = ["Memo", "smallest_text"]


#: A memo of fragment summaries (the page layout's ``LayoutContext.memo``): ``(kind,)`` → a one-tuple of a table
#: ``id(frag)`` → ``(frag, value)``
Memo = dict[tuple[Any, ...], tuple[Any, ...]]

#: how far a subtree's bounding box, added up in another order than its items' coordinates, may be off
_SLACK = 1e-6


def _any_hit(frag: Frag, dx: float, dy: float, box: tuple[float, float, float, float], memo: Memo | None = None) -> bool:
    """Whether a visible item of ``frag`` placed at ``(dx, dy)`` meets ``box``: the items
    :func:`ncd.render.model.flatten` would give, tested with the same arithmetic without making them.  A placed
    fragment whose items' bounding box (:func:`_extent`, found once per fragment) is clear of ``box`` is skipped."""
    memo = {} if memo is None else memo
    _extent(frag, memo)  # every placed fragment's box, found once: then read from its table
    table: dict[int, tuple[Frag, Any]] = memo[("extent",)][0]
    x0, y0, x1, y1 = box[0] - _SLACK, box[1] - _SLACK, box[2] + _SLACK, box[3] + _SLACK
    stack: list[tuple[Frag, float, float]] = [(frag, dx, dy)]
    while stack:
        current, x, y = stack.pop()
        for it in current.items:
            if isinstance(it, tuple):
                sub = it[2]
                ext = table[id(sub)][1]
                sx, sy = x + it[0], y + it[1]
                if ext is not None and ext[0] + sx < x1 and x0 < ext[2] + sx and ext[1] + sy < y1 and y0 < ext[3] + sy:
                    stack.append((sub, sx, sy))
            elif _hits_at(it, x, y, box):
                return True
    return False


def _memo_up(frag: Frag, memo: Memo, tag: str, value: Callable[[Frag, dict[int, tuple[Frag, Any]]], Any]) -> Any:
    """``value(fragment, table)`` for ``frag``, each placed fragment's found once, its placed fragments' first
    (``table[id(sub)][1]`` is theirs): kept in ``memo`` under ``(tag,)``, a table from ``id(fragment)`` to the
    fragment and its value, so that an id reused by a later fragment is not mistaken for it.  A page layout walks
    every attempt's tree (its extent, its smallest text), thousands of fragments each time: one table per tag, and a
    fragment's placed fragments pushed without a generator."""
    found = memo.get((tag,))
    if found is None:
        found = memo[(tag,)] = ({},)
    table: dict[int, tuple[Frag, Any]] = found[0]
    hit = table.get(id(frag))
    if hit is not None and hit[0] is frag:
        return hit[1]
    get = table.get
    stack: list[Frag | None] = [frag]  # None: the fragment below it has its placed fragments' values
    push, pop = stack.append, stack.pop
    while stack:
        current = pop()
        if current is None:
            current = pop()
            assert current is not None
            table[id(current)] = (current, value(current, table))
            continue
        known = get(id(current))
        if known is not None and known[0] is current:
            continue
        push(current)
        push(None)
        if not isinstance(current, Deferred):
            for it in current.items:
                if type(it) is tuple:
                    push(it[2])
    return table[id(frag)][1]


def _extent(frag: Frag, memo: Memo) -> tuple[float, float, float, float] | None:
    """The bounding box of ``frag``'s visible items in its own frame (``None``: it has none), each placed fragment's
    found once (``memo``: its table as :func:`_memo_up` keeps it, under ``("extent",)``).

    A :func:`_memo_up` walk spelt out for the two summaries a page needs of every fragment: each fragment's items are
    read once, its own items' box, smallest text and placed fragments together (:func:`_own_items_extent`), and the
    placed fragments' values added when they are known.  Each fragment's smallest text goes into the table of
    :func:`smallest_text` too (``("smallest",)``): the page layout asks for both of the page it frames (the legend's
    corner, :func:`_any_hit`, then its smallest text), and the second is then read from the table."""
    found = memo.get(("extent",))
    if found is None:
        found = memo[("extent",)] = ({},)
    table: dict[int, tuple[Frag, Any]] = found[0]
    found = memo.get(("smallest",))
    if found is None:
        found = memo[("smallest",)] = ({},)
    small: dict[int, tuple[Frag, Any]] = found[0]
    hit = table.get(id(frag))
    if hit is not None and hit[0] is frag:
        return hit[1]  # type: ignore[no-any-return]
    if isinstance(frag, Deferred):  # (known without its items; a placed one is kept so when it is pushed)
        table[id(frag)] = (frag, frag.extent)
        small[id(frag)] = (frag, frag.smallest)
        return frag.extent
    get = table.get
    # a fragment to visit (never a deferred one), or (its own items' box, its placed fragments) once they are pushed
    # to be visited first
    stack: list[Any] = [frag]
    push, pop = stack.append, stack.pop
    while stack:
        current = pop()
        if type(current) is tuple:  # its placed fragments' boxes are known: add them to its own
            current, box, least, subs = current
            if subs:  # its own box, then each placed fragment's moved, in order: min and max spelt out (as in
                have = box is not None  # _own_items_extent: each keeps the box so far unless the next is smaller)
                if have:
                    x0, y0, x1, y1 = box
                for dx, dy, sub in subs:
                    i = id(sub)
                    v = small[i][1]
                    if v < least:
                        least = v
                    b = table[i][1]
                    if b is not None:
                        b0, b1, b2, b3 = b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy
                        if not have:
                            x0, y0, x1, y1 = b0, b1, b2, b3
                            have = True
                        else:
                            x0, y0 = (b0 if b0 < x0 else x0), (b1 if b1 < y0 else y0)
                            x1, y1 = (b2 if b2 > x1 else x1), (b3 if b3 > y1 else y1)
                if have:
                    box = (x0, y0, x1, y1)
            table[id(current)] = (current, box)
            small[id(current)] = (current, least)
            continue
        i = id(current)
        known = get(i)
        if known is not None and known[0] is current:
            continue
        own, least, subs = _own_items_extent(current.items)
        if not subs:  # (a fragment placing none: its own values, without a second visit)
            table[i] = (current, own)
            small[i] = (current, least)
            continue
        push((current, own, least, subs))
        for _, _, sub in subs:
            i = id(sub)
            known = get(i)
            if known is None or known[0] is not sub:
                if isinstance(sub, Deferred):  # (known without its items: kept now rather than visited)
                    table[i] = (sub, sub.extent)
                    small[i] = (sub, sub.smallest)
                else:
                    push(sub)
    return table[id(frag)][1]  # type: ignore[no-any-return]


def _own_items_extent(items: list[Any]) -> tuple[tuple[float, float, float, float] | None, float, list[Placed]]:
    """The bounding box of ``items``' visible records (``None``: none), the smallest size of their non-blank text runs
    (:func:`_own_smallest`'s; ``inf``: none) and the fragments they place: the boxes' ``min`` and ``max`` spelt out
    (each keeps the box so far unless the next one is smaller, or larger)."""
    box = None
    least = float("inf")
    subs: list[Placed] = []
    for it in items:
        kind = type(it)
        if kind is Port or kind is Footprint:  # (the commonest items of a placed box's fragment: nothing visible)
            continue
        if kind is tuple:
            subs.append(it)
            continue
        if kind is Path or isinstance(it, Path):  # (the commonest visible item: _bounds's box)
            commands = it.commands
            c = commands[0]
            e = commands[1] if len(commands) == 2 and len(c) == 3 else None
            if e is not None and len(e) == 3:  # a straight run: two points, min and max of two spelt out (each the
                _, xa, ya = c  # first of equals, as min/max give)
                _, xb, yb = e
                b0, b2 = (xb, xa) if xb < xa else (xa, xb if xb > xa else xa)
                b1, b3 = (yb, ya) if yb < ya else (ya, yb if yb > ya else ya)
            elif e is not None and len(e) == 7:  # a bend (M, then C): its four points
                _, xa, ya = c
                _, xb, yb, xc, yc, xd, yd = e
                b0, b1, b2, b3 = min(xa, xb, xc, xd), min(ya, yb, yc, yd), max(xa, xb, xc, xd), max(ya, yb, yc, yd)
            else:  # (its coordinates read by slices)
                xs = [v for c in commands for v in c[1::2]]
                ys = [v for c in commands for v in c[2::2]]
                b0, b1, b2, b3 = min(xs), min(ys), max(xs), max(ys)
        elif kind is Text:  # (the other records of a box's pictogram: _bounds's boxes, spelt out by kind)
            for run in it.runs:
                if run.size < least and run.text.strip():
                    least = run.size
            b0, b1 = it.x, it.y - it.ascent
            b2, b3 = it.x + it.width, it.y + it.descent
        elif kind is Rect:
            b0, b1 = it.x, it.y
            b2, b3 = it.x + it.w, it.y + it.h
        elif kind is Circle:
            b0, b1, b2, b3 = it.cx - it.r, it.cy - it.r, it.cx + it.r, it.cy + it.r
        elif isinstance(it, tuple):  # (a placed fragment of a subclass of tuple: none is made, kept as the walk's)
            subs.append(it)
            continue
        else:
            if isinstance(it, Text):
                for run in it.runs:
                    if run.size < least and run.text.strip():
                        least = run.size
            b = _bounds(it)
            if b is None:
                continue
            b0, b1, b2, b3 = b
        if box is None:
            x0, y0, x1, y1 = b0, b1, b2, b3
            box = True
        else:
            if b0 < x0:
                x0 = b0
            if b1 < y0:
                y0 = b1
            if b2 > x1:
                x1 = b2
            if b3 > y1:
                y1 = b3
    return (None if box is None else (x0, y0, x1, y1)), least, subs


def _bounds(item: Item) -> tuple[float, float, float, float] | None:
    """The bounding box :func:`_hits_at` gives ``item`` in place (``None``: an invisible record)."""
    if isinstance(item, Text):
        return (item.x, item.y - item.ascent, item.x + item.width, item.y + item.descent)
    if isinstance(item, Path):
        xs = [c[k] for c in item.commands for k in range(1, len(c), 2)]
        ys = [c[k] for c in item.commands for k in range(2, len(c), 2)]
        return (min(xs), min(ys), max(xs), max(ys))
    if isinstance(item, Rect):
        return (item.x, item.y, item.x + item.w, item.y + item.h)
    if isinstance(item, Circle):
        return (item.cx - item.r, item.cy - item.r, item.cx + item.r, item.cy + item.r)
    if isinstance(item, Polygon):
        return (min(x for x, _ in item.points), min(y for _, y in item.points),
                max(x for x, _ in item.points), max(y for _, y in item.points))
    return None


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


def smallest_text(frag: Frag, default: float, memo: Memo | None = None) -> float:
    """The smallest size of any text run in ``frag`` (``default`` when it has no text); each placed fragment's is
    found once (``memo``: kept across calls, as the page layout's attempts place the same columns)."""
    return min(default, float(_memo_up(frag, {} if memo is None else memo, "smallest", _own_smallest)))


def _own_smallest(frag: Frag, table: dict[int, tuple[Frag, Any]]) -> float:
    """The smallest size of a non-blank text run among ``frag``'s items, its placed fragments' read from ``table``."""
    if isinstance(frag, Deferred):
        return frag.smallest
    smallest = float("inf")
    for it in frag.items:
        if type(it) is tuple:
            v = table[id(it[2])][1]
            if v < smallest:
                smallest = v
        elif isinstance(it, Text):
            for run in it.runs:
                if run.size < smallest and run.text.strip():
                    smallest = run.size
    return smallest
