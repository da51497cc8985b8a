"""The derivative primitives of learned convolutions (boxes of backward diagrams, family ``derivative``).

* :class:`ConvWithWeightOp` ``(x, W) -> y``: a convolution (or a transposed one) whose weight is an
  input, lowered to ``F.conv*d`` / ``F.conv_transpose*d``.  A convolution's input gradient is the
  transposed convolution of the cotangent with the same weight, and the other way round;
  ``ncd.trace`` also builds it for a convolution whose weight is computed (a wire).
* :class:`ConvWeightGradOp` ``(x, g) -> ∂W``: a learned convolution's weight gradient, its windows
  contracted with the cotangent over the output positions in one einsum.

``ncd.prims.convolution`` differentiates ``ncd.Conv`` / ``ncd.ConvTranspose`` with these (when the
paper's decomposition through ``★`` does not apply: groups, 3 spatial axes, woven over leading axes).

>>> import ncd
>>> backward = ncd.backward(ncd.Conv("c x y -> d x y", kernel=3, padding=1, groups=2))
>>> sorted({box.prim.op for box in backward.boxes()} & {"conv_with_weight", "conv_weight_grad"})
['conv_weight_grad', 'conv_with_weight']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir.axes import SCALAR, Axis, Segment, Type
from ncd.ir.diagram import Box, Diagram, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER
from ncd.ir.size import Size, size
from ncd.ir.weaving import einsum_letters
from ncd.prims.kinds import partials
from ncd.prims.structure import route
from ncd.prims.windows import (
    _CONV,
    _CONV_T,
    _check_sizes,
    _convolution,
    _ints,
    _reshaped,
    _shape,
    _subs_checked,
    _tuple,
    transposed_size,
    window_size,
)

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.ir.program import Expr
    from ncd.torch.rules import RuleContext


__all__ = ["ConvWithWeightOp", "ConvWeightGradOp", "conv_weight_segment"]


# -- derivative primitives of convolutions (backward diagrams) -------------------------------------
def conv_weight_segment(dom_axes: Segment, cod_axes: Segment, kernel: tuple[int, ...], groups: Size,
                        transposed: bool) -> Segment:
    """The weight of a convolution ``dom -> cod`` (``transposed``: of a transposed one) as one segment, torch's layout.

    Convolution: ``d c/groups κ…``; transposed convolution: ``c d/groups κ…`` (``κ1, κ2, …`` the kernel axes).
    """
    first, second = (dom_axes.axes[0], cod_axes.axes[0]) if transposed else (cod_axes.axes[0], dom_axes.axes[0])
    taken = set(dom_axes.names) | set(cod_axes.names)
    name = second.name if second.name != first.name and groups == 1 else second.name + "′"
    kernel_axes = tuple(Axis(next(f"κ{i}{s}" for s in ("", "′", "″") if f"κ{i}{s}" not in taken), size(k))
                        for i, k in enumerate(kernel, 1))
    return Segment((first, Axis(name, second.size / groups)) + kernel_axes)


@dataclass(frozen=True)
class _ConvolutionGeometry(Primitive):
    """Fields and checks shared by the convolution derivatives: both sides' axes, the weight and the window."""

    dom_axes: Segment
    cod_axes: Segment
    weight: Segment
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]

    what: ClassVar[str] = "convolution derivative"

    def __post_init__(self) -> None:
        n = len(self.kernel)
        if len(self.dom_axes) != n + 1 or len(self.cod_axes) != n + 1 or len(self.weight) != n + 2:
            raise ParseError(f"{self.what} '{self.dom_axes}' -> '{self.cod_axes}': channel + {n} spatial axes"
                             f" on each side and a weight of {n + 2} axes are needed, not '{self.weight}'")


