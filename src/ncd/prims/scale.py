"""Scaling: multiplication by a constant or symbolic factor (``*1/√(k)``), a scalar map of the elementwise family,
with its rules (lowered as the model's multiplication or division, or as a closed mean; costed; self-transposed).
``ncd.prims.elementwise`` still answers its names.

>>> import ncd
>>> str(ncd.Scale("k**-0.5").prim.label())
'*1/√(k)'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import SCALAR_TYPE, Type
from ncd.ir.diagram import Box, Diagram
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.program import size_code
from ncd.ir.rules import COST, IMPORT, LOWERING
from ncd.ir.size import Size, SizeLike, size, size_text, symbolic_lowering, symbolic_text
from ncd.prims.kinds import transpose

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = ["ScaleOp", "Scale", "factor_text", "finite"]


@dataclass(frozen=True)
class ScaleOp(Primitive):
    """Multiplication by a constant or symbolic factor (drawn as an arrow labelled ``*factor``).

    ``divisor``: the model divided by it (``x / 3``, ``scores / math.sqrt(k)``, a mean's ``sum / n``), ``factor`` being
    its reciprocal: lowered as that division, which a multiplication by the rounded reciprocal is not, bit for bit
    (``x * 0.3333333333333333`` is one rounding off ``x / 3``); drawn as the factor.

    ``mean``: the scale closes a mean, the sum over some wires that the einsum just before it computes (a traced
    ``x.mean(d)`` in float16/bfloat16): lowered as ``torch.mean`` of that einsum's operand, which sums in float32 and
    divides before rounding to the input's type (a half sum then divided rounds twice, or overflows to inf where the
    mean does not); drawn, costed and differentiated as the scale.  Where the value it reads is not such a sum it is
    lowered as the scale.

    >>> ScaleOp(sympy.Rational(1, 3), sympy.Integer(3)).label()
    '*1/3'
    """

    factor: Size
    divisor: Size | None = None
    mean: bool = False

    op: ClassVar[str] = "scale"
    weave_policy = weaving.always
    family: ClassVar[str] = "elementwise"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        # (a Rational or a Float is finite: sympy makes inf and nan instances of their own classes; zoo, a size divided
        # by zero, is refused when lowered)
        if not (self.factor.is_Rational or self.factor.is_Float) and self.factor.has(sympy.oo, -sympy.oo, sympy.nan):
            raise ParseError(f"Scale takes a finite factor (a number or a size expression), not {self.factor}: a"
                             " multiplication by inf or nan has no label, source or JSON of its own (a traced one is an"
                             " opaque box)")

        if self.divisor is not None and not (self.divisor.is_Rational or self.divisor.is_Float) \
                and self.divisor.has(sympy.oo, -sympy.oo, sympy.nan):
            raise ParseError(f"Scale takes a finite divisor, not {self.divisor}")
        if not isinstance(self.mean, bool):
            raise ParseError(f"Scale's mean is True or False, not {self.mean!r}")

    def signature(self) -> tuple[Type, Type]:
        return SCALAR_TYPE, SCALAR_TYPE

    def fields(self) -> dict[str, Any]:
        """The fields, without a divisor that is none nor a mean that is false (a multiplication's JSON is as before
        there were any)."""
        out: dict[str, Any] = {"factor": self.factor}
        if self.divisor is not None:
            out["divisor"] = self.divisor
        if self.mean:
            out["mean"] = True
        return out

    def label(self) -> str:
        if not finite(self.factor):
            return "*∞"  # a size divided by zero (refused when lowered)
        return "*" + size_text(self.factor).replace("**", "^").replace("sqrt(", "√(")


def Scale(factor: SizeLike) -> Box:
    """Multiply by ``factor`` (a number or a size expression such as ``"k**-0.5"``)."""
    return Box.make(ScaleOp(size(factor)))


# -- lowering --------------------------------------------------------------------------------
def finite(factor: sympy.Expr) -> bool:
    """Whether a factor is no infinity or nan (``1/(b - 1)`` at ``b = 1`` is sympy's unsigned infinity ``zoo``)."""
    return not factor.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan)


def factor_text(ctx: RuleContext, divisor: bool = False) -> str:
    """The factor (``divisor``: the divisor) as the lowered module's Python: by its sizes' names where it has some."""
    prim = ctx.prim
    assert isinstance(prim, ScaleOp)
    value = prim.divisor if divisor and prim.divisor is not None else prim.factor
    if value.free_symbols and symbolic_lowering():  # a program on symbolic sizes prints the factor by name
        return size_code(value) or f"({symbolic_text(value)})"
    if value.free_symbols:
        raise ctx.fail(f"factor {size_text(value)} is not bound")
    written = ctx.em.written(value)
    if not finite(value):  # its sign is lost (zoo): refused, not run as inf where torch may give -inf or nan
        bound = ctx.em.named.sizes if ctx.em.named is not None else {}
        at = ", ".join(f"{s}={bound.get(str(s), '?')}" for s in sorted(written.free_symbols, key=str))
        raise ctx.fail(f"its factor {size_text(written)} is not finite at {at or 'these sizes'} (a division by zero:"
                       " torch's variance over one item is nan)")
    named = ctx.em.size_code(written)  # written as a size expression: printed by name
    if named is not None:
        return named
    if value.is_Integer and abs(int(value)) < 2**63:  # torch multiplies by a Python int that fits in int64
        return repr(int(value))
    number = float(value)
    if not math.isfinite(number):
        raise ctx.fail(f"its factor {size_text(written):.60} is past the largest float")
    return repr(int(number)) if number.is_integer() and abs(number) < 2**63 else repr(number)


def _grouped(text: str) -> bool:
    """Whether ``text`` is one parenthesised group (``(sizes.t + 1)``, not ``(a + 1) * (b + 1)``).

    >>> _grouped("(sizes.t + 1)"), _grouped("(a + 1) * (b + 1)"), _grouped("sizes.k ** 0.5")
    (True, False, False)
    """
    depth = 0
    for k, c in enumerate(text):
        depth += (c == "(") - (c == ")")
        if depth == 0 and k < len(text) - 1:
            return False
    return text.startswith("(")


@LOWERING.rule(ScaleOp)
def lower_scale(prim: ScaleOp, ctx: RuleContext) -> list[str]:
    if prim.mean:
        from ncd.torch.means import lower_mean

        closed = lower_mean(ctx)
        if closed is not None:
            return [closed]
    if prim.divisor is not None:  # the model's division (its rounding, not its reciprocal's)
        text = factor_text(ctx, divisor=True)
        return [f"{ctx.args[0].var} / {text if ' ' not in text or _grouped(text) else '(' + text + ')'}"]
    return [f"{ctx.args[0].var} * {factor_text(ctx)}"]


# -- cost and backward ----------------------------------------------------------------------
@COST.rule(ScaleOp)
def cost_scale(prim: ScaleOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    n = ctx.numel()
    ctx.other(n, n if x.grad else sympy.Integer(0))
    return [ctx.like(0, x)]


@transpose(ScaleOp)
def transpose_scale(prim: ScaleOp, box: Box) -> Diagram:
    """Scaling is linear and self-transposed: ``∂x = factor · g`` (a mean's scale, no mean: ``g`` is no sum)."""
    return Box(replace(prim, mean=False) if prim.mean else prim)


IMPORT.known(ScaleOp, aten=("aten.mul", "aten.div"))
