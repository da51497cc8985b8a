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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from ncd.ir.axes import Axis
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat
from ncd.render.definitions import (
    KIN,
    Group,
    _block_rows,
    _columns,
    _fit_groups,
    _interchanged,
    _list_index,
    _opened,
    _outer_blocks,
    _Section,
    _section,
)
from ncd.render.frag import _arrows
from ncd.render.generic import blocks_inside, differ_in_sizes, family, family_header, family_indices, generic_labels, same_shape
from ncd.render.measure import COLUMN_PT, MIN_PRINT_PT
from ncd.render.model import Drawing, Text
from ncd.render.rows import draw_row, pack, row_masks
from ncd.render.style import PAGES
from ncd.render.typeset import Piece, symbol_pieces, typeset_text

if TYPE_CHECKING:
    from ncd.render.layout import Frag, Layout

__all__ = ["page_layout"]

_T = TypeVar("_T")

#: Continuation arrows: horizontal run and drop (points).
ARROW_RUN, ARROW_DROP = 16.0, 7.0


def page_layout(ctx: Layout, diagram: Diagram) -> Drawing | None:
    """The wrapped drawing of ``diagram``, or ``None`` when one row fits the page (the caller draws it)."""
    from ncd.render.extents import smallest_text
    from ncd.render.frag import Frag
    from ncd.render.framing import Framing, _finish, fitted, framed, framing

    style = ctx.style
    max_w, max_aspect = PAGES[style.page]
    if math.isinf(max_w):
        return None
    ctx.memo = {}  # every column is laid out once, then measured, packed and placed
    read = ctx.wire_axes[1] if ctx.wire_axes is not None and ctx.wire_axes[0] is diagram else None
    symbols0 = _names(diagram, read) | {k for k, _ in style.legend} | set(ctx.indexed.values())
    try:
        # the one-row drawing is measured first (a lower bound of its width, its smallest text): laid out only when
        # it may fit, or is drawn after all; most are many times wider than the page, and the page places their
        # boxes but not their sequences, fences or folds
        made: list[Frag] = []

        def one_row() -> Frag:
            if not made:
                made.append(framed(ctx, ctx.lay(diagram), diagram.dom, diagram.cod))
            return made[0]

        def as_one_row() -> Drawing:  # (its legend's long rows broken to the width its smallest text allows)
            return _finish(ctx, one_row(), fitted(ctx, one_row(), lambda smallest: _limit(smallest, max_w, style.page)))

        # a diagram holding a family of blocks that differ in sizes is drawn with their one definition: never as
        # one row, which is then neither measured nor laid out
        bodies: list[Diagram] = []
        ctx.families = _families(diagram, bodies)
        ctx.kin_bound = _most_kin(diagram, ctx.families, bodies)
        kin = style.depth is None and _has_kin(ctx.families)
        measured = (math.inf, style.label_size) if kin else _measure_row(ctx, diagram)
        if measured is None:
            one_row()
        if style.page == "column":  # the smallest text must print at MIN_PRINT_PT or more in a column
            smallest = (smallest_text(one_row(), style.label_size, ctx.memo) if measured is None
                        else min(style.label_size, measured[1]))
            max_w = min(max_w, COLUMN_PT * smallest / MIN_PRINT_PT)
        single: Drawing | None = None
        if measured is not None and measured[0] + 2 * style.margin <= max_w:  # it may fit: laid out
            one_row()
        if made and made[0].w + 2 * style.margin <= max_w:  # narrow enough: is it also short enough for its height?
            single = as_one_row()
            if single.width <= max_w and single.width <= max_aspect * single.height:
                return single
        if style.depth is not None and style.depth <= 0 and isinstance(diagram, Block):  # (one component box)
            return single or as_one_row()
        if isinstance(diagram, Block):
            sections = [_section(ctx, diagram, [], 0)]
        else:
            sections = [_Section(None, ctx.groups(_columns(ctx, diagram)), diagram.dom, diagram.cod)]
        if (len(sections[0].groups) <= 1 and sections[0].header is None and not _outer_blocks(diagram)
                and not _branches(ctx, sections[0].groups)):
            return single or as_one_row()
        start = target = max_w - 2 * style.margin - 2 * ARROW_RUN - 8.0
        # the page may hold smaller text than the one row (a shared definition's symbols, n_i), which makes it
        # narrower: the first attempt is at the width that text allows, as the second one would be
        guess = _first_limit(ctx, diagram, max_w) if style.page == "column" else None
        if guess is not None:
            target = max(120.0, guess - 2 * style.margin - 2 * ARROW_RUN - 8.0)
        # the attempts are compared by their sizes and smallest text; only the chosen one's items are made
        best: tuple[tuple[bool, bool, float], Frag, Framing] | None = None
        tries = 0
        while tries < 8:
            tries += 1
            ctx.collapse = set()
            ctx.symbols = set(symbols0)  # the fresh symbols of this page's definitions are chosen anew
            ctx.lists = {}
            page = _lay_page(ctx, [_Section(s.header, list(s.groups), s.dom, s.cod, list(s.path), s.depth, inner=s.inner)
                                   for s in sections],
                             target, Frag)
            framed_page = framing(ctx, page)
            width, height = round(framed_page.width, 2), round(framed_page.height, 2)
            # the page may hold smaller text than the one row (a definition's header): its own limit
            limit = _limit(framed_page.smallest(page, ctx.memo), max_w, style.page)
            if framed_page.legend_w + 2 * style.margin > limit + 0.01:  # the legend alone too wide: its long rows wrap
                framed_page = framing(ctx, page, limit - 2 * style.margin)
                width, height = round(framed_page.width, 2), round(framed_page.height, 2)
            if guess is not None:
                if limit > guess + 0.01:  # its text is not that small: start again at the one row's width
                    guess, target, tries = None, start, 0
                    continue
                guess, tries = None, 2  # the attempt a first one at the one row's width would have led to
            score = (width > limit + 0.01, width > max_aspect * height, width)
            if best is None or score < best[0]:
                best = (score, page, framed_page)
            if target < 120:
                break
            if width > limit + 0.01:  # too wide to print its smallest text at MIN_PRINT_PT: narrower rows
                # the widest row is the page less a later row's indent and its arrows out: narrower than that row
                target = max(120.0, min(target, page.w - 2 * ARROW_RUN - 6.0) - (width - limit) - 2.0)
            elif width > max_aspect * height:  # too wide for its height: narrower rows (more of them)
                target = max(120.0, min(target, page.w) / math.sqrt(width / (max_aspect * height)) * 0.92)
            else:
                break
        assert best is not None
        return _finish(ctx, best[1], best[2])
    finally:
        ctx.memo = None
        ctx.kin_bound = None


