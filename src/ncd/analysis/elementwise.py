"""Cost and backward rules for elementwise functions, scale and the Hadamard product.

What autograd keeps: ``relu``, ``tanh``, ``sigmoid``, ``exp`` and ``sqrt`` save their
*output*; ``gelu``, ``silu``, ``log``, ``square`` and ``abs`` their *input*; ``neg`` and
scaling by a constant save nothing; a product saves each factor for the others' gradients.
"""

from __future__ import annotations

import sympy

from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor
from ncd.analysis.tables import cost_rule
from ncd.prims.elementwise import ROWS, ElementwiseOp, MultiplyOp, ScaleOp

#: which value autograd saves for each elementwise function's backward (None: nothing): ``ROWS``' column
SAVES: dict[str, str | None] = {name: row.saves for name, row in ROWS.items()}


@cost_rule(ElementwiseOp)
def cost_elementwise(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    function = ctx.prim.function
    if function == "identity":
        return [x.relabel(ctx.out_axes[0])]
    y = ctx.like(0, x)
    n = ctx.numel()
    if x.grad:
        which = SAVES[function]
        if which is not None:
            ctx.save(y if which == "output" else x)
        ctx.other(n, n if which is None else 2 * n)
    else:
        ctx.other(n, sympy.Integer(0))
    return [y]


@cost_rule(ScaleOp)
def cost_scale(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    n = ctx.numel()
    ctx.other(n, n if x.grad else sympy.Integer(0))
    return [ctx.like(0, x)]


@cost_rule(MultiplyOp)
def cost_multiply(ctx: CostContext) -> list[Tensor]:
    inputs = ctx.inputs
    n = ctx.numel()
    acc = inputs[0]
    for k, x in enumerate(inputs[1:], start=1):
        last = k == len(inputs) - 1
        full = all(a.name in acc.names for a in ctx.out_axes[0])
        grad = acc.grad or x.grad
        if last:
            out = ctx.like(0, acc) if full else ctx.output(0)
        else:
            out = ctx.new(ctx.out_axes[0], acc.order if full else None, grad)
        ctx.save(*([x] if acc.grad else []) + ([acc] if x.grad else []))
        ctx.other(n, n * (int(acc.grad) + int(x.grad)))
        acc = out
    return [acc]


# -- backward ------------------------------------------------------------------------------
from ncd.analysis.backward import BoxBackward  # noqa: E402
from ncd.analysis.tables import backward_rule  # noqa: E402
from ncd.ir.diagram import Box, Identity, Par, Seq  # noqa: E402
from ncd.prims.derivative import DerivativeOp  # noqa: E402

_SCALAR = ElementwiseOp("relu").signature()[0]


@backward_rule(ElementwiseOp)
def backward_elementwise(box: Box, builder: object) -> BoxBackward:
    """``∂x = g ⊙ f′(v)`` with ``v`` the stored input or output (``neg``: ``−g``; ``identity``: ``g``)."""
    function = box.prim.function
    if function == "identity":
        return BoxBackward((), Identity(_SCALAR))
    if function == "neg":
        return BoxBackward((), Box(ScaleOp(sympy.Integer(-1))))
    which = SAVES[function]
    port = ("out", 0) if which == "output" else ("in", 0)
    derivative = Box(DerivativeOp(function, which or "input"))
    return BoxBackward((port,), Seq.of(Par.of(derivative, Identity(_SCALAR)), Box(MultiplyOp(2))))


@backward_rule(ScaleOp)
def backward_scale(box: Box, builder: object) -> BoxBackward:
    """Scaling is linear and self-transposed: ``∂x = factor · g``."""
    return BoxBackward((), Box(box.prim))


@backward_rule(MultiplyOp)
def backward_multiply(box: Box, builder: object) -> BoxBackward:
    """``∂x_i = g ⊙ ∏_{j≠i} x_j`` (every factor stored)."""
    from ncd.analysis.backward import route

    n = box.prim.n
    stored = tuple(("in", j) for j in range(n))
    segments = list(box.dom) + [_SCALAR[0]]
    picks: list[int] = []
    for i in range(n):
        picks += [n] + [j for j in range(n) if j != i]
    parts = [Box(MultiplyOp(n)) for _ in range(n)]
    return BoxBackward(stored, Seq.of(route(segments, picks), Par.of(*parts)))
