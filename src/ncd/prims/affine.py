"""An affine sampling grid: ``F.affine_grid`` (a spatial transformer's positions from its predicted affine map).

* ``AffineGrid("y x", "k", "l")``: ``"k:2 l:3 -> y x k:2"``, the positions of an output image of spatial axes
  ``y x`` (each pixel's normalised coordinates in ``[-1, 1]``, ``x`` first, then a 1) mapped by the affine matrix
  ``θ`` (rows ``k``: one per coordinate, columns ``l``: one more, the translation).  It is linear in ``θ``.  Woven
  over a batch it is one ``F.affine_grid`` call (ATen's ``affine_grid_generator``), so the lowered module computes
  the model's grid bit for bit.
* Its transpose (:class:`AffineGridTransposeOp`, ``θᵀ``) is ATen's ``affine_grid_generator_backward``: the
  gradient of ``θ`` from the grid's cotangent (a matrix product with the base grid).

One module holds every rule of the family.

>>> import ncd, torch
>>> import torch.nn.functional as F
>>> d = ncd.Identity.of("n k:2 l:3") >> AffineGrid("y x", "k", "l")
>>> str(d.cod)
'n y x k:2'
>>> theta = torch.randn(2, 2, 3)
>>> torch.equal(d.to_torch(n=2, y=4, x=5)(theta), F.affine_grid(theta, [2, 1, 4, 5], align_corners=False))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir.axes import Axis, Segment, Type, TypeLike, parse_axis
from ncd.ir.diagram import Box, Diagram
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import COST, DRAWING, IMPORT, LOWERING, NOT_TRACED
from ncd.ir.size import size_text
from ncd.prims.kinds import transpose
from ncd.prims.resampling import _segment

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["AffineGridOp", "AffineGridTransposeOp", "AffineGrid"]


@dataclass(frozen=True)
class AffineGridOp(Primitive):
    """The grid of positions ``positions`` (2 or 3 spatial axes) an affine map ``θ`` (``coordinate × homogeneous``:
    one row per coordinate, one column more) sends the output's pixels to (``F.affine_grid``)."""

    positions: Segment
    coordinate: Axis
    homogeneous: Axis
    align_corners: bool = False

    op: ClassVar[str] = "affine_grid"
    family: ClassVar[str] = "sampling"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        n = len(self.positions)
        what = f"affine grid '{self.positions}'"
        if n not in (2, 3):
            raise ParseError(f"{what}: takes 2 or 3 spatial axes, not {n}")
        names = [*self.positions.names, self.coordinate.name, self.homogeneous.name]
        if len(set(names)) != len(names):
            raise ParseError(f"{what}: the spatial axes, the coordinate {self.coordinate.name} and the column"
                             f" {self.homogeneous.name} need names of their own, not {' '.join(names)}")
        if self.coordinate.size != n or self.homogeneous.size != n + 1:
            raise SizeError(f"{what}: θ has one row per spatial axis ({n}) and one column more ({n + 1}), not"
                            f" {size_text(self.coordinate.size)} × {size_text(self.homogeneous.size)}")
        if self.positions.dtype != "float":
            raise ParseError(f"{what}: the positions are numbers")
        if not isinstance(self.align_corners, bool):
            raise ParseError(f"{what}: align_corners={self.align_corners!r} must be True or False")

    def theta(self) -> Segment:
        return Segment((self.coordinate, self.homogeneous))

    def grid(self) -> Segment:
        return Segment((*self.positions.axes, self.coordinate))

    def signature(self) -> tuple[Type, Type]:
        return Type((self.theta(),)), Type((self.grid(),))

    def label(self) -> str:
        return "θ ⊙ grid"

    def hint(self) -> str:
        return "grid"


@dataclass(frozen=True)
class AffineGridTransposeOp(AffineGridOp):
    """The transpose of :class:`AffineGridOp` (same fields): a grid's cotangent to ``θ``'s (ATen's
    ``affine_grid_generator_backward``)."""

    op: ClassVar[str] = "affine_grid_transpose"
    family: ClassVar[str] = "derivative"

    def signature(self) -> tuple[Type, Type]:
        return Type((self.grid(),)), Type((self.theta(),))

    def label(self) -> str:
        return "(θ ⊙ grid)ᵀ"

    def hint(self) -> str:
        return "d_theta"


def AffineGrid(positions: TypeLike, coordinate: str | Axis = "k", homogeneous: str | Axis = "l",
               align_corners: bool = False) -> Box:
    """The sampling grid over ``positions`` of the affine map ``θ: coordinate × homogeneous`` (``F.affine_grid``;
    unsized ``coordinate``/``homogeneous`` get the sizes the positions imply)."""
    seg = _segment(positions, "affine grid")
    n = len(seg)
    k = parse_axis(coordinate) if isinstance(coordinate, str) else coordinate
    h = parse_axis(homogeneous) if isinstance(homogeneous, str) else homogeneous
    k = k.resized(n) if k.size.free_symbols else k
    h = h.resized(n + 1) if h.size.free_symbols else h
    return Box.make(AffineGridOp(seg, k, h, align_corners))


