"""Views: the top drawing and one pre-rendered *definition panel* per block, with hit regions.

The top view is the diagram at the default ``depth``: every block at or below it is a
component box.  The panel of block ``K`` is ``K``'s definition, as the paper draws one — the
block's fence around its contents, its own sub-blocks collapsed — laid out once, on its own.
The browser composes them: expanding a block adds its panel to the page, so any number of
blocks can be open at once, and the page holds one drawing per *distinct drawn block* (folded
and repeated blocks count once) however they are combined.

Layout is the renderer's (:class:`ncd.render.layout.Layout`), subclassed to decide which
blocks collapse and to note what each drawn item stands for: the footprint of each box and
component, the fence of each expanded block and the axis of each wire between columns.
Those notes become a transparent overlay (``<g class="ncd-hit">``) appended to the
renderer's SVG; every label the user wrote stays in the JSON side table (:class:`Catalogue`),
never in markup.  A panel is laid out in the context where its block was met (the axes it
is broadcast over, the repetitions around it, the colour of the fence it sits in), so its
records and costs are those of that occurrence.

>>> import ncd
>>> inner = (ncd.Linear("m -> n") >> ncd.ReLU()).block("Inner")
>>> views = explore(ncd.Identity.of("~t m") >> (inner >> ncd.Linear("n -> m")).block("Outer"))
>>> [v.key for v in views.views], views.catalogue.blocks["0/0"]["name"]
(['', '0/0'], 'Inner')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ncd.ir.axes import Axis, Type
from ncd.ir.diagram import Block, Box, Diagram, Repeat, Weave, unweave
from ncd.render.layout import Frag, Layout, Ports, flat, lay_out_with, scalar_core
from ncd.render.model import Drawing, Footprint, Path, Rect, Text
from ncd.render.style import Style
from ncd.render.svg import Placed
from ncd.viewer.info import Catalogue
from ncd.viewer.rows import wrap_rows

__all__ = ["View", "Views", "ViewLayout", "Context", "explore", "render_view", "MAX_VIEWS"]

_I = TypeVar("_I")

#: At most this many view states are rendered; deeper blocks then stay collapsed (noted on the page).
MAX_VIEWS = 400


@dataclass(frozen=True)
class _TaggedPath(Path):
    """A wire path that knows its axis (``tag`` indexes :attr:`Catalogue.infos`); painted as its base :class:`Path`."""

    tag: int = -1


@dataclass(frozen=True)
class _TaggedRect(Rect):
    """An expanded block's fence that knows its block key; painted as its base :class:`Rect`."""

    tag: str = ""


@dataclass
class _Frame:
    key: str
    count: int = 0


@dataclass
class View:
    """The top view (``key`` "") or the definition panel of block ``key``: its SVG with hit regions."""

    key: str
    svg: str
    width: float
    height: float
    collapsed: list[str] = field(default_factory=list)
    infos: list[int] = field(default_factory=list)  # the records of everything drawn in it (what search finds here)
    #: the characters each font face draws in ``svg`` (as :func:`ncd.render.svg.faces_used` reads them back;
    #: ``None``: read them from ``svg``)
    faces: dict[str, set[str]] | None = None


@dataclass
class Views:
    """The top view and every panel of a diagram, and the side table of what their items stand for."""

    views: list[View]
    catalogue: Catalogue
    depth: int
    truncated: bool = False
    contexts: dict[str, Context] = field(default_factory=dict)  # where each panel's block was met


@dataclass(frozen=True)
class Context:
    """Where a collapsed block was met: what its panel needs to draw and describe that occurrence."""

    node: Block
    depth: int
    woven: tuple[Axis, ...]
    repeats: tuple[Repeat, ...]
    fences: tuple[str, ...]
    path: tuple[str, ...]


