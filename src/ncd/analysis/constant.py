"""Cost and backward rules for fixed sinusoidal positions (a buffer: no arithmetic, no gradient)."""

from __future__ import annotations

from ncd.analysis.backward import BoxBackward, cot
from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor
from ncd.analysis.tables import backward_rule, cost_rule
from ncd.ir.diagram import Box
from ncd.prims.constant import SinusoidalOp
from ncd.prims.structure import DeleteOp


@cost_rule(SinusoidalOp)
def cost_sinusoidal(ctx: CostContext) -> list[Tensor]:
    t = ctx.parameter(ctx.out_axes[0])  # a buffer: like a parameter, never an activation
    return [Tensor(t.storage, t.axes, t.order, False)]


@backward_rule(SinusoidalOp)
def backward_sinusoidal(box: Box, builder: object) -> BoxBackward:
    return BoxBackward((), Box(DeleteOp(cot(box.cod))))
