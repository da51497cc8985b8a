"""The triangle of a matrix: ``tril`` and ``triu`` — the entries on one side of a diagonal kept, the others zero.

``Band("i j", 0)`` keeps the lower triangle of the matrix over rows ``i`` and columns ``j`` (``torch.tril(x, 0)``),
``Band("i j", 1, upper=True)`` the strict upper one (``torch.triu(x, 1)``); the diagonal ``k`` counts as in torch
(above the main diagonal for ``k > 0``).  Woven over every other axis, its own two axes last.  Linear: it is its own
transpose (the gradient keeps the same triangle), counts no FLOPs and keeps nothing for the backward.

One module holds every rule of the family: declaration, lowering, costs, backward and drawing.

>>> import ncd, torch
>>> from ncd.prims.band import Band
>>> d = ncd.Identity.of("b i j") >> Band("i j", -1)
>>> str(d.cod), Band("i j", -1).prim.label(), Band("i j", 1, upper=True).prim.label()
('b i j', '◺−1', '◹1')
>>> x = torch.randn(2, 3, 4)
>>> torch.equal(d.to_torch(b=2, i=3, j=4)(x), x.tril(-1))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import Axis, Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box, Diagram
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import COST, DRAWING, IMPORT, LOWERING
from ncd.prims.kinds import transpose

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["BandOp", "Band"]


@dataclass(frozen=True)
class BandOp(Primitive):
    """A matrix over ``rows`` and ``cols`` with the entries below (``upper``: above) diagonal ``diagonal`` set to 0."""

    rows: Axis
    cols: Axis
    diagonal: int = 0
    upper: bool = False

    op: ClassVar[str] = "band"
    weave_policy = weaving.own_last
    family: ClassVar[str] = "band"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if self.rows.name == self.cols.name:
            raise ParseError(f"band: the rows and columns must be two axes, both are {self.rows.name!r}")
        if isinstance(self.diagonal, bool) or not isinstance(self.diagonal, int):
            raise ParseError(f"band of '{self.rows.name} {self.cols.name}': the diagonal {self.diagonal!r} is not a"
                             " whole number")

    def signature(self) -> tuple[Type, Type]:
        t = Type((Segment((self.rows, self.cols)),))
        return t, t

    def label(self) -> str:
        return ("◹" if self.upper else "◺") + (str(self.diagonal).replace("-", "−") if self.diagonal else "")


def Band(axes: TypeLike, diagonal: int = 0, *, upper: bool = False, name: str | None = None) -> Box:
    """Keep the lower (``upper=True``: upper) triangle of the matrix over ``axes`` (rows, then columns) from diagonal
    ``diagonal`` on: ``torch.tril(x, diagonal)`` / ``torch.triu(x, diagonal)``."""
    typ = as_type(axes)
    if len(typ) != 1 or len(typ[0].axes) != 2 or typ[0].dtype != "float":
        raise ParseError(f"band: give the two axes of a matrix, e.g. 'i j', not {axes!r}")
    rows, cols = typ[0].axes
    return Box.make(BandOp(rows, cols, diagonal, bool(upper)), name)


@LOWERING.rule(BandOp)
def lower_band(prim: BandOp, ctx: RuleContext) -> list[str]:
    return [f"{ctx.args[0].var}.{'triu' if prim.upper else 'tril'}({prim.diagonal})"]


@COST.rule(BandOp)
def cost_band(prim: BandOp, ctx: CostContext) -> list[Tensor]:
    """``tril``/``triu`` write a new tensor and keep nothing (their gradient is the same triangle of the cotangent)."""
    return [ctx.output(0)]


@transpose(BandOp)
def transpose_band(prim: BandOp, box: Box) -> Diagram:
    """Zeroing a triangle is its own transpose."""
    return Box(prim)


@DRAWING.rule(BandOp)
def draw_band(prim: BandOp, ctx: Layout, box: Box) -> Frag:
    """A tag on the matrix's two wires: ``◺`` (lower), ``◹`` (upper), with the diagonal when it is not the main one."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(prim.label()), fill="#fdf3d0", name=prim.op, min_w=16.0)


IMPORT.known(BandOp, aten=("aten.tril", "aten.triu"), by="ncd.trace.boxes")
