"""Reductions to a number per position: the vector p-norm and log-sum-exp over some axes.

``VectorNorm("m")`` is ``‖x‖ₚ`` over ``m`` (``torch.linalg.vector_norm``: ``(Σ |x|ᵖ)^(1/p)``, ``p ≥ 1``);
``LogSumExp("s")`` is ``log Σ exp x`` over ``s`` (``torch.logsumexp``).  Both take the reduced
axes to a scalar and are woven over every other axis, like a sum; ``x / ‖x‖`` (``F.normalize``)
is this box followed by :func:`ncd.Divide`.  Their backward passes share one derivative box,
:class:`ReductionBackwardOp`, fed with the input, the stored output and the gradient; so does an amax's
(a top-1 of :mod:`ncd.prims.ranking` made by ``x.amax(dim)``), which shares the gradient among tied entries.

One module holds every rule of the family: declaration, lowering, costs, backward, drawing and
import (recognised by :mod:`ncd.trace.boxes_ranking`).

>>> import ncd
>>> str((ncd.Identity.of("b t m") >> ncd.VectorNorm("m")).cod)
'b t'
>>> str((ncd.Identity.of("b h w c") >> ncd.VectorNorm("h w")).cod)
'b c'
>>> ncd.VectorNorm("m", 0.5)
Traceback (most recent call last):
...
ncd.errors.ParseError: vector norm over 'm': the order p must be a finite number >= 1, not 0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

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

__all__ = ["VectorNormOp", "LogSumExpOp", "ReductionBackwardOp", "VectorNorm", "LogSumExp"]

Reduction = Literal["norm", "logsumexp", "amax", "amin"]


def _axes(axes: Segment, what: str) -> None:
    if not axes.axes or axes.repeated or axes.dtype != "float":
        raise ParseError(f"{what} over '{axes}': reduces distinct axes of a float tensor")


def _order(p: float, what: str) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not (1 <= p < math.inf):
        raise ParseError(f"{what}: the order p must be a finite number >= 1, not {p!r}")


@dataclass(frozen=True)
class VectorNormOp(Primitive):
    """``(Σ_axes |x|ᵖ)^(1/p)``: ``axes -> ()``, woven over every other axis."""

    axes: Segment
    p: float = 2.0

    op: ClassVar[str] = "vector_norm"
    family: ClassVar[str] = "reduction"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _axes(self.axes, "vector norm")
        _order(self.p, f"vector norm over '{self.axes}'")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), SCALAR_TYPE

    def label(self) -> str:
        return f"‖·‖{_p_text(self.p)}"


@dataclass(frozen=True)
class LogSumExpOp(Primitive):
    """``log Σ_axes exp x``: ``axes -> ()``, woven over every other axis."""

    axes: Segment

    op: ClassVar[str] = "logsumexp"
    family: ClassVar[str] = "reduction"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _axes(self.axes, "logsumexp")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), SCALAR_TYPE

    def label(self) -> str:
        return "log Σ exp"


@dataclass(frozen=True)
class ReductionBackwardOp(Primitive):
    """The gradient of a reduction from its input ``x``, stored output ``y`` and output gradient ``g``:
    ``(axes, (), ()) -> axes``.  Norm: ``g · sign(x) |x|ᵖ⁻¹ / yᵖ⁻¹`` (``0`` where ``y = 0``);
    log-sum-exp: ``g · exp(x − y)``; amax (amin): ``g · [x = y] / Σ [x = y]``, shared evenly among the tied
    entries, as torch's autograd shares it."""

    axes: Segment
    reduction: Reduction
    p: float = 2.0

    op: ClassVar[str] = "reduction_backward"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _axes(self.axes, f"{self.reduction} backward")
        if self.reduction not in ("norm", "logsumexp", "amax", "amin"):
            raise ParseError(f"reduction backward over '{self.axes}': unknown reduction {self.reduction!r}")
        _order(self.p, f"{self.reduction} backward over '{self.axes}'")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes, SCALAR, SCALAR)), Type((self.axes,))

    def label(self) -> str:
        return _reduction_text(self.reduction, self.p) + "ᵀ"


def _reduction_text(reduction: Reduction, p: float) -> str:
    return {"norm": "‖·‖" + _p_text(p), "logsumexp": "log Σ exp", "amax": "max", "amin": "min"}[reduction]


