"""Sizes as symbols: the batch and sequence axes of a traced diagram drawn as ``b``, ``t`` (traced values as defaults).

:func:`symbolize` rebuilds the diagram with every axis named like an input's batch or
sequence axis (``b``, ``t``, and the primed ``tʹ`` of attention keys) sized by a symbol
of that name; ``view`` boxes that merge such axes get the product, slices that keep the
first ``t`` rows of a table stop at ``t``.  The traced sizes become the block's defaults,
so ``d.to_torch(t=12)`` lowers at another length where the boxes allow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sympy

from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.diagram import Block, Box, Diagram, Par, Seq, Weave, _set, _woven_types, rebuilt
from ncd.ir.primitive import Primitive
from ncd.ir.size import symbol
from ncd.prims.movement import SliceOp

__all__ = ["symbolize", "SIZED_BY_TRACE"]

#: primitives holding traced tensors or calls whose shapes are fixed by the trace
SIZED_BY_TRACE = ("constant", "parameter", "opaque")


def _base(name: str) -> str:
    return name.rstrip("ʹ")


_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    """The names of the init fields of a dataclass (primitives and nodes have no other fields), read once per class."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.init)
    return names


_ATOM, _AXIS, _SEGMENT, _TYPE, _TUPLE, _PRIMITIVE, _NODE = "atom", "axis", "segment", "type", "tuple", "primitive", "node"
_KINDS: dict[type, str] = {}


def _kind(cls: type) -> str:
    """What :func:`symbolize` rebuilds in a value of class ``cls`` (decided once per class)."""
    kind = _KINDS[cls] = (_AXIS if issubclass(cls, Axis) else _SEGMENT if issubclass(cls, Segment)
                          else _TYPE if issubclass(cls, Type) else _TUPLE if issubclass(cls, tuple)
                          else _PRIMITIVE if issubclass(cls, Primitive) else _NODE if issubclass(cls, Diagram) else _ATOM)
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
    return {x for a in segment.axes for x in a.size.free_symbols}


