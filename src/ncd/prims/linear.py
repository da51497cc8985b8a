"""Linear wiring: learned linear maps **L** / **L₊**, einsum wirings, and the unit (cup, in :mod:`ncd.prims.unit`).

Every rule of the family lives here (:mod:`ncd.ir.rules`): lowering, cost, backward and import.
The einsum's backward is derived from its kind (:func:`ncd.prims.kinds.partials`).

Einsum specs name axes with spaces between them, like the text form of types:
``"y k h, x k h -> y x h"`` contracts ``k``, keeps ``h`` on a diagonal and takes the
outer product over ``y`` and ``x``.

>>> import ncd
>>> L = ncd.Linear("m -> k h", bias=True, name="Q")
>>> L.text(), str(L.dom), str(L.cod)
('L₊^Q', 'm', 'k h')
>>> e = ncd.Einsum("y k h, x k h -> y x h")
>>> str(e.dom), str(e.cod)
('y k h, x k h', 'y x h')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir import weaving
from ncd.ir.axes import Axis, Segment, Type, numel, parse_type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.program import LinearCall
from ncd.ir.rules import BACKWARD, BATCHED_BACKWARD, COST, IMPORT, LOWERING, BoxBackward
from ncd.ir.size import Size, size_text, sizes_equal
from ncd.ir.weaving import Side, WeaveView, WovenAxis, einsum_letters
from ncd.prims.contraction import contraction_plan, kept_axes, plan_sizes
from ncd.prims.einsum_cups import _cupless_pairs, _diagonal_read, _made_one
from ncd.prims.kinds import partials
from ncd.prims.stored_order import _sizes, _stored_columns, _stored_rows
from ncd.prims.unit import Unit, UnitOp

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.ir.program import Value
    from ncd.torch.codegen import ClassEmitter
    from ncd.torch.rules import Expr, RuleContext

__all__ = ["LinearOp", "EinsumOp", "UnitOp", "Linear", "Einsum", "Unit", "split_spec", "linear_module", "markers", "tagged",
           "learned_map_backward"]


def split_spec(spec: str, what: str) -> tuple[str, str]:
    if not isinstance(spec, str) or spec.count("->") != 1:
        raise ParseError(f"{what} spec {spec!r} must have the form 'inputs -> outputs', e.g. 'm -> k h'")
    left, right = spec.split("->")
    return left.strip(), right.strip()


@dataclass(frozen=True)
class LinearOp(Primitive):
    """A learned linear map from the axes ``dom_axes`` to ``cod_axes`` (with bias: **L₊**)."""

    dom_axes: Segment
    cod_axes: Segment
    bias: bool = False

    op: ClassVar[str] = "linear"
    weave_policy = weaving.always
    family: ClassVar[str] = "linear"
    kind: ClassVar[Kind] = "linear"
    learned: ClassVar[bool] = True

    def signature(self) -> tuple[Type, Type]:
        return Type((self.dom_axes,)), Type((self.cod_axes,))

    def params(self) -> dict[str, tuple[Size, ...]]:
        shapes: dict[str, tuple[Size, ...]] = {"weight": self.cod_axes.sizes + self.dom_axes.sizes}
        if self.bias:
            shapes["bias"] = self.cod_axes.sizes
        return shapes

    def label(self) -> str:
        return "L₊" if self.bias else "L"


@dataclass(frozen=True)
class EinsumOp(Primitive):
    """A multilinear wiring: inputs ``inputs`` (one segment each), output axes ``output``.

    Axes are identified by name: a name shared by inputs and kept in the output is a
    diagonal, shared and dropped is a contraction, present in one input only and kept is
    an outer product, and a reordering is a transpose.
    """

    inputs: Type
    output: Segment

    op: ClassVar[str] = "einsum"
    weave_policy = weaving.always
    repeated_axes: ClassVar[bool] = True
    family: ClassVar[str] = "linear"
    kind: ClassVar[Kind] = "multilinear"

    def __post_init__(self) -> None:
        known: dict[str, Axis] = {}
        for seg in self.inputs:
            for a in seg:
                if a.name in known and not sizes_equal(known[a.name].size, a.size):
                    raise SizeError(
                        f"einsum '{self.spec()}': axis {a.name} has size {size_text(known[a.name].size)}"
                        f" in one input and {size_text(a.size)} in another"
                    )
                known.setdefault(a.name, a)
        for a in self.output:
            if a.name not in known:
                raise ParseError(f"einsum '{self.spec()}': output axis {a.name} is in no input")
        if len(set(self.output.names)) != len(self.output.names):
            raise ParseError(f"einsum '{self.spec()}': an output axis occurs twice")

    def signature(self) -> tuple[Type, Type]:
        return self.inputs, Type((self.output,))

    def spec(self) -> str:
        return f"{', '.join(' '.join(s.names) for s in self.inputs)} -> {' '.join(self.output.names)}"

    def label(self) -> str:
        return "einsum"

    @property
    def contracted(self) -> tuple[str, ...]:
        out = set(self.output.names)
        seen: list[str] = []
        for seg in self.inputs:
            for n in seg.names:
                if n not in out and n not in seen:
                    seen.append(n)
        return tuple(seen)

    def pairs(self) -> tuple[tuple[int, int], ...]:
        """The order in which three or more operands are contracted, one pair at a time (``()`` for fewer).

        Lowering writes one ``torch.einsum`` of two operands per pair and the cost analysis costs each
        of them, so the program that runs is the program costed.  When every size is a number (a bound
        diagram, or symbolic sizes inside :func:`ncd.prims.contraction.planned_at`) the plan is the one of
        fewest FLOPs at those sizes; otherwise it reads the axis names only (:func:`contraction_plan`).

        >>> Einsum("a b, b c, c d -> a d").prim.pairs()
        ((0, 1), (0, 1))
        >>> Einsum("a:50 b:2, b:2 c:50, c:50 d:50 -> a d").prim.pairs()
        ((1, 2), (0, 1))
        """
        if len(self.inputs) < 3:
            return ()
        names = [seg.names for seg in self.inputs]
        sizes = plan_sizes([(a.name, a.size) for seg in self.inputs for a in seg])
        return contraction_plan(names, self.output.names, sizes)


def Linear(spec: str, bias: bool = False, name: str | None = None) -> Box:
    """A learned linear map **L** (``bias=True``: **L₊**), e.g. ``Linear("m -> k h")``.

    It is broadcast over every axis it does not touch when composed after a larger tensor.
    """
    left, right = split_spec(spec, "linear")
    dom, cod = parse_type(left), parse_type(right)
    if len(dom) != 1 or len(cod) != 1:
        raise ParseError(f"linear spec {spec!r} must map one segment to one segment")
    if not dom[0].axes or not cod[0].axes:
        raise ParseError(f"linear spec {spec!r} needs at least one axis on each side")
    return Box.make(LinearOp(dom[0], cod[0], bool(bias)), name)


def Einsum(spec: str, name: str | None = None) -> Box:
    """A multilinear wiring, e.g. ``Einsum("y k h, x k h -> y x h")`` (sizes may be given as ``k:64``)."""
    left, right = split_spec(spec, "einsum")
    try:
        inputs = parse_type(left)
    except ParseError as error:
        raise ParseError(f"einsum spec {spec!r}: {error}") from None
    if not inputs.segments:
        raise ParseError(f"einsum spec {spec!r} has no inputs; use ncd.Unit for the cup")
    known = {a.name: a for seg in inputs for a in seg}
    out_names = parse_type(right)
    if len(out_names) > 1:
        raise ParseError(f"einsum spec {spec!r} must have a single output segment")
    output = Segment(tuple(known.get(a.name, a) for a in (out_names[0] if out_names.segments else ())))
    return Box.make(EinsumOp(inputs, output), name)


# -- lowering ------------------------------------------------------------------------------------
# A learned linear map is an ``nn.Linear`` over the flattened input and output axes (so weights load
# straight from ``torch.nn`` models); on trailing axes it is called directly, as hand-written code would,
# otherwise it becomes an einsum on a view of the weight.  Einsums keep woven axes as extra letters; three or
# more operands are contracted one pair at a time in the order of :meth:`EinsumOp.pairs` (``ncd.prims.contraction``).
def _letters(names: list[list[str]], box: Box) -> dict[str, str]:
    """A letter of torch.einsum's 52 per distinct axis name (in ``names``' order); more is an ncd error naming the box."""
    table = list(dict.fromkeys(n for group in names for n in group))
    return dict(zip(table, einsum_letters(len(table), box, table)))


def _product(values: list[int]) -> int:
    result = 1
    for v in values:
        result *= v
    return result


def linear_module(em: ClassEmitter, prim: LinearOp, label: str | None) -> str:
    """Declare the ``nn.Linear`` holding a learned linear map's weights (flattened axes, torch layout)."""
    fan_in, fan_out = _product(_sizes(prim.dom_axes)), _product(_sizes(prim.cod_axes))
    hint = ("L_plus" if prim.bias else "L") + (f"_{label}" if label else "")
    return em.attr(hint, f"nn.Linear({fan_in}, {fan_out}, bias={prim.bias})".replace(", bias=True", ""))