@dataclass(frozen=True)
class ConvWithWeightOp(_ConvolutionGeometry):
    """A convolution (``transposed``: a transposed convolution) whose weight is an explicit input: ``(x, W) -> y``.

    The transposes of learned convolutions: a convolution's input gradient is the transposed
    convolution of the cotangent with the same weight (``★ᵀ`` after ``Lᵀ``), a transposed
    convolution's is the convolution (``L`` after ``★``).
    """

    output_padding: tuple[int, ...] = ()
    groups: Size = size(1)
    transposed: bool = False
    batch: Segment = SCALAR

    op: ClassVar[str] = "conv_with_weight"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"
    what: ClassVar[str] = "convolution with weight"

    def __post_init__(self) -> None:
        super().__post_init__()
        try:  # the text naming the box is written only for an error: the same checks again, with it
            self._check_geometry("")
        except Exception:
            self._check_geometry(f"{self.what} '{self.dom_axes}' -> '{self.cod_axes}'")
            raise

    def _check_geometry(self, where: str) -> None:
        geometry = list(zip(self.dom_axes.axes[1:], self.cod_axes.axes[1:], self.kernel, self.stride, self.padding,
                            self.dilation, self.output_padding or (0,) * len(self.kernel)))
        if self.transposed:  # the output positions are torch's formula of the input's (symbolic sizes follow it)
            expected = [transposed_size(a.size, k, s, p, d, op, what=f"{where}: axis {a.name}")
                        for a, _, k, s, p, d, op in geometry]
            _check_sizes(where, self.dom_axes.axes[1:], self.cod_axes.axes[1:], expected, (1,) * len(self.kernel))
            return
        # a convolution: an output size stored as a number is the window count of the input's (a traced one, whose
        # input the symbolic pass names, learns it); symbolic on both sides (a transposed convolution's input
        # gradient) the symbolic window rule, which assumes the stride divides, is not the check
        kept = [(a, b, window_size(a.size, k, s, p, d, what=f"{where}: axis {a.name}"), s)
                for a, b, k, s, p, d, _ in geometry if not b.size.free_symbols]
        if kept:
            _check_sizes(where, [a for a, *_ in kept], [b for _, b, *_ in kept], [w for *_, w, _ in kept],
                         [s for *_, s in kept])

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Primitive:
        """A convolution's output rows at a length its stride does not divide are refused naming the stride and axis."""
        if self.transposed:
            return Primitive.subs(self, mapping)
        return _subs_checked(self, mapping, self.dom_axes.axes[1:], self.cod_axes.axes[1:], self.stride)

    def signature(self) -> tuple[Type, Type]:
        b = self.batch.axes
        return Type((Segment(b + self.dom_axes.axes), self.weight)), Type((Segment(b + self.cod_axes.axes),))

    def label(self) -> str:
        return ("★ᵀ" if self.transposed else "★") + "·W"


@dataclass(frozen=True)
class ConvWeightGradOp(_ConvolutionGeometry):
    """``(x, g) ↦ ∂W``: a learned convolution's weight gradient, the contraction of its windows with the cotangent.

    Sums over the output positions and the leading ``batch`` axes in one einsum.
    ``transposed``: of a transposed convolution (the windows are taken of the cotangent).
    """

    groups: Size = size(1)
    transposed: bool = False
    batch: Segment = SCALAR

    op: ClassVar[str] = "conv_weight_grad"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"
    what: ClassVar[str] = "convolution weight gradient"

    def signature(self) -> tuple[Type, Type]:
        b = self.batch.axes
        return Type((Segment(b + self.dom_axes.axes), Segment(b + self.cod_axes.axes))), Type((self.weight,))

    def label(self) -> str:
        return "∂★"


# -- lowering --------------------------------------------------------------------------------------
@LOWERING.rule(ConvWithWeightOp)
def lower_conv_with_weight(prim: ConvWithWeightOp, ctx: RuleContext) -> list[Expr]:
    n = len(prim.kernel)
    shape, out = _ints(ctx, prim.dom_axes), _ints(ctx, prim.cod_axes)
    groups = ctx.int(prim.groups, "groups")
    x, w = ctx.args[0].var, ctx.args[1].var
    arg = f"{x}.reshape(-1, {', '.join(map(str, shape))})"
    if prim.transposed:
        call = (f"F.conv_transpose{n}d({arg}, {w}, None, {_tuple(prim.stride)}, {_tuple(prim.padding)},"
                f" {_tuple(prim.output_padding)}, {groups}, {_tuple(prim.dilation)})")
    else:
        call = f"F.conv{n}d({arg}, {w}, None, {_tuple(prim.stride)}, {_tuple(prim.padding)}, {_tuple(prim.dilation)}, {groups})"
    function = f"conv_transpose{n}d" if prim.transposed else f"conv{n}d"
    return [_convolution(ctx, f"{call}.view(*{x}.shape[:-{n + 1}], {', '.join(map(str, out))})", "call", f"F.{function}",
                         function, tuple(a.size for a in prim.weight), prim, prim.groups)]


