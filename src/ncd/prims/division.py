"""Division of one tensor by another, entry by entry: ``a / b``.

Like the Hadamard product (:func:`ncd.Multiply`), ``Divide()`` has scalar domains ``1, 1 -> 1``:
composed after two tensors it is woven over their axes, and an axis only one of them carries is
broadcast (``x / x.norm(...)``, ``scores / temperature[h]``).  Division by a Python number is
:class:`ncd.prims.arithmetic.ArithmeticOp` (``x / 2``) or a :func:`ncd.Scale`.

One module holds every rule of the family: declaration, lowering, costs, backward and drawing.

>>> import ncd
>>> str((ncd.Identity.of("b t m, b t") >> ncd.Divide()).cod)
'b t m'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.ir.axes import SCALAR, SCALAR_TYPE
from ncd.ir.diagram import Box, Identity, Par, Seq
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, SCALAR_DRAWING
from ncd.prims.binary import Entrywise, draw_meeting, output_like

if TYPE_CHECKING:
    from ncd.analysis.backward import BoxBackward
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = ["DivideOp", "Divide"]


@dataclass(frozen=True)
class DivideOp(Entrywise):
    """``a / b`` entry by entry: ``1, 1 -> 1``, woven over the axes of both."""

    op: ClassVar[str] = "divide"
    family: ClassVar[str] = "elementwise"
    symbol: ClassVar[str] = "÷"


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
    out = output_like(ctx)
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
    fan = route([SCALAR, SCALAR, SCALAR], [2, 1, 2, 1, 0, 1])  # (a, b, g) -> (g, b, g, b, a, b)
    both = Seq.of(fan, Par.of(divide, divide, divide), Par.of(Identity(SCALAR_TYPE), Box(MultiplyOp(2))),
                  Par.of(Identity(SCALAR_TYPE), Box(ScaleOp(sympy.Integer(-1)))))
    return BoxBackward((("in", 0), ("in", 1)), both)


# drawing: like the product ``⊙``, equal wires of both tensors meet at dots under ``÷`` (the dividend's wires on top)
SCALAR_DRAWING.rule(DivideOp)(draw_meeting)


# -- import recognition: the recognisers of ncd.trace.boxes (ncd.ir.rules' import cell) ----------

IMPORT.known(DivideOp, by="ncd.trace.boxes")