def _branches(ctx: Layout, groups: Sequence[Group]) -> bool:
    """Whether a column of ``groups`` is a parallel part the page may split into its branches' steps (a run of
    one-branch steps drawn as lanes, or branches by the interchange law: :func:`~ncd.render.definitions._fit_groups`)."""
    for node, count in groups:
        if count == 1 and isinstance(node, Par):
            run = ctx.runs.get(id(node))
            if (run is not None and run[0] is node and len(run[1]) > 1) or len(_interchanged(ctx, node)) > 1:
                return True
    return False


def _measure_row(ctx: Layout, diagram: Diagram) -> tuple[float, float] | None:
    """A lower bound of the one-row drawing's width and its smallest text (:meth:`Layout.probe`, the wire labels
    at both ends included), or ``None`` where it is to be laid out to know them (a subclass of the layout, notes on
    the gaps)."""
    from ncd.render.layout import Layout

    if type(ctx) is not Layout or ctx.notes:
        return None
    w, small = ctx.probe(diagram, group=False)
    if ctx.style.labels != "none":
        small = min(small, ctx._labels_smallest(diagram.dom), ctx._labels_smallest(diagram.cod))
    return w + 16.0, small  # (the labels' gaps at both ends: 8 points or more each)


def _first_limit(ctx: Layout, diagram: Diagram, max_w: float) -> float | None:
    """The narrower limit of a column page whose smallest text is a shared definition's symbol label (``n_i``: a
    subscript) when the one row's (``max_w``) is larger: when blocks of one family and shape differ in a size and
    one is wider than such a page's rows (it is drawn as a box, with a definition); else ``None``."""
    if ctx.style.labels == "none":
        return None
    symbol = min(run.size for it in ctx.text(symbol_pieces("n_i"), 0.0, 0.0, ctx.style.label_size)
                 if isinstance(it, Text) for run in it.runs if run.text.strip())
    limit = _limit(symbol, max_w, "column")
    if limit >= max_w - 0.01 or not _shared_sizes(ctx, diagram, 0.8 * (limit - 2 * ctx.style.margin - 2 * ARROW_RUN - 8.0)):
        return None
    return limit


