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
from ncd.ir.diagram import Diagram
from ncd.ir.primitive import Primitive
from ncd.ir.size import symbol
from ncd.prims.movement import SliceOp

__all__ = ["symbolize", "SIZED_BY_TRACE"]

#: primitives holding traced tensors or calls whose shapes are fixed by the trace
SIZED_BY_TRACE = ("constant", "parameter", "opaque")


def _base(name: str) -> str:
    return name.rstrip("ʹ")


def symbolize(body: Diagram, sizes: dict[str, int]) -> tuple[Diagram, list[str]]:
    """``body`` with the axes named in ``sizes`` (or their primes) of that size made symbols; and the boxes whose
    stored tensors or calls then depend on a symbol (they hold at the traced sizes only)."""
    symbols = {n: symbol(n) for n in sizes}
    fixed: list[str] = []

    def axis(a: Axis) -> Axis:
        base = a.name if a.name in sizes else _base(a.name) if _base(a.name) == "t" else None
        if base in sizes and not a.size.free_symbols and int(a.size) == sizes[base]:
            return dataclasses.replace(a, size=symbols[base])
        return a

    def value(v: Any) -> Any:
        if isinstance(v, Axis):
            return axis(v)
        if isinstance(v, Segment):
            return dataclasses.replace(v, axes=tuple(axis(a) for a in v.axes))
        if isinstance(v, Type):
            return Type(tuple(value(s) for s in v.segments))
        if isinstance(v, tuple):
            return tuple(value(x) for x in v)
        if isinstance(v, Primitive):
            return prim(v)
        if isinstance(v, Diagram):
            return node(v)
        return v

    def prim(p: Primitive) -> Primitive:
        changes = {f.name: value(getattr(p, f.name)) for f in dataclasses.fields(p)}
        if isinstance(p, SliceOp) and changes["output"] is not p.output and p.start == 0 and p.step == 1:
            changes["stop"] = changes["output"].size
        if p.op == "view":  # a merge of symbolised axes: the product
            src = [a for a in changes["source"].axes]
            out = list(changes["target"].axes)
            i = 0
            for j, b in enumerate(out):
                group, traced = [], 1
                while i < len(src) and traced < int(b.size.subs({symbols[n]: sizes[n] for n in symbols})):
                    group.append(src[i])
                    traced *= int(src[i].size.subs({symbols[n]: sizes[n] for n in symbols}))
                    i += 1
                if len(group) > 1 and not b.size.free_symbols and any(a.size.free_symbols for a in group):
                    out[j] = dataclasses.replace(b, size=sympy.Mul(*[a.size for a in group]))
                if not group:
                    i += 1
            changes["target"] = dataclasses.replace(changes["target"], axes=tuple(out))
        new = dataclasses.replace(p, **changes)
        if p.op in SIZED_BY_TRACE and new.free_symbols():
            fixed.append(f"{p.op} {p.label()} '{new.signature()[1]}'")
        return new

    def node(d: Diagram) -> Diagram:
        record: Any = d  # every node kind is a frozen dataclass
        changes = {f.name: value(getattr(d, f.name)) for f in dataclasses.fields(record) if f.init}
        new: Diagram = dataclasses.replace(record, **changes)
        return new

    return node(body), fixed
