"""Layout invariants, checked on a finished :class:`~ncd.render.model.Drawing`.

* no box (footprint) overlaps another box;
* no text overlaps another text or a box it does not belong to;
* every wire starts and ends on a port, a junction dot, an arrow tip or another wire's end,
  and every port has a wire;
* no wire passes through a box it does not belong to.

>>> import ncd
>>> problems(ncd.render.layout(ncd.Identity.of("b m") >> ncd.Linear("m -> n")))
[]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

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
    return (round(x * 10), round(y * 10))


def problems(drawing: Drawing) -> list[str]:
    """Every violated invariant, as readable sentences (empty when the layout is sound)."""
    found: list[str] = []
    feet = [f for f in drawing.footprints]
    texts = [t for t in drawing.of(Text)]
    wires = [p for p in drawing.of(Path) if p.role == "wire"]

    shapes: list[tuple[Box4, object]] = [(f.bounds, f) for f in feet] + [(t.bounds, t) for t in texts]
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
            if text.owner != foot.id:  # type: ignore[union-attr]
                found.append(f"text {text.string!r} overlaps box {foot.name!r}")  # type: ignore[union-attr]

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


def _near(k: tuple[int, int], pool: Iterable[tuple[int, int]] | dict) -> bool:
    x, y = k
    return any((x + dx, y + dy) in pool for dx in (-1, 0, 1) for dy in (-1, 0, 1))
