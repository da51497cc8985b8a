"""Lowering rule for fixed sinusoidal positions (a buffer computed once in ``__init__``)."""

from __future__ import annotations

import math

from ncd.ir.size import evaluate
from ncd.prims.constant import SinusoidalOp
from ncd.torch.rules import RuleContext, register


@register(SinusoidalOp)
def lower_sinusoidal(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, SinusoidalOp)
    t, m = (evaluate(a.size, what=f"axis {a.name}") for a in prim.segment)
    if m % 2:
        raise ctx.fail(f"the feature axis {prim.segment.axes[1].name} has odd size {m}; sinusoidal positions need an even size")
    scale = -math.log(prim.base) / m
    name = ctx.em.fresh("positions")
    ctx.em.init.extend([
        f"{name} = torch.zeros({t}, {m})",
        f"{name}_t = torch.arange({t}, dtype=torch.float32)[:, None]",
        f"{name}_f = torch.exp(torch.arange(0, {m}, 2, dtype=torch.float32) * {scale!r})",
        f"{name}[:, 0::2] = torch.sin({name}_t * {name}_f)",
        f"{name}[:, 1::2] = torch.cos({name}_t * {name}_f)",
        f"self.register_buffer({name!r}, {name}, persistent=False)",
    ])
    return [f"self.{name}"]
