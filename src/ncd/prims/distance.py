"""Distances between two sets of vectors: ``torch.cdist`` (the ``p``-norm of every difference of a row and a column).

* ``CDist("i m", "j m", p=2.0)``: ``"i m, j m -> i j"``, the distance of row ``x[i]`` to row ``y[j]`` over the
  features ``m``.  Woven over a batch (on either input or both: torch broadcasts it), it is one ``torch.cdist``
  call, so the lowered module computes what the model does bit for bit (torch picks a matrix-product formula for
  ``p = 2`` past 25 rows or columns, which a composition of differences and norms would not reproduce: a codebook's
  nearest entry, ``cdist(...).argmin(-1)``, may then differ).
* Its backward (:class:`CDistGradOp`, ``∂``) gives both inputs' gradients from the inputs, the distances and the
  cotangent (ATen's ``_cdist_backward``, once per input).

Mimi's and EnCodec's residual vector quantisers call it once per codebook; it was an opaque box.

* ``CosineSimilarity("m")``: ``"m, m -> "``, ``F.cosine_similarity`` of two vectors (each divided by its norm clamped
  at ``eps``, then their dot product), woven over the other wires (on either input or both: torch broadcasts them).
  It lowers to the one call; its backward (:class:`CosineSimilarityGradOp`) is autograd's formula (the clamp is
  outside the gradient: the norm's own gradient, 0 where a vector is 0).

One module holds every rule of the family.

>>> import ncd, torch
>>> d = ncd.Identity.of("b i m, j m") >> CDist("i m", "j m")
>>> str(d.cod)
'b i j'
>>> x, y = torch.randn(2, 30, 4), torch.randn(5, 4)
>>> torch.equal(d.to_torch(b=2, i=30, j=5, m=4)(x, y), torch.cdist(x, y))
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir.axes import Axis, Segment, Type, TypeLike
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.prims.resampling import _segment

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["CDistOp", "CDistGradOp", "CDist", "CosineSimilarityOp", "CosineSimilarityGradOp", "CosineSimilarity"]

#: torch.cdist's default ``compute_mode``: ``p = 2`` past this many rows or columns is a matrix product
MM_ABOVE = 25


@dataclass(frozen=True)
class CDistOp(Primitive):
    """The ``p``-norm distance of each row ``rows`` of ``x`` to each row ``columns`` of ``y``, over ``features``."""

    rows: Axis
    columns: Axis
    features: Axis
    p: float = 2.0

    op: ClassVar[str] = "cdist"
    family: ClassVar[str] = "distance"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        names = [self.rows.name, self.columns.name, self.features.name]
        if len(set(names)) != 3:
            raise ParseError(f"cdist: the rows, columns and features need names of their own, not {' '.join(names)}")
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)) or not self.p >= 0 or math.isnan(self.p):
            raise ParseError(f"cdist of {self.rows.name} and {self.columns.name}: p={self.p!r} must be a number >= 0")
        object.__setattr__(self, "p", float(self.p))

    def inputs(self) -> tuple[Segment, Segment]:
        return Segment((self.rows, self.features)), Segment((self.columns, self.features))

    def signature(self) -> tuple[Type, Type]:
        return Type(self.inputs()), Type((Segment((self.rows, self.columns)),))

    def label(self) -> str:
        p = int(self.p) if self.p.is_integer() else self.p
        return f"‖·−·‖{_SUB.get(str(p), str(p))}"

    def hint(self) -> str:
        return "distances"


_SUB = {"0": "₀", "1": "₁", "2": "₂", "inf": "∞"}


@dataclass(frozen=True)
class CDistGradOp(CDistOp):
    """The backward of :class:`CDistOp` (same fields): ``(x, y, distances, cotangent) -> (∂x, ∂y)``."""

    op: ClassVar[str] = "cdist_grad"
    family: ClassVar[str] = "derivative"

    def signature(self) -> tuple[Type, Type]:
        out = Segment((self.rows, self.columns))
        return Type((*self.inputs(), out, out)), Type(self.inputs())

    def label(self) -> str:
        return "∂" + super().label()

    def hint(self) -> str:
        return "d_distances"


def CDist(x: TypeLike, y: TypeLike, p: float = 2.0) -> Box:
    """``torch.cdist``: the distances of the rows of ``x`` (``"i m"``) to those of ``y`` (``"j m"``: the same
    features, last)."""
    a, b = _segment(x, "cdist"), _segment(y, "cdist")
    if len(a) != 2 or len(b) != 2 or a.axes[1].name != b.axes[1].name:
        raise ParseError(f"cdist takes two segments of two axes sharing the last (the features), not '{a}', '{b}'")
    return Box.make(CDistOp(a.axes[0], b.axes[0], a.axes[1], p))


# -- lowering ----------------------------------------------------------------------------------------------------------
def _p(prim: CDistOp) -> str:
    return "float('inf')" if prim.p == math.inf else repr(prim.p)


@LOWERING.rule(CDistOp)
def lower_cdist(prim: CDistOp, ctx: RuleContext) -> list[str]:
    """``torch.cdist(x, y, p)``: the woven wires in front of both (torch broadcasts them), rows and columns as given,
    so torch picks the formula the model's call picked."""
    x, y = ctx.args
    return [f"torch.cdist({x.var}, {y.var}, p={_p(prim)})"]


