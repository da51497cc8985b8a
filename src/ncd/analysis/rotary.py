"""Cost and backward rules for the rotary position embedding.

The lowering computes the cos/sin tables (``t k`` each) and multiplies; autograd keeps the
two tables for the products' backward (the input itself is not kept).  No matrix products.
The box is a rotation per position pair, so its transpose is the rotation by minus the
angles: ``ρᵀ`` (``RotaryOp(inverse=True)``), which needs nothing stored.
"""

from __future__ import annotations

from dataclasses import replace

import sympy

from ncd.analysis.backward import BoxBackward
from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor
from ncd.analysis.tables import backward_rule, cost_rule
from ncd.ir.diagram import Box
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


@backward_rule(RotaryOp)
def backward_rotary(box: Box, builder: object) -> BoxBackward:
    """``ρᵀ``: the same rotation with the angles negated (and ``ρ`` for ``ρᵀ``); the scale is its own transpose."""
    return BoxBackward((), Box(replace(box.prim, inverse=not box.prim.inverse)))
