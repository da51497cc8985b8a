"""Cost and backward rules for copy, delete, addition, crossings and save/load (no arithmetic but ``+``)."""

from __future__ import annotations

import sympy

from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor
from ncd.analysis.tables import cost_rule
from ncd.ir.size import size_text
from ncd.prims.structure import AddOp, CopyOp, DeleteOp, LoadOp, RenameOp, SaveOp, SwapOp, TransposeOp


@cost_rule(CopyOp)
def cost_copy(ctx: CostContext) -> list[Tensor]:
    return [t.relabel(axes) for t, axes in zip(ctx.inputs * ctx.prim.n, ctx.out_axes)]


@cost_rule(DeleteOp)
def cost_delete(ctx: CostContext) -> list[Tensor]:
    return []


@cost_rule(AddOp)
def cost_add(ctx: CostContext) -> list[Tensor]:
    first = ctx.inputs[0]
    full = all(a.name in first.names for a in ctx.out_axes[0])
    ctx.other((len(ctx.inputs) - 1) * ctx.numel(), sympy.Integer(0))
    return [ctx.like(0, first) if full else ctx.output(0)]


@cost_rule(SwapOp)
def cost_swap(ctx: CostContext) -> list[Tensor]:
    return [ctx.inputs[k].relabel(axes) for k, axes in zip(ctx.prim.perm, ctx.out_axes)]


@cost_rule(TransposeOp)
def cost_transpose(ctx: CostContext) -> list[Tensor]:
    return [ctx.inputs[0].relabel(ctx.out_axes[0])]


def _slot(prim: object) -> str:
    index = prim.index  # type: ignore[attr-defined]
    return prim.key if index is None else f"{prim.key}_{size_text(index)}"  # type: ignore[attr-defined]


@cost_rule(SaveOp)
def cost_save(ctx: CostContext) -> list[Tensor]:
    ctx.walker.store[_slot(ctx.prim)] = list(ctx.inputs)
    return list(ctx.inputs)


@cost_rule(LoadOp)
def cost_load(ctx: CostContext) -> list[Tensor]:
    slot = _slot(ctx.prim)
    stored = ctx.walker.store.get(slot)
    if stored is None:
        return [ctx.new(axes, grad=False) for axes in ctx.out_axes]
    return [t.relabel(axes) for t, axes in zip(stored, ctx.out_axes)]


# -- backward ------------------------------------------------------------------------------
from ncd.analysis.backward import BoxBackward, cot, route, woven_scalar  # noqa: E402
from ncd.analysis.tables import backward_rule  # noqa: E402
from ncd.ir.axes import Segment, Type  # noqa: E402
from ncd.ir.diagram import Box, Identity, Par, Seq  # noqa: E402
from ncd.prims.derivative import ZerosOp  # noqa: E402

_SCALAR = Type((Segment(()),))


@backward_rule(CopyOp)
def backward_copy(box: Box, builder: object) -> BoxBackward:
    """The transpose of a copy is a sum: each segment's cotangents from every copy are added."""
    segs = list(cot(box.prim.type))
    k, n = len(segs), box.prim.n
    if n == 1 or not segs:
        return BoxBackward((), Identity(cot(box.cod)))
    picks = [c * k + s for s in range(k) for c in range(n)]
    adds = [woven_scalar(Box(AddOp(n)), seg) for seg in segs]
    return BoxBackward((), Seq.of(route(segs * n, picks), Par.of(*adds)))


@backward_rule(DeleteOp)
def backward_delete(box: Box, builder: object) -> BoxBackward:
    """A deleted wire gets a zero cotangent."""
    t = cot(box.prim.type)
    return BoxBackward((), Box(ZerosOp(t)) if len(t) else Identity(Type(())))


@backward_rule(AddOp)
def backward_add(box: Box, builder: object) -> BoxBackward:
    """The transpose of a sum is a copy."""
    return BoxBackward((), Box(CopyOp(_SCALAR, box.prim.n)))


@backward_rule(SwapOp)
def backward_swap(box: Box, builder: object) -> BoxBackward:
    floats = [j for j, seg in enumerate(box.prim.type) if seg.dtype == "float"]
    out_floats = [k for k in box.prim.perm if box.prim.type[k].dtype == "float"]  # input index of each float output
    perm = tuple(out_floats.index(j) for j in floats)
    cods = cot(box.cod)
    return BoxBackward((), Box(SwapOp(cods, perm)) if perm != tuple(range(len(perm))) else Identity(cods))


@backward_rule(TransposeOp)
def backward_transpose(box: Box, builder: object) -> BoxBackward:
    perm = box.prim.perm
    inverse = tuple(perm.index(k) for k in range(len(perm)))
    return BoxBackward((), Box(TransposeOp(box.cod[0], inverse)))


@backward_rule(SaveOp)
def backward_save(box: Box, builder: object) -> BoxBackward:
    """``∂x = g + Σ`` the cotangents of every load of this slot (saved by their backward, which runs first)."""
    t = cot(box.prim.type)
    keys = builder.saved_keys(_slot(box.prim))  # type: ignore[attr-defined]
    if not keys or not len(t):
        return BoxBackward((), Identity(t))
    loads = [Box(LoadOp(t, key)) for key in keys]
    n = len(keys) + 1
    k = len(t)
    picks = [c * k + s for s in range(k) for c in range(n)]
    adds = [woven_scalar(Box(AddOp(n)), seg) for seg in t]
    return BoxBackward((), Seq.of(Par.of(Identity(t), *loads), route(list(t) * n, picks), Par.of(*adds)))


@backward_rule(LoadOp)
def backward_load(box: Box, builder: object) -> BoxBackward:
    """A load's cotangent is saved for the matching save's backward."""
    t = cot(box.prim.type)
    if not len(t):
        return BoxBackward((), Identity(Type(())))
    key = builder.load_key(_slot(box.prim))  # type: ignore[attr-defined]
    return BoxBackward((), Seq.of(Box(SaveOp(t, key)), Box(DeleteOp(t))))


@cost_rule(RenameOp)
def cost_rename(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    names = dict(zip(ctx.prim.segment.names, ctx.prim.names))
    return [Tensor(x.storage, ctx.out_axes[0], tuple(names.get(n, n) for n in x.order), x.grad, x.dtype, x.dense)]


@backward_rule(RenameOp)
def backward_rename(box: Box, builder: object) -> BoxBackward:
    seg = box.cod[0]
    return BoxBackward((), Box(RenameOp(seg, box.prim.segment.names)))
