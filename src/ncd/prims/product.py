"""The product of the entries over some axes: ``torch.prod(x, dim)`` (and ``x.prod()``, every axis).

``Prod("m")`` takes ``m`` to a scalar, one product per position of the other axes, woven over them like a sum.  Its
gradient at an entry is the gradient times the product of the *other* entries: :class:`ProdBackwardOp` computes it from
the input alone, as the running products from the left and from the right that stop just before the entry, which is
exact where entries are 0 (dividing the product by the entry, as autograd does where none is, is not).  Autograd keeps
the input and the product (``saved_tensors_hooks`` says so).

One module holds every rule of the family: declaration, lowering, costs, backward, drawing and import (recognised by
:mod:`ncd.trace.boxes_ranking`).

>>> import ncd
>>> str((ncd.Identity.of("b t m") >> ncd.Prod("m")).cod)
'b t'
>>> ncd.Prod("t [5]")
Traceback (most recent call last):
...
ncd.errors.ParseError: product over 't [5]': multiplies distinct axes of a float tensor
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

__all__ = ["ProdOp", "ProdBackwardOp", "Prod"]



def _axes(axes: Segment, what: str) -> None:
    if not axes.axes or axes.repeated or axes.dtype != "float":
        raise ParseError(f"{what} over '{axes}': multiplies distinct axes of a float tensor")


@dataclass(frozen=True)
class ProdOp(Primitive):
    """``Π_axes x``: ``axes -> ()``, woven over every other axis."""

    axes: Segment

    op: ClassVar[str] = "prod"
    family: ClassVar[str] = "product"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _axes(self.axes, "product")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), SCALAR_TYPE

    def label(self) -> str:
        return "Π " + " ".join(self.axes.names)


@dataclass(frozen=True)
class ProdBackwardOp(Primitive):
    """The gradient of a product from its input ``x`` and output gradient ``g``: ``(axes, ()) -> axes``, at each entry
    ``g`` times the product of the other entries."""

    axes: Segment

    op: ClassVar[str] = "prod_backward"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _axes(self.axes, "product backward")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes, SCALAR)), Type((self.axes,))

    def label(self) -> str:
        return "Πᵀ"


def Prod(axes: TypeLike) -> Box:
    """The product of the entries over ``axes`` (``torch.prod``), one number per position of the other axes."""
    typ = as_type(axes)
    if len(typ) != 1:
        raise ParseError(f"product takes one segment, not '{typ}'")
    return Box.make(ProdOp(typ[0]))


# -- lowering -----------------------------------------------------------------------------------
@LOWERING.rule(ProdOp)
def lower_prod(prim: ProdOp, ctx: RuleContext) -> list[str]:
    """One axis: ``torch.prod(x, d)``; several: moved last, flattened, then the product of the last."""
    x = ctx.args[0].var
    dims = ctx.own_dims("dom", 0)
    if len(dims) == 1:
        return [f"torch.prod({x}, {dims[0]})"]
    k = len(dims)
    last = tuple(range(-k, 0))
    return [f"torch.prod({x}.movedim({tuple(dims)}, {last}).flatten({-k}), -1)"]


@LOWERING.rule(ProdBackwardOp)
def lower_prod_backward(prim: ProdBackwardOp, ctx: RuleContext) -> list[str]:
    """The woven axes lead (the default weave policy): the multiplied axes are the last, flattened to one; the product
    of the others is the running product from the left (shifted by one) times the one from the right."""
    x, g = (a.var for a in ctx.args)
    k = len(prim.axes.axes)
    flat = ctx.em.assign("flat", f"{x}.flatten({-k})", ())
    one = ctx.em.assign("one", f"torch.ones_like({flat}[..., :1])", ())
    left = ctx.em.assign("left", f"torch.cat([{one}, {flat}[..., :-1]], -1).cumprod(-1)", ())
    right = ctx.em.assign("right", f"torch.cat([{flat}[..., 1:], {one}], -1).flip(-1).cumprod(-1).flip(-1)", ())
    return [f"({g}[..., None] * {left} * {right}).reshape({x}.shape)"]


# -- costs: autograd keeps the input and the product -------------------------------------------
@COST.rule(ProdOp)
def cost_prod(prim: ProdOp, ctx: CostContext) -> list[Tensor]:
    """A multiplication per entry; the backward's products of the others, about three per entry."""
    x = ctx.inputs[0]
    y = ctx.output(0)
    if x.grad:
        ctx.save(x, y)
    ctx.other(x.numel, 3 * x.numel if x.grad else sympy.Integer(0))
    return [y]


@COST.rule(ProdBackwardOp)
def cost_prod_backward(prim: ProdBackwardOp, ctx: CostContext) -> list[Tensor]:
    ctx.other(3 * ctx.numel(), sympy.Integer(0))
    return [ctx.output(0)]


# -- backward -----------------------------------------------------------------------------------
@BACKWARD.rule(ProdOp)
def backward_prod(prim: ProdOp, box: Box, builder: object) -> BoxBackward:
    return BoxBackward((("in", 0),), Box(ProdBackwardOp(prim.axes)))


BACKWARD.unsupported(ProdBackwardOp, SECOND_ORDER)


# -- drawing ------------------------------------------------------------------------------------
@DRAWING.rule(ProdOp, ProdBackwardOp)
def draw_prod(prim: ProdOp | ProdBackwardOp, ctx: Layout, box: Box) -> Frag:
    """A box on the multiplied wires, which end there: ``Π`` (``Πᵀ`` for the backward)."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import Piece

    parts: tuple[Piece, ...] = (Piece("Π"),) + ((Piece("T", script=1),) if isinstance(prim, ProdBackwardOp) else ())
    return generic_box(ctx, box.dom, box.cod, parts, fill="#ffffff", name=prim.op)


# -- import: recognised by ncd.trace.boxes_ranking -------------------------------------------------------
IMPORT.known(ProdOp, by="ncd.trace.boxes_ranking")
IMPORT.unsupported(ProdBackwardOp, NOT_TRACED)
