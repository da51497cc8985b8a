"""Cumulative sums along an axis: ``torch.cumsum`` (and its reverse, the transpose).

``CumSum("t")`` gives, at each position of ``t``, the sum of the entries up to it; woven over
every other axis.  ``reverse=True`` sums from the end (``flip``, ``cumsum``, ``flip``): the
transpose of the forward sum, so each is the other's backward.  On index or bool segments (a
mixture-of-experts router counting tokens per expert) it gives indices, as torch does, whose
range bounds the largest possible sum.

One module holds every rule of the family: declaration, lowering, costs, backward and drawing.

>>> import ncd
>>> str((ncd.Identity.of("b t") >> ncd.CumSum("t")).cod)
'b t'
>>> str(ncd.CumSum("t:8 [bool]").cod)
't:8 [9]'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box, Diagram
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import COST, DRAWING, IMPORT, LOWERING
from ncd.prims.kinds import transpose

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["CumSumOp", "CumSum"]


@dataclass(frozen=True)
class CumSumOp(Primitive):
    """Running sums along the one axis of ``source`` (from the end when ``reverse``)."""

    source: Segment
    reverse: bool = False

    op: ClassVar[str] = "cumsum"
    family: ClassVar[str] = "cumulative"
    kind: ClassVar[Kind] = "linear"
    weave_policy = weaving.same_inputs_and_output

    def __post_init__(self) -> None:
        if len(self.source.axes) != 1:
            raise ParseError(f"cumsum runs along one axis, not '{self.source}'")
        if self.source.dtype != "float" and self.reverse:
            raise ParseError(f"cumsum of '{self.source}': only float sums run in reverse (the transpose)")

    def target(self) -> Segment:
        axis = self.source.axes[0]
        if self.source.dtype == "float":
            return self.source
        top = sympy.Integer(1) if self.source.dtype == "bool" else (self.source.range or sympy.Integer(1)) - 1
        return Segment((axis,), "index", axis.size * top + 1)

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.target(),))

    def label(self) -> str:
        return ("Σ≥ " if self.reverse else "Σ≤ ") + self.source.axes[0].name


def CumSum(source: TypeLike, reverse: bool = False) -> Box:
    """Cumulative sum along the one axis of ``source`` (``"t"``, ``"t [bool]"``, ``"t [4]"``); ``reverse``: from the end."""
    typ = as_type(source)
    if len(typ) != 1:
        raise ParseError(f"cumsum takes one segment, not '{typ}'")
    return Box.make(CumSumOp(typ[0], reverse))


# -- lowering -----------------------------------------------------------------------------------
@LOWERING.rule(CumSumOp)
def lower_cumsum(prim: CumSumOp, ctx: RuleContext) -> list[str]:
    x = ctx.args[0].var
    (d,) = ctx.own_dims("dom", 0)
    if prim.reverse:
        return [f"torch.cumsum({x}.flip({d}), {d}).flip({d})"]
    return [f"torch.cumsum({x}, {d})"]


# -- costs and backward -------------------------------------------------------------------------
@COST.rule(CumSumOp)
def cost_cumsum(prim: CumSumOp, ctx: CostContext) -> list[Tensor]:
    """One addition per entry; autograd keeps nothing (the reverse's flips neither)."""
    x = ctx.inputs[0]
    n = ctx.numel()
    grad = x.grad and prim.source.dtype == "float"
    ctx.other(n, n if grad else sympy.Integer(0))
    if prim.source.dtype != "float":
        return [ctx.new(ctx.out_axes[0], grad=False, dtype="index")]
    return [ctx.like(0, x)]


@transpose(CumSumOp)
def transpose_cumsum(prim: CumSumOp, box: Box) -> Diagram:
    """Linear: the transpose of a running sum from the start is a running sum from the end (and back)."""
    from ncd.analysis.backward import cot
    from ncd.ir.diagram import Identity
    from ncd.prims.structure import ZerosOp

    if prim.source.dtype != "float":  # indices: no gradient flows
        return Identity(cot(box.cod)) if not len(cot(box.dom)) else Box(ZerosOp(cot(box.dom)))
    return Box(CumSumOp(prim.source, not prim.reverse))


# -- drawing ------------------------------------------------------------------------------------
@DRAWING.rule(CumSumOp)
def draw_cumsum(prim: CumSumOp, ctx: Layout, box: Box) -> Frag:
    """``Σ≤ t`` in a box on the summed wire (a triangular sum)."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import Piece, typeset_text

    parts = typeset_text("Σ") + (Piece("≥" if prim.reverse else "≤", script=-1),)
    return generic_box(ctx, box.dom, box.cod, parts, fill="#ffffff", name="cumsum")


# -- import recognition: the recognisers of ncd.trace.boxes (ncd.ir.rules' import cell) ----------

IMPORT.known(CumSumOp, by="ncd.trace.boxes")