def _shared_sizes(ctx: Layout, diagram: Diagram, wide: float) -> bool:
    """Whether two blocks of one family and shape differ in a size, one of them laid out wider than ``wide`` (a
    definition they share labels that size by a symbol)."""
    families = ctx.families  # (page_layout's: _families(diagram))
    if all(len(blocks) < 2 for blocks in families.values()):
        return False
    if _has_kin(families):
        return True  # (sibling blocks of one family and shape: drawn by one definition, however narrow)
    widths: dict[int, float] = {}
    for key, entry in (ctx.memo or {}).items():
        if key[0] == "group" and key[2] == 1:
            widths[key[1]] = max([widths.get(key[1], 0.0)] + [frag.w for frag, _, _ in entry[1]])

    def wider(block: Block) -> bool:
        """Whether the one row laid ``block`` out as a column wider than ``wide``: a column the one row only
        measured (:meth:`Layout.probe`) is laid out in the contexts it was measured in when its lower bound does not
        tell."""
        if widths.get(id(block), 0.0) > wide:
            return True
        probed = ctx.probed.get(id(block))
        if probed is None or probed[0] is not block:
            return False
        if probed[1][0] > wide:
            return True
        saved = (ctx.depth, ctx.path, ctx.fences)
        try:
            for depth, path, fences in probed[2]:
                ctx.depth, ctx.path, ctx.fences = depth, list(path), list(fences)
                if ctx.lay_group(block, 1).w > wide:
                    return True
        finally:
            ctx.depth, ctx.path, ctx.fences = saved
        return False

    # pairs of blocks in one place inside a pair found to differ in no label: read before wider(), which may lay a
    # block out (in the contexts the one row measured it in) only to be told what this pair's test cannot change
    alike: set[tuple[int, int]] = set()
    for blocks in families.values():
        first = blocks[0]
        for other in blocks[1:]:
            if other is not first and (id(first), id(other)) not in alike and (wider(first) or wider(other)):
                found = generic_labels([first, other])
                if found is not None and found[0]:
                    return True
                if found is not None:  # (each wire of a block inside is a wire of theirs: none differs there either)
                    for x, y in blocks_inside(first, other):
                        alike.update(((id(x), id(y)), (id(y), id(x))))
    return False


def _families(diagram: Diagram, bodies: list[Diagram] | None = None, deep: bool = False) -> dict[str, list[Block]]:
    """The blocks of ``diagram`` by their family (``layer.i``), each node once; ``bodies``: gets the bodies its boxes
    hold (a scan's), which are not its children; ``deep``: their blocks counted too."""
    families: dict[str, list[Block]] = {}
    if bodies is None and not deep:  # (the blocks each node holds, found once per node: a page asks of each column)
        for block in _blocks_in(diagram):
            families.setdefault(family(block.name), []).append(block)
        return families
    stack = [diagram]
    seen: set[int] = set()
    while stack:  # (a node shared by several parents once: its blocks were met below its first parent)
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Block):
            families.setdefault(family(node.name), []).append(node)
        elif (bodies is not None or deep) and isinstance(node, Box):
            body = getattr(node.prim, "body", None)
            if isinstance(body, Diagram):
                if bodies is not None:
                    bodies.append(body)
                if deep:
                    stack.append(body)
        stack.extend(node.children())
    return families


def _blocks_in(node: Diagram) -> tuple[Block, ...]:
    """The blocks of ``node`` (itself included) in the order :func:`_families` meets them (depth first, the last
    part first, a node held twice met once), found bottom-up once per node and kept on it."""
    if type(node) is Box or type(node) is Identity:
        return ()
    found: tuple[Block, ...] | None = node.__dict__.get("_drawn_blocks")
    if found is None:
        parts = [inner for kid in reversed(node.children()) if (inner := _blocks_in(kid))]
        out: list[Block] = [node] if isinstance(node, Block) else []
        for inner in parts:
            out += inner
        if len(parts) > 1 and len({id(b) for b in out}) < len(out):  # (a node held twice: its first place kept)
            seen: set[int] = set()
            out = [b for b in out if id(b) not in seen and not seen.add(id(b))]  # type: ignore[func-returns-value]
        found = tuple(out)
        object.__setattr__(node, "_drawn_blocks", found)
    return found


