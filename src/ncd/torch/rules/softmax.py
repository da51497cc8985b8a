"""Lowering rule for softmax over a named axis."""

from __future__ import annotations

from ncd.prims.softmax import SoftmaxOp
from ncd.torch.rules import RuleContext, register


@register(SoftmaxOp, weave_aware=True)
def lower_softmax(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, SoftmaxOp)
    (dim,) = ctx.own_dims("dom", 0)
    fn = "torch.log_softmax" if prim.log else "torch.softmax"
    return [f"{fn}({ctx.args[0].var}, dim={dim})"]
