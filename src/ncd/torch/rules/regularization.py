"""Lowering rule for dropout (``nn.Dropout``: the identity in eval mode)."""

from __future__ import annotations

from ncd.prims.regularization import DropoutOp
from ncd.torch.rules import RuleContext, register


@register(DropoutOp, weave_aware=True)
def lower_dropout(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, DropoutOp)
    module = ctx.em.attr("dropout" + (f"_{ctx.box.label}" if ctx.box.label else ""), f"nn.Dropout({prim.p!r})")
    return [f"{module}({ctx.args[0].var})"]
