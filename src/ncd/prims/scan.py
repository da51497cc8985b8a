"""The scan: a recurrence over a time axis, carrying a state, whose body is one step.

``Scan(body, "t", carry=1)`` repeats ``body`` once per position of the time axis ``t``.  The
body's inputs are, in order, ``consts`` tensors every step reads unchanged, ``carry`` state
tensors (the body returns their next values first, with the same types) and one slice of each
scanned input at the current position; its outputs are the next states and one slice of each
stacked output.  Outside, the scanned inputs and stacked outputs carry the time axis (at
``x_pos`` / ``y_pos`` of their own axes, default first) and the final states come out first::

    body : consts, state, x_t          -> state', y_t
    scan : consts, state0, x (t first) -> state_T, y (t first)

This is JAX's ``lax.scan`` as a box; the drawing shows the body once, inside the paper's
repetition brackets, with the time axis running over it.  It lowers to a Python loop over the
positions (the body inlined: its parameters are shared by every step), costs ``T x`` the body
(what ``torch.utils.flop_counter`` counts on that loop), serialises, and has no backward rule
yet (an explicit "unsupported" entry).

>>> import ncd
>>> step = (ncd.Linear("h -> h", name="W") @ ncd.Identity.of("h")) >> ncd.Add() >> ncd.Tanh() >> ncd.Copy("h")
>>> rnn = ncd.Scan(step, "t:8", carry=1)
>>> str(rnn.dom), str(rnn.cod)
('h, t:8 h', 'h, t:8 h')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import sympy

from ncd.errors import TypeMismatchError
from ncd.ir.axes import Axis, AxisLike, Type, as_axis
from ncd.ir.diagram import Block, Box, Diagram, Par, Repeat, Seq, Weave
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import IMPORT
from ncd.ir.size import Size

__all__ = ["ScanOp", "Scan", "inline"]


@dataclass(frozen=True)
class ScanOp(Primitive):
    """A recurrence over ``axis``: ``body`` applied at each position, threading ``carry`` states."""

    body: Diagram
    axis: Axis
    consts: int = 0
    carry: int = 1
    x_pos: tuple[int, ...] = ()
    y_pos: tuple[int, ...] = ()
    reverse: bool = False

    op: ClassVar[str] = "scan"
    family: ClassVar[str] = "scan"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        body, c, k = self.body, self.consts, self.carry
        where = f"scan over {self.axis.name}"
        for name, n in (("consts", c), ("carry", k)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise TypeMismatchError(f"{where}: {name} must be a whole number >= 0, not {n!r}")
        if not isinstance(body, Diagram):
            raise TypeMismatchError(f"{where}: the body must be a diagram, not {type(body).__name__}")
        if c + k > len(body.dom) or k > len(body.cod):
            raise TypeMismatchError(f"{where}: the body '{body.dom}' -> '{body.cod}' has too few segments for"
                                    f" {c} constant(s) and {k} state(s)")
        for j in range(k):
            if not body.dom[c + j].same(body.cod[j]):
                raise TypeMismatchError(f"{where}: state {j} enters the body as '{body.dom[c + j]}' but leaves it as"
                                        f" '{body.cod[j]}'; a state keeps its type")
        xs, ys = body.dom.segments[c + k:], body.cod.segments[k:]
        for side, segs, pos in (("x_pos", xs, self.x_pos), ("y_pos", ys, self.y_pos)):
            if len(pos) != len(segs):
                raise TypeMismatchError(f"{where}: {side} gives {len(pos)} position(s) for {len(segs)} scanned"
                                        f" segment(s)")
            for seg, p in zip(segs, pos):
                if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= len(seg):
                    raise TypeMismatchError(f"{where}: position {p!r} of the time axis is outside '{seg}'")
        for seg in (*body.dom, *body.cod):
            if self.axis.name in seg.names:
                raise TypeMismatchError(f"{where}: the body's tensor '{seg}' already has an axis"
                                        f" {self.axis.name}; one step sees one position of it")
        from ncd.prims.structure import LoadOp, SaveOp

        if any(isinstance(b.prim, (SaveOp, LoadOp)) for b in inline(body).boxes()):
            raise TypeMismatchError(f"{where}: a scan body cannot save or load tensors (no store inside a loop)")

    @property
    def length(self) -> Size:
        """The number of steps (the time axis' size)."""
        return self.axis.size

    def signature(self) -> tuple[Type, Type]:
        body, c, k = self.body, self.consts, self.carry
        xs = [seg.insert(p, self.axis) for seg, p in zip(body.dom.segments[c + k:], self.x_pos)]
        ys = [seg.insert(p, self.axis) for seg, p in zip(body.cod.segments[k:], self.y_pos)]
        return Type(body.dom.segments[:c + k] + tuple(xs)), Type(body.cod.segments[:k] + tuple(ys))

    def params(self) -> dict[str, tuple[Size, ...]]:
        found: dict[str, tuple[Size, ...]] = {}
        for n, box in enumerate(b for b in inline(self.body).boxes() if b.prim.params()):
            for name, shape in box.prim.params().items():
                found[f"{n}.{name}"] = shape
        return found

    def label(self) -> str:
        return f"scan {self.axis.name}"

    def hint(self) -> str:
        return "scan"

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Primitive:
        if not mapping:
            return self
        new = super().subs(mapping)
        assert isinstance(new, ScanOp)
        return dataclasses.replace(new, body=self.body.subs(mapping))

    def free_symbols(self) -> set[sympy.Symbol]:
        return super().free_symbols() | self.body.free_symbols


def inline(diagram: Diagram) -> Diagram:
    """``diagram`` with blocks opened and repetitions unrolled (a scan body runs inline in one loop)."""
    if isinstance(diagram, Block):
        return inline(diagram.body)
    if isinstance(diagram, Repeat):
        start, stop = int(diagram.start), int(diagram.stop)  # a body's repetitions have bound counts
        return Seq.of(*(inline(diagram.iteration(i)) for i in range(start, stop)))
    if isinstance(diagram, Seq):
        return Seq.of(*(inline(p) for p in diagram.parts))
    if isinstance(diagram, Par):
        return Par.of(*(inline(p) for p in diagram.parts))
    if isinstance(diagram, Weave):
        return Weave(inline(diagram.inner), diagram.axis, diagram.dom_pos, diagram.cod_pos)
    return diagram


def Scan(body: Diagram, axis: AxisLike, *, carry: int = 1, consts: int = 0, x_pos: Sequence[int] | None = None,
         y_pos: Sequence[int] | None = None, reverse: bool = False, label: str | None = None) -> Box:
    """A recurrence over ``axis`` (``"t"`` or ``"t:64"``) whose one step is ``body`` (see the module doc).

    The time axis sits first in every scanned input and stacked output unless ``x_pos`` /
    ``y_pos`` give its position among each one's axes; ``reverse=True`` runs from the last
    position to the first.
    """
    time = as_axis(axis)
    n_x = len(body.dom) - consts - carry
    n_y = len(body.cod) - carry
    xp = tuple(x_pos) if x_pos is not None else (0,) * max(n_x, 0)
    yp = tuple(y_pos) if y_pos is not None else (0,) * max(n_y, 0)
    return Box.make(ScanOp(body, time, consts, carry, xp, yp, reverse), label)


# import recognition (ncd.ir.rules): recorded time loops and recurrent modules fold into scans
IMPORT.known(ScanOp, by="ncd.trace.loops")
IMPORT.known(ScanOp, by="ncd.trace.recurrent")
