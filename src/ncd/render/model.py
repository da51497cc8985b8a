"""The backend-free drawing: positioned primitives that painters turn into SVG or TikZ.

Coordinates are in points (1/72 inch), ``y`` grows downwards.  Every primitive carries a
``role`` (what it stands for, used by the layout invariants) and, for things drawn inside
a box, the ``owner`` id of that box.  Painters read these records and decide nothing.

>>> p = Path.through([(0, 0), (10, 0), (20, 5)])
>>> p.commands[0], p.commands[-1][0]
(('M', 0.0, 0.0), 'C')
>>> Text.plain(0, 10, "m").width > 0
True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import MISSING, dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, Literal, TypeVar, Union

__all__ = ["Run", "Text", "Path", "Rect", "Polygon", "Circle", "Footprint", "Port", "Drawing", "Item", "text_width"]

Role = Literal["wire", "separator", "box", "glyph", "fence", "legend", "label", "title", "text", "paren", "dot", "shadow"]
_I = TypeVar("_I")
Command = tuple[Any, ...]  # ('M', x, y) | ('L', x, y) | ('C', x1, y1, x2, y2, x, y) | ('Z',)

def _with(item: _I, **changes: Any) -> _I:
    """A copy of a frozen record with some fields changed (``dataclasses.replace`` without re-running ``__init__``:
    moving a drawing copies every item, and this is the hot path of laying out large diagrams)."""
    new = object.__new__(type(item))
    fields = new.__dict__
    fields.update(item.__dict__)
    fields.update(changes)
    return new


def frozen_record(cls: type[_I], values: dict[str, Any]) -> _I:
    """A frozen record made from all its fields (in declaration order) without running ``__init__``, whose frozen
    assignments cost a call per field: the layout makes one per wire, label and box."""
    new = object.__new__(cls)
    new.__dict__.update(values)
    return new


def _plain_init(cls: type[_I]) -> type[_I]:
    """``cls`` (a frozen dataclass) with an ``__init__`` of the same signature that writes the fields into the
    instance's ``__dict__`` instead of one ``object.__setattr__`` call per field (what a frozen dataclass's own does):
    half the cost, and the layout makes a record per wire end, box and label.  Equality, hashing, ``repr``, pickling
    and the refusal of assignments are the dataclass's, unchanged."""
    params, body, defaults = [], [], {}
    for f in dataclass_fields(cls):  # type: ignore[arg-type]
        if f.default_factory is not MISSING or not f.init:  # pragma: no cover - no record has one
            raise TypeError(f"{cls.__name__}.{f.name}: only plain fields")
        if f.default is MISSING:
            params.append(f.name)
        else:
            defaults[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    fields[{f.name!r}] = {f.name}\n")
    namespace: dict[str, Any] = {}
    exec(f"def __init__(self, {', '.join(params)}):\n    fields = self.__dict__\n{''.join(body)}", defaults, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


def text_width(text: str, size: float, bold: bool = False, italic: bool = False, serif: bool = False) -> float:
    """The advance width of ``text`` in the face it is drawn in, from the bundled font's own metrics
    (:mod:`ncd.render.fonts`); characters the text face lacks are measured in the symbols face."""
    from ncd.render.fonts import advance, face_for

    return advance(text, face_for(bold, italic, serif), size)


@_plain_init
@dataclass(frozen=True)
class Run:
    """A piece of text with one style, placed at ``dx, dy`` from its :class:`Text`'s anchor."""

    text: str
    dx: float
    dy: float
    size: float
    italic: bool = False
    bold: bool = False
    serif: bool = False
    symbol: bool = False  # drawn from a symbol font (★, ⊙, 𝔼, ...) that the text font lacks
    title: str = ""  # the whole text of an elided label (the SVG's <title>: a tooltip)


@_plain_init
@dataclass(frozen=True)
class Text:
    """Text whose first run starts at ``(x, y)`` on the baseline; the box ``width``×(``ascent``+``descent``) bounds it."""

    x: float
    y: float
    runs: tuple[Run, ...]
    width: float
    ascent: float
    descent: float
    role: Role = "label"
    owner: int | None = None

    @staticmethod
    def plain(x: float, y: float, text: str, size: float = 11.0, *, bold: bool = False, role: Role = "label",
              owner: int | None = None, serif: bool = False, italic: bool = False) -> Text:
        w = text_width(text, size, bold, italic, serif)
        return Text(x, y, (Run(text, 0.0, 0.0, size, italic, bold, serif),), w, 0.72 * size, 0.25 * size, role, owner)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x, self.y - self.ascent, self.x + self.width, self.y + self.descent)

    def moved(self, dx: float, dy: float) -> Text:
        return _with(self, x=self.x + dx, y=self.y + dy)

    @property
    def string(self) -> str:
        return "".join(r.text for r in self.runs)


@_plain_init
@dataclass(frozen=True)
class Path:
    """A stroked (optionally filled) path of move/line/cubic commands."""

    commands: tuple[Command, ...]
    width: float = 0.9
    stroke: str = "#222222"
    fill: str | None = None
    dashed: bool = False
    arrow: bool = False
    role: Role = "wire"
    owner: int | None = None

    @staticmethod
    def through(points: Sequence[tuple[float, float]], **style: object) -> Path:
        """Points joined by straight runs where ``y`` is equal and smooth S-bends (horizontal tangents) where it changes."""
        commands = through_commands(points)
        if not style:
            return frozen_record(Path, {"commands": commands, **_PATH_DEFAULTS})
        if not style.keys() <= _PATH_DEFAULTS.keys():
            return Path(commands, **style)  # type: ignore[arg-type]  # (raises, naming the unknown field)
        return frozen_record(Path, {"commands": commands, **_PATH_DEFAULTS, **style})

    def moved(self, dx: float, dy: float) -> Path:
        out: list[Command] = []
        for c in self.commands:
            if len(c) == 3:
                out.append((c[0], c[1] + dx, c[2] + dy))
            elif len(c) == 7:
                out.append((c[0], c[1] + dx, c[2] + dy, c[3] + dx, c[4] + dy, c[5] + dx, c[6] + dy))
            else:
                out.append((c[0], *(v + (dx if i % 2 == 0 else dy) for i, v in enumerate(c[1:]))))
        return _with(self, commands=tuple(out))

    def samples(self, per_curve: int = 12) -> Iterator[tuple[float, float]]:
        """Points along the path (curves sampled), for geometric checks."""
        x = y = 0.0
        start = (0.0, 0.0)
        for c in self.commands:
            if c[0] == "M":
                x, y = c[1], c[2]
                start = (x, y)
                yield x, y
            elif c[0] == "L":
                for k in range(1, per_curve + 1):
                    t = k / per_curve
                    yield x + (c[1] - x) * t, y + (c[2] - y) * t
                x, y = c[1], c[2]
            elif c[0] == "C":
                for k in range(1, per_curve + 1):
                    t = k / per_curve
                    u = 1 - t
                    yield (u**3 * x + 3 * u * u * t * c[1] + 3 * u * t * t * c[3] + t**3 * c[5],
                           u**3 * y + 3 * u * u * t * c[2] + 3 * u * t * t * c[4] + t**3 * c[6])
                x, y = c[5], c[6]
            elif c[0] == "Z":
                x, y = start

    @property
    def ends(self) -> tuple[tuple[float, float], tuple[float, float]]:
        first = self.commands[0]
        last = self.commands[-1]
        return (first[1], first[2]), (last[-2], last[-1])


#: :class:`Path`'s fields after ``commands`` and their defaults, in declaration order
def through_commands(points: Sequence[tuple[float, float]]) -> tuple[Command, ...]:
    """The commands of :meth:`Path.through` (points joined by straight runs where ``y`` is equal and smooth S-bends
    where it changes), without the record."""
    commands: tuple[Command, ...]
    if len(points) == 2:  # (most paths: one run or one bend, without the loop)
        (x0, y0), (x1, y1) = points
        if abs(y1 - y0) < 1e-9:
            commands = (("M", float(x0), float(y0)), ("L", float(x1), float(y1)))
        else:
            mid = float((x0 + x1) / 2)
            commands = (("M", float(x0), float(y0)), ("C", mid, float(y0), mid, float(y1), float(x1), float(y1)))
    else:
        (x0, y0), *rest = points
        made: list[Command] = [("M", float(x0), float(y0))]
        for x1, y1 in rest:
            if abs(y1 - y0) < 1e-9:
                made.append(("L", float(x1), float(y1)))
            else:
                mid = (x0 + x1) / 2
                made.append(("C", float(mid), float(y0), float(mid), float(y1), float(x1), float(y1)))
            x0, y0 = x1, y1
        commands = tuple(made)
    return commands


_PATH_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclass_fields(Path) if f.name != "commands"}


