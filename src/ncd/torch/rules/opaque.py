"""Lowering rules for the importer's primitives: opaque ATen calls, parameters, constants, views.

An opaque box calls the very ATen overload the model called (``torch.ops.aten.cumsum.default``)
with the captured constant arguments, so it reproduces the operation exactly.  It works on
the shapes it was traced with: extra leading batch dimensions are not supported.
"""

from __future__ import annotations

import math
from typing import Any

from ncd.errors import LoweringError
from ncd.ir.size import evaluate
from ncd.prims.opaque import DTYPES, ConstantOp, OpaqueOp, ParameterOp, ViewOp, call_text, check_shapes
from ncd.torch.rules import RuleContext, register


@register(OpaqueOp)
def lower_opaque(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, OpaqueOp)
    check_shapes(prim)
    call = call_text(prim, [v.var for v in ctx.args])
    if not prim.picks:
        return [call]
    result = ctx.em.fresh(prim.hint() + "_out")
    ctx.em.line(f"{result} = {call}")
    return [f"{result}[{k}]" for k in prim.picks]


def _shape(ctx: RuleContext, seg: Any) -> str:
    sizes = [str(evaluate(a.size, what=f"axis {a.name}")) for a in seg.axes]
    return "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"


def _attr_hint(hint: str) -> str:
    import torch.nn

    return hint + "_" if hasattr(torch.nn.Module, hint) else hint


@register(ParameterOp)
def lower_parameter(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ParameterOp)
    return [ctx.em.attr(_attr_hint(prim.hint()), f"nn.Parameter(torch.zeros({_shape(ctx, prim.segment)}))")]


@register(ConstantOp)
def lower_constant(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ConstantOp)
    shape = _shape(ctx, prim.segment)
    if prim.dtype not in DTYPES:
        raise LoweringError(f"constant {prim.name}: unknown dtype {prim.dtype!r}; known: {', '.join(DTYPES)}")
    if prim.value is not None:
        if isinstance(prim.value, bool) or not isinstance(prim.value, (int, float)):
            raise LoweringError(f"constant {prim.name}: value {prim.value!r} is not a number")
        value = float(prim.value)
        text = ("float('-inf')" if value < 0 else "float('inf')") if math.isinf(value) else \
            "float('nan')" if math.isnan(value) else repr(value)
        if prim.dtype == "bool":
            text = repr(bool(value))
        elif prim.dtype.startswith(("int", "uint")):
            text = repr(int(value))
        return [f"torch.full({shape}, {text}, dtype=torch.{prim.dtype})"]
    return [ctx.em.attr(_attr_hint(prim.hint()), f"nn.Buffer(torch.zeros({shape}, dtype=torch.{prim.dtype}))")]


@register(ViewOp)
def lower_view(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ViewOp)
    x = ctx.args[0].var
    n = len(prim.source)
    sizes = [str(evaluate(a.size, what=f"axis {a.name}")) for a in prim.target.axes]
    if [a.size for a in prim.source.axes] == [a.size for a in prim.target.axes]:
        return [x]  # same sizes: only the names change
    lead = f"*{x}.shape[:{x}.dim() - {n}]" if n else f"*{x}.shape"
    return [f"{x}.reshape({', '.join([lead] + sizes)})"]
