"""Page layout: a drawing too wide for its page is wrapped into rows, as the paper does.

The paper draws a long architecture in rows joined by continuation arrows (the U-Net, the
identity ResNet), and a block by its definition: the block's box, ``=``, then its contents.
:func:`page_layout` does the same whenever the one-row drawing is wider than the page
(``Style.page``: a 600-point column row, or a 1,200-point slide row) or wider than its
width:height limit:

* a diagram that is a block is drawn as its *definition*: its component box, ``=``, and its
  contents below (its own fence dropped, as in the paper);
* the contents — the columns of the top-level sequence, identical neighbouring blocks folded —
  are packed greedily into rows; each row starts with its wire labels and arrows coming in and
  ends with arrows going out;
* a column wider than a row has its outermost blocks collapsed into component boxes, and each
  such block gets its own definition below (once, however often it is used), itself wrapped.

>>> import ncd
>>> from ncd.render.measure import drawing_figures
>>> d = ncd.zoo.resnet()
>>> fig = drawing_figures(ncd.render.layout(d))
>>> fig.aspect <= 3 and fig.min_label_pt >= 6
True
>>> ncd.render.layout(d, page="none").width > 2000
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ncd.ir.axes import Type
from ncd.ir.diagram import Block, Diagram, Identity, Par, Seq
from ncd.render.measure import COLUMN_PT, MIN_PRINT_PT
from ncd.render.model import Drawing, Path, Port, Text
from ncd.render.style import PAGES
from ncd.render.typeset import Piece, typeset_text

__all__ = ["page_layout"]

Group = tuple[Diagram, int]

#: Continuation arrows: horizontal run and drop (points).
ARROW_RUN, ARROW_DROP = 16.0, 7.0


@dataclass
class _Section:
    """One definition on the page: an optional header block (``box =``) and the columns of its contents."""

    header: Block | None
    groups: list[Group]
    dom: Type
    cod: Type
    path: list[str] = field(default_factory=list)
    depth: int = 0


def _chain(node: Diagram) -> list[Diagram]:
    if isinstance(node, Seq):
        return [x for part in node.parts for x in _chain(part)]
    return [node]


def _outer_blocks(node: Diagram) -> list[Block]:
    """The blocks of ``node`` not nested in another block (outermost first, in order)."""
    found: list[Block] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Block):
            found.append(current)
            continue
        stack.extend(reversed(list(current.children())))
    return found


def page_layout(ctx, diagram: Diagram) -> Drawing | None:  # type: ignore[no-untyped-def]
    """The wrapped drawing of ``diagram``, or ``None`` when one row fits the page (the caller draws it)."""
    from ncd.render.layout import Frag, _finish, lay_out_with

    style = ctx.style
    max_w, max_aspect = PAGES[style.page]
    if math.isinf(max_w):
        return None
    legend0 = list(ctx.legend)
    single = lay_out_with(ctx, diagram)
    if style.page == "column":  # the smallest text must print at MIN_PRINT_PT or more in a column
        smallest = min((r.size for t in single.of(Text) for r in t.runs if r.text.strip()), default=style.label_size)
        max_w = min(max_w, COLUMN_PT * smallest / MIN_PRINT_PT)
    if single.width <= max_w and single.width <= max_aspect * single.height:
        return single
    core = diagram
    collapsed_at_top = style.depth is not None and style.depth <= 0
    if collapsed_at_top:
        return single
    ctx.legend = list(legend0)
    sections: list[_Section] = []
    if isinstance(core, Block):
        sections.append(_Section(core, ctx.groups(_chain(core.body)), core.dom, core.cod, [core.name], 1))
    else:
        sections.append(_Section(None, ctx.groups(_chain(core)), core.dom, core.cod))
    if len(sections[0].groups) <= 1 and sections[0].header is None and not _outer_blocks(core):
        return single
    target = max_w - 2 * style.margin - 2 * ARROW_RUN - 8.0
    best: Drawing | None = None
    for _ in range(8):
        ctx.collapse = set()
        ctx.legend = list(legend0)
        page = _lay_page(ctx, sections, target, Frag)
        drawing = _finish(ctx, page)
        if best is None or _score(drawing, max_w, max_aspect) < _score(best, max_w, max_aspect):
            best = drawing
        if drawing.width <= max_aspect * drawing.height or target < 120:
            break
        # too wide for its height: narrower rows (more of them)
        target = max(120.0, min(target, page.w) / math.sqrt(drawing.width / (max_aspect * drawing.height)) * 0.92)
    return best


def _score(d: Drawing, max_w: float, max_aspect: float) -> tuple[bool, float]:
    return (d.width > max_aspect * d.height, d.width)


def _add_legend(ctx, block: Block) -> None:  # type: ignore[no-untyped-def]
    legend = block.get("legend")
    if legend:
        ctx.legend.extend(tuple(legend.items()) if isinstance(legend, dict) else tuple(legend))


def _lay_page(ctx, first: Sequence[_Section], target: float, Frag):  # type: ignore[no-untyped-def]
    """Every section (the diagram, then the definitions of the blocks collapsed to fit) stacked downwards."""
    page = Frag(0.0, 0.0, 0.0, [], [])
    queue = list(first)
    defined: list[Block] = []
    y = 0.0
    while queue:
        section = queue.pop(0)
        if y:
            y += 1.5 * ctx.style.pitch
        y = _lay_section(ctx, section, target, page, y, queue, defined, Frag)
    page.w = max(page.w, 0.0)
    page.top, page.bottom = min(page.top, 0.0), max(page.bottom, y)
    return page


def _with_frame(ctx, section: _Section, fn):  # type: ignore[no-untyped-def]
    saved = (ctx.depth, list(ctx.path))
    ctx.depth, ctx.path = section.depth, list(section.path)
    try:
        return fn()
    finally:
        ctx.depth, ctx.path = saved


def _interchange(node: Par) -> list[Diagram]:
    """``f @ g`` as ``(f @ id) >> (id @ g)``, each branch's steps in turn: the same diagram, wrappable."""
    steps: list[Diagram] = []
    for k, part in enumerate(node.parts):
        for step in _chain(part):
            if isinstance(step, Identity):
                continue
            before = [Identity(p.cod) for p in node.parts[:k]]
            after = [Identity(p.dom) for p in node.parts[k + 1:]]
            steps.append(Par.of(*before, step, *after) if before or after else step)
    return steps


