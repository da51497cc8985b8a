"""Lowering rules for bind/unbind, concatenation, indexing, slicing and size-1 axes.

Each rule works in place on woven layouts when the moved axes sit together (the usual
case: woven axes before and after them; the primitives' ``weave_policy`` is
``ncd.ir.weaving.same_weave``); otherwise the code generator moves the woven axes to the front first.
"""

from __future__ import annotations

from ncd.prims.movement import BindOp, ConcatOp, IndexOp, SliceOp, SqueezeOp, UnbindOp, UnsqueezeOp
from ncd.torch.rules import RuleContext, register


@register(BindOp, weave_aware=True)
def lower_bind(ctx: RuleContext) -> list[str]:
    dims = ctx.own_dims("dom", 0)
    x = ctx.args[0].var
    if len(dims) == 1:
        return [x]
    if dims[-1] == -1:
        return [f"{x}.flatten({dims[0]})"]
    return [f"{x}.flatten({dims[0]}, {dims[-1]})"]


@register(UnbindOp, weave_aware=True)
def lower_unbind(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, UnbindOp)
    (dim,) = ctx.own_dims("dom", 0)
    sizes = tuple(ctx.int(a.size, f"axis {a.name}") for a in prim.outputs)
    x = ctx.args[0].var
    return [x if len(sizes) == 1 else f"{x}.unflatten({dim}, {sizes})"]


@register(ConcatOp, weave_aware=True)
def lower_concat(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ConcatOp)
    dim = ctx.own_dims("cod", 0)[prim.position]
    names = [v.var for v in ctx.args]
    # A learned tensor (a class token) has no batch dimensions while the stream has some:
    # broadcast the leading dimensions first (a no-op view when they already agree).
    n = len(ctx.markers("cod", 0))
    batch = ctx.em.fresh("batch")
    ctx.em.line(f"{batch} = torch.broadcast_shapes({', '.join(f'{v}.shape[:-{n}]' for v in names)})")
    keep = ", ".join(["-1"] * n)
    return [f"torch.cat([{', '.join(f'{v}.expand(*{batch}, {keep})' for v in names)}], dim={dim})"]


@register(IndexOp, weave_aware=True)
def lower_index(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, IndexOp)
    (dim,) = ctx.own_dims("dom", 0)
    return [f"{ctx.args[0].var}.select({dim}, {ctx.int(prim.index, 'index')})"]


@register(SliceOp, weave_aware=True)
def lower_slice(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, SliceOp)
    (dim,) = ctx.own_dims("dom", 0)
    start, stop, step = (ctx.int(v, "slice bound") for v in (prim.start, prim.stop, prim.step))
    text = f"{start}:{stop}" + (f":{step}" if step != 1 else "")
    rest = ", :" * (-dim - 1)
    return [f"{ctx.args[0].var}[..., {text}{rest}]"]


@register(SqueezeOp, weave_aware=True)
def lower_squeeze(ctx: RuleContext) -> list[str]:
    (dim,) = ctx.own_dims("dom", 0)
    return [f"{ctx.args[0].var}.squeeze({dim})"]


@register(UnsqueezeOp, weave_aware=True)
def lower_unsqueeze(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, UnsqueezeOp)
    dim = ctx.own_dims("cod", 0)[prim.position]
    return [f"{ctx.args[0].var}.unsqueeze({dim})"]
