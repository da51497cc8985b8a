"""Costs of the scan (:mod:`ncd.prims.scan`): ``T x`` one step of the body, as the lowered loop runs it.

One step is walked with the shared cost walker; its FLOPs count ``T`` times (the loop's selects
and the final stack are views and copies: no FLOPs).  What autograd keeps is counted by storage,
as ``torch`` keeps it: a tensor the step reads unchanged (a constant) once, a state once per step
— the state a step saves is the one the step before made, so when both save it, it counts once
plus the initial state — and everything else the step makes once per step.  Parameters of the
body count once (every step shares them).  The backward of a scan is not supported yet.
"""

from __future__ import annotations

import sympy

from ncd.analysis.cost import CostContext, Metrics, _Walker
from ncd.analysis.layout import Tensor
from ncd.analysis.tables import cost_rule, unsupported
from ncd.prims.scan import ScanOp, inline

unsupported("scan", "the backward of a recurrence (a reverse scan over the time axis) is not derived yet;"
            " lower the model and use torch.autograd", backward=True)


@cost_rule(ScanOp)
def cost_scan(ctx: CostContext) -> list[Tensor]:
    prim: ScanOp = ctx.prim
    c, k = prim.consts, prim.carry
    body = prim.body
    outer = ctx.walker
    n_frame = len(ctx.out_axes[0]) - len(ctx.box.cod[0]) if ctx.out_axes else 0
    frame = tuple(ctx.out_axes[0][:n_frame]) if ctx.out_axes else ()
    sub = _Walker(outer.itemsize, outer.training)
    sub.blocks = list(outer.blocks)
    inputs = []
    for t, seg in zip(ctx.inputs, body.dom):
        lead = tuple(a for a in t.axes if a.name in {f.name for f in frame})
        axes = lead + seg.axes
        inputs.append(sub.allocate(axes, tuple(a.name for a in axes), t.grad, t.dtype))
    results = sub.walk(inline(body), inputs, frame)
    steps = prim.axis.size
    step = Metrics.total([b.metrics for b in sub.boxes])
    for name in ("forward_matmul", "forward_other", "backward_matmul", "backward_other", "counter_excess"):
        setattr(ctx.metrics, name, getattr(ctx.metrics, name) + steps * getattr(step, name))
    if outer.training:
        ctx.metrics.activation_bytes += _saved_bytes(sub, inputs, results, c, k, steps)
    outs = [ctx.output(j) for j in range(len(ctx.out_axes))]
    return outs


def _saved_bytes(sub: _Walker, inputs: list[Tensor], results: list[Tensor], c: int, k: int,
                 steps: sympy.Expr) -> sympy.Expr:
    consts = {t.storage for t in inputs[:c]}
    states_in = [t.storage for t in inputs[c:c + k]]
    total: sympy.Expr = sympy.Integer(0)
    for sid in sub.saved:
        size = sub.bytes[sid]
        if sid in consts:
            total += size
        elif sid in states_in:
            j = states_in.index(sid)
            made_and_saved = results[j].storage in sub.saved and results[j].storage != sid
            total += size if (made_and_saved or results[j].storage == sid) else steps * size
        else:
            total += steps * size
    return total