@LOWERING.rule(CDistGradOp)
def lower_cdist_grad(prim: CDistGradOp, ctx: RuleContext) -> list[str]:
    """ATen's ``_cdist_backward`` for each input (the other's role swapped by a transpose), on the inputs broadcast
    over their leading wires (each made contiguous, as the kernel needs)."""
    x, y, out, g = (v.var for v in ctx.args)
    lead = ctx.em.fresh("lead")
    ctx.em.line(f"{lead} = torch.broadcast_shapes({x}.shape[:-2], {y}.shape[:-2], {out}.shape[:-2], {g}.shape[:-2])")
    xs, ys, outs, gs = (f"{v}.expand(*{lead}, *{v}.shape[-2:]).contiguous()" for v in (x, y, out, g))
    grads = ctx.em.fresh("grads")
    p = _p(prim)
    ctx.em.line(f"{grads} = (torch.ops.aten._cdist_backward({gs}, {xs}, {ys}, {p}, {outs}),"
                f" torch.ops.aten._cdist_backward({gs}.mT.contiguous(), {ys}, {xs}, {p}, {outs}.mT.contiguous()))")
    return [f"{grads}[0]", f"{grads}[1]"]


# -- costs and backward ------------------------------------------------------------------------------------------------
def _matrix_product(prim: CDistOp) -> bool:
    """Whether torch computes it as a matrix product (``p = 2`` past 25 rows or columns: ``_euclidean_dist``; sizes
    not bound yet are taken to be large)."""
    sizes = (prim.rows.size, prim.columns.size)
    return prim.p == 2.0 and any(s.free_symbols or s > MM_ABOVE for s in sizes)


@COST.rule(CDistOp)
def cost_cdist(prim: CDistOp, ctx: CostContext) -> list[Tensor]:
    """Autograd keeps both inputs and the distances.  The FLOP counter sees no forward FLOPs (one ATen call), and in
    the backward of the matrix-product formula two batched products of ``rows × columns × features`` (both inputs'
    gradients at once)."""
    x, y = ctx.inputs
    out = ctx.output(0)
    n = ctx.numel()
    if ctx.grad:
        ctx.save(x, y, out)
        if _matrix_product(prim):
            ctx.matmul(sympy.Integer(0), 4 * n * prim.features.size)
    ctx.other(3 * n * prim.features.size, 6 * n * prim.features.size if ctx.grad else sympy.Integer(0))
    return [out]


@COST.rule(CDistGradOp)
def cost_cdist_grad(prim: CDistGradOp, ctx: CostContext) -> list[Tensor]:
    """Two new tensors, nothing kept (no second derivatives)."""
    ctx.other(6 * ctx.inputs[3].numel * prim.features.size, sympy.Integer(0))
    return [ctx.output(0), ctx.output(1)]


@BACKWARD.rule(CDistOp)
def backward_cdist(prim: CDistOp, box: Box, builder: object) -> BoxBackward:
    """Both gradients from the stored inputs and distances and the cotangent: one ``∂`` box."""
    return BoxBackward((("in", 0), ("in", 1), ("out", 0)), Box(CDistGradOp(prim.rows, prim.columns, prim.features,
                                                                            prim.p)))


BACKWARD.unsupported(CDistGradOp, SECOND_ORDER)


