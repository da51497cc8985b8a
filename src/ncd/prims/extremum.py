"""The larger or smaller of two tensors, entry by entry: ``torch.maximum(a, b)``, ``torch.minimum(a, b)``.

Like the Hadamard product (:func:`ncd.Multiply`), ``Maximum()`` has scalar domains ``1, 1 -> 1``:
composed after two tensors it is woven over their axes, and an axis only one of them carries is
broadcast (RWKV's running maximum of its attention exponents, ``maximum(max_state, k)``).
The larger (smaller) of a tensor and a Python number is :class:`ncd.prims.arithmetic.ArithmeticOp`.
``Clamp()`` (``1, 1, 1 -> 1``) is ``torch.clamp(x, lo, hi)`` by two tensors at once: one call, whose gradient
autograd gives where no chain of a maximum and a minimum does (none at all where ``x < lo = hi``).

One module holds every rule of the family: declaration, lowering, costs, backward and drawing.

>>> import ncd
>>> from ncd.prims.extremum import Maximum
>>> str((ncd.Identity.of("b t m, b m") >> Maximum()).cod)
'b t m'
>>> Maximum(smaller=True).prim.label()
'min'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.ir.axes import SCALAR, SCALAR_TYPE, Segment, Type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, SCALAR_DRAWING
from ncd.prims.binary import Entrywise, draw_meeting, output_like

if TYPE_CHECKING:
    from ncd.analysis.backward import BoxBackward
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = ["ExtremumOp", "Maximum", "ClampOp", "Clamp"]


@dataclass(frozen=True)
class ExtremumOp(Entrywise):
    """``max(a, b)`` (``smaller``: ``min(a, b)``) entry by entry: ``1, 1 -> 1``, woven over the axes of both.

    ``ties`` says where the gradient of a tie goes, as the recorded call gives it: ``"half"`` to each
    (``torch.maximum``), ``"first"`` all to ``a`` (``torch.clamp(a, min=b)``) or ``"second"`` all to ``b``
    (``torch.clamp(b, min=a)``); the lowering makes that very call.
    """

    smaller: bool = False
    ties: str = "half"

    def __post_init__(self) -> None:
        if self.ties not in ("half", "first", "second"):
            from ncd.errors import ParseError

            raise ParseError(f"{self.label()}: ties must be 'half', 'first' or 'second', not {self.ties!r}")

    op: ClassVar[str] = "extremum"
    family: ClassVar[str] = "elementwise"

    def label(self) -> str:
        return "min" if self.smaller else "max"


def Maximum(smaller: bool = False) -> Box:
    """The larger (``smaller``: the smaller) of two tensors entry by entry (broadcast over the axes only one has)."""
    return Box.make(ExtremumOp(smaller))


@LOWERING.rule(ExtremumOp)
def lower_extremum(prim: ExtremumOp, ctx: RuleContext) -> list[str]:
    a, b = ctx.args
    if prim.ties != "half":  # a clamp by a tensor bound: the bounded tensor takes the gradient of a tie
        x, bound = (a, b) if prim.ties == "first" else (b, a)
        return [f"torch.clamp({x.var}, {'max' if prim.smaller else 'min'}={bound.var})"]
    return [f"torch.{'minimum' if prim.smaller else 'maximum'}({a.var}, {b.var})"]


@COST.rule(ExtremumOp)
def cost_extremum(prim: ExtremumOp, ctx: CostContext) -> list[Tensor]:
    """One comparison per entry; for the backward (which entry won, ties halved) autograd keeps both inputs."""
    a, b = ctx.inputs
    n = ctx.numel()
    out = output_like(ctx)
    if a.grad or b.grad:
        ctx.save(a, b)
    ctx.other(n, 4 * n if a.grad or b.grad else sympy.Integer(0))
    return [out]


@BACKWARD.rule(ExtremumOp)
def backward_extremum(prim: ExtremumOp, box: Box, builder: object) -> BoxBackward:
    """``∂a = g ⊙ w``, ``∂b = g − ∂a`` with ``w = [d > 0] + t[d = 0]`` and ``d = a − b`` (``b − a`` for the minimum):
    the gradient goes to the entry that won, on a tie ``t`` = ½ of it to ``a`` (``ties="first"``: all, ``"second"``:
    none), as torch gives it."""
    from ncd.analysis.backward import BoxBackward
    from ncd.prims.elementwise import MultiplyOp, ScaleOp
    from ncd.prims.gather import CastOp, CompareOp
    from ncd.prims.structure import AddOp, CopyOp

    one = SCALAR_TYPE
    boolean = Segment((), "bool")
    sign = sympy.Integer(-1)
    difference = Seq.of(Par.of(Box(ScaleOp(sign)), Identity(one)) if prim.smaller else Par.of(Identity(one), Box(ScaleOp(sign))),
                        Box(AddOp(2)))
    won = Seq.of(Box(CompareOp(">", 0.0, SCALAR)), Box(CastOp(boolean, SCALAR)))
    share = {"half": sympy.Rational(1, 2), "first": sympy.Integer(1), "second": sympy.Integer(0)}[prim.ties]
    if prim.ties == "first":  # a wins its ties: w = [d >= 0]
        weight = Seq.of(difference, Box(CompareOp(">=", 0.0, SCALAR)), Box(CastOp(boolean, SCALAR)))
    elif prim.ties == "second":  # b wins them: w = [d > 0]
        weight = Seq.of(difference, won)
    else:
        tied = Seq.of(Box(CompareOp("==", 0.0, SCALAR)), Box(CastOp(boolean, SCALAR)), Box(ScaleOp(share)))
        weight = Seq.of(difference, Box(CopyOp(one)), Par.of(won, tied), Box(AddOp(2)))  # (a, b) -> w
    grads = Seq.of(Par.of(weight, Box(CopyOp(one))),  # (w, g, g)
                   Par.of(Box(MultiplyOp(2)), Identity(one)),  # (∂a, g)
                   Par.of(Box(CopyOp(one)), Identity(one)),  # (∂a, ∂a, g)
                   Par.of(Identity(one), Box(ScaleOp(sign)), Identity(one)),
                   Par.of(Identity(one), Box(AddOp(2))))  # (∂a, g − ∂a)
    return BoxBackward((("in", 0), ("in", 1)), grads)


# drawing: like the product ``⊙``, equal wires of both tensors meet at dots under ``max`` (or ``min``)
SCALAR_DRAWING.rule(ExtremumOp)(draw_meeting)


# -- clamp by two tensors: one box --------------------------------------------------------------------
@dataclass(frozen=True)
class ClampOp(Entrywise):
    """``torch.clamp(x, lo, hi)`` entry by entry, both bounds tensors: ``min(max(x, lo), hi)``, ``1, 1, 1 -> 1``."""

    op: ClassVar[str] = "clamp"
    family: ClassVar[str] = "elementwise"
    operands: ClassVar[tuple[Segment, ...]] = (SCALAR, SCALAR, SCALAR)
    symbol: ClassVar[str] = "clamp"


def Clamp() -> Box:
    """``torch.clamp(x, lo, hi)`` of three tensors (broadcast over the axes some lack)."""
    return Box.make(ClampOp())


@LOWERING.rule(ClampOp)
def lower_clamp(prim: ClampOp, ctx: RuleContext) -> list[str]:
    x, lo, hi = ctx.args
    return [f"torch.clamp({x.var}, {lo.var}, {hi.var})"]


@COST.rule(ClampOp)
def cost_clamp(prim: ClampOp, ctx: CostContext) -> list[Tensor]:
    """Two comparisons per entry; for the backward autograd keeps the three tensors."""
    n = ctx.numel()
    grad = any(t.grad for t in ctx.inputs)
    if grad:
        ctx.save(*ctx.inputs)
    ctx.other(2 * n, 6 * n if grad else sympy.Integer(0))
    return [output_like(ctx)]


@BACKWARD.rule(ClampOp)
def backward_clamp(prim: ClampOp, box: Box, builder: object) -> BoxBackward:
    """Autograd's rule: ``∂x = g [lo ≤ x][x ≤ hi]``, ``∂lo = g [x < lo][lo < hi]``, ``∂hi = g ([x > hi] ∨ [hi < lo])``,
    each a ``where`` of the gradient and zero; the relations are signs of differences."""
    from ncd.analysis.backward import BoxBackward
    from ncd.prims.elementwise import ScaleOp
    from ncd.prims.gather import CompareOp
    from ncd.prims.selection import CONDITION, LogicOp, WhereOp
    from ncd.prims.structure import AddOp, ZerosOp, route

    one = SCALAR_TYPE
    difference = Seq.of(Par.of(Identity(one), Box(ScaleOp(sympy.Integer(-1)))), Box(AddOp(2)))  # (a, b) -> a − b

    def sign(relation: str) -> Diagram:
        return Seq.of(difference, Box(CompareOp(relation, 0.0, SCALAR)))

    x, lo, hi, g = 0, 1, 2, 3  # (x − lo ≥ 0) (hi − x ≥ 0), (lo − x > 0) (hi − lo > 0), (x − hi > 0) (lo − hi > 0)
    pairs = [x, lo, hi, x, lo, x, hi, lo, x, hi, lo, hi, g, g, g]
    relations = Par.of(*(sign(r) for r in (">=", ">=", ">", ">", ">", ">")),
                       Identity(Type((SCALAR,) * 3)))
    conditions = Par.of(Box(LogicOp("and")), Box(LogicOp("and")), Box(LogicOp("or")), Identity(Type((SCALAR,) * 3)))
    chosen = Seq.of(Par.of(Identity(Type((CONDITION, SCALAR))), Box(ZerosOp(one))), Box(WhereOp()))  # where(c, g, 0)
    grads = Seq.of(route([SCALAR] * 4, pairs), relations, conditions,
                   route([CONDITION] * 3 + [SCALAR] * 3, [0, 3, 1, 4, 2, 5]), Par.of(chosen, chosen, chosen))
    return BoxBackward((("in", 0), ("in", 1), ("in", 2)), grads)


SCALAR_DRAWING.rule(ClampOp)(draw_meeting)
IMPORT.known(ClampOp, by="ncd.trace.boxes_indexing")


# -- import recognition: the recognisers of ncd.trace.boxes (ncd.ir.rules' import cell) ----------

IMPORT.known(ExtremumOp, aten=("aten.maximum", "aten.minimum"))