class ViewLayout(Layout):
    """The renderer's layout, collapsing blocks by view and recording what each item stands for.

    With ``panel=(key, context)`` it lays out the definition of block ``key`` (the block open,
    its sub-blocks collapsed) as it was met in ``context``; without, the top view.
    """

    def __init__(self, style: Style, catalogue: Catalogue, depth: int, panel: tuple[str, Context] | None = None) -> None:
        super().__init__(dataclasses.replace(style, depth=None))
        self.catalogue = catalogue
        self.default_depth = depth
        self.claims: dict[int, tuple[int, str | None]] = {}  # footprint id -> (info, block key of a component)
        self.collapsed: list[str] = []
        self.found: dict[str, Context] = {}  # collapsed block key -> where it was met
        self._frames = [_Frame("")]
        self._offset = 0
        self._woven: list[Axis] = []
        self._repeats: list[Repeat] = []
        self._fold = 1
        self.expanded: frozenset[str] = frozenset()
        self._wrap: Diagram | None = None
        self._tagged: dict[int, Frag] = {}  # gaps whose wires carry their axes (kept alive while their id is a key)
        self.memo = {}  # equal gaps are laid out once (columns are not memoised: see lay_group)
        if panel is not None:
            key, ctx = panel
            parent, _, index = key.rpartition("/")
            self._frames = [_Frame(parent, int(index))]
            self._offset = ctx.depth
            self._woven, self._repeats = list(ctx.woven), list(ctx.repeats)
            self.fences, self.path = list(ctx.fences), list(ctx.path)
            self.expanded = frozenset({key})
            self._wrap = ctx.node.body  # a panel's contents go into rows when too wide for a window

    def _claim(self, start: int, info: int, key: str | None = None) -> None:
        for box_id in range(start + 1, self.next_id + 1):
            self.claims.setdefault(box_id, (info, key))

    # -- recording what is drawn --------------------------------------------------------------
    def lay(self, node: Diagram) -> Frag:
        if node is self._wrap:
            self._wrap = None
            rows = wrap_rows(self, node)
            if rows is not None:
                return rows
        return super().lay(node)

    def box(self, box: Box) -> Frag:
        start = self.next_id
        frag = super().box(box)
        outer = tuple(self._woven)
        self._claim(start, self.catalogue.box(box, box.dom, box.cod, outer, _woven_by(box, outer)))
        return frag

    def weave(self, node: Weave) -> Frag:
        start = self.next_id
        outer = tuple(self._woven)
        self._woven.append(node.axis)
        try:
            frag = super().weave(node)
        finally:
            self._woven.pop()
        core = scalar_core(node)
        if core is not None:  # the renderer draws it as one glyph through the woven wires
            woven = outer + (node.axis,) + _weave_axes(node)
            self._claim(start, self.catalogue.box(core, node.dom, node.cod, woven, _woven_by(node, outer)))
        return frag

    def gap(self, left: Ports, right: Ports, typ: Type, labels: bool | tuple[bool, ...], *more: Any,
            **options: Any) -> tuple[Frag, float]:
        frag, w = super().gap(left, right, typ, labels, *more, **options)
        if id(frag) in self._tagged:  # an equal gap met before (the renderer's memo): tagged already
            return frag, w
        self._tagged[id(frag)] = frag
        axes = [(axis, j) for j, seg in enumerate(typ) for axis in seg]
        wires = [k for k, it in enumerate(frag.items) if isinstance(it, Path) and it.role == "wire"]
        if len(wires) == len(axes) == len(flat(left)):
            for k, (axis, j) in zip(wires, axes):
                frag.items[k] = _tag_path(frag.items[k], self.catalogue.wire(axis, j, len(typ)))  # type: ignore[arg-type]
        return frag, w

    def lay_group(self, node: Diagram, count: int) -> Frag:
        # every column is laid out where it is met: its blocks get their keys and contexts there
        return self.lay(node) if count == 1 else self.folded(node, count)

    def woven_wire(self, axis: Axis, path: Path) -> Path:
        return _tag_path(path, self.catalogue.wire(axis, None, 0, woven=True))

    def folded(self, node: Diagram, count: int) -> Frag:
        self._fold = count
        try:
            return super().folded(node, count)
        finally:
            self._fold = 1

    def repeat(self, node: Repeat) -> Frag:
        self._repeats.append(node)
        try:
            return super().repeat(node)
        finally:
            self._repeats.pop()

    def block(self, node: Block, title: str | None = None, *more: Any, **options: Any) -> Frag:
        frame = self._frames[-1]
        key = f"{frame.key}/{frame.count}" if frame.key else str(frame.count)
        frame.count += 1
        depth = len(self._frames) - 1 + self._offset
        fold, self._fold = self._fold, 1
        expandable = depth >= self.default_depth
        info = self.catalogue.block(key, node, frame.key, depth, expandable, fold, tuple(self._repeats), tuple(self._woven))
        if expandable and key not in self.expanded:
            start = self.next_id
            frag = self.component(node)
            self._claim(start, info, key)
            self.collapsed.append(key)
            self.found[key] = Context(node, depth, tuple(self._woven), tuple(self._repeats), tuple(self.fences),
                                      tuple(self.path))
            return frag
        self._frames.append(_Frame(key))
        try:
            frag = super().block(node, title, *more, **options)
        finally:
            self._frames.pop()
        for k, it in enumerate(frag.items):
            if isinstance(it, Rect) and it.role == "fence":
                frag.items[k] = _retype(it, _TaggedRect, tag=key)
                break
        return frag


