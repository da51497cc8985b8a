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
    ExpandOp,
    LinearTransposeOp,
    LinearWeightGradOp,
)


@cost_rule(ExpandOp)
def cost_expand(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    return [Tensor(x.storage, ctx.out_axes[0], x.order, x.grad, x.dtype, dense=False)]


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
    else:  # (x: batch dom, g: batch cod) -> cod dom, the batch summed
        batch = tuple(a.name for a in prim.batch)
        x = _relabel(first, _suffixed(ctx, "dom", 0, first.axes, batch + ins))
        g = _relabel(second, _suffixed(ctx, "dom", 1, second.axes, batch + outs))
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


# -- transposes for diagonals, pooling, batch normalisation and convolutions -----------------
from ncd.analysis.layout import numel  # noqa: E402
from ncd.prims.derivative import (  # noqa: E402
    AvgPoolTransposeOp,
    ConvWeightGradOp,
    ConvWithWeightOp,
    DiagonalOp,
    MaxPoolArgmaxOp,
    MaxPoolBackwardOp,
)


def _product(values: object) -> sympy.Expr:
    result = sympy.Integer(1)
    for v in values:  # type: ignore[attr-defined]
        result = result * v
    return result


@cost_rule(DiagonalOp)
def cost_diagonal(ctx: CostContext) -> list[Tensor]:
    """``x[..., None] * eye``: one product per repeated wire; autograd keeps each identity matrix."""
    prim = ctx.prim
    seen: set[str] = set()
    for a in prim.target:
        if a.name in seen:
            eye = ctx.new((a, a.renamed(a.name + "′")), grad=False)
            if ctx.inputs[0].grad:
                ctx.save(eye)
            ctx.other(ctx.numel(), ctx.numel())
        seen.add(a.name)
    return [ctx.output(0)]


@cost_rule(MaxPoolArgmaxOp)
def cost_maxpool_argmax(ctx: CostContext) -> list[Tensor]:
    """As max pooling (input and int64 argmax kept), the argmax also an output."""
    x = ctx.inputs[0]
    flat = x if x.contiguous else ctx.new(x.axes, grad=x.grad)
    index = ctx.new(ctx.out_axes[1], grad=False, dtype="index")
    if x.grad:
        ctx.save(flat, index)
    ctx.other(ctx.numel() * _product(ctx.prim.kernel), ctx.numel())
    return [ctx.output(0), index]


@cost_rule(MaxPoolBackwardOp)
def cost_maxpool_backward(ctx: CostContext) -> list[Tensor]:
    """``zeros.scatter_add(-1, i, g)``: autograd keeps the index (a gather routes the gradient back)."""
    i, g = ctx.inputs
    if g.grad:
        ctx.save(i if i.contiguous else ctx.new(i.axes, grad=False, dtype="index"))
    ctx.other(g.numel, g.numel)
    return [ctx.output(0)]


@cost_rule(AvgPoolTransposeOp)
def cost_avgpool_transpose(ctx: CostContext) -> list[Tensor]:
    ctx.other(ctx.numel(), ctx.inputs[0].numel)
    return [ctx.output(0)]


@cost_rule(ConvWithWeightOp)
def cost_conv_with_weight(ctx: CostContext) -> list[Tensor]:
    """``F.conv*`` / ``F.conv_transpose*`` with the weight an input: both operands kept, a product per gradient."""
    prim = ctx.prim
    x, w = ctx.inputs
    flat = x if x.contiguous else ctx.new(x.axes, grad=x.grad)
    c_in, c_out = prim.dom_axes.axes[0].size, prim.cod_axes.axes[0].size
    if prim.transposed:
        n_batch = x.numel / numel(prim.dom_axes.axes)
        flops = 2 * n_batch * numel(prim.dom_axes.axes[1:]) * _product(prim.kernel) * c_in * (c_out / prim.groups)
    else:
        n_batch = ctx.numel() / numel(prim.cod_axes.axes)
        flops = 2 * n_batch * c_out * numel(prim.cod_axes.axes[1:]) * (c_in / prim.groups) * _product(prim.kernel)
    ctx.matmul(flops, flops * (int(x.grad) + int(w.grad)))
    if w.grad:
        ctx.metrics.counter_excess += flops * (prim.groups - 1)
    if x.grad or w.grad:
        ctx.save(*([flat] if w.grad else []), *([w] if x.grad else []))
    return [ctx.output(0)]


@cost_rule(ConvWeightGradOp)
def cost_conv_weight_grad(ctx: CostContext) -> list[Tensor]:
    """The windows (a copy when reshaped) contracted with the other operand: ``torch.einsum``'s ``bmm``."""
    prim = ctx.prim
    x, g = ctx.inputs
    windowed, other = (g, x) if prim.transposed else (x, g)
    w_axes, o_axes = (prim.cod_axes, prim.dom_axes) if prim.transposed else (prim.dom_axes, prim.cod_axes)
    groups = Axis("γ", prim.groups)
    kernel = prim.weight.axes[2:]
    positions = tuple(a.renamed(a.name + "_p") for a in o_axes.axes[1:])
    batch = prim.batch.axes
    i_axis = Axis("ι", w_axes.axes[0].size / prim.groups)
    j_axis = Axis("ȷ", o_axes.axes[0].size / prim.groups)
    win = ctx.new(batch + (groups, i_axis) + positions + kernel, grad=windowed.grad)
    oth = other if other.contiguous else ctx.new(other.axes, grad=other.grad)
    oth = Tensor(oth.storage, batch + (groups, j_axis) + positions, (), oth.grad, oth.dtype)
    result = _einsum(ctx, [win, oth], (groups, j_axis, i_axis) + kernel)
    return [Tensor(result.storage, ctx.out_axes[0], (), result.grad)]


SECOND_ORDER = ("expand", "linear_transpose", "linear_weight_grad", "diagonal", "maxpool_argmax", "maxpool_backward",
                "avgpool_transpose", "conv_with_weight", "conv_weight_grad")
for _op in SECOND_ORDER:
    unsupported(_op, "second derivatives (the backward of a backward diagram) are not supported", backward=True)