# -- lowering ----------------------------------------------------------------------------------------------------------
def _spatial(prim: AffineGridOp, ctx: RuleContext) -> list[int]:
    return [ctx.int(a.size, f"axis {a.name}") for a in prim.positions.axes]


@LOWERING.rule(AffineGridOp)
def lower_affine_grid(prim: AffineGridOp, ctx: RuleContext) -> list[str]:
    """One ``F.affine_grid`` on ``θ`` with its leading (woven) wires flattened into torch's batch."""
    theta = ctx.args[0].var
    n, spatial = len(prim.positions), _spatial(prim, ctx)
    lead = ctx.em.fresh("lead")
    ctx.em.line(f"{lead} = {theta}.shape[:-2]")
    dims = ", ".join(str(s) for s in spatial)
    grid = f"F.affine_grid({theta}.reshape(-1, {n}, {n + 1}), [{theta}.shape[:-2].numel(), 1, {dims}]," \
           f" align_corners={prim.align_corners})"
    return [f"{grid}.view(*{lead}, {dims}, {n})"]


@LOWERING.rule(AffineGridTransposeOp)
def lower_affine_grid_transpose(prim: AffineGridTransposeOp, ctx: RuleContext) -> list[str]:
    """ATen's ``affine_grid_generator_backward`` on the cotangent with its leading wires flattened."""
    g = ctx.args[0].var
    n, spatial = len(prim.positions), _spatial(prim, ctx)
    lead = ctx.em.fresh("lead")
    ctx.em.line(f"{lead} = {g}.shape[:-{n + 1}]")
    dims = ", ".join(str(s) for s in spatial)
    return [f"torch.ops.aten.affine_grid_generator_backward({g}.reshape(-1, {dims}, {n}),"
            f" [{lead}.numel(), 1, {dims}], {prim.align_corners}).view(*{lead}, {n}, {n + 1})"]


# -- costs and backward ------------------------------------------------------------------------------------------------
def _product(prim: AffineGridOp, grid_numel: sympy.Expr) -> sympy.Expr:
    """The FLOPs of ATen's backward kernel: a batched product of the base grid (``positions × (n + 1)``) and the
    cotangent (``positions × n``)."""
    return 2 * grid_numel * (len(prim.positions) + 1)


@COST.rule(AffineGridOp)
def cost_affine_grid(prim: AffineGridOp, ctx: CostContext) -> list[Tensor]:
    """The FLOP counter sees no forward FLOPs (one ATen call) and, in the backward, the product of the base grid and
    the cotangent; nothing is kept (it is linear)."""
    n = ctx.numel()
    ctx.matmul(sympy.Integer(0), _product(prim, n) if ctx.grad else sympy.Integer(0))
    ctx.other(2 * n * (len(prim.positions) + 1), sympy.Integer(0))
    return [ctx.output(0)]


@COST.rule(AffineGridTransposeOp)
def cost_affine_grid_transpose(prim: AffineGridTransposeOp, ctx: CostContext) -> list[Tensor]:
    """The product of the base grid and the cotangent (a ``bmm`` the FLOP counter counts); differentiated, autograd
    keeps the base grid (one per leading entry) and its backward is the same product."""
    flops = _product(prim, ctx.inputs[0].numel)
    ctx.matmul(flops, flops if ctx.grad else sympy.Integer(0))
    if ctx.grad:
        ctx.save(ctx.new([*(w.axis for w in ctx.woven), *prim.positions.axes, prim.homogeneous], grad=False))
    return [ctx.output(0)]


def _fields(prim: AffineGridOp) -> tuple[Segment, Axis, Axis, bool]:
    return prim.positions, prim.coordinate, prim.homogeneous, prim.align_corners


@transpose(AffineGridOp)
def transpose_affine_grid(prim: AffineGridOp, box: Box) -> Diagram:
    """The grid's cotangent to ``θ``'s: one ``θᵀ`` box."""
    return Box(AffineGridTransposeOp(*_fields(prim)))


@transpose(AffineGridTransposeOp)
def transpose_affine_grid_transpose(prim: AffineGridTransposeOp, box: Box) -> Diagram:
    """The transpose of the transpose: the grid again."""
    return Box(AffineGridOp(*_fields(prim)))


# -- drawing -----------------------------------------------------------------------------------------------------------
@DRAWING.rule(AffineGridOp, AffineGridTransposeOp)
def draw_affine_grid(prim: AffineGridOp, ctx: Layout, box: Box) -> Frag:
    """On the resampling trapezoid: ``θ ⊙ grid`` (the output's pixel positions mapped by ``θ``)."""
    from ncd.render.pictograms import generic_box
    from ncd.render.pictograms_more import CONV_FILL
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), fill=CONV_FILL, shape="trapezoid", name=prim.op)


# -- import recognition: ncd.trace.boxes_resampling --------------------------------------------------------------------
IMPORT.known(AffineGridOp, aten=("aten.affine_grid_generator",), by="ncd.trace.boxes_resampling")
IMPORT.unsupported(AffineGridTransposeOp, NOT_TRACED)