@_plain_init
@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str | None = None
    stroke: str | None = "#222222"
    width: float = 0.9
    radius: float = 0.0
    role: Role = "box"
    owner: int | None = None
    opacity: float = 1.0

    def moved(self, dx: float, dy: float) -> Rect:
        return _with(self, x=self.x + dx, y=self.y + dy)


@_plain_init
@dataclass(frozen=True)
class Polygon:
    points: tuple[tuple[float, float], ...]
    fill: str | None = None
    stroke: str | None = "#222222"
    width: float = 0.9
    role: Role = "glyph"
    owner: int | None = None

    def moved(self, dx: float, dy: float) -> Polygon:
        return _with(self, points=tuple((x + dx, y + dy) for x, y in self.points))


@_plain_init
@dataclass(frozen=True)
class Circle:
    cx: float
    cy: float
    r: float
    fill: str | None = "#222222"
    stroke: str | None = None
    width: float = 0.9
    role: Role = "dot"
    owner: int | None = None

    def moved(self, dx: float, dy: float) -> Circle:
        return _with(self, cx=self.cx + dx, cy=self.cy + dy)


@_plain_init
@dataclass(frozen=True)
class Footprint:
    """The area a box (or glyph, or wiring) occupies: wires it does not own must stay out of it."""

    x: float
    y: float
    w: float
    h: float
    id: int
    kind: str
    name: str = ""

    def moved(self, dx: float, dy: float) -> Footprint:
        return _with(self, x=self.x + dx, y=self.y + dy)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)