@LOWERING.rule(ConvWeightGradOp)
def lower_conv_weight_grad(prim: ConvWeightGradOp, ctx: RuleContext) -> list[Expr]:
    """Windows (``★``: pad, unfold, dilate) contracted with the other operand over positions and batch: one einsum,
    its two operands values of the program laid out as its subscripts read them."""
    from ncd.ir.program import Expr

    n, nb = len(prim.kernel), len(prim.batch)
    groups = ctx.int(prim.groups, "groups")
    x, g = ctx.args
    windowed, other = (g, x) if prim.transposed else (x, g)
    w_axes, o_axes = (prim.cod_axes, prim.dom_axes) if prim.transposed else (prim.dom_axes, prim.cod_axes)
    w_sizes, o_sizes = _ints(ctx, w_axes), _ints(ctx, o_axes)
    bsizes = _ints(ctx, prim.batch)
    expr = ctx.method(windowed, "reshape", -1, *bsizes, *w_sizes)
    if any(prim.padding):
        expr = ctx.call("F.pad", expr, tuple(p for p in reversed(prim.padding) for _ in (0, 1)))
    for k, s, d in zip(prim.kernel, prim.stride, prim.dilation):
        expr = ctx.method(expr, "unfold", -n, d * (k - 1) + 1, s)
    positions = o_sizes[1:]
    index = "[..., " + ", ".join(f":{p}" for p in positions) + ", " + ", ".join(f"::{d}" for d in prim.dilation) + "]"
    # the axes of the einsum's operands (the batch of leading dims folded into ``...``)
    batch, kernel = prim.batch.axes, prim.weight.axes[2:]
    group = Axis("γ", prim.groups)
    i_axis, j_axis = Axis("ι", w_axes.axes[0].size / prim.groups), Axis("ȷ", o_axes.axes[0].size / prim.groups)
    at = tuple(a.renamed(a.name + "_p") for a in o_axes.axes[1:])
    win = ctx.bind(Expr(f"{expr}{index}", "view", "Tensor.__getitem__", expr.args),
                   batch + (w_axes.axes[0],) + at + kernel, "windows")
    cw, co = w_sizes[0] // groups, o_sizes[0] // groups
    wv = ctx.bind(ctx.method(win, "reshape", -1, *bsizes, groups, cw, *positions, *prim.kernel),
                  batch + (group, i_axis) + at + kernel, "windows")
    ov = ctx.bind(ctx.method(other, "reshape", -1, *bsizes, groups, co, *positions), batch + (group, j_axis) + at,
                  "grads")
    letters = iter(einsum_letters(3 + nb + 2 * n, ctx.box, [a.name for a in (group, i_axis, j_axis, *batch, *at, *kernel)]))
    G, Ii, J = (next(letters) for _ in range(3))
    B = "".join(next(letters) for _ in range(nb))
    P = "".join(next(letters) for _ in range(n))
    K = "".join(next(letters) for _ in range(n))
    product = ctx.bind(ctx.einsum(f"...{B}{G}{Ii}{P}{K},...{B}{G}{J}{P}->...{G}{J}{Ii}{K}", wv, ov),
                       (group, j_axis, i_axis) + kernel, "weight_grad")
    lead = Expr(f"*{x.var}.shape[:-{nb + n + 1}]", args=(x,))
    return [ctx.method(product, "reshape", lead, *_ints(ctx, prim.weight))]