def _woven_by(node: Diagram, outer: tuple[Axis, ...]) -> Callable[[], Diagram]:
    """``node`` broadcast over ``outer`` (what its costs are computed for), built only when asked."""
    return lambda: node.weave(*outer) if outer else node


def _retype(item: Any, cls: type[_I], **changes: Any) -> _I:
    """``item``'s fields in a record of class ``cls`` (a tagged subclass or its plain base), without ``__init__``:
    the viewer tags and untags every wire of a drawing, so this is on its hot path."""
    new = object.__new__(cls)
    fields = dict(item.__dict__)
    fields.pop("tag", None)
    fields.update(changes)
    new.__dict__.update(fields)
    return new


def _tag_path(path: Path, tag: int) -> _TaggedPath:
    return _retype(path, _TaggedPath, tag=tag)


def _weave_axes(node: Weave) -> tuple[Axis, ...]:
    return tuple(w.axis for w in unweave(node.inner)[1])


def _lay_out(ctx: ViewLayout, diagram: Diagram) -> Drawing:
    return lay_out_with(ctx, diagram)


def _continue_wires(placed: Sequence[Placed], axis_of: dict[int, tuple[str, str]]) -> dict[int, int]:
    """The axes of untagged wire pieces (bends, runs through fences and parentheses) that continue a tagged wire:
    ``{index in placed: wire record}``.

    A piece is tagged only when every tagged wire meeting it at its ends carries the same axis
    (``axis_of`` maps a wire record to its axis name and size).  ``placed`` is the painter's
    ``(item, dx, dy, d)`` list: an end is where the path is painted, rounded.
    """
    at: dict[tuple[float, float], set[int]] = {}
    loose_ends: dict[int, tuple[tuple[float, float], tuple[float, float]]] = {}
    for k, (it, dx, dy, _) in enumerate(placed):
        if isinstance(it, _TaggedPath):
            first, last = it.commands[0], it.commands[-1]  # Path.ends where painted, rounded
            tag = it.tag
            at.setdefault((round(first[1] + dx, 2), round(first[2] + dy, 2)), set()).add(tag)
            at.setdefault((round(last[-2] + dx, 2), round(last[-1] + dy, 2)), set()).add(tag)
        elif (type(it) is Path and it.role == "wire" and it.owner is None and not it.dashed
              and len(it.commands) > 1):
            first, last = it.commands[0], it.commands[-1]
            loose_ends[k] = ((round(first[1] + dx, 2), round(first[2] + dy, 2)),
                             (round(last[-2] + dx, 2), round(last[-1] + dy, 2)))
    loose = list(loose_ends)
    waiting: dict[tuple[float, float], list[int]] = {}  # an end -> the untagged pieces that end there
    for k in loose:
        for e in loose_ends[k]:
            waiting.setdefault(e, []).append(k)
    queue, tags = list(reversed(loose)), {}
    while queue:  # a piece tagged may let the pieces meeting it be tagged in turn: each looked at again then
        k = queue.pop()
        if k in tags:
            continue
        here = loose_ends[k]
        found: set[int] = set()
        for e in here:
            found.update(at.get(e, ()))
        if found and len({axis_of[t] for t in found}) == 1:
            tag = tags[k] = min(found)
            for e in here:
                at.setdefault(e, set()).add(tag)
                queue.extend(j for j in waiting.get(e, ()) if j not in tags)
    return tags