def _most_kin(diagram: Diagram, families: dict[str, list[Block]], bodies: Sequence[Diagram]) -> int:
    """The most blocks of one family (``layers.i``) in ``diagram``, the bodies its boxes hold (a scan's, which the
    page defines as a ``Step``) included: no column of the page holds more (:func:`~ncd.render.definitions._holds_kin`
    finds a family of :data:`KIN` such blocks in none when it is fewer).  ``families`` and ``bodies``: what
    :func:`_families` found in it."""
    if bodies:
        families = _families(diagram, deep=True)
    return max(map(len, families.values()), default=0)


def _has_kin(families: dict[str, list[Block]]) -> bool:
    """Whether some family has :data:`KIN` or more blocks of one shape that differ in a size."""
    return any(len(blocks) >= KIN and _sized_kin(blocks) for blocks in families.values())


def _sized_kin(blocks: Sequence[Block]) -> bool:
    """Whether :data:`KIN` or more of ``blocks`` (one family's) have the first one's shape and differ in a size."""
    kind = [b for b in blocks if same_shape(blocks[0], b)]
    if len(kind) < KIN:
        return False
    indices = family_indices(kind)  # (in the order of the list, as a page defines them: the first one's axes lead)
    if indices is not None:
        kind = [b for _, b in sorted(zip(indices, kind), key=lambda pair: pair[0])]
    return differ_in_sizes(kind)


def _limit(smallest: float | None, max_w: float, page: str) -> float:
    """The widest a drawing whose smallest text is ``smallest`` may be on ``page``: in a column, no wider than prints
    that text at MIN_PRINT_PT."""
    if page != "column":
        return max_w
    return min(max_w, COLUMN_PT * (MIN_PRINT_PT if smallest is None else smallest) / MIN_PRINT_PT)


def _names(diagram: Diagram, axes: Sequence[Axis] | None = None) -> set[str]:
    """The names of every axis of ``diagram`` and the variables of its repetitions (``i`` of ``layers.i``);
    ``axes``: the distinct axis objects on its wires when known (:func:`ncd.render.typeset.wire_axes_read`, read
    once per layout), then only the repetitions are looked for (each shared node once)."""
    out: set[str] = set()
    if axes is not None:
        out.update(a.name for a in axes)
        seen_nodes: set[int] = set()
        stack = [diagram]
        while stack:
            node = stack.pop()
            if id(node) in seen_nodes:
                continue
            seen_nodes.add(id(node))
            if isinstance(node, Repeat):
                out.add("λ" if node.var in ("lam", "lambda", "λ") else node.var)
            stack.extend(node.children())
        return out
    seen: set[int] = set()
    for node in diagram.walk():
        if isinstance(node, Repeat):
            out.add("λ" if node.var in ("lam", "lambda", "λ") else node.var)
        for typ in (node.dom, node.cod):
            if id(typ) not in seen:
                seen.add(id(typ))
                out.update(a.name for seg in typ for a in seg)
    return out


def _lay_page(ctx: Layout, first: Sequence[_Section], target: float, Frag: type[Frag]) -> Frag:
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


def _with_frame(ctx: Layout, section: _Section, fn: Callable[[], _T]) -> _T:
    saved = (ctx.depth, list(ctx.path))
    ctx.depth, ctx.path = section.depth, list(section.path)
    try:
        return fn()
    finally:
        ctx.depth, ctx.path = saved


def _lay_section(ctx: Layout, section: _Section, target: float, page: Frag, y: float, queue: list[_Section],
                 defined: list[Block], Frag: type[Frag]) -> float:
    """A definition (or the diagram itself): its header and its rows; a definition several blocks of one name
    share labels the wires that differ between them with symbols (:mod:`ncd.render.generic`)."""
    generic = None
    if section.header is not None and section.instances:
        blocks = [section.header, *section.instances]
        indices = family_indices(blocks)
        if indices is not None:  # the family's index (stages.i): a letter no other symbol or family has
            indices = _list_index(ctx, section, indices, queue)
        generic = generic_labels(blocks, taken=ctx.symbols, indices=indices, var=section.index)
    if generic is None:
        return _lay_rows(ctx, section, target, page, y, queue, defined, Frag)
    ctx.generic = generic[0]
    ctx.symbols.update(k for k, _ in generic[1])
    try:
        return _lay_rows(ctx, section, target, page, y, queue, defined, Frag)
    finally:
        ctx.generic = None