# -- drawing -----------------------------------------------------------------------------------------------------------
@DRAWING.rule(CDistOp, CDistGradOp)
def draw_cdist(prim: CDistOp, ctx: Layout, box: Box) -> Frag:
    """A box labelled ``‖·−·‖₂`` (the norm of every difference)."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), name=prim.op)


# -- cosine similarity -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CosineSimilarityOp(Primitive):
    """``Σ_axis (x / max(‖x‖, eps)) (y / max(‖y‖, eps))``: ``axis, axis -> ()`` (``F.cosine_similarity``)."""

    axis: Axis
    eps: float = 1e-8

    op: ClassVar[str] = "cosine_similarity"
    family: ClassVar[str] = "distance"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not self.eps >= 0 \
                or math.isinf(self.eps):
            raise ParseError(f"cosine similarity over {self.axis.name}: eps={self.eps!r} must be a number >= 0")
        object.__setattr__(self, "eps", float(self.eps))

    def signature(self) -> tuple[Type, Type]:
        seg = Segment((self.axis,))
        return Type((seg, seg)), Type((Segment(()),))

    def label(self) -> str:
        return "cos∠"

    def hint(self) -> str:
        return "similarity"


@dataclass(frozen=True)
class CosineSimilarityGradOp(CosineSimilarityOp):
    """The backward of :class:`CosineSimilarityOp` (same fields): ``(x, y, cotangent) -> (∂x, ∂y)``."""

    op: ClassVar[str] = "cosine_similarity_grad"
    family: ClassVar[str] = "derivative"

    def signature(self) -> tuple[Type, Type]:
        seg = Segment((self.axis,))
        return Type((seg, seg, Segment(()))), Type((seg, seg))

    def label(self) -> str:
        return "∂cos∠"

    def hint(self) -> str:
        return "d_similarity"


def CosineSimilarity(axis: str | Axis, eps: float = 1e-8) -> Box:
    """``F.cosine_similarity`` of two vectors along ``axis``."""
    from ncd.ir.axes import parse_axis

    return Box.make(CosineSimilarityOp(parse_axis(axis) if isinstance(axis, str) else axis, eps))


@LOWERING.rule(CosineSimilarityOp)
def lower_cosine_similarity(prim: CosineSimilarityOp, ctx: RuleContext) -> list[str]:
    """The one ``F.cosine_similarity`` call on the last dim (the woven wires in front: torch broadcasts them)."""
    x, y = ctx.args
    return [f"F.cosine_similarity({x.var}, {y.var}, dim=-1, eps={prim.eps!r})"]


@LOWERING.rule(CosineSimilarityGradOp)
def lower_cosine_similarity_grad(prim: CosineSimilarityGradOp, ctx: RuleContext) -> list[str]:
    """Autograd's gradients of ``F.cosine_similarity`` on the inputs broadcast together: through each quotient
    ``x / max(‖x‖, eps)`` and the norm's own gradient (0 where the norm is 0)."""
    x, y, g = (v.var for v in ctx.args)
    xs, norms, clamped, grads = (ctx.em.fresh(n) for n in ("pair", "norms", "clamped", "grads"))
    ctx.em.line(f"{xs} = torch.broadcast_tensors({x}, {y})")
    ctx.em.line(f"{norms} = [torch.linalg.vector_norm(v, dim=-1, keepdim=True) for v in {xs}]")
    ctx.em.line(f"{clamped} = [n.clamp_min({prim.eps!r}) for n in {norms}]")
    ctx.em.line(f"{grads} = [{g}.unsqueeze(-1) * (w / c) for w, c in zip(reversed({xs}), reversed({clamped}))]")
    out = [f"{grads}[{k}] / {clamped}[{k}] + {xs}[{k}] * ((-({grads}[{k}] * {xs}[{k}] / {clamped}[{k}] ** 2)).sum(-1,"
           f" keepdim=True) / {norms}[{k}]).masked_fill({norms}[{k}] == 0, 0)" for k in (0, 1)]
    return out


@COST.rule(CosineSimilarityOp)
def cost_cosine_similarity(prim: CosineSimilarityOp, ctx: CostContext) -> list[Tensor]:
    """The FLOP counter sees none; autograd keeps both inputs (broadcast: as read), their norms, the clamped norms and
    the two quotients."""
    x, y = ctx.inputs
    out = ctx.output(0)
    n = ctx.numel() * prim.axis.size
    if ctx.grad:
        norm = list(ctx.out_axes[0])
        full = [*norm, prim.axis]
        ctx.save(x, y, *(ctx.new(norm, grad=False) for _ in range(4)), ctx.new(full), ctx.new(full))
    ctx.other(6 * n, 12 * n if ctx.grad else sympy.Integer(0))
    return [out]


@COST.rule(CosineSimilarityGradOp)
def cost_cosine_similarity_grad(prim: CosineSimilarityGradOp, ctx: CostContext) -> list[Tensor]:
    """Two new tensors, nothing kept (no second derivatives)."""
    ctx.other(12 * ctx.inputs[2].numel * prim.axis.size, sympy.Integer(0))
    return [ctx.output(0), ctx.output(1)]


@BACKWARD.rule(CosineSimilarityOp)
def backward_cosine_similarity(prim: CosineSimilarityOp, box: Box, builder: object) -> BoxBackward:
    """Both gradients from the stored inputs and the cotangent: one ``∂`` box."""
    return BoxBackward((("in", 0), ("in", 1)), Box(CosineSimilarityGradOp(prim.axis, prim.eps)))


BACKWARD.unsupported(CosineSimilarityGradOp, SECOND_ORDER)


@DRAWING.rule(CosineSimilarityOp, CosineSimilarityGradOp)
def draw_cosine_similarity(prim: CosineSimilarityOp, ctx: Layout, box: Box) -> Frag:
    """A box labelled ``cos∠`` (the cosine of the angle between the two vectors)."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), name=prim.op)


IMPORT.known(CosineSimilarityOp, aten=("aten.cosine_similarity",), by="ncd.trace.boxes_resampling")
IMPORT.unsupported(CosineSimilarityGradOp, NOT_TRACED)


# -- import recognition: ncd.trace.boxes_resampling --------------------------------------------------------------------
IMPORT.known(CDistOp, aten=("aten.cdist",), by="ncd.trace.boxes_resampling")
IMPORT.unsupported(CDistGradOp, NOT_TRACED)
