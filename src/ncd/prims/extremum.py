"""The larger or smaller of two tensors, entry by entry: ``torch.maximum(a, b)``, ``torch.minimum(a, b)``.

Like the Hadamard product (:func:`ncd.Multiply`), ``Maximum()`` has scalar domains ``1, 1 -> 1``:
composed after two tensors it is woven over their axes, and an axis only one of them carries is
broadcast (RWKV's running maximum of its attention exponents, ``maximum(max_state, k)``).
The larger (smaller) of a tensor and a Python number is :class:`ncd.prims.arithmetic.ArithmeticOp`.
``Clamp()`` (``1, 1, 1 -> 1``) is ``torch.clamp(x, lo, hi)`` by two tensors at once: one call, whose gradient
autograd gives where no chain of a maximum and a minimum does (none at all where ``x < lo = hi``).

One module holds every rule of the family: declaration, lowering, costs, backward and drawing.

>>> import ncd
>>> from ncd.prims.extremum import Maximum
>>> str((ncd.Identity.of("b t m, b m") >> Maximum()).cod)
'b t m'
>>> Maximum(smaller=True).prim.label()
'min'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.ir.axes import SCALAR, Segment
from ncd.ir.diagram import Box, Par, Seq
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SCALAR_DRAWING, SECOND_ORDER
from ncd.prims.binary import Entrywise, draw_meeting, output_like

if TYPE_CHECKING:
    from ncd.analysis.backward import BoxBackward
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = ["ExtremumOp", "Maximum", "ExtremumGradientOp", "ClampOp", "Clamp", "ClampGradientOp"]


@dataclass(frozen=True)
class ExtremumOp(Entrywise):
    """``max(a, b)`` (``smaller``: ``min(a, b)``) entry by entry: ``1, 1 -> 1``, woven over the axes of both.

    ``ties`` says where the gradient of a tie goes, as the recorded call gives it: ``"half"`` to each
    (``torch.maximum``), ``"first"`` all to ``a`` (``torch.clamp(a, min=b)``) or ``"second"`` all to ``b``
    (``torch.clamp(b, min=a)``); the lowering makes that very call.
    """

    smaller: bool = False
    ties: str = "half"

    def __post_init__(self) -> None:
        if self.ties not in ("half", "first", "second"):
            from ncd.errors import ParseError

            raise ParseError(f"{self.label()}: ties must be 'half', 'first' or 'second', not {self.ties!r}")

    op: ClassVar[str] = "extremum"
    family: ClassVar[str] = "elementwise"

    def label(self) -> str:
        return "min" if self.smaller else "max"


def Maximum(smaller: bool = False) -> Box:
    """The larger (``smaller``: the smaller) of two tensors entry by entry (broadcast over the axes only one has)."""
    return Box.make(ExtremumOp(smaller))


@LOWERING.rule(ExtremumOp)
def lower_extremum(prim: ExtremumOp, ctx: RuleContext) -> list[str]:
    a, b = ctx.args
    if prim.ties != "half":  # a clamp by a tensor bound: the bounded tensor takes the gradient of a tie
        x, bound = (a, b) if prim.ties == "first" else (b, a)
        return [f"torch.clamp({x.var}, {'max' if prim.smaller else 'min'}={bound.var})"]
    return [f"torch.{'minimum' if prim.smaller else 'maximum'}({a.var}, {b.var})"]


@COST.rule(ExtremumOp)
def cost_extremum(prim: ExtremumOp, ctx: CostContext) -> list[Tensor]:
    """One comparison per entry; for the backward (which entry won, ties halved) autograd keeps both inputs."""
    a, b = ctx.inputs
    n = ctx.numel()
    out = output_like(ctx)
    if a.grad or b.grad:
        ctx.save(a, b)
    ctx.other(n, 4 * n if a.grad or b.grad else sympy.Integer(0))
    return [out]


#: where each operand's gradient goes (autograd's formulas, ``derivatives.yaml``) in ``{a}``, ``{b}``, ``{g}``: by
#: (smaller, ties, operand).  Written as torch's kernels test the operands, never as ``g ⊙ mask``: at a NaN operand
#: ``torch.maximum`` gives both the whole gradient, at equal infinities half each, and an infinite cotangent gives 0
#: where an operand lost.
GRADIENTS: dict[tuple[bool, str], tuple[str, str]] = {
    (False, "half"): ("torch.where({a} == {b}, {g} / 2, {g}).masked_fill({a} < {b}, 0)",
                      "torch.where({a} == {b}, {g} / 2, {g}).masked_fill({a} > {b}, 0)"),
    (True, "half"): ("torch.where({a} == {b}, {g} / 2, {g}).masked_fill({a} > {b}, 0)",
                     "torch.where({a} == {b}, {g} / 2, {g}).masked_fill({a} < {b}, 0)"),
    # torch.clamp(a, min=b) (max=b): a takes the gradient where it is within its bound, b where a is past it
    (False, "first"): ("torch.where({a} >= {b}, {g}, 0.0)", "torch.where({a} < {b}, {g}, 0.0)"),
    (True, "first"): ("torch.where({a} <= {b}, {g}, 0.0)", "torch.where({a} > {b}, {g}, 0.0)"),
    # torch.clamp(b, min=a) (max=a)
    (False, "second"): ("torch.where({b} < {a}, {g}, 0.0)", "torch.where({b} >= {a}, {g}, 0.0)"),
    (True, "second"): ("torch.where({b} > {a}, {g}, 0.0)", "torch.where({b} <= {a}, {g}, 0.0)"),
}


@dataclass(frozen=True)
class ExtremumGradientOp(Entrywise):
    """The gradient of :class:`ExtremumOp` (``smaller``, ``ties``) with respect to operand ``operand`` (0: ``a``,
    1: ``b``): ``(a, b, g) -> ∂``, autograd's formula (a backward diagram's box, drawn ``∂a``/``∂b`` under the
    function's name)."""

    smaller: bool = False
    ties: str = "half"
    operand: int = 0

    op: ClassVar[str] = "extremum_gradient"
    family: ClassVar[str] = "derivative"
    operands: ClassVar[tuple[Segment, ...]] = (SCALAR, SCALAR, SCALAR)

    def __post_init__(self) -> None:
        from ncd.errors import ParseError

        if (self.smaller, self.ties) not in GRADIENTS:
            raise ParseError(f"the gradient of {'min' if self.smaller else 'max'}: ties must be 'half', 'first' or"
                             f" 'second', not {self.ties!r}")
        if self.operand not in (0, 1) or isinstance(self.operand, bool):
            raise ParseError(f"the gradient of {'min' if self.smaller else 'max'} is with respect to operand 0 or 1,"
                             f" not {self.operand!r}")

    def label(self) -> str:
        return f"∂{'ab'[self.operand]}"

    def hint(self) -> str:
        return f"d{'ab'[self.operand]}_{'min' if self.smaller else 'max'}"


