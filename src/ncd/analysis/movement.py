"""Cost and backward rules for bind/unbind, concatenation, indexing, slicing and size-1 axes.

All are views except ``bind`` on axes that are not adjacent in memory (``flatten`` copies)
and ``concat`` (``torch.cat`` writes a new tensor); none keeps anything for backward.
Backward: bind and unbind transpose to each other, squeeze and unsqueeze likewise,
concatenation to slices, indexing and slicing to ``Insert`` (zeros elsewhere).
"""

from __future__ import annotations

import sympy

from ncd.analysis.backward import BoxBackward
from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor
from ncd.analysis.tables import backward_rule, cost_rule, unsupported
from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box, Par, Seq
from ncd.prims.derivative import InsertOp
from ncd.prims.movement import BindOp, ConcatOp, IndexOp, SliceOp, SqueezeOp, UnbindOp, UnsqueezeOp


def _replace(order: tuple[str, ...], old: list[str], new: list[str]) -> tuple[str, ...]:
    """``order`` with the run of ``old`` names (adjacent) replaced by ``new``."""
    present = [n for n in order if n in old]
    if not present:
        return order
    first = order.index(present[0])
    rest = [n for n in order if n not in old]
    return tuple(rest[:first] + new + rest[first:])


@cost_rule(BindOp)
def cost_bind(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    names = list(ctx.prim.inputs.names)
    if len(names) == 1 or x.merges([names]):
        return [Tensor(x.storage, ctx.out_axes[0], _replace(x.order, names, [ctx.prim.output.name]), x.grad, x.dtype)]
    return [ctx.output(0)]  # reshape of axes not adjacent in memory: a copy


@cost_rule(UnbindOp)
def cost_unbind(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    prim = ctx.prim
    return [Tensor(x.storage, ctx.out_axes[0], _replace(x.order, [prim.input.name], list(prim.outputs.names)), x.grad,
                   x.dtype)]


@cost_rule(SqueezeOp)
def cost_squeeze(ctx: CostContext) -> list[Tensor]:
    return [ctx.inputs[0].relabel(ctx.out_axes[0])]


@cost_rule(UnsqueezeOp)
def cost_unsqueeze(ctx: CostContext) -> list[Tensor]:
    return [ctx.inputs[0].relabel(ctx.out_axes[0])]


@cost_rule(IndexOp)
def cost_index(ctx: CostContext) -> list[Tensor]:
    return [ctx.inputs[0].relabel(ctx.out_axes[0])]


@cost_rule(SliceOp)
def cost_slice(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    prim = ctx.prim
    order = tuple(prim.output.name if n == prim.axis.name else n for n in x.order)
    return [Tensor(x.storage, ctx.out_axes[0], order, x.grad, x.dtype)]


@cost_rule(ConcatOp)
def cost_concat(ctx: CostContext) -> list[Tensor]:
    return [ctx.new(ctx.out_axes[0], grad=any(t.grad for t in ctx.inputs))]


# -- backward ------------------------------------------------------------------------------
@backward_rule(BindOp)
def backward_bind(box: Box, builder: object) -> BoxBackward:
    return BoxBackward((), Box(UnbindOp(box.prim.output, box.prim.inputs)))


@backward_rule(UnbindOp)
def backward_unbind(box: Box, builder: object) -> BoxBackward:
    return BoxBackward((), Box(BindOp(box.prim.outputs, box.prim.input)))


@backward_rule(SqueezeOp)
def backward_squeeze(box: Box, builder: object) -> BoxBackward:
    return BoxBackward((), Box(UnsqueezeOp(box.prim.axis, Segment(()), 0)))


@backward_rule(UnsqueezeOp)
def backward_unsqueeze(box: Box, builder: object) -> BoxBackward:
    prim = box.prim
    from ncd.analysis.backward import woven_scalar

    squeeze = Box(SqueezeOp(prim.axis))
    before, after = prim.around.axes[: prim.position], prim.around.axes[prim.position:]
    result = squeeze
    from ncd.ir.diagram import Weave

    for axis in reversed(after):
        result = Weave(result, axis, (1,), (0,))
    for axis in reversed(before):
        result = Weave(result, axis, (0,), (0,))
    _ = woven_scalar
    return BoxBackward((), result)


@backward_rule(ConcatOp)
def backward_concat(box: Box, builder: object) -> BoxBackward:
    """The transpose of a concatenation: one slice of the cotangent per input."""
    prim = box.prim
    from ncd.analysis.backward import route

    start = sympy.Integer(0)
    parts = []
    for axis in prim.inputs:
        cut = Box(SliceOp(prim.output, start, start + axis.size, sympy.Integer(1), axis))
        from ncd.ir.diagram import Weave

        woven = cut
        for a in reversed(prim.after.axes):
            woven = Weave(woven, a, (1,), (1,))
        for a in reversed(prim.before.axes):
            woven = Weave(woven, a, (0,), (0,))
        parts.append(woven)
        start = start + axis.size
    out = Segment(prim.before.axes + (prim.output,) + prim.after.axes)
    return BoxBackward((), Seq.of(route([out], [0] * len(parts)), Par.of(*parts)))


@backward_rule(IndexOp)
def backward_index(box: Box, builder: object) -> BoxBackward:
    """The transpose of picking one entry: the cotangent written there, zeros elsewhere."""
    prim = box.prim
    n = prim.axis.size
    index = prim.index if not (prim.index.is_number and prim.index < 0) else prim.index + n
    return BoxBackward((), Box(InsertOp(prim.axis, index, index + 1, sympy.Integer(1))))


@backward_rule(SliceOp)
def backward_slice(box: Box, builder: object) -> BoxBackward:
    prim = box.prim
    return BoxBackward((), Box(InsertOp(prim.axis, prim.start, prim.stop, prim.step, prim.output)))


_ = (Type, unsupported)
