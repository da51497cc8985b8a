"""Attention: the cost of the fused ``scaled_dot_product_attention``.

The program's fusion rewrite (:func:`ncd.torch.fusion.fuse_attention`) replaces the steps of a
softmax-then-contract attention by one ``fused`` step (:class:`ncd.ir.program.Step`, with the pattern) calling
``F.scaled_dot_product_attention``; the cost analysis reads that step, so it costs exactly the calls the
generated code makes.  Costs are those of PyTorch's *math* backend (the one ``FlopCounterMode`` can see;
measure under ``sdpa_kernel(SDPBackend.MATH)``): the products are the SDPA call's row of
:mod:`ncd.analysis.targets`, read off its query, key and value arguments (two batched products of
``2·B·L·S·E`` and ``2·B·L·S·Ev`` FLOPs, each repeated twice backward); autograd keeps the scaled queries and keys (new
tensors), the attention weights, and the values folded to ``(B, S, Ev)`` (a view when
their batch axes are adjacent in memory, a copy otherwise).  The operands are those the step's arranging ops
hand on: each op's typed ``arrange`` order is a view, its ``pack`` a ``.contiguous()`` that copies unless the
view is dense (read off the op, not re-decided from the pattern).
"""

from __future__ import annotations

from typing import Any

import sympy

from ncd.analysis.cost import BoxCost, CostContext, Metrics
from ncd.analysis.layout import Tensor, numel
from ncd.ir.diagram import Diagram
from ncd.ir.program import Op, Value

__all__ = ["fused_attention"]


def fused_attention(walker: Any, pattern: Any, parts: list[Diagram], values: list[Tensor],
                    ops: tuple[Op, ...] = (), outputs: tuple[Value, ...] = (), inputs: tuple[Value, ...] = ()
                    ) -> list[Tensor]:
    q, k, v = values[0], values[1], values[-1]
    frame = [a for a in q.axes if a.name not in pattern.q]
    batch = [a.name for a in frame] + list(pattern.batch)
    walker.step_count += 1
    for t in values:
        walker.last[t.storage] = walker.step_count
    metrics = Metrics()
    out_axes = tuple(frame) + tuple(outputs[0].axes)  # the step's result, with the axes woven in place
    ctx = CostContext(parts[0], list(values), (), [out_axes], walker, metrics, ops=ops)  # type: ignore[arg-type]
    # the products of the SDPA call the program runs, read off its query, key and value arguments (their axes as the
    # call receives them, behind the woven axes around the step: the frame, which the arguments may list already)
    call = ctx.call_to("scaled_dot_product_attention")
    names = {a.name for a in frame}
    shapes = [(numel(frame),) + tuple(a.size for a in arg.axes if a.name not in names) for arg in call.args[:3]]
    ctx.charge(call, shapes, grads=(True, False, False))
    scores = sympy.Mul(*shapes[0][:-1]) * shapes[1][-2]  # B·H·L·S: the attention weights
    # grouped-query attention (enable_gqa): the math kernel first repeats each key/value head over the query heads it
    # serves (repeat_interleave: new tensors), so the keys it scales and the values it keeps have the queries' heads
    shared = tuple(a for a in q.axes if a.name == pattern.query[0]) if pattern.gqa is not None else ()
    k_numel = k.numel * numel(shared)
    ctx.other(q.numel + k_numel + 4 * scores + (scores if pattern.causal or pattern.mask else 0),
              q.numel + k_numel + 4 * scores)
    q, k, v = _as_called(ctx, inputs, [q, k, v], [target for _, _, target in pattern.operands()], ops)
    ctx.save(ctx.new(q.axes, grad=True), ctx.new(k.axes + shared, grad=True))
    ctx.save(ctx.new(tuple(a for a in out_axes if a.name in batch + pattern.query) + (_axis(v, pattern.key),), grad=True))
    if shared:
        folded = ctx.new(v.axes + shared, grad=v.grad)
    else:
        folded = v if v.merges([batch, [pattern.key], list(pattern.value)]) else ctx.new(v.axes, grad=v.grad)
    ctx.save(folded)
    out = ctx.new(out_axes, _written(q, batch, pattern, training=walker.training), grad=True)
    walker.boxes.append(BoxCost("attention (SDPA)", "sdpa", tuple(walker.blocks), metrics))
    return [out]


def _written(q: Tensor, batch: list[str], pattern: Any, training: bool) -> tuple[str, ...]:
    """The order SDPA stores its output in.  On CPU, four-dimensional operands (one batch dimension besides the heads)
    run the flash kernel, which writes the output in the query's layout (its contracted axes replaced by the values);
    otherwise (other ranks, or dropout while training) the math kernel writes it densely, batch, queries, values."""
    dense = tuple(batch + list(pattern.query) + list(pattern.value))
    if len(batch) != 2 or (pattern.dropout and training):
        return dense
    order: list[str] = []
    for n in q.order:
        if n in pattern.contracted:
            order += [] if set(pattern.value) & set(order) else list(pattern.value)
        elif n in dense:
            order.append(n)
    return tuple(order) if sorted(order) == sorted(dense) else dense


def _as_called(ctx: CostContext, inputs: tuple[Value, ...], operands: list[Tensor], targets: list[list[str]],
               ops: tuple[Op, ...]) -> list[Tensor]:
    """Q, K and V as the step's arranging ops hand them on: the ops, in order, that arrange each operand's value into
    the order SDPA reads it (``targets``): its ``arrange`` order a view, then its ``pack``: ``.contiguous()`` copies
    unless the view is dense — ``"always"``, or only when its last dimension is ``"strided"``."""
    arranging = [op for op in ops if op.option("arrange") is not None]
    result = []
    for value, t, target in zip((inputs[0], inputs[1], inputs[-1]), operands, targets):
        var = value.var
        while (arranging and arranging[0].args and arranging[0].args[0].var == var
               and list(arranging[0].option("arrange")) == target):
            op = arranging.pop(0)
            t = _arranged(ctx, t, list(op.option("arrange")), op.option("pack", ""))
            var = op.outputs[0].var
        result.append(t)
    return result


def _arranged(ctx: CostContext, t: Tensor, target: list[str], pack: str) -> Tensor:
    """``t`` with its axes moved into the ``target`` order (a view), packed as ``pack`` says."""
    names = set(target)
    order = [n for n in t.names if n not in names] + [n for n in target if n in t.names]
    arranged = t.relabel([next(a for a in t.axes if a.name == n) for n in order])
    strided = bool(arranged.order) and arranged.order[-1] != arranged.names[-1]
    if not pack or arranged.contiguous or (pack == "strided" and not strided):
        return arranged
    return ctx.new(arranged.axes, grad=t.grad)


def _axis(t: Tensor, name: str) -> Any:
    return next(a for a in t.axes if a.name == name)