@LOWERING.rule(LinearOp)
def lower_linear(prim: LinearOp, ctx: RuleContext) -> list[Expr]:
    from ncd.torch.rules import Expr

    n_in, n_out = len(prim.dom_axes), len(prim.cod_axes)
    ins, outs = _sizes(prim.dom_axes), _sizes(prim.cod_axes)
    module = linear_module(ctx.em, prim, ctx.box.label)
    x = ctx.args[0]
    if on_trailing_axes(ctx.box, ctx.woven):  # a plain nn.Linear call (the cost rule reads which from the op)
        cols = ctx.em.cols.get(id(ctx.box))
        seen = x if cols is None else _stored_columns(ctx, prim, module, x, cols)
        call = ctx.module(module, seen if n_in == 1 else ctx.method(seen, "flatten", -n_in))
        stored = ctx.em.rows.get(id(ctx.box))
        # what the op calls, typed (``ncd.analysis.targets``): F.linear with the weight's shape, the order it reads its
        # argument's axes and writes the product's (ncd.ir.program.LinearCall), whatever views follow
        runs = LinearCall(cols or prim.dom_axes.names, stored or prim.cod_axes.names)
        options = (("function", "linear"), ("weight", (numel(prim.cod_axes.axes), numel(prim.dom_axes.axes))),
                   ("linear", runs))
        if stored is not None:
            return [replace(_stored_rows(ctx, prim, module, call, stored), options=options)]
        return [replace(call if n_out == 1 else ctx.method(call, "unflatten", -1, tuple(outs)), options=options)]
    letters = _letters([[a.name + "_in" for a in prim.dom_axes], [a.name + "_out" for a in prim.cod_axes]], ctx.box)
    own_in = [letters[a.name + "_in"] for a in prim.dom_axes]
    own_out = [letters[a.name + "_out"] for a in prim.cod_axes]
    subs = ctx.subscripts([own_in], own_out)
    weight_spec = "".join(own_out + own_in)
    lhs, rhs = subs.split("->")
    # the weight seen with the box's axes, a value of the program: the einsum is a typed op of two operands
    weight = ctx.bind(Expr(f"{module}.weight.view({', '.join(map(str, outs + ins))})", "view", "Tensor.view"),
                      prim.cod_axes.axes + prim.dom_axes.axes, "weight")
    expr = ctx.einsum(f"{lhs},{weight_spec}->{rhs}", x, weight)
    if prim.bias:
        layout = ctx.markers("cod", 0)
        first = min(i for i, (kind, _) in enumerate(layout) if kind == "own")
        shape = [outs[k] if kind == "own" else 1 for kind, k in layout[first:]]
        product = ctx.bind(expr, ctx.out_axes[0], "product")
        expr = Expr(f"{product.var} + {module}.bias.view({', '.join(map(str, shape))})", "expr", "", (product,))
    return [expr]


