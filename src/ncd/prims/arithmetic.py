"""Arithmetic between a scalar and a Python number of any type, on either side: ``1 - x``, ``ids * 3 + 1``, ``2 ** x``.

``Arithmetic("//", 2, "[9]", "[5]")`` is one binary operator with a number (``+ − × / // mod ^ min max``), the dtype of
its result as torch gives it (an integer tensor divided by a number is a float).  ``ncd.trace`` makes it of the calls
its other rules decline (:mod:`ncd.trace.scalars`); it lowers to the Python expression itself, so torch's type
promotion gives the lowered module the model's dtype.  Drawn as a labelled box (family ``opaque``, the importer's,
like the index computations of :mod:`ncd.prims.gather`).

>>> Arithmetic("-", 1, reflected=True).text()
'1 − ·'
>>> str(Arithmetic("//", 2, "[9]", "[5]").cod)
'[5]'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir.axes import SCALAR, SCALAR_TYPE, Segment, Type, TypeLike
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, BoxBackward
from ncd.prims.gather import CompareOp, _scalar, backward_index_computation, number_text
from ncd.prims.structure import DeleteOp, ZerosOp

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = ["ArithmeticOp", "Arithmetic", "OPERATORS", "BITWISE", "shown"]

#: binary operators between a scalar and a Python number, and how they are drawn
OPERATORS = {"+": "+", "-": "−", "*": "×", "/": "/", "//": "//", "%": "mod", "**": "^", "min": "min", "max": "max",
             "&": "&", "|": "|", "^": "xor", "<<": "<<", ">>": ">>"}
#: the bitwise operators: of integers (or flags) only
BITWISE = frozenset({"&", "|", "^", "<<", ">>"})


@dataclass(frozen=True)
class ArithmeticOp(Primitive):
    """``x ∘ value`` (or ``value ∘ x`` when ``reflected``) for a scalar segment and a Python number of any type.

    ``target`` is the result's dtype as torch gives it (an integer tensor divided by a number is a float).
    """

    operator: str
    value: float | int | bool
    source: Segment
    target: Segment
    reflected: bool = False

    op: ClassVar[str] = "arithmetic"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise ParseError(f"arithmetic: unknown operator {self.operator!r}; known: {' '.join(OPERATORS)}")
        if not isinstance(self.value, (bool, int, float)):
            raise ParseError(f"arithmetic {self.operator}: {self.value!r} is not a Python number")
        if self.operator in BITWISE and (isinstance(self.value, float) or self.source.dtype == "float"
                                         or self.target.dtype == "float"):
            raise ParseError(f"arithmetic {self.operator}: a bitwise operator of integers, not '{self.source}' and"
                             f" {self.value!r}")
        if self.source.axes or self.target.axes:
            raise ParseError(f"arithmetic takes scalar segments, not '{self.source}' -> '{self.target}'")
        if self.reflected and self.operator in ("min", "max"):
            raise ParseError(f"arithmetic {self.operator} is symmetric: it is never reflected")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.target,))

    def label(self) -> str:
        value = shown(self.value)
        if self.operator in ("min", "max"):
            return f"{self.operator}(·, {value})"
        return f"{value} {OPERATORS[self.operator]} ·" if self.reflected else f"{OPERATORS[self.operator]} {value}"


def shown(value: float | int | bool) -> str:
    """A number as a box draws it: as written when six significant digits or fewer say it (``0.125``, ``0.044715``,
    ``1e-05``), else to four (``√24`` in float32, ``4.898979663848877``, is ``4.899``; the lowered module keeps it whole).

    >>> shown(0.044715), shown(4.898979663848877), shown(3), shown(True), shown(1e30), shown(float("inf"))
    ('0.044715', '4.899', '3', 'True', '1e+30', 'inf')
    """
    if isinstance(value, float) and math.isfinite(value) and float(f"{value:.6g}") != value:
        return f"{value:.4g}"
    return repr(value)


def Arithmetic(operator: str, value: float | int | bool, source: TypeLike = "", target: TypeLike | None = None,
               reflected: bool = False) -> Box:
    """``x ∘ value`` for a scalar ``source`` (``""``: a float, ``"[v]"``: an index); ``reflected``: ``value ∘ x``.
    ``target`` (default: the source's dtype) is the result's dtype, as torch gives it."""
    src = _scalar(source, "arithmetic")
    return Box.make(ArithmeticOp(operator, value, src, src if target is None else _scalar(target, "arithmetic"), reflected))


IMPORT.known(ArithmeticOp, by="ncd.trace.scalars")

# -- lowering ----------------------------------------------------------------------------------
@LOWERING.rule(ArithmeticOp)
def lower_arithmetic(prim: ArithmeticOp, ctx: RuleContext) -> list[str]:
    """The Python expression itself (``x + 1``, ``1 - x``, ``x // 2``): torch's type promotion gives the result's dtype."""
    x, value = ctx.args[0].var, number_text(prim.value)
    if prim.operator in ("min", "max"):
        return [f"torch.clamp_{'min' if prim.operator == 'max' else 'max'}({x}, {value})"]  # max(x, c) is x clamped below
    if prim.operator == "//" and not prim.reflected and prim.source.dtype == "float":  # (floor_divide has no
        return [f"torch.div({x}, {value}, rounding_mode='floor')"]  # derivative in torch; div's floor: 0, the same values)
    a, b = (value, x) if prim.reflected else (x, value)
    return [f"({a} {prim.operator} {b})"]


# -- costs and backward ------------------------------------------------------------------------
def _differentiable(prim: ArithmeticOp) -> bool:
    return prim.source.dtype == "float" and prim.target.dtype == "float" and prim.operator != "//"


@COST.rule(ArithmeticOp)
def cost_arithmetic(prim: ArithmeticOp, ctx: CostContext) -> list[Tensor]:
    """What autograd keeps: ``x ** c`` and ``min``/``max`` their input, ``c ** x`` its input and output, ``c / x`` (a reciprocal,
    then a product) the reciprocal; sums, differences and products with a number nothing."""
    x = ctx.inputs[0]
    grad = x.grad and _differentiable(prim)
    y = ctx.like(0, x) if prim.target.dtype == prim.source.dtype else ctx.new(ctx.out_axes[0], grad=grad, dtype=prim.target.dtype)
    n = ctx.numel()
    if grad:
        if prim.operator == "**" and not prim.reflected or prim.operator in ("min", "max"):
            ctx.save(x)
        elif prim.operator == "**":
            ctx.save(x, y)
        elif prim.operator == "/" and prim.reflected:
            ctx.save(ctx.like(0, x))
    ctx.other(n, n if grad else sympy.Integer(0))
    return [y]


@BACKWARD.rule(ArithmeticOp)
def backward_arithmetic(prim: ArithmeticOp, box: Box, builder: Builder) -> BoxBackward:
    """Sums and differences pass the cotangent (negated for ``c − x``), products and quotients by ``c`` scale it; the
    others multiply it by their derivative, itself arithmetic on the stored input or output:
    ``(x^c)′ = c·x^(c−1)``, ``(c/x)′ = −c·x^−2``, ``(c^x)′ = ln c·c^x``.  ``max(x, c)`` (``clamp_min``) passes the
    cotangent where ``x ≥ c`` and gives 0 elsewhere, ``min(x, c)`` where ``x ≤ c``, as torch's ``clamp_min`` and
    ``clamp_max`` do: at the bound itself too, and selected rather than multiplied by a mask, so an infinite cotangent
    where the bound is taken (``sqrt`` of ``x.clamp(min=0)`` at ``x < 0``) gives 0 there, not NaN."""

    from ncd.prims.elementwise import MultiplyOp, ScaleOp
    if not _differentiable(prim):
        return backward_index_computation(prim, box, builder)
    op, c = prim.operator, prim.value
    if op in ("+", "%") or op == "-" and not prim.reflected:
        return BoxBackward((), Identity(SCALAR_TYPE))
    if op in ("-", "*", "/") and (op != "/" or not prim.reflected):
        if op == "/" and (c == 0 or not math.isfinite(1 / c)) or op == "*" and not math.isfinite(c):
            # ``x / 0.0``, ``x * inf``, ``x / nan``: a factor no Scale box holds; the cotangent is divided (multiplied)
            # by ``c`` itself, as autograd does (``inf`` or ``nan`` times it)
            return BoxBackward((), Box(ArithmeticOp(op, c, SCALAR, SCALAR)))
        factor = -1 if op == "-" else c if op == "*" else 1 / c
        return BoxBackward((), Box(ScaleOp(sympy.sympify(float(factor) if isinstance(factor, bool) else factor))))
    derivative: Diagram
    if op == "**" and not prim.reflected and c == 0:  # x ** 0 is 1: a zero gradient, as torch's (0 · x⁻¹ is NaN at 0)
        return BoxBackward((), Seq.of(Box(DeleteOp(SCALAR_TYPE)), Box(ZerosOp(SCALAR_TYPE))))
    if op == "**" and prim.reflected:
        port, derivative = ("out", 0), Box(ScaleOp(sympy.Float(math.log(c))))
    elif op == "**":
        port, derivative = ("in", 0), Seq.of(Box(ArithmeticOp("**", c - 1, SCALAR, SCALAR)), Box(ScaleOp(sympy.sympify(c))))
    elif op == "/":
        port, derivative = ("in", 0), Seq.of(Box(ArithmeticOp("**", -2, SCALAR, SCALAR)), Box(ScaleOp(sympy.sympify(-c))))
    else:
        from ncd.prims.selection import WhereOp

        passes = Box(CompareOp(">=" if op == "max" else "<=", float(c), SCALAR))  # (x, g) -> where(x ≷= c, g, 0)
        return BoxBackward((("in", 0),), Seq.of(Par.of(passes, Identity(SCALAR_TYPE), Box(ZerosOp(SCALAR_TYPE))),
                                                Box(WhereOp())))
    return BoxBackward((port,), Seq.of(Par.of(derivative, Identity(SCALAR_TYPE)), Box(MultiplyOp(2))))
