"""The definitions a wrapped page draws (:mod:`ncd.render.wrap`): its sections, their columns, and the blocks collapsed
into component boxes to fit a row, each defined once below.

A :class:`_Section` is one definition on the page: an optional header block (``box =``) and the columns of its
contents (:func:`_columns`: the steps of its chain, runs of one-branch steps drawn as their branches).
:func:`_fit_groups` makes every column of a section narrower than a row where it can: a wide parallel part is split
into its branches' steps (the interchange law, :func:`_interchange`), a wide column has its outermost blocks collapsed
and their definitions queued (:func:`_define`: one per block name and shape); :func:`_list_index` chooses the index of a
definition several numbered blocks of one list share (``blocks.2i``, ``blocks.2i+1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ncd.ir.axes import Type
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Seq
from ncd.render.generic import _interleaved, differ_in_sizes, family, family_indices, fresh_index, same_shape, shareable
from ncd.render.lanes import gather
from ncd.render.pictograms_scan import scan_step

if TYPE_CHECKING:
    from ncd.render.layout import Layout

Group = tuple[Diagram, int]


@dataclass
class _Section:
    """One definition on the page: an optional header block (``box =``) and the columns of its contents."""

    header: Block | None
    groups: list[Group]
    dom: Type
    cod: Type
    path: list[str] = field(default_factory=list)
    depth: int = 0
    #: other blocks of the header's name and shape drawn by this definition, their sizes as symbols
    instances: list[Block] = field(default_factory=list)
    #: the letter indexing the instances of a family (``stages.i``), chosen when the definition is laid out
    index: str = "i"
    #: the instances' index as their name writes it (``2i+1``: one of several definitions of one list) and the
    #: values of the letter (``None``: the letter itself, its values the instances' numbers)
    index_text: str | None = None
    index_values: list[int] | None = None
    #: the blocks the header's definition draws in one (:func:`_opened`): each the whole body of the one before
    inner: list[Block] = field(default_factory=list)


def _chain(node: Diagram) -> list[Diagram]:
    if isinstance(node, Seq):
        return [x for part in node.parts for x in _chain(part)]
    return [node]


def _columns(ctx: Layout, node: Diagram) -> list[Diagram]:
    """The steps of ``node``'s chain, runs of one-branch steps drawn as their branches (:mod:`ncd.render.lanes`);
    the steps each run replaces are kept (``ctx.runs``): a run too wide for a row is drawn as it was traced.
    The columns are made once per node (``ctx.split``): every attempt at the page lays out the same columns, which the
    memo then reuses."""
    found = ctx.split.get(("chain", id(node)))
    if found is None or found[0] is not node:
        found = ctx.split[("chain", id(node))] = (node, gather(_chain(node), ctx.runs))
    return found[1]


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


def _outer_scans(node: Diagram) -> list[Box]:
    """The scan boxes of ``node`` not nested in a block (in order)."""
    found: list[Box] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Box) and current.prim.op == "scan":
            found.append(current)
        elif not isinstance(current, Block):
            stack.extend(reversed(list(current.children())))
    return found


def _block_rows(block: Block) -> tuple[tuple[str, str], ...]:
    legend = block.get("legend")
    if not legend:
        return ()
    return tuple(legend.items()) if isinstance(legend, dict) else tuple(legend)


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


def _interchanged(ctx: Layout, node: Par) -> list[Diagram]:
    """:func:`_interchange` made once per node (``ctx.split``)."""
    found = ctx.split.get(("branches", id(node)))
    if found is None or found[0] is not node:
        found = ctx.split[("branches", id(node))] = (node, _interchange(node))
    return found[1]


def _fit_groups(ctx: Layout, section: _Section, limit: float, queue: list[_Section], defined: list[Block]) -> None:
    """Make every column of ``section`` narrower than ``limit`` where it can: a wide parallel part is split
    into its branches' steps (interchange law); a wide column has its outermost blocks collapsed, their
    definitions queued."""
    out: list[Group] = []
    groups, runs = (list(section.groups), {}) if section.instances else _runs(ctx, list(section.groups))
    work = list(groups)
    kin = set(runs) if runs else _kin(groups)
    while work:
        node, count = work.pop(0)
        wide = id(node) in kin or _wider(ctx, node, count, limit)
        if wide and count == 1 and isinstance(node, Par):
            run = ctx.runs.get(id(node))
            steps = run[1] if run is not None and run[0] is node else _interchanged(ctx, node)
            if len(steps) > 1:
                work[0:0] = ctx.groups(steps)
                continue
        blocks = [b for b in _outer_blocks(node) if id(b) not in ctx.collapse] if wide else []
        if wide and not blocks:  # a scan's body is wrapped as a block: a Step box, defined below
            for scan in _outer_scans(node):
                if id(scan) not in ctx.collapse:
                    ctx.collapse.add(id(scan))
                    _define(ctx, scan_step(scan), section, queue, defined)
        for b in blocks:
            ctx.collapse.add(id(b))
            # a definition shared by blocks of one name draws the first one's contents: the blocks there stand
            # for the blocks in the same place of the others, which need a definition as well
            where = _path_to(section.header.body, b) if section.header is not None and section.instances else None
            others = [_follow(other.body, where) for other in section.instances] if where is not None else []
            for block in runs.get(id(b), [b]) + [o for o in others if isinstance(o, Block)]:
                _define(ctx, block, section, queue, defined)
        out.append((node, count))
    section.groups = out


#: the fewest sibling blocks of one family drawn by one definition however narrow they are
KIN = 3


def _kin(groups: Sequence[Group]) -> set[int]:
    """The columns of a section that are blocks of one family (``layer.i``) and shape differing only in their sizes,
    :data:`KIN` or more of them: each is drawn as its component box and all share one definition, its sizes symbols
    with a legend row giving each instance's (:func:`ncd.render.generic.generic_labels`), as the paper draws a block
    once whatever sizes each use of it has."""
    families: dict[str, list[list[Block]]] = {}
    for node, _ in groups:
        if not isinstance(node, Block):
            continue
        kinds = families.setdefault(family(node.name), [])
        kind = next((k for k in kinds if same_shape(k[0], node)), None)
        if kind is None:
            kinds.append([node])
        else:
            kind.append(node)
    out: set[int] = set()
    for kinds in families.values():
        for kind in kinds:
            if len(kind) >= KIN and differ_in_sizes(kind):
                out.update(map(id, kind))
    return out


def _runs(ctx: Layout, groups: list[Group]) -> tuple[list[Group], dict[int, list[Block]]]:
    """``groups`` with each run of :data:`KIN` or more consecutive numbered blocks of one family (``layer.0`` …
    ``layer.25``), :data:`KIN` or more of them kin (:func:`_kin`), replaced by one block of their sequence named by the
    run (``layer.0–25``): drawn as one component box, its wires labelled by the first block's inputs and the last
    one's outputs; the blocks of the run (by the run block's id) are defined below.  Made once per run (``ctx.split``)."""
    kin = _kin(groups)
    if len(kin) < KIN:
        return groups, {}
    out: list[Group] = []
    runs: dict[int, list[Block]] = {}
    k = 0
    while k < len(groups):
        node, count = groups[k]
        end = k + 1
        if isinstance(node, Block) and count == 1:
            name = family(node.name)
            while end < len(groups) and groups[end][1] == 1 and isinstance(after := groups[end][0], Block) \
                    and family(after.name) == name:
                end += 1
        run = [g[0] for g in groups[k:end] if isinstance(g[0], Block)]
        indices = family_indices(run) if len(run) >= KIN else None
        if indices is None or indices != list(range(indices[0], indices[0] + len(run))) \
                or sum(id(b) in kin for b in run) < KIN:
            out.append(groups[k])
            k += 1
            continue
        key = ("run", id(run[0]))  # (a column starts one run)
        found = ctx.split.get(key)
        if found is None or len(found[1]) != len(run) or any(a is not b for a, b in zip(found[1], run)):
            whole = Block(Seq.of(*run), family(run[0].name, f"{indices[0]}–{indices[-1]}"))
            found = ctx.split[key] = (whole, list(run))
        runs[id(found[0])] = run
        out.append((found[0], 1))
        k = end
    return out, runs


def _wider(ctx: Layout, node: Diagram, count: int, limit: float) -> bool:
    """Whether column ``node`` (``count`` of it folded) is laid out wider than ``limit``: a container whose lower
    bound (:meth:`Layout.probe`) says so is not laid out (it is split into its branches' steps, or its blocks are
    collapsed: the page never draws it)."""
    from ncd.render.layout import Layout

    if isinstance(node, (Block, Seq, Par)) and _holds_kin(ctx, node):  # its family's blocks are defined once below
        return True
    if type(ctx) is Layout and not ctx.notes and ctx._container(node, count) is not None \
            and ctx.probe(node, count, text=False, stop=limit)[0] > limit:
        return True
    return ctx.lay_group(node, count).w > limit


def _holds_kin(ctx: Layout, node: Diagram) -> bool:
    """Whether ``node`` holds a family of blocks that differ in sizes (:func:`ncd.render.wrap._has_kin`), found once
    per node (``ctx.split``)."""
    from ncd.render.wrap import _blocks_in, _families, _has_kin

    if ctx.kin_bound is not None and ctx.kin_bound < KIN:  # (no family of the page has that many blocks)
        return False
    if len(_blocks_in(node)) < KIN:  # (nor of this node: fewer blocks in all)
        return False
    found = ctx.split.get(("kin", id(node)))
    if found is None or found[0] is not node:
        found = ctx.split[("kin", id(node))] = (node, [node] if _has_kin(_families(node)) else [])
    return bool(found[1])


def _define(ctx: Layout, b: Block, section: _Section, queue: list[_Section], defined: list[Block]) -> None:
    """Queue the definition of collapsed block ``b`` unless one is drawn already: one per block name, its sizes as
    symbols, where the blocks of that name have one shape (:func:`ncd.render.generic.generic_labels`)."""
    # (equal blocks have one name and one type of wires: cheap tests first, the deep comparison of the bodies last;
    # EnCodec's ~600 same-named blocks of other sizes compared deeply cost ~1.5 ms a drawing, ~0.5 ms so)
    if any(b is d or (b.name == d.name and b.dom == d.dom and b.cod == d.cod and b == d) for d in defined):
        return
    defined.append(b)
    # a definition's header and instances share its drawing (each instance joined so), and blocks share one exactly
    # when each shares it with the first (shareable compares every block with the first alone: its shape, and the
    # axes on its wires in the places of the first's): b is asked about with the header alone, not with every
    # instance again (a family of n instances compared n² times: EnCodec's codec blocks)
    pending = next((q for q in queue if q.header is not None and family(q.header.name) == family(b.name)
                    and shareable([q.header, b])), None)
    if pending is not None:
        pending.instances.append(b)
        return
    queue.append(_section(ctx, b, section.path, section.depth))


def _section(ctx: Layout, b: Block, path: list[str], depth: int) -> _Section:
    """The definition of block ``b`` (its enclosing blocks' names ``path``, at ``depth``): a block that only wraps
    another (:func:`_opened`) is defined with that block's contents, in one section."""
    inner = _opened(ctx, b)
    body = inner[-1].body if inner else b.body
    names = [b.name] + [x.name for x in inner]
    return _Section(b, ctx.groups(_columns(ctx, body)), b.dom, b.cod, path + names, depth + 1 + len(inner), inner=inner)


def _opened(ctx: Layout, b: Block) -> list[Block]:
    """The blocks nested in ``b`` each the whole body of the one before (``block.3: EncodecConv1d`` whose body is
    ``conv: ParametrizedConv1d``; identities around it aside): the same wires in and out, nothing else, so a
    definition of ``b`` drawing the innermost one's contents draws the same diagram.

    A block is opened only where its definition would draw nothing else: every block of its family in the diagram
    (``ctx.families``) is one wrapped so by a block of ``b``'s family (a ``conv`` that other blocks' definitions
    also hold keeps its own definition, which they share), and its component box shows no parameters (a title
    would not show them)."""
    from ncd.render.pictograms import shown_meta

    out: list[Block] = []
    node = b
    while (inner := _wrapped(ctx, node)) is not None and not shown_meta(inner) and _only_wrapped(ctx, b, inner):
        out.append(inner)
        node = inner
    return out


def _only_wrapped(ctx: Layout, b: Block, inner: Block) -> bool:
    """Whether every block of ``inner``'s family is a block of ``b``'s family or the one such a block wraps."""
    wrappers = ctx.families.get(family(b.name), [])
    inners = {id(x) for w in wrappers if (x := _wrapped(ctx, w)) is not None}
    outers = {id(w) for w in wrappers}
    return id(inner) in inners and all(id(x) in inners or id(x) in outers
                                       for x in ctx.families.get(family(inner.name), [inner]))


def _wrapped(ctx: Layout, node: Block) -> Block | None:
    """The one block ``node``'s body wraps (:func:`_opened`), found once per block (``ctx.split``)."""
    found = ctx.split.get(("wrapped", id(node)))
    if found is None or found[0] is not node:
        inner = _wraps(node)
        found = ctx.split[("wrapped", id(node))] = (node, [inner] if inner is not None else [])
    return found[1][0] if found[1] else None  # type: ignore[return-value]


def _wraps(node: Block) -> Block | None:
    steps = [x for x in _chain(node.body) if not isinstance(x, Identity)]
    return steps[0] if len(steps) == 1 and isinstance(steps[0], Block) else None


def _path_to(root: Diagram, target: Diagram) -> list[int] | None:
    """The child indices from ``root`` down to ``target`` (by identity)."""
    stack: list[tuple[Diagram, list[int]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        stack.extend((child, path + [k]) for k, child in enumerate(node.children()))
    return None


def _follow(root: Diagram, path: list[int]) -> Diagram | None:
    node = root
    for k in path:
        children = node.children()
        if k >= len(children):
            return None
        node = children[k]
    return node


def _list_index(ctx: Layout, section: _Section, indices: list[int], queue: Sequence[_Section]) -> list[int]:
    """Choose the index of a family definition (``section.index``) and return the values it takes.

    The numbered blocks of one list may need several definitions, one per shape (a Swin stage alternates plain
    and shifted-window layers: ``blocks.0, 2, 4`` and ``blocks.1, 3, 5``).  When the definitions of the list
    interleave evenly — ``d`` of them, each numbered ``a + d·k`` for ``k = 0 … n−1`` — they share one index:
    ``blocks.2i`` and ``blocks.2i+1``, with one legend row ``i = 0, 1, 2``.  Otherwise each takes a fresh letter
    (:func:`fresh_index`) whose values are the blocks' own numbers."""
    name = family(section.header.name) if section.header is not None else ""
    known = ctx.lists.get(name)
    if known is None:
        lists = [indices] + [ix for q in queue if q.header is not None and q.instances
                             and family(q.header.name) == name
                             for ix in [family_indices([q.header, *q.instances])] if ix is not None]
        scheme = _interleaved(lists)
        if scheme is not None:
            known = ctx.lists[name] = (fresh_index(ctx.symbols), *scheme)
            ctx.symbols.add(known[0])
    if known is not None:
        letter, stride, count = known
        start = indices[0]
        if indices == [start + stride * k for k in range(count)]:
            section.index, section.index_values = letter, list(range(count))
            section.index_text = f"{stride}{letter}" + (f"+{start}" if start else "")
            return section.index_values
    section.index = fresh_index(ctx.symbols)
    ctx.symbols.add(section.index)
    return indices