@LOWERING.rule(EinsumOp)
def lower_einsum(prim: EinsumOp, ctx: RuleContext) -> list[Expr]:
    letters = _letters([list(seg.names) for seg in prim.inputs], ctx.box)
    own_in = [[letters[n] for n in seg.names] for seg in prim.inputs]
    own_out = [letters[n] for n in prim.output.names]
    subscripts = ctx.subscripts(own_in, own_out)
    if len(prim.inputs) > 1 and (read := _diagonal_read(ctx, subscripts)) is not None:
        if not isinstance(read, tuple):
            return [read]
        cups, subscripts = read  # cups beside three or more operands: the others' pairs, each cup's letters made one
    elif len(prim.inputs) < 3:
        return [ctx.einsum(subscripts, *ctx.args)]
    else:
        cups = ()
    # three or more operands: one einsum per pair of the plan, each product bound to a local
    lhs, rhs = subscripts.split("->")
    layouts = [spec[3:] for spec in lhs.split(",")]  # after "..."
    axis_of = {letters[a.name]: a for seg in prim.inputs for a in seg}
    axis_of.update(zip(ctx.woven_letters(own_in, own_out), (w.axis for w in ctx.woven)))
    operands: list[Value | Expr] = [a for j, a in enumerate(ctx.args) if j not in cups]
    pairs = _cupless_pairs(prim, cups) if cups else prim.pairs()
    for step, (i, j) in enumerate(pairs):
        kept = kept_axes(layouts, i, j, rhs[3:])
        product = ctx.einsum(f"...{layouts[i]},...{layouts[j]}->...{''.join(kept)}", operands[i], operands[j])
        if step == len(pairs) - 1:
            return [replace(product, options=(*product.options, ("unread", cups))) if cups else product]
        value = ctx.bind(product, tuple(axis_of[c] for c in kept), "contracted")
        layouts = [o for k, o in enumerate(layouts) if k not in (i, j)] + ["".join(kept)]
        operands = [o for k, o in enumerate(operands) if k not in (i, j)] + [value]
    raise AssertionError("a plan of three or more operands has a last pair")


