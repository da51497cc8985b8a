"""Primitives of backward diagrams not yet beside their family: transposed learned maps, broadcast
copies (the transpose of a sum), and the backward boxes of normalisation, masks, pooling and convolution.
(A family's own derivative primitives live in its module: ``f′`` in ``ncd.prims.elementwise``, softmax's
backward in ``ncd.prims.softmax``, zeros in ``ncd.prims.structure``, normalisation's in ``ncd.prims.normalization``.)

``ncd.backward`` builds reverse-mode diagrams from these and the ordinary primitives; they
lower like any box, so a backward diagram runs as a module.

>>> import ncd
>>> from ncd.prims.derivative import Expand
>>> str(Expand("a", "a b").cod)
'a b'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from ncd.errors import ParseError, TypeMismatchError
from ncd.ir import weaving
from ncd.ir.axes import SCALAR, Axis, Segment, Type, parse_type
from ncd.ir.diagram import Box, Diagram
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER
from ncd.ir.size import evaluate
from ncd.prims.kinds import transpose

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.ir.program import Expr
    from ncd.torch.rules import RuleContext


__all__ = [
    "ExpandOp", "LinearTransposeOp",
    "LinearWeightGradOp", "Expand",
    "LinearTranspose", "LinearWeightGrad",
    "DiagonalOp", "Diagonal",
   
   
]


@dataclass(frozen=True)
class ExpandOp(Primitive):
    """A broadcast copy from ``source`` onto the axes of ``target`` (the transpose of summing them away)."""

    source: Segment
    target: Segment

    op: ClassVar[str] = "expand"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        missing = [a.name for a in self.source if a.name not in self.target.names]
        if missing:
            raise TypeMismatchError(
                f"expand '{self.source}' -> '{self.target}': axis {', '.join(missing)} of the source is not in the target"
            )

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.target,))

    def label(self) -> str:
        return "•"


def _fresh(name: str, seg: Segment) -> str:
    while name in seg.names:
        name += "′"
    return name


def weight_segment(dom_axes: Segment, cod_axes: Segment) -> Segment:
    """The weight of ``L: dom -> cod`` as one segment ``cod dom`` (input axes primed where names repeat)."""
    names = set(cod_axes.names)
    return Segment(cod_axes.axes + tuple(a.renamed(a.name + "′") if a.name in names else a for a in dom_axes.axes))


@dataclass(frozen=True)
class LinearTransposeOp(Primitive):
    """``Lᵀ``: ``(g: cod, W: cod dom) ↦ Wᵀ g`` — a learned map's transpose, its weight an explicit input."""

    dom_axes: Segment
    cod_axes: Segment

    op: ClassVar[str] = "linear_transpose"
    weave_policy = weaving.always
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"

    def signature(self) -> tuple[Type, Type]:
        return Type((self.cod_axes, weight_segment(self.dom_axes, self.cod_axes))), Type((self.dom_axes,))

    def label(self) -> str:
        return "Lᵀ"


@dataclass(frozen=True)
class LinearWeightGradOp(Primitive):
    """``(x: dom, g: cod) ↦ g ⊗ x``: the gradient of a learned map's weight.

    With ``batch`` axes (leading on both inputs) it is the contraction ``Σ_batch g ⊗ x`` — one
    einsum, never the per-position outer product.
    """

    dom_axes: Segment
    cod_axes: Segment
    batch: Segment = SCALAR

    op: ClassVar[str] = "linear_weight_grad"
    weave_policy = weaving.always
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"

    def signature(self) -> tuple[Type, Type]:
        b = self.batch.axes
        dom = Type((Segment(b + self.dom_axes.axes), Segment(b + self.cod_axes.axes)))
        return dom, Type((weight_segment(self.dom_axes, self.cod_axes),))

    def label(self) -> str:
        return "∂L"


def Expand(source: str, target: str) -> Box:
    """Broadcast-copy ``source`` onto ``target``'s axes, e.g. ``Expand("a", "a b")``."""
    src, dst = parse_type(source), parse_type(target)
    if len(src) != 1 or len(dst) != 1:
        raise ParseError(f"expand takes one segment on each side, not '{source}' -> '{target}'")
    known = {a.name: a for a in src[0]}
    return Box.make(ExpandOp(src[0], dst[0].with_axes(known.get(a.name, a) for a in dst[0])))


def LinearTranspose(spec: str) -> Box:
    """``Lᵀ`` for the learned map ``spec`` (e.g. ``"m -> k h"``): takes the cotangent and the weight."""
    dom, cod = _spec(spec)
    return Box.make(LinearTransposeOp(dom, cod))


def LinearWeightGrad(spec: str) -> Box:
    dom, cod = _spec(spec)
    return Box.make(LinearWeightGradOp(dom, cod))


