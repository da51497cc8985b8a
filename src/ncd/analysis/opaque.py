"""Cost and backward rules for the importer's primitives: learned tensors, constants, views, opaque calls,
index computations.

An opaque box is an ATen call ``ncd`` does not understand: its cost is *measured* once
sizes are bound (the call runs under ``FlopCounterMode`` and ``saved_tensors_hooks`` on
random inputs of its traced shapes) and counts nothing while they are symbolic.

A gather's transpose is a scatter-add of the cotangent at the stored positions
(``gather tᵀ``, :class:`ncd.prims.derivative.GatherTransposeOp`), and that one's is the
gather again; argmax, comparisons and casts give indices or bools, so no gradient flows
through them: a float input gets zeros (what ``torch.autograd`` reports for an unused
input), a float output's cotangent is deleted.
"""

from __future__ import annotations

import math

import sympy

from ncd.analysis.backward import BoxBackward, cot, route
from ncd.analysis.cost import CostContext
from ncd.analysis.layout import Tensor
from ncd.analysis.tables import backward_rule, cost_rule, unsupported
from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq
from ncd.prims.derivative import GatherTransposeOp
from ncd.prims.gather import ArgMaxOp, ArithmeticOp, CastOp, CompareOp, GatherOp
from ncd.prims.opaque import ConstantOp, OpaqueOp, ParameterOp, ViewOp
from ncd.prims.structure import DeleteOp, ZerosOp


@cost_rule(ParameterOp)
def cost_parameter(ctx: CostContext) -> list[Tensor]:
    return [ctx.parameter(ctx.out_axes[0])]


@backward_rule(ParameterOp)
def backward_parameter(box: Box, builder: object) -> BoxBackward:
    """A learned tensor's cotangent is its gradient."""
    return BoxBackward((), Identity(cot(box.cod)), ("weight",))


@cost_rule(ConstantOp)
def cost_constant(ctx: CostContext) -> list[Tensor]:
    if ctx.prim.value is None:  # a buffer
        t = ctx.parameter(ctx.out_axes[0])
        return [Tensor(t.storage, t.axes, t.order, False, _dtype(ctx.prim.dtype))]
    return [ctx.new(ctx.out_axes[0], grad=False, dtype=_dtype(ctx.prim.dtype))]


def _dtype(name: str) -> str:
    return "bool" if name == "bool" else "index" if name.startswith(("int", "uint")) else "float"


@backward_rule(ConstantOp)
def backward_constant(box: Box, builder: object) -> BoxBackward:
    return BoxBackward((), Box(DeleteOp(cot(box.cod))) if len(cot(box.cod)) else Identity(cot(box.cod)))


