"""Lowering rules for the causal and padding masks (``masked_fill`` with ``-inf``)."""

from __future__ import annotations

from ncd.prims.attention import CausalMaskOp, PaddingMaskOp
from ncd.torch.rules import RuleContext, register


@register(CausalMaskOp, weave_aware=True)
def lower_causal_mask(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, CausalMaskOp)
    rows = ctx.int(prim.query.size, f"axis {prim.query.name}")
    cols = ctx.int(prim.key.size, f"axis {prim.key.name}")
    layout = ctx.markers("dom", 0)
    first = layout.index(("own", 0))
    shape = [rows if m == ("own", 0) else cols if m == ("own", 1) else 1 for m in layout[first:]]
    x = ctx.args[0].var
    ones = f"torch.ones({rows}, {cols}, dtype=torch.bool, device={x}.device)"
    blocked = f"{ones}.triu(1)"
    if prim.window is not None:  # and keys `window` or more positions back: the band below
        window = ctx.int(prim.window, f"the window of the causal mask on {prim.query.name}, {prim.key.name}")
        blocked = f"({blocked} | {ones}.tril(-{window}))"
    mask = ctx.em.assign("causal", blocked, (prim.query, prim.key))
    view = "" if len(shape) == 2 else f".view({', '.join(map(str, shape))})"
    return [f"{x}.masked_fill({mask}{view}, float('-inf'))"]


def align(ctx: RuleContext, target: int, source: int, var: str) -> str:
    """``var`` (input ``source``) indexed with ``None`` so it broadcasts against input ``target`` by axis."""
    want = ctx.markers("dom", target)
    have = ctx.markers("dom", source)
    index = [":" if m in have else "None" for m in want]  # leading batch dimensions line up in front
    if all(i == ":" for i in index):
        return var
    return f"{var}[..., {', '.join(index)}]"


@register(PaddingMaskOp, weave_aware=True)
def lower_padding_mask(ctx: RuleContext) -> list[str]:
    scores, mask = ctx.args
    return [f"{scores.var}.masked_fill(~{align(ctx, 0, 1, mask.var)}, float('-inf'))"]
