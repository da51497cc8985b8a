"""Softmax over one named axis (drawn as a triangle on that axis's wire), and its backward.

Every rule of the family lives here (:mod:`ncd.ir.rules`): lowering, cost, backward and import.

>>> import ncd
>>> s = ncd.Softmax("x")
>>> str((ncd.Identity.of("h y x") >> s).cod)
'h y x'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.ir import weaving
from ncd.ir.axes import Axis, AxisLike, Segment, Type, as_axis
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = ["SoftmaxOp", "Softmax", "SoftmaxBackwardOp", "SoftmaxBackward"]


@dataclass(frozen=True)
class SoftmaxOp(Primitive):
    """Softmax normalising along ``axis``; every other axis is broadcast."""

    axis: Axis
    log: bool = False

    op: ClassVar[str] = "softmax"
    weave_policy = weaving.always
    family: ClassVar[str] = "softmax"
    kind: ClassVar[Kind] = "nonlinear"

    def signature(self) -> tuple[Type, Type]:
        t = Type((Segment((self.axis,)),))
        return t, t

    def label(self) -> str:
        return "log◁" if self.log else "◁"


def Softmax(axis: AxisLike, log: bool = False) -> Box:
    """Softmax along ``axis`` (``log=True`` for log-softmax); broadcast over the other axes."""
    return Box.make(SoftmaxOp(as_axis(axis), bool(log)))


@dataclass(frozen=True)
class SoftmaxBackwardOp(Primitive):
    """``(y, g) ↦ y ⊙ (g − Σ_axis g ⊙ y)`` (log-softmax: ``g − exp(y) Σ_axis g``), from the stored output ``y``."""

    axis: Axis
    log: bool = False

    op: ClassVar[str] = "softmax_backward"
    weave_policy = weaving.same_inputs_and_output
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def signature(self) -> tuple[Type, Type]:
        seg = Segment((self.axis,))
        return Type((seg, seg)), Type((seg,))

    def label(self) -> str:
        return "log◁ᵀ" if self.log else "◁ᵀ"


def SoftmaxBackward(axis: AxisLike, log: bool = False) -> Box:
    return Box.make(SoftmaxBackwardOp(as_axis(axis), bool(log)))


# -- lowering -------------------------------------------------------------------------------
@LOWERING.rule(SoftmaxOp)
def lower_softmax(prim: SoftmaxOp, ctx: RuleContext) -> list[str]:
    (dim,) = ctx.own_dims("dom", 0)
    fn = "torch.log_softmax" if prim.log else "torch.softmax"
    return [f"{fn}({ctx.args[0].var}, dim={dim})"]


@LOWERING.rule(SoftmaxBackwardOp)
def lower_softmax_backward(prim: SoftmaxBackwardOp, ctx: RuleContext) -> list[str]:
    (dim,) = ctx.own_dims("dom", 0)
    y, g = ctx.args[0].var, ctx.args[1].var
    if prim.log:
        return [f"{g} - torch.exp({y}) * {g}.sum({dim}, keepdim=True)"]
    return [f"{y} * ({g} - ({g} * {y}).sum({dim}, keepdim=True))"]


# -- costs: autograd saves the output (also for log-softmax); 4 FLOPs per element each way ----
@COST.rule(SoftmaxOp)
def cost_softmax(prim: SoftmaxOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    y = ctx.output(0)  # the softmax kernel writes a contiguous result
    n = ctx.numel()
    if x.grad:
        ctx.save(y)
    ctx.other(4 * n, 4 * n if x.grad else sympy.Integer(0))
    return [y]


@COST.rule(SoftmaxBackwardOp)
def cost_softmax_backward(prim: SoftmaxBackwardOp, ctx: CostContext) -> list[Tensor]:
    ctx.other(4 * ctx.numel(), sympy.Integer(0))
    return [ctx.output(0)]


# -- backward -------------------------------------------------------------------------------
@BACKWARD.rule(SoftmaxOp)
def backward_softmax(prim: SoftmaxOp, box: Box, builder: object) -> BoxBackward:
    """From the stored output ``y``: ``∂x = y ⊙ (g − Σ g ⊙ y)`` along the softmax axis."""
    return BoxBackward((("out", 0),), Box(SoftmaxBackwardOp(prim.axis, prim.log)))


BACKWARD.unsupported(SoftmaxBackwardOp, SECOND_ORDER)

# -- import: recognised by ncd.trace.idioms ---------------------------------------------------
IMPORT.known(SoftmaxOp, aten=("aten.softmax", "aten._softmax", "aten.log_softmax", "aten._log_softmax"))
IMPORT.unsupported(SoftmaxBackwardOp, NOT_TRACED)
