"""Lowering rules for elementwise functions, scale and the Hadamard product."""

from __future__ import annotations

from ncd.ir.size import size_text
from ncd.prims.elementwise import ROWS, ElementwiseOp, MultiplyOp, ScaleOp
from ncd.torch.rules import RuleContext, register

#: the lowering column of the elementwise family table (``ncd.prims.elementwise.ROWS``)
CALLS = {name: row.call for name, row in ROWS.items()}


@register(ElementwiseOp, weave_aware=True)
def lower_elementwise(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ElementwiseOp)
    return [CALLS[prim.function].format(ctx.args[0].var)]


def factor_text(ctx: RuleContext) -> str:
    prim = ctx.prim
    assert isinstance(prim, ScaleOp)
    value = prim.factor
    if value.free_symbols:
        raise ctx.fail(f"factor {size_text(value)} is not bound")
    number = float(value)
    return repr(int(number)) if number.is_integer() else repr(number)


@register(ScaleOp, weave_aware=True)
def lower_scale(ctx: RuleContext) -> list[str]:
    return [f"{ctx.args[0].var} * {factor_text(ctx)}"]


@register(MultiplyOp, weave_aware=True)
def lower_multiply(ctx: RuleContext) -> list[str]:
    return [" * ".join(v.var for v in ctx.args)]