def _lay_rows(ctx: Layout, section: _Section, target: float, page: Frag, y: float, queue: list[_Section],
              defined: list[Block], Frag: type[Frag]) -> float:
    from ncd.render.layout import flat

    p = ctx.style.pitch
    if section.header is not None:  # the block's own legend rows (its fence is not drawn) go with its header
        header, index = family_header([section.header, *section.instances], section.index, section.index_text,
                                      section.index_values)
        y = _lay_header(ctx, header, section.path, page, y, Frag, _block_rows(section.header)
                        + tuple(r for b in section.inner for r in _block_rows(b)) + index,
                        _opened_title(ctx, header, section))
    _with_frame(ctx, section, lambda: _fit_groups(ctx, section, 0.8 * target, queue, defined))
    rows = _with_frame(ctx, section, lambda: pack(ctx, section.groups, target))
    indent = ARROW_RUN + 4.0
    masks = row_masks(rows) if ctx.style.labels == "all" else [(None, None)] * len(rows)
    for k, groups in enumerate(rows):
        frag = _with_frame(ctx, section, lambda groups=groups, k=k: draw_row(ctx, groups, *masks[k]))  # type: ignore[misc]
        x0 = indent if k > 0 else 0.0
        dy = y - frag.top + (0.6 * p if k else 0.0)
        page.place(frag, x0, dy)
        right = x0 + frag.w
        # the arrows are made when painted (most attempts at a page are discarded), placed where they were added
        if k > 0:  # arrows coming in from the previous row
            arrows = _arrows([(x0 - ARROW_RUN, wy + dy - ARROW_DROP, x0, wy + dy, True) for wy in flat(frag.ins)])
            if arrows is not None:
                page.place(arrows, 0.0, 0.0)
        if k < len(rows) - 1:  # arrows going on to the next row
            arrows = _arrows([(right, wy + dy, right + ARROW_RUN, wy + dy + ARROW_DROP, False) for wy in flat(frag.outs)])
            if arrows is not None:
                page.place(arrows, 0.0, 0.0)
            right += ARROW_RUN + 2.0
        bottom = frag.bottom + dy + (ARROW_DROP if k < len(rows) - 1 else 0.0)
        page.include(frag.top + dy, bottom)
        page.w = max(page.w, right)
        y = bottom + 0.6 * p
    return y


def _opened_title(ctx: Layout, header: Block, section: _Section) -> str | None:
    """The title of a definition drawing the blocks nested in its header in one (``section.inner``): the header's
    name, then each inner block's, the last one with its class (``block.3 = conv: ParametrizedConv1d``); ``None``
    (the header's own) where an instance's inner blocks are named otherwise, or each is the header's module (a
    repetition's ``layers.i`` around ``layers.0``)."""
    if not section.inner:
        return None
    names = [b.name for b in section.inner]
    if any([b.name for b in _opened(ctx, other)] != names for other in section.instances):
        return None
    names = [n for n in names if family(n) != family(header.name)]  # (layers.0 of a repetition's layers.i)
    if not names:
        return None
    return " = ".join([header.name.partition(": ")[0], *[n.partition(": ")[0] for n in names[:-1]], names[-1]])


def _lay_header(ctx: Layout, block: Block, path: list[str], page: Frag, y: float, Frag: type[Frag],
                rows: tuple[tuple[str, str], ...], title: str | None = None) -> float:
    """``box =``: the block drawn as its component box with its port labels (``title``: named so), then an equals
    sign."""
    from ncd.render.layout import framed

    box = ctx.component(block, title)
    framing = framed(ctx, box, block.dom, block.cod)
    head = Frag(framing.w, framing.top, framing.bottom, framing.ins, framing.outs, rows=rows)
    head.place(framing, 0.0, 0.0)
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
    return float(head.bottom + dy + 0.8 * ctx.style.pitch)
