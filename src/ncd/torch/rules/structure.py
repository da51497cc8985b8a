"""Lowering rules for copy, delete, add, crossings and save/load."""

from __future__ import annotations

from ncd.ir.size import evaluate
from ncd.prims.structure import AddOp, CopyOp, DeleteOp, LoadOp, RenameOp, SaveOp, SwapOp, TransposeOp
from ncd.torch.rules import RuleContext, register


@register(CopyOp, weave_aware=True)
def lower_copy(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, CopyOp)
    return [v.var for v in ctx.args] * prim.n


@register(DeleteOp, weave_aware=True)
def lower_delete(ctx: RuleContext) -> list[str]:
    return []


@register(AddOp, weave_aware=True)
def lower_add(ctx: RuleContext) -> list[str]:
    return [" + ".join(v.var for v in ctx.args)]


@register(RenameOp, weave_aware=True)
def lower_rename(ctx: RuleContext) -> list[str]:
    return [ctx.args[0].var]


@register(SwapOp, weave_aware=True)
def lower_swap(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, SwapOp)
    return [ctx.args[k].var for k in prim.perm]


@register(TransposeOp, weave_aware=True)
def lower_transpose(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, TransposeOp)
    src = ctx.own_dims("dom", 0)
    dst = ctx.own_dims("cod", 0)
    # output own axis k is input own axis perm[k]; woven axes stay where they are
    if all(src[p] == dst[k] for k, p in enumerate(prim.perm)):
        return [ctx.args[0].var]
    sources = tuple(src[p] for p in prim.perm)
    return [f"torch.movedim({ctx.args[0].var}, {sources}, {tuple(dst)})"]


def _slot(ctx: RuleContext, key: str, index: object) -> str:
    if index is None:
        return repr(key)
    return repr(f"{key}_{evaluate(index, what='save/load index')}")  # type: ignore[arg-type]


@register(SaveOp)
def lower_save(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, SaveOp)
    if len(ctx.args) != 1:
        ctx.em.line(f"store[{_slot(ctx, prim.key, prim.index)}] = ({', '.join(v.var for v in ctx.args)})")
    else:
        ctx.em.line(f"store[{_slot(ctx, prim.key, prim.index)}] = {ctx.args[0].var}")
    return [v.var for v in ctx.args]


@register(LoadOp)
def lower_load(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, LoadOp)
    slot = _slot(ctx, prim.key, prim.index)
    if len(prim.type) == 1:
        return [f"store[{slot}]"]
    return [f"store[{slot}][{k}]" for k in range(len(prim.type))]

