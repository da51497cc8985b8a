"""Fragments: the laid-out pieces a drawing is made of, and the geometry they share.

A :class:`Frag` has a width, a vertical extent, the heights of its input ports (at ``x = 0``)
and output ports (at ``x = w``), one list per segment, and its items (primitives, or other
fragments placed at an offset).  The helpers here compute where bends, separators and woven
wires go, and walk a finished fragment (its legend rows, the items it would flatten to).

>>> f = Frag(10.0, 0.0, 16.0, [[0.0, 16.0]], [[0.0], [16.0]])
>>> flat(f.outs), shifted(f.ins, 2.0)
([0.0, 16.0], [[2.0, 18.0]])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import sub
from typing import Any, Union

from ncd.ir.axes import Type
from ncd.ir.diagram import Weave
from ncd.render.model import _PATH_DEFAULTS, Item, Path, Port, Text, frozen_record

__all__ = ["Frag", "Deferred", "Ports", "Placed", "flat", "shifted"]

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


class PathStyle:
    """A path's fields other than its commands, shared by the paths of a kind a deferred fragment makes (its
    wires, arrows, overlines or separators): what a painter reads of them, and the record's fields."""

    __slots__ = ("fields", "fill", "stroke", "width", "dashed", "arrow")

    def __init__(self, **changes: Any) -> None:
        if not changes.keys() <= _PATH_DEFAULTS.keys():
            raise TypeError(f"PathStyle: no such fields of a Path: {sorted(changes.keys() - _PATH_DEFAULTS.keys())}")
        self.fields: dict[str, Any] = {**_PATH_DEFAULTS, **changes}
        self.fill: str | None = self.fields["fill"]
        self.stroke: str = self.fields["stroke"]
        self.width: float = self.fields["width"]
        self.dashed: bool = self.fields["dashed"]
        self.arrow: bool = self.fields["arrow"]


#: One item of a :class:`Deferred` fragment as its maker gives it, before any record is made (painters read these
#: directly: most of a page's wires, labels and arrows are painted once and read by nothing else):
#: ``(PATH, commands, style)`` a :class:`Path`; ``(RUN, x0, x1, y, style)`` the path ``M x0 y L x1 y`` (floats: most
#: wires); ``(LABEL, text, x, y)`` a wire's label, ``text`` typeset at the origin (its runs, width, ascent and descent);
#: ``(PORT, x, y)`` a boundary :class:`Port`.
Step = tuple[Any, ...]
PATH, LABEL, PORT, RUN = 0, 1, 2, 3
#: the styles of a deferred fragment's paths: wires, arrows (between a page's rows), labels' overlines, separators
WIRE = PathStyle()
ARROW = PathStyle(arrow=True)
OVERLINE = PathStyle(width=0.7, role="text")
SEPARATOR = PathStyle(dashed=True, width=0.8, role="separator")


def made(steps: Sequence[Step]) -> list[Union[Item, Placed]]:
    """The records of ``steps`` (a :class:`Deferred` fragment's items)."""
    out: list[Union[Item, Placed]] = []
    append = out.append
    for s in steps:
        tag = s[0]
        if tag == RUN:
            append(frozen_record(Path, {"commands": (("M", s[1], s[3]), ("L", s[2], s[3])), **s[4].fields}))
        elif tag == PATH:
            append(frozen_record(Path, {"commands": s[1], **s[2].fields}))
        elif tag == LABEL:
            t = s[1]
            append(frozen_record(Text, {"x": s[2], "y": s[3], "runs": t.runs, "width": t.width, "ascent": t.ascent,
                                        "descent": t.descent, "role": "label", "owner": None}))
        else:
            append(frozen_record(Port, {"x": s[1], "y": s[2], "box": -1}))
    return out