def _spec(spec: str) -> tuple[Segment, Segment]:
    from ncd.prims.linear import split_spec

    left, right = split_spec(spec, "linear")
    dom, cod = parse_type(left), parse_type(right)
    if len(dom) != 1 or len(cod) != 1 or not dom[0].axes or not cod[0].axes:
        raise ParseError(f"linear spec {spec!r} must map one segment to one segment, each with at least one axis")
    return dom[0], cod[0]


# -- transposes for diagonals, pooling, batch normalisation and convolutions -----------------
@dataclass(frozen=True)
class DiagonalOp(Primitive):
    """The transpose of taking a diagonal: ``source`` (distinct axes) placed on the diagonal of ``target``.

    ``target`` repeats some of ``source``'s axes (``a -> a a``); entries off the diagonal are zero.
    """

    source: Segment
    target: Segment

    op: ClassVar[str] = "diagonal"
    repeated_axes: ClassVar[bool] = True
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if len(set(self.source.names)) != len(self.source) or set(self.source.names) != set(self.target.names):
            raise TypeMismatchError(f"diagonal '{self.source}' -> '{self.target}': the source must hold each axis of the"
                                    " target exactly once")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.target,))

    def label(self) -> str:
        return "Δ"


def Diagonal(source: str, target: str) -> Box:
    """Place ``source`` on the diagonal of ``target``, e.g. ``Diagonal("a", "a a")`` (the transpose of ``Einsum("a a -> a")``)."""
    src, dst = parse_type(source), parse_type(target)
    if len(src) != 1 or len(dst) != 1:
        raise ParseError(f"diagonal takes one segment on each side, not '{source}' -> '{target}'")
    known = {a.name: a for a in src[0]}
    return Box.make(DiagonalOp(src[0], dst[0].with_axes(known.get(a.name, a) for a in dst[0])))


# -- import recognition (ncd.trace) ------------------------------------------------------------
for _cls in (ExpandOp, LinearTransposeOp, LinearWeightGradOp, DiagonalOp):
    IMPORT.unsupported(_cls, NOT_TRACED)


# -- lowering ----------------------------------------------------------------------------------
@LOWERING.rule(ExpandOp)
def lower_expand(prim: ExpandOp, ctx: RuleContext) -> list[str]:
    x = ctx.args[0].var
    src, dst = list(prim.source.names), list(prim.target.names)
    present = [n for n in dst if n in src]
    k = len(src)
    if present != src:
        x = f"torch.movedim({x}, {tuple(range(-k, 0))}, {tuple(present.index(n) - k for n in src)})"
    index = ", ".join(":" if n in src else "None" for n in dst)
    sizes = ", ".join(str(evaluate(a.size, what=f"axis {a.name}")) for a in prim.target)
    batch = f"{ctx.args[0].var}.shape[:-{k}]" if k else f"{x}.shape"
    return [f"{x}[..., {index}].expand(*{batch}, {sizes})"]


def _positional(ctx: RuleContext, *groups: Segment) -> list[str]:
    """One einsum letter per axis of ``groups`` by position (the same name twice gets two letters)."""
    names = [a.name for g in groups for a in g]
    return weaving.einsum_letters(len(names), ctx.box, names)


@LOWERING.rule(LinearTransposeOp)
def lower_linear_transpose(prim: LinearTransposeOp, ctx: RuleContext) -> list[Expr]:
    letters = _positional(ctx, prim.cod_axes, prim.dom_axes)
    out, inp = letters[: len(prim.cod_axes)], letters[len(prim.cod_axes):]
    return [ctx.einsum(ctx.subscripts([out, out + inp], inp), ctx.args[0], ctx.args[1])]


@LOWERING.rule(LinearWeightGradOp)
def lower_linear_weight_grad(prim: LinearWeightGradOp, ctx: RuleContext) -> list[Expr]:
    letters = _positional(ctx, prim.cod_axes, prim.dom_axes, prim.batch)
    out, inp = letters[: len(prim.cod_axes)], letters[len(prim.cod_axes):len(prim.cod_axes) + len(prim.dom_axes)]
    batch = letters[len(prim.cod_axes) + len(prim.dom_axes):]
    return [ctx.einsum(ctx.subscripts([batch + inp, batch + out], out + inp), ctx.args[0], ctx.args[1])]


# -- transposes for diagonals, pooling, batch normalisation and convolutions -----------------


@LOWERING.rule(DiagonalOp)
def lower_diagonal(prim: DiagonalOp, ctx: RuleContext) -> list[Expr]:
    """``einsum`` of the source with one identity matrix (a cup, a value of its own) per repeated axis."""
    repeated = len(prim.target) - len(set(prim.target.names))
    pool = weaving.einsum_letters(len(prim.source) + repeated, ctx.box, [*prim.source.names, *prim.target.names])
    letters = dict(zip(prim.source.names, pool))
    spare = iter(pool[len(letters):])
    x = ctx.args[0]
    out, subs, eyes, seen = "", ["..." + "".join(letters.values())], [], set()
    for a in prim.target:
        if a.name in seen:
            fresh = next(spare)
            out += fresh
            n = ctx.int(a.size, f"axis {a.name}")
            eye = ctx.call("torch.eye", n, dtype=f"{x.var}.dtype", device=f"{x.var}.device")
            eyes.append(ctx.bind(eye, (a, a.renamed(a.name + "′")), "eye"))
            subs.append(letters[a.name] + fresh)
        else:
            seen.add(a.name)
            out += letters[a.name]
    return [ctx.einsum(",".join(subs) + "->..." + out, x, *eyes)]


