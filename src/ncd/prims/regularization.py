"""Regularisation: dropout, a scalar map woven over every wire (identity in evaluation).

>>> import ncd
>>> str((ncd.Identity.of("b t m") >> ncd.Dropout(0.1)).cod)
'b t m'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import SCALAR_TYPE, Type
from ncd.ir.diagram import Box, Identity
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, BoxBackward

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = ["DropoutOp", "Dropout"]



@dataclass(frozen=True)
class DropoutOp(Primitive):
    """Zero each entry with probability ``p`` in training and scale the rest by ``1/(1-p)``."""

    p: float = 0.5

    op: ClassVar[str] = "dropout"
    weave_policy = weaving.always
    family: ClassVar[str] = "regularization"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)) or not 0 <= self.p <= 1:
            raise ParseError(f"dropout: the probability p must lie in [0, 1], not {self.p!r}")

    def signature(self) -> tuple[Type, Type]:
        return SCALAR_TYPE, SCALAR_TYPE

    def label(self) -> str:
        return f"Drop({self.p:g})"

    def hint(self) -> str:
        return "dropout"


def Dropout(p: float = 0.5, name: str | None = None) -> Box:
    """Dropout with probability ``p``, woven over every axis; the identity when the module is in eval mode."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise ParseError(f"dropout: the probability p must be a number in [0, 1], not {p!r}")
    return Box.make(DropoutOp(float(p)), name)


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.unsupported(DropoutOp, "traced in evaluation mode dropout is the identity; in training it stays an opaque call")


# -- lowering ----------------------------------------------------------------------------------
@LOWERING.rule(DropoutOp)
def lower_dropout(prim: DropoutOp, ctx: RuleContext) -> list[str]:
    module = ctx.em.attr("dropout" + (f"_{ctx.box.label}" if ctx.box.label else ""), f"nn.Dropout({prim.p!r})")
    return [f"{module}({ctx.args[0].var})"]


# -- costs and backward ------------------------------------------------------------------------
@COST.rule(DropoutOp)
def cost_dropout(prim: DropoutOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    if not ctx.walker.training or prim.p == 0:
        return [x.relabel(ctx.out_axes[0])]
    noise = ctx.new(x.axes, x.order, grad=False)
    if x.grad:
        ctx.save(noise)
    n = ctx.numel()
    ctx.other(2 * n, n if x.grad else sympy.Integer(0))
    return [ctx.like(0, x)]


@BACKWARD.rule(DropoutOp)
def backward_dropout(prim: DropoutOp, box: Box, builder: Builder) -> BoxBackward:
    return BoxBackward((), Identity(box.cod))