def render_view(diagram: Diagram, style: Style, catalogue: Catalogue, depth: int,
                panel: tuple[str, Context] | None = None) -> tuple[View, dict[str, Context]]:
    """Lay out and paint the top view (or block ``panel``'s definition) with its hit overlay.

    Returns the view and, for each block drawn collapsed in it, where it was met.
    """
    from ncd.render.fonts import face_for
    from ncd.render.svg import NBSP, _n, paint_svg

    ctx = ViewLayout(style if panel is None else _panel_style(style), catalogue, depth, panel)
    if panel is None:  # the top view's contents go into rows too when too wide for a window
        ctx._wrap = diagram.body if isinstance(diagram, Block) else diagram
    drawing = _lay_out(ctx, diagram if panel is None else panel[1].node)
    placed: list[Placed] = []
    svg = paint_svg(drawing, embed_fonts=False, placed=placed)  # the page embeds the fonts once
    tags = _continue_wires(placed, catalogue.wire_axis)
    fences, boxes, wires = [], [], []
    used: set[int] = set()
    claims = ctx.claims
    faces: dict[str, set[str]] = {}
    runs: set[int] = set()
    for k, (it, dx, dy, d) in enumerate(placed):
        if isinstance(it, Text):
            if id(it.runs) not in runs:  # labels share their typeset runs: each tuple once
                runs.add(id(it.runs))
                for run in it.runs:
                    face = face_for(run.bold, run.italic, run.serif, run.symbol)
                    faces.setdefault(face, set()).update(run.text.replace(NBSP, " "))
        elif isinstance(it, _TaggedPath) or k in tags:
            tag = it.tag if isinstance(it, _TaggedPath) else tags[k]
            used.add(tag)
            wires.append(f'<path class="ncd-wire" data-i="{tag}" d="{d}"/>')
        elif isinstance(it, _TaggedRect):
            info = catalogue.block_info[it.tag]
            used.add(info)
            fences.append(f'<rect class="ncd-fence" data-i="{info}" data-block="{it.tag}" x="{_n(it.x + dx)}" '
                          f'y="{_n(it.y + dy)}" width="{_n(it.w)}" height="{_n(it.h)}"/>')
        elif isinstance(it, Footprint) and it.id in claims:
            info, block_key = claims[it.id]
            used.add(info)
            cls, extra = ("ncd-comp", f' data-block="{block_key}"') if block_key is not None else ("ncd-box", "")
            boxes.append(f'<rect class="{cls}" data-i="{info}"{extra} x="{_n(it.x + dx)}" y="{_n(it.y + dy)}" '
                         f'width="{_n(it.w)}" height="{_n(it.h)}"/>')
    overlay = '<g class="ncd-hit">' + "".join(fences + boxes + wires) + "</g>"
    head, _, tail = svg.rpartition("</svg>")
    key = "" if panel is None else panel[0]
    return View(key, head + overlay + "\n</svg>" + tail, drawing.width, drawing.height, list(dict.fromkeys(ctx.collapsed)),
                sorted(used), faces), ctx.found


def _panel_style(style: Style) -> Style:
    """A panel has no heading and no legend of its own (the top view carries them)."""
    return dataclasses.replace(style, title=None, legend=())


def explore(diagram: Diagram, style: Style | None = None, *, depth: int | None = None, costs: bool = True,
            max_views: int = MAX_VIEWS) -> Views:
    """Render the top view and, breadth first, the panel of every collapsed block met on the way."""
    style = style or Style()
    depth = style.depth if depth is None else depth
    depth = 1 if depth is None else depth
    catalogue = Catalogue(diagram, costs=costs)
    root, found = render_view(diagram, style, catalogue, depth)
    views = [root]
    queue = list(root.collapsed)
    seen = set(queue[:max_views])
    truncated = len(queue) > max_views
    queue = queue[:max_views]
    while queue:
        key = queue.pop(0)
        view, more = render_view(diagram, style, catalogue, depth, (key, found[key]))
        views.append(view)
        for child in view.collapsed:
            if child not in seen:
                if len(seen) >= max_views:
                    truncated = True
                    continue
                seen.add(child)
                found[child] = more[child]
                queue.append(child)
    for key in seen:
        catalogue.blocks[key]["state"] = True
    return Views(views, catalogue, depth, truncated, {k: found[k] for k in seen})
