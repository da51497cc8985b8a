"""Attention: the cost of the fused ``scaled_dot_product_attention``.

The program's fusion rewrite (:func:`ncd.torch.fusion.fuse_attention`) replaces the steps of a
softmax-then-contract attention by one ``fused`` step (:class:`ncd.ir.program.Step`, with the pattern) calling
``F.scaled_dot_product_attention``; the cost analysis reads that step, so it costs exactly the calls the
generated code makes.  Costs are those of PyTorch's *math* backend (the one ``FlopCounterMode`` can see;
measure under ``sdpa_kernel(SDPBackend.MATH)``): the products are the SDPA call's row of
:mod:`ncd.analysis.targets`, read off its query, key and value arguments (two batched products of
``2·B·L·S·E`` and ``2·B·L·S·Ev`` FLOPs, each repeated twice backward); autograd keeps the scaled queries and keys (new
tensors), the attention weights, and the values folded to ``(B, S, Ev)`` (a view when
their batch axes are adjacent in memory, a copy otherwise).
"""

from __future__ import annotations

from typing import Any

import sympy

from ncd.analysis.cost import BoxCost, CostContext, Metrics
from ncd.analysis.layout import Tensor, numel
from ncd.ir.diagram import Diagram
from ncd.ir.program import Op, Value
from ncd.prims.patterns import packs

__all__ = ["fused_attention"]


def fused_attention(walker: Any, pattern: Any, parts: list[Diagram], values: list[Tensor],
                    ops: tuple[Op, ...] = (), outputs: tuple[Value, ...] = ()) -> list[Tensor]:
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
    ctx.other(q.numel + k.numel + 4 * scores + (scores if pattern.causal or pattern.mask else 0),
              q.numel + k.numel + 4 * scores)
    q, k, v = (_packed(ctx, t, pattern.stored.get(j, have), target,
                       given=j not in pattern.stored and t.storage in walker.given and _moved(have, target))
               for t, (j, have, target) in zip((q, k, v), pattern.operands()))
    ctx.save(ctx.new(q.axes, grad=True), ctx.new(k.axes, grad=True))
    ctx.save(ctx.new(tuple(a for a in out_axes if a.name in batch + pattern.query) + (_axis(v, pattern.key),), grad=True))
    folded = v if v.merges([batch, [pattern.key], list(pattern.value)]) else ctx.new(v.axes, grad=v.grad)
    ctx.save(folded)
    out = ctx.new(out_axes, _written(q, batch, pattern, training=walker.training), grad=True)
    walker.boxes.append(BoxCost("attention (SDPA)", "sdpa", tuple(walker.blocks), metrics))
    return [out]


def _moved(have: list[str], target: list[str]) -> bool:
    """Whether arranging an operand for SDPA moves its axes (lowering then asks its stride, if the caller gave it)."""
    return [n for n in target if n in have] != list(have)


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


def _packed(ctx: CostContext, t: Tensor, stored: list[str], target: list[str], given: bool = False) -> Tensor:
    """An operand as SDPA receives it: packed densely in ``target`` order when lowering packs it
    (:func:`ncd.prims.patterns.packs` of its ``stored`` order; ``.contiguous()`` copies unless it already is
    dense that way).  An operand ``given`` to the generated class is packed only if its last dimension would be
    strided (the lowering asks at run time): then its storage order decides."""
    if given:
        stored = [n for n in t.order if n in target]
    if not packs(stored, target):
        return t
    names = set(target)
    order = [n for n in t.names if n not in names] + [n for n in target if n in t.names]
    arranged = t.relabel([next(a for a in t.axes if a.name == n) for n in order])
    if arranged.contiguous:
        return arranged
    return ctx.new(arranged.axes, grad=t.grad)


def _axis(t: Tensor, name: str) -> Any:
    return next(a for a in t.axes if a.name == name)
