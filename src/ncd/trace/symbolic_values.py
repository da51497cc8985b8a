"""The values :func:`~ncd.trace.symbolic.symbolize` rebuilds — axes, segments, types, tuples, primitives and
diagram nodes, each kind decided once per class (:func:`_kind`) — the rebuilders that skip the checks a rebuilt
value still passes (:func:`_weave`, :func:`_boxed`, :func:`_sequenced`), and which kept values are stale when a
name or a range is followed anew (:func:`_mark_stale` by a scan, :func:`indexed_stale` through an index)."""

from __future__ import annotations

import dataclasses
from typing import Any

import sympy

from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.checks import _check_junctions
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Seq, Weave, _set, _woven_types
from ncd.ir.primitive import Primitive

_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    """The names of the init fields of a dataclass (primitives and nodes have no other fields), read once per class."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.init)
    return names


_ATOM, _AXIS, _SEGMENT, _TYPE, _TUPLE, _PRIMITIVE, _NODE = "atom", "axis", "segment", "type", "tuple", "primitive", "node"
_EXPR = "expr"  # a size or number in sympy: kept as it is, its symbols noted (``found``)
_LEAVES = (_ATOM, _EXPR)
_KINDS: dict[type, str] = {}


def _kind(cls: type) -> str:
    """What :func:`~ncd.trace.symbolic.symbolize` rebuilds in a value of class ``cls`` (decided once per class)."""
    kind = _KINDS[cls] = (_AXIS if issubclass(cls, Axis) else _SEGMENT if issubclass(cls, Segment)
                          else _TYPE if issubclass(cls, Type) else _TUPLE if issubclass(cls, tuple)
                          else _PRIMITIVE if issubclass(cls, Primitive) else _NODE if issubclass(cls, Diagram)
                          else _EXPR if issubclass(cls, sympy.Basic) else _ATOM)
    return kind


def _weave(inner: Diagram, axis: Axis, old: Weave) -> Weave:
    """``old`` over a rebuilt ``inner`` and ``axis``: the same names and positions, so the checks of
    ``Weave.__post_init__`` hold as they did for ``old``; only the types are remade (sizes may be symbols now)."""
    node = Weave.__new__(Weave)
    dom, cod = _woven_types(inner.dom, inner.cod, axis, old.dom_pos, old.cod_pos)
    _set(node, inner=inner, axis=axis, dom_pos=old.dom_pos, cod_pos=old.cod_pos, dom=dom, cod=cod,
         _nesting=inner.nesting() + 1)
    return node


def _symbols(segment: Segment) -> set[Any]:
    found: set[Any] = set()
    for a in segment.axes:
        size = a.size
        if size.is_Symbol:
            found.add(size)
        elif not size.is_Integer:
            found |= size.free_symbols
    return found


def _boxed(old: Box, prim: Primitive) -> Box:
    """``old`` over a rebuilt ``prim`` (:func:`ncd.ir.diagram.rebuilt`, without its check that no tensor names an axis
    twice: the names are ``old``'s)."""
    node = Box.__new__(Box)
    dom, cod = prim.signature()
    node.__dict__.update(prim=prim, label=old.label, source=old.source, dom=dom, cod=cod)
    return node


def _sequenced(old: Seq, parts: tuple[Diagram, ...]) -> Seq:
    """``old`` over rebuilt ``parts`` (:func:`ncd.ir.diagram.rebuilt`), checking only the junctions a rebuilt part
    meets (the others are ``old``'s, which held)."""
    was = old.parts
    _check_junctions(parts, [k for k in range(1, len(parts)) if parts[k - 1] is not was[k - 1] or parts[k] is not was[k]])
    node = Seq.__new__(Seq)
    node.__dict__.update(parts=parts, dom=parts[0].dom, cod=parts[-1].cod, _nesting=old.nesting())
    return node


def indexed_stale(kept: list[Any], upto: int, index: tuple[dict[int, list[int]], dict[Axis, list[int]],
                  dict[int, list[int]], set[int]], done: dict[int, Any], changed: set[Axis], ranges: dict[int, Any],
                  stale: set[int]) -> int:
    """Adds to ``stale`` the ids of the values of ``kept`` (rebuilt: in ``done``) whose wires have an axis in
    ``changed`` or a range in ``ranges``, and of every kept value holding a stale one: up from those through
    ``index`` of the originals' parts (id of an original -> ids of the kept originals holding it; axis -> ids of the
    kept originals holding it; traced range -> ids of the kept segments of that range; ids indexed), made as values
    are first rebuilt (``kept[upto:]`` are not indexed yet: indexed here; an original's parts are its own, each is
    indexed once).  Returns how many of ``kept`` are indexed."""
    parents, holders, by_range, indexed = index
    kinds = _KINDS
    for v in kept[upto:]:
        key = id(v)
        if key in indexed:
            continue
        indexed.add(key)
        cls = type(v)  # the parts a value's rebuilding reads (as ``_value``, ``node`` and ``prim`` read them)
        held: Any = ()
        if cls is Type:
            parts: Any = v.segments
        elif cls is Identity:
            parts = (v.type,)
        elif cls is Weave:
            parts, held = (v.inner,), (v.axis,)
        elif cls is Box:
            parts = (v.prim,)
        elif cls is Par or cls is Seq:
            parts = v.parts
        else:
            kind = kinds[cls]
            if kind is _SEGMENT:
                parts, held = (), v.axes
                if v.range is not None and v.range.is_Integer:
                    by_range.setdefault(int(v.range), []).append(key)
            elif kind is _TYPE:
                parts = v.segments
            elif kind is _TUPLE:
                parts = [x for x in v if kinds.get(type(x)) not in _LEAVES]
            elif cls is Block:
                parts = (v.body, v.meta)
            else:
                parts = [x for x in (getattr(v, name) for name in _fields(cls)) if kinds.get(type(x)) not in _LEAVES]
            if kind is _TUPLE or kind is _PRIMITIVE or kind is _NODE:
                held = [x for x in parts if kinds.get(type(x)) is _AXIS]
                if held:
                    parts = [x for x in parts if kinds.get(type(x)) is not _AXIS]
        for x in parts:
            got = parents.get(id(x))
            if got is None:
                parents[id(x)] = [key]
            else:
                got.append(key)
        for a in held:
            got = holders.get(a)
            if got is None:
                holders[a] = [key]
            else:
                got.append(key)
    for a in changed:
        stale.update(k for k in holders.get(a, ()) if k in done)
    for r in ranges:
        stale.update(k for k in by_range.get(r, ()) if k in done)
    todo = list(stale)
    while todo:
        for k in parents.get(todo.pop(), ()):
            if k not in stale and k in done:
                stale.add(k)
                todo.append(k)
    return len(kept)


def _mark_stale(kept: list[Any], changed: set[Axis], ranges: dict[int, Any], stale: set[int]) -> None:
    """Adds to ``stale`` the ids of the values of ``kept`` (originals, parts before wholes) whose wires have an axis
    in ``changed`` or a range in ``ranges``, or that hold a stale value."""
    fresh = stale.isdisjoint  # (C-level tests of a value's parts: no frame per value)
    mark = stale.add
    kinds = _KINDS
    for v in kept:  # parts before wholes: a value is stale when one of its parts is
        cls = type(v)  # the parts a value's rebuilding reads (as ``_value``, ``node`` and ``prim`` read them)
        if cls is Type:
            if not fresh(map(id, v.segments)):
                mark(id(v))
        elif cls is Identity:
            if id(v.type) in stale:
                mark(id(v))
        elif cls is Weave:
            if id(v.inner) in stale or v.axis in changed:
                mark(id(v))
        elif cls is Box:
            if id(v.prim) in stale:
                mark(id(v))
        elif cls is Par or cls is Seq:
            if not fresh(map(id, v.parts)):
                mark(id(v))
        elif cls is Segment:
            if ((changed and not changed.isdisjoint(v.axes))
                    or (ranges and v.range is not None and v.range.is_Integer and int(v.range) in ranges)):
                mark(id(v))
        else:
            kind = kinds[cls]
            if kind is _SEGMENT:
                bad = ((changed and not changed.isdisjoint(v.axes))
                       or (ranges and v.range is not None and v.range.is_Integer and int(v.range) in ranges))
            elif kind is _TYPE:
                bad = not fresh(map(id, v.segments))
            elif kind is _TUPLE:
                bad = not fresh(map(id, v)) or (changed and not changed.isdisjoint(
                    [x for x in v if kinds.get(type(x)) is _AXIS]))
            elif cls is Block:
                bad = id(v.body) in stale or id(v.meta) in stale
            else:
                fields = [getattr(v, name) for name in _fields(cls)]
                bad = not fresh(map(id, fields)) or (changed and not changed.isdisjoint(
                    [x for x in fields if kinds.get(type(x)) is _AXIS]))
            if bad:
                mark(id(v))
