"""What the layout may collapse inside a node: the blocks and scan boxes it holds, and the colours its outermost
fences take (:meth:`ncd.render.layout.Layout.lay_group` keys repeated groups by them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ncd.ir.diagram import Block, Box, Diagram
from ncd.render.style import fence_colour

_NONE: frozenset[Any] = frozenset()


def _inside(node: Diagram, memo: dict[int, tuple[Diagram, frozenset[int], frozenset[str]]]
            ) -> tuple[frozenset[int], frozenset[str]]:
    """The ids of the blocks and scan boxes inside ``node`` (a scan's body too: the layout may collapse any of
    them), and the colours its outermost fences and component boxes take next to no fence (``fence_colour``
    avoids the enclosing fence's colour only when it is one of these).  Found bottom-up, each node's once and kept
    in ``memo`` (``id`` → the node and its two sets): the columns inside a column are keyed too.  Recursive: the
    depth is the diagram's nesting, which ``ncd.limits`` bounds when the diagram is built; most nodes (boxes, weaves
    of boxes) hold neither and share one empty set."""
    hit = memo.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1], hit[2]
    if isinstance(node, Block):
        kids: Sequence[Diagram] = (node.body,)
    elif isinstance(node, Box):
        body = getattr(node.prim, "body", None)
        kids = (body,) if isinstance(body, Diagram) else ()
    else:
        kids = node.children()
    ids: frozenset[int] = _NONE
    colours: frozenset[str] = _NONE
    more_ids: set[int] | None = None
    more_colours: set[str] | None = None
    for kid in kids:
        kid_ids, kid_colours = _inside(kid, memo)
        if kid_ids:
            if not ids:
                ids = kid_ids
            elif kid_ids is not ids:
                more_ids = set(ids) if more_ids is None else more_ids
                more_ids.update(kid_ids)
        if kid_colours:
            if not colours:
                colours = kid_colours
            elif kid_colours is not colours:
                more_colours = set(colours) if more_colours is None else more_colours
                more_colours.update(kid_colours)
    if more_ids is not None:
        ids = frozenset(more_ids)
    if more_colours is not None:
        colours = frozenset(more_colours)
    if isinstance(node, Block):  # its own colour; nothing inside it is outermost
        ids = ids | {id(node)}
        colours = frozenset({fence_colour(node.name)})
    elif kids and isinstance(node, Box):  # a scan: drawn with its body inside, or as a Step box defined below
        ids = ids | {id(node)}
        colours = colours | {fence_colour("Step")}
    memo[id(node)] = (node, ids, colours)
    return ids, colours