# -- backward and costs ----------------------------------------------------------------------------
def _weight_products(dom: Segment, cod: Segment, weight: Segment, kernel: tuple[int, ...], stride: tuple[int, ...],
                     padding: tuple[int, ...], dilation: tuple[int, ...], groups: Size, transposed: bool,
                     batch: tuple[Axis, ...]) -> tuple[Box, Box]:
    """The two products of a convolution ``dom -> cod`` (``transposed``: a transposed one) with ``weight``:
    ``(g, W) -> ∂x`` (the transposed convolution of the cotangent with the same weight; for a transposed convolution the
    convolution — the transpose of ``★ᵀ`` is ``★``) and ``(x, g) -> ∂W`` (the windows contracted with the other operand
    over positions and the leading ``batch`` in one einsum, ``∂★``)."""
    if transposed:
        output_padding: tuple[int, ...] = ()
    else:
        output_padding = tuple(int(a.size - transposed_size(b.size, k, s, p, d)) if not (a.size - transposed_size(
            b.size, k, s, p, d)).free_symbols else 0 for a, b, k, s, p, d in
            zip(dom.axes[1:], cod.axes[1:], kernel, stride, padding, dilation))
    d_input = Box(ConvWithWeightOp(cod, dom, weight, kernel, stride, padding, dilation, output_padding, groups,
                                   not transposed, Segment(batch)))
    d_weight = Box(ConvWeightGradOp(dom, cod, weight, kernel, stride, padding, dilation, groups, transposed,
                                    Segment(batch)))
    return d_input, d_weight


@partials(ConvWithWeightOp)
def partials_conv_with_weight(prim: ConvWithWeightOp, box: Box, i: int) -> Diagram:
    """A convolution whose weight is a wire (BiT's standardised weights; the transposes of learned convolutions) is
    bilinear in ``(x, W)``: ``(g, W) -> ∂x`` and ``(g, x) -> ∂W`` are the products of :func:`_weight_products`."""
    d_input, d_weight = _weight_products(prim.dom_axes, prim.cod_axes, prim.weight, prim.kernel, prim.stride,
                                         prim.padding, prim.dilation, prim.groups, prim.transposed, prim.batch.axes)
    return d_input if i == 0 else Seq.of(route([box.cod[0], box.dom[0]], [1, 0]), d_weight)


@COST.rule(ConvWithWeightOp)
def cost_conv_with_weight(prim: ConvWithWeightOp, ctx: CostContext) -> list[Tensor]:
    """``F.conv*`` / ``F.conv_transpose*`` with the weight an input, costed by what it calls
    (``ncd.analysis.targets``): both operands kept, a product per gradient."""
    x, w = ctx.inputs
    flat = _reshaped(ctx, x, len(prim.dom_axes.axes))  # x.reshape(-1, channels, positions...): a view or a copy
    ctx.charge(ctx.call_to(*_CONV, *_CONV_T), [_shape(x), _shape(w)], grads=(x.grad, w.grad))
    if x.grad or w.grad:
        ctx.save(*([flat] if w.grad else []), *([w] if x.grad else []))
    return [ctx.output(0)]


@COST.rule(ConvWeightGradOp)
def cost_conv_weight_grad(prim: ConvWeightGradOp, ctx: CostContext) -> list[Tensor]:
    """The windows (a copy when reshaped) contracted with the other operand: ``torch.einsum``'s ``bmm``."""
    x, g = ctx.inputs
    windowed, other = (g, x) if prim.transposed else (x, g)
    w_axes, o_axes = (prim.cod_axes, prim.dom_axes) if prim.transposed else (prim.dom_axes, prim.cod_axes)
    groups = Axis("γ", prim.groups)
    kernel = prim.weight.axes[2:]
    positions = tuple(a.renamed(a.name + "_p") for a in o_axes.axes[1:])
    batch = prim.batch.axes
    i_axis = Axis("ι", w_axes.axes[0].size / prim.groups)
    j_axis = Axis("ȷ", o_axes.axes[0].size / prim.groups)
    win = ctx.new(batch + (groups, i_axis) + positions + kernel, grad=windowed.grad)
    oth = other if other.contiguous else ctx.new(other.axes, grad=other.grad)
    oth = replace(oth, axes=batch + (groups, j_axis) + positions, order=(), dense=True)
    from ncd.analysis.linear import einsum_cost  # the contraction's costs as torch.einsum runs it

    result = einsum_cost(ctx, [win, oth], (groups, j_axis, i_axis) + kernel)
    return [replace(result, axes=ctx.out_axes[0], order=(), dtype="float", dense=True)]

BACKWARD.unsupported(ConvWeightGradOp, SECOND_ORDER)
IMPORT.unsupported(ConvWeightGradOp, NOT_TRACED)
IMPORT.known(ConvWithWeightOp, aten=("aten.conv2d", "aten.conv3d", "aten.conv_transpose1d", "aten.conv_transpose2d",
                                           "aten.conv_transpose3d"), by="ncd.trace.boxes_windows")
