"""Lowering rules for index computations: gather along an axis, argmax, comparisons, casts.

None is weave-aware: the code generator moves woven axes to the front (shared inputs get
size-1 dimensions there), so each rule sees its own axes last and broadcasts the rest.
"""

from __future__ import annotations

from ncd.prims.gather import RELATIONS, ArgMaxOp, ArithmeticOp, CastOp, CompareOp, GatherOp
from ncd.torch.rules import RuleContext, register

_TORCH_DTYPE = {"index": "torch.long", "bool": "torch.bool"}


@register(GatherOp)
def lower_gather(ctx: RuleContext) -> list[str]:
    """``x[..., t]`` at positions ``i[..., J]``: ``take_along_dim`` broadcasts the leading (woven) dimensions."""
    prim = ctx.prim
    assert isinstance(prim, GatherOp)
    x, positions = ctx.args[0].var, ctx.args[1].var
    n = len(prim.positions.axes)
    spread = f"{x}[(..., {'None, ' * n}slice(None))]" if n else x
    return [f"torch.take_along_dim({spread}, {positions}.unsqueeze(-1), dim=-1).squeeze(-1)"]


@register(ArgMaxOp)
def lower_argmax(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ArgMaxOp)
    x = ctx.args[0].var
    if prim.source.dtype == "bool":  # torch's argmax takes no bools
        x = f"{x}.to(torch.uint8)"
    return [f"torch.argmax({x}, dim=-1)"]


@register(CompareOp)
def lower_compare(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, CompareOp)
    value = float(prim.value)
    text = repr(int(value)) if value.is_integer() and prim.source.dtype == "index" else repr(value)
    return [f"torch.{RELATIONS[prim.relation]}({ctx.args[0].var}, {text})"]


@register(CastOp)
def lower_cast(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, CastOp)
    x = ctx.args[0].var
    dtype = _TORCH_DTYPE.get(prim.target.dtype)
    return [f"{x}.to({dtype})" if dtype else f"{x}.to(torch.get_default_dtype())"]


@register(ArithmeticOp, weave_aware=True)
def lower_arithmetic(ctx: RuleContext) -> list[str]:
    """The Python expression itself (``x + 1``, ``1 - x``, ``x // 2``): torch's type promotion gives the result's dtype."""
    prim = ctx.prim
    assert isinstance(prim, ArithmeticOp)
    x, value = ctx.args[0].var, number_text(prim.value)
    if prim.operator in ("min", "max"):
        return [f"torch.clamp_{'min' if prim.operator == 'max' else 'max'}({x}, {value})"]  # max(x, c) is x clamped below
    a, b = (value, x) if prim.reflected else (x, value)
    return [f"({a} {prim.operator} {b})"]


def number_text(value: float | int | bool) -> str:
    """A Python number as source (``float('inf')``, ``(-2)``)."""
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return f"float('{value}')"
    text = repr(value)
    return f"({text})" if text.startswith("-") else text
