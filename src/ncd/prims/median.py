"""The median of the entries along an axis: ``torch.median(x, dim).values``.

``Median("t")`` takes ``t`` to a scalar, one median per position of the other axes, woven over them like a sum.  It is
torch's: the lower of the two middle entries when there are evenly many, NaN where an entry is NaN.  Its gradient goes
to the one entry torch picked: :class:`MedianBackwardOp` scatters it to the positions ``torch.median`` returns,
recomputed from the input, so among equal entries it is the same one.  Autograd keeps only those positions.

One module holds every rule of the family: declaration, lowering, costs, backward, drawing and import (recognised by
:mod:`ncd.trace.boxes_ranking`).

>>> import ncd
>>> str((ncd.Identity.of("b t m") >> ncd.Median("t")).cod)
'b m'
>>> ncd.Median("t m")
Traceback (most recent call last):
...
ncd.errors.ParseError: median over 't m': runs along one axis of a float tensor
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir.axes import SCALAR, SCALAR_TYPE, Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["MedianOp", "MedianBackwardOp", "Median"]



def _axis(axis: Segment, what: str) -> None:
    if len(axis.axes) != 1 or axis.dtype != "float":
        raise ParseError(f"{what} over '{axis}': runs along one axis of a float tensor")


@dataclass(frozen=True)
class MedianOp(Primitive):
    """torch's median along the one axis of ``axis``: ``axis -> ()``, woven over every other axis."""

    axis: Segment

    op: ClassVar[str] = "median"
    family: ClassVar[str] = "median"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _axis(self.axis, "median")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axis,)), SCALAR_TYPE

    def label(self) -> str:
        return "median " + self.axis.axes[0].name


@dataclass(frozen=True)
class MedianBackwardOp(Primitive):
    """The gradient of a median from its input ``x`` and output gradient ``g``: ``(axis, ()) -> axis``, ``g`` at the
    entry torch picked as the median, 0 elsewhere."""

    axis: Segment

    op: ClassVar[str] = "median_backward"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _axis(self.axis, "median backward")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axis, SCALAR)), Type((self.axis,))

    def label(self) -> str:
        return "medianᵀ"


def Median(axis: TypeLike) -> Box:
    """torch's median along the one axis of ``axis`` (``torch.median(x, dim).values``), one per position of the others."""
    typ = as_type(axis)
    if len(typ) != 1:
        raise ParseError(f"median takes one segment, not '{typ}'")
    return Box.make(MedianOp(typ[0]))


# -- lowering -----------------------------------------------------------------------------------
@LOWERING.rule(MedianOp)
def lower_median(prim: MedianOp, ctx: RuleContext) -> list[str]:
    (d,) = ctx.own_dims("dom", 0)
    return [f"torch.median({ctx.args[0].var}, {d}).values"]


@LOWERING.rule(MedianBackwardOp)
def lower_median_backward(prim: MedianBackwardOp, ctx: RuleContext) -> list[str]:
    """The woven axes lead (the default weave policy): the median's axis is the last."""
    x, g = (a.var for a in ctx.args)
    return [f"torch.zeros_like({x}).scatter(-1, torch.median({x}, -1).indices[..., None], {g}[..., None])"]


# -- costs: autograd keeps the positions --------------------------------------------------------
@COST.rule(MedianOp)
def cost_median(prim: MedianOp, ctx: CostContext) -> list[Tensor]:
    """A selection (about one comparison per entry); autograd keeps the median's positions."""
    x = ctx.inputs[0]
    y = ctx.output(0)
    if x.grad:
        ctx.save(ctx.new(ctx.out_axes[0], grad=False, dtype="index"))
    ctx.other(x.numel, x.numel if x.grad else sympy.Integer(0))
    return [y]


@COST.rule(MedianBackwardOp)
def cost_median_backward(prim: MedianBackwardOp, ctx: CostContext) -> list[Tensor]:
    ctx.other(ctx.numel(), sympy.Integer(0))
    return [ctx.output(0)]


# -- backward -----------------------------------------------------------------------------------
@BACKWARD.rule(MedianOp)
def backward_median(prim: MedianOp, box: Box, builder: object) -> BoxBackward:
    return BoxBackward((("in", 0),), Box(MedianBackwardOp(prim.axis)))


BACKWARD.unsupported(MedianBackwardOp, SECOND_ORDER)


# -- drawing ------------------------------------------------------------------------------------
@DRAWING.rule(MedianOp, MedianBackwardOp)
def draw_median(prim: MedianOp | MedianBackwardOp, ctx: Layout, box: Box) -> Frag:
    """A box on the wire it runs along, which ends there: ``median`` (``medianᵀ`` for the backward)."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import Piece

    parts: tuple[Piece, ...] = (Piece("median"),) + ((Piece("T", script=1),) if isinstance(prim, MedianBackwardOp) else ())
    return generic_box(ctx, box.dom, box.cod, parts, fill="#ffffff", name=prim.op)


# -- import: recognised by ncd.trace.boxes_ranking -------------------------------------------------------
IMPORT.known(MedianOp, by="ncd.trace.boxes_ranking")
IMPORT.unsupported(MedianBackwardOp, NOT_TRACED)
