"""Cost rules for the primitives of backward diagrams, so that ``ncd.cost(ncd.backward(d))`` works.

Their own backward (second derivatives) is not supported.
"""

from __future__ import annotations

import sympy

from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor
from ncd.analysis.linear import _einsum, markers, tagged
from ncd.analysis.tables import cost_rule, unsupported
from ncd.ir.axes import Axis
from ncd.prims.derivative import (
    DerivativeOp,
    EmbeddingGradOp,
    ExpandOp,
    InsertOp,
    LinearTransposeOp,
    LinearWeightGradOp,
    MaskBackwardOp,
    NormBackwardOp,
    SoftmaxBackwardOp,
    ZerosOp,
)


@cost_rule(DerivativeOp)
def cost_derivative(ctx: CostContext) -> list[Tensor]:
    ctx.other(ctx.numel(), sympy.Integer(0))
    return [ctx.like(0, ctx.inputs[0])]


@cost_rule(SoftmaxBackwardOp)
def cost_softmax_backward(ctx: CostContext) -> list[Tensor]:
    ctx.other(4 * ctx.numel(), sympy.Integer(0))
    return [ctx.output(0)]


@cost_rule(NormBackwardOp)
def cost_norm_backward(ctx: CostContext) -> list[Tensor]:
    ctx.other(10 * ctx.numel(), sympy.Integer(0))
    return [ctx.output(j) for j in range(len(ctx.out_axes))]


@cost_rule(MaskBackwardOp)
def cost_mask_backward(ctx: CostContext) -> list[Tensor]:
    """``masked_fill(mask, 0)``, like the masks themselves: autograd keeps the boolean mask."""
    g = ctx.inputs[0]
    prim = ctx.prim
    if prim.query is not None:
        mask = ctx.new((prim.query, prim.key), grad=False, dtype="bool")
    else:
        mask = ctx.new(ctx.inputs[1].axes, ctx.inputs[1].order, grad=False, dtype="bool")
    if g.grad:
        ctx.save(mask)
    ctx.other(ctx.numel(), ctx.numel() if g.grad else sympy.Integer(0))
    return [ctx.like(0, g)]


@cost_rule(EmbeddingGradOp)
def cost_embedding_grad(ctx: CostContext) -> list[Tensor]:
    """``onehot(i) * g``: autograd keeps the (float) one-hot rows for ``g``'s gradient."""
    i, g = ctx.inputs
    rows = ctx.out_axes[0][len(i.axes)]
    onehot = ctx.new(i.axes + (rows,), grad=False)
    if g.grad:
        ctx.save(onehot)
    ctx.other(ctx.numel(), sympy.Integer(0))
    return [ctx.output(0)]


@cost_rule(InsertOp)
def cost_insert(ctx: CostContext) -> list[Tensor]:
    """``zeros.index_copy(-1, positions, x)``: autograd keeps the int64 positions and ``x``."""
    prim = ctx.prim
    x = ctx.inputs[0]
    count = sympy.Integer(1) if prim.source is None else prim.source.size
    if x.grad:
        ctx.save(ctx.new((Axis("positions", count),), grad=False, dtype="index"), x)
    return [ctx.output(0)]


@cost_rule(ExpandOp)
def cost_expand(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    return [Tensor(x.storage, ctx.out_axes[0], x.order, x.grad, x.dtype, dense=False)]


@cost_rule(ZerosOp)
def cost_zeros(ctx: CostContext) -> list[Tensor]:
    return [ctx.new(axes, grad=False) for axes in ctx.out_axes]


def _suffixed(ctx: CostContext, side: str, j: int, axes: tuple[Axis, ...], own: tuple[str, ...]) -> tuple[Axis, ...]:
    """``axes`` (a full layout) with the box's own axes renamed ``own[k]``."""
    layout = markers(ctx.box, ctx.woven, side, j)
    shift = len(axes) - len(layout)
    result = list(axes)
    for k, (kind, index) in enumerate(layout):
        if kind == "own":
            result[shift + k] = axes[shift + k].renamed(own[index])
    return tuple(result)


def _weighted(ctx: CostContext, transpose: bool) -> list[Tensor]:
    prim = ctx.prim
    outs = tuple(tagged(a.name, "_out") for a in prim.cod_axes)
    ins = tuple(tagged(a.name, "_in") for a in prim.dom_axes)
    first, second = ctx.inputs
    if transpose:  # (g: cod, W: cod dom) -> dom
        g = _relabel(first, _suffixed(ctx, "dom", 0, first.axes, outs))
        w = _relabel(second, _suffixed(ctx, "dom", 1, second.axes, outs + ins))
        result = _einsum(ctx, [g, w], _suffixed(ctx, "cod", 0, ctx.out_axes[0], ins))
    else:  # (x: dom, g: cod) -> cod dom
        x = _relabel(first, _suffixed(ctx, "dom", 0, first.axes, ins))
        g = _relabel(second, _suffixed(ctx, "dom", 1, second.axes, outs))
        result = _einsum(ctx, [x, g], _suffixed(ctx, "cod", 0, ctx.out_axes[0], outs + ins))
    return [Tensor(result.storage, ctx.out_axes[0], (), result.grad)]


def _relabel(t: Tensor, axes: tuple[Axis, ...]) -> Tensor:
    names = {a.name: b.name for a, b in zip(t.axes, axes)}
    return Tensor(t.storage, axes, tuple(names.get(n, n) for n in t.order), t.grad, t.dtype, t.dense)


@cost_rule(LinearTransposeOp)
def cost_linear_transpose(ctx: CostContext) -> list[Tensor]:
    return _weighted(ctx, True)


@cost_rule(LinearWeightGradOp)
def cost_linear_weight_grad(ctx: CostContext) -> list[Tensor]:
    return _weighted(ctx, False)


SECOND_ORDER = ("derivative", "softmax_backward", "norm_backward", "mask_backward", "insert", "embedding_grad", "expand",
                "zeros", "linear_transpose", "linear_weight_grad")
for _op in SECOND_ORDER:
    unsupported(_op, "second derivatives (the backward of a backward diagram) are not supported", backward=True)
