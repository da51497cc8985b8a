"""Costs of a contraction as the lowered program runs it (the rules live beside the linear family, ``ncd.prims.linear``).

A ``torch.einsum`` op of the program carries what ATen runs for it (:class:`ncd.ir.program.Contraction`, typed
by the backend that wrote the call): sums within one operand, a permute and a reshape of each operand, one
``bmm`` (or an elementwise ``mul``), a view of the result.  :func:`einsum_cost` reads those ops as it reads any
other, by what each does to storages: a sum or a product makes a new one; a reshape is a view when the
dimensions it merges are adjacent in memory (:meth:`ncd.analysis.layout.Tensor.merges`), a copy otherwise;
``bmm`` costs ``2·∏`` of its sizes forward and as much again backward for each operand that needs a gradient,
keeping each operand the other one's gradient reads.  Nothing here knows how einsum is planned.
Three or more operands are lowered as one two-operand einsum per pair of the einsum's plan
(:meth:`ncd.prims.linear.EinsumOp.pairs`, chosen from axis names, never sizes): the step's einsum ops, in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor, numel
from ncd.analysis.tables import AnalysisError
from ncd.ir.axes import Axis
from ncd.ir.program import Contraction, Op

__all__ = ["einsum_cost"]


def einsum_cost(ctx: CostContext, operands: list[Tensor], out_axes: tuple[Axis, ...],
                pairs: Sequence[tuple[int, int]] = ()) -> Tensor:
    """Record the FLOPs and saved tensors of the step's ``torch.einsum`` ops on ``operands`` (named as the cost
    rule names them; the op's letters are their trailing axes, in order) -> ``out_axes``; the result.

    With ``pairs`` (three or more operands), one two-operand einsum op per pair, as lowering writes them.
    """
    from ncd.prims.contraction import kept_axes

    calls = [op for op in ctx.ops if op.target == "torch.einsum"]
    if len(calls) != max(len(pairs), 1):
        raise AnalysisError(f"cost of {ctx.box.text()}: the program ran {len(calls)} einsum calls for it, not"
                            f" {max(len(pairs), 1)}: {[op.code for op in ctx.ops]}")
    axis_of = {a.name: a for t in operands for a in t.axes}
    axis_of.update((a.name, a) for a in out_axes)
    out_names = [a.name for a in out_axes]
    if not pairs:
        return _contract(ctx, calls[0], operands, out_names, axis_of)
    ops = list(operands)
    for (i, j), call in zip(pairs, calls):
        kept = kept_axes([t.names for t in ops], i, j, out_names)
        product = _contract(ctx, call, [ops[i], ops[j]], list(kept), axis_of)
        ops = [t for k, t in enumerate(ops) if k not in (i, j)] + [product]
    return ops[0]


def _contract(ctx: CostContext, call: Op, operands: list[Tensor], out_names: list[str], axis_of: dict[str, Axis]
              ) -> Tensor:
    """The ATen ops ``call`` records (its ``contraction``), run on the abstract ``operands``."""
    plan = call.option("contraction")
    if not isinstance(plan, Contraction) or len(plan.inputs) != len(operands):
        raise AnalysisError(f"cost of {ctx.box.text()}: the einsum op {call.code!r} does not type what ATen runs"
                            f" for {len(operands)} operands")
    name: dict[str, str] = {}
    for letters, t in zip(plan.inputs, operands):
        if len(t.axes) < len(letters):
            raise AnalysisError(f"cost of {ctx.box.text()}: {call.code!r} names {len(letters)} axes of an operand"
                                f" with {len(t.axes)} ({' '.join(t.names)})")
        for c, axis in zip(letters, t.axes[len(t.axes) - len(letters):]):
            if name.setdefault(c, axis.name) != axis.name:
                raise AnalysisError(f"cost of {ctx.box.text()}: {call.code!r} gives letter {c!r} to axes"
                                    f" {name[c]} and {axis.name}")
    dropped = list(dict.fromkeys(n for t in operands for n in t.names if n not in out_names))
    if plan.product in ("view", "sum"):
        t = operands[0]
        if plan.product == "view":
            return t.relabel([axis_of[n] for n in out_names])
        ctx.other(numel(tuple({a.name: a for a in t.axes}.values())), sympy.Integer(0))  # a name twice (``a a ->``,
        # a trace) reads the diagonal, a view: the sum adds its entries, not the whole square's
        return ctx.new(tuple(axis_of[n] for n in out_names), tuple(n for n in t.order if n in out_names), t.grad)
    a, b = (_summed(ctx, t, [name[c] for c in letters]) for t, letters in zip(operands, plan.summed))
    grad = a.grad or b.grad
    if plan.product == "mul":  # at::mul: laid out like its first operand; each operand kept for the other's gradient
        names = [n for n in out_names + dropped if n in a.names or n in b.names]
        out = ctx.new(tuple(axis_of[n] for n in names), a.order + tuple(n for n in b.order if n not in a.names), grad)
        ctx.matmul(sympy.Integer(0), sympy.Integer(0))
        ctx.save(*([a] if b.grad else []), *([b] if a.grad else []))
        return out.relabel([axis_of[n] for n in out_names]) if set(out.names) >= set(out_names) else out
    lettered = {name[c] for c in plan.output}
    group = {name[c]: g for g, letters in (("batch", plan.batch), ("rows", plan.rows), ("cols", plan.cols))
             for c in letters}
    for n in out_names:  # leading (``...``) dimensions: in the batch when both operands have them
        if n not in lettered and (_has(a, n) or _has(b, n)):
            group[n] = "batch" if _has(a, n) and _has(b, n) else "rows" if _has(a, n) else "cols"
    batch, rows, cols = ([n for n in out_names if group.get(n) == g] for g in ("batch", "rows", "cols"))
    inner = [name[c] for c in plan.inner]
    left = a if a.merges([batch, rows, inner]) else ctx.new(a.axes, batch + rows + inner, a.grad)
    right = b if b.merges([batch, inner, cols]) else ctx.new(b.axes, batch + inner + cols, b.grad)
    flops = sympy.Integer(2)
    for n in batch + rows + inner + cols:
        flops = flops * axis_of[n].size
    saved = ([left] if b.grad else []) + ([right] if a.grad else [])
    ctx.matmul(flops, flops * len(saved))
    ctx.save(*saved)
    kept = [n for n in out_names if n in group]
    stored = batch + (cols + rows if plan.right_first([kept.index(n) for n in rows], [kept.index(n) for n in cols])
                      else rows + cols)
    out = ctx.new(tuple(axis_of[n] for n in kept), tuple(stored), grad)
    return out.relabel([axis_of[n] for n in out_names]) if set(out.names) >= set(out_names) else out


def _has(t: Tensor, name: str) -> bool:
    """Whether ``t`` has the dimension ``name`` of a size other than one (a size-one dimension broadcasts)."""
    return any(a.name == name and not bool(a.size == 1) for a in t.axes)


def _summed(ctx: CostContext, t: Tensor, names: list[str]) -> Tensor:
    """``aten.sum`` of ``t`` over ``names``: a new storage keeping the rest in their order (``t`` if none)."""
    if not names:
        return t
    keep = tuple(a for a in t.axes if a.name not in names)
    return ctx.new(keep, tuple(n for n in t.order if n not in names), t.grad)
