"""Division of one tensor by another, entry by entry: ``a / b``.

Like the Hadamard product (:func:`ncd.Multiply`), ``Divide()`` has scalar domains ``1, 1 -> 1``:
composed after two tensors it is woven over their axes, and an axis only one of them carries is
broadcast (``x / x.norm(...)``, ``scores / temperature[h]``).  Division by a Python number is
:class:`ncd.prims.gather.ArithmeticOp` (``x / 2``) or a :func:`ncd.Scale`.

One module holds every rule of the family: declaration, lowering, costs, backward and drawing.

>>> import ncd
>>> str((ncd.Identity.of("b t m, b t") >> ncd.Divide()).cod)
'b t m'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.ir import weaving
from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box, Identity, Par, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, SCALAR_DRAWING

if TYPE_CHECKING:
    from ncd.analysis.backward import BoxBackward
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["DivideOp", "Divide"]

SCALAR = Segment(())


@dataclass(frozen=True)
class DivideOp(Primitive):
    """``a / b`` entry by entry: ``1, 1 -> 1``, woven over the axes of both."""

    op: ClassVar[str] = "divide"
    family: ClassVar[str] = "elementwise"
    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.same_layouts

    def signature(self) -> tuple[Type, Type]:
        return Type((SCALAR, SCALAR)), Type((SCALAR,))

    def label(self) -> str:
        return "÷"


def Divide() -> Box:
    """``a / b`` entry by entry (broadcast over the axes only one of them has)."""
    return Box.make(DivideOp())


@LOWERING.rule(DivideOp)
def lower_divide(prim: DivideOp, ctx: RuleContext) -> list[str]:
    a, b = ctx.args
    return [f"{a.var} / {b.var}"]


@COST.rule(DivideOp)
def cost_divide(prim: DivideOp, ctx: CostContext) -> list[Tensor]:
    """One division per entry; autograd keeps the divisor, and the dividend when the divisor needs a gradient."""
    a, b = ctx.inputs
    n = ctx.numel()
    full = all(x.name in a.names for x in ctx.out_axes[0])
    out = ctx.like(0, a) if full else ctx.output(0)
    if a.grad or b.grad:
        ctx.save(b)
    if b.grad:
        ctx.save(a)
    ctx.other(n, n * (int(a.grad) + 3 * int(b.grad)))
    return [out]


@BACKWARD.rule(DivideOp)
def backward_divide(prim: DivideOp, box: Box, builder: object) -> BoxBackward:
    """``∂a = g / b`` and ``∂b = −(g / b) ⊙ (a / b)``."""
    from ncd.analysis.backward import BoxBackward, route
    from ncd.prims.elementwise import MultiplyOp, ScaleOp

    divide = Box(DivideOp())
    scalar = Type((SCALAR,))
    fan = route([SCALAR, SCALAR, SCALAR], [2, 1, 2, 1, 0, 1])  # (a, b, g) -> (g, b, g, b, a, b)
    both = Seq.of(fan, Par.of(divide, divide, divide), Par.of(Identity(scalar), Box(MultiplyOp(2))),
                  Par.of(Identity(scalar), Box(ScaleOp(sympy.Integer(-1)))))
    return BoxBackward((("in", 0), ("in", 1)), both)


@SCALAR_DRAWING.rule(DivideOp)
def draw_divide(prim: DivideOp, ctx: Layout, box: Box, dom: Type, cod: Type) -> Frag:
    """Like the product ``⊙``: equal wires of both tensors meet at dots under ``÷`` (the dividend's wires on top)."""
    from ncd.render.pictograms import meeting
    from ncd.render.typeset import Piece

    return meeting(ctx, dom, cod, (Piece("÷"),), prim.op)


# -- import recognition: the recognisers of ncd.trace.boxes (ncd.ir.rules' import cell) ----------

IMPORT.known(DivideOp, by="ncd.trace.boxes")
