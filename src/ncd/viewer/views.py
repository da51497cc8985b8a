"""View states: one pre-rendered SVG per *expanded path* of blocks, with hit regions for the browser.

A view state is the default ``depth`` plus one expanded block and its ancestors.  The root
state shows every block at or below ``depth`` as a component box; the state of block ``K``
shows ``K`` (and the blocks around it) expanded, its own sub-blocks collapsed.  Starting from
the root, every collapsed block seen is a new state, so there are at most *1 + the number of
distinct drawn blocks* states — few, because repeated blocks are folded and repetitions are
drawn once.

Layout is the renderer's (:class:`ncd.render.layout.Layout`), subclassed to decide which
blocks collapse and to note what each drawn item stands for: the footprint of each box and
component, the fence of each expanded block and the axis of each wire between columns.
Those notes become a transparent overlay (``<g class="ncd-hit">``) appended to the
renderer's SVG; every label the user wrote stays in the JSON side table (:class:`Catalogue`),
never in markup.

>>> import ncd
>>> inner = (ncd.Linear("m -> n") >> ncd.ReLU()).block("Inner")
>>> views = explore(ncd.Identity.of("~t m") >> (inner >> ncd.Linear("n -> m")).block("Outer"))
>>> [v.key for v in views.views], views.catalogue.blocks["0/0"]["name"]
(['', '0/0'], 'Inner')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ncd.ir.axes import Axis, Type
from ncd.ir.diagram import Block, Box, Diagram, Repeat, Weave, unweave
from ncd.render.layout import Frag, Layout, Ports, flat, lay_out_with, scalar_core
from ncd.render.model import Drawing, Path, Rect
from ncd.render.style import Style
from ncd.viewer.info import Catalogue

__all__ = ["View", "Views", "ViewLayout", "explore", "MAX_VIEWS"]

#: At most this many view states are rendered; deeper blocks then stay collapsed (noted on the page).
MAX_VIEWS = 400


@dataclass(frozen=True)
class _TaggedPath(Path):
    """A wire path that knows its axis (``tag`` indexes :attr:`Catalogue.infos`); stripped before painting."""

    tag: int = -1


@dataclass(frozen=True)
class _TaggedRect(Rect):
    """An expanded block's fence that knows its block key; stripped before painting."""

    tag: str = ""


@dataclass
class _Frame:
    key: str
    count: int = 0


@dataclass
class View:
    """One view state: the deepest expanded block ``key`` ("" for the root) and its SVG with hit regions."""

    key: str
    svg: str
    width: float
    height: float
    collapsed: list[str] = field(default_factory=list)


@dataclass
class Views:
    """Every view state of a diagram and the side table of what their items stand for."""

    views: list[View]
    catalogue: Catalogue
    depth: int
    truncated: bool = False


class ViewLayout(Layout):
    """The renderer's layout, collapsing blocks by view state and recording what each item stands for."""

    def __init__(self, style: Style, catalogue: Catalogue, expanded: frozenset[str], depth: int) -> None:
        super().__init__(dataclasses.replace(style, depth=None))
        self.catalogue = catalogue
        self.expanded = expanded
        self.default_depth = depth
        self.claims: dict[int, tuple[int, str | None]] = {}  # footprint id -> (info, block key of a component)
        self.collapsed: list[str] = []
        self._frames = [_Frame("")]
        self._woven: list[Axis] = []
        self._repeats: list[Repeat] = []
        self._fold = 1

    def _claim(self, start: int, info: int, key: str | None = None) -> None:
        for box_id in range(start + 1, self.next_id + 1):
            self.claims.setdefault(box_id, (info, key))

    # -- recording what is drawn --------------------------------------------------------------
    def lay(self, node: Diagram) -> Frag:
        start = self.next_id
        outer = tuple(self._woven)
        if isinstance(node, Weave):
            self._woven.append(node.axis)
            try:
                frag = super().lay(node)
            finally:
                self._woven.pop()
            core = scalar_core(node)
            if core is not None:  # the renderer draws it as one glyph through the woven wires
                woven = outer + (node.axis,) + _weave_axes(node)
                self._claim(start, self.catalogue.box(core, node.dom, node.cod, woven, node.weave(*outer) if outer else node))
            return frag
        frag = super().lay(node)
        if isinstance(node, Box):
            self._claim(start, self.catalogue.box(node, node.dom, node.cod, outer, node.weave(*outer) if outer else node))
        return frag

    def gap(self, left: Ports, right: Ports, typ: Type, labels: bool, *more: Any, **options: Any) -> tuple[Frag, float]:
        frag, w = super().gap(left, right, typ, labels, *more, **options)
        axes = [(axis, j) for j, seg in enumerate(typ) for axis in seg]
        wires = [k for k, it in enumerate(frag.items) if isinstance(it, Path) and it.role == "wire"]
        if len(wires) == len(axes) == len(flat(left)):
            for k, (axis, j) in zip(wires, axes):
                frag.items[k] = _tag_path(frag.items[k], self.catalogue.wire(axis, j, len(typ)))  # type: ignore[arg-type]
        return frag, w

    def weave(self, node: Weave) -> Frag:
        frag = super().weave(node)
        for k, it in enumerate(frag.items):  # the woven wire running past the inner fragment
            if isinstance(it, Path) and it.role == "wire" and len(it.commands) == 2 and it.commands[1][0] == "L":
                frag.items[k] = _tag_path(it, self.catalogue.wire(node.axis, None, 0, woven=True))
                break
        return frag

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
        depth = len(self._frames) - 1
        fold, self._fold = self._fold, 1
        expandable = depth >= self.default_depth
        info = self.catalogue.block(key, node, frame.key, depth, expandable, fold, tuple(self._repeats), tuple(self._woven))
        if expandable and key not in self.expanded:
            start = self.next_id
            frag = self.component(node)
            self._claim(start, info, key)
            self.collapsed.append(key)
            return frag
        self._frames.append(_Frame(key))
        try:
            frag = super().block(node, title, *more, **options)
        finally:
            self._frames.pop()
        for k, it in enumerate(frag.items):
            if isinstance(it, Rect) and it.role == "fence":
                frag.items[k] = _TaggedRect(**_fields(it), tag=key)
                break
        return frag


