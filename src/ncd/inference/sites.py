"""The caches :func:`ncd.inference.derive.derive` finds (:class:`CacheSite`), the boxes that save them, and
:func:`resize`, which gives a box's axes new sizes (the prefill's prompt length, the step's one token)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sympy

from ncd.inference.errors import DecodeError
from ncd.ir.axes import SCALAR, Axis, Segment, Type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq, Weave
from ncd.ir.primitive import Primitive, map_axes, map_fields
from ncd.ir.size import Size, size_text, sizes_equal
from ncd.prims.movement import SliceOp
from ncd.prims.opaque import ViewOp
from ncd.prims.structure import CopyOp, DeleteOp, SaveOp

__all__ = ["CacheSite", "resize"]


@dataclass(frozen=True)
class CacheSite:
    """One cached wire: its slot ``key`` (indexed by the repetition ``var``), its segment and key axis.

    ``segment`` is the wire at the prefill's sizes (the key axis sized like the prompt);
    ``count`` is how many times the site runs (the repetition's length, a formula).
    """

    key: str
    var: str | None
    segment: Segment
    axis: str
    count: Size
    start: Size = sympy.Integer(0)
    blocks: tuple[str, ...] = ()
    #: batch axes (the token input's other axes): one token of one sequence does not carry them
    batch: tuple[str, ...] = ()
    #: the sliding window of the causal mask over this key axis (``None``: the cache keeps every position)
    window: Size | None = None
    #: a state's axes that the recurrence renames on reading it, ``(name, renamed)`` (a zero initial state's batch
    #: axis traced under a name of its own)
    aliases: tuple[tuple[str, str], ...] = ()

    def _batch(self, name: str) -> bool:
        return name in self.batch or dict(self.aliases).get(name) in self.batch

    def held(self, positions: Size) -> Size:
        """Positions the cache keeps after ``positions`` tokens: all, or the last ``window-1`` under a sliding window."""
        return positions if self.window is None else sympy.Min(positions, self.window - 1)

    @property
    def is_state(self) -> bool:
        """A recurrence's state (``axis`` empty): one tensor per sequence, whatever the number of tokens."""
        return not self.axis

    def per_token(self) -> Segment:
        """The cached wire without its key axis and batch axes: what one token of one sequence adds to the cache."""
        return self.segment.with_axes(a for a in self.segment.axes if a.name != self.axis and not self._batch(a.name))

    def per_sequence(self) -> Segment:
        """A state without its batch axes: what one sequence holds (the cached wire of a key axis: nothing fixed)."""
        if not self.is_state:
            return SCALAR
        return self.segment.with_axes(a for a in self.segment.axes if not self._batch(a.name))

    def slots(self) -> list[tuple[str, int | None]]:
        """Every ``(key, index)`` this site saves, once the repetition count is a number."""
        if self.var is None:
            return [(self.key, None)]
        try:
            start, stop = int(self.start), int(self.start + self.count)
        except TypeError:
            raise DecodeError(f"cache {self.key}: the repetition {self.var} runs {size_text(self.count)} times;"
                              " bind its size (e.g. decode(d, N=12)) to list its caches") from None
        return [(self.key, i) for i in range(start, stop)]


def _renames(body: Diagram, segment: Segment) -> tuple[tuple[str, str], ...]:
    """How a scan's body renames its state ``segment`` on reading it (a view keeping every size), if it does."""
    for b in body.boxes():
        prim = b.prim
        if isinstance(prim, ViewOp) and prim.source.same(segment) and len(prim.target) == len(segment) and \
                all(sizes_equal(x.size, y.size) for x, y in zip(segment.axes, prim.target.axes)):
            return tuple((x.name, y.name) for x, y in zip(segment.axes, prim.target.axes) if x.name != y.name)
    return ()


def _with_axis(segment: Segment, k: int, axis: Axis) -> Segment:
    return segment.with_axes(segment.axes[:k] + (axis,) + segment.axes[k + 1:])


def _save(segment: Segment, k: int, site: CacheSite, index: Size | None, length: Size, positions: Size) -> Diagram:
    """``→K_i`` on a wire of ``length`` positions along axis ``k``; under a sliding window only the last
    ``held(positions)`` are kept (a copy is sliced and saved, the wire goes on whole)."""
    if site.window is None:
        return Box(SaveOp(Type((segment,)), site.key, index))
    keep = site.held(positions)
    axis = segment.axes[k]
    kept = _with_axis(segment, k, dataclasses.replace(axis, size=keep))
    pick: Diagram = Box(SliceOp(axis, length - keep, length, sympy.Integer(1), dataclasses.replace(axis, size=keep)))
    for j in range(k + 1, len(segment)):  # weave the slice over the other wires, after then before
        pick = Weave(pick, segment.axes[j], (j - k,), (j - k,))
    for j in reversed(range(k)):
        pick = Weave(pick, segment.axes[j], (0,), (0,))
    return Seq.of(
        Box(CopyOp(Type((segment,)))),
        Par.of(Seq.of(pick, Box(SaveOp(Type((kept,)), site.key, index)), Box(DeleteOp(Type((kept,))))),
               Identity(Type((segment,)))),
    )


def _resize_axis(axis: Axis, mapping: Mapping[str, Size], default: Any) -> Axis:
    if axis.parts:
        parts = tuple(_resize_axis(p, mapping, default) for p in axis.parts)
        if parts == axis.parts:
            return axis
        total = sympy.Integer(1)
        for p in parts:
            total = total * p.size
        return dataclasses.replace(axis, size=total, parts=parts)
    if axis.name in mapping:
        return dataclasses.replace(axis, size=mapping[axis.name])
    fallback = default(axis)
    if fallback is not None and not sizes_equal(fallback, axis.size):
        return dataclasses.replace(axis, size=fallback)
    return axis


def resize(prim: Primitive, mapping: Mapping[str, Size], default: Any = lambda a: None) -> Primitive:
    """``prim`` with every axis named in ``mapping`` given its new size (the box's other fields kept)."""
    return map_fields(prim, lambda value: map_axes(value, lambda a: _resize_axis(a, mapping, default)))
