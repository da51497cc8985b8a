"""Cost and backward rules for softmax: autograd saves the output (also for log-softmax)."""

from __future__ import annotations

import sympy

from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor
from ncd.analysis.tables import cost_rule
from ncd.prims.softmax import SoftmaxOp


@cost_rule(SoftmaxOp)
def cost_softmax(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    y = ctx.output(0)  # the softmax kernel writes a contiguous result
    n = ctx.numel()
    if x.grad:
        ctx.save(y)
    ctx.other(4 * n, 4 * n if x.grad else sympy.Integer(0))
    return [y]


# -- backward ------------------------------------------------------------------------------
from ncd.analysis.backward import BoxBackward  # noqa: E402
from ncd.analysis.tables import backward_rule  # noqa: E402
from ncd.ir.diagram import Box  # noqa: E402
from ncd.prims.derivative import SoftmaxBackwardOp  # noqa: E402


@backward_rule(SoftmaxOp)
def backward_softmax(box: Box, builder: object) -> BoxBackward:
    """From the stored output ``y``: ``∂x = y ⊙ (g − Σ g ⊙ y)`` along the softmax axis."""
    return BoxBackward((("out", 0),), Box(SoftmaxBackwardOp(box.prim.axis, box.prim.log)))
