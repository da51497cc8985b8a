"""Cumulative sums along an axis: ``torch.cumsum`` (and its reverse, the transpose); running products, log-sum-exps,
maxima and minima (``torch.cumprod``, ``logcumsumexp``, ``cummax``, ``cummin``).

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
from ncd.ir.diagram import Box, Diagram, Identity
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.prims.kinds import transpose

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["CumSumOp", "CumSum", "CumulativeOp", "Cumulative", "CumulativeBackwardOp", "RUNNING"]


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


# -- running products, log-sum-exps, maxima and minima: torch.cumprod, logcumsumexp, cummax, cummin ----------------
#: the running functions (beside the sum): torch's call and the glyph
RUNNING = {"prod": ("torch.cumprod", "Π"), "logsumexp": ("torch.logcumsumexp", "LSE"), "max": ("torch.cummax", "max"),
           "min": ("torch.cummin", "min")}
#: the running functions that pick an entry (torch returns its position too; its gradient goes there)
PICKING = ("max", "min")


@dataclass(frozen=True)
class CumulativeOp(Primitive):
    """The running ``function`` (``"prod"``, ``"logsumexp"``, ``"max"``, ``"min"``) of the float entries along the one
    axis of ``source`` (of ``cummax``/``cummin`` the values; their positions are not an output); the maximum and minimum
    also of integers, keeping their range (GroundingDINO's previous and next special token)."""

    source: Segment
    function: str

    op: ClassVar[str] = "cumulative"
    family: ClassVar[str] = "cumulative"
    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.same_inputs_and_output

    def __post_init__(self) -> None:
        if self.function not in RUNNING:
            raise ParseError(f"running {self.function!r}: known running functions are {', '.join(RUNNING)} (and CumSum)")
        integers = self.source.dtype == "index" and self.function in PICKING  # (the extremes keep the range)
        if len(self.source.axes) != 1 or self.source.dtype != "float" and not integers:
            kinds = "float or integer" if self.function in PICKING else "float"
            raise ParseError(f"running {self.function} runs along one {kinds} axis, not '{self.source}'")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.source,))

    def label(self) -> str:
        return RUNNING[self.function][1] + "≤ " + self.source.axes[0].name


def Cumulative(source: TypeLike, function: str) -> Box:
    """The running product (``function="prod"``, ``torch.cumprod``), log-sum-exp (``"logsumexp"``,
    ``torch.logcumsumexp``), maximum (``"max"``, ``torch.cummax(...).values``) or minimum (``"min"``) along the one axis
    of ``source``."""
    typ = as_type(source)
    if len(typ) != 1:
        raise ParseError(f"running {function} takes one segment, not '{typ}'")
    return Box.make(CumulativeOp(typ[0], function))


@dataclass(frozen=True)
class CumulativeBackwardOp(Primitive):
    """The transpose of a running product or log-sum-exp: ``(x, y, g) ↦ ∂x`` from the stored input and output.

    ``prod``: ``∂x_i = Σ_{j≥i} g_j Π_{k≤j, k≠i} x_k`` (exact where entries are 0); ``logsumexp``:
    ``∂x_i = Σ_{j≥i} g_j exp(x_i − y_j)``.  Both are written with a square matrix over the axis.  ``max``/``min``: each
    ``g_j`` added at the position torch picked for ``y_j`` (its ``cummax``/``cummin`` indices, recomputed from ``x``)."""

    source: Segment
    function: str

    op: ClassVar[str] = "cumulative_backward"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        CumulativeOp(self.source, self.function)

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,) * 3), Type((self.source,))

    def label(self) -> str:
        return RUNNING[self.function][1] + "≤ᵀ"


@LOWERING.rule(CumulativeOp)
def lower_cumulative(prim: CumulativeOp, ctx: RuleContext) -> list[str]:
    (d,) = ctx.own_dims("dom", 0)
    return [f"{RUNNING[prim.function][0]}({ctx.args[0].var}, {d})" + (".values" if prim.function in PICKING else "")]


@LOWERING.rule(CumulativeBackwardOp)
def lower_cumulative_backward(prim: CumulativeBackwardOp, ctx: RuleContext) -> list[str]:
    """The woven axes lead (the default policy): the running axis is the last."""
    x, y, g = (v.var for v in ctx.args)
    if prim.function in PICKING:
        return [f"torch.zeros_like({g}).scatter_add(-1, {RUNNING[prim.function][0]}({x}, -1).indices, {g})"]
    n = ctx.int(prim.source.axes[0].size, f"axis {prim.source.axes[0].name}")
    upper = ctx.em.assign("later", f"torch.ones({n}, {n}, dtype=torch.bool, device={x}.device).triu()", ())
    if prim.function == "prod":  # row i: the entries with x_i read as 1, multiplied up to each j
        eye = f"torch.eye({n}, dtype=torch.bool, device={x}.device)"
        others = ctx.em.assign("others", f"torch.where({eye}, 1.0, {x}[..., None, :]).cumprod(-1)", ())
        return [f"({others} * {g}[..., None, :] * {upper}).sum(-1)"]
    return [f"(torch.exp({x}[..., :, None] - {y}[..., None, :]).masked_fill(~{upper}, 0) * {g}[..., None, :]).sum(-1)"]


@COST.rule(CumulativeOp)
def cost_cumulative(prim: CumulativeOp, ctx: CostContext) -> list[Tensor]:
    """Autograd keeps the input and the output (of a running maximum or minimum, the input and the positions)."""
    x = ctx.inputs[0]
    n = ctx.numel()
    y = ctx.like(0, x)
    if x.grad and prim.function in PICKING:
        ctx.save(x, ctx.new(ctx.out_axes[0], grad=False, dtype="index"))
        ctx.other(n, n)
        return [y]
    if x.grad:
        ctx.save(x, y)
    ctx.other(2 * n, 4 * n if x.grad else sympy.Integer(0))
    return [y]


@COST.rule(CumulativeBackwardOp)
def cost_cumulative_backward(prim: CumulativeBackwardOp, ctx: CostContext) -> list[Tensor]:
    n = ctx.numel()
    if prim.function in PICKING:
        ctx.other(n, sympy.Integer(0))
        return [ctx.output(0)]
    ctx.other(4 * n * prim.source.axes[0].size, sympy.Integer(0))
    return [ctx.output(0)]


@BACKWARD.rule(CumulativeOp)
def backward_cumulative(prim: CumulativeOp, box: Box, builder: object) -> BoxBackward:
    if prim.source.dtype != "float":  # integers: no gradient flows in or out
        return BoxBackward((), Identity(Type(())))
    return BoxBackward((("in", 0), ("out", 0)), Box(CumulativeBackwardOp(prim.source, prim.function)))


BACKWARD.unsupported(CumulativeBackwardOp, SECOND_ORDER)


@DRAWING.rule(CumulativeOp)
def draw_cumulative(prim: CumulativeOp, ctx: Layout, box: Box) -> Frag:
    """``Π≤`` / ``LSE≤`` / ``max≤`` / ``min≤`` in a box on the running wire, as the running sum."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import Piece, typeset_text

    parts = typeset_text(RUNNING[prim.function][1]) + (Piece("≤", script=-1),)
    return generic_box(ctx, box.dom, box.cod, parts, fill="#ffffff", name="cumulative")


IMPORT.known(CumulativeOp, by="ncd.trace.boxes")
IMPORT.unsupported(CumulativeBackwardOp, NOT_TRACED)