@LOWERING.rule(ExtremumGradientOp)
def lower_extremum_gradient(prim: ExtremumGradientOp, ctx: RuleContext) -> list[str]:
    a, b, g = ctx.args
    return [GRADIENTS[prim.smaller, prim.ties][prim.operand].format(a=a.var, b=b.var, g=g.var)]


@COST.rule(ExtremumGradientOp)
def cost_extremum_gradient(prim: ExtremumGradientOp, ctx: CostContext) -> list[Tensor]:
    """Two comparisons and a selection per entry (no gradient of its own)."""
    ctx.other(3 * ctx.numel(), sympy.Integer(0))
    return [output_like(ctx)]


@BACKWARD.rule(ExtremumOp)
def backward_extremum(prim: ExtremumOp, box: Box, builder: object) -> BoxBackward:
    """``∂a``, ``∂b``: each a gradient box on ``(a, b, g)``, autograd's formula: the gradient goes to the entry that
    won, on a tie half of it to each (``ties="first"``: all to ``a``, ``"second"``: all to ``b``), at a NaN to both
    (``torch.maximum``'s masks test ``a < b`` and ``a == b``, both false there)."""
    from ncd.analysis.backward import BoxBackward
    from ncd.prims.structure import route

    parts = [Box(ExtremumGradientOp(prim.smaller, prim.ties, operand)) for operand in (0, 1)]
    grads = Seq.of(route([SCALAR] * 3, [0, 1, 2, 0, 1, 2]), Par.of(*parts))
    return BoxBackward((("in", 0), ("in", 1)), grads)


BACKWARD.unsupported(ExtremumGradientOp, SECOND_ORDER)
SCALAR_DRAWING.rule(ExtremumGradientOp)(draw_meeting)
IMPORT.unsupported(ExtremumGradientOp, NOT_TRACED)


# drawing: like the product ``⊙``, equal wires of both tensors meet at dots under ``max`` (or ``min``)
SCALAR_DRAWING.rule(ExtremumOp)(draw_meeting)


# -- clamp by two tensors: one box --------------------------------------------------------------------
@dataclass(frozen=True)
class ClampOp(Entrywise):
    """``torch.clamp(x, lo, hi)`` entry by entry, both bounds tensors: ``min(max(x, lo), hi)``, ``1, 1, 1 -> 1``."""

    op: ClassVar[str] = "clamp"
    family: ClassVar[str] = "elementwise"
    operands: ClassVar[tuple[Segment, ...]] = (SCALAR, SCALAR, SCALAR)
    symbol: ClassVar[str] = "clamp"


