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
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import TypeMismatchError
from ncd.ir.axes import Axis, AxisLike, Type, as_axis
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Repeat, Seq, Weave, _set
from ncd.ir.interpreter import Rebuild
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING
from ncd.ir.size import Size, SymbolicSize

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.cost_walk import Walker
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

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
        if _stores(body):
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


#: the node kinds :func:`inline` rebuilds as they are (no repetition to unroll)
_PLAIN = (Identity, Box, Seq, Par, Weave, Block)


def _stores(body: Diagram) -> bool:
    """Whether ``inline(body)`` has a box that saves or loads a tensor.  A body of plain nodes (no repetition) is its
    own inlining, box for box: its boxes are read where they are, not rebuilt (a traced scan's body is rebuilt each
    time its sizes become symbols)."""
    from ncd.prims.structure import LoadOp, SaveOp

    found: bool | None = body.__dict__.get("_scan_stores")  # a diagram is immutable: asked once per body (the scans
    if found is not None:  # of a recurrent layer's layers and directions share one)
        return found
    nodes = list(body.walk())
    boxes = [n for n in nodes if isinstance(n, Box)] if all(isinstance(n, _PLAIN) for n in nodes) \
        else list(inline(body).boxes())
    found = any(isinstance(b.prim, (SaveOp, LoadOp)) for b in boxes)
    _set(body, _scan_stores=found)
    return found


def inline(diagram: Diagram) -> Diagram:
    """``diagram`` with blocks opened and repetitions unrolled (a scan body runs inline in one loop)."""
    return _Inline().fold(diagram)


class _Inline(Rebuild):
    def block(self, node: Block) -> Diagram:
        return self.fold(node.body)

    def repeat(self, node: Repeat) -> Diagram:
        start, stop = int(node.start), int(node.stop)  # a body's repetitions have bound counts
        return Seq.of(*(self.fold(node.iteration(i)) for i in range(start, stop)))


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


# -- lowering -------------------------------------------------------------------------------------
# A Python loop over the time axis, the body inlined.
#
# The body is written once, inside ``for step in range(T):`` in the enclosing module, so its
# parameters are attributes of that module and every step shares them.  Each step reads
# ``x.select(dim, step)`` of the scanned inputs, threads the states through local variables and
# appends its outputs to lists stacked after the loop::
#
#     state = state0
#     ys = []
#     for step in range(64):
#         x_t = x.select(-2, step)
#         ...                      # the body
#         state = state_next
#         ys.append(y_t)
#     y = torch.stack(ys, dim=-2)
@LOWERING.rule(ScanOp)
def lower_scan(prim: ScanOp, ctx: RuleContext) -> list[str]:
    from ncd.ir.program import Op
    from ncd.torch.codegen import Codegen
    from ncd.torch.rules import Value

    em = ctx.em
    steps = ctx.int(prim.axis.size, f"length of the scan over {prim.axis.name}")
    if not isinstance(steps, SymbolicSize) and steps < 1:  # on symbolic sizes the program runs ``range(sizes.t)``
        raise ctx.fail(f"the time axis {prim.axis.name} has {steps} positions; a scan needs at least one")
    c, k = prim.consts, prim.carry
    consts, carries, xs = ctx.args[:c], ctx.args[c:c + k], ctx.args[c + k:]
    body = prim.body
    states = []
    for j, v in enumerate(carries):
        var = em.fresh("state" if k == 1 else f"state{j}")
        em.line(f"{var} = {v.var}")
        states.append(Value(var, body.dom[c + j].axes, v.dtype))
    n_y = len(body.cod) - k
    lists = [em.fresh("ys" if n_y == 1 else f"ys{j}") for j in range(n_y)]
    for name in lists:
        em.line(f"{name} = []")
    step = em.fresh("step") if xs else "_"  # (a scan of no inputs along the axis reads no step)
    header = f"for {step} in range({steps - 1}, -1, -1):" if prim.reverse else f"for {step} in range({steps}):"
    mark = len(em.function.ops)
    slices = []
    for v, pos, seg in zip(xs, prim.x_pos, body.dom.segments[c + k:]):
        var = em.fresh(f"{v.var}_t")
        em.line(f"{var} = {v.var}.select({pos - len(v.axes)}, {step})")
        slices.append(Value(var, seg.axes, v.dtype))
    results = Codegen().lower(inline(body), em, [*consts, *states, *slices])
    for s, r in zip(states, results[:k]):
        if s.var != r.var:
            em.line(f"{s.var} = {r.var}")
    for name, r in zip(lists, results[k:]):
        em.line(f"{name}.append({r.var})")
    inside = em.function.ops[mark:]  # the step's ops become one loop op of the program
    del em.function.ops[mark:]
    code = "\n".join([header] + ["    " + line for op in inside for line in op.lines()])
    args = tuple(dict.fromkeys(v for op in inside for v in op.args if v.var in {a.var for a in ctx.args} | set(lists)))
    em.emit(Op("loop", "for", args, tuple(states), code, box=ctx.box, count=prim.axis.size, body=tuple(inside)))
    outs = [s.var for s in states]
    for name, pos, seg in zip(lists, prim.y_pos, body.cod.segments[k:]):
        if prim.reverse:
            em.line(f"{name}.reverse()")
        outs.append(f"torch.stack({name}, dim={pos - len(seg) - 1})")
    return outs


