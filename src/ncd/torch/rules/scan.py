"""Lowering of the scan (:mod:`ncd.prims.scan`): a Python loop over the time axis, the body inlined.

The body is written once, inside ``for step in range(T):`` in the enclosing module, so its
parameters are attributes of that module and every step shares them.  Each step reads
``x.select(dim, step)`` of the scanned inputs, threads the states through local variables and
appends its outputs to lists stacked after the loop::

    state = state0
    ys = []
    for step in range(64):
        x_t = x.select(-2, step)
        ...                      # the body
        state = state_next
        ys.append(y_t)
    y = torch.stack(ys, dim=-2)
"""

from __future__ import annotations

from ncd.ir.program import Op
from ncd.prims.scan import ScanOp, inline
from ncd.torch.rules import RuleContext, Value, register


@register(ScanOp)
def lower_scan(ctx: RuleContext) -> list[str]:
    from ncd.torch.codegen import Codegen

    prim: ScanOp = ctx.prim  # type: ignore[assignment]
    em = ctx.em
    steps = ctx.int(prim.axis.size, f"length of the scan over {prim.axis.name}")
    if steps < 1:
        raise ctx.fail(f"the time axis {prim.axis.name} has {steps} positions; a scan needs at least one")
    c, k = prim.consts, prim.carry
    consts, carries, xs = ctx.args[:c], ctx.args[c:c + k], ctx.args[c + k:]
    body = prim.body
    states = []
    for j, v in enumerate(carries):
        var = em.fresh("state" if k == 1 else f"state{j}")
        em.line(f"{var} = {v.var}")
        states.append(Value(var, body.dom[c + j].axes, v.dtype))
    n_y = len(body.cod) - k
    lists = [em.fresh("ys" if n_y == 1 else f"ys{j}") for j in range(n_y)]
    for name in lists:
        em.line(f"{name} = []")
    step = em.fresh("step")
    header = f"for {step} in range({steps - 1}, -1, -1):" if prim.reverse else f"for {step} in range({steps}):"
    mark = len(em.function.ops)
    slices = []
    for v, pos, seg in zip(xs, prim.x_pos, body.dom.segments[c + k:]):
        var = em.fresh(f"{v.var}_t")
        em.line(f"{var} = {v.var}.select({pos - len(v.axes)}, {step})")
        slices.append(Value(var, seg.axes, v.dtype))
    results = Codegen().lower(inline(body), em, [*consts, *states, *slices])
    for s, r in zip(states, results[:k]):
        if s.var != r.var:
            em.line(f"{s.var} = {r.var}")
    for name, r in zip(lists, results[k:]):
        em.line(f"{name}.append({r.var})")
    inside = em.function.ops[mark:]  # the step's ops become one loop op of the program
    del em.function.ops[mark:]
    code = "\n".join([header] + ["    " + line for op in inside for line in op.lines()])
    args = tuple(dict.fromkeys(v for op in inside for v in op.args if v.var in {a.var for a in ctx.args} | set(lists)))
    em.emit(Op("loop", "for", args, tuple(states), code, box=em.current))
    outs = [s.var for s in states]
    for name, pos, seg in zip(lists, prim.y_pos, body.cod.segments[k:]):
        if prim.reverse:
            em.line(f"{name}.reverse()")
        outs.append(f"torch.stack({name}, dim={pos - len(seg) - 1})")
    return outs
