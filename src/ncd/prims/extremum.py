"""The larger or smaller of two tensors, entry by entry: ``torch.maximum(a, b)``, ``torch.minimum(a, b)``.

Like the Hadamard product (:func:`ncd.Multiply`), ``Maximum()`` has scalar domains ``1, 1 -> 1``:
composed after two tensors it is woven over their axes, and an axis only one of them carries is
broadcast (RWKV's running maximum of its attention exponents, ``maximum(max_state, k)``).
The larger (smaller) of a tensor and a Python number is :class:`ncd.prims.gather.ArithmeticOp`.

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

from ncd.ir.axes import SCALAR, SCALAR_TYPE, Segment
from ncd.ir.diagram import Box, Identity, Par, Seq
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, SCALAR_DRAWING
from ncd.prims.binary import Entrywise, draw_meeting, output_like

if TYPE_CHECKING:
    from ncd.analysis.backward import BoxBackward
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = ["ExtremumOp", "Maximum"]


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


# -- import recognition: the recognisers of ncd.trace.boxes (ncd.ir.rules' import cell) ----------

IMPORT.known(ExtremumOp, aten=("aten.maximum", "aten.minimum"))
