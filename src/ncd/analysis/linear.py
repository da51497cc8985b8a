"""Costs of a contraction as ``torch.einsum`` runs it (the rules live beside the linear family, ``ncd.prims.linear``).

:func:`einsum_cost` replays ``torch.einsum`` (``ncd.analysis.layout.einsum``): each ``bmm`` costs
``2·∏`` of its sizes and is repeated backward once per operand that needs a gradient; for three or
more operands the contraction order is ``opt_einsum``'s, as torch picks it.
"""

from __future__ import annotations

import sympy

from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor, einsum
from ncd.ir.axes import Axis

__all__ = ["einsum_cost"]


def einsum_cost(ctx: CostContext, operands: list[Tensor], out_axes: tuple[Axis, ...]) -> Tensor:
    """Record the FLOPs and saved tensors of ``torch.einsum(operands) -> out_axes`` on ``ctx``; the result."""
    sizes = {a.name: a.size for t in operands for a in t.axes}
    path = _path(operands, out_axes, sizes) if len(operands) > 2 else None
    result, steps = einsum(operands, [a.name for a in out_axes], sizes,
                           lambda axes, order, grad: ctx.new(axes, order, grad), path)
    for step in steps:
        ctx.matmul(step.flops, step.flops * len(step.saved))
        ctx.save(*step.saved)
    if len(operands) == 1 and result.storage != operands[0].storage:
        ctx.other(operands[0].numel, sympy.Integer(0))
    return result


def _path(operands: list[Tensor], out_axes: tuple[Axis, ...], sizes: dict[str, sympy.Expr]) -> list[tuple[int, int]] | None:
    """opt_einsum's contraction order, as ``torch.einsum`` uses it for three or more operands."""
    if any(getattr(s, "free_symbols", None) for s in sizes.values()):
        return None
    try:
        import opt_einsum
    except ImportError:  # pragma: no cover - torch then contracts left to right
        return None
    import string

    letters = dict(zip(sizes, string.ascii_letters))
    eq = ",".join("".join(letters[n] for n in t.names) for t in operands) + "->" + "".join(letters[a.name] for a in out_axes)
    shapes = [tuple(int(a.size) for a in t.axes) for t in operands]
    path, _ = opt_einsum.contract_path(eq, *shapes, shapes=True, optimize="auto")
    return [tuple(p) for p in path]
