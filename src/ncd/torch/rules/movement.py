"""Lowering rules for bind/unbind, concatenation, indexing, slicing and size-1 axes.

Each rule works in place on woven layouts when the moved axes sit together (the usual
case: woven axes before and after them); otherwise it asks the code generator to move the
woven axes to the front first.
"""

from __future__ import annotations

from ncd.prims.movement import BindOp, ConcatOp, IndexOp, SliceOp, SqueezeOp, UnbindOp, UnsqueezeOp
from ncd.torch.rules import NotWeaveAware, RuleContext, register


def _shape(ctx: RuleContext, side: str, j: int) -> list[object]:
    """The layout of input/output ``j`` with the run of the box's own axes collapsed to one marker."""
    out: list[object] = []
    for kind, k in ctx.markers(side, j):
        if kind == "woven":
            out.append(k)
        elif not out or out[-1] != "own":
            out.append("own")
    return out


def _contiguous(ctx: RuleContext, side: str, j: int) -> bool:
    dims = ctx.own_dims(side, j)
    return dims == list(range(dims[0], dims[0] + len(dims))) if dims else True


def _same_weave(ctx: RuleContext) -> None:
    """Raise NotWeaveAware unless every input and output has the same woven axes around one own block."""
    sides = [("dom", j) for j in range(len(ctx.box.dom))] + [("cod", j) for j in range(len(ctx.box.cod))]
    if not all(_contiguous(ctx, s, j) for s, j in sides):
        raise NotWeaveAware
    shapes = [_shape(ctx, s, j) for s, j in sides]
    # a scalar own segment has no marker: compare the woven order only, plus where "own" sits when present
    first = [m for m in shapes[0] if m != "own"]
    if any([m for m in shape if m != "own"] != first for shape in shapes):
        raise NotWeaveAware
    anchors = {_own_slot(shape) for shape in shapes if "own" in shape}
    if len(anchors) > 1:
        raise NotWeaveAware


def _own_slot(shape: list[object]) -> int:
    return shape.index("own")


@register(BindOp, weave_aware=True)
def lower_bind(ctx: RuleContext) -> list[str]:
    _same_weave(ctx)
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
    _same_weave(ctx)
    (dim,) = ctx.own_dims("dom", 0)
    sizes = tuple(ctx.int(a.size, f"axis {a.name}") for a in prim.outputs)
    x = ctx.args[0].var
    return [x if len(sizes) == 1 else f"{x}.unflatten({dim}, {sizes})"]


@register(ConcatOp, weave_aware=True)
def lower_concat(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, ConcatOp)
    _same_weave(ctx)
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
    _same_weave(ctx)
    (dim,) = ctx.own_dims("dom", 0)
    return [f"{ctx.args[0].var}.select({dim}, {ctx.int(prim.index, 'index')})"]


@register(SliceOp, weave_aware=True)
def lower_slice(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, SliceOp)
    _same_weave(ctx)
    (dim,) = ctx.own_dims("dom", 0)
    start, stop, step = (ctx.int(v, "slice bound") for v in (prim.start, prim.stop, prim.step))
    text = f"{start}:{stop}" + (f":{step}" if step != 1 else "")
    rest = ", :" * (-dim - 1)
    return [f"{ctx.args[0].var}[..., {text}{rest}]"]


@register(SqueezeOp, weave_aware=True)
def lower_squeeze(ctx: RuleContext) -> list[str]:
    _same_weave(ctx)
    (dim,) = ctx.own_dims("dom", 0)
    return [f"{ctx.args[0].var}.squeeze({dim})"]


@register(UnsqueezeOp, weave_aware=True)
def lower_unsqueeze(ctx: RuleContext) -> list[str]:
    prim = ctx.prim
    assert isinstance(prim, UnsqueezeOp)
    _same_weave(ctx)
    dim = ctx.own_dims("cod", 0)[prim.position]
    return [f"{ctx.args[0].var}.unsqueeze({dim})"]
