"""Cost rules for the primitives of backward diagrams, so that ``ncd.cost(ncd.backward(d))`` works.

Their own backward (second derivatives) is not supported.
"""

from __future__ import annotations

from typing import Literal

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


def _suffixed(ctx: CostContext, side: Literal["dom", "cod"], j: int, axes: tuple[Axis, ...],
              own: tuple[str, ...]) -> tuple[Axis, ...]:
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


# -- diagonals -------------------------------------------------------------------------------
from ncd.prims.derivative import DiagonalOp  # noqa: E402


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


SECOND_ORDER = ("expand", "linear_transpose", "linear_weight_grad", "diagonal")
for _op in SECOND_ORDER:
    unsupported(_op, "second derivatives (the backward of a backward diagram) are not supported", backward=True)