@_plain_init
@dataclass(frozen=True)
class Port:
    """Where a wire meets a box (``box`` id) or the diagram's boundary (``box`` = -1)."""

    x: float
    y: float
    box: int

    def moved(self, dx: float, dy: float) -> Port:
        return _with(self, x=self.x + dx, y=self.y + dy)


Item = Union[Text, Path, Rect, Polygon, Circle, Footprint, Port]
_T = TypeVar("_T")


#: A tree of placed items: a node with ``items``, each an :data:`Item` or ``(dx, dy, node)`` (a node placed at
#: ``(dx, dy)`` from its parent); the layout's fragments are such nodes, a fragment placed many times shared.
Tree = Any


class Drawing:
    """A finished layout: ``width`` × ``height`` points of primitives, painted in order.

    A layout hands over its body as a tree of placed fragments (``tree``: a node and its offset) after its own
    positioned items (``front``: the title and the legend); ``items`` lists them all moved into place when first
    read, and :func:`~ncd.render.svg.paint_svg` paints the tree without making those copies.

    >>> class Node:
    ...     def __init__(self, items): self.items = items
    >>> d = Drawing(30, 20, front=[Rect(0, 0, 2, 2)], tree=(Node([Port(1, 2, -1), (10, 0, Node([Port(1, 2, 3)]))]), 5, 5))
    >>> [(type(i).__name__, i.x, i.y) for i in d.items]
    [('Rect', 0, 0), ('Port', 6, 7), ('Port', 16, 7)]
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, width: float, height: float, items: list[Item] | None = None,
                 legend: tuple[tuple[str, str], ...] = (), *, front: Sequence[Item] = (),
                 tree: tuple[Tree, float, float] | None = None) -> None:
        self.width = width
        self.height = height
        #: the legend's rows ``(symbol, value)``, as the legend box shows them
        self.legend = legend
        self.front = list(front)
        self.tree = tree
        self._items: list[Item] | None = items if items is not None else (None if tree is not None else self.front)

    @property
    def items(self) -> list[Item]:
        """Every primitive in painting order, in place (the tree's made on first reading)."""
        if self._items is None:
            out = list(self.front)
            if self.tree is not None:
                flatten(*self.tree, out)
            self._items = out
        return self._items

    @items.setter
    def items(self, items: list[Item]) -> None:
        self._items = items

    @property
    def made(self) -> bool:
        """Whether ``items`` has been made (and may have been changed): a painter then reads it, not the tree."""
        return self._items is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Drawing):
            return NotImplemented
        return (self.width, self.height, self.items, self.legend) == (other.width, other.height, other.items, other.legend)

    def __repr__(self) -> str:
        return f"Drawing(width={self.width!r}, height={self.height!r}, items=<{len(self.items)}>, legend={self.legend!r})"

    def of(self, kind: type[_T]) -> list[_T]:
        return [i for i in self.items if isinstance(i, kind)]

    @property
    def footprints(self) -> list[Footprint]:
        return self.of(Footprint)

    @property
    def ports(self) -> list[Port]:
        return self.of(Port)

    @property
    def visible(self) -> list[Item]:
        return [i for i in self.items if not isinstance(i, (Footprint, Port))]


def placements(node: Tree, dx: float, dy: float) -> Iterator[tuple[Item, float, float]]:
    """Each item of the tree ``node`` placed at ``(dx, dy)``, in order, with the offset it is placed at (a tree's
    items are items and ``(dx, dy, subtree)`` tuples); the one walk behind :func:`flatten` and SVG painting."""
    stack: list[tuple[Tree, float, float, int]] = [(node, dx, dy, 0)]
    while stack:
        current, x, y, start = stack.pop()
        items = current.items
        for k in range(start, len(items)):
            it = items[k]
            if isinstance(it, tuple):
                stack.append((current, x, y, k + 1))
                stack.append((it[2], x + it[0], y + it[1], 0))
                break
            yield it, x, y


def flatten(node: Tree, dx: float, dy: float, out: list[Item]) -> None:
    """Append the items of the tree ``node`` placed at ``(dx, dy)`` to ``out``, each moved into place, in order."""
    out.extend(it.moved(x, y) for it, x, y in placements(node, dx, dy))
