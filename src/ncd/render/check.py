"""Layout invariants, checked on a finished :class:`~ncd.render.model.Drawing`.

* no box (footprint) overlaps another box;
* no text overlaps another text or a box it does not belong to;
* no dashed separator runs through a text;
* no wire is drawn through a text (a label, a box's name, a legend);
* text drawn in a box stays inside it (and inside its circle);
* every wire starts and ends on a port, a junction dot, an arrow tip or another wire's end,
  and every port has a wire;
* no wire passes through a box it does not belong to.
* the legend gives each symbol one value, and every symbol it defines is drawn
  (:func:`ncd.render.legend.legend_problems`).

>>> import ncd
>>> problems(ncd.render.layout(ncd.Identity.of("b m") >> ncd.Linear("m -> n")))
[]
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

from ncd.render.legend import legend_problems
from ncd.render.model import Circle, Drawing, Footprint, Path, Polygon, Port, Text

__all__ = ["problems"]

Box4 = tuple[float, float, float, float]
EPS = 0.6


def _overlap(a: Box4, b: Box4, eps: float = EPS) -> bool:
    return a[0] < b[2] - eps and b[0] < a[2] - eps and a[1] < b[3] - eps and b[1] < a[3] - eps


def _cells(b: Box4, size: float) -> Iterator[tuple[int, int]]:
    for i in range(int(b[0] // size), int(b[2] // size) + 1):
        for j in range(int(b[1] // size), int(b[3] // size) + 1):
            yield i, j


def _pairs(boxes: list[tuple[Box4, object]], size: float = 64.0) -> Iterable[tuple[int, int]]:
    """Index pairs of boxes that share a grid cell (candidates for overlap), each once."""
    grid: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k, (b, _) in enumerate(boxes):
        for cell in _cells(b, size):
            grid[cell].append(k)
    seen: set[tuple[int, int]] = set()
    for members in grid.values():
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                pair = (members[x], members[y])
                if pair not in seen:
                    seen.add(pair)
                    yield pair


def _key(x: float, y: float) -> tuple[int, int]:
    # floor(v + 0.5 + ε), not round(): round() sends 2840.5 and 2840.5000000000007 to different keys
    return (math.floor(x * 10 + 0.5 + 1e-6), math.floor(y * 10 + 0.5 + 1e-6))


def problems(drawing: Drawing, text_bounds: Sequence[Box4 | None] | None = None) -> list[str]:
    """Every violated invariant, as readable sentences (empty when the layout is sound).

    ``text_bounds``: the box of each text (in ``drawing.of(Text)`` order) as measured elsewhere, e.g. the
    ink a browser drew (``None`` for a text with no ink); by default the layout's own boxes.

    Linear in the drawing's size: shapes meet only through a grid of cells, and the garbage collector is paused
    as in layout (its passes over a large process made a 150k-item drawing take minutes)."""
    from ncd.render.layout import no_collector

    with no_collector():
        return _problems(drawing, text_bounds)


def _problems(drawing: Drawing, text_bounds: Sequence[Box4 | None] | None) -> list[str]:
    found: list[str] = []
    feet = [f for f in drawing.footprints]
    texts = [t for t in drawing.of(Text)]
    wires = [p for p in drawing.of(Path) if p.role == "wire"]
    if text_bounds is None:
        boxes: dict[int, Box4] = {id(t): t.bounds for t in texts}
    else:
        boxes = {id(t): b for t, b in zip(texts, text_bounds) if b is not None}
        texts = [t for t in texts if id(t) in boxes]

    shapes: list[tuple[Box4, object]] = [(f.bounds, f) for f in feet] + [(boxes[id(t)], t) for t in texts]
    for i, j in _pairs(shapes):
        (a, x), (b, y) = shapes[i], shapes[j]
        if not _overlap(a, b):
            continue
        if isinstance(x, Footprint) and isinstance(y, Footprint):
            found.append(f"box {x.name!r} overlaps box {y.name!r}")
        elif isinstance(x, Text) and isinstance(y, Text):
            if x.owner is None or x.owner != y.owner:
                found.append(f"text {x.string!r} overlaps text {y.string!r}")
        else:
            text, foot = (x, y) if isinstance(x, Text) else (y, x)
            assert isinstance(text, Text) and isinstance(foot, Footprint)
            if text.owner != foot.id:
                found.append(f"text {text.string!r} overlaps box {foot.name!r}")

    found.extend(_separators_through_text(drawing, texts, boxes))
    found.extend(_wires_through_text(wires, texts, boxes))
    found.extend(_glyph_overflow(drawing, feet, texts, boxes))
    found.extend(legend_problems(drawing))

    grid: dict[tuple[int, int], list[Footprint]] = defaultdict(list)
    for f in feet:
        for cell in _cells(f.bounds, 64.0):
            grid[cell].append(f)
    for w in wires:
        for x, y in w.samples():
            for f in grid.get((int(x // 64.0), int(y // 64.0)), ()):
                if f.id != w.owner and f.x + EPS < x < f.x + f.w - EPS and f.y + EPS < y < f.y + f.h - EPS:
                    found.append(f"a wire ending at {w.ends[1]} passes through box {f.name!r} at ({x:.1f}, {y:.1f})")
                    break
            else:
                continue
            break

    ends: dict[tuple[int, int], int] = defaultdict(int)
    for w in wires:
        for x, y in w.ends:
            ends[_key(x, y)] += 1
    anchors: set[tuple[int, int]] = set()
    for p in drawing.of(Port):
        anchors.add(_key(p.x, p.y))
    for c in drawing.of(Circle):
        anchors.add(_key(c.cx, c.cy))
    for g in drawing.of(Polygon):
        anchors.update(_key(x, y) for x, y in g.points)
        xs = [x for x, _ in g.points]
        ys = [y for _, y in g.points]
        anchors.add(_key(min(xs) + 0.0, (min(ys) + max(ys)) / 2))
        anchors.add(_key(max(xs), (min(ys) + max(ys)) / 2))
    for w in wires:
        for x, y in w.ends:
            k = _key(x, y)
            if ends.get(k, 0) < 2 and k not in anchors and not _near(k, anchors):
                found.append(f"a wire end at ({x:.1f}, {y:.1f}) is connected to nothing")
    for p in drawing.of(Port):
        k = _key(p.x, p.y)
        if ends.get(k, 0) == 0 and not _near(k, ends):
            found.append(f"port at ({p.x:.1f}, {p.y:.1f}) of box {p.box} has no wire")
    return found


def _separators_through_text(drawing: Drawing, texts: list[Text], boxes: dict[int, Box4]) -> list[str]:
    """A dashed tuple separator must not run through a label."""
    out: list[str] = []
    grid: dict[tuple[int, int], list[Text]] = defaultdict(list)
    for t in texts:
        for cell in _cells(boxes[id(t)], 64.0):
            grid[cell].append(t)
    for sep in drawing.of(Path):
        if sep.role != "separator":
            continue
        hit: set[int] = set()
        for x, y in sep.samples(24):
            for t in grid.get((int(x // 64.0), int(y // 64.0)), ()):
                b = boxes[id(t)]
                if id(t) not in hit and b[0] + EPS < x < b[2] - EPS and b[1] + EPS < y < b[3] - EPS:
                    hit.add(id(t))
                    out.append(f"a dashed separator runs through text {t.string!r} at ({x:.1f}, {y:.1f})")
    return out


def _segments(path: Path) -> Iterator[tuple[float, float, float, float]]:
    """The straight pieces of a path: a straight run as itself, a cubic as 16 chords."""
    x = y = 0.0
    start = (0.0, 0.0)
    for c in path.commands:
        if c[0] == "M":
            x, y = start = c[1], c[2]
        elif c[0] == "L":
            yield x, y, c[1], c[2]
            x, y = c[1], c[2]
        elif c[0] == "C":
            px, py = x, y
            for k in range(1, 17):
                t = k / 16
                u = 1 - t
                qx = u**3 * x + 3 * u * u * t * c[1] + 3 * u * t * t * c[3] + t**3 * c[5]
                qy = u**3 * y + 3 * u * u * t * c[2] + 3 * u * t * t * c[4] + t**3 * c[6]
                yield px, py, qx, qy
                px, py = qx, qy
            x, y = c[5], c[6]
        elif c[0] == "Z":
            yield x, y, start[0], start[1]
            x, y = start


def _crosses(seg: tuple[float, float, float, float], b: Box4) -> bool:
    """Whether the segment enters the open box ``b`` (Liang–Barsky clipping)."""
    x0, y0, x1, y1 = seg
    dx, dy = x1 - x0, y1 - y0
    lo, hi = 0.0, 1.0
    for p, q in ((-dx, x0 - b[0]), (dx, b[2] - x0), (-dy, y0 - b[1]), (dy, b[3] - y0)):
        if abs(p) < 1e-12:
            if q <= 0:
                return False
            continue
        t = q / p
        if p < 0:
            lo = max(lo, t)
        else:
            hi = min(hi, t)
        if lo >= hi:
            return False
    return True


def _wires_through_text(wires: list[Path], texts: list[Text], boxes: dict[int, Box4]) -> list[str]:
    """No wire is drawn through a text: its glyph box (shrunk by ``EPS`` for the wire's half stroke) stays clear.

    Each straight piece of a wire is tested only against the texts whose box meets its bounding box, and first by
    bounding box, so the check is linear in the drawing's size: a piece a few grid cells tall finds them in the cells
    it covers; a taller one (a fan of copies' wires running down a page of labels) in the occupied
    :data:`_COLUMN`-wide columns of its ``x`` range, each sorted by the texts' tops, and tests them in the order the
    cells would give (:class:`_TextIndex`)."""
    out: list[str] = []
    index = _TextIndex(texts, boxes)
    if not index.inner:
        return out
    grid = index.grid
    hit: set[int] = set()
    for w in wires:
        for seg in _segments(w):
            x0, x1 = (seg[0], seg[2]) if seg[0] <= seg[2] else (seg[2], seg[0])
            y0, y1 = (seg[1], seg[3]) if seg[1] <= seg[3] else (seg[3], seg[1])
            for cell in _cells((x0, y0, x1, y1), 64.0) if y1 - y0 < _TALL else (None,):
                for b, t in grid.get(cell, ()) if cell is not None else index.meeting(x0, y0, x1, y1):
                    if x1 <= b[0] or x0 >= b[2] or y1 <= b[1] or y0 >= b[3] or id(t) in hit:
                        continue
                    if _crosses(seg, b):
                        hit.add(id(t))
                        out.append(f"a wire ending at ({w.ends[1][0]:.1f}, {w.ends[1][1]:.1f}) runs through text "
                                   f"{t.string!r} at ({seg[0]:.1f}, {seg[1]:.1f})")
    return out


#: a wire's piece this tall or taller finds its texts by :meth:`_TextIndex.meeting` (either way finds the same)
_TALL = 192.0
#: the width of :class:`_TextIndex`'s columns
_COLUMN = 8.0


class _TextIndex:
    """The texts' glyph boxes shrunk by ``EPS`` (``inner``: those left with an inside, in the texts' order, each with
    its text), in a grid of 64-point cells (``grid``, each cell's in that order) and in columns :data:`_COLUMN` wide
    (each sorted by the boxes' tops, with the tallest box's height): the texts a piece of wire's bounding box meets."""

    def __init__(self, texts: list[Text], boxes: dict[int, Box4]) -> None:
        self.inner: list[tuple[Box4, Text]] = []
        self.grid: dict[tuple[int, int], list[tuple[Box4, Text]]] = defaultdict(list)
        for t in texts:
            b = boxes[id(t)]
            if b[2] - b[0] > 2 * EPS and b[3] - b[1] > 2 * EPS:
                inner = (b[0] + EPS, b[1] + EPS, b[2] - EPS, b[3] - EPS)
                self.inner.append((inner, t))
                for cell in _cells(inner, 64.0):
                    self.grid[cell].append((inner, t))
        self._columns: dict[int, tuple[list[float], list[int], float]] | None = None  # (made when first asked)
        self._keys: list[int] = []

    def _index(self) -> dict[int, tuple[list[float], list[int], float]]:
        if self._columns is None:
            members: dict[int, list[tuple[float, int]]] = defaultdict(list)
            for k, (b, _) in enumerate(self.inner):
                for c in range(int(b[0] // _COLUMN), int(b[2] // _COLUMN) + 1):
                    members[c].append((b[1], k))
            self._columns = {}
            for c, found in members.items():
                found.sort()
                tall = max(self.inner[k][0][3] - top for top, k in found)
                self._columns[c] = ([top for top, _ in found], [k for _, k in found], tall)
            self._keys = sorted(self._columns)
        return self._columns

    def meeting(self, x0: float, y0: float, x1: float, y1: float) -> list[tuple[Box4, Text]]:
        """The boxes (of ``inner``, with their texts) that may meet the box ``(x0, y0, x1, y1)``: every box that meets
        it openly, and some that do not; in the order the 64-point cells it covers would meet them (row by row of
        cells, each cell's boxes in order: its first cell shared with the box, then its index)."""
        columns = self._index()
        keys = self._keys
        found: set[int] = set()
        for c in keys[bisect_left(keys, int(x0 // _COLUMN)):bisect_right(keys, int(x1 // _COLUMN))]:
            tops, ks, tall = columns[c]
            found.update(ks[bisect_left(tops, y0 - tall - 1.0):bisect_right(tops, y1)])
        i0, j0 = int(x0 // 64.0), int(y0 // 64.0)
        inner = self.inner
        order = sorted(found, key=lambda k: (max(i0, int(inner[k][0][0] // 64.0)), max(j0, int(inner[k][0][1] // 64.0)),
                                             k))
        return [inner[k] for k in order]


def _glyph_overflow(drawing: Drawing, feet: list[Footprint], texts: list[Text], boxes: dict[int, Box4]) -> list[str]:
    """Text drawn in a box (its ``owner``) stays inside it: inside the footprint, and inside its circle if it has one.
    A memoised column drawn in several places (the same scan body inlined twice) repeats its owners' ids: a text is
    held to the placement of its owner nearest to it."""
    out: list[str] = []
    by_id: dict[int, list[Footprint]] = defaultdict(list)
    for f in feet:
        by_id[f.id].append(f)
    circles: dict[int, list[Circle]] = defaultdict(list)
    for circle in drawing.of(Circle):
        if circle.owner is not None and circle.role == "glyph":
            circles[circle.owner].append(circle)
    for t in texts:
        if t.owner is None or t.role == "label":
            continue
        b = boxes[id(t)]
        mx, my = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        foot = min(by_id.get(t.owner, ()), key=lambda f: abs(f.x + f.w / 2 - mx) + abs(f.y + f.h / 2 - my),
                   default=None)
        if foot is not None and not (foot.x - EPS <= b[0] and b[2] <= foot.x + foot.w + EPS
                                     and foot.y - EPS <= b[1] and b[3] <= foot.y + foot.h + EPS):
            out.append(f"text {t.string!r} spills out of box {foot.name!r}")
            continue
        c = min(circles.get(t.owner, ()), key=lambda k: abs(k.cx - mx) + abs(k.cy - my), default=None)
        if c is not None:
            dy = max(abs(b[1] - c.cy), abs(b[3] - c.cy))
            half = math.sqrt(max(c.r * c.r - dy * dy, 0.0))
            if b[0] < c.cx - half - EPS or b[2] > c.cx + half + EPS:
                out.append(f"text {t.string!r} spills out of its circle")
    return out


def _near(k: tuple[int, int], pool: Iterable[tuple[int, int]] | dict[tuple[int, int], int]) -> bool:
    x, y = k
    return any((x + dx, y + dy) in pool for dx in (-1, 0, 1) for dy in (-1, 0, 1))