class Deferred(Frag):
    """A fragment that places no fragments and makes its items when they are first read: a page layout lays out and
    measures many columns and gaps in attempts it discards (the one-row drawing, narrower rows), and paints one.
    Its bounding box (``extent``, ``None``: no visible item) and smallest text size (``smallest``) are known
    without its items (:mod:`ncd.render.extents`).  ``make`` gives its items as :data:`Step` s, which
    the SVG painter paints without making the records when nothing has read the items (:meth:`unread_steps`)."""

    def __init__(self, w: float, top: float, bottom: float, ins: Ports, outs: Ports,
                 make: Callable[[], list[Step]], extent: tuple[float, float, float, float] | None,
                 smallest: float) -> None:
        super().__init__(w, top, bottom, ins, outs)
        self._items: list[Union[Item, Placed]] | None = None
        self._steps: list[Step] | None = None
        self._make: Callable[[], list[Step]] | None = make
        self.extent = extent
        self.smallest = smallest

    def _made_steps(self) -> list[Step]:
        if self._steps is None:
            assert self._make is not None
            self._steps, self._make = self._make(), None
        return self._steps

    @property
    def items(self) -> list[Union[Item, Placed]]:
        if self._items is None:
            self._items = made(self._made_steps())
            self._steps = None  # (read through the records from now on)
        return self._items

    @items.setter
    def items(self, value: list[Union[Item, Placed]]) -> None:
        self._items = value

    def unread_steps(self) -> list[Step] | None:
        """The steps of the items when nothing has read (or set, or added to) the items yet, else ``None`` (the
        records are then what the fragment holds)."""
        return self._made_steps() if self._items is None else None


def flat(ports: Ports) -> list[float]:
    if len(ports) == 1:  # (most ports: one segment, copied)
        return list(ports[0])
    return [y for seg in ports for y in seg]


def shifted(ports: Ports, dy: float) -> Ports:
    return [[y + dy for y in seg] for seg in ports]


def _edge_separators(frag: Frag, body: Frag, x0: float, dom: Type, cod: Type) -> None:
    """Dashed lines between segments across the margins between a fence's edge and its body."""
    for ports, seps, typ, xa, xb in ((body.ins, body.seps_in, dom, 0.0, x0), (body.outs, body.seps_out, cod, x0 + body.w, frag.w)):
        betweens = _betweens(ports, len(typ) - 1)
        for j in range(len(typ) - 1):
            y = seps.get(j, betweens[j])
            if y is not None and xb > xa:
                frag.add(Path.through([(xa, y), (xb, y)], dashed=True, width=0.8, role="separator"))


def _bend_width(dy: float, pitch: float) -> float:
    if dy < 1e-6:
        return 0.0
    return _round3(min(max(1.6 * pitch, 0.9 * dy), 5.0 * pitch))


def _wire(a: float, b: float, label_w: float | None, w: float) -> tuple[Any, ...]:
    """The commands of a gap's wire from height ``a`` at ``x = 0`` to ``b`` at ``x = w``, straight on to ``label_w``
    first (``None``: no bend): the commands :meth:`Path.through` makes of those points, without its general loop."""
    start = ("M", 0.0, float(a))
    if label_w is None:
        x0: float = 0.0
        commands: tuple[Any, ...] = (start,)
    else:
        x0 = label_w
        commands = (start, ("L", float(label_w), float(a)))
    if abs(b - a) < 1e-9:
        end: tuple[Any, ...] = ("L", float(w), float(b))
    else:
        mid = float((x0 + w) / 2)
        end = ("C", mid, float(a), mid, float(b), float(w), float(b))
    return commands + (end,)


def _straight_wires(runs: Sequence[tuple[float, float, float]]) -> Deferred | None:
    """Straight wires from ``x0`` to ``x1`` at height ``y`` for each ``(x0, x1, y)``, as a fragment to place at
    ``(0, 0)`` whose items are made when first read (``None``: no wires): the commands :meth:`Path.through` makes
    of ``[(x0, y), (x1, y)]``."""
    if not runs:
        return None

    def make() -> list[Step]:
        return [(RUN, float(x0), float(x1), float(y), WIRE) for x0, x1, y in runs]

    xs = [x for x0, x1, _ in runs for x in (x0, x1)]
    ys = [y for _, _, y in runs]
    return Deferred(0.0, 0.0, 0.0, [], [], make, (min(xs), min(ys), max(xs), max(ys)), float("inf"))