@cost_rule(ViewOp)
def cost_view(ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    prim = ctx.prim
    if [a.size for a in prim.source] == [a.size for a in prim.target]:
        names = dict(zip(prim.source.names, prim.target.names))
        return [Tensor(x.storage, ctx.out_axes[0], tuple(names.get(n, n) for n in x.order), x.grad, x.dtype, x.dense)]
    if x.contiguous:
        return [Tensor(x.storage, ctx.out_axes[0], tuple(a.name for a in ctx.out_axes[0]), x.grad, x.dtype)]
    return [ctx.new(ctx.out_axes[0], grad=x.grad, dtype=x.dtype)]


@backward_rule(ViewOp)
def backward_view(box: Box, builder: object) -> BoxBackward:
    return BoxBackward((), Box(ViewOp(box.prim.target, box.prim.source)))


@cost_rule(OpaqueOp)
def cost_opaque(ctx: CostContext) -> list[Tensor]:
    outs = [ctx.new(axes, grad=ctx.grad and seg.dtype == "float", dtype=seg.dtype)
            for axes, seg in zip(ctx.out_axes, ctx.box.cod)]
    shapes = [[a.size for a in t.axes] for t in ctx.inputs]
    if any(getattr(s, "free_symbols", None) for shape in shapes for s in shape):
        return outs
    from ncd.limits import check_count
    from ncd.prims.opaque import check_shapes

    # the call runs on real tensors: they must fit the memory budget, and its results have the declared shapes
    check_count(f"cost of {ctx.box.text()}: the bytes of its inputs", sum(8 * math.prod(int(s) for s in shape)
                                                                        for shape in shapes), "memory")
    check_shapes(ctx.box.prim)  # type: ignore[arg-type]
    forward, backward, own, saved = _measure_opaque(ctx.box, [tuple(int(s) for s in shape) for shape in shapes],
                                                    [t.dtype for t in ctx.inputs])
    ctx.matmul(sympy.Integer(forward), sympy.Integer(backward))
    ctx.save(*(ctx.inputs[j] for j in own))
    for nbytes in saved:  # tensors the call made and autograd keeps: only their size is known
        t = ctx.new((), grad=False)
        ctx.walker.bytes[t.storage] = sympy.Integer(nbytes)
        ctx.save(t)
    return outs


def _measure_opaque(box: Box, shapes: list[tuple[int, ...]], dtypes: list[str]) -> tuple[int, int, list[int], list[int]]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ncd.prims.opaque import call_text

    xs = []
    for shape, dtype in zip(shapes, dtypes):
        if dtype == "float":
            xs.append(torch.randn(shape, requires_grad=True))
        elif dtype == "bool":
            xs.append(torch.ones(shape, dtype=torch.bool))
        else:
            xs.append(torch.zeros(shape, dtype=torch.long))
    inputs = {f"x{j}": x for j, x in enumerate(xs)}
    ptrs: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptrs.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    code = call_text(box.prim, list(inputs))  # type: ignore[arg-type]
    with FlopCounterMode(display=False) as forward, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = eval(code, {"torch": torch}, inputs)  # noqa: S307 - an ATen call of the diagram, with its own arguments
    outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(o, torch.Tensor) and o.requires_grad]
    with FlopCounterMode(display=False) as backward:
        if outs:
            torch.autograd.backward(outs, [torch.randn_like(o) for o in outs])
    own = {x.untyped_storage().data_ptr(): j for j, x in enumerate(xs)}
    kept = [own[p] for p in ptrs if p in own]
    saved = [n for p, n in ptrs.items() if p not in own and n]
    return int(forward.get_total_flops()), int(backward.get_total_flops()), kept, saved


unsupported("opaque", "an opaque ATen call has no known derivative rule", backward=True)


# -- index computations (ncd.prims.gather) -------------------------------------------------
@cost_rule(GatherOp)
def cost_gather(ctx: CostContext) -> list[Tensor]:
    """``take_along_dim`` counts no FLOPs; for the backward scatter autograd keeps the tensor and the positions
    broadcast to the output's shape (a new integer tensor)."""
    x = ctx.inputs[0]
    if x.grad:
        ctx.save(x, ctx.new(ctx.out_axes[0], grad=False, dtype="index"))
    return [ctx.new(ctx.out_axes[0], grad=x.grad, dtype=x.dtype)]


@cost_rule(ArgMaxOp)
@cost_rule(CompareOp)
@cost_rule(CastOp)
def cost_index_computation(ctx: CostContext) -> list[Tensor]:
    """Argmax, comparisons and casts of scalars: no FLOPs, nothing kept (no gradient flows through them)."""
    return [ctx.new(ctx.out_axes[0], grad=False, dtype=ctx.box.cod[0].dtype)]


@cost_rule(GatherTransposeOp)
def cost_gather_transpose(ctx: CostContext) -> list[Tensor]:
    """``zeros.scatter_add(-1, i, g)``: no FLOPs counted; autograd keeps the positions (a gather routes the gradient back)."""
    i, g = ctx.inputs
    if g.grad:
        ctx.save(i if i.contiguous else ctx.new(i.axes, grad=False, dtype="index"))
    ctx.other(g.numel, g.numel)
    return [ctx.output(0)]


@backward_rule(GatherOp)
def backward_gather(box: Box, builder: object) -> BoxBackward:
    """``gather tᵀ``: the cotangent added back at the stored positions (which get no gradient)."""
    prim = box.prim
    return BoxBackward((("in", 1),), Box(GatherTransposeOp(prim.axis, prim.positions)))


@backward_rule(GatherTransposeOp)
def backward_gather_transpose(box: Box, builder: object) -> BoxBackward:
    """The transpose of a scatter-add at positions is the gather at the same positions."""
    prim = box.prim
    segments = [prim.positions, Segment((prim.axis,))]
    return BoxBackward((("in", 0),), Seq.of(route(segments, [1, 0]), Box(GatherOp(prim.axis, prim.positions))))


