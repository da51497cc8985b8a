"""Costs of a contraction as the lowered program runs it (the rules live beside the linear family, ``ncd.prims.linear``).

:func:`einsum_cost` costs ``torch.einsum`` of one or two operands (``ncd.analysis.layout.einsum``): each
``bmm`` costs ``2·∏`` of its sizes and is repeated backward once per operand that needs a gradient.
Three or more operands are lowered as one two-operand einsum per pair of the einsum's plan
(:meth:`ncd.prims.linear.EinsumOp.pairs`, chosen from axis names, never sizes), and costed pair by
pair: the same products on bound and symbolic sizes, so a formula at given sizes equals the number.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor, einsum
from ncd.ir.axes import Axis

__all__ = ["einsum_cost"]


def einsum_cost(ctx: CostContext, operands: list[Tensor], out_axes: tuple[Axis, ...],
                pairs: Sequence[tuple[int, int]] = ()) -> Tensor:
    """Record the FLOPs and saved tensors of ``torch.einsum(operands) -> out_axes`` on ``ctx``; the result.

    With ``pairs`` (three or more operands), one two-operand einsum per pair, as lowering writes them.
    """
    from ncd.prims.contraction import kept_axes

    sizes = {a.name: a.size for t in operands for a in t.axes}
    axis_of = {a.name: a for t in operands for a in t.axes}
    axis_of.update((a.name, a) for a in out_axes)
    if len(operands) > 2 and not pairs:
        raise ValueError(f"einsum_cost: {len(operands)} operands need a plan of pairs")
    if not pairs:
        return _one_einsum(ctx, operands, [a.name for a in out_axes], sizes)
    ops = list(operands)
    out_names = [a.name for a in out_axes]
    for i, j in pairs:
        kept = kept_axes([t.names for t in ops], i, j, out_names)
        product = _one_einsum(ctx, [ops[i], ops[j]], list(kept), sizes)
        ops = [t for k, t in enumerate(ops) if k not in (i, j)] + [product]
    return ops[0]


def _one_einsum(ctx: CostContext, operands: list[Tensor], out_names: list[str], sizes: dict[str, sympy.Expr]) -> Tensor:
    result, steps = einsum(operands, out_names, sizes, lambda axes, order, grad: ctx.new(axes, order, grad))
    for step in steps:
        ctx.matmul(step.flops, step.flops * len(step.saved))
        ctx.save(*step.saved)
    if len(operands) == 1 and result.storage != operands[0].storage:
        ctx.other(operands[0].numel, sympy.Integer(0))
    return result
