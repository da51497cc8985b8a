"""Figures of a finished drawing as it would be printed: aspect ratio and the smallest text.

A drawing goes into a paper scaled to the column width (6.5 inches = 468 points) when it is
wider than that, and at its own size otherwise; the smallest text is then measured in points.

>>> import ncd
>>> fig = drawing_figures(ncd.render.layout(ncd.Identity.of("b m") >> ncd.Linear("m -> n")))
>>> fig.aspect < 3 and fig.min_label_pt >= 6 and fig.pages <= 1
True
"""

from __future__ import annotations

from dataclasses import dataclass

from ncd.render.model import Circle, Drawing, Path, Text

__all__ = ["COLUMN_PT", "MIN_PRINT_PT", "PAGE_PT", "Figures", "drawing_figures", "crossings", "crossing_points"]

#: A 6.5-inch column, in points.
COLUMN_PT = 468.0
#: The smallest text a printed drawing may have, in points.
MIN_PRINT_PT = 6.0
#: The height a printed drawing may have on one page, in points: a letter page's 11 inches less 1-inch margins.
PAGE_PT = 648.0


@dataclass(frozen=True)
class Figures:
    """``aspect`` = width / height; ``min_label_pt``: the smallest text run once printed in a column;
    ``print_height``: its height once printed there, in points (a page holds :data:`PAGE_PT`; :attr:`pages`)."""

    aspect: float
    min_label_pt: float
    print_scale: float
    print_height: float = 0.0

    @property
    def pages(self) -> float:
        """How many pages tall the printed drawing is (1 or less: it fits one page)."""
        return self.print_height / PAGE_PT


def drawing_figures(drawing: Drawing, column: float = COLUMN_PT) -> Figures:
    """The printed figures of ``drawing`` in a column ``column`` points wide."""
    scale = min(1.0, column / drawing.width) if drawing.width else 1.0
    sizes = [run.size for t in drawing.of(Text) for run in t.runs if run.text.strip()]
    smallest = min(sizes, default=float("inf")) * scale
    return Figures(drawing.width / drawing.height if drawing.height else float("inf"), smallest, scale,
                   drawing.height * scale)


def crossings(drawing: Drawing, *, free: bool = False) -> int:
    """How many times two wires cross in ``drawing`` (curves sampled; wires that meet at an end — a copy, a
    merge, a port — do not count).  In this notation a crossing says the axes are permuted, so a drawing of a
    diagram without a transpose should have none.  ``free=True`` counts only crossings of two wires that no box
    draws and that do not run into a dot (a box's own wiring — a transpose, an einsum, a copy of a tuple — and
    the wires a copy or a concatenation joins may cross; the layout's may not).

    >>> import ncd
    >>> crossings(ncd.render.layout(ncd.Identity.of("b c y x") >> ncd.Linear("c -> d")))
    0
    >>> crossings(ncd.render.layout(ncd.Identity.of("a b") >> ncd.Transpose("a b -> b a")))
    1
    """
    return len(crossing_points(drawing, free=free))


def crossing_points(drawing: Drawing, *, free: bool = False) -> list[tuple[float, float]]:
    """Where two wires of ``drawing`` cross (see :func:`crossings`)."""
    dots = {(round(c.cx), round(c.cy)) for c in drawing.of(Circle)} if free else set()
    lines = []
    for item in drawing.of(Path):
        if item.role != "wire" or (free and item.owner is not None):
            continue
        pts = list(item.samples(8))
        if len(pts) < 2 or (dots and any((round(x), round(y)) in dots for x, y in (pts[0], pts[-1]))):
            continue  # a wire into or out of a dot: a copy or a merge joins there
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        lines.append((min(xs), max(xs), min(ys), max(ys), pts))
    # candidates meet in a grid of 64-point cells (linear in the drawing's size: a row's wires meet their neighbours)
    grid: dict[tuple[int, int], list[int]] = {}
    for k, (x0, x1, y0, y1, _) in enumerate(lines):
        for cx in range(int(x0 // 64), int(x1 // 64) + 1):
            for cy in range(int(y0 // 64), int(y1 // 64) + 1):
                grid.setdefault((cx, cy), []).append(k)
    seen: set[tuple[int, int]] = set()
    found: list[tuple[float, float]] = []
    for members in grid.values():
        for m, i in enumerate(members):
            x0, x1, y0, y1, a = lines[i]
            for j in members[m + 1:]:
                u0, u1, v0, v1, b = lines[j]
                if u0 > x1 or u1 < x0 or v0 > y1 or v1 < y0 or (i, j) in seen:
                    continue
                seen.add((i, j))
                found.extend(_polylines_cross(a, b, (a[0], a[-1], b[0], b[-1])))
    return found


def _polylines_cross(a: list[tuple[float, float]], b: list[tuple[float, float]],
                     ends: tuple[tuple[float, float], ...]) -> list[tuple[float, float]]:
    found = []
    for p, q in zip(a, a[1:]):
        for r, s in zip(b, b[1:]):
            hit = _proper_intersection(p, q, r, s)
            if hit and all(abs(hit[0] - e[0]) + abs(hit[1] - e[1]) > 1.0 for e in ends):
                found.append(hit)
    return found


def _proper_intersection(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float],
                         s: tuple[float, float]) -> tuple[float, float] | None:
    """Where segments ``pq`` and ``rs`` cross at one point (overlapping, parallel segments do not cross)."""
    if max(p[0], q[0]) < min(r[0], s[0]) or max(r[0], s[0]) < min(p[0], q[0]):
        return None
    if max(p[1], q[1]) < min(r[1], s[1]) or max(r[1], s[1]) < min(p[1], q[1]):
        return None
    dx1, dy1, dx2, dy2 = q[0] - p[0], q[1] - p[1], s[0] - r[0], s[1] - r[1]
    den = dx1 * dy2 - dy1 * dx2
    if abs(den) < 1e-12:
        return None
    t = ((r[0] - p[0]) * dy2 - (r[1] - p[1]) * dx2) / den
    u = ((r[0] - p[0]) * dy1 - (r[1] - p[1]) * dx1) / den
    if 0.0 <= t < 1.0 and 0.0 <= u < 1.0:  # half-open: a crossing at a shared vertex counts once
        return (p[0] + t * dx1, p[1] + t * dy1)
    return None