def _arrows(runs: Sequence[tuple[float, float, float, float, bool]]) -> Deferred | None:
    """An arrow from ``(xa, ya)`` to ``(xb, yb)`` for each ``(xa, ya, xb, yb, start)``, each followed by a boundary
    port at its start (``start``) or end, as a fragment to place at ``(0, 0)`` whose items are made when first read
    (``None``: no arrows): a page's rows are joined by one per wire, in every attempt at the page."""
    if not runs:
        return None

    def make() -> list[Step]:
        items: list[Step] = []
        append = items.append
        for xa, ya, xb, yb, start in runs:  # Path.through([(xa, ya), (xb, yb)], arrow=True) and a Port, spelled out
            x0, y0, x1, y1 = float(xa), float(ya), float(xb), float(yb)
            if abs(yb - ya) < 1e-9:
                commands: tuple[Any, ...] = (("M", x0, y0), ("L", x1, y1))
            else:
                mid = float((xa + xb) / 2)
                commands = (("M", x0, y0), ("C", mid, y0, mid, y1, x1, y1))
            append((PATH, commands, ARROW))
            append((PORT, xa, ya) if start else (PORT, xb, yb))
        return items

    xs = [x for xa, _, xb, _, _ in runs for x in (xa, xb)]  # (a bend's control points lie between its ends)
    ys = [y for _, ya, _, yb, _ in runs for y in (ya, yb)]
    return Deferred(0.0, 0.0, 0.0, [], [], make, (min(xs), min(ys), max(xs), max(ys)), float("inf"))


def _betweens(ports: Ports, count: int, clearance: float = 0.0) -> list[float | None]:
    """Where the dashed line between segments ``j`` and ``j+1`` runs, for every ``j < count`` (``None``: no wire
    above or below): nearer the upper wire, and above the lower wire's label (``clearance``: how far a label
    reaches above its wire).  One pass over the ports: a wide composite has thousands of segments."""
    ups: list[float | None] = []  # the lowest wire of segments 0..j
    last: float | None = None
    for j in range(count):
        if j < len(ports) and ports[j]:
            last = ports[j][-1]
        ups.append(last)
    lows: list[float | None] = [None] * count  # the highest wire of segments j+1..
    first: float | None = None
    for j in range(len(ports) - 1, 0, -1):
        if ports[j]:
            first = ports[j][0]
        if j - 1 < count:
            lows[j - 1] = first
    out: list[float | None] = []
    for y_up, y_low in zip(ups, lows):
        if y_up is None or y_low is None:
            out.append(None)
            continue
        y = y_up + 0.4 * (y_low - y_up)
        if clearance and y > y_low - clearance:
            y = max((y_up + y_low - clearance) / 2, y_up + 1.0)
        out.append(y)
    return out


def _align(outs: Ports, ins: Ports) -> float:
    """The vertical shift of the next column that keeps the most wires straight."""
    shifts: list[float] = list(map(sub, flat(outs), flat(ins)))
    if not shifts:
        return 0.0
    # the usual case: one shift keeps every wire straight (every difference equal: none rounded)
    if shifts.count(shifts[0]) == len(shifts):
        return _round3(shifts[0])
    # each distinct difference rounded once (rounding to digits is the dear part: the wires of a segment move alike),
    # the rounded shifts counted in the order they first occur, as counting each wire's rounded shift would
    counts: dict[float, int] = {}
    for d in dict.fromkeys(shifts):
        r = _round3(d)
        counts[r] = counts.get(r, 0) + shifts.count(d)
    if len(counts) == 1:  # (every difference rounds alike: the first's, _round3(shifts[0]))
        return next(iter(counts))
    best = max(counts.values())
    return min((o for o, c in counts.items() if c == best), key=lambda o: (abs(o), o))


def _round3(v: float) -> float:
    """``round(v, 3)``, without its decimal conversion where ``v`` has at most three decimals (most heights and shifts:
    multiples of a point's fraction): ``y = v * 1000`` an integer below 2**43 means ``v`` is within a millionth of
    ``y / 1000`` (the product is off by half a unit of ``y`` at most), which is therefore the decimal ``round`` rounds
    to, and the division gives the float nearest it, as ``round`` does (a zero keeps its sign)."""
    if type(v) is float:  # (an int, or another number, rounds as round rounds it)
        y = v * 1000.0
        if y.is_integer() and -8.0e12 < y < 8.0e12:
            return y / 1000.0
    return round(v, 3)


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
        ys.append(_round3(want if n == 0 else max(want, ys[-1] + step)))
    out: Ports = []
    n = 0
    for seg in entries:
        out.append(ys[n:n + len(seg)])
        n += len(seg)
    return out, targets


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
        if not isinstance(current, Deferred):  # (it places none: its items need not be made)
            for it in reversed(current.items):
                if type(it) is tuple:
                    stack.append((it[2], False))
    return tuple(dict.fromkeys(out))