def symbolize(body: Diagram, sizes: dict[str, int]) -> tuple[Diagram, list[tuple[tuple[str, ...], str]]]:
    """``body`` with the axes named in ``sizes`` (or their primes) of that size made symbols; and the boxes whose
    stored tensors or calls then depend on a symbol (they hold at the traced sizes only): the sizes each depends on
    and the box."""
    symbols = {n: symbol(n) for n in sizes}
    traced_values = {symbols[n]: sizes[n] for n in symbols}
    fixed: list[tuple[tuple[str, ...], str]] = []
    done: dict[int, Any] = {}  # id -> rebuilt value (equal parts of a diagram are often one object)
    kept: list[Any] = []  # the originals whose ids key ``done``, alive until the walk ends

    def traced(size: Any) -> int:
        return int(size) if size.is_Integer else int(size.xreplace(traced_values))

    axes: dict[Axis, Axis] = {}

    def axis(a: Axis) -> Axis:
        if a not in axes:
            base = a.name if a.name in sizes else _base(a.name) if _base(a.name) == "t" else None
            symbolic = base in sizes and a.size.is_Integer and int(a.size) == sizes[base]
            axes[a] = dataclasses.replace(a, size=symbols[base]) if symbolic else a  # type: ignore[index]
        return axes[a]

    def value(v: Any) -> Any:
        kind = _KINDS.get(type(v))
        if kind is None:
            kind = _kind(type(v))
        if kind is _ATOM:
            return v
        if kind is _AXIS:
            return axis(v)
        key = id(v)
        found = done.get(key, done)
        if found is done:
            found = done[key] = _value(v, kind)
            kept.append(v)
        return found

    def _value(v: Any, kind: str) -> Any:
        if kind is _SEGMENT:
            axes = tuple([axis(a) for a in v.axes])
            if all(a is b for a, b in zip(axes, v.axes)):
                return v
            # dataclasses.replace, spelt out: the dtype and range are the checked ones of ``v``
            return Segment(axes, v.dtype, v.range) if type(v) is Segment else dataclasses.replace(v, axes=axes)
        if kind is _TYPE:
            segments = tuple([value(s) for s in v.segments])
            return v if all(a is b for a, b in zip(segments, v.segments)) else Type(segments)
        if kind is _TUPLE:
            items = tuple([x if _KINDS.get(type(x)) is _ATOM else value(x) for x in v])
            return v if all(a is b for a, b in zip(items, v)) else items
        if kind is _PRIMITIVE:
            return prim(v)
        return node(v)

    def prim(p: Primitive) -> Primitive:
        names = _fields(type(p))
        changes: dict[str, Any] = {}
        changed = False
        for name in names:
            old = getattr(p, name)
            new = old if _KINDS.get(type(old)) is _ATOM else value(old)
            changes[name] = new
            changed = changed or new is not old
        if not changed:
            return p  # nothing sized by a symbol: the box as it was
        if isinstance(p, SliceOp) and changes["output"] is not p.output and p.start == 0 and p.step == 1:
            changes["stop"] = changes["output"].size
        if p.op == "view":  # a merge of symbolised axes: the product
            src = [a for a in changes["source"].axes]
            out = list(changes["target"].axes)
            i = 0
            for j, b in enumerate(out):
                group, product = [], 1
                while i < len(src) and product < traced(b.size):
                    group.append(src[i])
                    product *= traced(src[i].size)
                    i += 1
                if len(group) > 1 and not b.size.free_symbols and any(a.size.free_symbols for a in group):
                    out[j] = dataclasses.replace(b, size=sympy.Mul(*[a.size for a in group]))
                if not group:
                    i += 1
            changes["target"] = dataclasses.replace(changes["target"], axes=tuple(out))
        new = type(p)(**changes)  # dataclasses.replace, every field given
        if p.op in SIZED_BY_TRACE and (held := new.free_symbols()):
            fixed.append((tuple(sorted(str(x) for x in held)), f"{p.op} {p.label()} '{new.signature()[1]}'"))
        elif p.op == "view" and (held := _symbols(changes["target"]) - _symbols(changes["source"])):
            # a tensor of fixed sizes read as one sized by the input (T5's relative-position buckets, computed at the
            # traced length): its entries are those of the traced sizes only
            fixed.append((tuple(sorted(str(x) for x in held)), f"view '{changes['source']}' -> '{changes['target']}'"))
        return new

    def node(d: Diagram) -> Diagram:
        cls = type(d)
        if cls is Box:  # the label and source are kept: only the primitive may change
            new_prim = value(d.prim)  # type: ignore[attr-defined]
            return d if new_prim is d.prim else rebuilt(d, prim=new_prim)  # type: ignore[attr-defined]
        if cls is Seq or cls is Par:
            parts = d.parts  # type: ignore[attr-defined]
            new_parts = tuple([value(x) for x in parts])
            if all(a is b for a, b in zip(new_parts, parts)):
                return d
            return rebuilt(d, parts=new_parts)
        if cls is Weave:
            inner, ax = value(d.inner), axis(d.axis)  # type: ignore[attr-defined]
            if inner is d.inner and ax is d.axis:  # type: ignore[attr-defined]
                return d
            if ax.name == d.axis.name:  # type: ignore[attr-defined]
                return _weave(inner, ax, d)  # type: ignore[arg-type]
            return Weave(inner, ax, d.dom_pos, d.cod_pos)  # type: ignore[attr-defined]
        if cls is Block:
            body = value(d.body)  # type: ignore[attr-defined]
            meta = value(d.meta)  # type: ignore[attr-defined]
            if body is d.body and meta is d.meta:  # type: ignore[attr-defined]
                return d
            return rebuilt(d, body=body) if meta is d.meta else Block(body, d.name, meta)  # type: ignore[attr-defined]
        changes = {name: value(getattr(d, name)) for name in _fields(cls)}  # every node is a frozen dataclass
        if all(v is getattr(d, k) for k, v in changes.items()):
            return d
        new: Diagram = cls(**changes)
        return new

    try:
        return node(body), fixed
    finally:  # the nested functions refer to each other (a cycle): what they hold is freed now, not by the collector
        done.clear()
        kept.clear()
        axes.clear()