@backward_rule(ArgMaxOp)
@backward_rule(CompareOp)
@backward_rule(CastOp)
def backward_index_computation(box: Box, builder: object) -> BoxBackward:
    """No gradient flows through an index or a bool: float inputs get zeros, a float output's cotangent is deleted.

    A cast between two float segments (``() -> ()``) passes the cotangent through.
    """
    into, out = cot(box.dom), cot(box.cod)
    if len(into) and len(out):  # float to float
        return BoxBackward((), Identity(out))
    parts: list[Diagram] = []
    if len(out):
        parts.append(Box(DeleteOp(out)))
    if len(into):
        parts.append(Box(ZerosOp(into)))
    return BoxBackward((), Seq.of(*parts) if parts else Identity(out))


# -- arithmetic with a Python number (ncd.prims.gather.ArithmeticOp) -------------------------
def _differentiable(prim: ArithmeticOp) -> bool:
    return prim.source.dtype == "float" and prim.target.dtype == "float" and prim.operator != "//"


@cost_rule(ArithmeticOp)
def cost_arithmetic(ctx: CostContext) -> list[Tensor]:
    """What autograd keeps: ``x ** c`` and ``min``/``max`` their input, ``c ** x`` its input and output, ``c / x`` (a reciprocal,
    then a product) the reciprocal; sums, differences and products with a number nothing."""
    prim = ctx.prim
    x = ctx.inputs[0]
    grad = x.grad and _differentiable(prim)
    y = ctx.like(0, x) if prim.target.dtype == prim.source.dtype else ctx.new(ctx.out_axes[0], grad=grad, dtype=prim.target.dtype)
    n = ctx.numel()
    if grad:
        if prim.operator == "**" and not prim.reflected or prim.operator in ("min", "max"):
            ctx.save(x)
        elif prim.operator == "**":
            ctx.save(x, y)
        elif prim.operator == "/" and prim.reflected:
            ctx.save(ctx.like(0, x))
    ctx.other(n, n if grad else sympy.Integer(0))
    return [y]


@backward_rule(ArithmeticOp)
def backward_arithmetic(box: Box, builder: object) -> BoxBackward:
    """Sums and differences pass the cotangent (negated for ``c − x``), products and quotients by ``c`` scale it; the
    others multiply it by their derivative, itself arithmetic on the stored input or output:
    ``(x^c)′ = c·x^(c−1)``, ``(c/x)′ = −c·x^−2``, ``(c^x)′ = ln c·c^x``, ``min/max``: ``[x ≷ c]``."""
    import math

    from ncd.prims.elementwise import MultiplyOp, ScaleOp
    from ncd.prims.gather import CompareOp

    prim = box.prim
    if not _differentiable(prim):
        return backward_index_computation(box, builder)
    scalar = Segment(())
    op, c = prim.operator, prim.value
    if op in ("+", "%") or op == "-" and not prim.reflected:
        return BoxBackward((), Identity(Type((scalar,))))
    if op in ("-", "*", "/") and (op != "/" or not prim.reflected):
        factor = -1 if op == "-" else c if op == "*" else 1 / c
        return BoxBackward((), Box(ScaleOp(sympy.sympify(float(factor) if isinstance(factor, bool) else factor))))
    if op == "**" and prim.reflected:
        port, derivative = ("out", 0), Box(ScaleOp(sympy.Float(math.log(c))))
    elif op == "**":
        port, derivative = ("in", 0), Seq.of(Box(ArithmeticOp("**", c - 1, scalar, scalar)), Box(ScaleOp(sympy.sympify(c))))
    elif op == "/":
        port, derivative = ("in", 0), Seq.of(Box(ArithmeticOp("**", -2, scalar, scalar)), Box(ScaleOp(sympy.sympify(-c))))
    else:
        relation = ">" if op == "max" else "<"
        port, derivative = ("in", 0), Seq.of(Box(CompareOp(relation, float(c), scalar)), Box(CastOp(Segment((), "bool"), scalar)))
    return BoxBackward((port,), Seq.of(Par.of(derivative, Identity(Type((scalar,)))), Box(MultiplyOp(2))))