def _fields(item: Any) -> dict[str, Any]:
    return {f.name: getattr(item, f.name) for f in dataclasses.fields(item) if f.name != "tag"}


def _tag_path(path: Path, tag: int) -> _TaggedPath:
    return _TaggedPath(**_fields(path), tag=tag)


def _weave_axes(node: Weave) -> tuple[Axis, ...]:
    return tuple(w.axis for w in unweave(node.inner)[1])


def _lay_out(ctx: ViewLayout, diagram: Diagram) -> Drawing:
    return lay_out_with(ctx, diagram)


def _n(v: float) -> str:
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _path_d(p: Path) -> str:
    return " ".join(c[0] + "".join(" " + _n(v) for v in c[1:]) for c in p.commands)


def _continue_wires(items: list[Any], axis_of: dict[int, tuple[str, str]]) -> list[Any]:
    """Give untagged wire pieces (bends, runs through fences and parentheses) the axis of the wire they continue.

    A piece is tagged only when every tagged wire meeting it at its ends carries the same axis
    (``axis_of`` maps a wire record to its axis name and size).
    """
    items = list(items)

    def ends(p: Path) -> list[tuple[float, float]]:
        return [(round(x, 2), round(y, 2)) for x, y in p.ends]

    at: dict[tuple[float, float], set[int]] = {}
    for it in items:
        if isinstance(it, _TaggedPath):
            for e in ends(it):
                at.setdefault(e, set()).add(it.tag)
    loose = [k for k, it in enumerate(items) if type(it) is Path and it.role == "wire" and it.owner is None
             and not it.dashed and len(it.commands) > 1]
    changed = True
    while changed and loose:
        changed = False
        for k in list(loose):
            found = set().union(*(at.get(e, set()) for e in ends(items[k])))
            if found and len({axis_of[t] for t in found}) == 1:
                items[k] = _tag_path(items[k], min(found))
                for e in ends(items[k]):
                    at.setdefault(e, set()).add(items[k].tag)
                loose.remove(k)
                changed = True
    return items


def render_view(diagram: Diagram, style: Style, catalogue: Catalogue, key: str, expanded: frozenset[str], depth: int) -> View:
    """Lay out and paint one view state, with its hit overlay."""
    from ncd.render.svg import paint_svg

    ctx = ViewLayout(style, catalogue, expanded, depth)
    drawing = _lay_out(ctx, diagram)
    items, fences, wires = [], [], []
    for it in _continue_wires(drawing.items, catalogue.wire_axis):
        if isinstance(it, _TaggedPath):
            wires.append(f'<path class="ncd-wire" data-i="{it.tag}" d="{_path_d(it)}"/>')
            it = Path(**_fields(it))
        elif isinstance(it, _TaggedRect):
            info = catalogue.block_info[it.tag]
            fences.append(f'<rect class="ncd-fence" data-i="{info}" data-block="{it.tag}" x="{_n(it.x)}" y="{_n(it.y)}" '
                          f'width="{_n(it.w)}" height="{_n(it.h)}"/>')
            it = Rect(**_fields(it))
        items.append(it)
    boxes = []
    for fp in drawing.footprints:
        if fp.id in ctx.claims:
            info, block_key = ctx.claims[fp.id]
            cls, extra = ("ncd-comp", f' data-block="{block_key}"') if block_key is not None else ("ncd-box", "")
            boxes.append(f'<rect class="{cls}" data-i="{info}"{extra} x="{_n(fp.x)}" y="{_n(fp.y)}" '
                         f'width="{_n(fp.w)}" height="{_n(fp.h)}"/>')
    svg = paint_svg(Drawing(drawing.width, drawing.height, items), embed_fonts=False)  # the page embeds them once
    overlay = '<g class="ncd-hit">' + "".join(fences + boxes + wires) + "</g>"
    head, _, tail = svg.rpartition("</svg>")
    return View(key, head + overlay + "\n</svg>" + tail, drawing.width, drawing.height, ctx.collapsed)


def explore(diagram: Diagram, style: Style | None = None, *, depth: int | None = None, costs: bool = True,
            max_views: int = MAX_VIEWS) -> Views:
    """Render the root view and, breadth first, the view of every collapsed block met on the way."""
    style = style or Style()
    depth = style.depth if depth is None else depth
    depth = 1 if depth is None else depth
    catalogue = Catalogue(diagram, costs=costs)
    views: list[View] = []
    seen = {""}
    queue = [""]
    truncated = False
    while queue:
        key = queue.pop(0)
        parts = key.split("/") if key else []
        expanded = frozenset("/".join(parts[:k]) for k in range(1, len(parts) + 1))
        view = render_view(diagram, style, catalogue, key, expanded, depth)
        views.append(view)
        for child in view.collapsed:
            if child not in seen:
                if len(seen) >= max_views:
                    truncated = True
                    continue
                seen.add(child)
                queue.append(child)
    for key in seen - {""}:
        catalogue.blocks[key]["state"] = True
    return Views(views, catalogue, depth, truncated)
