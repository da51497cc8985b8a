"""Two passes over a diagram whose equal parts are one object (a symbolised trace shares its nodes, primitives and
wires): the free size symbols found once per shared node (:meth:`ncd.ir.diagram.Diagram.free_symbols`), and
:func:`rebuilt`, a node at new sizes with the checks that read names only not repeated
(:func:`ncd.trace.symbolic.symbolize`)."""

from __future__ import annotations

from typing import Any

import sympy

from ncd.ir.axes import Type
from ncd.ir.checks import _box_types, _check_junctions, _set
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Seq, _prim_symbols

__all__ = ["rebuilt"]


def rebuilt(node: Diagram, **parts: Any) -> Diagram:
    """``node`` (a box, sequence, composition in parallel or block) with its primitive, parts or body replaced by ones
    whose axes have the same names and positions, only sizes changed (as :func:`ncd.trace.symbolic.symbolize` makes):
    the checks of its construction that read names only (a box's label, a block's name and meta, the nesting) held for
    ``node`` and are not repeated; those that read sizes are (a sequence's junctions, a box's signature)."""
    cls = type(node)
    new = cls.__new__(cls)
    if cls is Box:
        prim = parts["prim"]
        dom, cod = _box_types(prim)
        _set(new, prim=prim, label=node.label, source=node.source, dom=dom, cod=cod)  # type: ignore[attr-defined]
        return new
    if cls is Seq:
        seq = parts["parts"]
        _check_junctions(seq, range(1, len(seq)))
        _set(new, parts=seq, dom=seq[0].dom, cod=seq[-1].cod, _nesting=node.nesting())
        return new
    if cls is Par:
        par = parts["parts"]
        _set(new, parts=par, dom=Type(tuple([s for p in par for s in p.dom.segments])),
             cod=Type(tuple([s for p in par for s in p.cod.segments])), _nesting=node.nesting())
        return new
    if cls is Block:
        body = parts["body"]
        _set(new, body=body, name=node.name, meta=node.meta, dom=body.dom, cod=body.cod,  # type: ignore[attr-defined]
             _nesting=node.nesting())
        return new
    raise TypeError(f"rebuilt: not a box, sequence, composition in parallel or block: {cls.__name__}")


def _shared_symbols(root: Diagram, found: set[sympy.Symbol]) -> None:
    """Add to ``found`` the symbols of every node under ``root`` (as :meth:`Diagram.walk` reaches them), each node,
    primitive and tensor read once: equal parts of a diagram are often one object (a symbolised trace shares its
    nodes, primitives and wires), which the walk reaches at every place they stand."""
    seen: set[int] = set()
    prims: set[int] = set()
    segments: set[int] = set()
    walk = Diagram.walk
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        cls = type(node)
        if node is not root:
            known = node.__dict__.get("_free_symbols")
            if known is not None or cls.walk is not walk:  # asked before, or a repeat (it binds its variable)
                found |= known if known is not None else node.free_symbols
                continue
        if cls is Box:
            prim = node.prim  # type: ignore[attr-defined]
            if id(prim) not in prims:
                prims.add(id(prim))
                found |= _prim_symbols(prim)
        elif cls is Identity:
            for seg in node.type.segments:  # type: ignore[attr-defined]
                if id(seg) not in segments:
                    segments.add(id(seg))
                    for a in seg.axes:
                        if not a.size.is_Integer:
                            found |= a.size.free_symbols
                    if seg.range is not None:
                        found |= seg.range.free_symbols
        else:  # a sequence, composition in parallel, block (none) or weave (its axis's size)
            found |= node._own_symbols()
        stack.extend(node.children())
