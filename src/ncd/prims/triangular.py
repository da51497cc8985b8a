"""The inverse of a unit lower-triangular matrix: ``(1 + L)⁻¹``, ``L`` the strict lower triangle of a square matrix.

``TriangularInverse("i j:i")`` reads a matrix ``A`` over two axes of one size (rows ``i``, columns ``j``) and gives
``(1 + tril(A, -1))⁻¹`` on the same wires: the entries on and above the diagonal of ``A`` are not read (as
``torch.linalg.solve_triangular(A, 1, upper=False, unitriangular=True)`` does not read them).  Woven over every
other axis (batch, heads, chunks).  The chunked delta rule of linear attention (Gated DeltaNet, Kimi Delta
Attention) solves such a system once per chunk, by ``solve_triangular`` or by forward substitution, a loop over
the rows whose slices grow with the row; the importer draws either as this one box
(:mod:`ncd.trace.triangular`).

One module holds every rule of the family: declaration, lowering, costs, backward and drawing.

>>> import ncd, torch
>>> from ncd.prims.triangular import TriangularInverse
>>> d = ncd.Identity.of("b i j:i") >> TriangularInverse("i j:i")
>>> str(d.cod)
'b i j:i'
>>> a = torch.randn(2, 4, 4)
>>> unit = torch.eye(4) + a.tril(-1)
>>> torch.allclose(d.to_torch(b=2, i=4)(a) @ unit, torch.eye(4).expand(2, 4, 4), atol=1e-5)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.ir.size import is_zero

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import Expr, RuleContext

__all__ = ["TriangularInverseOp", "TriangularInverse", "TriangularInverseBackwardOp", "TriangularInverseBackward"]


@dataclass(frozen=True)
class TriangularInverseOp(Primitive):
    """``(1 + tril(A, -1))⁻¹`` of the matrix ``source`` (rows, then columns: two axes of one size), on its wires."""

    source: Segment

    op: ClassVar[str] = "triangular_inverse"
    family: ClassVar[str] = "triangular"
    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.never  # woven axes to the front: the matrix is the last two dimensions

    def __post_init__(self) -> None:
        axes = self.source.axes
        if len(axes) != 2 or self.source.dtype != "float":
            raise ParseError(f"a triangular inverse reads a float matrix over two axes (rows, columns), not '{self.source}'")
        if not is_zero(axes[0].size - axes[1].size):
            raise ParseError(f"a triangular inverse reads a square matrix: '{self.source}' has {axes[0].name}:"
                             f"{axes[0].size} rows and {axes[1].name}:{axes[1].size} columns")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.source,))

    def label(self) -> str:
        return "(1+L)⁻¹"


def TriangularInverse(source: TypeLike) -> Box:
    """``(1 + L)⁻¹`` of the strict lower triangle ``L`` of the square matrix ``source`` (``"i j:i"``: rows, columns)."""
    typ = as_type(source)
    if len(typ) != 1:
        raise ParseError(f"a triangular inverse takes one segment, not '{typ}'")
    return Box.make(TriangularInverseOp(typ[0]))


@dataclass(frozen=True)
class TriangularInverseBackwardOp(Primitive):
    """``(X, G) ↦ −tril(Xᵀ G Xᵀ, −1)``: the cotangent of ``A`` from the stored inverse ``X = (1 + L)⁻¹`` and the
    cotangent ``G`` of ``X`` (``dX = −X dL X``; only the strict lower triangle of ``A`` is read, so only it has a
    gradient).

    >>> import ncd, torch
    >>> a = torch.randn(4, 4, requires_grad=True)
    >>> x = torch.linalg.inv(torch.eye(4) + a.tril(-1))
    >>> g = torch.randn(4, 4)
    >>> (want,) = torch.autograd.grad(x, a, g)
    >>> d = ncd.Identity.of("i j:i, i j:i") >> TriangularInverseBackward("i j:i")
    >>> torch.allclose(d.to_torch(i=4)(x.detach(), g), want, atol=1e-5)
    True
    """

    source: Segment

    op: ClassVar[str] = "triangular_inverse_backward"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.never  # woven axes to the front: the matrices are the last two dimensions

    def __post_init__(self) -> None:
        TriangularInverseOp(self.source)  # the same checks: a float square matrix

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source, self.source)), Type((self.source,))

    def label(self) -> str:
        return "(1+L)⁻ᵀ"


def TriangularInverseBackward(source: TypeLike) -> Box:
    """The backward of ``TriangularInverse(source)``: ``(X, ∂X) ↦ ∂A = −tril(Xᵀ ∂X Xᵀ, −1)``."""
    typ = as_type(source)
    if len(typ) != 1:
        raise ParseError(f"a triangular inverse's backward takes one segment, not '{typ}'")
    return Box.make(TriangularInverseBackwardOp(typ[0]))


# -- lowering -----------------------------------------------------------------------------------
@LOWERING.rule(TriangularInverseOp)
def lower_triangular_inverse(prim: TriangularInverseOp, ctx: RuleContext) -> list[Expr]:
    """``torch.linalg.solve_triangular(a, 1, upper=False, unitriangular=True)`` (woven axes in front: batched)."""
    (a,) = ctx.args
    n = ctx.int(prim.source.axes[0].size, "rows")
    eye = ctx.call("torch.eye", n, dtype=f"{a.var}.dtype", device=f"{a.var}.device")
    return [ctx.call("torch.linalg.solve_triangular", a, eye, upper=False, unitriangular=True)]


@LOWERING.rule(TriangularInverseBackwardOp)
def lower_triangular_inverse_backward(prim: TriangularInverseBackwardOp, ctx: RuleContext) -> list[str]:
    """``−(Xᵀ G Xᵀ).tril(−1)`` (woven axes in front: batched products)."""
    x, g = ctx.args[0].var, ctx.args[1].var
    return [f"-({x}.mT @ {g} @ {x}.mT).tril(-1)"]


# -- costs and backward -------------------------------------------------------------------------
@COST.rule(TriangularInverseOp)
def cost_triangular_inverse(prim: TriangularInverseOp, ctx: CostContext) -> list[Tensor]:
    """Forward substitution for every column of the identity: ``n²(n−1)`` multiply-adds per matrix, which the FLOP
    counter does not count; autograd keeps the matrix and the inverse, and its backward is one triangular solve and
    one matrix product (``2n³``, counted)."""
    (a,) = ctx.inputs
    n = prim.source.axes[0].size
    matrices = ctx.numel() / (n * n)
    solve = matrices * n * n * (n - 1)
    out = ctx.output(0)
    if a.grad:
        ctx.save(a, out)
        ctx.matmul(sympy.Integer(0), 2 * matrices * n ** 3)
    ctx.other(solve, solve if a.grad else sympy.Integer(0))
    return [out]


@COST.rule(TriangularInverseBackwardOp)
def cost_triangular_inverse_backward(prim: TriangularInverseBackwardOp, ctx: CostContext) -> list[Tensor]:
    """Two matrix products (``2n³`` FLOPs each per matrix, counted), then the triangle and the sign."""
    n = prim.source.axes[0].size
    ctx.matmul(4 * ctx.numel() * n, sympy.Integer(0))
    ctx.other(2 * ctx.numel(), sympy.Integer(0))
    return [ctx.output(0)]


@BACKWARD.rule(TriangularInverseOp)
def backward_triangular_inverse(prim: TriangularInverseOp, box: Box, builder: object) -> BoxBackward:
    """From the stored inverse ``X``: ``∂A = −tril(Xᵀ ∂X Xᵀ, −1)`` (``d(M⁻¹) = −M⁻¹ dM M⁻¹``, ``M = 1 + L``)."""
    return BoxBackward((("out", 0),), Box(TriangularInverseBackwardOp(prim.source)))


BACKWARD.unsupported(TriangularInverseBackwardOp, SECOND_ORDER)


# -- drawing ------------------------------------------------------------------------------------
@DRAWING.rule(TriangularInverseOp)
def draw_triangular_inverse(prim: TriangularInverseOp, ctx: Layout, box: Box) -> Frag:
    """``(1+L)⁻¹`` in a box on the matrix's two wires."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), fill="#ffffff", name="triangular_inverse")


@DRAWING.rule(TriangularInverseBackwardOp)
def draw_triangular_inverse_backward(prim: TriangularInverseBackwardOp, ctx: Layout, box: Box) -> Frag:
    """``(1+L)⁻ᵀ`` in a box reading the stored inverse and the cotangent."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), fill="#ffffff",
                       name="triangular_inverse_backward")


# -- import recognition: ncd.trace.triangular (solve_triangular, forward substitution) ---------------------------

IMPORT.known(TriangularInverseOp, by="ncd.trace.triangular")
IMPORT.unsupported(TriangularInverseBackwardOp, NOT_TRACED)
