"""Cost and backward rules for learned linear maps, einsum wirings and the unit.

A learned linear map on trailing axes is ``nn.Linear``: one ``mm``/``addmm`` of
``2·batch·in·out`` FLOPs forward and, backward, one for the input's gradient and one for
the weight's; autograd keeps the input flattened to 2-D (the input itself when that is a
view, a copy otherwise).  Elsewhere it is an einsum with the weight, like any wiring.
An einsum replays ``torch.einsum`` (``ncd.analysis.layout.einsum``): each ``bmm`` costs
``2·∏`` of its sizes and is repeated backward once per operand that needs a gradient.
"""

from __future__ import annotations

import sympy

from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor, einsum, numel
from ncd.analysis.tables import cost_rule
from ncd.ir.axes import Axis
from ncd.ir.diagram import Box, Weave
from ncd.ir.weaving import Side, WeaveView
from ncd.prims.linear import EinsumOp, LinearOp, UnitOp


def markers(box: Box, woven: tuple[Weave, ...], side: Side, j: int) -> list[tuple[str, int]]:
    """The code layout of input/output ``j``: ``("own", k)`` or ``("woven", w)`` per axis (as lowering sees it)."""
    return WeaveView(box, woven).markers(side, j)


def _trailing(ctx: CostContext) -> bool:
    prim = ctx.prim
    dom, cod = markers(ctx.box, ctx.woven, "dom", 0), markers(ctx.box, ctx.woven, "cod", 0)
    n_in, n_out = len(prim.dom_axes), len(prim.cod_axes)
    return (all(m[0] == "own" for m in dom[len(dom) - n_in:]) and all(m[0] == "own" for m in cod[len(cod) - n_out:])
            and [m for m in dom if m[0] == "woven"] == [m for m in cod if m[0] == "woven"])