def Clamp() -> Box:
    """``torch.clamp(x, lo, hi)`` of three tensors (broadcast over the axes some lack)."""
    return Box.make(ClampOp())


@LOWERING.rule(ClampOp)
def lower_clamp(prim: ClampOp, ctx: RuleContext) -> list[str]:
    x, lo, hi = ctx.args
    return [f"torch.clamp({x.var}, {lo.var}, {hi.var})"]


@COST.rule(ClampOp)
def cost_clamp(prim: ClampOp, ctx: CostContext) -> list[Tensor]:
    """Two comparisons per entry; for the backward autograd keeps the three tensors."""
    n = ctx.numel()
    grad = any(t.grad for t in ctx.inputs)
    if grad:
        ctx.save(*ctx.inputs)
    ctx.other(2 * n, 6 * n if grad else sympy.Integer(0))
    return [output_like(ctx)]


#: each operand's gradient (autograd's ``clamp_backward``, ``clamp_backward_min_max``) in ``{x}``, ``{lo}``, ``{hi}``,
#: ``{g}``: comparisons of the operands themselves (``x ≥ lo`` holds at ``x = lo = ∞``, where ``x − lo ≥ 0`` is NaN)
CLAMP_GRADIENTS = ("torch.where(({x} >= {lo}) & ({x} <= {hi}), {g}, 0.0)",
                   "torch.where(({x} < {lo}) & ({lo} < {hi}), {g}, 0.0)",
                   "torch.where(({x} > {hi}) | ({hi} < {lo}), {g}, 0.0)")


@dataclass(frozen=True)
class ClampGradientOp(Entrywise):
    """The gradient of :class:`ClampOp` with respect to operand ``operand`` (0: ``x``, 1: ``lo``, 2: ``hi``):
    ``(x, lo, hi, g) -> ∂``, autograd's formula (a backward diagram's box)."""

    operand: int = 0

    op: ClassVar[str] = "clamp_gradient"
    family: ClassVar[str] = "derivative"
    operands: ClassVar[tuple[Segment, ...]] = (SCALAR, SCALAR, SCALAR, SCALAR)

    def __post_init__(self) -> None:
        if self.operand not in (0, 1, 2) or isinstance(self.operand, bool):
            from ncd.errors import ParseError

            raise ParseError(f"the gradient of clamp is with respect to operand 0, 1 or 2, not {self.operand!r}")

    def label(self) -> str:
        return f"∂{('x', 'lo', 'hi')[self.operand]}"

    def hint(self) -> str:
        return f"d{('x', 'lo', 'hi')[self.operand]}_clamp"


@LOWERING.rule(ClampGradientOp)
def lower_clamp_gradient(prim: ClampGradientOp, ctx: RuleContext) -> list[str]:
    x, lo, hi, g = ctx.args
    return [CLAMP_GRADIENTS[prim.operand].format(x=x.var, lo=lo.var, hi=hi.var, g=g.var)]


@COST.rule(ClampGradientOp)
def cost_clamp_gradient(prim: ClampGradientOp, ctx: CostContext) -> list[Tensor]:
    """Two comparisons, a logical operation and a selection per entry (no gradient of its own)."""
    ctx.other(4 * ctx.numel(), sympy.Integer(0))
    return [output_like(ctx)]


@BACKWARD.rule(ClampOp)
def backward_clamp(prim: ClampOp, box: Box, builder: object) -> BoxBackward:
    """Autograd's rule: ``∂x = g [lo ≤ x][x ≤ hi]``, ``∂lo = g [x < lo][lo < hi]``, ``∂hi = g ([x > hi] ∨ [hi < lo])``,
    each a gradient box on ``(x, lo, hi, g)`` selecting the gradient or zero."""
    from ncd.analysis.backward import BoxBackward
    from ncd.prims.structure import route

    parts = [Box(ClampGradientOp(operand)) for operand in (0, 1, 2)]
    grads = Seq.of(route([SCALAR] * 4, [0, 1, 2, 3] * 3), Par.of(*parts))
    return BoxBackward((("in", 0), ("in", 1), ("in", 2)), grads)


BACKWARD.unsupported(ClampGradientOp, SECOND_ORDER)
SCALAR_DRAWING.rule(ClampGradientOp)(draw_meeting)
IMPORT.unsupported(ClampGradientOp, NOT_TRACED)
SCALAR_DRAWING.rule(ClampOp)(draw_meeting)
IMPORT.known(ClampOp, by="ncd.trace.boxes_indexing")


# -- import recognition: the recognisers of ncd.trace.boxes (ncd.ir.rules' import cell) ----------

IMPORT.known(ExtremumOp, aten=("aten.maximum", "aten.minimum"))