# -- costs (so that ``ncd.cost(ncd.backward(d))`` works); their own backward is not supported but Expand's ----
@COST.rule(ExpandOp)
def cost_expand(prim: ExpandOp, ctx: CostContext) -> list[Tensor]:
    """A broadcast view: no FLOPs, no copy."""
    from ncd.analysis.layout import Tensor

    x = ctx.inputs[0]
    return [Tensor(x.storage, ctx.out_axes[0], x.order, x.grad, x.dtype, dense=False)]


def _suffixed(ctx: CostContext, side: Literal["dom", "cod"], j: int, axes: tuple[Axis, ...],
              own: tuple[str, ...]) -> tuple[Axis, ...]:
    """``axes`` (a full layout) with the box's own axes renamed ``own[k]``."""
    from ncd.prims.linear import markers

    layout = markers(ctx.box, ctx.woven, side, j)
    shift = len(axes) - len(layout)
    result = list(axes)
    for k, (kind, index) in enumerate(layout):
        if kind == "own":
            result[shift + k] = axes[shift + k].renamed(own[index])
    return tuple(result)


def _relabel(t: Tensor, axes: tuple[Axis, ...]) -> Tensor:
    from ncd.analysis.layout import Tensor

    names = {a.name: b.name for a, b in zip(t.axes, axes)}
    return Tensor(t.storage, axes, tuple(names.get(n, n) for n in t.order), t.grad, t.dtype, t.dense)


@COST.rule(LinearTransposeOp, LinearWeightGradOp)
def cost_weighted(prim: LinearTransposeOp | LinearWeightGradOp, ctx: CostContext) -> list[Tensor]:
    """An einsum with the weight (``Lᵀ g``) or of the input with the cotangent (``∂W``), as ``torch.einsum`` runs it."""
    from ncd.analysis.layout import Tensor
    from ncd.analysis.linear import einsum_cost
    from ncd.prims.linear import tagged

    outs = tuple(tagged(a.name, "_out") for a in prim.cod_axes)
    ins = tuple(tagged(a.name, "_in") for a in prim.dom_axes)
    first, second = ctx.inputs
    if isinstance(prim, LinearTransposeOp):  # (g: cod, W: cod dom) -> dom
        g = _relabel(first, _suffixed(ctx, "dom", 0, first.axes, outs))
        w = _relabel(second, _suffixed(ctx, "dom", 1, second.axes, outs + ins))
        result = einsum_cost(ctx, [g, w], _suffixed(ctx, "cod", 0, ctx.out_axes[0], ins))
    else:  # (x: batch dom, g: batch cod) -> cod dom, the batch summed
        batch = tuple(a.name for a in prim.batch)
        x = _relabel(first, _suffixed(ctx, "dom", 0, first.axes, batch + ins))
        g = _relabel(second, _suffixed(ctx, "dom", 1, second.axes, batch + outs))
        result = einsum_cost(ctx, [x, g], _suffixed(ctx, "cod", 0, ctx.out_axes[0], outs + ins))
    return [Tensor(result.storage, ctx.out_axes[0], (), result.grad)]


@COST.rule(DiagonalOp)
def cost_diagonal(prim: DiagonalOp, ctx: CostContext) -> list[Tensor]:
    """``x[..., None] * eye``: one product per repeated wire; autograd keeps each identity matrix."""
    seen: set[str] = set()
    for a in prim.target:
        if a.name in seen:
            eye = ctx.new((a, a.renamed(a.name + "′")), grad=False)
            if ctx.inputs[0].grad:
                ctx.save(eye)
            ctx.other(ctx.numel(), ctx.numel())
        seen.add(a.name)
    return [ctx.output(0)]


for _second in (LinearTransposeOp, LinearWeightGradOp, DiagonalOp):
    BACKWARD.unsupported(_second, SECOND_ORDER)


@transpose(ExpandOp)
def transpose_expand(prim: ExpandOp, box: Box) -> Diagram:
    """``•ᵀ``: the cotangent summed over the wires the copy added, onto the source's wires in their order (the einsum
    ``target -> source``).  The importer draws ``x.expand(...)``, ``x[:, :1].expand_as(y)`` and a key/value head
    repeat as this copy, so a traced model holding one differentiates (it raised "second derivatives")."""
    from ncd.prims.linear import EinsumOp

    return Box(EinsumOp(Type((prim.target,)), prim.source))