# -- costs ----------------------------------------------------------------------------------------
# ``T x`` one step of the body, as the lowered loop runs it.
#
# One step is walked with the shared cost walker; its FLOPs count ``T`` times (the loop's selects
# and the final stack are views and copies: no FLOPs).  What autograd keeps is counted by storage,
# as ``torch`` keeps it: a tensor the step reads unchanged (a constant) once, a state once per step
# — the state a step saves is the one the step before made, so when both save it, it counts once
# plus the initial state — and everything else the step makes once per step.  Parameters of the
# body count once (every step shares them).
@COST.rule(ScanOp)
def cost_scan(prim: ScanOp, ctx: CostContext) -> list[Tensor]:
    from ncd.analysis.cost import Metrics
    from ncd.analysis.cost_walk import Walker

    c, k = prim.consts, prim.carry
    body = prim.body
    outer = ctx.walker
    n_frame = len(ctx.out_axes[0]) - len(ctx.box.cod[0]) if ctx.out_axes else 0
    frame = tuple(ctx.out_axes[0][:n_frame]) if ctx.out_axes else ()
    sub = Walker(outer.itemsize, outer.training)
    sub.blocks = list(outer.blocks)
    inputs = []
    for t, seg in zip(ctx.inputs, body.dom):
        lead = tuple(a for a in t.axes if a.name in {f.name for f in frame})
        axes = lead + seg.axes
        inputs.append(sub.allocate(axes, tuple(a.name for a in axes), t.grad, t.dtype))
    results = sub.inline(ctx.inner, inputs, frame)  # the step's ops, as lowering wrote them inline
    steps = prim.axis.size
    step = Metrics.total([b.metrics for b in sub.boxes])
    for name in ("forward_matmul", "forward_other", "backward_matmul", "backward_other", "counter_excess"):
        setattr(ctx.metrics, name, getattr(ctx.metrics, name) + steps * getattr(step, name))
    if outer.training:
        ctx.metrics.activation_bytes += _saved_bytes(sub, inputs, results, c, k, steps)
    outs = [ctx.output(j) for j in range(len(ctx.out_axes))]
    return outs


def _saved_bytes(sub: Walker, inputs: list[Tensor], results: list[Tensor], c: int, k: int,
                 steps: sympy.Expr) -> sympy.Expr:
    consts = {t.storage for t in inputs[:c]}
    states_in = [t.storage for t in inputs[c:c + k]]
    total: sympy.Expr = sympy.Integer(0)
    for sid in sub.saved:
        size = sub.bytes[sid]
        if sid in consts:
            total += size
        elif sid in states_in:
            j = states_in.index(sid)
            made_and_saved = results[j].storage in sub.saved and results[j].storage != sid
            total += size if (made_and_saved or results[j].storage == sid) else steps * size
        else:
            total += steps * size
    return total


BACKWARD.unsupported(ScanOp, "the backward of a recurrence (a reverse scan over the time axis) is not derived yet;"
                     " lower the model and use torch.autograd")
