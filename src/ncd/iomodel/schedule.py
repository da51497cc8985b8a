"""Relabelling: which axes are grouped or streamed at which level, in which loop order.

``group`` and ``stream`` map a level name to ``{axis: size}``.  At each level its groups come
first (parallel groups on sibling units), then its streams in the order written (outer
first); the loops of a level sit inside those of the levels above it.  FlashAttention-1
streams keys outside queries, ``stream={"smem": {"x": Bc, "y": Br}}``; FlashAttention-2
groups queries and streams keys, ``group={"smem": {"y": Br}}, stream={"smem": {"x": Bc}}``.

Streaming axis ``b`` is legal only where an accumulator exists: contractions and sums over
``b`` and the online-softmax state.  An ordinary softmax over ``b`` is refused with an error
naming the rewrite, :func:`ncd.online_softmax`.

>>> import ncd
>>> from ncd.iomodel.program import flatten
>>> from ncd.iomodel.schedule import Schedule
>>> h = ncd.Hierarchy.preset("h100").restrict("hbm", "smem")
>>> p = flatten(ncd.Einsum("a b, b c -> a c"), {"a": 64, "b": 48, "c": 32})
>>> s = Schedule.make(h, p, {"smem": {"a": 16, "c": 8}}, {"smem": {"b": 12}})
>>> [(lp.kind, lp.axis, lp.chunk, lp.count) for lp in s.loops("smem")]
[('group', 'a', 16, 4), ('group', 'c', 8, 4), ('stream', 'b', 12, 4)]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import sympy

from ncd.errors import SizeError
from ncd.iomodel.hierarchy import Hierarchy, HierarchyError
from ncd.iomodel.program import Array, Program
from ncd.ir.diagram import Box, describe
from ncd.ir.size import size, size_text

__all__ = ["Loop", "Schedule", "StreamError", "SizeMap"]

SizeMap = Mapping[str, Mapping[str, "int | str | sympy.Expr"]]


class StreamError(HierarchyError):
    """An axis is streamed (or grouped) through an operation that has no accumulator along it."""


@dataclass(frozen=True)
class Loop:
    """One loop of the nest: ``count`` chunks of ``chunk`` indices of ``axis`` at ``level``."""

    level: str
    axis: str
    chunk: sympy.Expr
    count: sympy.Expr
    kind: Literal["group", "stream"]


@dataclass(frozen=True)
class Schedule:
    """The loop nest: for each level (top first), its group loops then its stream loops."""

    hierarchy: Hierarchy
    nest: tuple[Loop, ...]

    @staticmethod
    def make(hierarchy: Hierarchy, program: Program, group: SizeMap | None, stream: SizeMap | None) -> Schedule:
        axes: dict[str, sympy.Expr] = {}
        for arr in _arrays(program):
            for name, s in arr.axes:
                axes.setdefault(name, s)
        for what, spec in (("group", group), ("stream", stream)):
            for lvl in (spec or {}):
                if lvl not in hierarchy.levels:
                    raise HierarchyError(f"{what}: hierarchy {hierarchy.name} has no level {lvl!r}; its levels are"
                                         f" {', '.join(hierarchy.levels)}")
                if lvl == hierarchy.levels[0] and what == "stream":
                    raise HierarchyError(f"stream: {lvl!r} is the top level; stream into a level below it")
        chunk_now = dict(axes)
        nest: list[Loop] = []
        seen: set[tuple[str, str]] = set()
        for lvl in hierarchy.levels:
            for kind, spec in (("group", group), ("stream", stream)):
                for axis, value in ((spec or {}).get(lvl) or {}).items():
                    if axis not in axes:
                        raise SizeError(f"{kind} at {lvl}: the diagram has no axis {axis!r}; its axes are"
                                        f" {', '.join(sorted(axes))}")
                    if (lvl, axis) in seen:
                        raise HierarchyError(f"{kind} at {lvl}: axis {axis!r} is both grouped and streamed there")
                    seen.add((lvl, axis))
                    chunk = size(value) if isinstance(value, str) else sympy.sympify(value)
                    parent = chunk_now[axis]
                    count = sympy.simplify(parent / chunk)
                    if count.is_number and (not count.is_integer or count < 1):
                        raise SizeError(f"{kind} at {lvl}: a chunk of {size_text(chunk)} does not divide axis {axis!r}"
                                        f" of {size_text(parent)} (at the level above)")
                    chunk_now[axis] = chunk
                    nest.append(Loop(lvl, axis, chunk, count, kind))  # type: ignore[arg-type]
        sched = Schedule(hierarchy, tuple(nest))
        sched.check(program)
        return sched

    def loops(self, level: str) -> tuple[Loop, ...]:
        """The loops in effect at ``level``: those of every level down to it, outer first."""
        idx = self.hierarchy.levels.index(level)
        keep = set(self.hierarchy.levels[: idx + 1])
        return tuple(lp for lp in self.nest if lp.level in keep)

    def own(self, level: str) -> tuple[Loop, ...]:
        return tuple(lp for lp in self.nest if lp.level == level)

    @property
    def empty(self) -> bool:
        return not self.nest

    def chunk(self, level: str, axis: str, full: sympy.Expr) -> sympy.Expr:
        value = full
        for lp in self.loops(level):
            if lp.axis == axis:
                value = lp.chunk
        return value

    def describe(self) -> str:
        if not self.nest:
            return "no relabelling (every box reads and writes the top level)"
        parts = [f"{lp.level}: {'group' if lp.kind == 'group' else 'stream'} {lp.axis}->{size_text(lp.chunk)}"
                 for lp in self.nest]
        return "; ".join(parts)

    # -- legality ------------------------------------------------------------------
    def check(self, program: Program) -> None:
        """Refuse streaming or grouping an axis through an operation with no accumulator along it."""
        streamed = {lp.axis for lp in self.nest if lp.kind == "stream"}
        grouped = {lp.axis for lp in self.nest if lp.kind == "group"}
        reduced_over: dict[int, set[str]] = {}
        for op in program.ops:
            own = _own_axes(op.node)
            upstream: set[str] = set()
            for arr in op.inputs:
                upstream |= reduced_over.get(arr.uid, set())
            for axis in sorted(streamed & set(op.axes)):
                where = f"{describe(op.node)} (axis {axis} of size {size_text(op.axes[axis])})"
                if op.kind == "softmax" and axis in own:
                    raise StreamError(
                        f"cannot stream {axis!r} through the ordinary softmax {where}: softmax over {axis} is not"
                        f" streamable as written; rewrite it first with ncd.online_softmax(diagram), whose online"
                        f" state (running max m, rescaled running sum l and output o) accumulates over {axis}")
                if axis in upstream:
                    raise StreamError(
                        f"cannot stream {axis!r} through {where}: it uses data carrying {axis} together with a sum"
                        f" over {axis} computed before it; the streamed axis is removed in between")
                if axis in own and op.kind == "other":
                    raise StreamError(f"cannot stream {axis!r} through {where}: {op.label} acts along {axis} and"
                                      f" has no known accumulator; stream another axis")
            for axis in sorted(grouped & set(op.axes)):
                where = f"{describe(op.node)} (axis {axis} of size {size_text(op.axes[axis])})"
                if axis in op.reduced() or (axis in own and op.kind in ("softmax", "other")):
                    raise StreamError(f"cannot group {axis!r} through {where}: it combines values along {axis};"
                                      f" groups run independently, so stream {axis} instead")
            red = set(upstream) | (op.reduced() & streamed)
            for arr in op.outputs:
                reduced_over[arr.uid] = red


def _own_axes(node: object) -> set[str]:
    if isinstance(node, Box):
        return {a.name for seg in (*node.dom, *node.cod) for a in seg}
    return set()


def _arrays(program: Program) -> list[Array]:
    found: list[Array] = list(program.inputs)
    for op in program.ops:
        found += [*op.inputs, *op.params, *op.outputs]
    return found