def _p_text(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else repr(float(p))


def _segment(axes: TypeLike, what: str) -> Segment:
    typ = as_type(axes)
    if len(typ) != 1:
        raise ParseError(f"{what} takes one segment, not '{typ}'")
    return typ[0]


def VectorNorm(axes: TypeLike, p: float = 2.0) -> Box:
    """The p-norm (``p >= 1``, default the Euclidean norm) over ``axes``, one number per position of the other axes."""
    return Box.make(VectorNormOp(_segment(axes, "vector norm"), p if isinstance(p, bool) else float(p)))


def LogSumExp(axes: TypeLike) -> Box:
    """``log Σ exp`` over ``axes`` (computed stably, as ``torch.logsumexp``), one number per position of the other axes."""
    return Box.make(LogSumExpOp(_segment(axes, "logsumexp")))


# -- lowering -----------------------------------------------------------------------------------
def _dims(ctx: RuleContext) -> str:
    dims = ctx.own_dims("dom", 0)
    return str(dims[0]) if len(dims) == 1 else "(" + ", ".join(map(str, dims)) + ")"


@LOWERING.rule(VectorNormOp)
def lower_vector_norm(prim: VectorNormOp, ctx: RuleContext) -> list[str]:
    order = "" if prim.p == 2 else f", {prim.p!r}"
    return [f"torch.linalg.vector_norm({ctx.args[0].var}{order}, dim={_dims(ctx)})"]


@LOWERING.rule(LogSumExpOp)
def lower_logsumexp(prim: LogSumExpOp, ctx: RuleContext) -> list[str]:
    return [f"torch.logsumexp({ctx.args[0].var}, {_dims(ctx)})"]


@LOWERING.rule(ReductionBackwardOp)
def lower_reduction_backward(prim: ReductionBackwardOp, ctx: RuleContext) -> list[str]:
    """The woven axes lead every operand (the default weave policy), so ``y`` and ``g`` gain trailing unit axes."""
    x, y, g = (a.var for a in ctx.args)
    unit = "(..." + ", None" * len(prim.axes.axes) + ")"
    ys, gs = f"{y}[{unit[1:-1]}]", f"{g}[{unit[1:-1]}]"
    if prim.reduction == "logsumexp":
        return [f"{gs} * torch.exp({x} - {ys})"]
    if prim.reduction in ("amax", "amin"):  # torch's own rule: the gradient over the count of ties, where tied
        tied = ctx.em.fresh("tied")
        own = ", ".join(str(-k) for k in range(len(prim.axes.axes), 0, -1))
        ctx.em.line(f"{tied} = {x} == {ys}")
        return [f"{gs} / {tied}.sum(({own},), keepdim=True) * {tied}"]
    if prim.p == 1:
        return [f"{gs} * torch.sign({x})"]
    if prim.p == 2:
        return [f"({gs} * {x} / {ys}).masked_fill({ys} == 0, 0.0)"]
    return [f"({gs} * torch.sign({x}) * {x}.abs().pow({prim.p - 1!r}) / {ys}.pow({prim.p - 1!r})).masked_fill({ys} == 0, 0.0)"]


# -- costs: autograd keeps the input and the output (saved_tensors_hooks says so) -------------
def _cost_reduction(ctx: CostContext, forward: int, backward: int) -> list[Tensor]:
    x = ctx.inputs[0]
    y = ctx.output(0)
    n = x.numel
    if x.grad:
        ctx.save(x, y)
    ctx.other(forward * n, backward * n if x.grad else sympy.Integer(0))
    return [y]


@COST.rule(VectorNormOp)
def cost_vector_norm(prim: VectorNormOp, ctx: CostContext) -> list[Tensor]:
    """``|x|ᵖ`` and a sum per entry; the backward's scaled sign per entry."""
    return _cost_reduction(ctx, 2, 3)


@COST.rule(LogSumExpOp)
def cost_logsumexp(prim: LogSumExpOp, ctx: CostContext) -> list[Tensor]:
    """A maximum, a difference, an exponential and a sum per entry; the backward's ``g · exp(x − y)``."""
    return _cost_reduction(ctx, 4, 3)


@COST.rule(ReductionBackwardOp)
def cost_reduction_backward(prim: ReductionBackwardOp, ctx: CostContext) -> list[Tensor]:
    ctx.other(3 * ctx.numel(), sympy.Integer(0))
    return [ctx.output(0)]


# -- backward -----------------------------------------------------------------------------------
@BACKWARD.rule(VectorNormOp)
def backward_vector_norm(prim: VectorNormOp, box: Box, builder: object) -> BoxBackward:
    return BoxBackward((("in", 0), ("out", 0)), Box(ReductionBackwardOp(prim.axes, "norm", prim.p)))


@BACKWARD.rule(LogSumExpOp)
def backward_logsumexp(prim: LogSumExpOp, box: Box, builder: object) -> BoxBackward:
    return BoxBackward((("in", 0), ("out", 0)), Box(ReductionBackwardOp(prim.axes, "logsumexp")))


BACKWARD.unsupported(ReductionBackwardOp, SECOND_ORDER)


# -- drawing ------------------------------------------------------------------------------------
@DRAWING.rule(VectorNormOp, LogSumExpOp, ReductionBackwardOp)
def draw_reduction(prim: VectorNormOp | LogSumExpOp | ReductionBackwardOp, ctx: Layout, box: Box) -> Frag:
    """A box on the reduced wires, which end there: ``‖·‖₂`` (the order as a subscript) or ``log Σ exp``."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import Piece

    norm = isinstance(prim, VectorNormOp) or (isinstance(prim, ReductionBackwardOp) and prim.reduction == "norm")
    p = getattr(prim, "p", 2.0)
    parts: tuple[Piece, ...] = (Piece("‖·‖"), Piece(_p_text(p), script=-1)) if norm else \
        (Piece(_reduction_text(prim.reduction, p)),) if isinstance(prim, ReductionBackwardOp) else (Piece("log Σ exp"),)
    if isinstance(prim, ReductionBackwardOp):
        parts += (Piece("T", script=1),)
    return generic_box(ctx, box.dom, box.cod, parts, fill="#ffffff", name=prim.op)


# -- import: recognised by ncd.trace.boxes_ranking -------------------------------------------------------
IMPORT.known(VectorNormOp, LogSumExpOp, by="ncd.trace.boxes_ranking")
IMPORT.unsupported(ReductionBackwardOp, NOT_TRACED)