# -- costs ---------------------------------------------------------------------------------------
# On trailing axes a learned map is ``nn.Linear``: one ``mm``/``addmm`` of ``2·batch·in·out`` FLOPs
# forward and, backward, one for the input's gradient and one for the weight's; autograd keeps the input
# flattened to 2-D (the input itself when that is a view, a copy otherwise).  Elsewhere it is an einsum
# with the weight, like any wiring, costed as ``torch.einsum`` runs it (``ncd.analysis.linear``).
def markers(box: Box, woven: Sequence[WovenAxis], side: Side, j: int) -> list[tuple[str, int]]:
    """The code layout of input/output ``j``: ``("own", k)`` or ``("woven", w)`` per axis (as lowering sees it)."""
    return WeaveView(box, woven).markers(side, j)


def tagged(name: str, suffix: str) -> str:
    """A distinct, valid axis name for ``name`` on one side of a learned map (bound axes ``(k h)`` included)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) + suffix


def _rename(axes: tuple[Axis, ...], names: dict[int, str]) -> tuple[Axis, ...]:
    return tuple(a.renamed(names[k]) if k in names else a for k, a in enumerate(axes))


def on_trailing_axes(box: Box, woven: Sequence[WovenAxis]) -> bool:
    """Whether a learned map's own axes trail its input and output (it lowers to a plain ``nn.Linear`` call)."""
    assert isinstance(box.prim, LinearOp)
    dom, cod = markers(box, woven, "dom", 0), markers(box, woven, "cod", 0)
    n_in, n_out = len(box.prim.dom_axes), len(box.prim.cod_axes)
    return (all(m[0] == "own" for m in dom[len(dom) - n_in:]) and all(m[0] == "own" for m in cod[len(cod) - n_out:])
            and [m for m in dom if m[0] == "woven"] == [m for m in cod if m[0] == "woven"])