def _fit_groups(ctx, section: _Section, limit: float, queue: list[_Section], defined: list[Block]) -> None:  # type: ignore[no-untyped-def]
    """Make every column of ``section`` narrower than ``limit`` where it can: a wide parallel part is split
    into its branches' steps (interchange law); a wide column has its outermost blocks collapsed, their
    definitions queued."""
    out: list[Group] = []
    work = list(section.groups)
    while work:
        node, count = work.pop(0)
        frag = ctx.lay_group(node, count)
        if frag.w > limit and count == 1 and isinstance(node, Par):
            steps = _interchange(node)
            if len(steps) > 1:
                work[0:0] = ctx.groups(steps)
                continue
        blocks = [b for b in _outer_blocks(node) if id(b) not in ctx.collapse] if frag.w > limit else []
        for b in blocks:
            ctx.collapse.add(id(b))
            if not any(b is d or b == d for d in defined):
                defined.append(b)
                path = section.path + [b.name]
                queue.append(_Section(b, ctx.groups(_chain(b.body)), b.dom, b.cod, path, section.depth + 1))
        out.append((node, count))
    section.groups = out


def _lay_section(ctx, section: _Section, target: float, page, y: float, queue: list[_Section],  # type: ignore[no-untyped-def]
                 defined: list[Block], Frag) -> float:
    from ncd.render.layout import flat

    p = ctx.style.pitch
    if section.header is not None:
        _add_legend(ctx, section.header)
        y = _lay_header(ctx, section.header, section.path, page, y, Frag)
    _with_frame(ctx, section, lambda: _fit_groups(ctx, section, 0.8 * target, queue, defined))
    rows: list[list[Group]] = []
    row: list[Group] = []
    for group in section.groups:
        if row and _with_frame(ctx, section, lambda: _row(ctx, row + [group])).w > target:
            rows.append(row)
            row = []
        row.append(group)
    if row:
        rows.append(row)
    indent = ARROW_RUN + 4.0
    for k, groups in enumerate(rows):
        frag = _with_frame(ctx, section, lambda groups=groups: _row(ctx, groups))
        x0 = indent if k > 0 else 0.0
        dy = y - frag.top + (0.6 * p if k else 0.0)
        page.place(frag, x0, dy)
        right = x0 + frag.w
        if k > 0:  # arrows coming in from the previous row
            for wy in flat(frag.ins):
                page.add(Path.through([(x0 - ARROW_RUN, wy + dy - ARROW_DROP), (x0, wy + dy)], arrow=True))
                page.add(Port(x0 - ARROW_RUN, wy + dy - ARROW_DROP, -1))
        if k < len(rows) - 1:  # arrows going on to the next row
            for wy in flat(frag.outs):
                page.add(Path.through([(right, wy + dy), (right + ARROW_RUN, wy + dy + ARROW_DROP)], arrow=True))
                page.add(Port(right + ARROW_RUN, wy + dy + ARROW_DROP, -1))
            right += ARROW_RUN + 2.0
        bottom = frag.bottom + dy + (ARROW_DROP if k < len(rows) - 1 else 0.0)
        page.include(frag.top + dy, bottom)
        page.w = max(page.w, right)
        y = bottom + 0.6 * p
    return y


def _row(ctx, groups: Sequence[Group]):  # type: ignore[no-untyped-def]
    """One row: its columns in sequence, with the wire labels at both ends and boundary ports."""
    from ncd.render.layout import framed

    first, last = groups[0][0], groups[-1][0]
    return framed(ctx, ctx.seq_groups(groups), first.dom, last.cod, ctx.note("before", first), ctx.note("after", last))


def _lay_header(ctx, block: Block, path: list[str], page, y: float, Frag) -> float:  # type: ignore[no-untyped-def]
    """``box =``: the block drawn as its component box with its port labels, then an equals sign."""
    from ncd.render.layout import framed

    box = ctx.component(block)
    head = framed(ctx, box, block.dom, block.cod)
    size = ctx.style.letter_size
    eq = (Piece("="),)
    ew, ascent, _ = ctx.text_size(eq, size)
    mid = (box.top + box.bottom) / 2
    head.add(*ctx.text(eq, head.w + 10.0, mid + ascent / 2 - 1.0, size, role="title"))
    head.w += 10.0 + ew
    note = dict(ctx.style.costs).get("/".join(path)) if ctx.style.costs else None
    if note:  # the block's cost, as a fence shows it under its title
        parts = typeset_text(note)
        nw, n_ascent, n_descent = ctx.text_size(parts, ctx.style.label_size)
        head.add(*ctx.text(parts, head.w + 12.0, mid + n_ascent / 2, ctx.style.label_size, role="label"))
        head.w += 12.0 + nw
    dy = y - head.top
    page.place(head, 0.0, dy)
    page.include(head.top + dy, head.bottom + dy)
    page.w = max(page.w, head.w)
    return head.bottom + dy + 0.8 * ctx.style.pitch
