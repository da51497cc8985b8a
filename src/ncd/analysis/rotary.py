"""Cost rule for the rotary position embedding; its backward is declared unsupported.

The lowering computes the cos/sin tables (``t k`` each) and multiplies; autograd keeps the
two tables for the products' backward (the input itself is not kept).  No matrix products.
"""

from __future__ import annotations

import sympy

from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor
from ncd.analysis.tables import cost_rule, unsupported
from ncd.prims.rotary import RotaryOp


@cost_rule(RotaryOp)
def cost_rotary(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    n = ctx.numel()
    prim = ctx.prim
    if x.grad:
        ctx.save(ctx.new((prim.position, prim.axis), grad=False), ctx.new((prim.position, prim.axis), grad=False))
    ctx.other(4 * n, 4 * n if x.grad else sympy.Integer(0))  # two products, a negation and a sum
    return [ctx.output(0)]


unsupported("rotary", "the transpose of a rotary embedding (the rotation by minus the angles) is not a primitive yet",
            backward=True)