def tagged(name: str, suffix: str) -> str:
    """A distinct, valid axis name for ``name`` on one side of a learned map (bound axes ``(k h)`` included)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) + suffix


def _rename(axes: tuple[Axis, ...], names: dict[int, str]) -> tuple[Axis, ...]:
    return tuple(a.renamed(names[k]) if k in names else a for k, a in enumerate(axes))


@cost_rule(LinearOp)
def cost_linear(ctx: CostContext) -> list[Tensor]:
    prim = ctx.prim
    x = ctx.inputs[0]
    fan_in, fan_out = numel(prim.dom_axes.axes), numel(prim.cod_axes.axes)
    batch = x.numel / fan_in
    if prim.bias:
        ctx.other(batch * fan_out, batch * fan_out)
    if _trailing(ctx):
        n_in = len(prim.dom_axes)
        own_in = [a.name for a in x.axes[len(x.axes) - n_in:]]
        flat = x if x.merges([own_in]) else ctx.new(x.axes, grad=x.grad)
        if len(flat.axes) - n_in + 1 > 2 and not flat.contiguous:
            flat = ctx.new(x.axes, grad=x.grad)  # matmul folds the batch axes with reshape: a copy
        flops = 2 * batch * fan_in * fan_out
        ctx.matmul(flops, flops * (1 + int(x.grad)))
        ctx.save(flat)
        if x.grad:
            ctx.other(sympy.Integer(0), sympy.Integer(0))
        return [ctx.output(0)]
    # an einsum with a view of the weight: '...{in},{out}{in}->...{out}'
    dom_pos = [k for k, m in enumerate(markers(ctx.box, ctx.woven, "dom", 0)) if m[0] == "own"]
    cod_pos = [k for k, m in enumerate(markers(ctx.box, ctx.woven, "cod", 0)) if m[0] == "own"]
    shift_in = len(x.axes) - len(markers(ctx.box, ctx.woven, "dom", 0))
    shift_out = len(ctx.out_axes[0]) - len(markers(ctx.box, ctx.woven, "cod", 0))
    ins = {shift_in + p: tagged(a.name, "_in") for p, a in zip(dom_pos, prim.dom_axes)}
    outs = {shift_out + p: tagged(a.name, "_out") for p, a in zip(cod_pos, prim.cod_axes)}
    xr = Tensor(x.storage, _rename(x.axes, ins), tuple(ins.get(x.names.index(n), n) for n in x.order), x.grad, x.dtype)
    weight = ctx.parameter(tuple(a.renamed(tagged(a.name, "_out")) for a in prim.cod_axes)
                           + tuple(a.renamed(tagged(a.name, "_in")) for a in prim.dom_axes))
    out_axes = _rename(ctx.out_axes[0], outs)
    result = _einsum(ctx, [xr, weight], out_axes)
    back = {new: old.name for new, old in zip((a.name for a in out_axes), ctx.out_axes[0])}
    return [Tensor(result.storage, ctx.out_axes[0], tuple(back.get(n, n) for n in result.order), result.grad)]


def _einsum(ctx: CostContext, operands: list[Tensor], out_axes: tuple[Axis, ...]) -> Tensor:
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
    return [tuple(p) for p in path]  # type: ignore[misc]


@cost_rule(EinsumOp)
def cost_einsum(ctx: CostContext) -> list[Tensor]:
    return [_einsum(ctx, list(ctx.inputs), ctx.out_axes[0])]


@cost_rule(UnitOp)
def cost_unit(ctx: CostContext) -> list[Tensor]:
    return [ctx.new(ctx.out_axes[0], grad=False)]


# -- backward ------------------------------------------------------------------------------
from ncd.analysis.backward import BoxBackward, batched_rule, cot, route, woven_leading  # noqa: E402
from ncd.analysis.tables import backward_rule  # noqa: E402
from ncd.ir.axes import Segment, Type  # noqa: E402
from ncd.ir.diagram import Identity, Par, Seq  # noqa: E402
from ncd.prims.derivative import DiagonalOp, ExpandOp, LinearTransposeOp, LinearWeightGradOp, weight_segment  # noqa: E402
from ncd.prims.structure import DeleteOp  # noqa: E402


def learned_map_backward(x: Segment, g: Segment, bias: bool, batch: tuple[Axis, ...] = ()) -> BoxBackward:
    """``∂x = Lᵀ g`` (the weight an explicit input), ``∂W = Σ_batch g ⊗ x`` (one contraction), ``∂b = Σ_batch g``."""
    w = weight_segment(x, g)
    xb, gb = Segment(batch + x.axes), Segment(batch + g.axes)
    picks = [2, 1, 0, 2] + ([2] if bias else [])
    d_bias = Box(EinsumOp(Type((gb,)), g)) if batch else Identity(Type((g,)))
    parts = [woven_leading(Box(LinearTransposeOp(x, g)), batch, (0, None)),
             Box(LinearWeightGradOp(x, g, Segment(batch)))] + ([d_bias] if bias else [])
    grads = ("weight", "bias") if bias else ("weight",)
    return BoxBackward((("in", 0), ("param", "weight")), Seq.of(route([xb, w, gb], picks), Par.of(*parts)), grads)


@backward_rule(LinearOp)
@batched_rule
def backward_linear(box: Box, builder: object, batch: tuple[Axis, ...] = ()) -> BoxBackward:
    """``∂x = Lᵀ g`` (the weight an explicit input), ``∂W = g ⊗ x``, ``∂b = g`` (contracted over woven axes)."""
    prim = box.prim
    return learned_map_backward(prim.dom_axes, prim.cod_axes, prim.bias, batch)


@backward_rule(EinsumOp)
def backward_einsum(box: Box, builder: object) -> BoxBackward:
    """The transposed wiring for each input: ``∂x_i = einsum(g, x_j≠i -> x_i)``, copied onto axes it summed away."""
    prim = box.prim
    inputs = list(prim.inputs)
    n = len(inputs)
    stored = tuple(("in", j) for j in range(n)) if n > 1 else ()
    segments = (inputs if n > 1 else []) + [prim.output]
    g = len(segments) - 1
    picks: list[int] = []
    parts = []
    for i, target in enumerate(inputs):
        sources = [prim.output] + [inputs[j] for j in range(n) if j != i]
        picks += [g] + ([j for j in range(n) if j != i] if n > 1 else [])
        known = {a.name for s in sources for a in s}
        distinct = target.with_axes(a for k, a in enumerate(target) if a.name not in target.names[:k])
        reachable = distinct.with_axes(a for a in distinct if a.name in known)
        part = Box(EinsumOp(Type(tuple(sources)), reachable))
        if len(reachable) != len(distinct):
            part = Seq.of(part, Box(ExpandOp(reachable, distinct)))
        if len(distinct) != len(target):  # a repeated wire: the transpose of taking the diagonal
            part = Seq.of(part, Box(DiagonalOp(distinct, target)))
        parts.append(part)
    used = set(picks)
    for j in range(len(segments)):
        if j not in used:  # pragma: no cover - every stored input is used by another's gradient
            picks.append(j)
            parts.append(Box(DeleteOp(Type((segments[j],)))))
    return BoxBackward(stored, Seq.of(route(segments, picks), Par.of(*parts)))


@backward_rule(UnitOp)
def backward_unit(box: Box, builder: object) -> BoxBackward:
    """The cup has no input: its cotangent is discarded."""
    return BoxBackward((), Box(DeleteOp(cot(box.cod))))


_ = Segment
