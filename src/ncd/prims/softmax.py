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
    """``torch.softmax``; after a padding mask, ``torch._safe_softmax``: a row whose every entry is ``-inf`` (a query
    that may attend to no key) gives 0, as ``scaled_dot_product_attention`` does, where softmax gives NaN.  Only
    there: it costs ~3x a softmax."""
    (dim,) = ctx.own_dims("dom", 0)
    if prim.log:
        return [f"torch.log_softmax({ctx.args[0].var}, dim={dim})"]
    if _after_padding_mask(ctx, ctx.args[0].var):
        return [f"torch._safe_softmax({ctx.args[0].var}, {dim})"]
    return [f"torch.softmax({ctx.args[0].var}, dim={dim})"]


#: the boxes between a padding mask and its softmax that keep a row of ``-inf`` a row of ``-inf``
_KEEPS_EMPTY_ROWS = frozenset({"padding_mask", "causal_mask", "scale", "add", "dropout", "transpose", "rename"})


def _after_padding_mask(ctx: RuleContext, var: str, depth: int = 8) -> bool:
    """Whether ``var`` is computed (through masks, scales, additions and moves of axes) by a padding mask's box."""
    ops = ctx.em.function.ops
    for k in range(len(ops) - 1, max(-1, len(ops) - 64), -1):
        op = ops[k]
        if not any(v.var == var for v in op.outputs):
            continue
        name = None if op.box is None else op.box.prim.op
        if name == "padding_mask":
            return True
        if depth and (name is None or name in _KEEPS_EMPTY_ROWS):
            return any(_after_padding_mask(ctx, a.var, depth - 1) for a in op.args)
        return False
    return False


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
