"""Lowering rule for the rotary position embedding: HF LLaMA's arithmetic, tables computed from the positions."""

from __future__ import annotations

from ncd.prims.rotary import RotaryOp
from ncd.torch.rules import RuleContext, register


@register(RotaryOp)
def lower_rotary(ctx: RuleContext) -> list[str]:
    """``x * cos + cat(-x₂, x₁) * sin`` on ``(..., t, k)``; the positions are read from the tensor (any length).

    The transpose (``inverse``) rotates by minus the angles: ``x * cos - cat(-x₂, x₁) * sin``.
    """
    prim = ctx.prim
    assert isinstance(prim, RotaryOp)
    k = ctx.int(prim.axis.size, f"axis {prim.axis.name}")
    x = ctx.args[0].var
    axes = (prim.position, prim.axis)
    inv = f"1.0 / ({prim.base!r} ** (torch.arange(0, {k}, 2, dtype=torch.int64, device={x}.device).float() / {k}))"
    offset = ctx.int(prim.offset, f"the position offset of {prim.axis.name}")
    positions = f"torch.arange({x}.shape[-2], device={x}.device)" if not offset else \
        f"torch.arange({offset}, {offset} + {x}.shape[-2], device={x}.device)"
    freqs = ctx.em.assign("freqs", f"{positions}.float()[:, None] * ({inv})[None, :]", axes)
    angles = ctx.em.assign("angles", f"torch.cat(({freqs}, {freqs}), dim=-1)", axes)
    scale = "" if prim.scale == 1.0 else f" * {prim.scale!r}"
    cos = ctx.em.assign("cos", f"({angles}.cos(){scale}).to({x}.dtype)", axes)
    sin = ctx.em.assign("sin", f"({angles}.sin(){scale}).to({x}.dtype)", axes)
    half = k // 2
    sign = "-" if prim.inverse else "+"
    return [f"{x} * {cos} {sign} torch.cat((-{x}[..., {half}:], {x}[..., :{half}]), dim=-1) * {sin}"]