@COST.rule(LinearOp)
def cost_linear(prim: LinearOp, ctx: CostContext) -> list[Tensor]:
    from ncd.analysis.layout import Tensor, numel
    from ncd.analysis.linear import einsum_cost
    from ncd.analysis.tables import AnalysisError
    from ncd.analysis.targets import target_of

    x = ctx.inputs[0]
    fan_in, fan_out = numel(prim.dom_axes.axes), numel(prim.cod_axes.axes)
    batch = x.numel / fan_in
    if prim.bias:
        ctx.other(batch * fan_out, batch * fan_out)
    calls = [op for op in ctx.ops if target_of(op) == "linear"]
    if calls:  # the program called its nn.Linear: what the call runs is typed on the op
        call = ctx.call_to("linear")
        runs = call.option("linear")
        if not isinstance(runs, LinearCall):
            raise AnalysisError(f"cost of {ctx.box.text()}: the op {call.code!r} does not type what F.linear runs")
        lead = x.axes[: len(x.axes) - len(runs.reads)]
        x = x.relabel(lead + tuple(next(a for a in x.axes if a.name == n) for n in runs.reads))  # a view
        lead_names = [a.name for a in lead]
        # flatten the read dims, then ATen's fold of the leading ones: the 2-D argument mm keeps, a copy unless both merge
        groups = [list(runs.reads)] + ([lead_names] if len(lead) > 1 else [])
        flat = x if x.merges(groups) else ctx.new(x.axes, grad=x.grad)
        ctx.charge(call, [tuple(a.size for a in x.axes)], grads=(x.grad, True))  # what it calls
        ctx.save(flat)
        if x.grad:
            ctx.other(sympy.Integer(0), sympy.Integer(0))
        names = [a.name for a in ctx.out_axes[0]]  # the product stored in the order of the weight's rows
        return [ctx.output(0, names[: len(names) - len(runs.writes)] + list(runs.writes))]
    # an einsum with a view of the weight: '...{in},{out}{in}->...{out}'
    dom_pos = [k for k, m in enumerate(markers(ctx.box, ctx.woven, "dom", 0)) if m[0] == "own"]
    cod_pos = [k for k, m in enumerate(markers(ctx.box, ctx.woven, "cod", 0)) if m[0] == "own"]
    shift_in = len(x.axes) - len(markers(ctx.box, ctx.woven, "dom", 0))
    shift_out = len(ctx.out_axes[0]) - len(markers(ctx.box, ctx.woven, "cod", 0))
    ins = {shift_in + p: tagged(a.name, "_in") for p, a in zip(dom_pos, prim.dom_axes)}
    outs = {shift_out + p: tagged(a.name, "_out") for p, a in zip(cod_pos, prim.cod_axes)}
    order = tuple(ins.get(x.names.index(n), n) if n in x.names else n for n in x.order)  # a gap (slices) kept
    xr = Tensor(x.storage, _rename(x.axes, ins), order, x.grad, x.dtype)
    weight = ctx.parameter(tuple(a.renamed(tagged(a.name, "_out")) for a in prim.cod_axes)
                           + tuple(a.renamed(tagged(a.name, "_in")) for a in prim.dom_axes))
    out_axes = _rename(ctx.out_axes[0], outs)
    result = einsum_cost(ctx, [xr, weight], out_axes)
    back = {new: old.name for new, old in zip((a.name for a in out_axes), ctx.out_axes[0])}
    return [Tensor(result.storage, ctx.out_axes[0], tuple(back.get(n, n) for n in result.order), result.grad)]


@COST.rule(EinsumOp)
def cost_einsum(prim: EinsumOp, ctx: CostContext) -> list[Tensor]:
    from ncd.analysis.linear import einsum_cost

    calls = [op for op in ctx.ops if op.target == "torch.einsum"]
    unread = calls[-1].option("unread") if calls else None  # cups' identities not read (:func:`_diagonal_read`)
    if not unread:
        return [einsum_cost(ctx, list(ctx.inputs), ctx.out_axes[0], prim.pairs())]
    from dataclasses import replace

    one = _made_one([(ctx.inputs[k].axes[0], ctx.inputs[k].axes[1]) for k in unread], ctx.out_axes[0])
    read = [replace(x, axes=tuple(one.get(a.name, a) for a in x.axes),  # each cup's second wire named as its first:
                    order=tuple(one[n].name if n in one else n for n in x.order))  # its diagonal
            for j, x in enumerate(ctx.inputs) if j not in unread]
    out_axes = tuple(one.get(a.name, a) for a in ctx.out_axes[0])  # the output with the cups' one names
    result = einsum_cost(ctx, read, out_axes, _cupless_pairs(prim, unread) if len(read) >= 3 else ())
    back = {one[a.name].name: a.name for a in ctx.out_axes[0] if a.name in one}
    return [replace(result, axes=ctx.out_axes[0], order=tuple(back.get(n, n) for n in result.order))]


