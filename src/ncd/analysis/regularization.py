"""Cost and backward rules for dropout.

Training (``cost(..., training=True)``, the default, as ``to_torch`` returns a module in
training mode): ``x * noise`` with a float noise tensor that autograd keeps.  Evaluation:
the identity.  ``ncd.backward`` describes evaluation mode (the identity): a backward
diagram cannot replay the forward pass's random mask.
"""

from __future__ import annotations

import sympy

from ncd.analysis.backward import BoxBackward
from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor
from ncd.analysis.tables import backward_rule, cost_rule
from ncd.ir.diagram import Box, Identity
from ncd.prims.regularization import DropoutOp


@cost_rule(DropoutOp)
def cost_dropout(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    if not ctx.walker.training or ctx.prim.p == 0:
        return [x.relabel(ctx.out_axes[0])]
    noise = ctx.new(x.axes, x.order, grad=False)
    if x.grad:
        ctx.save(noise)
    n = ctx.numel()
    ctx.other(2 * n, n if x.grad else sympy.Integer(0))
    return [ctx.like(0, x)]


@backward_rule(DropoutOp)
def backward_dropout(box: Box, builder: object) -> BoxBackward:
    return BoxBackward((), Identity(box.cod))
