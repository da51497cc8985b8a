"""Named functions of two tensors, entry by entry: ``atan2(a, b)``, ``hypot``, ``logaddexp``, ``fmod``, ``fmax``,
``xlogy``, ...

Like :func:`ncd.Divide`, ``BinaryFunction("atan2")`` has scalar domains ``1, 1 -> 1``: composed after two tensors it
is woven over their axes, and an axis only one of them carries is broadcast.  One row of :data:`BINARY` gives a
function to every interpreter — the PyTorch call it lowers to, the glyph drawn where the operands meet, the values
autograd keeps and each operand's gradient, written as autograd's own formula (``derivatives.yaml``), so the backward
diagram's ``∂a``/``∂b`` boxes compute what ``loss.backward()`` does.  A gradient box (:class:`BinaryGradientOp`) reads
``(a, b, g)`` (``y``, the output, where the formula needs it: it is recomputed from ``a`` and ``b``).

One module holds every rule of the family: declaration, lowering, costs, backward and drawing.

>>> import ncd, torch
>>> from ncd.prims.binary_functions import BinaryFunction
>>> d = ncd.Identity.of("b m, m") >> BinaryFunction("atan2")
>>> str(d.cod), BinaryFunction("logaddexp2").prim.label()
('b m', 'LSE₂')
>>> a, b = torch.randn(2, 3), torch.randn(3)
>>> torch.equal(d.to_torch(b=2, m=3)(a, b), torch.atan2(a, b))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir.axes import SCALAR, Type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SCALAR_DRAWING, SECOND_ORDER
from ncd.prims.binary import Entrywise, draw_meeting, output_like

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.ir.rules import BoxBackward
    from ncd.torch.rules import RuleContext

__all__ = ["Binary", "BINARY", "BinaryFunctionOp", "BinaryFunction", "BinaryGradientOp"]


@dataclass(frozen=True)
class Binary:
    """One row of the family: ``call`` (PyTorch source in ``{a}``, ``{b}``), ``glyph``, ``grads`` (each operand's
    gradient in ``{a}``, ``{b}``, ``{y}`` and the cotangent ``{g}``, autograd's formula) and
    ``saves``: the values autograd keeps when both operands, only ``a``, only ``b`` need a gradient (letters of
    ``"aby"``, as ``saved_tensors_hooks`` sees them)."""

    glyph: str
    call: str
    grads: tuple[str, str]
    saves: tuple[str, str, str]
    #: floating-point operations per entry: forward, and backward per operand needing a gradient
    flops: tuple[int, int] = (1, 3)

    def lowering(self, a: str, b: str) -> str:
        return self.call.format(a=a, b=b)

    def gradient(self, operand: int, a: str, b: str, g: str) -> str:
        return self.grads[operand].format(a=a, b=b, g=g, y=f"({self.lowering(a, b)})")

    def kept(self, ga: bool, gb: bool) -> str:
        return "" if not (ga or gb) else self.saves[0 if ga and gb else 1 if ga else 2]


#: 1 / (a² + b²), 0 where a² + b² is 0 (autograd's atan2_backward: 0 at a = b = 0, not 0 · ∞)
_ATAN2 = "torch.reciprocal({a} * {a} + {b} * {b}).masked_fill({a} * {a} + {b} * {b} == 0, 0)"
#: The family, one row per function (add a function here and every interpreter has it).
BINARY: dict[str, Binary] = {
    "atan2": Binary("atan2", "torch.atan2({a}, {b})", (f"{{g}} * {{b}} * {_ATAN2}", f"{{g}} * -{{a}} * {_ATAN2}"),
                    ("ab", "ab", "ab"), (1, 6)),
    "hypot": Binary("hypot", "torch.hypot({a}, {b})", ("{g} * {a} / {y}", "{g} * {b} / {y}"), ("aby", "ay", "by"),
                    (3, 2)),
    "logaddexp": Binary("LSE", "torch.logaddexp({a}, {b})",
                        ("{g} / (1 + torch.exp({b} - {a}))", "{g} / (1 + torch.exp({a} - {b}))"), ("ab", "ab", "ab"),
                        (4, 4)),
    "logaddexp2": Binary("LSE₂", "torch.logaddexp2({a}, {b})",
                         ("{g} / (1 + torch.pow(2, {b} - {a}))", "{g} / (1 + torch.pow(2, {a} - {b}))"),
                         ("ab", "ab", "ab"), (4, 4)),
    # fmod's gradient in b is −g · trunc(a / b); in a, g itself (autograd keeps nothing for it alone)
    "fmod": Binary("fmod", "torch.fmod({a}, {b})", ("{g}", "-{g} * torch.div({a}, {b}, rounding_mode='trunc')"),
                   ("ab", "", "ab"), (1, 2)),
    # copysign: g · (y / a), 0 where a = 0 (autograd's copysign_tensor_self_backward); zeros to b
    "copysign": Binary("±", "torch.copysign({a}, {b})",
                       ("{g} * ({y} / {a}).masked_fill({a} == 0, 0)", "torch.zeros_like({g})"),
                       ("ay", "ay", "y"), (1, 2)),
    # fmax/fmin ignore a NaN operand; the whole gradient of a tie goes to a (autograd's masks)
    "fmax": Binary("fmax", "torch.fmax({a}, {b})",
                   ("{g}.masked_fill(~(({a} >= {b}) | {b}.isnan()), 0)", "{g}.masked_fill(({a} >= {b}) | {b}.isnan(), 0)"),
                   ("ab", "ab", "ab"), (1, 3)),
    # xlogy: a · log b, 0 where a = 0 (b not NaN); autograd's gradients xlogy(g, b), 0 where a = 0 and b <= 0, and
    # g · a / b
    "xlogy": Binary("xlogy", "torch.xlogy({a}, {b})",
                    ("torch.xlogy({g}, {b}).masked_fill(({a} == 0) & ({b} <= 0), 0)", "{g} * {a} / {b}"),
                    ("ab", "ab", "ab"), (2, 3)),
    "fmin": Binary("fmin", "torch.fmin({a}, {b})",
                   ("{g}.masked_fill(~(({a} <= {b}) | {b}.isnan()), 0)", "{g}.masked_fill(({a} <= {b}) | {b}.isnan(), 0)"),
                   ("ab", "ab", "ab"), (1, 3)),
}


def _known(function: str) -> None:
    if function not in BINARY:
        raise ParseError(f"unknown function of two tensors {function!r}; known: {', '.join(sorted(BINARY))}")


@dataclass(frozen=True)
class BinaryFunctionOp(Entrywise):
    """The function ``function`` of two tensors (a row of :data:`BINARY`) entry by entry: ``1, 1 -> 1``."""

    function: str = "atan2"

    op: ClassVar[str] = "binary_function"
    family: ClassVar[str] = "elementwise"

    def __post_init__(self) -> None:
        _known(self.function)

    def label(self) -> str:
        return BINARY[self.function].glyph

    def hint(self) -> str:
        return self.function


def BinaryFunction(function: str) -> Box:
    """``function(a, b)`` of two tensors entry by entry (broadcast over the axes only one of them has)."""
    return Box.make(BinaryFunctionOp(function))


@dataclass(frozen=True)
class BinaryGradientOp(Entrywise):
    """The gradient of :class:`BinaryFunctionOp` ``function`` with respect to its operand ``operand`` (0: ``a``,
    1: ``b``): ``(a, b, g) -> ∂``, autograd's formula (a backward diagram's box)."""

    function: str = "atan2"
    operand: int = 0

    op: ClassVar[str] = "binary_gradient"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"
    operands: ClassVar[tuple[Any, ...]] = (SCALAR, SCALAR, SCALAR)

    def __post_init__(self) -> None:
        _known(self.function)
        if self.operand not in (0, 1) or isinstance(self.operand, bool):
            raise ParseError(f"the gradient of {self.function} is with respect to operand 0 or 1, not {self.operand!r}")

    def signature(self) -> tuple[Type, Type]:
        return Type(self.operands), Type((SCALAR,))

    def label(self) -> str:
        return f"∂{'ab'[self.operand]}"  # (the function is its hint: a wide label would cover the operands' wires)

    def hint(self) -> str:
        return f"d{'ab'[self.operand]}_{self.function}"


# -- lowering ----------------------------------------------------------------------------------------------------------
@LOWERING.rule(BinaryFunctionOp)
def lower_binary_function(prim: BinaryFunctionOp, ctx: RuleContext) -> list[str]:
    a, b = ctx.args
    return [BINARY[prim.function].lowering(a.var, b.var)]


@LOWERING.rule(BinaryGradientOp)
def lower_binary_gradient(prim: BinaryGradientOp, ctx: RuleContext) -> list[str]:
    a, b, g = ctx.args
    return [BINARY[prim.function].gradient(prim.operand, a.var, b.var, g.var)]


# -- costs: what autograd keeps ----------------------------------------------------------------------------------------
@COST.rule(BinaryFunctionOp)
def cost_binary_function(prim: BinaryFunctionOp, ctx: CostContext) -> list[Tensor]:
    """The row's operations per entry; autograd keeps the row's values (``saves``) for the operands needing a
    gradient."""
    a, b = ctx.inputs
    row = BINARY[prim.function]
    n = ctx.numel()
    out = output_like(ctx)
    kept = row.kept(a.grad, b.grad)
    ctx.save(*[{"a": a, "b": b, "y": out}[k] for k in kept])
    ctx.other(row.flops[0] * n, row.flops[1] * (int(a.grad) + int(b.grad)) * n)
    return [out]


@COST.rule(BinaryGradientOp)
def cost_binary_gradient(prim: BinaryGradientOp, ctx: CostContext) -> list[Tensor]:
    ctx.other(BINARY[prim.function].flops[1] * ctx.numel(), sympy.Integer(0))
    return [output_like(ctx)]


# -- backward ----------------------------------------------------------------------------------------------------------
@BACKWARD.rule(BinaryFunctionOp)
def backward_binary_function(prim: BinaryFunctionOp, box: Box, builder: object) -> BoxBackward:
    """``∂a``, ``∂b``: each a gradient box on ``(a, b, g)`` (autograd's formula)."""
    from ncd.analysis.backward import BoxBackward
    from ncd.ir.diagram import Par, Seq
    from ncd.prims.structure import route

    parts = [Box(BinaryGradientOp(prim.function, operand)) for operand in (0, 1)]
    grads = Seq.of(route([SCALAR] * 3, [0, 1, 2, 0, 1, 2]), Par.of(*parts))
    return BoxBackward((("in", 0), ("in", 1)), grads)


BACKWARD.unsupported(BinaryGradientOp, SECOND_ORDER)

# drawing: like the product ``⊙``, equal wires of both tensors meet at dots under the function's name
SCALAR_DRAWING.rule(BinaryFunctionOp)(draw_meeting)
SCALAR_DRAWING.rule(BinaryGradientOp)(draw_meeting)

# -- import recognition: ncd.trace.boxes_binary ------------------------------------------------------------------------
IMPORT.known(BinaryFunctionOp, by="ncd.trace.boxes_binary")
IMPORT.unsupported(BinaryGradientOp, NOT_TRACED)