# -- backward ------------------------------------------------------------------------------------
def learned_map_backward(x: Segment, g: Segment, bias: bool, batch: tuple[Axis, ...] = ()) -> BoxBackward:
    """``∂x = Lᵀ g`` (the weight an explicit input), ``∂W = Σ_batch g ⊗ x`` (one contraction), ``∂b = Σ_batch g``.

    A learned map is bilinear in its input and its weight: these are its two partial transposes.
    """
    from ncd.analysis.backward import woven_leading
    from ncd.prims.derivative import LinearTransposeOp, LinearWeightGradOp, weight_segment
    from ncd.prims.structure import route

    w = weight_segment(x, g)
    xb, gb = Segment(batch + x.axes), Segment(batch + g.axes)
    picks = [2, 1, 0, 2] + ([2] if bias else [])
    d_bias = Box(EinsumOp(Type((gb,)), g)) if batch else Identity(Type((g,)))
    parts = [woven_leading(Box(LinearTransposeOp(x, g)), batch, (0, None)),
             Box(LinearWeightGradOp(x, g, Segment(batch)))] + ([d_bias] if bias else [])
    grads = ("weight", "bias") if bias else ("weight",)
    return BoxBackward((("in", 0), ("param", "weight")), Seq.of(route([xb, w, gb], picks), Par.of(*parts)), grads)


@BACKWARD.rule(LinearOp)
def backward_linear(prim: LinearOp, box: Box, builder: object) -> BoxBackward:
    """``∂x = Lᵀ g`` (the weight an explicit input), ``∂W = g ⊗ x``, ``∂b = g``."""
    return learned_map_backward(prim.dom_axes, prim.cod_axes, prim.bias)


@BATCHED_BACKWARD.rule(LinearOp)
def batched_backward_linear(prim: LinearOp, box: Box, builder: object, batch: tuple[Axis, ...]) -> BoxBackward:
    """Woven over leading ``batch`` axes: the weight's and bias' gradients contracted over them."""
    return learned_map_backward(prim.dom_axes, prim.cod_axes, prim.bias, batch)


@partials(EinsumOp)
def einsum_partial(prim: EinsumOp, box: Box, i: int) -> Diagram:
    """The transposed wiring: ``∂x_i = einsum(g, x_j≠i -> x_i)``, copied onto axes it summed away."""
    from ncd.prims.derivative import DiagonalOp, ExpandOp

    inputs = list(prim.inputs)
    target = inputs[i]
    sources = [prim.output] + [inputs[j] for j in range(len(inputs)) if j != i]
    known = {a.name for s in sources for a in s}
    distinct = target.with_axes(a for k, a in enumerate(target) if a.name not in target.names[:k])
    reachable = distinct.with_axes(a for a in distinct if a.name in known)
    part: Diagram = Box(EinsumOp(Type(tuple(sources)), reachable))
    if len(reachable) != len(distinct):
        part = Seq.of(part, Box(ExpandOp(reachable, distinct)))
    if len(distinct) != len(target):  # a repeated wire: the transpose of taking the diagonal
        part = Seq.of(part, Box(DiagonalOp(distinct, target)))
    return part


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(LinearOp, aten=("aten.linear", "aten.addmm", "aten.mm", "aten.matmul"))
IMPORT.known(EinsumOp, aten=("aten.einsum", "aten.matmul", "aten.bmm", "aten.mm", "aten.mean", "aten.sum",
                             "aten.scaled_dot_product_attention"))
